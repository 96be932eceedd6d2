"""The command line's former module path, kept for ``pgjax-sweep`` scripts installed from older versions;
the command line lives in :mod:`pgjax._src.grid.cli`."""

from pgjax._src.grid.cli import console_main
from pgjax._src.grid.cli import main
from pgjax._src.grid.config import load_config
from pgjax._src.grid.plot import plot_variance

__all__ = ("console_main", "load_config", "main", "plot_variance")
