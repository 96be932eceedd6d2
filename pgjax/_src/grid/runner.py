r"""The grid runner: :func:`run_grid` (see the package docstring of :mod:`pgjax._src.grid`)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import numbers
import os
import tempfile
import threading
import time
import zlib
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pgjax._src import sweep
from pgjax._src import validation
from pgjax._src.grid import output

EstimatorFactory = Callable[..., Callable]

# Statistics copied from GradientStats into each row (scalars).
SCALAR_STATS = ("total_variance", "total_variance_se", "bias_norm", "bias_norm_se", "bias_sq",
                "max_abs_z", "bias_p_value", "mse", "mse_se", "cosine", "cosine_se", "snr", "snr_se")

_RESERVED = frozenset(SCALAR_STATS + (
    "estimator", "problem", "num_samples", "hyperparameters", "num_seeds", "mean", "mean_se",
    "chunk_size", "key", "key_impl", "root_key", "pgjax_version", "jax_version", "jaxlib_version",
    "python_version", "platform", "device_kind", "device_count", "process_count", "group_size",
    "group_seconds", "estimator_spec", "problem_spec", "finished_utc", "cell_id"))

_DEFAULT_IMPL = "threefry2x32"


class GridError(ValueError):
  """A grid that cannot run (bad name, field, sample size or output path)."""


class GridResult(NamedTuple):
  """What :func:`run_grid` returns.

  Attributes:
    rows: one dict per cell of this grid, in grid order (estimator, problem,
      sample size, hyperparameter values), as written to ``results.json``.
    csv_path: path of ``results.csv``.
    json_path: path of ``results.json``.
    num_computed: cells computed by this call.
    num_reused: cells read back from a previous (interrupted) run.
    num_compiled: groups compiled by this call (one per estimator x problem x
      sample size that had a missing cell; independent of the number of
      hyperparameter values).
  """
  rows: list
  csv_path: str
  json_path: str
  num_computed: int
  num_reused: int
  num_compiled: int


class _RootKey(NamedTuple):
  impl: str   # PRNG implementation name, e.g. "threefry2x32" or "rbg"
  data: tuple  # the key's uint32 words


@dataclasses.dataclass(frozen=True)
class _Cell:
  estimator: str
  problem: str
  num_samples: int
  hyper: tuple  # ((name, value), ...)
  cell_id: str
  index: int  # position within its group


@dataclasses.dataclass(frozen=True)
class _Group:
  estimator: str
  problem: str
  num_samples: int
  names: tuple
  values: tuple  # tuple of value tuples, one per cell
  cells: tuple
  key: _RootKey


# ----------------------------------------------------------------------------- validation


def _fail(msg: str) -> None:
  raise GridError(msg)


def _check_name(name: Any, what: str) -> None:
  if not isinstance(name, str) or not name:
    _fail(f"{what} names must be non-empty strings, got {name!r}.")


def _check_int(value: Any, name: str, minimum: int) -> int:
  try:
    return validation.check_positive_int(value, name, minimum=minimum)
  except (TypeError, ValueError) as err:
    raise GridError(str(err)) from None


def _check_out_dir(out_dir: Any) -> str:
  """Raises GridError unless ``out_dir`` is (or can be made) a writable folder; touches no file."""
  if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
    _fail(f"`out_dir` must be a folder path, got {out_dir!r}.")
  out_dir = os.path.abspath(os.fspath(out_dir))
  existing = out_dir
  while not os.path.exists(existing):
    parent = os.path.dirname(existing)
    if parent == existing:
      break
    existing = parent
  if not os.path.isdir(existing):
    _fail(f"`out_dir` {out_dir!r} cannot be created: {existing!r} is a file, not a folder.")
  if not os.access(existing, os.W_OK | os.X_OK):
    _fail(f"`out_dir` {out_dir!r} is not writable (no write permission on {existing!r}).")
  try:  # os.access is not the whole story (read-only mounts, ACLs): try a probe file
    fd, probe = tempfile.mkstemp(prefix=".pgjax-probe-", dir=existing)
    os.close(fd)
    os.remove(probe)
  except OSError as err:
    _fail(f"`out_dir` {out_dir!r} is not writable: {err}.")
  for sub in ("cells", "results.csv", "results.json"):
    path = os.path.join(out_dir, sub)
    if os.path.exists(path) and not os.access(path, os.W_OK):
      _fail(f"`out_dir` {out_dir!r}: {path!r} exists and is not writable.")
  return out_dir


def _check_values(est: str, hname: str, values: Any) -> tuple:
  if isinstance(values, (numbers.Number, np.number)) and not isinstance(values, bool):
    values = [values]
  if not isinstance(values, Sequence) or isinstance(values, str) or len(values) == 0:
    _fail(f"`hyperparameters[{est!r}][{hname!r}]` must be a non-empty list of numbers, got {values!r}.")
  vals = []
  for v in values:
    if (isinstance(v, bool) or not isinstance(v, (numbers.Real, np.number))
        or not math.isfinite(float(v))):
      _fail(f"`hyperparameters[{est!r}][{hname!r}]` must contain finite numbers, got {v!r}.")
    vals.append(float(v))
  if len(set(vals)) != len(vals):
    _fail(f"`hyperparameters[{est!r}][{hname!r}]` has duplicate values: {values!r}.")
  return tuple(vals)


def _normalise_hyper(hyperparameters: Any, estimators: Mapping) -> dict:
  if hyperparameters is None:
    return {}
  if not isinstance(hyperparameters, Mapping):
    _fail(f"`hyperparameters` must map estimator names to {{name: [values]}}, got "
          f"{type(hyperparameters).__name__}.")
  out = {}
  for est, table in hyperparameters.items():
    if est not in estimators:
      _fail(f"`hyperparameters` names an unknown estimator {est!r}; the estimators are "
            f"{sorted(estimators)}.")
    if not isinstance(table, Mapping):
      _fail(f"`hyperparameters[{est!r}]` must map hyperparameter names to value lists, got "
            f"{type(table).__name__}.")
    clean = {}
    for hname, values in table.items():
      _check_name(hname, "hyperparameter")
      if hname in _RESERVED:
        _fail(f"`hyperparameters[{est!r}]`: {hname!r} is a reserved column name of the table.")
      clean[hname] = _check_values(est, hname, values)
    out[est] = clean
  return out


def _root_key(key: Any) -> _RootKey:
  """The root key's implementation and data; any PRNG implementation (threefry, rbg, ...)."""
  if isinstance(key, bool):
    _fail(f"`key` must be a PRNG key or an integer seed, got {key!r}.")
  if isinstance(key, (numbers.Integral, np.integer)):
    key = jax.random.key(int(key))
  try:
    key = validation.as_key(key)
  except TypeError as err:
    raise GridError(f"{err} (or an integer seed)") from None
  if validation.is_traced(key):
    _fail("`key` must be a concrete PRNG key, not a traced value (run_grid compiles its own functions).")
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)  # a legacy raw key of the default implementation
  data = tuple(int(x) for x in np.asarray(jax.random.key_data(key)).ravel())
  return _RootKey(str(jax.random.key_impl(key)), data)


