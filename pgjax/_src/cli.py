r"""Command line for variance sweeps: ``python -m pgjax.sweep CONFIG [--quick] [--out DIR]``.

Also ``python -m pgjax CONFIG`` and, once installed, the console script ``pgjax-sweep CONFIG``.

The config is a small TOML (Python >= 3.11, or with ``tomli`` installed) or JSON
file::

  num_seeds = 2000            # estimator calls per cell (required)
  sample_sizes = [2, 8, 32]   # N, one compilation each (required)
  seed = 0                    # root PRNG seed (default 0)
  out = "results/sweeps/demo" # output folder (default results/sweeps/<config name>)
  # chunk_size = 256          # seeds per chunk (default: gradient_stats chooses)

  [quick]                     # overrides for --quick (default: num_seeds <= 256)
  num_seeds = 200

  [problems.quad]             # type: a constructor in pgjax.problems; other keys its kwargs
  type = "gaussian_quadratic"
  dim = 3

  [estimators.reinforce]      # type: score_function | pathwise | zeroth_order | "module:function"
  type = "score_function"
  baseline = "none"           # other keys: static keyword arguments of the factory

  [estimators.constant]
  type = "score_function"
  hyperparameters = { baseline = [0.0, 1.0, 3.0] }  # traced: one compilation for all values

The table (``results.csv``, ``results.json``, one row per cell) and a figure of
the total variance (log scale) against the number of samples per estimator
(``variance.png``) are written to the output folder; a rerun resumes, computing
only the missing cells (see :func:`pgjax.sweep.run_grid`).

An estimator ``type = "package.module:function"`` is any factory
``function(problem, num_samples, **static, **hyperparameters) -> estimator``.
For ``zeroth_order`` the objective is the problem's closed-form ``expectation``
and ``num_samples`` is the number of directions; the reported bias includes the
Gaussian-smoothing bias (the target is the true gradient of the problem).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from typing import Any, Sequence

from pgjax._src.grid import GridError
from pgjax._src.grid import run_grid

_TOP_LEVEL = {"num_seeds", "sample_sizes", "seed", "out", "chunk_size", "quick", "problems",
              "estimators"}
_REQUIRED = ("num_seeds", "sample_sizes", "problems", "estimators")
_BUILTIN_ESTIMATORS = ("score_function", "pathwise", "zeroth_order")


def _read_file(path: str) -> dict:
  if not os.path.isfile(path):
    raise GridError(f"config file {path!r} does not exist.")
  with open(path, "rb") as fh:
    raw = fh.read()
  if path.endswith(".json"):
    try:
      data = json.loads(raw.decode())
    except ValueError as err:
      raise GridError(f"config file {path!r} is not valid JSON: {err}") from err
  else:
    try:
      import tomllib  # Python >= 3.11
    except ImportError:  # pragma: no cover - Python 3.10
      try:
        import tomli as tomllib
      except ImportError as err:
        raise GridError(f"reading TOML config {path!r} needs Python >= 3.11 or `pip install "
                        "tomli`; or write the config as JSON (.json).") from err
    try:
      data = tomllib.loads(raw.decode())
    except tomllib.TOMLDecodeError as err:
      raise GridError(f"config file {path!r} is not valid TOML: {err}") from err
  if not isinstance(data, dict):
    raise GridError(f"config file {path!r} must hold a table/object at the top level.")
  return data


def _resolve_estimator(name: str, spec: Any):
  """Returns factory(problem, num_samples, **hyper) for one config entry."""
  if not isinstance(spec, dict):
    raise GridError(f"estimators.{name} must be a table, got {spec!r}.")
  if "type" not in spec:
    raise GridError(f"estimators.{name} is missing the field `type` (one of "
                    f"{', '.join(_BUILTIN_ESTIMATORS)} or 'module:function').")
  etype = spec["type"]
  static = {k: v for k, v in spec.items() if k not in ("type", "hyperparameters")}
  import pgjax
  if etype in ("score_function", "pathwise"):
    ctor = getattr(pgjax, etype)

    def factory(problem, num_samples, **hyper):
      return ctor(problem.f, problem.dist_fn, num_samples=num_samples, **static, **hyper)
    return factory
  if etype == "zeroth_order":
    ctor = getattr(pgjax, "zeroth_order", None)
    if ctor is None:
      raise GridError(f"estimators.{name}: type 'zeroth_order' is not available in this pgjax.")

    def factory(problem, num_samples, **hyper):
      return ctor(problem.expectation, num_directions=num_samples, **static, **hyper)
    return factory
  if isinstance(etype, str) and ":" in etype:
    module, _, attr = etype.partition(":")
    try:
      fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
      raise GridError(f"estimators.{name}: cannot import factory {etype!r}: {err}") from err
    if not callable(fn):
      raise GridError(f"estimators.{name}: {etype!r} is not callable.")

    def factory(problem, num_samples, **hyper):
      return fn(problem, num_samples, **static, **hyper)
    return factory
  raise GridError(f"estimators.{name}: unknown estimator type {etype!r}; expected one of "
                  f"{', '.join(_BUILTIN_ESTIMATORS)} or 'module:function'.")


def _resolve_problem(name: str, spec: Any):
  from pgjax import problems as problems_module
  if not isinstance(spec, dict):
    raise GridError(f"problems.{name} must be a table, got {spec!r}.")
  if "type" not in spec:
    raise GridError(f"problems.{name} is missing the field `type` (a constructor in "
                    "pgjax.problems, e.g. 'gaussian_quadratic').")
  ptype = spec["type"]
  ctor = getattr(problems_module, ptype, None) if isinstance(ptype, str) else None
  if ctor is None or not callable(ctor) or ptype.startswith("_"):
    known = sorted(n for n in getattr(problems_module, "__all__", ()) if not n[0].isupper())
    raise GridError(f"problems.{name}: unknown problem type {ptype!r}; known: {known}.")
  kwargs = {k: v for k, v in spec.items() if k != "type"}
  try:
    return ctor(**kwargs)
  except (TypeError, ValueError) as err:
    raise GridError(f"problems.{name}: {ptype}(**{kwargs}) failed: {err}") from err


def load_config(path: str, *, quick: bool = False, out: str | None = None) -> dict:
  """Reads and validates a grid config; returns the keyword arguments of ``run_grid``.

  Raises:
    GridError: unknown or missing fields, unknown estimator or problem types.
      Numeric checks (sample sizes, seeds, output folder) are ``run_grid``'s.
  """
  cfg = _read_file(path)
  unknown = sorted(set(cfg) - _TOP_LEVEL)
  if unknown:
    raise GridError(f"{path}: unknown field(s) {unknown}; allowed: {sorted(_TOP_LEVEL)}.")
  missing = [k for k in _REQUIRED if k not in cfg]
  if missing:
    raise GridError(f"{path}: missing required field(s) {missing}.")
  if quick:
    overrides = cfg.get("quick", {})
    if not isinstance(overrides, dict):
      raise GridError(f"{path}: `quick` must be a table of overrides.")
    bad = sorted(set(overrides) - {"num_seeds", "sample_sizes", "chunk_size"})
    if bad:
      raise GridError(f"{path}: quick.{bad[0]} cannot be overridden (only num_seeds, "
                      "sample_sizes, chunk_size).")
    cfg = {**cfg, **overrides}
    if "num_seeds" not in overrides and isinstance(cfg["num_seeds"], int):
      cfg["num_seeds"] = min(cfg["num_seeds"], 256)
  for section in ("problems", "estimators"):
    if not isinstance(cfg[section], dict) or not cfg[section]:
      raise GridError(f"{path}: `{section}` must be a non-empty table of named entries.")
  estimators = {n: _resolve_estimator(n, s) for n, s in cfg["estimators"].items()}
  hyper = {}
  for n, s in cfg["estimators"].items():
    if "hyperparameters" in s:
      if not isinstance(s["hyperparameters"], dict):
        raise GridError(f"estimators.{n}.hyperparameters must be a table name -> [values].")
      hyper[n] = s["hyperparameters"]
  problems = {n: _resolve_problem(n, s) for n, s in cfg["problems"].items()}
  if out is None:
    out = cfg.get("out") or os.path.join(
        "results", "sweeps", os.path.splitext(os.path.basename(path))[0])
    if quick:
      out = out.rstrip("/\\") + "-quick"
  return dict(
      estimators=estimators, problems=problems, sample_sizes=cfg["sample_sizes"],
      num_seeds=cfg["num_seeds"], key=cfg.get("seed", 0), out_dir=out,
      hyperparameters=hyper, chunk_size=cfg.get("chunk_size"),
      estimator_specs=cfg["estimators"], problem_specs=cfg["problems"])


def plot_variance(rows: Sequence[dict], path: str) -> str:
  """Total variance (log) against the number of samples (log), one line per estimator setting.

  One panel per problem; error bars are +-1 standard error. Returns ``path``.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  problems = list(dict.fromkeys(r["problem"] for r in rows))
  fig, axes = plt.subplots(1, len(problems), figsize=(5 * len(problems), 4), squeeze=False)
  for ax, prob in zip(axes[0], problems):
    lines: dict = {}
    for r in rows:
      if r["problem"] != prob:
        continue
      hyper = json.loads(r.get("hyperparameters") or "{}")
      label = r["estimator"] + "".join(f" {k}={v:g}" for k, v in hyper.items())
      lines.setdefault(label, []).append(r)
    for label, rs in lines.items():
      rs = sorted(rs, key=lambda r: r["num_samples"])
      x = [r["num_samples"] for r in rs]
      y = [_num(r.get("total_variance")) for r in rs]
      e = [_num(r.get("total_variance_se")) for r in rs]
      ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("samples per estimate N")
    ax.set_ylabel("total variance  E||g - E g||^2")
    ax.set_title(prob)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _num(x: Any) -> float:
  try:
    return float(x)
  except (TypeError, ValueError):
    return math.nan


