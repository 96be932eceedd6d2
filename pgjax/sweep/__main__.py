"""``python -m pgjax.sweep CONFIG`` runs a variance grid (see :mod:`pgjax._src.grid`)."""

import sys

from pgjax._src.grid.cli import main

if __name__ == "__main__":
  sys.exit(main())
