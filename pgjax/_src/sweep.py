r"""Statistics of a gradient estimator over many independent seeds, in one compiled call.

:func:`gradient_stats` runs an estimator on seeds :math:`i = 0..S-1` with keys ``fold_in(key, i)`` (so seed
``i``'s stream does not depend on ``S``, the chunk size or the device count), in fixed-size chunks (``vmap``
inside a chunk, ``lax.scan`` across chunks) so memory is bounded by the chunk, sharded over all devices
(:func:`seed_layout`: contiguous groups of seeds, whole groups per device). Within a group it accumulates
one-pass sums of deviations from the group's first value (shifted sums: one fused reduction per chunk,
with little cancellation), and pools the groups with Chan et al.'s parallel formulas in a fixed order, so
the result does not depend on the device count. :func:`map_seeds` is the same machinery for per-seed
outputs (training loops over many seeds).

Standard errors: linear statistics (per-coordinate mean, MSE, mean cosine) use the sample standard deviation
over seeds divided by :math:`\sqrt S`. Non-linear statistics (total variance, bias norm, SNR) use the
delete-one-group jackknife over ``num_groups`` contiguous groups of seeds (see :func:`seed_layout`): each is
recomputed without one group and :math:`\mathrm{SE}^2 = \frac{G-1}{G}\sum_g(\hat\theta_{-g}-\bar\theta)^2`.

References:
  Chan, Golub, LeVeque, "Algorithms for computing the sample variance", 1983.
  Efron & Stein, "The jackknife estimate of variance", Annals of Statistics 1981.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.extend.core  # noqa: F401  (jaxprs_in_params, for chunk sizing)
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from pgjax._src import utils
from pgjax._src import validation
from pgjax._src.base import Estimator


class GradientStats(NamedTuple):
  r"""Statistics of an estimator :math:`\hat g` over S seeds (each ``*_se`` is its standard error).

  Attributes:
    num_seeds: S.
    mean: :math:`\bar g`, same pytree as params; ``mean_se`` per coordinate.
    total_variance: :math:`\operatorname{tr}\operatorname{Cov}[\hat g]` (unbiased, divisor S - 1).
    bias_norm: :math:`\|\bar g - \nabla J\|` (NaN without ``true_grad``). It includes noise: its square
      overestimates :math:`\|\mathbb E\hat g-\nabla J\|^2` by ``total_variance / S``; see ``bias_sq``.
    bias_sq: :math:`\|\bar g-\nabla J\|^2 - \operatorname{tr}\operatorname{Cov}/S`, unbiased for the squared
      bias (may be slightly negative).
    mse: :math:`\frac1S\sum_i\|\hat g_i - \nabla J\|^2`.
    cosine: mean over seeds of :math:`\cos(\hat g_i, \nabla J)` (an all-zero :math:`\hat g_i` counts as 0).
    snr: :math:`\|\bar g\| / \sqrt{\operatorname{tr}\operatorname{Cov}}` (0 when both are 0).
    max_abs_z: the largest per-coordinate z-score of the bias,
      :math:`\max_j |\bar g_j - \nabla_j J| / \mathrm{SE}_j` (NaN without ``true_grad``). With no bias it is
      the maximum of :math:`D` roughly standard normal values (about 2-4 for :math:`D` from 10 to 10^4).
    bias_p_value: p-value of the test "no bias" (NaN without ``true_grad``): Bonferroni over the
      :math:`D` coordinates of two-sided Student-t tests with :math:`S-1` degrees of freedom,
      :math:`p = \min(1, D\, P(|T_{S-1}| \ge \texttt{max\_abs\_z}))`. Valid whatever the correlation
      between coordinates (conservative when they are correlated); exact for Gaussian per-seed estimates
      and asymptotically right otherwise (central limit theorem over seeds). A small value (say < 0.01)
      means a bias was detected; a large one means none is visible at this many seeds.

  Read bias from ``max_abs_z`` / ``bias_p_value`` (or ``bias_sq``), not from ``bias_norm`` against
  ``bias_norm_se``: for an unbiased estimator ``bias_norm`` is the norm of pure noise, about
  :math:`\sqrt{\operatorname{tr}\operatorname{Cov}/S}`, many of its own standard errors away from 0.
  ``str(stats)`` (:meth:`summary`) prints the right reading.
  """
  num_seeds: jax.Array
  mean: Any
  mean_se: Any
  total_variance: jax.Array
  total_variance_se: jax.Array
  bias_norm: jax.Array
  bias_norm_se: jax.Array
  bias_sq: jax.Array
  mse: jax.Array
  mse_se: jax.Array
  cosine: jax.Array
  cosine_se: jax.Array
  snr: jax.Array
  snr_se: jax.Array
  max_abs_z: jax.Array
  bias_p_value: jax.Array

  def summary(self) -> str:
    """A readable summary (concrete, unbatched statistics), with the bias read through its test."""
    def f(name):
      return float(np.asarray(getattr(self, name)))
    s = int(np.asarray(self.num_seeds))
    lines = [f"gradient statistics over {s} seeds",
             f"  total variance  {f('total_variance'):.4g} +- {f('total_variance_se'):.2g}",
             f"  SNR             {f('snr'):.4g} +- {f('snr_se'):.2g}"]
    if math.isnan(f("bias_norm")):
      lines.append("  bias, MSE, cosine: not available (no true_grad)")
      return "\n".join(lines)
    z, p = f("max_abs_z"), f("bias_p_value")
    reading = ("DETECTED" if p < 0.01 else "consistent with 0") if math.isfinite(p) else "undetermined (NaN)"
    noise = math.sqrt(max(f("total_variance"), 0.0) / s)
    lines += [f"  bias            {reading} (max |z| = {z:.2f} over the coordinates, p = {p:.3g}; "
              "Bonferroni over coordinates)",
              f"                  |mean - true| = {f('bias_norm'):.3g} (noise alone gives about "
              f"sqrt(tr Cov / S) = {noise:.3g}); unbiased bias^2 = {f('bias_sq'):.3g}",
              f"  MSE             {f('mse'):.4g} +- {f('mse_se'):.2g}",
              f"  cosine          {f('cosine'):.4f} +- {f('cosine_se'):.2g}"]
    return "\n".join(lines)

  def __str__(self) -> str:
    leaves = jax.tree_util.tree_leaves(tuple(self))
    if any(isinstance(x, jax.core.Tracer) for x in leaves) or np.ndim(self.total_variance) != 0:
      return repr(self)
    return self.summary()


def _safe_div(a, b):
  ok = b > 0
  return jnp.where(ok, a / jnp.where(ok, b, 1.0), 0.0)


# Chunk-size budgets (tuned with experiments/benchmarks/sweep_strategies.py): a full vmap over many seeds
# of a large estimator is memory-bound, while tiny estimators need large chunks to amortise the
# per-iteration cost of the loop.
_CHUNK_BYTES = 32 * 2 ** 20    # aim: one chunk's intermediates within ~32 MiB
_MIN_VECTOR = 8                # vectorise at least this many seeds ...
_MAX_CHUNK_BYTES = 256 * 2 ** 20  # ... unless that exceeds this much memory
_TINY_CHUNK = 8192             # estimators with this many seeds within _CHUNK_BYTES are tiny: ...
_MAX_CHUNK = 65536             # ... they get chunks up to this, within _MAX_CHUNK_BYTES
_MAP_SEEDS_CHUNKS = 16  # map_seeds' default chunk is at most ceil(num_seeds / 16)


def _jaxpr_bytes(jaxpr: Any) -> int:
  """Bytes of every equation output in ``jaxpr``, recursing into sub-jaxprs (jit, scan, cond, custom_jvp)."""
  total = 0
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      aval = getattr(var, "aval", None)
      shape, dtype = getattr(aval, "shape", None), getattr(aval, "dtype", None)
      if shape is None or dtype is None:
        continue
      try:
        total += int(np.prod(shape)) * np.dtype(dtype).itemsize
      except TypeError:  # key types and other extended dtypes
        total += 8 * int(np.prod(shape))
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      total += _jaxpr_bytes(sub)  # a scan body counts once: its stacked outputs are counted above
  return total


def _intermediate_bytes(estimator: Estimator, params: Any, key: jax.Array) -> int:
  """Bytes of every intermediate value of one seed's computation, inner jaxprs included."""
  return _jaxpr_bytes(jax.make_jaxpr(estimator)(key, params).jaxpr)


