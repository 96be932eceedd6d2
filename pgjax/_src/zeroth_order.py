r"""Zeroth-order (Gaussian-smoothing / evolution-strategies) gradient estimators.

For a function :math:`f` of parameters :math:`x \in \mathbb{R}^d` (any pytree, flattened with
:func:`jax.flatten_util.ravel_pytree`) and smoothing scales :math:`\sigma > 0` (one scalar, or one per
coordinate), the **Gaussian-smoothed objective** is

.. math::

   f_\sigma(x) = \mathbb{E}_{u \sim \mathcal{N}(0, I_d)}[f(x + \sigma \odot u)],
   \qquad
   \nabla f_\sigma(x) = \mathbb{E}_u\Big[(f(x + \sigma \odot u) - b)\, \frac{u}{\sigma}\Big]

(division coordinate-wise) for any :math:`b` independent of :math:`u`, because :math:`\mathbb{E}[u] = 0`.
This is the score-function identity for the search distribution :math:`\mathcal{N}(x,
\mathrm{diag}(\sigma^2))`, whose score at :math:`x + \sigma \odot u` is :math:`u / \sigma`.
:math:`f` need not be differentiable (an argmax accuracy, an episode return). When it is,
:math:`\nabla f_\sigma \to \nabla f` as :math:`\sigma \to 0` (Nesterov & Spokoiny 2017). **The estimand is**
:math:`\nabla f_\sigma`, not :math:`\nabla f`: e.g. for :math:`f(x) = \sum_k \sin x_k`,
:math:`\nabla f_\sigma(x) = \cos(x) \odot e^{-\sigma^2/2}`; for a quadratic
:math:`\tfrac12 x^\top A x + c^\top x` the two coincide for every :math:`\sigma`. Sign: the estimate is the
gradient of :math:`f_\sigma` itself (an ascent direction when :math:`f` is a reward); negate it for a loss.

Schemes (``N = num_directions`` function evaluations at perturbed points):

* ``"plain"``: :math:`\hat g = \frac1N\sum_i (f(x + \sigma\odot u_i) - b_i)\, u_i / \sigma` with a ``baseline``
  (default none, :math:`b = 0`).
* ``"forward"``: forward differences, :math:`b = f(x)`; costs :math:`N + 1` evaluations (the same as
  ``"plain"`` with ``baseline="center"``).
* ``"antithetic"`` (alias ``"central"``): :math:`N/2` directions, each evaluated at :math:`x \pm
  \sigma\odot u_p`: :math:`\hat g = \frac{1}{N/2}\sum_p \frac{f(x + \sigma\odot u_p) - f(x - \sigma\odot
  u_p)}{2}\, \frac{u_p}{\sigma}`. Any constant cancels, so no baseline is needed; ``N`` must be even.

Baselines for the one-sided schemes (``s_i`` the values after shaping), resolved by
:func:`pgjax.baselines.get` (the same names mean the same thing in every estimator), plus ``"center"``:

* ``"none"``: :math:`b = 0`. ``"center"``: :math:`b = f(x)` (one more evaluation).
* ``"mean"``: :math:`b = \bar s` including :math:`i`. **Biased**: exactly :math:`\frac{N-1}{N}` times the
  leave-one-out estimate, so its mean is :math:`\frac{N-1}{N}\nabla f_\sigma`.
* ``"leave_one_out"``: :math:`b_i = \frac{1}{N-1}\sum_{j\ne i} s_j`; unbiased (needs :math:`N \ge 2`).
* ``"optimal"``: the variance-optimal constant :math:`b^\star = \mathbb{E}[f\,\|u/\sigma\|^2] /
  \mathbb{E}[\|u/\sigma\|^2]` (Greensmith et al. 2004) estimated in-batch; biased by :math:`O(1/N)`.
  ``"optimal_leave_one_out"``: the same ratio without sample :math:`i`; unbiased.
* a number: a constant :math:`b` (may be traced); a callable ``b(values [N]) -> [N]`` or a
  :class:`pgjax.baselines.Baseline`.

For sphere directions and a scalar :math:`\sigma`, :math:`\|u\|^2 = d` is constant and the optimal baseline
equals the mean baseline.

Directions (all with :math:`\mathbb{E}[u u^\top] = I`):

* ``"gaussian"``: iid :math:`\mathcal{N}(0, I_d)`; unbiased for :math:`\nabla f_\sigma`.
* ``"sphere"``: uniform on the sphere of radius :math:`\sqrt d`. Unbiased for the gradient of the
  *ball*-smoothed objective :math:`\mathbb{E}_{w \sim \mathrm{Unif}(B_1)}[f(x + \sigma\sqrt d\, w)]`
  (Flaxman et al. 2005), which differs from :math:`f_\sigma` except on quadratics, where both equal
  :math:`\nabla f` exactly.
* ``"orthogonal"``: blocks of :math:`\min(M, d)` exactly orthogonal directions (rows of a Haar-random
  orthogonal matrix), each scaled by an independent :math:`\chi_d` norm, so every direction is marginally
  :math:`\mathcal{N}(0, I_d)`: **unbiased** for :math:`\nabla f_\sigma` (orthogonal Monte Carlo,
  Choromanski et al. 2018). Costs a QR of a ``[d, min(M, d)]`` matrix per block (computed in float32 or
  wider, whatever the parameters' dtype).
* ``"orthogonal_sphere"``: the same rows with fixed norms :math:`\sqrt d`: marginally uniform on the
  sphere, hence unbiased for the ball-smoothed gradient (biased for :math:`\nabla f_\sigma` beyond
  quadratics).

Variance on a quadratic: :func:`quadratic_trace_covariance` gives :math:`\operatorname{tr}\operatorname{Cov}
[\hat g]` in closed form for every scheme and direction kind (scalar :math:`\sigma`); for one Gaussian
direction and :math:`c_0 = f(x) - b`,
:math:`\frac{c_0^2 d}{\sigma^2} + (d+1)\|g\|^2 + c_0 (d+2)\operatorname{tr}A + \frac{\sigma^2}{4}(d+4)
\big((\operatorname{tr}A)^2 + 2\operatorname{tr}A^2\big)`; an antithetic pair gives :math:`(d+1)\|g\|^2`.

Fitness shaping (``shaping=``, see :mod:`pgjax.shaping`): centered ranks, NES utilities or z-scores of the
``N`` values (for antithetic pairs, of all ``N`` values together), or a callable. **Any shaping changes the
estimand**: the result is no longer an unbiased estimate of :math:`\nabla f_\sigma` (not even up to scale
in general); ``aux.estimand_changed`` is ``True``.

Non-finite values of :math:`f` follow the library's policy (:mod:`pgjax.shaping`): with rank shaping a
NaN ranks last (worst) and the estimate stays finite; without shaping, or with z-scores, a NaN propagates
into the estimate. Either way ``aux.num_nonfinite`` counts the evaluations that returned NaN or
:math:`\pm\infty`.

Random stream and chunking: direction :math:`i` is drawn from ``fold_in(key_directions, i)`` (orthogonal
block :math:`b` from ``fold_in(key_directions, b)``; table offsets all at once), so the same key gives the
same directions whatever ``batch_size`` and on every backend, and the estimate changes only by the
reassociation of floating-point sums. ``batch_size`` evaluates ``f`` over chunks of directions
(``lax.map``-style) to bound memory; when each direction's weight depends on its own values only (no
shaping; baseline none, center or a constant; antithetic pairs), chunks are *streamed*: drawn, evaluated
and accumulated one at a time, so the ``[M, d]`` population is never formed.

Noise source (``noise=``): ``None`` draws fresh directions with ``jax.random``; a
:class:`~pgjax._src.noise.NoiseTable` uses slices of a shared table at random offsets (an approximation of
iid Gaussian directions, see :mod:`pgjax._src.noise`), accumulated slice by slice
(:func:`~pgjax._src.noise.weighted_slice_sum`) so the population is never materialised. A table closed
over by a jitted function is a large compile-time constant; pass it as an argument of the jitted function
when compilation time matters.

Stochastic :math:`f` (``f_takes_key=True``, called as ``f(key, params)``): with
``common_random_numbers=True`` (default) every evaluation of one estimate uses the same key, so noise
common to all evaluations cancels in the differences; the estimate stays unbiased for
:math:`\nabla_x \mathbb{E}_\xi[f_\sigma(x, \xi)]`.

Why hand-written: optax removed ``optax.monte_carlo`` and never had zeroth-order estimators; evosax ships
ES *strategies* on flat vectors with ask/tell state, not a pure estimator over pytrees with baselines,
orthogonal directions, per-parameter traced :math:`\sigma`, and evaluation counts.

References:
  Y. Nesterov, V. Spokoiny, "Random Gradient-Free Minimization of Convex Functions", Foundations of
  Computational Mathematics, 2017. https://doi.org/10.1007/s10208-015-9296-2
  J. Su, "Policy gradient and zeroth-order optimisation reach the same place" (in Chinese), 2020.
  https://kexue.fm/archives/7737
  T. Salimans, J. Ho, X. Chen, S. Sidor, I. Sutskever, "Evolution Strategies as a Scalable Alternative to
  Reinforcement Learning", 2017. https://arxiv.org/abs/1703.03864
  K. Choromanski, M. Rowland, V. Sindhwani, R. Turner, A. Weller, "Structured Evolution with Compact
  Architectures for Scalable Policy Optimization", ICML 2018. https://arxiv.org/abs/1804.02395
  A. Flaxman, A. Kalai, H. McMahan, "Online convex optimization in the bandit setting: gradient descent
  without a gradient", SODA 2005. https://arxiv.org/abs/cs/0408007
  E. Greensmith, P. Bartlett, J. Baxter, "Variance Reduction Techniques for Gradient Estimates in
  Reinforcement Learning", JMLR 5, 2004.
  F. Mezzadri, "How to generate random matrices from the classical compact groups", Notices of the AMS,
  2007 (Haar-random orthogonal matrices by QR).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from pgjax._src import baselines as baselines_lib
from pgjax._src import noise as noise_lib
from pgjax._src import shaping as shaping_lib
from pgjax._src import utils
from pgjax._src import validation
from pgjax._src.base import PyTree
# Kept importable from here (they moved to pgjax._src.shaping).
from pgjax._src.shaping import centered_ranks  # noqa: F401
from pgjax._src.shaping import zscore  # noqa: F401

__all__ = ("ZerothOrderAux", "centered_ranks", "quadratic_trace_covariance", "zeroth_order", "zscore")

_SCHEMES = {"plain": "plain", "forward": "forward", "antithetic": "antithetic", "central": "antithetic"}
_DIRECTIONS = ("gaussian", "sphere", "orthogonal", "orthogonal_sphere")
# Default chunking: the most directions (a power of two) whose values fit in _CHUNK_BYTES. On XLA:CPU, with a
# cheap f and 128-256 directions, this was within 7% of the fastest chunk size in 17 of 18 (scheme, dimension)
# pairs from d = 512 to 100000 and within 15% in the last (all directions up to d ~ 4000, 4 at d = 100000),
# where a fixed 16 was up to 1.5x slower: wider chunks leave the cache, narrower ones pay per-step overhead
# (chunk_sweep in experiments/benchmarks/zo_vs_evosax.py). The estimate does not depend on the chunking.
_CHUNK_BYTES = 2 * 2 ** 20


class ZerothOrderAux(NamedTuple):
  r"""Auxiliary output of a zeroth-order estimate.

  Attributes:
    values: ``[N]`` values of ``f`` at the perturbed points. For antithetic pairs the first ``N/2`` are
      at :math:`x + \sigma\odot u_p`, the last ``N/2`` at :math:`x - \sigma\odot u_p`.
    fitness: ``[N]`` the values after shaping (equal to ``values`` without shaping).
    baselines: ``[N]`` the baseline subtracted from each fitness (zeros for antithetic pairs and
      ``baseline="none"``; ``f(x)`` for forward differences).
    num_evaluations: int32 scalar, the evaluations of ``f`` spent (``N``, plus one when ``f(x)`` is
      evaluated).
    estimand_changed: bool scalar, ``True`` when fitness shaping changed what is estimated (the estimate
      is then not unbiased for the smoothed gradient).
    num_nonfinite: int32 scalar, how many of those evaluations returned NaN or :math:`\pm\infty`.
  """

  values: jax.Array
  fitness: jax.Array
  baselines: jax.Array
  num_evaluations: jax.Array
  estimand_changed: jax.Array
  num_nonfinite: jax.Array


# ------------------------------------------------------------------------------------------ configuration

class _Config(NamedTuple):
  """The static configuration bound by :func:`zeroth_order` (everything but ``sigma``)."""

  f: Callable[..., jax.Array]
  num_directions: int          # N, evaluations at perturbed points
  antithetic: bool
  center: bool                 # b = f(x): one more evaluation
  baseline: baselines_lib.Baseline | None   # None with antithetic pairs or the f(x) baseline
  directions: str
  shaping: Callable[[jax.Array], jax.Array] | None
  f_takes_key: bool
  common_random_numbers: bool
  noise: noise_lib.NoiseTable | None
  batch_size: int | None

  @property
  def num_distinct(self) -> int:
    """M, the number of distinct directions."""
    return self.num_directions // 2 if self.antithetic else self.num_directions

  @property
  def per_direction_weights(self) -> bool:
    """Whether each direction's weight depends on its own values only (then chunks can be streamed)."""
    if self.shaping is not None:
      return False
    b = self.baseline
    return b is None or (b.name in ("none", "constant") and not b.inputs)


