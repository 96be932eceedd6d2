"""Statistics of estimators over many seeds (:func:`gradient_stats`, :func:`map_seeds`) and the resumable
grid runner (:func:`run_grid`). ``python -m pgjax.sweep CONFIG`` runs a grid from a TOML/JSON file."""

from pgjax._src.grid import GridError
from pgjax._src.grid import GridResult
from pgjax._src.grid import run_grid
from pgjax._src.sweep import choose_chunk_size
from pgjax._src.sweep import gradient_stats
from pgjax._src.sweep import GradientStats
from pgjax._src.sweep import map_seeds

__all__ = (
    "GradientStats",
    "GridError",
    "GridResult",
    "choose_chunk_size",
    "gradient_stats",
    "map_seeds",
    "run_grid",
)