def _wrap(key: _RootKey) -> jax.Array:
  return jax.random.wrap_key_data(jnp.asarray(key.data, jnp.uint32), impl=key.impl)


def _cell_key(root: _RootKey, problem: str, num_samples: int) -> _RootKey:
  tag = zlib.crc32(f"{problem}\x00{num_samples}".encode()) & 0x7FFFFFFF
  key = jax.random.fold_in(_wrap(root), tag)
  return _RootKey(root.impl, tuple(int(x) for x in np.asarray(jax.random.key_data(key)).ravel()))


def _format_key(key: _RootKey) -> str:
  return ":".join(f"{x:#010x}" for x in key.data)


# ----------------------------------------------------------------------------- groups


def _build_groups(estimators, problems, sample_sizes, hyper, num_seeds, root, chunk_size,
                  estimator_specs, problem_specs) -> list:
  groups = []
  for est in estimators:
    table = hyper.get(est, {})
    names = tuple(table)
    values = tuple(itertools.product(*(table[n] for n in names))) if names else ((),)
    for prob in problems:
      for n in sample_sizes:
        key = _cell_key(root, prob, n)
        cells = []
        for i, vals in enumerate(values):
          identity = {
              "estimator": est, "estimator_spec": estimator_specs.get(est),
              "problem": prob, "problem_spec": problem_specs.get(prob),
              "num_samples": n, "hyperparameters": dict(zip(names, vals)),
              "num_seeds": num_seeds, "key": list(key.data), "chunk_size": chunk_size,
          }
          if key.impl != _DEFAULT_IMPL:  # (threefry cells keep the identity they always had)
            identity["key_impl"] = key.impl
          cell_id = hashlib.sha1(output.canonical(identity).encode()).hexdigest()[:16]
          cells.append(_Cell(est, prob, n, tuple(zip(names, vals)), cell_id, i))
        groups.append(_Group(est, prob, n, names, values, tuple(cells), key))
  return groups