def _check_config(f, num_directions, scheme, baseline, directions, shaping, f_takes_key,
                  common_random_numbers, noise, batch_size) -> _Config:
  validation.check_callable(f, "f")
  n = validation.check_positive_int(num_directions, "num_directions")
  if scheme not in _SCHEMES:
    raise ValueError(f"`scheme` must be one of {sorted(_SCHEMES)}, got {scheme!r}.")
  scheme = _SCHEMES[scheme]
  if directions not in _DIRECTIONS:
    raise ValueError(f"`directions` must be one of {_DIRECTIONS}, got {directions!r}.")
  shaping_fn = shaping_lib.get_shaping(shaping, "shaping")
  for value, name in ((f_takes_key, "f_takes_key"), (common_random_numbers, "common_random_numbers")):
    if not isinstance(value, bool):
      raise TypeError(f"`{name}` must be a bool, got {value!r}.")
  if batch_size is not None:
    batch_size = validation.check_positive_int(batch_size, "batch_size")

  if baseline is None:
    baseline = {"plain": "none", "forward": "center", "antithetic": "none"}[scheme]
  center = isinstance(baseline, str) and baseline == "center"
  if scheme == "forward" and not center:
    raise ValueError("`baseline` must be None or 'center' with scheme='forward' (forward differences "
                     f"subtract f(x)); use scheme='plain' with baseline={baseline!r}.")
  if scheme == "antithetic" and not (isinstance(baseline, str) and baseline == "none"):
    raise ValueError("`baseline` must be None or 'none' with scheme='antithetic' (antithetic pairs "
                     f"cancel any constant), got {baseline!r}.")
  if scheme == "antithetic" and n % 2:
    raise ValueError(f"`num_directions` must be even with scheme='antithetic' (it counts both members of "
                     f"each pair), got {n}.")
  spec = None
  if scheme == "plain" and not center:
    spec = baselines_lib.get(baseline, num_samples=n, samples_name="num_directions", supports=("sq_norms",))
  if shaping_fn is not None:
    if center:
      raise ValueError("`shaping` cannot be combined with the f(x) baseline (scheme='forward' or "
                       "baseline='center'): f(x) has no rank among the population; use scheme='plain' "
                       "or 'antithetic'.")
    if n < 2:
      raise ValueError(f"`num_directions` must be >= 2 with shaping={shaping!r}, got {n}.")
  if noise is not None:
    if directions != "gaussian":
      raise ValueError(f"`noise` tables provide approximate Gaussian directions only; got "
                       f"directions={directions!r}.")
    noise_lib.check_table(noise, 1)
  return _Config(f, n, scheme == "antithetic", center, spec, directions, shaping_fn, f_takes_key,
                 common_random_numbers, noise, batch_size)


