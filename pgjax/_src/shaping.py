r"""Fitness shaping: turn a population's values into the weights an evolution strategy uses.

Every function works on the **last axis** (``[..., N]``, one population of ``N`` values per row; leading
axes are batches) and returns an array of the same shape, so ``vmap`` is never needed. All are pure and
jit-compatible.

* :func:`centered_ranks`: ranks mapped linearly to :math:`[-\frac12, \frac12]` (OpenAI-ES; Salimans et al.
  2017). Invariant to any increasing transformation of the values.
* :func:`nes_utilities`: the rank-based utilities of natural evolution strategies (Wierstra et al. 2014),
  :math:`u_k = \frac{\max(0, \log(\frac N2 + 1) - \log k)}{\sum_j \max(0, \log(\frac N2 + 1) - \log j)}
  - \frac1N` for the member of rank :math:`k` (1 = best): the better half gets positive, decreasing
  weights, the worse half the same small negative weight; they sum to zero.
* :func:`zscore`: :math:`(f - \bar f)/\mathrm{std}(f)`; not rank-based (scale-free, not invariant to
  non-linear increasing transformations).
* :func:`elite_indices`: the indices of the ``K`` best members (the cross-entropy method's elite).

**Any shaping changes the estimand.** A zeroth-order estimate built from shaped values is no longer an
unbiased estimate of the gradient of the smoothed objective, not even up to a scale in general (ranks
estimate the gradient of a quantile-weighted objective). Estimators report this in their ``aux``
(``estimand_changed``); :func:`changes_estimand` answers it for a ``shaping=`` argument.

**Non-finite values (one policy for the whole library).**

* Where an algorithm *ranks* (:func:`centered_ranks`, :func:`nes_utilities`, :func:`elite_indices`, the
  cross-entropy method's elite), NaN ranks **last**: below every number, including :math:`-\infty`
  (several NaNs tie for the last places). :math:`\pm\infty` rank as the largest/smallest numbers. The
  result is finite, and the estimators count the non-finite values they saw in ``aux.num_nonfinite``
  (see :func:`num_nonfinite`), so a diverging objective is reported rather than hidden.
* Where values are used *as numbers* (no shaping, :func:`zscore`, every baseline), a NaN propagates into
  the result: :func:`zscore` of a row containing a NaN is NaN everywhere, and so is an estimate computed
  from it. A silent zero or a silently finite wrong gradient is never returned.

Ties: members with equal values share the average of the ranks (or utilities) they occupy, so the shaped
values do not depend on the order of the population; :func:`elite_indices` breaks ties by index.

References:
  T. Salimans, J. Ho, X. Chen, S. Sidor, I. Sutskever, "Evolution Strategies as a Scalable Alternative to
  Reinforcement Learning", 2017. https://arxiv.org/abs/1703.03864
  D. Wierstra, T. Schaul, T. Glasmachers, Y. Sun, J. Peters, J. Schmidhuber, "Natural Evolution
  Strategies", JMLR 15, 2014 (Section 3.1, fitness shaping). https://jmlr.org/papers/v15/wierstra14a.html
  R. Rubinstein, "The Cross-Entropy Method for Combinatorial and Continuous Optimization", 1999.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from pgjax._src import validation

__all__ = ("SHAPINGS", "centered_ranks", "changes_estimand", "elite_indices", "get_shaping", "nes_utilities",
           "num_nonfinite", "zscore")


def _as_float(x: ArrayLike) -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim < 1:
    raise ValueError("`x` must have shape [..., N] (one population per row), got a scalar.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  return x


def _as_mask(where: ArrayLike | None, x: jax.Array) -> jax.Array:
  if where is None:
    return jnp.ones(x.shape, bool)
  where = jnp.asarray(where)
  if where.dtype != jnp.bool_:
    raise TypeError(f"`where` must be a boolean array, got dtype {where.dtype}.")
  try:
    return jnp.broadcast_to(where, x.shape)
  except ValueError:
    raise ValueError(f"`where` must broadcast to the values' shape {x.shape}, got {where.shape}.") from None


_PAIRWISE_MAX = 64  # up to this population, ranks come from an [N, N] comparison


def _rank_bounds(x: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """For a ``[N]`` row and mask ``w``: the positions each active member occupies among the active ones.

  The order is the real order with NaN below everything (including -inf); NaNs tie with each other.
  Active member ``i`` occupies the 0-based ascending positions ``lo_i, ..., hi_i - 1`` among the
  ``n_active`` active members (inactive members get meaningless bounds; callers mask them out).
  """
  nan = jnp.isnan(x) & w
  n_out = jnp.sum(~w)
  n_nan = jnp.sum(nan)
  clean = jnp.where(w & ~nan, x, -jnp.inf)  # inactive and NaN members sort as -inf, below every number
  if x.shape[0] <= _PAIRWISE_MAX:  # small populations: count pairwise (no sort, no binary-search loop)
    lo = jnp.sum(clean[None, :] < clean[:, None], axis=1, dtype=jnp.int32)
    hi = jnp.sum(clean[None, :] <= clean[:, None], axis=1, dtype=jnp.int32)
  else:
    s = jnp.sort(clean)
    lo = jnp.searchsorted(s, clean, side="left")
    hi = jnp.searchsorted(s, clean, side="right")
  # Order: inactive < NaN < -inf < numbers. A -inf member starts after the inactive and NaN ones.
  lo = jnp.where(nan, n_out, jnp.where(clean == -jnp.inf, n_out + n_nan, lo))
  hi = jnp.where(nan, n_out + n_nan, hi)
  lo = jnp.where(w, lo - n_out, -1)  # inactive members: below everything (for elite selection)
  hi = jnp.where(w, hi - n_out, 0)
  return lo, hi, x.shape[0] - n_out


def _rowwise(fn: Callable, x: jax.Array, w: jax.Array) -> jax.Array:
  return jnp.vectorize(fn, signature="(n),(n)->(n)")(x, w)


def centered_ranks(x: ArrayLike, where: ArrayLike | None = None) -> jax.Array:
  r"""Centered ranks in :math:`[-\frac12, \frac12]` along the last axis; ties share their average rank.

  :math:`r_i = \frac{\mathrm{rank}_i}{N - 1} - \frac12` with 0-based ascending ranks: the smallest value
  maps to :math:`-\frac12`, the largest to :math:`\frac12`, all-equal values to 0, and ``N = 1`` to 0.
  NaN ranks below every number (see the module docstring).

  Args:
    x: ``[..., N]`` values (higher is better).
    where: optional boolean mask broadcastable to ``x``: rank only the members where it is ``True``
      (``N`` = their number, which may be traced); the others get 0.

  Returns:
    ``[..., N]`` floating array (``x``'s dtype if floating).
  """
  x = _as_float(x)

  def row(xr, wr):
    lo, hi, n = _rank_bounds(xr, wr)
    # average 0-based rank (lo + hi - 1) / 2, mapped to rank / (N - 1) - 1/2 with an integer numerator, so
    # the median of an odd population and symmetric ties give exactly 0
    r = (lo + hi - n).astype(x.dtype) / (2 * jnp.maximum(n - 1, 1)).astype(x.dtype)
    return jnp.where(wr & (n > 1), r, jnp.zeros_like(r))

  return _rowwise(row, x, _as_mask(where, x))


def nes_utilities(x: ArrayLike, where: ArrayLike | None = None) -> jax.Array:
  r"""Natural-evolution-strategies utilities along the last axis (Wierstra et al. 2014, Section 3.1).

  For the member of rank :math:`k` (1 = highest value),

  .. math::

     u_k = \frac{\max\big(0, \log(\tfrac N2 + 1) - \log k\big)}
                {\sum_{j=1}^N \max\big(0, \log(\tfrac N2 + 1) - \log j\big)} - \frac1N,

  so :math:`\sum_k u_k = 0`; only the better half gets more than :math:`-\frac1N`. Tied members share the
  average utility of their positions; NaN ranks last.

  Args:
    x: ``[..., N]`` values (higher is better).
    where: optional boolean mask broadcastable to ``x``: only the members where it is ``True`` are ranked
      (``N`` = their number, which may be traced); the others get utility 0.

  Returns:
    ``[..., N]`` utilities (``x``'s dtype if floating, computed in float32 or wider).
  """
  x = _as_float(x)
  cdtype = jnp.promote_types(x.dtype, jnp.float32)

  def row(xr, wr):
    lo, hi, n = _rank_bounds(xr, wr)
    nf = n.astype(cdtype)
    k = nf - jnp.arange(xr.shape[0], dtype=cdtype)  # rank (1 = best) of ascending position p among active
    raw = jnp.where(k >= 1, jnp.maximum(0.0, jnp.log(nf / 2 + 1) - jnp.log(jnp.maximum(k, 1.0))), 0.0)
    util = jnp.where(k >= 1, raw / jnp.sum(raw) - 1.0 / nf, 0.0)
    cum = jnp.concatenate([jnp.zeros((1,), cdtype), jnp.cumsum(util)])
    out = (cum[hi] - cum[lo]) / jnp.maximum(hi - lo, 1).astype(cdtype)
    return jnp.where(wr, out, 0.0).astype(x.dtype)

  return _rowwise(row, x, _as_mask(where, x))


def zscore(x: ArrayLike, where: ArrayLike | None = None) -> jax.Array:
  r""":math:`(x - \bar x)/\mathrm{std}(x)` along the last axis (population std, divisor ``N``).

  A row whose values are all equal maps to zeros (not NaN). Values are used as numbers: a NaN or
  :math:`\pm\infty` in a row makes that whole row NaN (see the module docstring).

  Args:
    x: ``[..., N]`` values.
    where: optional boolean mask broadcastable to ``x``: statistics over the members where it is
      ``True`` only; the others get 0.

  Returns:
    ``[..., N]`` floating array.
  """
  x = _as_float(x)
  w = _as_mask(where, x)
  count = jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), 1).astype(x.dtype)
  c = x - jnp.sum(jnp.where(w, x, 0.0), axis=-1, keepdims=True) / count
  std = jnp.sqrt(jnp.sum(jnp.where(w, c * c, 0.0), axis=-1, keepdims=True) / count)
  zero = std == 0  # False for a NaN std, which then propagates through the division
  out = jnp.where(zero, jnp.zeros_like(c), c / jnp.where(zero, jnp.ones_like(std), std))
  return jnp.where(w, out, 0.0)


def num_nonfinite(x: ArrayLike, where: ArrayLike | None = None) -> jax.Array:
  """The number of NaN or :math:`\\pm\\infty` entries along the last axis (where ``where``), int32 ``[...]``."""
  x = jnp.asarray(x)
  bad = ~jnp.isfinite(x)
  if where is not None:
    bad = bad & _as_mask(where, x)
  return jnp.sum(bad, axis=-1).astype(jnp.int32)


def elite_indices(x: ArrayLike, num_elite: int, where: ArrayLike | None = None) -> jax.Array:
  r"""Indices of the ``num_elite`` highest values along the last axis, best first.

  NaN ranks below every number (a NaN member enters the elite only if there are fewer than
  ``num_elite`` non-NaN members); ties are broken by the lower index. Members outside ``where`` rank
  below the NaNs.

  Args:
    x: ``[..., N]`` values (higher is better).
    num_elite: ``K`` (static), ``1 <= K <= N``.
    where: optional boolean mask broadcastable to ``x`` of the members that may be chosen.

  Returns:
    ``[..., K]`` int32 indices.
  """
  x = _as_float(x)
  n = x.shape[-1]
  num_elite = validation.check_positive_int(num_elite, "num_elite")
  if num_elite > n:
    raise ValueError(f"`num_elite` must be in [1, {n}] (the population size), got {num_elite}.")
  lo = _rowwise(lambda xr, wr: _rank_bounds(xr, wr)[0], x, _as_mask(where, x))
  return jax.lax.top_k(lo, int(num_elite))[1].astype(jnp.int32)


SHAPINGS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "centered_ranks": centered_ranks,
    "nes_utilities": nes_utilities,
    "zscore": zscore,
}


def get_shaping(shaping: Any, name: str = "shaping") -> Callable[[jax.Array], jax.Array] | None:
  """Resolves a ``shaping=`` argument: ``None`` (identity), a name in :data:`SHAPINGS`, or a callable.

  A callable must map ``[..., N]`` values to ``[..., N]`` shaped values.

  Raises:
    ValueError / TypeError: naming ``name`` for an unknown name or a non-callable.
  """
  if shaping is None:
    return None
  if isinstance(shaping, str):
    if shaping not in SHAPINGS:
      raise ValueError(f"`{name}` must be None, one of {sorted(SHAPINGS)} or a callable, got {shaping!r}.")
    return SHAPINGS[shaping]
  if callable(shaping):
    return shaping
  raise TypeError(f"`{name}` must be None, one of {sorted(SHAPINGS)} or a callable, got "
                  f"{type(shaping).__name__}.")


def changes_estimand(shaping: Any) -> bool:
  """Whether a ``shaping=`` argument changes what an estimator estimates (every shaping but ``None`` does)."""
  return shaping is not None
