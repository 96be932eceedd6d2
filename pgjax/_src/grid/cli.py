"""The command line: ``python -m pgjax.sweep CONFIG``, ``python -m pgjax CONFIG`` or ``pgjax-sweep CONFIG``
(see :mod:`pgjax._src.grid` for the config format)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from pgjax._src.grid.config import load_config
from pgjax._src.grid.config import QUICK_SUFFIX
from pgjax._src.grid.runner import GridError
from pgjax._src.grid.runner import run_grid

EXIT_OK, EXIT_BAD_CONFIG, EXIT_INTERRUPTED = 0, 2, 130


def _parser(prog: str) -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog=prog,
      description="Run a gradient-estimator variance grid described in a TOML/JSON file; a rerun resumes, "
                  "computing only the cells that are missing.")
  parser.add_argument("config", help="grid config (.toml or .json)")
  parser.add_argument("--quick", action="store_true",
                      help="small scale: the config's [quick] overrides (default num_seeds <= 256); "
                           f"also changes the output folder to <out>{QUICK_SUFFIX} unless --out is given")
  parser.add_argument("--out", default=None, help="output folder (overrides the config's `out`)")
  parser.add_argument("--fresh", action="store_true",
                      help="recompute every cell instead of resuming (other files are kept)")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  parser.add_argument("--no-plot", action="store_true", help="do not draw variance.png")
  return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m pgjax.sweep") -> int:
  """Entry point; returns the exit status (0 ok, 2 bad config, 130 interrupted by Ctrl-C)."""
  args = _parser(prog).parse_args(argv)
  name = prog.split()[-1]
  out_dir = None
  try:
    kwargs = load_config(args.config, quick=args.quick, out=args.out)
    out_dir = kwargs["out_dir"]
    result = run_grid(**kwargs, resume=not args.fresh, progress=not args.no_progress)
  except GridError as err:
    print(f"{name}: error: {err}", file=sys.stderr)
    return EXIT_BAD_CONFIG
  except KeyboardInterrupt:
    where = f" (finished cells are kept in {out_dir})" if out_dir else ""
    print(f"\n{name}: interrupted; rerun the same command to resume{where}.", file=sys.stderr)
    return EXIT_INTERRUPTED
  print(f"{len(result.rows)} cells ({result.num_computed} computed, {result.num_reused} reused, "
        f"{result.num_compiled} groups compiled)")
  print(f"wrote {result.csv_path}\nwrote {result.json_path}")
  if not args.no_plot:
    try:
      from pgjax._src.grid.plot import plot_variance
      fig = plot_variance(result.rows, os.path.join(out_dir, "variance.png"))
      print(f"wrote {fig}")
    except ImportError:
      print("matplotlib is not installed: no figure (pip install matplotlib)", file=sys.stderr)
  return EXIT_OK


def exit_with(status: int) -> None:
  """Ends the process with ``status``. After Ctrl-C the abandoned group may still be running in a worker
  thread, and tearing the interpreter down under it can crash the process, so an interrupted run leaves
  through ``os._exit`` (streams flushed; every finished cell is already on disk)."""
  if status == EXIT_INTERRUPTED:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
  sys.exit(status)


def console_main() -> None:
  """Console-script entry point ``pgjax-sweep CONFIG`` (installed by pip)."""
  exit_with(main(prog="pgjax-sweep"))