def _is_scalar(sigma: Any) -> bool:
  return jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(sigma)) and np.ndim(sigma) == 0


def _check_sigma(sigma: Any) -> None:
  """Construction-time checks of ``sigma``: a scalar or a pytree of positive values (traced ones pass)."""
  leaves = jax.tree_util.tree_leaves(sigma)
  if not leaves:
    raise ValueError(f"`sigma` must be a positive scalar or a pytree of positive values matching `params`, "
                     f"got {sigma!r}.")
  for leaf in leaves:
    validation.check_positive(leaf, "sigma")


def _sigma_vector(sigma: Any, params: PyTree, dtype: Any) -> jax.Array:
  """``sigma`` as a scalar array, or as a ``[d]`` vector aligned with ``ravel_pytree(params)``."""
  if _is_scalar(sigma):
    return jnp.asarray(sigma, dtype)

  def broadcast(s, sub):  # s: a leaf of sigma; sub: the matching subtree of params
    return jax.tree_util.tree_map(lambda p: jnp.broadcast_to(jnp.asarray(s), jnp.shape(p)), sub)

  try:
    tree = jax.tree_util.tree_map(broadcast, sigma, params)
  except (ValueError, TypeError) as e:
    raise ValueError(
        "`sigma` must be a positive scalar or a pytree with the structure of `params` (or a prefix of "
        "it) whose leaves broadcast to the matching leaves of `params`; got sigma structure "
        f"{jax.tree_util.tree_structure(sigma)} for params structure "
        f"{jax.tree_util.tree_structure(params)} ({str(e).splitlines()[0][:200]}).") from None
  return ravel_pytree(tree)[0].astype(dtype)


