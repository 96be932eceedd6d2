"""``python -m pgjax.sweep CONFIG`` runs a variance grid (see :mod:`pgjax._src.grid`)."""

from pgjax._src.grid.cli import exit_with
from pgjax._src.grid.cli import main

if __name__ == "__main__":
  exit_with(main())
