r"""Statistical checks for gradient estimators, usable in any test suite.

Every check runs many independent replicates (``vmap`` over keys folded from one fixed key, chunked by
:func:`pgjax.sweep.gradient_stats`), so it is deterministic: it cannot pass by luck on one run and fail on
the next. Bounds are in standard errors (default 5, a two-sided per-coordinate false-alarm rate of about
:math:`6\times10^{-7}`). Pair every check with a *power control* in your test: the same check applied to a
wrong target or a slightly scaled estimator must fail, which shows the check can fail at all at this number
of replicates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pgjax._src import sweep
from pgjax._src import validation


def _flat(tree):  # in numpy: ravel_pytree would compile a concatenation per new tree structure
  leaves = jax.tree_util.tree_leaves(tree)
  return np.concatenate([np.asarray(x, np.float64).ravel() for x in leaves]) if leaves else np.zeros(0)


def check_unbiased(estimator: Callable, params: Any, key: jax.Array, *, target: Any,
                   num_replicates: int = 2000, num_se: float = 5.0, atol: float = 1e-6,
                   rtol: float = 0.0, chunk_size: int | None = None
                   ) -> tuple[bool, str, sweep.GradientStats]:
  r"""Whether every coordinate satisfies :math:`|\bar g_k - t_k| \le \text{num\_se}\cdot\mathrm{SE}_k + \text{atol} + \text{rtol}|t_k|`.

  Returns:
    ``(ok, report, stats)``; ``report`` lists the worst coordinates in standard errors.
  """
  num_replicates = validation.check_positive_int(num_replicates, "num_replicates", minimum=2)
  validation.check_positive(num_se, "num_se")
  validation.check_same_structure(params, target, "params", "target")
  stats = sweep.gradient_stats(estimator, params, key, num_seeds=num_replicates, true_grad=target,
                               chunk_size=chunk_size)
  mean, se, t = _flat(stats.mean), _flat(stats.mean_se), _flat(target)
  err = np.abs(mean - t)
  bound = num_se * se + atol + rtol * np.abs(t)
  bad = ~(err <= bound)
  z = err / np.maximum(se, 1e-300)
  order = np.argsort(-z)[:5]
  lines = [f"  coord {k}: mean {mean[k]:+.6g}, target {t[k]:+.6g}, |diff| {err[k]:.3g} = {z[k]:.2f} SE "
           f"(SE {se[k]:.3g}, bound {bound[k]:.3g})" for k in order]
  report = (f"{int(bad.sum())} of {bad.size} coordinates outside {num_se} SE + atol {atol} "
            f"over {num_replicates} replicates; worst:\n" + "\n".join(lines))
  return (not bad.any()), report, stats


def assert_unbiased(estimator: Callable, params: Any, key: jax.Array, *, target: Any,
                    num_replicates: int = 2000, num_se: float = 5.0, atol: float = 1e-6,
                    rtol: float = 0.0, chunk_size: int | None = None) -> sweep.GradientStats:
  """Asserts that ``estimator`` is unbiased for ``target`` (see :func:`check_unbiased`); returns the stats.

  Raises:
    AssertionError: with a per-coordinate report when any coordinate is outside its bound.
  """
  ok, report, stats = check_unbiased(estimator, params, key, target=target, num_replicates=num_replicates,
                                     num_se=num_se, atol=atol, rtol=rtol, chunk_size=chunk_size)
  if not ok:
    raise AssertionError("estimator is biased for the target: " + report)
  return stats


def assert_variance_less(estimator_a: Callable, estimator_b: Callable, params: Any, key: jax.Array, *,
                         num_replicates: int = 2000, ratio: float = 1.0, num_se: float = 5.0,
                         chunk_size: int | None = None
                         ) -> tuple[sweep.GradientStats, sweep.GradientStats]:
  r"""Asserts :math:`\mathrm{tr\,Cov}[a] + k\,\mathrm{SE}_a < \text{ratio}\cdot(\mathrm{tr\,Cov}[b] - k\,\mathrm{SE}_b)`.

  A conservative one-sided comparison of total variances with margin ``ratio`` (e.g. ``ratio=0.5`` claims
  ``a`` has less than half the variance of ``b``). The two estimators use independent keys.

  Returns:
    ``(stats_a, stats_b)``.
  """
  validation.check_positive(ratio, "ratio")
  ka, kb = jax.random.split(validation.as_key(key))
  sa = sweep.gradient_stats(estimator_a, params, ka, num_seeds=num_replicates, chunk_size=chunk_size)
  sb = sweep.gradient_stats(estimator_b, params, kb, num_seeds=num_replicates, chunk_size=chunk_size)
  va, sea = float(sa.total_variance), float(sa.total_variance_se)
  vb, seb = float(sb.total_variance), float(sb.total_variance_se)
  lhs, rhs = va + num_se * sea, ratio * (vb - num_se * seb)
  if not lhs < rhs:
    raise AssertionError(
        f"variance claim failed: tr Cov[a] = {va:.6g} (SE {sea:.3g}), tr Cov[b] = {vb:.6g} (SE {seb:.3g}); "
        f"need {va:.6g} + {num_se}*{sea:.3g} = {lhs:.6g} < {ratio} * ({vb:.6g} - {num_se}*{seb:.3g}) = {rhs:.6g}")
  return sa, sb


def assert_tree_all_finite(tree: Any, name: str = "tree") -> None:
  """Asserts every leaf of ``tree`` is finite, naming the first bad leaf."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if not np.all(np.isfinite(np.asarray(leaf))):
      raise AssertionError(f"{name}{jax.tree_util.keystr(path)} has non-finite values: {leaf}")


# ---------------------------------------------------------------------------------------------------------
# Conformance: the contract every estimator ``(key, params) -> (grads, aux)`` must meet.
# ---------------------------------------------------------------------------------------------------------

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
NAN_POLICIES = ("propagate", "rank_last", "raise")


class PropertyResult(NamedTuple):
  """The outcome of one conformance property: ``status`` is ``"passed"``, ``"failed"`` or ``"skipped"``."""
  name: str
  status: str
  message: str = ""