def _ravel_params(params: PyTree) -> tuple[jax.Array, Callable[[jax.Array], PyTree]]:
  leaves = jax.tree_util.tree_leaves(params)
  if not leaves:
    raise ValueError("`params` must contain at least one array.")
  for leaf in leaves:
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
      raise TypeError(f"`params` leaves must be floating, got dtype {jnp.result_type(leaf)}.")
  return ravel_pytree(params)


# ------------------------------------------------------------------------------------------ directions

def _compute_dtype(dtype: Any) -> Any:
  """float32 or wider: low-precision directions are drawn (and orthogonalised) in float32, then cast."""
  return jnp.promote_types(dtype, jnp.float32)


def _one_direction(key: jax.Array, kind: str, d: int, dtype: Any) -> jax.Array:
  """One ``[d]`` Gaussian or sphere direction from its own key."""
  z = jax.random.normal(key, (d,), _compute_dtype(dtype))
  if kind == "sphere":
    norm = jnp.linalg.norm(z)
    z = z * (np.sqrt(d) / jnp.where(norm > 0, norm, 1.0))
  return z.astype(dtype)


def _draw_directions(key: jax.Array, kind: str, m: int, d: int, dtype: Any) -> jax.Array:
  """``[m, d]`` directions with :math:`\\mathbb{E}[u u^\\top] = I` (see the module docstring).

  Direction ``i`` (Gaussian, sphere) comes from ``fold_in(key, i)`` and orthogonal block ``b`` from
  ``fold_in(key, b)``, so any subset of directions can be regenerated without drawing the others.
  """
  if kind in ("gaussian", "sphere"):
    return jax.vmap(lambda i: _one_direction(jax.random.fold_in(key, i), kind, d, dtype))(jnp.arange(m))
  if d == 0:
    return jnp.zeros((m, 0), dtype)
  # Orthogonal blocks: reduced QR of Gaussian [d, k] matrices with the sign of diag(R) fixed is
  # Haar-distributed on the Stiefel manifold (Mezzadri 2007). For Gaussian G = QR, Q is independent of R,
  # and the column norms of G (= those of R) are iid chi_d: they serve as the independent chi_d norms.
  k = min(m, d)
  nb = -(-m // k)
  cdtype = _compute_dtype(dtype)
  g = jax.vmap(lambda b: jax.random.normal(jax.random.fold_in(key, b), (d, k), cdtype))(jnp.arange(nb))
  q, r = jnp.linalg.qr(g)
  diag = jnp.diagonal(r, axis1=-2, axis2=-1)
  q = q * jnp.where(diag < 0, -1.0, 1.0).astype(cdtype)[:, None, :]
  rows = jnp.swapaxes(q, 1, 2).reshape(nb * k, d)[:m]
  if kind == "orthogonal":  # chi_d norms: each row marginally N(0, I_d)
    norms = jnp.linalg.norm(g, axis=1).reshape(nb * k)[:m]
  else:
    norms = jnp.full((m,), np.sqrt(d), cdtype)
  return (rows * norms[:, None]).astype(dtype)


class _Source(NamedTuple):
  """Where directions come from: ``get(items[i])`` is direction ``i`` (``[d]``)."""

  items: jax.Array                       # [M] indices or table offsets, or [M, d] materialised rows
  get: Callable[[jax.Array], jax.Array]
  table: jax.Array | None = None         # the noise table, when items are offsets into it


def _source(cfg: _Config, key: jax.Array, d: int, dtype: Any, materialise: bool) -> _Source:
  m = cfg.num_distinct
  if cfg.noise is not None:
    table = noise_lib.check_table(cfg.noise, d)  # never cast the whole table: cast each slice
    offsets = noise_lib.sample_offsets(key, table, m, d)
    return _Source(offsets, lambda o: jax.lax.dynamic_slice(table, (o,), (d,)).astype(dtype), table)
  if materialise or cfg.directions.startswith("orthogonal"):
    return _Source(_draw_directions(key, cfg.directions, m, d, dtype), lambda u: u)
  return _Source(jnp.arange(m), lambda i: _one_direction(jax.random.fold_in(key, i), cfg.directions, d, dtype))


# ------------------------------------------------------------------------------------------ evaluation

def _chunk_size(cfg: _Config, d: int, dtype: Any) -> int:
  bs = cfg.batch_size
  if bs is None:
    bs = utils.floor_power_of_two(_CHUNK_BYTES // (d * jnp.dtype(dtype).itemsize))
  return max(1, min(bs, cfg.num_distinct))


def _map_chunks(fn: Callable, xs: Any, bs: int) -> Any:
  """``vmap(fn)(xs)`` evaluated ``bs`` rows at a time (one ``vmap`` when ``bs`` covers all rows)."""
  m = jax.tree_util.tree_leaves(xs)[0].shape[0]
  if bs >= m:
    return jax.vmap(fn)(xs)
  return jax.lax.map(fn, xs, batch_size=bs)


def _scan_chunks(body: Callable, acc: Any, xs: Any, bs: int) -> tuple[Any, Any]:
  """``lax.scan`` of ``body(acc, chunk)`` over chunks of ``bs`` rows, then one smaller tail chunk."""
  m = jax.tree_util.tree_leaves(xs)[0].shape[0]
  full, rem = divmod(m, bs)
  head = jax.tree_util.tree_map(lambda a: a[:full * bs].reshape((full, bs) + a.shape[1:]), xs)
  acc, ys = jax.lax.scan(body, acc, head)
  ys = jax.tree_util.tree_map(lambda y: y.reshape((full * bs,) + y.shape[2:]), ys)
  if rem:
    acc, tail = body(acc, jax.tree_util.tree_map(lambda a: a[full * bs:], xs))
    ys = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), ys, tail)
  return acc, ys


