"""``python -m pgjax CONFIG`` runs a variance grid (same as ``python -m pgjax.sweep CONFIG``)."""

from pgjax._src.grid.cli import exit_with
from pgjax._src.grid.cli import main

if __name__ == "__main__":
  exit_with(main(prog="python -m pgjax"))