def _group_function(factory, problem, num_samples, names, num_seeds, chunk_size, on_trace):
  """jit(vmap over hyperparameter values) of gradient_stats for one group."""

  def one(hvals, key, params, true_grad):
    on_trace()
    estimator = factory(problem, num_samples, **dict(zip(names, hvals)))
    return sweep.gradient_stats(estimator, params, key, num_seeds=num_seeds, true_grad=true_grad,
                                chunk_size=chunk_size)

  fn = jax.vmap(one, in_axes=(0, None, None, None)) if names else one
  return jax.jit(fn)


def _group_args(g: _Group, problem, true_grad) -> tuple:
  dtype = jnp.result_type(float)
  hvals = tuple(jnp.asarray([v[j] for v in g.values], dtype) for j in range(len(g.names)))
  return hvals, _wrap(g.key), problem.params, true_grad


def _true_grad(problem) -> Any:
  tg = getattr(problem, "true_grad", None)
  if tg is None:
    return None
  return tg(problem.params) if callable(tg) else tg


def _trace_groups(groups, estimators, problems, num_seeds, chunk_size, on_trace) -> dict:
  """Traces (without compiling or running) every group, so trace-time errors surface before any work."""
  true_grads = {name: _true_grad(p) for name, p in problems.items()}
  functions = {}
  for g in groups:
    fn = _group_function(estimators[g.estimator], problems[g.problem], g.num_samples, g.names,
                         num_seeds, chunk_size, on_trace)
    args = _group_args(g, problems[g.problem], true_grads[g.problem])
    try:
      jax.eval_shape(fn, *args)
    except Exception as err:  # noqa: BLE001 - re-raised with the cell named
      raise GridError(f"estimator {g.estimator!r} on problem {g.problem!r} with num_samples="
                      f"{g.num_samples} fails to build: {type(err).__name__}: {err}") from err
    functions[g] = (fn, args)
  return functions


def _run_interruptibly(fn, args):
  """Compiles ``fn`` here, then runs it in a worker thread while this thread waits in short steps.

  A CPU computation runs in the calling thread and does not return to Python until it ends, so Ctrl-C
  (``KeyboardInterrupt``) would wait for the whole group; waiting in short ``join`` steps lets it through
  at once. Compiling in the calling thread keeps its JAX configuration (thread-local contexts such as
  ``jax.enable_x64``).
  """
  compiled = fn.lower(*args).compile()
  box: dict = {}

  def work():
    try:
      box["value"] = jax.block_until_ready(compiled(*args))
    except BaseException as err:  # noqa: BLE001 - re-raised in the calling thread
      box["error"] = err

  worker = threading.Thread(target=work, name="pgjax-grid-group", daemon=True)
  worker.start()
  while worker.is_alive():
    worker.join(0.05)
  if "error" in box:
    raise box["error"]
  return box["value"]