def _make_evaluate(cfg: _Config, flat: jax.Array, unravel: Callable, sig: jax.Array, k_f: jax.Array):
  """``evaluate(u, keys) -> {"plus": f(x + sig u), ["minus": f(x - sig u)], ["sq": ||u / sig||^2]}``."""
  need_norms = cfg.baseline is not None and "sq_norms" in cfg.baseline.inputs
  # ||u / sigma||^2 up to a factor common to all directions (it cancels in the optimal baselines): with
  # sigma_max / sigma instead of 1 / sigma nothing overflows, even for tiny sigma; a scalar sigma gives ||u||^2.
  inv = None if sig.ndim == 0 else jnp.max(sig) / sig

  def f_at(k, theta):
    out = jnp.asarray(cfg.f(k, unravel(theta)) if cfg.f_takes_key else cfg.f(unravel(theta)))
    if out.shape != ():
      raise ValueError(f"`f` must return a scalar, got shape {out.shape}.")
    return out

  def evaluate(u, keys):
    kp = k_f if keys is None else (keys[0] if cfg.antithetic else keys)
    out = {"plus": f_at(kp, flat + sig * u)}
    if cfg.antithetic:
      out["minus"] = f_at(k_f if keys is None else keys[1], flat - sig * u)
    if need_norms:
      uu = u if inv is None else u * inv
      out["sq"] = jnp.sum(jnp.square(uu.astype(_compute_dtype(uu.dtype))))
    return out

  return evaluate, f_at


def _eval_keys(cfg: _Config, k_f: jax.Array) -> tuple[jax.Array | None, jax.Array]:
  """Keys of ``f``: ``(per-direction keys or None for common random numbers, key of f(x))``."""
  if not (cfg.f_takes_key and not cfg.common_random_numbers):
    return None, k_f
  n, m = cfg.num_directions, cfg.num_distinct
  keys = jax.random.split(k_f, n + 1)
  per = keys[:n].reshape((m, 2) + keys.shape[1:]) if cfg.antithetic else keys[:n]
  return per, keys[n]


def _values(cfg: _Config, outs: dict, dtype: Any) -> jax.Array:
  plus = outs["plus"]
  rdtype = jnp.result_type(plus.dtype, dtype) if jnp.issubdtype(plus.dtype, jnp.floating) else dtype
  parts = [outs["plus"], outs["minus"]] if cfg.antithetic else [outs["plus"]]
  return jnp.concatenate([p.astype(rdtype) for p in parts])


def _baselines(cfg: _Config, fit: jax.Array, b0: jax.Array | None, sq: jax.Array | None = None) -> jax.Array:
  """The baseline of each evaluation ``[N]``: 0 for antithetic pairs, :math:`f(x)` for forward differences
  (``b0``), else the resolved ``baseline=``."""
  if cfg.antithetic:
    return jnp.zeros_like(fit)
  if cfg.center:
    return jnp.broadcast_to(b0.astype(fit.dtype), fit.shape)
  return cfg.baseline(fit, sq_norms=sq)


