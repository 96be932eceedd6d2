"""Statistics of estimators over many seeds (see :mod:`pgjax._src.sweep`) and the grid runner
(:mod:`pgjax._src.grid`). ``python -m pgjax.sweep CONFIG`` runs a grid from a TOML/JSON file."""

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

if __name__ == "__main__":
  import sys

  from pgjax._src.cli import main
  sys.exit(main())
