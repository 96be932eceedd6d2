"""``python -m pgjax CONFIG`` runs a variance grid (same as ``python -m pgjax.sweep CONFIG``)."""

import sys

from pgjax._src.grid.cli import main

if __name__ == "__main__":
  sys.exit(main(prog="python -m pgjax"))