def _weights(cfg: _Config, fit: jax.Array, sq: jax.Array | None, b0: jax.Array | None
             ) -> tuple[jax.Array, jax.Array]:
  """``(baselines [N], weights [M])`` from the ``N`` (shaped) values ``fit`` (antithetic: the ``M`` values at
  ``x + sigma u``, then the ``M`` at ``x - sigma u``); the gradient is ``sum_i w_i u_i / sigma``."""
  n, m = cfg.num_directions, cfg.num_distinct
  b = _baselines(cfg, fit, b0, sq)
  if cfg.antithetic:
    return b, (fit[:m] - fit[m:]) / n
  if cfg.center:
    return b, (fit - b) / n
  return b, cfg.baseline.weights(fit, sq_norms=sq) / n


# ------------------------------------------------------------------------------------------ the two paths

def _estimate_streamed(cfg: _Config, source: _Source, evaluate: Callable, keys: Any, b0: Any, bs: int,
                       d: int, dtype: Any) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Per-direction weights: draw, evaluate, weight and accumulate chunk by chunk (no ``[M, d]`` array).

  Table slices are taken one at a time (``batch_size`` does not apply): gathering a chunk of slices would
  copy them; one fused pass reads each slice once.
  """
  n, acc_dtype = cfg.num_directions, _compute_dtype(dtype)

  def chunk_weights(outs):  # on this path a direction's weight depends on its own values only
    plus = outs["plus"]
    if cfg.antithetic:
      return (plus - outs["minus"]) / n
    return (plus - _baselines(cfg, plus, b0)) / n  # f(x), "none" or a constant

  def body(acc, chunk):
    items, ks = chunk
    u = jax.vmap(source.get)(items)
    outs = jax.vmap(evaluate)(u, ks)
    w = chunk_weights(outs)
    acc = acc + jnp.dot(w.astype(acc_dtype), u.astype(acc_dtype), precision=jax.lax.Precision.HIGHEST)
    return acc, outs

  def body_slice(acc, item):  # one table slice at a time: read once, evaluated and added while in cache
    o, ks = item
    u = source.get(o)
    outs = evaluate(u, ks)
    w = chunk_weights(jax.tree_util.tree_map(lambda v: v[None], outs))[0]  # baselines take [..., N]
    return acc + w.astype(acc_dtype) * u.astype(acc_dtype), outs

  acc0 = jnp.zeros((d,), acc_dtype)
  if source.table is not None:
    m = source.items.shape[0]
    acc, outs = jax.lax.scan(body_slice, acc0, (source.items, keys), unroll=min(4, m))
  else:
    acc, outs = _scan_chunks(body, acc0, (source.items, keys), bs)
  values = _values(cfg, outs, dtype)
  return acc, values, values, _baselines(cfg, values, b0)


def _estimate_batched(cfg: _Config, source: _Source, evaluate: Callable, keys: Any, b0: Any, bs: int,
                      d: int, dtype: Any) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Batch-dependent weights (shaping, in-batch baselines): evaluate in chunks, weight, then accumulate."""
  acc_dtype = _compute_dtype(dtype)
  outs = _map_chunks(lambda x: evaluate(source.get(x[0]), x[1]), (source.items, keys), bs)
  values = _values(cfg, outs, dtype)
  fit = values
  if cfg.shaping is not None:
    fit = jnp.asarray(cfg.shaping(values))
    if fit.shape != values.shape:
      raise ValueError(f"`shaping` must map values [N] to shaped values [N]; for N = {values.shape[0]} it "
                       f"returned shape {fit.shape}.")
    fit = fit.astype(jnp.result_type(fit.dtype, values.dtype))
  b, w = _weights(cfg, fit, outs.get("sq"), b0)
  if source.table is not None:
    acc = noise_lib.weighted_slice_sum(source.table, source.items, w, d)
    return acc.astype(acc_dtype), values, fit, b
  acc = jnp.dot(w.astype(acc_dtype), source.items.astype(acc_dtype), precision=jax.lax.Precision.HIGHEST)
  return acc, values, fit, b


# ------------------------------------------------------------------------------------------ the factory

