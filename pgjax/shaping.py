r"""Fitness shaping for evolution strategies and the cross-entropy method.

Functions of a population's values ``[..., N]`` (last axis; leading axes are batches):
:func:`centered_ranks` (OpenAI-ES), :func:`nes_utilities` (natural evolution strategies), :func:`zscore`,
:func:`elite_indices` (the cross-entropy method's elite) and :func:`num_nonfinite`. Pass a name or any of
these to ``pgjax.zeroth_order(..., shaping=...)``. Any shaping changes what a gradient estimator estimates.

NaN policy: where values are ranked, NaN ranks last (worst) and estimators count non-finite values in
``aux.num_nonfinite``; where values are used as numbers (:func:`zscore`), NaN propagates. See
:mod:`pgjax._src.shaping` for the formulas and references.
"""

from pgjax._src.shaping import SHAPINGS
from pgjax._src.shaping import centered_ranks
from pgjax._src.shaping import changes_estimand
from pgjax._src.shaping import elite_indices
from pgjax._src.shaping import get_shaping
from pgjax._src.shaping import nes_utilities
from pgjax._src.shaping import num_nonfinite
from pgjax._src.shaping import zscore

__all__ = (
    "SHAPINGS",
    "centered_ranks",
    "changes_estimand",
    "elite_indices",
    "get_shaping",
    "nes_utilities",
    "num_nonfinite",
    "zscore",
)
