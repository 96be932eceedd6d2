r"""Statistical checks for gradient estimators, usable in any test suite.

Every check runs many independent replicates (``vmap`` over keys folded from one fixed key, chunked by
:func:`pgjax.sweep.gradient_stats`), so it is deterministic: it cannot pass by luck on one run and fail on
the next. Bounds are in standard errors (default 5, a two-sided per-coordinate false-alarm rate of about
:math:`6\times10^{-7}`). Pair every check with a *power control* in your test: the same check applied to a
wrong target or a slightly scaled estimator must fail, which shows the check can fail at all at this number
of replicates.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from pgjax._src import sweep
from pgjax._src import utils


def _flat(tree):
  return np.asarray(ravel_pytree(tree)[0], dtype=np.float64)


def check_unbiased(estimator: Callable, params: Any, key: jax.Array, *, target: Any,
                   num_replicates: int = 2000, num_se: float = 5.0, atol: float = 1e-6,
                   rtol: float = 0.0, chunk_size: int | None = None
                   ) -> tuple[bool, str, sweep.GradientStats]:
  r"""Whether every coordinate satisfies :math:`|\bar g_k - t_k| \le \text{num\_se}\cdot\mathrm{SE}_k + \text{atol} + \text{rtol}|t_k|`.

  Returns:
    ``(ok, report, stats)``; ``report`` lists the worst coordinates in standard errors.
  """
  num_replicates = utils.check_positive_int(num_replicates, "num_replicates", minimum=2)
  utils.check_positive(num_se, "num_se")
  utils.tree_check_same_structure(params, target, "params", "target")
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
  utils.check_positive(ratio, "ratio")
  ka, kb = jax.random.split(utils.as_key(key))
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
    if not bool(jnp.all(jnp.isfinite(leaf))):
      raise AssertionError(f"{name}{jax.tree_util.keystr(path)} has non-finite values: {leaf}")