def zeroth_order(
    f: Callable[..., jax.Array],
    *,
    num_directions: int,
    sigma: Any,
    scheme: str = "forward",
    baseline: Any = None,
    directions: str = "gaussian",
    shaping: str | Callable[[jax.Array], jax.Array] | None = None,
    f_takes_key: bool = False,
    common_random_numbers: bool = True,
    noise: noise_lib.NoiseTable | None = None,
    batch_size: int | None = None,
) -> Callable[[jax.Array, PyTree], tuple[PyTree, ZerothOrderAux]]:
  r"""Builds a zeroth-order estimator ``(key, params) -> (grads, aux)`` of :math:`\nabla f_\sigma`.

  The estimand is :math:`\nabla_x \mathbb{E}_{u\sim\mathcal{N}(0, I)}[f(x + \sigma\odot u)]` (for
  ``directions="gaussian"`` or ``"orthogonal"``; the sphere kinds estimate the ball-smoothed gradient). See
  the module docstring for the estimators, their bias and their variance.

  Args:
    f: ``f(params) -> scalar`` (or ``f(key, params)`` with ``f_takes_key``), where ``params`` has the
      structure of the estimator's ``params``. Need not be differentiable.
    num_directions: ``N``, the number of evaluations at perturbed points (static); even for antithetic
      pairs, which use ``N/2`` distinct directions.
    sigma: smoothing scale :math:`\sigma > 0`: a scalar, or a pytree with the structure of ``params`` (or a
      prefix of it) whose leaves are scalars or arrays broadcastable to the matching leaves of ``params``
      (one scale per parameter group or per coordinate). It may be traced (``jax.vmap`` over a grid of
      sigmas compiles once) and differentiated; only concrete values are checked.
    scheme: ``"forward"`` (default; :math:`b = f(x)`), ``"plain"`` or ``"antithetic"``/``"central"``.
    baseline: for ``"plain"``: ``"none"`` (default), ``"center"`` (:math:`f(x)`), ``"mean"``,
      ``"leave_one_out"``, ``"optimal"``, ``"optimal_leave_one_out"``, a number, a callable
      ``b(values [N]) -> [N]`` or a :class:`pgjax.baselines.Baseline` (see :func:`pgjax.baselines.get`).
      ``None`` picks the scheme's own (none / f(x) / none).
    directions: ``"gaussian"``, ``"sphere"``, ``"orthogonal"`` or ``"orthogonal_sphere"``.
    shaping: ``None``, ``"centered_ranks"``, ``"nes_utilities"``, ``"zscore"`` or a callable
      ``[N] -> [N]`` (see :mod:`pgjax.shaping`; every shaping changes the estimand).
    f_takes_key: whether ``f`` is stochastic and takes a key first.
    common_random_numbers: with ``f_takes_key``, use one key for all evaluations of an estimate
      (default) instead of one key each.
    noise: ``None`` (fresh ``jax.random`` directions) or a shared :class:`~pgjax._src.noise.NoiseTable`
      (approximate Gaussian directions; requires ``directions="gaussian"``).
    batch_size: evaluate ``f`` over the directions in chunks of this many (bounds memory). Default: the
      largest power of two of directions that fits in 2 MiB (``d * itemsize`` bytes each; all of them when
      they fit). The same key gives the same directions and the same estimate (up to floating-point
      reassociation) whatever the chunking.

  Returns:
    ``estimator(key, params) -> (grads, aux)`` with ``grads`` shaped and typed like ``params`` and ``aux``
    a :class:`ZerothOrderAux`. ``key`` is a typed (``jax.random.key``) or legacy raw key.

  Raises:
    TypeError / ValueError: naming the argument, for a non-callable ``f``, a ``num_directions`` < 1 (< 2
      for leave-one-out baselines and shaping; odd for antithetic pairs), a non-positive concrete
      ``sigma`` or one that does not match ``params``, an invalid ``key``, unknown
      scheme/baseline/directions/shaping, or an incompatible combination.
  """
  cfg = _check_config(f, num_directions, scheme, baseline, directions, shaping, f_takes_key,
                      common_random_numbers, noise, batch_size)
  _check_sigma(sigma)

  def estimator(key: jax.Array, params: PyTree) -> tuple[PyTree, ZerothOrderAux]:
    key = validation.as_key(key, "key")
    flat, unravel = _ravel_params(params)
    d, dtype = flat.shape[0], flat.dtype
    acc_dtype = _compute_dtype(dtype)
    sig = _sigma_vector(sigma, params, dtype)
    k_dir, k_f = jax.random.split(key)
    streamed = cfg.per_direction_weights
    source = _source(cfg, k_dir, d, dtype, materialise=not streamed)
    evaluate, f_at = _make_evaluate(cfg, flat, unravel, sig, k_f)
    keys, center_key = _eval_keys(cfg, k_f)
    b0 = f_at(center_key, flat) if cfg.center else None
    run = _estimate_streamed if streamed else _estimate_batched
    acc, values, fit, b = run(cfg, source, evaluate, keys, b0, _chunk_size(cfg, d, dtype), d, dtype)
    grads = unravel((acc / sig.astype(acc_dtype)).astype(dtype))
    nonfinite = shaping_lib.num_nonfinite(values)
    if b0 is not None:
      nonfinite = nonfinite + (~jnp.isfinite(b0)).astype(jnp.int32)
    aux = ZerothOrderAux(
        values=values,
        fitness=fit,
        baselines=b,
        num_evaluations=jnp.asarray(cfg.num_directions + int(cfg.center), jnp.int32),
        estimand_changed=jnp.asarray(cfg.shaping is not None),
        num_nonfinite=nonfinite,
    )
    return grads, aux

  return estimator


# ------------------------------------------------------------------------------------------ closed form