@dataclasses.dataclass(frozen=True)
class ConformanceReport:
  """The results of :func:`check_estimator`, one :class:`PropertyResult` per property, in the order run."""
  results: tuple[PropertyResult, ...]

  def __getitem__(self, name: str) -> PropertyResult:
    for r in self.results:
      if r.name == name:
        return r
    raise KeyError(f"no property named {name!r}; have {[r.name for r in self.results]}")

  def __contains__(self, name: str) -> bool:
    return any(r.name == name for r in self.results)

  def _with(self, status):
    return tuple(r for r in self.results if r.status == status)

  @property
  def passed(self) -> tuple[PropertyResult, ...]:
    return self._with(PASSED)

  @property
  def failed(self) -> tuple[PropertyResult, ...]:
    return self._with(FAILED)

  @property
  def skipped(self) -> tuple[PropertyResult, ...]:
    return self._with(SKIPPED)

  @property
  def ok(self) -> bool:
    return not self.failed

  def __str__(self) -> str:
    lines = [f"{len(self.failed)} failed, {len(self.passed)} passed, {len(self.skipped)} skipped"]
    for r in self.results:
      lines.append(f"  {r.status.upper():7s} {r.name}" + (f": {r.message}" if r.message else ""))
    return "\n".join(lines)

  def raise_if_failed(self) -> None:
    """Raises ``AssertionError`` listing every failed property with its message."""
    if self.failed:
      raise AssertionError(f"estimator fails {len(self.failed)} conformance propert"
                           f"{'y' if len(self.failed) == 1 else 'ies'}:\n"
                           + "\n".join(f"  {r.name}: {r.message}" for r in self.failed))


# --- building blocks ---------------------------------------------------------------------------------------

def _dtype_name(x) -> str:
  return str(jnp.asarray(x).dtype) if not hasattr(x, "dtype") else str(x.dtype)


def assert_same_structure_and_dtypes(tree: Any, reference: Any, name: str = "grads",
                                     reference_name: str = "params") -> None:
  """Asserts ``tree`` has ``reference``'s tree structure, and each leaf its shape and dtype.

  ``None`` leaves must stay ``None`` (they are part of the tree structure).
  """
  ts, tr = jax.tree_util.tree_structure(tree), jax.tree_util.tree_structure(reference)
  if ts != tr:
    raise AssertionError(f"{name} has tree structure {ts}, {reference_name} has {tr}")
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(tree)[0], jax.tree_util.tree_leaves(reference)):
    where = f"{name}{jax.tree_util.keystr(path)}"
    if np.shape(a) != np.shape(b):
      raise AssertionError(f"{where} has shape {np.shape(a)}, {reference_name} has {np.shape(b)}")
    if _dtype_name(a) != _dtype_name(b):
      raise AssertionError(f"{where} has dtype {_dtype_name(a)}, {reference_name} has {_dtype_name(b)}")


def _np(x):
  x = np.asarray(x)
  if x.dtype.kind == "V" or str(x.dtype) == "bfloat16":  # ml_dtypes: compare in float64
    x = x.astype(np.float64)
  return x


def _float_leaves_with_path(tree):
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if leaf is None or jax.dtypes.issubdtype(jnp.result_type(leaf), jax.dtypes.prng_key):
      continue
    out.append((jax.tree_util.keystr(path), leaf))
  return out


def assert_trees_equal(a: Any, b: Any, name_a: str = "a", name_b: str = "b") -> None:
  """Asserts two pytrees are bit-identical (NaNs in the same places count as equal)."""
  ta, tb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
  if ta != tb:
    raise AssertionError(f"{name_a} and {name_b} differ in tree structure: {ta} vs {tb}")
  for (path, x), (_, y) in zip(_float_leaves_with_path(a), _float_leaves_with_path(b)):
    x, y = _np(x), _np(y)
    if x.shape != y.shape or x.dtype != y.dtype:
      raise AssertionError(f"{name_a}{path} is {x.dtype}{list(x.shape)}, {name_b}{path} is {y.dtype}{list(y.shape)}")
    if x.dtype.kind in "fc":
      same = (x == y) | (np.isnan(x) & np.isnan(y))
    else:
      same = x == y
    if not np.all(same):
      k = int(np.flatnonzero(~same.ravel())[0])
      raise AssertionError(f"{name_a}{path} and {name_b}{path} are not bit-identical: {int((~same).sum())} of "
                           f"{same.size} entries differ, first at flat index {k}: "
                           f"{x.ravel()[k]!r} vs {y.ravel()[k]!r}")


def assert_trees_close(a: Any, b: Any, *, rtol: float = 1e-5, atol: float = 1e-6, name_a: str = "a",
                       name_b: str = "b") -> None:
  r"""Asserts :math:`|a - b| \le \text{atol} + \text{rtol}\cdot\max(\|a\|_\infty, \|b\|_\infty)` leaf by leaf.

  The tolerance is relative to each leaf's largest entry (not to each entry), which is the right scale for
  sums computed in a different order: a coordinate that nearly cancels is not held to a relative bound.
  NaNs must be in the same places.
  """
  ta, tb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
  if ta != tb:
    raise AssertionError(f"{name_a} and {name_b} differ in tree structure: {ta} vs {tb}")
  for (path, x), (_, y) in zip(_float_leaves_with_path(a), _float_leaves_with_path(b)):
    x, y = _np(x).astype(np.float64), _np(y).astype(np.float64)
    if x.shape != y.shape:
      raise AssertionError(f"{name_a}{path} has shape {x.shape}, {name_b}{path} has {y.shape}")
    if x.size == 0:
      continue
    nan_x, nan_y = np.isnan(x), np.isnan(y)
    if np.any(nan_x != nan_y):
      raise AssertionError(f"{name_a}{path} and {name_b}{path} have NaNs in different places: "
                           f"{int(nan_x.sum())} vs {int(nan_y.sum())} NaNs")
    xf, yf = np.where(nan_x, 0.0, x), np.where(nan_y, 0.0, y)
    scale = max(np.max(np.abs(xf)), np.max(np.abs(yf)))
    err = np.abs(xf - yf)
    bound = atol + rtol * scale
    if not np.all(err <= bound):
      k = int(np.argmax(err))
      raise AssertionError(f"{name_a}{path} and {name_b}{path} differ by up to {err.ravel()[k]:.3g} "
                           f"(> {bound:.3g} = atol {atol:g} + rtol {rtol:g} * max|.| {scale:.3g}); at flat "
                           f"index {k}: {xf.ravel()[k]!r} vs {yf.ravel()[k]!r}")


def _quoted(name: str) -> str:
  return rf"[`'\"]{re.escape(name)}[`'\"]"


def assert_raises_naming(call: Callable[[], Any], name: str,
                         exceptions: tuple[type[BaseException], ...] = (TypeError, ValueError)) -> None:
  """Asserts ``call()`` raises one of ``exceptions`` whose message names ``name`` in quotes or backticks.

  Naming means the argument appears quoted (```key```, ``'key'`` or ``"key"``), so an error from deep inside
  JAX that merely contains the word does not count.
  """
  try:
    out = call()
    jax.block_until_ready(out)
  except exceptions as e:  # noqa: PERF203
    if not re.search(_quoted(name), str(e)):
      raise AssertionError(f"raised {type(e).__name__} that does not name `{name}`: {_short(e)}") from None
    return
  except Exception as e:  # noqa: BLE001
    raise AssertionError(f"raised {type(e).__name__} instead of {'/'.join(x.__name__ for x in exceptions)} "
                         f"naming `{name}`: {_short(e)}") from None
  raise AssertionError(f"accepted the bad `{name}` without an error")


