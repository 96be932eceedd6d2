"""Baselines for score-function and zeroth-order estimators: one interface (see :mod:`pgjax._src.baselines`).

A baseline is a pure function of a batch's values ``[..., N]`` (samples last); :func:`get` resolves any
``baseline=`` argument (name, number, callable, :class:`Baseline`) the same way for every estimator.
"""

from pgjax._src.baselines import Baseline
from pgjax._src.baselines import batch_mean
from pgjax._src.baselines import constant
from pgjax._src.baselines import ema_fold
from pgjax._src.baselines import ema_init
from pgjax._src.baselines import ema_update
from pgjax._src.baselines import ema_value
from pgjax._src.baselines import EmaState
from pgjax._src.baselines import get
from pgjax._src.baselines import group_normalize
from pgjax._src.baselines import leave_one_out
from pgjax._src.baselines import names
from pgjax._src.baselines import none
from pgjax._src.baselines import optimal
from pgjax._src.baselines import optimal_leave_one_out
from pgjax._src.baselines import optimal_per_coordinate
from pgjax._src.baselines import optimal_per_coordinate_leave_one_out

__all__ = (
    "Baseline",
    "EmaState",
    "batch_mean",
    "constant",
    "ema_fold",
    "ema_init",
    "ema_update",
    "ema_value",
    "get",
    "group_normalize",
    "leave_one_out",
    "names",
    "none",
    "optimal",
    "optimal_leave_one_out",
    "optimal_per_coordinate",
    "optimal_per_coordinate_leave_one_out",
)