def choose_chunk_size(estimator: Estimator, params: Any, key: jax.Array, num_seeds: int) -> int:
  r"""Picks a chunk size (a power of two) from one seed's intermediates, found by tracing (no compilation).

  With :math:`W` the bytes of all intermediate values in the jaxpr of one seed, the chunk is the largest
  power of two with :math:`C\,W \le 32` MiB (the sum over-counts what XLA keeps live after fusion: about
  10 times the compiled program's temporary memory for score-function estimators), at least 8 seeds
  (vectorising over seeds pays even past the cache) unless 8 seeds exceed 256 MiB, and at most the next
  power of two of ``num_seeds``. A *tiny* estimator, one whose 8192 seeds fit in 32 MiB, gets up to 65536
  seeds within 256 MiB: its cost per seed is then the fixed cost of each operation (and, on a multi-core
  CPU, of splitting it over the cores), which shrinks as the operations widen. :func:`seed_layout` may
  then lower the chunk so that the chunks tile the seed groups. The result depends only on the estimator,
  ``params`` and ``num_seeds``, never on the devices, so that the default chunking (hence every bit of a
  result) is the same on any device count. ``experiments/benchmarks/sweep_strategies.py`` compares the
  resulting speed with a full ``vmap`` and with ``lax.map`` at several chunk sizes.
  """
  try:
    per_seed = max(_intermediate_bytes(estimator, params, key), 64)
  except Exception:  # an estimator that cannot be traced abstractly here: fall back on the params' size
    per_seed = 64 * max(utils.tree_size(params), 1)
  chunk = _CHUNK_BYTES // per_seed
  if chunk < _MIN_VECTOR:
    chunk = min(_MIN_VECTOR, max(1, _MAX_CHUNK_BYTES // per_seed))
  elif chunk >= _TINY_CHUNK:
    chunk = _MAX_CHUNK_BYTES // per_seed
  chunk = min(_MAX_CHUNK, max(1, chunk))
  return min(utils.floor_power_of_two(chunk), utils.ceil_power_of_two(num_seeds))


def _fsum(x, axis=0):
  """Sum along ``axis`` in a fixed pairwise order made of elementwise adds only.

  ``jnp.sum`` lets XLA pick the reduction order, which can change with the memory layout (for example after
  an all-gather, or under ``vmap``); halving the array with elementwise adds fixes the order, so the pooled
  statistics are bit-identical whatever the device count. The cost is ``log2(n)`` elementwise passes.
  """
  x = jnp.moveaxis(jnp.asarray(x), axis, 0)
  n = x.shape[0]
  size = utils.ceil_power_of_two(n)
  if size != n:  # adding exact zeros changes no bit
    x = jnp.concatenate([x, jnp.zeros((size - n,) + x.shape[1:], x.dtype)])
  while x.shape[0] > 1:
    half = x.shape[0] // 2
    x = x[:half] + x[half:]
  return x[0]


def _fnorm(x, axis=0):
  return jnp.sqrt(_fsum(x * x, axis))


class SeedLayout(NamedTuple):
  """How ``num_seeds`` seeds are laid out (all static, independent of how many devices are used).

  Seeds ``0 .. num_groups * chunks_per_group * chunk_size - 1`` are split into ``num_groups`` contiguous
  groups of ``chunks_per_group`` chunks of ``chunk_size`` seeds; seeds ``>= num_seeds`` are padding, computed
  and masked out. Groups are the unit of work of a device (``num_groups / num_devices`` each) and of the
  jackknife. When a group is a single chunk, ``groups_per_step`` consecutive groups are evaluated in one
  vectorised call (one ``vmap`` over ``groups_per_step * chunk_size`` seeds, then per-group sums), which
  amortises the loop for cheap estimators.
  """
  num_seeds: int
  num_groups: int
  chunks_per_group: int
  chunk_size: int
  groups_per_step: int = 1

  @property
  def padded_seeds(self) -> int:
    return self.num_groups * self.chunks_per_group * self.chunk_size


def seed_layout(num_seeds: int, chunk_size: int, num_groups: int, num_devices: int = 1,
                max_devices: int | None = None) -> SeedLayout:
  """Chooses groups and chunks: at most ``chunk_size`` seeds per chunk, little padding.

  ``num_groups`` is first capped at ``num_seeds`` and then rounded up to a multiple of ``num_devices`` (so
  the layout, hence every bit of the result, is the same for all device counts that divide it). The chunk
  size is then shrunk to ``ceil(num_seeds / (num_groups * chunks_per_group))`` so padding is below one seed
  per chunk. When a group fits in one chunk, ``groups_per_step`` is the largest power of two with
  ``groups_per_step * chunk_size <= chunk_size argument`` such that ``max_devices * groups_per_step``
  divides the number of groups (so the layout is the same on every device count up to ``max_devices``
  that divides it; :func:`gradient_stats` passes ``jax.device_count()``, all devices of all processes) and
  ``num_devices * groups_per_step`` does too. ``max_devices`` defaults to ``num_devices``.
  """
  max_devices = num_devices if max_devices is None else max(max_devices, num_devices)
  groups = min(num_groups, num_seeds)
  groups = -(-groups // num_devices) * num_devices
  per_group = -(-num_seeds // groups)
  chunks = -(-per_group // chunk_size)
  size = -(-per_group // chunks)
  step = 1
  if chunks == 1:
    while (2 * step * size <= chunk_size and groups % (2 * step * max_devices) == 0
           and groups % (2 * step * num_devices) == 0):
      step *= 2
  return SeedLayout(num_seeds, groups, chunks, size, step)


def _seeds_mesh(devices) -> jax.sharding.Mesh:
  """1-D mesh over ``devices`` with axis ``seeds``, Auto axis type (an Explicit axis breaks vmap/jit)."""
  from jax.sharding import AxisType
  return jax.sharding.Mesh(np.asarray(devices), ("seeds",), axis_types=(AxisType.Auto,))


def gradient_stats(estimator: Estimator, params: Any, key: jax.Array, *, num_seeds: int,
                   true_grad: Any = None, chunk_size: int | None = None, num_groups: int = 32,
                   devices: Any = None) -> GradientStats:
  r"""Mean, variance, bias, MSE, cosine and SNR of ``estimator`` at ``params`` over ``num_seeds`` seeds.

  Seed ``i`` calls ``estimator(jax.random.fold_in(key, i), params)`` (equal to ``split(key, S)[i]``), so its
  stream does not depend on ``num_seeds``, the chunk size or the device count. Seeds run in fixed-size chunks
  (``vmap`` within, ``lax.scan`` across), so peak memory is that of one chunk whatever ``num_seeds`` is
  (see :func:`seed_layout`; ``chunk_size`` is an upper bound, lowered so that padding stays below one seed
  per chunk). The whole computation is jit-compiled once per (estimator, shapes, num_seeds, chunk_size),
  and is itself traceable: call it inside ``jax.vmap`` over a traced hyperparameter that the estimator closes
  over (one compilation for a sweep).

  **Devices.** The seed axis is sharded over ``devices`` (default: all of ``jax.devices()``, i.e. every
  device of every process after ``jax.distributed.initialize()``): a 1-D mesh with axis ``seeds`` (Auto axis
  type), ``shard_map`` over the ``num_groups`` contiguous seed groups (``num_groups`` is rounded up to a
  multiple of the device count), each device scanning its groups' chunks; the per-group moments are then
  all-gathered and pooled identically on every device. Padding seeds are masked out of every statistic.
  Because a group's moments are accumulated chunk by chunk in the same order on any device, and pooled with
  fixed-order sums, the result is **bit-identical on 1, 2, 4 and 8 devices**: on any number of the
  machine's devices (``devices``, a subset of ``jax.devices()``) that divides ``num_groups`` (32 by
  default). The layout does depend on how many devices the machine has (``jax.device_count()``): a
  vectorised step holds at most the seed groups of one of them (:func:`seed_layout`), so that a one-device
  machine evaluates a cheap estimator in steps as wide as a full ``vmap`` would (wider operations run
  faster on a multi-core CPU). Machines with different device counts may therefore differ in the last
  bits, as machines with different hardware can. One caveat, seen on CPU: inside an
  enclosing ``jax.vmap`` XLA may fuse the pooling differently per device count, and as it contracts
  ``a * b + c`` into fused multiply-adds within a fusion, the jackknife standard errors can then differ in
  the last bit (1 ulp seen); every other field stays bit-identical.

  **Several hosts.** Call ``jax.distributed.initialize()`` first in every process and run the same script
  everywhere; ``jax.devices()`` then lists every process's devices and every process gets the full
  statistics (``experiments/multihost/sweep_two_processes.py`` shows it with two processes on one machine,
  bit-identical to one process with as many devices).

  Args:
    estimator: ``(key, params) -> (grads, aux)``.
    params: the point at which to estimate (any pytree).
    key: root PRNG key.
    num_seeds: S >= 2, static.
    true_grad: optional pytree like ``params``; enables bias, MSE and cosine.
    chunk_size: at most this many seeds per chunk, static; ``None`` chooses from the size of one seed's
      intermediates (:func:`choose_chunk_size`, tracing only). :func:`seed_layout` may lower it so the
      chunks tile the seed groups with less than one padding seed per chunk.
    num_groups: contiguous seed groups, the unit of work per device and of the jackknife standard errors of
      the non-linear statistics (capped at ``num_seeds``, rounded up to a multiple of the device count).
    devices: devices to shard the seeds over (a sequence of ``jax.Device``); ``None`` uses all devices.
      One device runs without ``shard_map``.

  Returns:
    :class:`GradientStats`.
  """
  validation.check_callable(estimator, "estimator")
  num_seeds = validation.check_positive_int(num_seeds, "num_seeds", minimum=2)
  num_groups = validation.check_positive_int(num_groups, "num_groups", minimum=2)
  key = validation.as_key(key)
  if chunk_size is None:
    chunk_size = choose_chunk_size(estimator, params, key, num_seeds)
  chunk_size = validation.check_positive_int(chunk_size, "chunk_size")
  devices = _check_devices(devices)
  layout = seed_layout(num_seeds, chunk_size, num_groups, len(devices), jax.device_count())
  if true_grad is not None:
    validation.check_same_structure(params, true_grad, "params", "true_grad")
  mesh = _seeds_mesh(devices) if len(devices) > 1 else None
  return _gradient_stats_jit(estimator, params, key, true_grad, layout=layout, mesh=mesh)


# Inlined into an enclosing jit, so that what the caller closes over (params, say) reaches XLA as constants,
# as in a hand-written vmap or lax.map: behind a call boundary XLA does not fold the params-only part of
# the estimator (experiments/benchmarks/sweep_strategies.py compares the two).
@functools.partial(jax.jit, static_argnames=("estimator", "layout", "mesh"), inline=True)
def _gradient_stats_jit(estimator, params, key, true_grad, *, layout, mesh):
  flat_params, unravel = ravel_pytree(params)
  dim = flat_params.shape[0]
  dtype = jnp.promote_types(flat_params.dtype, jnp.float32)
  t = None if true_grad is None else ravel_pytree(true_grad)[0].astype(dtype)

  def one_seed(i):
    """Seed ``i``'s flat gradient, then (with a target) its squared error and cosine: ``[K]``."""
    g, _ = estimator(jax.random.fold_in(key, i), params)
    flat_g = ravel_pytree(g)[0].astype(dtype)
    if flat_g.shape != (dim,):
      raise ValueError(f"`estimator` must return grads with the structure of params ({dim} entries), got "
                       f"{flat_g.shape[0]}.")
    extras = []
    if t is not None:
      cos = _safe_div(jnp.dot(flat_g, t), jnp.linalg.norm(flat_g) * jnp.linalg.norm(t))
      extras = [jnp.sum((flat_g - t) ** 2)[None], cos[None]]
    return jnp.concatenate([flat_g] + extras)

  def to_tree(v):
    return jax.tree_util.tree_map(lambda a, p: a.astype(jnp.asarray(p).dtype), unravel(v), params)

  # Every device runs the same program on the same data: its groups' chunks in order, then (after an
  # all-gather of the per-group moments) the same pooling, so the arithmetic, hence every bit, matches
  # across device counts.
  def per_device(ids):
    moments = _group_moments(one_seed, ids, layout, dim + (0 if t is None else 2), dtype)
    if mesh is not None:
      moments = jax.tree_util.tree_map(lambda x: jax.lax.all_gather(x, "seeds", tiled=True), moments)
    return _pool(moments, dim, t, dtype, to_tree)

  group_ids = jnp.arange(layout.num_groups)
  if mesh is None:  # one device: the same per-device program, without the shard_map wrapper (faster)
    return per_device(group_ids)
  from jax.sharding import PartitionSpec as P
  return jax.shard_map(per_device, mesh=mesh, in_specs=P("seeds"), out_specs=P(),
                       check_vma=False)(group_ids)


def _group_moments(one_seed, group_ids, layout: SeedLayout, width: int, dtype):
  r"""Moments ``(n [g], mean [g, K], M2 [g, K])`` of the seed groups ``group_ids [g]``.

  Within a group, shifted sums :math:`\sum_i (v_i - c)` and :math:`\sum_i (v_i - c)^2` are accumulated in
  one pass per chunk, with the shift :math:`c` = the group's first seed's value (so the sums are of
  deviations of the order of a standard deviation, and :math:`M_2 = \sum d^2 - (\sum d)^2 / n` loses
  little precision); this costs one fused reduction per chunk, where a per-chunk two-pass mean and a merge
  cost three, which matters for cheap estimators. Seeds are on the minor axis (``[K, C]``), so the sums are
  contiguous row reductions.
  """
  num_seeds, c = layout.num_seeds, layout.chunk_size
  padded = layout.padded_seeds != num_seeds  # (static: a layout without padding skips the masks)

  def evaluate(first, size):
    """``[K, size]`` values of seeds ``first ..`` and their validity mask."""
    idx = first + jnp.arange(size)
    valid = idx < num_seeds
    if padded:
      idx = jnp.where(valid, idx, num_seeds - 1)
    return jax.vmap(one_seed, out_axes=1)(idx), valid

  def finish(shift, s1, s2, n):
    mean_dev = _safe_div(s1, n)
    m2 = jnp.maximum(s2 - s1 * mean_dev, 0.0)
    return jnp.where(n > 0, shift + mean_dev, 0.0), m2

  if layout.groups_per_step > 1:  # one-chunk groups, several per vectorised call
    k = layout.groups_per_step

    def step(carry, ids):  # ids [k]: consecutive groups
      vals, valid = evaluate(ids[0] * c, k * c)
      vals = vals.reshape(width, k, c)
      shift = vals[:, :, 0]  # each group's first seed
      dev = vals - shift[:, :, None]
      if padded:
        dev = jnp.where(valid.reshape(1, k, c), dev, 0.0)
      n = jnp.clip(num_seeds - ids * c, 0, c).astype(dtype)
      mean, m2 = finish(shift, jnp.sum(dev, axis=2), jnp.sum(dev * dev, axis=2), n[None, :])
      return carry, (n, mean.T, m2.T)

    _, (n, mean, m2) = jax.lax.scan(step, None, group_ids.reshape(-1, k))
    return n.reshape(-1), mean.reshape(-1, width), m2.reshape(-1, width)

  per_group = layout.chunks_per_group * c

  def group_step(carry, g):
    first = g * per_group

    def chunk_step(acc, j):
      vals, valid = evaluate(first + j * c, c)
      shift, s1, s2 = acc
      shift = jnp.where(j == 0, vals[:, 0], shift)  # the group's first seed (padding only if all is)
      dev = vals - shift[:, None]
      if padded:
        dev = jnp.where(valid[None, :], dev, 0.0)
      return (shift, s1 + jnp.sum(dev, axis=1), s2 + jnp.sum(dev * dev, axis=1)), None

    zeros = (jnp.zeros((width,), dtype),) * 3
    (shift, s1, s2), _ = jax.lax.scan(chunk_step, zeros, jnp.arange(layout.chunks_per_group))
    n = jnp.clip(num_seeds - first, 0, per_group).astype(dtype)
    mean, m2 = finish(shift, s1, s2, n)
    return carry, (n, mean, m2)

  _, moments = jax.lax.scan(group_step, None, group_ids)
  return moments


def _pool(moments, dim: int, t, dtype, to_tree) -> GradientStats:
  """Pools per-group moments ``(n [G], mean [G, K], M2 [G, K])`` into the statistics (``t``: the flat
  target or None; ``to_tree`` maps a flat ``[dim]`` vector to the params' structure)."""
  n_g, mean_g, m2_g = moments
  n = _fsum(n_g)
  mean = _fsum(n_g[:, None] * mean_g) / n
  m2 = _fsum(m2_g) + _fsum(n_g[:, None] * (mean_g - mean[None]) ** 2)
  # The barrier fixes how the pooled moments are rounded: without it XLA may merge the divisions below
  # into their consumers (a / b / c -> a / (b c)) differently from one program (device count) to another.
  n, mean, m2, var = jax.lax.optimization_barrier((n, mean, m2, m2 / (n - 1)))

  # Leave-one-group-out moments for the jackknife.
  n_l = n - n_g                                                   # [G]
  mean_l = _safe_div(n * mean[None] - n_g[:, None] * mean_g, n_l[:, None])
  m2_l = (m2[None] - m2_g - n_g[:, None] * (mean_g - mean[None]) ** 2
          - n_l[:, None] * (mean_l - mean[None]) ** 2)
  m2_l = jnp.maximum(m2_l, 0.0)
  var_l = _safe_div(m2_l, (n_l - 1)[:, None])
  valid = (n_g > 0) & (n_l > 1)
  num_valid = _fsum(valid.astype(dtype))

  def jackknife_se(theta_l):
    theta_bar = _safe_div(_fsum(jnp.where(valid, theta_l, 0.0)), num_valid)
    ss = _fsum(jnp.where(valid, (theta_l - theta_bar) ** 2, 0.0))
    se = jnp.sqrt(_safe_div(num_valid - 1.0, num_valid) * ss)
    # Fewer than two usable groups (e.g. num_seeds = 2): no jackknife is possible; NaN, never a false 0.
    return jnp.where(num_valid >= 2, se, jnp.nan)

  g_mean, g_var = mean[:dim], var[:dim]
  g_mean_l, g_var_l = mean_l[:, :dim], var_l[:, :dim]
  total_var = _fsum(g_var)
  total_var_l = _fsum(g_var_l, axis=1)
  snr = _safe_div(_fnorm(g_mean), jnp.sqrt(total_var))
  snr_l = _safe_div(_fnorm(g_mean_l, axis=1), jnp.sqrt(total_var_l))
  nan = jnp.full((), jnp.nan, dtype)
  if t is not None:
    bias_norm = _fnorm(g_mean - t)
    bias_norm_se = jackknife_se(_fnorm(g_mean_l - t[None], axis=1))
    bias_sq = bias_norm ** 2 - total_var / n
    mse, mse_se = mean[dim], jnp.sqrt(var[dim] / n)
    cosine, cosine_se = mean[dim + 1], jnp.sqrt(var[dim + 1] / n)
    max_abs_z, bias_p_value = _bias_test(g_mean, t, g_var / n, n, dim)
  else:
    bias_norm = bias_norm_se = bias_sq = mse = mse_se = cosine = cosine_se = nan
    max_abs_z = bias_p_value = nan
  return GradientStats(
      num_seeds=n.astype(jnp.int32), mean=to_tree(g_mean), mean_se=to_tree(jnp.sqrt(g_var / n)),
      total_variance=total_var, total_variance_se=jackknife_se(total_var_l),
      bias_norm=bias_norm, bias_norm_se=bias_norm_se, bias_sq=bias_sq, mse=mse, mse_se=mse_se,
      cosine=cosine, cosine_se=cosine_se, snr=snr, snr_se=jackknife_se(snr_l), max_abs_z=max_abs_z,
      bias_p_value=bias_p_value)


def _bias_test(mean, target, se_sq, n, dim):
  r"""Largest per-coordinate z-score of ``mean - target`` and its Bonferroni Student-t p-value.

  A floating-point floor of 16 ulps of :math:`|\bar g_j| + |\nabla_j J|` is added to each standard error,
  so that an exactly constant estimator that matches the target up to rounding reads as unbiased, and one
  that misses it reads as biased (z large).
  """
  eps = jnp.finfo(mean.dtype).eps
  floor = 16 * eps * (jnp.abs(mean) + jnp.abs(target))
  z = _safe_div(jnp.abs(mean - target), jnp.sqrt(se_sq + floor * floor))
  z = jnp.where(jnp.isnan(mean) | jnp.isnan(se_sq), jnp.nan, z)
  max_z = jnp.max(z)
  df = n - 1.0
  # Two-sided P(|T_df| >= z) = I_{df / (df + z^2)}(df / 2, 1 / 2) (regularised incomplete beta).
  tail = jax.scipy.special.betainc(df / 2, 0.5, _safe_div(df, df + max_z * max_z))
  tail = jnp.where(jnp.isinf(max_z), 0.0, tail)
  return max_z, jnp.minimum(1.0, dim * tail)


def _check_devices(devices) -> tuple:
  devices = tuple(jax.devices() if devices is None else devices)
  if not devices or not all(isinstance(d, jax.Device) for d in devices):
    raise TypeError(f"`devices` must be a non-empty sequence of jax.Device, got {devices!r}.")
  return devices


def map_seeds(fn: Callable[[jax.Array], Any], key: jax.Array, *, num_seeds: int,
              chunk_size: int | None = None, devices: Any = None) -> Any:
  r"""Runs ``fn(fold_in(key, i))`` for every seed ``i < num_seeds``, sharded over devices, in fixed chunks.

  The training-loop counterpart of :func:`gradient_stats`: ``fn`` is one seed's whole computation (e.g.
  ``train`` from a ``make_train(config)``, fully jitted), and the result is every seed's output stacked on a
  leading ``[num_seeds]`` axis. Seeds run in chunks of ``chunk_size`` (``vmap`` within a chunk,
  ``lax.map`` across chunks), each device taking a contiguous block of at least two chunks (a 1-D mesh over
  ``devices`` with axis ``seeds``, Auto axis type, ``shard_map``); the seed count is padded to a whole
  number of chunks per device and the padding dropped. Seed ``i``'s key is ``fold_in(key, i)``
  (``= split(key, S)[i]``), and the chunk size, hence the chunk holding each seed and the vectorised
  program that computes it, is the same for every device count (the default too), so the outputs are
  bit-identical on 1, 2, 4 or 8 devices. At least two chunks per device keep the loop a loop: with one
  chunk XLA may compile the chunk's body differently.

  Compared with ``jax.vmap(train)(keys)`` this bounds memory by one chunk per device and, on a CPU, is
  often faster: a full ``vmap`` over many training runs is memory-bound.

  Args:
    fn: ``fn(key) -> pytree`` for one seed; close over any configuration (traced values are fine).
    key: root PRNG key.
    num_seeds: S >= 1 (static).
    chunk_size: seeds per chunk (static); ``None`` chooses from ``fn``'s intermediates like
      :func:`choose_chunk_size`, capped at ``ceil(num_seeds / 16)`` (two chunks for each of up to 8 devices
      without extra padding). The default never depends on the number of devices.
    devices: devices to shard over; ``None`` uses all of ``jax.devices()``.

  Returns:
    ``fn``'s output pytree with a leading ``[num_seeds]`` axis on every leaf.
  """
  validation.check_callable(fn, "fn")
  num_seeds = validation.check_positive_int(num_seeds, "num_seeds")
  key = validation.as_key(key)
  devices = _check_devices(devices)
  num_devices = len(devices)
  if chunk_size is None:  # independent of the device count: the same chunks, hence bits, everywhere
    chunk_size = choose_chunk_size(lambda k, _: fn(k), None, key, num_seeds)
    chunk_size = max(1, min(chunk_size, -(-num_seeds // _MAP_SEEDS_CHUNKS)))
  chunk_size = validation.check_positive_int(chunk_size, "chunk_size")
  chunks_per_device = max(2, -(-num_seeds // (chunk_size * num_devices)))
  mesh = _seeds_mesh(devices) if num_devices > 1 else None
  return _map_seeds_jit(fn, key, num_seeds=num_seeds, chunk_size=chunk_size,
                        num_chunks=chunks_per_device * num_devices, mesh=mesh)


@functools.partial(jax.jit, static_argnames=("fn", "num_seeds", "chunk_size", "num_chunks", "mesh"))
def _map_seeds_jit(fn, key, *, num_seeds, chunk_size, num_chunks, mesh):
  def run_chunks(chunk_ids):
    def one_chunk(c):
      idx = c * chunk_size + jnp.arange(chunk_size)
      return jax.vmap(lambda i: fn(jax.random.fold_in(key, i)))(jnp.minimum(idx, num_seeds - 1))
    return jax.lax.map(one_chunk, chunk_ids)  # [chunks, C, ...]

  ids = jnp.arange(num_chunks)
  if mesh is None:
    out = run_chunks(ids)
  else:
    from jax.sharding import PartitionSpec as P
    out = jax.shard_map(run_chunks, mesh=mesh, in_specs=P("seeds"), out_specs=P("seeds"),
                        check_vma=False)(ids)
  return jax.tree_util.tree_map(
      lambda x: x.reshape((num_chunks * chunk_size,) + x.shape[2:])[:num_seeds], out)