def _row(g, c, stats, seconds, root, meta, num_seeds, chunk_size, estimator_specs,
         problem_specs) -> dict:
  pick = (lambda x: x[c.index]) if g.names else (lambda x: x)
  row = {"estimator": c.estimator, "problem": c.problem, "num_samples": c.num_samples}
  for name, value in c.hyper:
    row[name] = value
  row["hyperparameters"] = output.canonical(dict(c.hyper))
  row["num_seeds"] = num_seeds
  for field in SCALAR_STATS:
    if hasattr(stats, field):
      row[field] = output.to_float(pick(getattr(stats, field)))
  for field in ("mean", "mean_se"):
    if hasattr(stats, field):
      row[field] = [np.asarray(pick(leaf)).tolist()
                    for leaf in jax.tree_util.tree_leaves(getattr(stats, field))]
  row["chunk_size"] = "" if chunk_size is None else chunk_size
  row["key"] = _format_key(g.key)
  row["key_impl"] = g.key.impl
  row["root_key"] = _format_key(root)
  row.update(meta)
  row["group_size"] = len(g.cells)
  row["group_seconds"] = round(seconds, 4)
  if estimator_specs.get(c.estimator) is not None:
    row["estimator_spec"] = output.canonical(estimator_specs[c.estimator])
  if problem_specs.get(c.problem) is not None:
    row["problem_spec"] = output.canonical(problem_specs[c.problem])
  row["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
  row["cell_id"] = c.cell_id
  return row


# ----------------------------------------------------------------------------- the runner


def _validate(estimators, problems, sample_sizes, num_seeds, chunk_size) -> tuple:
  if not isinstance(estimators, Mapping) or not estimators:
    _fail(f"`estimators` must be a non-empty mapping name -> factory, got {estimators!r}.")
  for name, factory in estimators.items():
    _check_name(name, "estimator")
    if not callable(factory):
      _fail(f"`estimators[{name!r}]` must be a callable factory(problem, num_samples, **hyper), "
            f"got {type(factory).__name__}.")
  if not isinstance(problems, Mapping) or not problems:
    _fail(f"`problems` must be a non-empty mapping name -> problem, got {problems!r}.")
  for name, problem in problems.items():
    _check_name(name, "problem")
    if not hasattr(problem, "params"):
      _fail(f"`problems[{name!r}]` has no `params` attribute (got {type(problem).__name__}).")
  if isinstance(sample_sizes, (str, numbers.Number)) or not isinstance(sample_sizes, Sequence):
    _fail(f"`sample_sizes` must be a list of integers >= 1, got {sample_sizes!r}.")
  if not sample_sizes:
    _fail("`sample_sizes` must not be empty.")
  sample_sizes = [_check_int(n, f"sample_sizes[{i}]", 1) for i, n in enumerate(sample_sizes)]
  if len(set(sample_sizes)) != len(sample_sizes):
    _fail(f"`sample_sizes` has duplicates: {sample_sizes}.")
  num_seeds = _check_int(num_seeds, "num_seeds", 2)
  if chunk_size is not None:
    chunk_size = _check_int(chunk_size, "chunk_size", 1)
  return sample_sizes, num_seeds, chunk_size


def run_grid(
    estimators: Mapping[str, EstimatorFactory],
    problems: Mapping[str, Any],
    *,
    sample_sizes: Sequence[int],
    num_seeds: int,
    key: Any,
    out_dir: str | os.PathLike,
    hyperparameters: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    chunk_size: int | None = None,
    resume: bool = True,
    progress: bool = True,
    estimator_specs: Mapping[str, Any] | None = None,
    problem_specs: Mapping[str, Any] | None = None,
) -> GridResult:
  r"""Runs ``gradient_stats`` on every cell of a grid and writes the table.

  Example (a doctest; ``out_dir`` receives ``results.csv`` and ``results.json``)::

    >>> import tempfile, pgjax
    >>> problem = pgjax.problems.gaussian_quadratic()
    >>> res = pgjax.sweep.run_grid(
    ...     {"rloo": lambda p, n: pgjax.score_function(p.f, p.dist_fn, num_samples=n,
    ...                                                baseline="leave_one_out"),
    ...      "es": lambda p, n, sigma: pgjax.zeroth_order(p.expectation, num_directions=n, sigma=sigma,
    ...                                                   scheme="antithetic")},
    ...     {"quad": problem}, sample_sizes=[4], num_seeds=200, key=0, out_dir=tempfile.mkdtemp(),
    ...     hyperparameters={"es": {"sigma": [0.1, 0.5]}}, progress=False)
    >>> sorted((row["estimator"], row["num_samples"]) for row in res.rows)
    [('es', 4), ('es', 4), ('rloo', 4)]

  Args:
    estimators: name -> factory ``factory(problem, num_samples, **hyper) ->
      estimator``, where ``estimator(key, params) -> (grads, aux)``. The factory
      is called while tracing: ``num_samples`` is a Python int (static), each
      hyperparameter is a traced scalar (so it must only be used in JAX
      arithmetic, never in Python control flow).
    problems: name -> problem with ``params`` and, optionally,
      ``true_grad(params)`` (the target for bias, MSE and cosine; without it
      those statistics are whatever ``gradient_stats`` reports for
      ``true_grad=None``).
    sample_sizes: the sample counts ``N`` (integers >= 1), one compilation each.
    num_seeds: independent estimator calls per cell (>= 2); seed ``i`` of a cell
      uses ``fold_in(cell_key, i)``.
    key: root PRNG key (any implementation, e.g. ``jax.random.key(0, impl="rbg")``;
      a raw ``uint32`` key of the default implementation) or an integer seed.
      Cell keys are ``fold_in(key, crc32(problem, num_samples))``, shared by all
      estimators and hyperparameter values (common random numbers).
    out_dir: output folder (created). Holds ``results.csv``, ``results.json`` and
      ``cells/<cell_id>.json``.
    hyperparameters: estimator name -> {hyperparameter name -> list of values};
      the cells of an estimator are the Cartesian product of its lists, all
      computed in one vmapped call. Estimators not listed have one cell per
      problem and sample size.
    chunk_size: seeds per chunk, passed to ``gradient_stats`` (``None``: its
      automatic choice). Memory grows with (number of hyperparameter values) x
      ``chunk_size``.
    resume: reuse finished cells found in ``out_dir`` (``False`` recomputes and
      overwrites the cells of this grid; other files are kept).
    progress: show a progress bar with an ETA (tqdm) on stderr.
    estimator_specs, problem_specs: optional JSON-able descriptions (e.g. the
      config entries) recorded in each row and part of the cell identity, so that
      changing a description recomputes the affected cells.

  Returns:
    A :class:`GridResult`; ``rows`` holds, per cell: the names, ``num_samples``,
    each hyperparameter value, ``num_seeds``, the statistics of
    ``GradientStats`` (scalars, and ``mean`` / ``mean_se`` as lists of leaves in
    the JSON only), ``key`` (the cell key's data) and ``key_impl``, ``root_key``,
    versions, device kind and count, ``group_seconds`` (wall time of the group's
    compilation and call) and ``cell_id``.

  Raises:
    GridError (a ValueError): for a bad grid, before anything is computed or
      written: empty or non-callable estimators, problems without ``params``,
      sample sizes that are not integers >= 1, ``num_seeds`` < 2, hyperparameters
      of an unknown estimator or non-finite values, an output folder that cannot
      be written, or a group whose estimator fails to trace (the original error
      is chained).
    KeyboardInterrupt: on Ctrl-C, promptly (the group in flight is abandoned);
      every cell finished before it is on disk, and rerunning resumes.
  """
  # ---- validate everything before touching the disk or the accelerator
  sample_sizes, num_seeds, chunk_size = _validate(estimators, problems, sample_sizes, num_seeds,
                                                  chunk_size)
  hyper = _normalise_hyper(hyperparameters, estimators)
  root = _root_key(key)
  out_dir = _check_out_dir(out_dir)
  estimator_specs = dict(estimator_specs or {})
  problem_specs = dict(problem_specs or {})
  groups = _build_groups(estimators, problems, sample_sizes, hyper, num_seeds, root, chunk_size,
                         estimator_specs, problem_specs)
  traces = {"n": 0}

  def on_trace():
    traces["n"] += 1

  functions = _trace_groups(groups, estimators, problems, num_seeds, chunk_size, on_trace)

  # ---- read back finished cells
  cells_dir = os.path.join(out_dir, "cells")
  # With several processes (jax.distributed), every process computes (the collectives need all of them)
  # but only process 0 writes, so a shared output folder sees one writer.
  writer = jax.process_index() == 0
  if writer:
    os.makedirs(cells_dir, exist_ok=True)
  done: dict = {}
  if resume:
    for c in (c for g in groups for c in g.cells):
      row = output.read_cell(os.path.join(cells_dir, c.cell_id + ".json"))
      if row is not None and row.get("cell_id") == c.cell_id:
        done[c.cell_id] = row
  num_reused = len(done)
  all_cells = [c for g in groups for c in g.cells]
  meta = output.versions()
  bar = output.progress_bar(len(all_cells), num_reused, progress and writer)
  num_computed = num_compiled = 0
  try:
    for g in groups:
      missing = [c for c in g.cells if c.cell_id not in done]
      if not missing:
        continue
      bar.set_postfix_str(f"{g.estimator} / {g.problem} / N={g.num_samples}")
      t0 = time.time()
      stats = _run_interruptibly(*functions[g])
      seconds = time.time() - t0
      num_compiled += 1
      for c in missing:
        row = _row(g, c, stats, seconds, root, meta, num_seeds, chunk_size, estimator_specs,
                   problem_specs)
        if writer:
          output.atomic_write(os.path.join(cells_dir, c.cell_id + ".json"), json.dumps(row, indent=1))
        done[c.cell_id] = row
        num_computed += 1
      if writer:
        output.write_tables(out_dir, [done[c.cell_id] for c in all_cells if c.cell_id in done])
      bar.update(len(missing))
  finally:
    bar.close()
  rows = [done[c.cell_id] for c in all_cells]
  if writer:
    csv_path, json_path = output.write_tables(out_dir, rows)
  else:
    csv_path, json_path = os.path.join(out_dir, "results.csv"), os.path.join(out_dir, "results.json")
  return GridResult(rows, csv_path, json_path, num_computed, num_reused, num_compiled)
