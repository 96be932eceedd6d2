"""``python -m pgjax CONFIG`` runs a variance grid (same as ``python -m pgjax.sweep CONFIG``)."""

import sys

from pgjax._src.cli import main

if __name__ == "__main__":
  sys.exit(main())
