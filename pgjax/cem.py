"""The cross-entropy method on parameter pytrees (see :mod:`pgjax._src.cem`)."""

from pgjax._src.cem import CEMInfo
from pgjax._src.cem import CEMState
from pgjax._src.cem import CrossEntropyMethod
from pgjax._src.cem import cross_entropy_method
from pgjax._src.cem import elite_fit
from pgjax._src.cem import num_elite
from pgjax._src.cem import run

__all__ = (
    "CEMInfo",
    "CEMState",
    "CrossEntropyMethod",
    "cross_entropy_method",
    "elite_fit",
    "num_elite",
    "run",
)