def _short(e: BaseException, n: int = 300) -> str:
  s = " ".join(str(e).split())
  return s if len(s) <= n else s[:n] + "..."


class TraceCounter:
  """Wraps a function and counts how many times JAX traces (or eagerly runs) its Python body.

  Example (a doctest)::

    >>> import jax, jax.numpy as jnp, pgjax
    >>> counted = pgjax.testing.TraceCounter(lambda x: 2 * x)
    >>> jitted = jax.jit(counted)
    >>> _ = jitted(jnp.ones(3)); _ = jitted(jnp.zeros(3))      # same shapes: traced once
    >>> counted.count
    1
  """

  def __init__(self, fn: Callable):
    self.fn = fn
    self.count = 0
    functools.update_wrapper(self, fn)

  def __call__(self, *args, **kwargs):
    self.count += 1
    return self.fn(*args, **kwargs)


def cast_floating(tree: Any, dtype: Any) -> Any:
  """Casts every floating leaf of ``tree`` to ``dtype`` (other leaves and ``None`` unchanged)."""
  def cast(x):
    if x is None or not jnp.issubdtype(jnp.result_type(x), jnp.floating):
      return x
    return jnp.asarray(x).astype(dtype)
  return jax.tree_util.tree_map(cast, tree)


def edge_case_params(params: Any) -> dict[str, Any]:
  """``params`` wrapped with the leaves estimators most often mishandle: ``None``, a scalar and a zero-size array.

  Returns ``{"params": params, "none": None, "scalar": 0.0, "empty": zeros([0])}`` in the dtype of the first
  floating leaf of ``params``. Your ``f`` / ``dist_fn`` must accept it (read ``p["params"]``, and use
  ``p["scalar"]`` and ``jnp.sum(p["empty"])`` if you want them on the gradient path).
  """
  leaves = [x for x in jax.tree_util.tree_leaves(params) if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
  dtype = jnp.result_type(leaves[0]) if leaves else jnp.float32
  return {"params": params, "none": None, "scalar": jnp.zeros((), dtype), "empty": jnp.zeros((0,), dtype)}


def _sq_norm(tree):
  leaves = [jnp.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
  if not leaves:
    return jnp.zeros((), jnp.float32)
  parts = [jnp.sum(jnp.square(x.astype(jnp.promote_types(x.dtype, jnp.float32)))) for x in leaves]
  return functools.reduce(jnp.add, parts)


def _first_nonfinite(tree):
  for path, leaf in _float_leaves_with_path(tree):
    a = _np(leaf)
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
      return f"{path} has {int((~np.isfinite(a)).sum())} non-finite of {a.size}"
  return None


def _has_nan(tree) -> bool:
  return any(np.any(np.isnan(_np(x))) for _, x in _float_leaves_with_path(tree) if _np(x).dtype.kind in "fc")


def _stack(a, b):
  return jax.tree_util.tree_map(lambda x, y: jnp.stack([jnp.asarray(x), jnp.asarray(y)]), a, b)


def _row(tree, i):
  """Row ``i`` of every leaf of a computed (concrete) tree, indexed in numpy: an eager ``x[i]`` would
  compile a slicing program per leaf shape. PRNG key leaves (no numpy form) are indexed as they are."""
  def take(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return x[i]
    return np.asarray(x)[i]
  return jax.tree_util.tree_map(take, tree)


def _default_perturb(params):
  def move(x):
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
      return x
    x = jnp.asarray(x)
    return (x * 0.9 + 0.05).astype(x.dtype)
  return jax.tree_util.tree_map(move, params)


def _strong(tree):
  """Leaves as arrays of their own (strong) dtype, so reruns with other values never retrace on weak types."""
  return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=jnp.result_type(x)), tree)


def _legacy(key):
  return jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key


# --- check_estimator ---------------------------------------------------------------------------------------

_PER_CASE = ("estimator", "params", "dtypes", "make_params", "rebuild", "other_params", "structures", "variants",
             "hyperparameters", "nan_estimator", "nan_policy", "nan_count", "expected_nan_count", "bad_arguments",
             "bad_keys", "bad_params", "eager", "require_num_evaluations", "skip")
_PARTS = ("base", "legacy_key", "vmap_keys", "vmap_params", "grad")
_PART_OF = {"keys": "legacy_key", "vmap_keys": "vmap_keys", "vmap_params": "vmap_params", "grad": "grad"}


def _skipped(name: str, skip: Sequence[str]) -> bool:
  return any(name == s or name.startswith(s + "[") for s in skip)


def _record(results, name, skip, fn):
  """Runs ``fn() -> None | str`` (a string is a skip reason); records passed/failed/skipped."""
  if _skipped(name, skip):
    results.append(PropertyResult(name, SKIPPED, "skipped by the caller"))
    return
  try:
    reason = fn()
  except AssertionError as e:
    results.append(PropertyResult(name, FAILED, str(e)))
    return
  except Exception as e:  # noqa: BLE001  (an estimator that crashes fails the property, with the error)
    results.append(PropertyResult(name, FAILED, f"raised {type(e).__name__}: {_short(e, 600)}"))
    return
  if isinstance(reason, str):
    results.append(PropertyResult(name, SKIPPED, reason))
  else:
    results.append(PropertyResult(name, PASSED))


def _fused(items, args, jit):
  """``{k: fn(*args)}`` in one jitted call; if that fails, bisected until each error is pinned to its item.

  Returns ``({k: (value, error)}, rerun)``; ``rerun(*args)`` calls the compiled functions again. With one
  failing item among ``n`` the cost is about twice one compilation of everything, not ``n`` compilations.
  """
  outs, compiled = {}, []

  def attempt(sub):
    jitted = jit(lambda *a: {k: fn(*a) for k, fn in sub.items()})
    try:
      out = jax.block_until_ready(jitted(*args))
    except Exception as e:  # noqa: BLE001
      if len(sub) == 1:
        outs[next(iter(sub))] = (None, e)
        return
      ks = list(sub)
      attempt({k: sub[k] for k in ks[: len(ks) // 2]})
      attempt({k: sub[k] for k in ks[len(ks) // 2:]})
      return
    outs.update({k: (v, None) for k, v in out.items()})
    compiled.append(jitted)

  if items:
    attempt(dict(items))

  def rerun(*a):
    res = {}
    for jitted in compiled:
      res.update(jitted(*a))
    return res
  return outs, rerun


def _value(outs, k, what):
  if k not in outs:
    raise AssertionError(f"{what} was not computed")
  value, err = outs[k]
  if err is not None:
    raise AssertionError(f"{what} raised {type(err).__name__}: {_short(err, 600)}")
  return value


def _probe_part(est, name, part):
  """One transformation of ``est``, a function of (keys [2], legacy key, {name: params}, {name: other params})."""
  if part == "base":
    return lambda ks, kl, ps, ps2: est(ks[0], ps[name])
  if part == "legacy_key":
    return lambda ks, kl, ps, ps2: est(kl, ps[name])
  if part == "vmap_keys":
    return lambda ks, kl, ps, ps2: jax.vmap(est, in_axes=(0, None))(ks, ps[name])
  if part == "vmap_params":
    return lambda ks, kl, ps, ps2: jax.vmap(est, in_axes=(None, 0))(ks[0], _stack(ps[name], ps2[name]))
  return lambda ks, kl, ps, ps2: jax.grad(lambda q: _sq_norm(est(ks[0], q)[0]))(ps[name])


class _Tolerances(NamedTuple):
  rtol: float
  atol: float
  variant_rtol: float
  fd_rtol: float


def _validate_cases(cases: Mapping[str, Mapping[str, Any]]) -> None:
  for name, c in cases.items():
    unknown = set(c) - set(_PER_CASE)
    if unknown:
      raise TypeError(f"case {name!r}: unknown options {sorted(unknown)}; known: {_PER_CASE}")
    if "estimator" not in c or "params" not in c:
      raise TypeError(f"case {name!r} needs `estimator` and `params`")
    if c.get("nan_policy") is not None and c["nan_policy"] not in NAN_POLICIES:
      raise ValueError(f"`nan_policy` must be None or one of {NAN_POLICIES}, got {c['nan_policy']!r}.")


def _prepare_cases(cases: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
  """Copies of the cases with strongly typed ``params`` and ``other_params`` and a ``skip`` entry."""
  opt = {n: dict(c) for n, c in cases.items()}
  for c in opt.values():
    c["params"] = _strong(c["params"])
    c["other_params"] = (_default_perturb(c["params"]) if c.get("other_params") is None
                         else _strong(c["other_params"]))
    c.setdefault("skip", ())
  return opt


def _params_of(opt, which="params"):
  return {n: c[which] for n, c in opt.items()}


def _run_probes(opt, counters, keys, jit):
  """Every transformation of every estimator as one program: ``(outputs, rerun)``.

  ``rerun(which)`` calls the compiled program again, once per ``which``: ``"keys"`` (keys swapped),
  ``"params"`` (params and other params swapped) or ``"same"`` (the same arguments).
  """
  ps, ps2 = _params_of(opt), _params_of(opt, "other_params")
  items = {}
  for n, c in opt.items():
    for part in _PARTS:
      prop = next((p for p, q in _PART_OF.items() if q == part), None)
      if prop is None or not _skipped(prop, c["skip"]):
        items[(n, part)] = _probe_part(counters[n], n, part)
  probe, rerun_fn = _fused(items, (keys, _legacy(keys[0]), ps, ps2), jit)
  swapped = jnp.stack([keys[1], keys[0]])
  reruns: dict[str, Any] = {}

  def rerun(which):
    if which not in reruns:
      args = {"keys": (swapped, ps, ps2), "params": (keys, ps2, ps), "same": (keys, ps, ps2)}[which]
      try:
        reruns[which] = (jax.block_until_ready(rerun_fn(args[0], _legacy(args[0][0]), *args[1:])), None)
      except Exception as e:  # noqa: BLE001
        reruns[which] = (None, e)
    return _value(reruns, which, "rerunning with other values")
  return probe, rerun


def _dtype_outputs(opt, key, jit):
  """Each extra dtype's estimates, one program per dtype (``float64`` inside ``jax.enable_x64``).

  Keys ``(name, dtype)``: the estimate; ``(name, dtype, "params")``: the params it was called with.
  """
  outs = {}
  for dt in sorted({jnp.dtype(d).name for c in opt.values() for d in c.get("dtypes", ())}):
    dtype = jnp.dtype(dt)
    names = [n for n, c in opt.items() if dt in {jnp.dtype(d).name for d in c.get("dtypes", ())}
             and not _skipped(f"dtype[{dt}]", c["skip"])]
    ctx = jax.enable_x64(True) if dtype.itemsize == 8 else contextlib.nullcontext()
    with ctx:
      pd, est_d = {}, {}
      for n in names:
        c = opt[n]
        try:
          pd[n] = (c["make_params"](dtype) if c.get("make_params") is not None
                   else cast_floating(c["params"], dtype))
          est_d[n] = (c["rebuild"]() if (c.get("rebuild") is not None and dtype.itemsize == 8)
                      else c["estimator"])
        except Exception as e:  # noqa: BLE001
          outs[(n, dt)] = (None, e)
      items = {(n, dt): (lambda k, p, n=n, e=est_d[n]: e(k, p[n])) for n in est_d}
      fused, _ = _fused(items, (key, pd), jit)
    outs.update(fused)
    for n in est_d:
      outs[(n, dt, "params")] = (pd[n], None)
  return outs


def _tree_outputs(opt, key, jit):
  """``(grads, grad of |grads|^2)`` on each of the ``structures`` (trees with None, scalar, empty leaves)."""
  def both(est, k, p):
    return est(k, p)[0], jax.grad(lambda q: _sq_norm(est(k, q)[0]))(p)
  tree_params = {(n, s): sp for n, c in opt.items() for s, (_, sp) in (c.get("structures") or {}).items()}
  items = {(n, s): (lambda k, tp, n=n, s=s, e=e: both(e, k, tp[(n, s)]))
           for n, c in opt.items() for s, (e, _) in (c.get("structures") or {}).items()
           if not _skipped(f"tree[{s}]", c["skip"])}
  return _fused(items, (key, tree_params), jit)[0]


def _variant_outputs(opt, key, jit):
  """The grads of each of the ``variants`` (other chunkings of the same estimator) with the same key."""
  items = {(n, v): (lambda k, p, n=n, e=e: e(k, p[n])[0])
           for n, c in opt.items() for v, e in (c.get("variants") or {}).items()
           if not _skipped(f"variant[{v}]", c["skip"])}
  return _fused(items, (key, _params_of(opt)), jit)[0]


def _hyperparameter_outputs(opt, key, fd_step, jit):
  r"""For each hyperparameter ``h``: :math:`\|\hat g_h\|^2` and its ``jax.grad`` at the value, the same at
  ``value +- delta`` (for a central finite difference), and ``delta``."""
  values, items = {}, {}
  for n, c in opt.items():
    for h, (build, value) in (c.get("hyperparameters") or {}).items():
      if _skipped(f"hyperparameter[{h}]", c["skip"]):
        continue
      delta = fd_step * (abs(float(value)) or 1.0)
      values[(n, h)] = jnp.asarray(value, jnp.float32)

      def hyper(hv, p, n=n, h=h, build=build, delta=delta):
        def sq(x):
          return _sq_norm(build(x)(key, p[n])[0])
        x = hv[(n, h)]
        return jax.value_and_grad(sq)(x), jax.vmap(sq)(jnp.stack([x + delta, x - delta])), delta
      items[(n, h)] = hyper
  return _fused(items, (values, _params_of(opt)), jit)[0]


def _nan_outputs(opt, nan_keys, jit):
  """``nan_estimator`` vmapped over ``nan_keys``, for the cases whose policy returns a result."""
  items = {n: (lambda ks, p, n=n, e=c["nan_estimator"]: jax.vmap(e, in_axes=(0, None))(ks, p[n]))
           for n, c in opt.items()
           if c.get("nan_estimator") is not None and c.get("nan_policy") not in (None, "raise")
           and not _skipped("nan_policy", c["skip"])}
  return _fused(items, (nan_keys, _params_of(opt)), jit)[0]


@dataclasses.dataclass
class _Programs:
  """What the shared programs computed, for every case: ``{(case name, ...): (value, error)}`` each."""
  keys: jax.Array      # [2] typed keys; keys[0] is the base key
  nan_keys: jax.Array  # [8] keys for the NaN policy
  probe: dict          # the transformations (base, legacy_key, vmap_keys, vmap_params, grad)
  rerun: Callable[[str], dict]
  dtype: dict
  tree: dict
  variant: dict
  hyper: dict
  nan: dict


def check_estimators(cases: Mapping[str, Mapping[str, Any]], *, key: jax.Array | None = None,
                     compiler_options: Mapping[str, Any] | None = None, rtol: float = 1e-4,
                     atol: float = 1e-6, variant_rtol: float = 1e-5, fd_step: float = 1e-3,
                     fd_rtol: float = 2e-2, raise_on_failure: bool = True) -> dict[str, ConformanceReport]:
  """:func:`check_estimator` for several estimators at once, compiled together (much faster than one by one).

  Args:
    cases: ``{name: options}``; ``options`` are :func:`check_estimator`'s per-estimator arguments
      (``estimator``, ``params``, ``dtypes``, ``nan_estimator``, ``skip``, ...).
    key, compiler_options, rtol, atol, variant_rtol, fd_step, fd_rtol: as in :func:`check_estimator`.
    raise_on_failure: raise ``AssertionError`` listing every failed property of every case.

  Returns:
    ``{name: ConformanceReport}``.
  """
  _validate_cases(cases)
  key = jax.random.key(0) if key is None else key
  if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)
  keys = jax.random.split(key, 2)
  jit = functools.partial(jax.jit, compiler_options=compiler_options)
  opt = _prepare_cases(cases)
  counters = {n: TraceCounter(c["estimator"]) for n, c in opt.items()}
  probe, rerun = _run_probes(opt, counters, keys, jit)
  traces = {n: t.count for n, t in counters.items()}
  # The NaN policy runs on 8 keys folded from `key`, so that some draws hit the NaN region.
  nan_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(8))
  programs = _Programs(keys=keys, nan_keys=nan_keys, probe=probe, rerun=rerun,
                       dtype=_dtype_outputs(opt, keys[0], jit), tree=_tree_outputs(opt, keys[0], jit),
                       variant=_variant_outputs(opt, keys[0], jit),
                       hyper=_hyperparameter_outputs(opt, keys[0], fd_step, jit),
                       nan=_nan_outputs(opt, nan_keys, jit))
  tol = _Tolerances(rtol, atol, variant_rtol, fd_rtol)
  reports = {n: _case_report(_Case(n, c, programs, counters[n], traces[n], tol)) for n, c in opt.items()}
  if raise_on_failure:
    bad = {n: r for n, r in reports.items() if not r.ok}
    if bad:
      raise AssertionError("\n".join(
          f"{n}: {len(r.failed)} failed: " + "; ".join(f"{x.name}: {x.message}" for x in r.failed)
          for n, r in bad.items()))
  return reports


@dataclasses.dataclass
class _Case:
  """One estimator's options and the shared programs' outputs, as its property checks see them."""
  name: str
  options: dict
  programs: _Programs
  counter: TraceCounter
  traces: int  # the estimator's trace count after the first compilation
  tol: _Tolerances

  @property
  def params(self):
    return self.options["params"]

  def get(self, part):
    """One transformation's output (``_PARTS``); AssertionError if it was not computed or raised."""
    return _value(self.programs.probe, (self.name, part), part.replace("_", " "))

  def rerun_base(self, which):
    """The base estimate from a rerun of the transformations with other values (see :func:`_run_probes`)."""
    out = self.programs.rerun(which)
    if (self.name, "base") not in out:
      self.get("base")
    return out[(self.name, "base")]


def _require_finite(tree, message):
  """AssertionError ``message.format(<first non-finite leaf>)`` if ``tree`` has a non-finite entry."""
  bad = _first_nonfinite(tree)
  if bad:
    raise AssertionError(message.format(bad))


def _check_structure(case):
  assert_same_structure_and_dtypes(case.get("base")[0], case.params)


def _check_aux(case):
  aux = case.get("base")[1]
  if not (isinstance(aux, tuple) and hasattr(aux, "_fields")):
    raise AssertionError(f"aux must be a NamedTuple with fixed fields, got {type(aux).__name__}")
  if case.options.get("require_num_evaluations", True) and "num_evaluations" not in aux._fields:
    raise AssertionError(f"aux {type(aux).__name__} has no `num_evaluations` field (fields: {aux._fields})")


def _check_finite(case):
  _require_finite(case.get("base")[0], "grads{}")


_KEY_RTOL = 1e-6


def _check_legacy_key(case):
  # The same random stream: equal up to the rounding of two differently compiled arithmetic paths (a few
  # float32 ulps; an unoptimised XLA build contracts them differently). Another stream differs at O(1).
  assert_trees_close(case.get("legacy_key"), case.get("base"), rtol=_KEY_RTOL, atol=0.0,
                     name_a="result(PRNGKey)", name_b="result(key)")


def _check_traced_once(case):
  case.get("base")
  case.programs.rerun("keys")
  case.programs.rerun("params")
  if case.counter.count != case.traces:
    raise AssertionError(f"retraced on new key/params values (same shapes): the estimator's Python body ran "
                         f"{case.counter.count - case.traces} more times after the first call")


def _check_deterministic(case):
  again = case.programs.rerun("same")
  for part in _PARTS:
    if (case.name, part) in again:
      assert_trees_equal(again[(case.name, part)], case.get(part), f"{part}, second call",
                         f"{part}, first call")


def _check_eager(case):
  assert_trees_close(case.options["estimator"](case.programs.keys[0], case.params), case.get("base"),
                     rtol=case.tol.rtol, atol=case.tol.atol, name_a="eager", name_b="jit")


def _check_vmap_keys(case):
  batched, tol = case.get("vmap_keys"), dict(rtol=case.tol.rtol, atol=case.tol.atol)
  assert_trees_close(_row(batched, 0), case.get("base"), name_a="vmap(keys)[0]", name_b="result(keys[0])",
                     **tol)
  assert_trees_close(_row(batched, 1), case.rerun_base("keys"), name_a="vmap(keys)[1]",
                     name_b="result(keys[1])", **tol)


def _check_vmap_params(case):
  batched, tol = case.get("vmap_params"), dict(rtol=case.tol.rtol, atol=case.tol.atol)
  assert_trees_close(_row(batched, 0), case.get("base"), name_a="vmap(params)[0]", name_b="result(params)",
                     **tol)
  assert_trees_close(_row(batched, 1), case.rerun_base("params"), name_a="vmap(params)[1]",
                     name_b="result(other_params)", **tol)


def _check_grad(case):
  g = case.get("grad")
  assert_same_structure_and_dtypes(g, case.params, "grad of |grads|^2", "params")
  _require_finite(g, "grad of |grads|^2 w.r.t. params: {}")


# The properties every case runs, in report order (``eager`` only when asked for).
_CORE_CHECKS = (("structure", _check_structure), ("aux", _check_aux), ("finite", _check_finite),
                ("keys", _check_legacy_key), ("jit", _check_traced_once),
                ("deterministic", _check_deterministic), ("eager", _check_eager),
                ("vmap_keys", _check_vmap_keys), ("vmap_params", _check_vmap_params), ("grad", _check_grad))


def _check_dtype(case, dt):
  n = case.name
  p = _value(case.programs.dtype, (n, dt, "params"), f"building {dt} params")
  for path, leaf in _float_leaves_with_path(p):
    if jnp.issubdtype(jnp.result_type(leaf), jnp.floating) and jnp.dtype(jnp.result_type(leaf)).name != dt:
      raise AssertionError(f"make_params({dt}) returned params{path} of dtype {jnp.result_type(leaf)}")
  grads, _ = _value(case.programs.dtype, (n, dt), f"with {dt} params, the estimator")
  assert_same_structure_and_dtypes(grads, p)
  _require_finite(grads, "grads{} with " + dt + " params")


def _check_tree(case, s, sp):
  g, gg = _value(case.programs.tree, (case.name, s), "the estimator")
  assert_same_structure_and_dtypes(g, sp)
  _require_finite(g, "grads{}")
  assert_same_structure_and_dtypes(gg, sp, "grad of |grads|^2", "params")
  _require_finite(gg, "grad of |grads|^2 w.r.t. params: {}")


def _check_variant(case, v):
  res = _value(case.programs.variant, (case.name, v), f"variant {v!r}")
  assert_trees_close(res, case.get("base")[0], rtol=case.tol.variant_rtol, atol=case.tol.atol,
                     name_a=f"grads({v})", name_b="grads")


def _check_hyperparameter(case, h):
  (val, ad), (up, down), delta = _value(case.programs.hyper, (case.name, h),
                                        f"differentiating with respect to {h!r}")
  val, ad, up, down, delta = (float(x) for x in (val, ad, up, down, delta))
  if not np.isfinite(ad):
    raise AssertionError(f"d|grads|^2/d{h} = {ad} is not finite (|grads|^2 = {val:.6g})")
  fd = (up - down) / (2 * delta)
  noise = 1e-5 * (abs(val) + abs(up) + abs(down)) / delta  # float32 rounding of the three values
  if not abs(ad - fd) <= case.tol.fd_rtol * max(abs(ad), abs(fd)) + noise:
    raise AssertionError(f"jax.grad of |grads|^2 w.r.t. it is {ad:.6g}, central finite difference (step "
                         f"{delta:g}) is {fd:.6g} (|grads|^2 = {val:.6g})")


def _check_nan_policy(case):
  c, nan_keys = case.options, case.programs.nan_keys
  if c.get("nan_estimator") is None or c.get("nan_policy") is None:
    return "give both `nan_estimator` and `nan_policy`"
  if c["nan_policy"] == "raise":
    try:
      jax.block_until_ready(jax.vmap(c["nan_estimator"], in_axes=(0, None))(nan_keys, case.params))
    except Exception:  # noqa: BLE001
      return None
    raise AssertionError(f"policy 'raise': a NaN in f did not raise (on {len(nan_keys)} keys)")
  out = _value(case.programs.nan, case.name, "the estimator with a NaN in f")
  return _check_nan(out, len(nan_keys), c["nan_policy"], c.get("nan_count", "num_nonfinite"),
                    c.get("expected_nan_count"))


def _bad_input_checks(case):
  """``(name, check)`` for the bad keys, integer params and ``bad_arguments``: each must raise naming it."""
  c, params, estimator = case.options, case.params, case.options["estimator"]
  if c.get("bad_keys", True):
    for label, bad in (("int", 0), ("float", jnp.array([0.0, 1.0], jnp.float32)),
                       ("uint32[3]", jnp.zeros((3,), jnp.uint32))):
      yield f"bad_key[{label}]", functools.partial(
          assert_raises_naming, functools.partial(jax.eval_shape, estimator, bad, params), "key")
  if c.get("bad_params", True):
    int_params = jax.tree_util.tree_map(lambda x: jnp.asarray(x).astype(jnp.int32), params)
    yield "bad_params", functools.partial(
        assert_raises_naming, functools.partial(jax.eval_shape, estimator, case.programs.keys[0], int_params),
        "params")
  for call, arg in c.get("bad_arguments", ()):
    yield f"bad_argument[{arg}]", functools.partial(assert_raises_naming, call, arg)


def _case_checks(case):
  """``(property name, check)`` for one case, in report order; a check returns None or a skip reason."""
  c = case.options
  for name, check in _CORE_CHECKS:
    if name != "eager" or c.get("eager", False):
      yield name, functools.partial(check, case)
  for d in c.get("dtypes", ()):
    dt = jnp.dtype(d).name
    yield f"dtype[{dt}]", functools.partial(_check_dtype, case, dt)
  for s, (_, sp) in (c.get("structures") or {}).items():
    yield f"tree[{s}]", functools.partial(_check_tree, case, s, sp)
  for v in c.get("variants") or {}:
    yield f"variant[{v}]", functools.partial(_check_variant, case, v)
  for h in c.get("hyperparameters") or {}:
    yield f"hyperparameter[{h}]", functools.partial(_check_hyperparameter, case, h)
  if c.get("nan_policy") is not None or c.get("nan_estimator") is not None:
    yield "nan_policy", functools.partial(_check_nan_policy, case)
  yield from _bad_input_checks(case)


def _case_report(case: _Case) -> ConformanceReport:
  results: list[PropertyResult] = []
  for name, check in _case_checks(case):
    _record(results, name, case.options["skip"], check)
  return ConformanceReport(tuple(results))


def _check_nan(out, num_keys, policy, nan_count, expected):
  grads, aux = out
  values = getattr(aux, "values", None)
  if values is not None:
    v = _np(values).reshape(num_keys, -1)
    hit = np.isnan(v).any(axis=1)
    if not hit.any():
      raise AssertionError(f"aux.values shows no NaN on {num_keys} keys: either the estimator replaced the NaN "
                           "values of f silently, or f never returned NaN there (then make its NaN region "
                           "larger)")
  else:
    hit = np.ones(num_keys, bool)
  rows = [_row(grads, i) for i in range(num_keys)]
  if policy == "propagate":
    for i in np.flatnonzero(hit):
      if not _has_nan(rows[i]):
        sample = ", ".join(f"{p}={_np(x).ravel()[:4]}" for p, x in _float_leaves_with_path(rows[i])[:3])
        nv = "" if values is None else f" ({int(np.isnan(v[i]).sum())} of {v.shape[1]} values NaN)"
        raise AssertionError(f"policy 'propagate': a NaN in f gave a gradient without NaN{nv}: {sample}")
    return None
  for i in range(num_keys):
    bad = _first_nonfinite(rows[i])
    if bad:
      raise AssertionError(f"policy 'rank_last': grads{bad}")
  if callable(nan_count):
    counts = np.asarray(jax.vmap(nan_count)(aux))
  else:
    if not hasattr(aux, nan_count):
      raise AssertionError(f"policy 'rank_last': aux {type(aux).__name__} has no field `{nan_count}` "
                           f"counting the non-finite values")
    counts = np.asarray(getattr(aux, nan_count))
  counts = np.broadcast_to(counts, (num_keys,)).astype(np.int64)
  label = getattr(nan_count, "__name__", nan_count)
  if values is not None:
    want = (~np.isfinite(v)).sum(axis=1)
    if not np.array_equal(counts, want):
      raise AssertionError(f"policy 'rank_last': aux.{label} is {counts.tolist()}, the non-finite aux.values "
                           f"per key are {want.tolist()}")
  elif expected is not None and not np.all(counts == expected):
    raise AssertionError(f"policy 'rank_last': aux counts {counts.tolist()} non-finite values, "
                         f"expected {expected}")
  elif not np.all(counts >= 1):
    raise AssertionError(f"policy 'rank_last': aux counts {counts.tolist()} non-finite values")
  return None


def check_estimator(
    estimator: Callable[..., tuple[Any, Any]],
    params: Any,
    *,
    key: jax.Array | None = None,
    dtypes: Sequence[Any] = (),
    make_params: Callable[[Any], Any] | None = None,
    rebuild: Callable[[], Callable[..., tuple[Any, Any]]] | None = None,
    other_params: Any = None,
    structures: Mapping[str, tuple[Callable[..., tuple[Any, Any]], Any]] | None = None,
    variants: Mapping[str, Callable[..., tuple[Any, Any]]] | None = None,
    hyperparameters: Mapping[str, tuple[Callable[[Any], Callable[..., tuple[Any, Any]]], float]] | None = None,
    nan_estimator: Callable[..., tuple[Any, Any]] | None = None,
    nan_policy: str | None = None,
    nan_count: str | Callable[[Any], Any] = "num_nonfinite",
    expected_nan_count: int | None = None,
    bad_arguments: Sequence[tuple[Callable[[], Any], str]] = (),
    bad_keys: bool = True,
    bad_params: bool = True,
    eager: bool = False,
    require_num_evaluations: bool = True,
    skip: Sequence[str] = (),
    compiler_options: Mapping[str, Any] | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-6,
    variant_rtol: float = 1e-5,
    fd_step: float = 1e-3,
    fd_rtol: float = 2e-2,
    raise_on_failure: bool = True,
) -> ConformanceReport:
  r"""Checks that ``estimator`` meets the estimator contract; one pass/fail/skip result per property.

  An estimator is a function ``(key, params) -> (grads, aux)``. The properties (names as in the report):

  * ``structure``: ``grads`` has ``params``' tree structure (``None`` leaves included), shapes and dtypes.
  * ``aux``: ``aux`` is a ``NamedTuple`` with a ``num_evaluations`` field (``require_num_evaluations``).
  * ``finite``: every entry of ``grads`` is finite.
  * ``keys``: a typed key (``jax.random.key``) and the legacy ``uint32[2]`` key with the same data
    (``jax.random.PRNGKey``) give the same results: the same random stream, equal to a relative
    ``1e-6`` of each leaf's largest entry (the two key types reach the arithmetic through different
    programs, which XLA may round differently in the last bits; another stream differs at order one).
  * ``jit``: under ``jax.jit`` the estimator is traced once: a second call with other key and ``params``
    *values* (same shapes) does not retrace.
  * ``deterministic``: the same key and params give bit-identical results on a repeated call.
  * ``eager``: the un-jitted call agrees with the jitted one (to ``rtol``/``atol``; XLA may fuse differently).
  * ``vmap_keys`` / ``vmap_params``: ``jax.vmap`` over a batch of two keys (of two params) gives, row by
    row, the results of the separate calls (to ``rtol``/``atol``).
  * ``grad``: ``jax.grad`` of :math:`\|\hat g(\text{key}, \theta)\|^2` with respect to ``params`` works,
    is finite and has ``params``' structure.
  * ``dtype[<name>]``: for each dtype in ``dtypes``, ``params`` cast to it (``make_params(dtype)``, default:
    every floating leaf cast) give ``grads`` of that dtype, finite. ``float64`` runs inside
    ``jax.enable_x64(True)``, with the estimator rebuilt there by ``rebuild()`` when given.
  * ``tree[<name>]``: for each ``structures[name] = (estimator, params)`` (trees with ``None`` leaves,
    scalars, zero-size leaves: see :func:`edge_case_params`), ``structure``, ``finite`` and ``grad`` hold.
  * ``variant[<name>]``: each ``variants[name]`` (the same estimator built with another chunking, say
    ``batch_size=2``) gives the same result for the same key, to ``variant_rtol`` (float reassociation).
  * ``hyperparameter[<name>]``: for ``hyperparameters[name] = (build, value)``, where ``build(h)`` returns
    the estimator with that hyperparameter set to ``h`` (a traced scalar), ``jax.grad`` of
    :math:`h \mapsto \|\hat g_h(\text{key}, \theta)\|^2` is finite and matches the central finite difference
    with step ``fd_step * |value|`` (``fd_step`` if ``value`` is 0) to ``fd_rtol`` (relative), so a
    ``stop_gradient`` that blocks it is caught.
  * ``nan_policy``: ``nan_estimator`` (the estimator built with an ``f`` that returns NaN for some samples)
    follows ``nan_policy`` on 8 keys folded from ``key``: ``"propagate"`` (a NaN reaches ``grads`` whenever
    ``aux.values`` has one), ``"rank_last"`` (``grads`` finite and ``nan_count(aux)``, an aux field name or a
    callable, equal to the number of non-finite ``aux.values``, or to ``expected_nan_count`` / positive when
    aux has no ``values``) or ``"raise"`` (calling it raises an error). When ``aux.values`` exists and shows
    no NaN at all, the check fails: the NaN was hidden, or never produced.
  * ``bad_key[...]``, ``bad_params``, ``bad_argument[<name>]``: a Python int key, a float key and a
    ``uint32[3]`` key (``bad_keys``), and params with integer leaves (``bad_params``) raise ``TypeError`` or
    ``ValueError`` naming ```key``` / ```params```; each ``(call, name)`` in ``bad_arguments`` (e.g.
    ``(lambda: my_factory(num_samples=0), "num_samples")``) raises one naming ``name``. "Naming" means the
    name appears in backticks or quotes in the message.

  The bad keys and params are checked by tracing only (``jax.eval_shape``): the error must come at trace
  time. The transformations (``keys`` to ``grad``) are compiled as one program, and so are all the dtype,
  tree, variant, hyperparameter and NaN cases of one kind: to check many estimators, pass them together to
  :func:`check_estimators`, which compiles each kind once for all of them (a failure is then bisected down
  to the estimator that caused it).

  Args:
    estimator: ``(key, params) -> (grads, aux)``.
    params: a pytree of floating arrays at which to check.
    key: the key to use (default ``jax.random.key(0)``).
    dtypes: extra dtypes to check, e.g. ``(jnp.bfloat16, jnp.float64)``.
    make_params: ``dtype -> params`` for ``dtypes`` (default: cast ``params``' floating leaves).
    rebuild: ``() -> estimator``, called inside the ``float64`` context (for estimators that close over
      arrays whose dtype is fixed when they are built).
    other_params: a second ``params`` for ``vmap_params`` and ``jit`` (default: ``0.9 * params + 0.05``).
    structures, variants, hyperparameters, nan_estimator, nan_policy, nan_count: see the properties above.
    expected_nan_count, bad_arguments, bad_keys, bad_params, eager, require_num_evaluations: the same.
    compiler_options: passed to every ``jax.jit`` (e.g. ``{"xla_backend_optimization_level": 0}`` halves
      compilation time on CPU; the checks concern the contract, not speed).
    rtol, atol: tolerance for ``eager``, ``vmap_keys`` and ``vmap_params`` (relative to each leaf's
      largest entry, see :func:`assert_trees_close`).
    variant_rtol: tolerance for ``variant[...]``.
    fd_step, fd_rtol: finite differences for ``hyperparameter[...]``.
    skip: property names (or a prefix before ``[``, e.g. ``"dtype"``) not to run.
    raise_on_failure: raise ``AssertionError`` listing every failed property (default) instead of only
      returning the report.

  Returns:
    A :class:`ConformanceReport` (``report.failed``, ``report["vmap_keys"].status``, ``print(report)``).

  Raises:
    AssertionError: with one line per failed property, when ``raise_on_failure``.
    ValueError: for an unknown ``nan_policy``.

  Example (a doctest)::

    >>> import jax, jax.numpy as jnp, distrax, pgjax
    >>> dist_fn = lambda p: distrax.MultivariateNormalDiag(p["mean"], jnp.exp(p["log_std"]))
    >>> f = lambda x: -jnp.sum(x ** 2)
    >>> params = {"mean": jnp.ones(3), "log_std": jnp.zeros(3)}
    >>> est = pgjax.score_function(f, dist_fn, num_samples=8, baseline="leave_one_out")
    >>> nan_est = pgjax.score_function(lambda x: jnp.where(x[0] > 1.0, jnp.nan, f(x)), dist_fn,
    ...                                num_samples=8, baseline="leave_one_out")
    >>> report = pgjax.testing.check_estimator(
    ...     est, params, nan_estimator=nan_est, nan_policy="propagate",
    ...     bad_arguments=[(lambda: pgjax.score_function(f, dist_fn, num_samples=0), "num_samples")])
    >>> report.failed
    ()

    Add ``dtypes=(jnp.bfloat16, jnp.float64)`` to check other precisions; ``print(report)`` lists every
    property with its status.
  """
  if nan_policy is not None and nan_policy not in NAN_POLICIES:
    raise ValueError(f"`nan_policy` must be None or one of {NAN_POLICIES}, got {nan_policy!r}.")
  case = dict(estimator=estimator, params=params, dtypes=dtypes, make_params=make_params, rebuild=rebuild,
              other_params=other_params, structures=structures, variants=variants,
              hyperparameters=hyperparameters, nan_estimator=nan_estimator, nan_policy=nan_policy,
              nan_count=nan_count, expected_nan_count=expected_nan_count, bad_arguments=bad_arguments,
              bad_keys=bad_keys, bad_params=bad_params, eager=eager,
              require_num_evaluations=require_num_evaluations, skip=tuple(skip))
  report = check_estimators({"estimator": case}, key=key, compiler_options=compiler_options, rtol=rtol,
                            atol=atol, variant_rtol=variant_rtol, fd_step=fd_step, fd_rtol=fd_rtol,
                            raise_on_failure=False)["estimator"]
  if raise_on_failure:
    report.raise_if_failed()
  return report
