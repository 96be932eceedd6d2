"""Shared plumbing for experiment scripts (never imported by pgjax itself).

Every experiment script ``experiments/<name>.py``:

* accepts ``--quick`` (small scale, a few minutes at most on 2 CPU cores) and
  ``--out DIR`` (default ``results``);
* writes ``DIR/<name>.json`` through :func:`save_results` and its figures as
  ``DIR/<name>*.png``;
* states each claim it checks as a :class:`Claim` with the measured value, so
  ``experiments/reproduce.py`` can tabulate them in ``results/summary.md``;
* exits with status 0 even when a claim fails (the summary reports it), and
  non-zero only on a crash.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from typing import Any, Sequence

import numpy as np


@dataclasses.dataclass
class Claim:
  """One checkable statement, e.g. ``Claim("natural cosine at sigma=0.05", 0.997, "> 0.99", True)``."""

  claim: str
  value: Any
  threshold: str
  passed: bool


def parse_args(description: str, argv: Sequence[str] | None = None,
               extra: callable | None = None) -> argparse.Namespace:
  """Standard ``--quick`` / ``--out`` / ``--seed`` parser; ``extra(parser)`` may add more."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--quick", action="store_true",
                      help="small scale (CI / reproduce --quick)")
  parser.add_argument("--out", default="results", help="output folder")
  parser.add_argument("--seed", type=int, default=0, help="root PRNG seed")
  if extra is not None:
    extra(parser)
  return parser.parse_args(argv)


def _to_jsonable(obj: Any) -> Any:
  if isinstance(obj, dict):
    return {str(k): _to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_to_jsonable(v) for v in obj]
  if dataclasses.is_dataclass(obj):
    return _to_jsonable(dataclasses.asdict(obj))
  if hasattr(obj, "tolist"):  # numpy / jax arrays and scalars
    return _to_jsonable(np.asarray(obj).tolist())
  if isinstance(obj, float) and not np.isfinite(obj):
    return str(obj)
  return obj


def versions() -> dict[str, str]:
  """Versions of the packages that determine the numbers."""
  import jax
  import jaxlib
  import pgjax
  out = {"python": platform.python_version(), "pgjax": pgjax.__version__,
         "jax": jax.__version__, "jaxlib": jaxlib.__version__,
         "platform": platform.platform(),
         "devices": [str(d) for d in jax.devices()]}
  return out


def save_results(name: str, args: argparse.Namespace, *, claims: Sequence[Claim],
                 data: dict[str, Any], figures: Sequence[str] = (),
                 started: float | None = None) -> str:
  """Writes ``<out>/<name>.json`` atomically and prints the claims; returns the path."""
  os.makedirs(args.out, exist_ok=True)
  record = {
      "name": name,
      "quick": bool(args.quick),
      "seed": args.seed,
      "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
      "seconds": None if started is None else round(time.time() - started, 2),
      "claims": [dataclasses.asdict(c) for c in claims],
      "figures": [os.path.basename(f) for f in figures],
      "versions": versions(),
      "data": data,
  }
  path = os.path.join(args.out, f"{name}.json")
  tmp = path + ".tmp"
  with open(tmp, "w") as fh:
    json.dump(_to_jsonable(record), fh, indent=1)
  os.replace(tmp, path)
  for c in claims:
    print(f"[{'PASS' if c.passed else 'FAIL'}] {c.claim}: {c.value} ({c.threshold})")
  print(f"wrote {path}")
  return path
