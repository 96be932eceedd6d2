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
import numpy as np
from jax.typing import ArrayLike

__all__ = ("SHAPINGS", "centered_ranks", "changes_estimand", "elite_indices", "get_shaping", "nes_utilities",
           "num_nonfinite", "zscore")


def _as_float(x: ArrayLike) -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim < 1:
    raise ValueError("`x` must have shape [..., N] (one population per row), got a scalar.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  return x


def _rank_bounds(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """For a ``[N]`` row: ``lo_i`` = #members ranked strictly below ``x_i``, ``hi_i`` = #members not above it.

  The order is the real order with NaN below everything (including -inf); NaNs tie with each other.
  Member ``i`` occupies the 0-based ascending positions ``lo_i, ..., hi_i - 1``.
  """
  nan = jnp.isnan(x)
  n_nan = jnp.sum(nan)
  clean = jnp.where(nan, -jnp.inf, x)
  s = jnp.sort(clean)
  lo = jnp.searchsorted(s, clean, side="left")
  hi = jnp.searchsorted(s, clean, side="right")
  # A NaN (stored as -inf) is below -inf: -inf members start after the NaNs; NaNs occupy 0..n_nan-1.
  lo = jnp.where(nan, 0, jnp.where(clean == -jnp.inf, n_nan, lo))
  hi = jnp.where(nan, n_nan, hi)
  return lo, hi


def _tie_average(x: jax.Array, score_of_position: jax.Array) -> jax.Array:
  """Member-wise average of ``score_of_position`` (``[N]``, by 0-based ascending position) over its ties."""
  def row(xr):
    lo, hi = _rank_bounds(xr)
    cum = jnp.concatenate([jnp.zeros((1,), score_of_position.dtype), jnp.cumsum(score_of_position)])
    return (cum[hi] - cum[lo]) / (hi - lo).astype(score_of_position.dtype)

  return jnp.vectorize(row, signature="(n)->(n)")(x)


def centered_ranks(x: ArrayLike) -> jax.Array:
  r"""Centered ranks in :math:`[-\frac12, \frac12]` along the last axis; ties share their average rank.

  :math:`r_i = \frac{\mathrm{rank}_i}{N - 1} - \frac12` with 0-based ascending ranks: the smallest value
  maps to :math:`-\frac12`, the largest to :math:`\frac12`, all-equal values to 0, and ``N = 1`` to 0.
  NaN ranks below every number (see the module docstring).

  Args:
    x: ``[..., N]`` values (higher is better).

  Returns:
    ``[..., N]`` floating array (``x``'s dtype if floating).
  """
  x = _as_float(x)
  n = x.shape[-1]
  if n < 2:
    return jnp.zeros_like(x)
  def row(xr):
    lo, hi = _rank_bounds(xr)
    # average 0-based rank (lo + hi - 1) / 2, mapped to rank / (N - 1) - 1/2 with an integer numerator, so
    # the median of an odd population and symmetric ties give exactly 0
    return (lo + hi - n).astype(x.dtype) / (2 * (n - 1))

  return jnp.vectorize(row, signature="(n)->(n)")(x)


def nes_utilities(x: ArrayLike) -> jax.Array:
  r"""Natural-evolution-strategies utilities along the last axis (Wierstra et al. 2014, Section 3.1).

  For the member of rank :math:`k` (1 = highest value),

  .. math::

     u_k = \frac{\max\big(0, \log(\tfrac N2 + 1) - \log k\big)}
                {\sum_{j=1}^N \max\big(0, \log(\tfrac N2 + 1) - \log j\big)} - \frac1N,

  so :math:`\sum_k u_k = 0`; only the better half gets more than :math:`-\frac1N`. Tied members share the
  average utility of their positions; NaN ranks last.

  Args:
    x: ``[..., N]`` values (higher is better).

  Returns:
    ``[..., N]`` utilities (``x``'s dtype if floating).
  """
  x = _as_float(x)
  n = x.shape[-1]
  k = np.arange(n, 0, -1, dtype=np.float64)  # rank of ascending position p is N - p (1 = best)
  raw = np.maximum(0.0, np.log(n / 2 + 1) - np.log(k))
  util = raw / raw.sum() - 1.0 / n
  return _tie_average(x, jnp.asarray(util, x.dtype))


def zscore(x: ArrayLike) -> jax.Array:
  r""":math:`(x - \bar x)/\mathrm{std}(x)` along the last axis (population std, divisor ``N``).

  A row whose values are all equal maps to zeros (not NaN). Values are used as numbers: a NaN or
  :math:`\pm\infty` in a row makes that whole row NaN (see the module docstring).

  Args:
    x: ``[..., N]`` values.

  Returns:
    ``[..., N]`` floating array.
  """
  x = _as_float(x)
  c = x - jnp.mean(x, axis=-1, keepdims=True)
  std = jnp.sqrt(jnp.mean(c * c, axis=-1, keepdims=True))
  zero = std == 0  # False for a NaN std, which then propagates through the division
  return jnp.where(zero, jnp.zeros_like(c), c / jnp.where(zero, jnp.ones_like(std), std))


def num_nonfinite(x: ArrayLike) -> jax.Array:
  """The number of NaN or :math:`\\pm\\infty` entries along the last axis, int32 ``[...]``."""
  return jnp.sum(~jnp.isfinite(jnp.asarray(x)), axis=-1).astype(jnp.int32)


def elite_indices(x: ArrayLike, num_elite: int) -> jax.Array:
  r"""Indices of the ``num_elite`` highest values along the last axis, best first.

  NaN ranks below every number (a NaN member enters the elite only if there are fewer than
  ``num_elite`` non-NaN members); ties are broken by the lower index.

  Args:
    x: ``[..., N]`` values (higher is better).
    num_elite: ``K`` (static), ``1 <= K <= N``.

  Returns:
    ``[..., K]`` int32 indices.
  """
  x = _as_float(x)
  n = x.shape[-1]
  if isinstance(num_elite, bool) or not isinstance(num_elite, (int, np.integer)):
    raise TypeError(f"`num_elite` must be an integer, got {num_elite!r}.")
  if not 1 <= num_elite <= n:
    raise ValueError(f"`num_elite` must be in [1, {n}] (the population size), got {num_elite}.")
  # NaN -> one step below -inf in a total order: rank by (is_number, value) using the lower rank bound.
  lo = jnp.vectorize(lambda r: _rank_bounds(r)[0], signature="(n)->(n)")(x)
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