def main(argv: Sequence[str] | None = None, prog: str = "python -m pgjax.sweep") -> int:
  """Entry point of ``python -m pgjax.sweep``; returns the exit status (0 ok, 2 bad config)."""
  parser = argparse.ArgumentParser(
      prog=prog,
      description="Run a gradient-estimator variance grid described in a TOML/JSON file.")
  parser.add_argument("config", help="grid config (.toml or .json)")
  parser.add_argument("--quick", action="store_true",
                      help="small scale: the config's [quick] overrides (default num_seeds <= 256)")
  parser.add_argument("--out", default=None, help="output folder (overrides the config's `out`)")
  parser.add_argument("--fresh", action="store_true",
                      help="recompute every cell instead of resuming (other files are kept)")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  parser.add_argument("--no-plot", action="store_true", help="do not draw variance.png")
  args = parser.parse_args(argv)
  try:
    kwargs = load_config(args.config, quick=args.quick, out=args.out)
    result = run_grid(**kwargs, resume=not args.fresh, progress=not args.no_progress)
  except GridError as err:
    print(f"pgjax.sweep: error: {err}", file=sys.stderr)
    return 2
  print(f"{len(result.rows)} cells ({result.num_computed} computed, {result.num_reused} reused, "
        f"{result.num_compiled} groups compiled)")
  print(f"wrote {result.csv_path}\nwrote {result.json_path}")
  if not args.no_plot:
    try:
      fig = plot_variance(result.rows, os.path.join(kwargs["out_dir"], "variance.png"))
      print(f"wrote {fig}")
    except ImportError:
      print("matplotlib is not installed: no figure (pip install matplotlib)", file=sys.stderr)
  return 0


def console_main() -> None:
  """Console-script entry point ``pgjax-sweep CONFIG`` (installed by pip)."""
  sys.exit(main(prog="pgjax-sweep"))