def quadratic_trace_covariance(a_mat: Any, c_vec: Any, x: Any, *, sigma: float, num_directions: int,
                               scheme: str = "forward", directions: str = "gaussian", offset: float = 0.0,
                               baseline: float | None = None) -> float:
  r"""Closed-form total variance :math:`\operatorname{tr}\operatorname{Cov}[\hat g]` of :func:`zeroth_order` on a quadratic.

  A reference for tests and figures, computed in float64 NumPy, independent of the estimator's code. It
  covers a scalar :math:`\sigma`, the schemes ``"plain"`` (with a constant baseline :math:`b`, default 0),
  ``"forward"`` and ``"antithetic"``, and the four direction kinds.

  **Derivation.** For :math:`f(x) = \tfrac12 x^\top A x + c^\top x + e` (:math:`A` symmetric,
  :math:`e` = ``offset``) with gradient :math:`g = Ax + c`, a perturbation is exact to second order:
  :math:`f(x + \sigma u) = f(x) + \sigma g^\top u + \tfrac{\sigma^2}{2} u^\top A u`. With
  :math:`c_0 = f(x) - b` (``"plain"``) or :math:`c_0 = 0` (``"forward"``), one direction gives
  :math:`\hat g_1 = (c_0/\sigma + g^\top u + \tfrac\sigma2 u^\top A u)\,u`, whose mean is :math:`g`. Odd
  moments of :math:`u` vanish, and the Gaussian moments (Isserlis' theorem)
  :math:`\mathbb{E}\|u\|^2 = d`, :math:`\mathbb{E}[(g^\top u)^2\|u\|^2] = (d+2)\|g\|^2`,
  :math:`\mathbb{E}[u^\top A u\,\|u\|^2] = (d+2)\operatorname{tr}A`,
  :math:`\mathbb{E}[(u^\top A u)^2\|u\|^2] = (d+4)\big((\operatorname{tr}A)^2 + 2\operatorname{tr}A^2\big)`
  give

  .. math::

     V_1 = \frac{c_0^2 d}{\sigma^2} + (d+1)\|g\|^2 + c_0 (d+2)\operatorname{tr}A
           + \frac{\sigma^2}{4}(d+4)\big((\operatorname{tr}A)^2 + 2\operatorname{tr}A^2\big).

  For directions uniform on the sphere of radius :math:`\sqrt d` (:math:`\|u\|^2 = d`,
  :math:`\mathbb{E}[(u^\top A u)^2] = d((\operatorname{tr}A)^2 + 2\operatorname{tr}A^2)/(d+2)`):
  :math:`V_1 = \frac{d c_0^2}{\sigma^2} + (d-1)\|g\|^2 + d c_0\operatorname{tr}A
  + \frac{\sigma^2}{4}\frac{d^2}{d+2}\big((\operatorname{tr}A)^2 + 2\operatorname{tr}A^2\big)`.
  An antithetic pair gives exactly :math:`(g^\top u)\,u`: :math:`V_1 = (d+1)\|g\|^2` (sphere:
  :math:`(d-1)\|g\|^2`). With :math:`M` iid directions (pairs for ``"antithetic"``, where
  ``num_directions`` counts evaluations) the total variance is :math:`V_1/M`. Orthogonal directions in
  blocks of sizes :math:`k_b = \min(M, d)` have cross terms
  :math:`\mathbb{E}[\hat g_i^\top \hat g_j] - \|g\|^2 = -\|g\|^2` within a block (the directions are
  orthogonal, so only the product of their means survives), which subtracts
  :math:`\|g\|^2\sum_b k_b(k_b-1)/M^2`.

  References: Nesterov & Spokoiny (2017), Section 3 (moments of Gaussian smoothing); Choromanski et al.
  (2018), orthogonal directions.

  Args:
    a_mat: ``[d, d]`` symmetric matrix :math:`A`.
    c_vec: ``[d]`` vector :math:`c`.
    x: ``[d]`` point at which the gradient is estimated.
    sigma: the scalar smoothing scale.
    num_directions: ``N`` as given to :func:`zeroth_order`.
    scheme: ``"plain"``, ``"forward"`` or ``"antithetic"``.
    directions: ``"gaussian"``, ``"sphere"``, ``"orthogonal"`` or ``"orthogonal_sphere"``.
    offset: the constant :math:`e` (matters for ``"plain"`` only).
    baseline: the constant baseline :math:`b` of ``"plain"`` (``None`` = 0).

  Returns:
    :math:`\operatorname{tr}\operatorname{Cov}[\hat g]` as a Python float.
  """
  if scheme not in ("plain", "forward", "antithetic"):
    raise ValueError(f"`scheme` must be 'plain', 'forward' or 'antithetic', got {scheme!r}.")
  if directions not in _DIRECTIONS:
    raise ValueError(f"`directions` must be one of {_DIRECTIONS}, got {directions!r}.")
  a_mat, c_vec, x = (np.asarray(v, np.float64) for v in (a_mat, c_vec, x))
  d = x.shape[0]
  g = a_mat @ x + c_vec
  g2 = g @ g
  tr, tr2 = np.trace(a_mat), np.trace(a_mat @ a_mat)
  sphere = directions in ("sphere", "orthogonal_sphere")
  if scheme == "antithetic":
    m = num_directions // 2
    v1 = (d - 1) * g2 if sphere else (d + 1) * g2
  else:
    m = num_directions
    f0 = 0.5 * x @ a_mat @ x + c_vec @ x + offset
    c0 = 0.0 if scheme == "forward" else f0 - (0.0 if baseline is None else baseline)
    if sphere:
      v1 = (d * c0 ** 2 / sigma ** 2 + (d - 1) * g2 + d * c0 * tr
            + sigma ** 2 / 4 * d ** 2 / (d + 2) * (tr ** 2 + 2 * tr2))
    else:
      v1 = (c0 ** 2 * d / sigma ** 2 + (d + 1) * g2 + c0 * (d + 2) * tr
            + sigma ** 2 / 4 * (d + 4) * (tr ** 2 + 2 * tr2))
  total = v1 / m
  if directions.startswith("orthogonal"):
    k = min(m, d)
    sizes = [k] * (m // k) + ([m % k] if m % k else [])
    total -= g2 * sum(s * (s - 1) for s in sizes) / m ** 2
  return float(total)
