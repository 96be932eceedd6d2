"""Grid configs (TOML or JSON): reading, validating and resolving names to problems and estimators."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
from typing import Any, Callable

from pgjax._src.grid.runner import GridError

_TOP_LEVEL = {"num_seeds", "sample_sizes", "seed", "out", "chunk_size", "quick", "problems",
              "estimators"}
_REQUIRED = ("num_seeds", "sample_sizes", "problems", "estimators")
_BUILTIN_ESTIMATORS = ("score_function", "pathwise", "zeroth_order")
# Modules searched for built-in problem constructors.
_PROBLEM_MODULES = ("pgjax._src.problems",)
_RETURNS_PROBLEM = re.compile(r"^(tuple\[)?([\w.]*\.)?Problem\b")
# How a quick run changes the default output folder (shown in --help).
QUICK_SUFFIX = "-quick"


def read_file(path: str) -> dict:
  """The config file's top-level table (TOML by default, JSON for ``.json``)."""
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


def _import_object(spec: str, where: str) -> Callable:
  """``"package.module:function"`` -> the function."""
  module, _, attr = spec.partition(":")
  if not module or not attr:
    raise GridError(f"{where}: {spec!r} must look like 'package.module:function'.")
  try:
    obj = importlib.import_module(module)
    for part in attr.split("."):
      obj = getattr(obj, part)
  except (ImportError, AttributeError) as err:
    raise GridError(f"{where}: cannot import {spec!r}: {err}") from err
  if not callable(obj):
    raise GridError(f"{where}: {spec!r} is not callable.")
  return obj


def _builtin_estimator(etype: str) -> Callable:
  if etype == "zeroth_order":
    from pgjax._src.zeroth_order import zeroth_order
    return zeroth_order
  from pgjax._src import score_function
  return getattr(score_function, etype)


def resolve_estimator(name: str, spec: Any) -> Callable:
  """Returns ``factory(problem, num_samples, **hyper)`` for one ``[estimators.NAME]`` entry."""
  if not isinstance(spec, dict):
    raise GridError(f"estimators.{name} must be a table, got {spec!r}.")
  if "type" not in spec:
    raise GridError(f"estimators.{name} is missing the field `type` (one of "
                    f"{', '.join(_BUILTIN_ESTIMATORS)} or 'module:function').")
  etype = spec["type"]
  static = {k: v for k, v in spec.items() if k not in ("type", "hyperparameters")}
  if etype in ("score_function", "pathwise"):
    ctor = _builtin_estimator(etype)

    def factory(problem, num_samples, **hyper):
      return ctor(problem.f, problem.dist_fn, num_samples=num_samples, **static, **hyper)
    return factory
  if etype == "zeroth_order":
    ctor = _builtin_estimator(etype)

    def factory(problem, num_samples, **hyper):
      return ctor(problem.expectation, num_directions=num_samples, **static, **hyper)
    return factory
  if isinstance(etype, str) and ":" in etype:
    fn = _import_object(etype, f"estimators.{name}")

    def factory(problem, num_samples, **hyper):
      return fn(problem, num_samples, **static, **hyper)
    return factory
  raise GridError(f"estimators.{name}: unknown estimator type {etype!r}; expected one of "
                  f"{', '.join(_BUILTIN_ESTIMATORS)} or 'module:function'.")


def _returns_problem(fn: Any) -> bool:
  if not inspect.isfunction(fn) or fn.__name__.startswith("_"):
    return False
  try:
    ann = inspect.signature(fn).return_annotation
  except (TypeError, ValueError):
    return False
  text = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
  return bool(_RETURNS_PROBLEM.match(text.replace(" ", "")))


def known_problems() -> dict:
  """Built-in problem constructors: name -> function, only those that return a problem (alone or as the
  first element of a tuple), not helpers such as closed-form gradients or metrics."""
  found = {}
  for module_name in _PROBLEM_MODULES:
    try:
      module = importlib.import_module(module_name)
    except ModuleNotFoundError:
      continue
    for attr in dir(module):
      fn = getattr(module, attr)
      if _returns_problem(fn):
        found[attr] = fn
  return dict(sorted(found.items()))


def _as_problem(result: Any, where: str) -> Any:
  """A constructor's result as a problem: a tuple contributes its first element that has ``params``."""
  if isinstance(result, tuple) and not hasattr(result, "params"):
    result = next((r for r in result if hasattr(r, "params")), result)
  if not hasattr(result, "params"):
    raise GridError(f"{where} returned {type(result).__name__}, not a problem (an object with "
                    "`params` and `f`/`dist_fn`, `expectation` or `true_grad`).")
  return result


