r"""A shared Gaussian noise table: cheap approximate search directions.

Evolution strategies at large dimension spend much of their time *drawing*
Gaussian noise: a population of :math:`P` directions in :math:`d` dimensions
costs :math:`Pd` normal draws per generation, while reading the same number of
floats from memory is far cheaper (measured ratios in
``experiments/benchmarks/RESULTS.md``). Salimans et al. (2017) and Mania et al.
(2018) therefore draw one large table :math:`T \in \mathbb{R}^{S}` of iid
:math:`\mathcal{N}(0, 1)` numbers once, and use as direction :math:`i` the
contiguous slice

.. math::

   u_i = T[o_i : o_i + d], \qquad o_i \sim \mathrm{Uniform}\{0, \dots, S - d\},

so a direction costs one random integer instead of :math:`d` normals.

**This is an approximation of iid Gaussian directions.** Conditionally on the
(fixed) table, slices at nearby offsets overlap and are correlated, and the
empirical mean and covariance of the slices are those of the table, not exactly
:math:`0` and :math:`I` (errors of order :math:`1/\sqrt{S}`). Averaged over the
draw of the table the marginal of each slice is exactly :math:`\mathcal{N}(0,
I_d)`. Schemes that cancel the constant part of :math:`f` (antithetic pairs, a
baseline) are much less sensitive to the table's non-zero empirical mean than
the plain :math:`b = 0` estimator. Use a table with :math:`S \gg d` (the
default ``2**25`` floats, 128 MiB in float32).

Why hand-written: neither optax, distrax nor evosax (0.3) ship such a table for
JAX; evosax draws fresh normals every generation.

References:
  T. Salimans, J. Ho, X. Chen, S. Sidor, I. Sutskever, "Evolution Strategies as
  a Scalable Alternative to Reinforcement Learning", 2017.
  https://arxiv.org/abs/1703.03864
  H. Mania, A. Guy, B. Recht, "Simple random search provides a competitive
  approach to reinforcement learning", 2018. https://arxiv.org/abs/1803.07055
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from pgjax._src import validation

__all__ = ("NoiseTable", "noise_table", "sample_offsets", "gather_slices", "weighted_slice_sum")


class NoiseTable(NamedTuple):
  r"""A flat table of iid standard normal numbers (a pytree; pass it to ``zeroth_order(noise=...)``).

  Attributes:
    table: ``[S]`` floating array of iid :math:`\mathcal{N}(0, 1)` draws.
  """

  table: jax.Array


def noise_table(key: jax.Array, *, size: int = 2**25, dtype: Any = jnp.float32) -> NoiseTable:
  r"""Draws a shared noise table of ``size`` iid standard normals (done once, then reused).

  Args:
    key: PRNG key.
    size: number of entries :math:`S` (static); must exceed the dimension of the
      parameters it will perturb, ideally by a large factor.
    dtype: floating dtype of the table.

  Returns:
    A :class:`NoiseTable`.

  Raises:
    TypeError / ValueError: ``size`` not a positive integer, ``dtype`` not floating.
  """
  size = validation.check_positive_int(size, "size")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"`dtype` must be a floating dtype, got {dtype}.")
  return NoiseTable(jax.random.normal(key, (size,), dtype))


def _table_array(noise: NoiseTable | jax.Array) -> jax.Array:
  return noise.table if isinstance(noise, NoiseTable) else noise


def check_table(noise: Any, dim: int, name: str = "noise") -> jax.Array:
  """Returns the table array, raising a clear error if ``noise`` cannot give slices of length ``dim``."""
  table = _table_array(noise)
  if not hasattr(table, "shape") or not hasattr(table, "dtype"):
    raise TypeError(f"`{name}` must be a NoiseTable (see noise_table), got {type(noise).__name__}.")
  if table.ndim != 1:
    raise ValueError(f"`{name}` table must be one-dimensional, got shape {table.shape}.")
  if not jnp.issubdtype(table.dtype, jnp.floating):
    raise TypeError(f"`{name}` table must be floating, got {table.dtype}.")
  if table.shape[0] < dim:
    raise ValueError(f"`{name}` table has {table.shape[0]} entries, fewer than the {dim} parameters "
                     "it must perturb; use a table much larger than the dimension.")
  return table


def sample_offsets(key: jax.Array, noise: NoiseTable | jax.Array, num: int, dim: int) -> jax.Array:
  """``[num]`` int32 offsets drawn uniformly from ``{0, ..., S - dim}``."""
  table = _table_array(noise)
  return jax.random.randint(key, (num,), 0, table.shape[0] - dim + 1, dtype=jnp.int32)


def gather_slices(noise: NoiseTable | jax.Array, offsets: jax.Array, dim: int) -> jax.Array:
  """Materialises the ``[num, dim]`` directions ``T[o_i : o_i + dim]`` (use only at small scale)."""
  table = _table_array(noise)
  return jax.vmap(lambda o: jax.lax.dynamic_slice(table, (o,), (dim,)))(offsets)


def weighted_slice_sum(noise: NoiseTable | jax.Array, offsets: jax.Array, weights: jax.Array,
                       dim: int, *, unroll: int = 8) -> jax.Array:
  r"""The matrix-vector product :math:`\sum_i w_i\, T[o_i : o_i + d]` without forming ``[num, dim]``.

  Runs a ``lax.scan`` over the slices that adds one scaled contiguous slice per
  step into a ``[dim]`` accumulator, so memory traffic is one read of each slice
  and the ``[num, dim]`` gather is never formed.

  Args:
    noise: the table.
    offsets: ``[num]`` integer offsets.
    weights: ``[num]`` weights.
    dim: slice length :math:`d` (static).
    unroll: scan unroll factor (static).

  Returns:
    ``[dim]`` array with the table's dtype.
  """
  table = _table_array(noise)
  weights = weights.astype(table.dtype)

  def body(acc, ow):
    o, w = ow
    return acc + w * jax.lax.dynamic_slice(table, (o,), (dim,)), None

  acc0 = jnp.zeros((dim,), table.dtype)
  return jax.lax.scan(body, acc0, (offsets, weights), unroll=min(unroll, max(offsets.shape[0], 1)))[0]
