"""Files of a grid run: atomic writes with the user's umask, the CSV/JSON tables, provenance, progress."""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
from typing import Any, Sequence

import jax
import numpy as np


def canonical(obj: Any) -> str:
  """Compact JSON with sorted keys: the text that identifies a cell or a spec."""
  return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def package_version(name: str) -> str:
  """Installed version of a distribution, or ``"unknown"`` when it is not installed (e.g. run from a
  source tree without ``pip install``)."""
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return "unknown"


def versions() -> dict:
  """Software and hardware provenance recorded in every row."""
  devices = jax.devices()
  return {
      "pgjax_version": package_version("pgjax"),
      "jax_version": jax.__version__,
      "jaxlib_version": package_version("jaxlib"),
      "python_version": platform.python_version(),
      "platform": jax.default_backend(),
      "device_kind": devices[0].device_kind,
      "device_count": jax.device_count(),
      "process_count": jax.process_count(),
  }


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def atomic_write(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` through a temporary file and ``os.replace``: readers see the old file or
  the new one, never a torn one. The file gets the mode an ordinary ``open(path, "w")`` would give
  (``0o666`` minus the umask), not the ``0o600`` of the temporary file."""
  folder = os.path.dirname(path)
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
  try:
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, "w") as fh:
      fh.write(text)
      fh.flush()
      os.fsync(fh.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def read_cell(path: str) -> dict | None:
  """A finished cell's row, or None when the file is missing or not a cell."""
  try:
    with open(path) as fh:
      row = json.load(fh)
  except (OSError, ValueError):
    return None  # a torn file cannot exist (atomic writes), but be tolerant of foreign files
  return row if isinstance(row, dict) and "cell_id" in row else None


def csv_text(rows: Sequence[dict]) -> str:
  """The rows as CSV; columns in order of first appearance, list/dict values left out."""
  columns: list = []
  for row in rows:
    for k, v in row.items():
      if k not in columns and not isinstance(v, (list, dict)):
        columns.append(k)
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: row.get(k, "") for k in columns})
  return buf.getvalue()


def write_tables(out_dir: str, rows: Sequence[dict]) -> tuple:
  """Rewrites ``results.json`` and ``results.csv`` (atomically); returns their paths."""
  csv_path = os.path.join(out_dir, "results.csv")
  json_path = os.path.join(out_dir, "results.json")
  atomic_write(json_path, json.dumps(list(rows), indent=1))
  atomic_write(csv_path, csv_text(rows))
  return csv_path, json_path


def to_float(x: Any) -> float | str:
  """A scalar as a JSON-able float; NaN and infinities as strings (JSON has none)."""
  v = float(np.asarray(x))
  return v if math.isfinite(v) else str(v)


class _PlainProgress:
  """Minimal text progress (one line per update) when tqdm is not installed."""

  def __init__(self, total: int, initial: int, enabled: bool):
    self.total, self.initial, self.enabled = total, initial, enabled
    self.n, self.t0 = initial, time.time()

  def update(self, k: int) -> None:
    self.n += k
    if self.enabled:
      rate = (self.n - self.initial) / max(time.time() - self.t0, 1e-9)
      eta = (self.total - self.n) / rate if rate > 0 else float("nan")
      print(f"pgjax grid: {self.n}/{self.total} cells, ETA {eta:.0f}s", file=sys.stderr)

  def set_postfix_str(self, s: str) -> None:
    del s

  def close(self) -> None:
    pass


def progress_bar(total: int, initial: int, enabled: bool):
  """A tqdm bar (with ETA) on stderr when tqdm is installed, else a minimal text fallback."""
  if enabled:
    try:
      from tqdm.auto import tqdm
      return tqdm(total=total, initial=initial, unit="cell", desc="pgjax grid", file=sys.stderr,
                  dynamic_ncols=True)
    except ImportError:
      pass
  return _PlainProgress(total, initial, enabled)
