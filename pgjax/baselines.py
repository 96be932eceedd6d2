"""Baselines for score-function estimators (see :mod:`pgjax._src.baselines`)."""

from pgjax._src.baselines import batch_mean
from pgjax._src.baselines import constant
from pgjax._src.baselines import ema_init
from pgjax._src.baselines import ema_update
from pgjax._src.baselines import EmaState
from pgjax._src.baselines import group_normalize
from pgjax._src.baselines import leave_one_out
from pgjax._src.baselines import none
from pgjax._src.baselines import optimal
from pgjax._src.baselines import optimal_leave_one_out
from pgjax._src.baselines import optimal_per_coordinate
from pgjax._src.baselines import optimal_per_coordinate_leave_one_out

__all__ = (
    "EmaState",
    "batch_mean",
    "constant",
    "ema_init",
    "ema_update",
    "group_normalize",
    "leave_one_out",
    "none",
    "optimal",
    "optimal_leave_one_out",
    "optimal_per_coordinate",
    "optimal_per_coordinate_leave_one_out",
)
