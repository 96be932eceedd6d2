"""Statistics of estimators over many seeds (see :mod:`pgjax._src.sweep`)."""

from pgjax._src.sweep import choose_chunk_size
from pgjax._src.sweep import gradient_stats
from pgjax._src.sweep import GradientStats

__all__ = (
    "GradientStats",
    "choose_chunk_size",
    "gradient_stats",
)