def resolve_problem(name: str, spec: Any) -> Any:
  """Builds the problem of one ``[problems.NAME]`` entry: ``type`` is a built-in constructor or
  ``"package.module:function"``; the other keys are its keyword arguments."""
  if not isinstance(spec, dict):
    raise GridError(f"problems.{name} must be a table, got {spec!r}.")
  if "type" not in spec:
    raise GridError(f"problems.{name} is missing the field `type` (a built-in problem such as "
                    "'gaussian_quadratic', or 'package.module:function').")
  ptype = spec["type"]
  if isinstance(ptype, str) and ":" in ptype:
    ctor = _import_object(ptype, f"problems.{name}")
  else:
    known = known_problems()
    if ptype not in known:
      raise GridError(f"problems.{name}: unknown problem type {ptype!r}; known: {sorted(known)}, or "
                      "'package.module:function' for your own.")
    ctor = known[ptype]
  kwargs = {k: v for k, v in spec.items() if k != "type"}
  try:
    result = ctor(**kwargs)
  except (TypeError, ValueError) as err:
    raise GridError(f"problems.{name}: {ptype}(**{kwargs}) failed: {err}") from err
  return _as_problem(result, f"problems.{name}: {ptype}(**{kwargs})")


def _apply_quick(cfg: dict, path: str) -> dict:
  overrides = cfg.get("quick", {})
  if not isinstance(overrides, dict):
    raise GridError(f"{path}: `quick` must be a table of overrides.")
  bad = sorted(set(overrides) - {"num_seeds", "sample_sizes", "chunk_size"})
  if bad:
    raise GridError(f"{path}: quick.{bad[0]} cannot be overridden (only num_seeds, sample_sizes, "
                    "chunk_size).")
  cfg = {**cfg, **overrides}
  if "num_seeds" not in overrides and isinstance(cfg["num_seeds"], int):
    cfg["num_seeds"] = min(cfg["num_seeds"], 256)
  return cfg


def load_config(path: str, *, quick: bool = False, out: str | None = None) -> dict:
  """Reads and validates a grid config; returns the keyword arguments of ``run_grid``.

  With ``quick``, the config's ``[quick]`` overrides apply and, unless ``out`` is given, the output
  folder gets the suffix ``-quick`` (so a quick run never mixes with a full one).

  Raises:
    GridError: unknown or missing fields, unknown estimator or problem types.
      Numeric checks (sample sizes, seeds, output folder) are ``run_grid``'s.
  """
  cfg = read_file(path)
  unknown = sorted(set(cfg) - _TOP_LEVEL)
  if unknown:
    raise GridError(f"{path}: unknown field(s) {unknown}; allowed: {sorted(_TOP_LEVEL)}.")
  missing = [k for k in _REQUIRED if k not in cfg]
  if missing:
    raise GridError(f"{path}: missing required field(s) {missing}.")
  if quick:
    cfg = _apply_quick(cfg, path)
  for section in ("problems", "estimators"):
    if not isinstance(cfg[section], dict) or not cfg[section]:
      raise GridError(f"{path}: `{section}` must be a non-empty table of named entries.")
  estimators = {n: resolve_estimator(n, s) for n, s in cfg["estimators"].items()}
  hyper = {}
  for n, s in cfg["estimators"].items():
    if "hyperparameters" in s:
      if not isinstance(s["hyperparameters"], dict):
        raise GridError(f"estimators.{n}.hyperparameters must be a table name -> [values].")
      hyper[n] = s["hyperparameters"]
  problems = {n: resolve_problem(n, s) for n, s in cfg["problems"].items()}
  if out is None:
    out = cfg.get("out") or os.path.join(
        "results", "sweeps", os.path.splitext(os.path.basename(path))[0])
    if quick:
      out = out.rstrip("/\\") + QUICK_SUFFIX
  return dict(
      estimators=estimators, problems=problems, sample_sizes=cfg["sample_sizes"],
      num_seeds=cfg["num_seeds"], key=cfg.get("seed", 0), out_dir=out,
      hyperparameters=hyper, chunk_size=cfg.get("chunk_size"),
      estimator_specs=cfg["estimators"], problem_specs=cfg["problems"])
