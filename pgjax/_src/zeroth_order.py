r"""Zeroth-order (Gaussian-smoothing / evolution-strategies) gradient estimators.

For a function :math:`f` of a parameter vector :math:`x \in \mathbb{R}^d` (any
pytree, flattened with :func:`jax.flatten_util.ravel_pytree`) and a smoothing
scale :math:`\sigma > 0`, the **Gaussian-smoothed objective** is

.. math::

   f_\sigma(x) = \mathbb{E}_{u \sim \mathcal{N}(0, I_d)}[f(x + \sigma u)],
   \qquad
   \nabla f_\sigma(x) = \frac{1}{\sigma}\,\mathbb{E}_u[(f(x + \sigma u) - b)\, u]

for any :math:`b` independent of :math:`u` (because :math:`\mathbb{E}[u] = 0`).
:math:`f` need not be differentiable (an argmax accuracy, an episode return).
When it is, :math:`\nabla f_\sigma \to \nabla f` as :math:`\sigma \to 0`
(seed 003, Su 2020). **The estimand is** :math:`\nabla f_\sigma`, not
:math:`\nabla f`: e.g. for :math:`f(x) = \sum_k \sin x_k`,
:math:`\nabla f_\sigma(x) = \cos(x)\, e^{-\sigma^2/2}`; for a quadratic the two
coincide. Sign: the estimate is the gradient of :math:`f_\sigma` itself (an
ascent direction when :math:`f` is a reward); negate it for a loss.

Schemes (``N = num_directions`` function evaluations at perturbed points):

* ``"plain"``: :math:`\hat g = \frac{1}{N\sigma}\sum_i (f(x + \sigma u_i) - b_i) u_i`
  with a ``baseline`` (default none, :math:`b = 0`).
* ``"forward"``: forward differences, :math:`b = f(x)`; costs :math:`N + 1`
  evaluations (same as ``"plain"`` with ``baseline="center"``).
* ``"antithetic"`` (alias ``"central"``): :math:`N/2` directions each evaluated at
  :math:`x \pm \sigma u`:
  :math:`\hat g = \frac{1}{(N/2)}\sum_p \frac{f(x + \sigma u_p) - f(x - \sigma u_p)}{2\sigma} u_p`.
  Any constant cancels, so no baseline is needed; ``N`` must be even.

Baselines for the one-sided schemes (seed 003; ``s_i`` the values after shaping):

* ``"none"``: :math:`b = 0`. ``"center"``: :math:`b = f(x)` (one more evaluation).
* ``"mean"``: :math:`b = \bar s` including :math:`i`. **Biased**: exactly
  :math:`\frac{N-1}{N}` times the leave-one-out estimate, so its mean is
  :math:`\frac{N-1}{N}\nabla f_\sigma`.
* ``"leave_one_out"``: :math:`b_i = \frac{1}{N-1}\sum_{j\ne i} s_j`; unbiased (needs
  :math:`N \ge 2`).
* ``"optimal"``: the variance-optimal constant
  :math:`b^\star = \mathbb{E}[f(x + \sigma u)\|u\|^2] / \mathbb{E}[\|u\|^2]`
  estimated in-batch, :math:`\sum_j s_j\|u_j\|^2 / \sum_j \|u_j\|^2`: biased by
  :math:`O(1/N)` because it uses :math:`s_i` itself.
* ``"optimal_leave_one_out"``: the same ratio without sample :math:`i`; unbiased.
* a number: a constant :math:`b` (may be traced).

For sphere directions :math:`\|u\|^2 = d` is constant and the optimal baseline
equals the mean baseline.

Directions (all with :math:`\mathbb{E}[u u^\top] = I`):

* ``"gaussian"``: iid :math:`\mathcal{N}(0, I_d)`; unbiased for :math:`\nabla f_\sigma`.
* ``"sphere"``: uniform on the sphere of radius :math:`\sqrt d`. Unbiased for the
  gradient of the *ball*-smoothed objective
  :math:`\mathbb{E}_{w \sim \mathrm{Unif}(B_1)}[f(x + \sigma\sqrt d\, w)]` (Flaxman
  et al. 2005), which differs from :math:`f_\sigma` except on quadratics, where
  both equal :math:`\nabla f` exactly.
* ``"orthogonal"``: blocks of :math:`\min(M, d)` exactly orthogonal directions
  (rows of a Haar-random orthogonal matrix), each scaled by an independent
  :math:`\chi_d` norm, so every direction is marginally :math:`\mathcal{N}(0,
  I_d)`: **unbiased** for :math:`\nabla f_\sigma` (orthogonal Monte Carlo,
  Choromanski et al. 2018). Costs a QR of a ``[d, min(M, d)]`` matrix per block.
* ``"orthogonal_sphere"``: the same rows with fixed norms :math:`\sqrt d`:
  marginally uniform on the sphere, hence unbiased for the ball-smoothed gradient
  (biased for :math:`\nabla f_\sigma` beyond quadratics).

Variance (derived in the module tests and ``experiments/zo_variance.py``): on a
quadratic :math:`f(x) = \tfrac12 x^\top A x + c^\top x + e` with gradient
:math:`g` and :math:`c_0 = f(x) - b` for a constant :math:`b`, one Gaussian
direction gives

.. math::

   \operatorname{tr}\operatorname{Cov} = \frac{c_0^2 d}{\sigma^2} + (d+1)\|g\|^2
   + c_0 (d+2)\operatorname{tr}A
   + \frac{\sigma^2}{4}(d+4)\big((\operatorname{tr}A)^2 + 2\operatorname{tr}A^2\big),

one antithetic pair :math:`(d+1)\|g\|^2` (sphere: :math:`(d-1)\|g\|^2`), and
orthogonal coupling subtracts
:math:`\|\nabla\|^2 \sum_{\text{blocks}} k_b(k_b-1) / M^2` from the iid value
:math:`V_1/M` for *any* :math:`f` (cross terms of orthogonal directions are
:math:`-\|\nabla\|^2`).

Fitness shaping (``shaping=``) replaces the values by centered ranks in
:math:`[-\frac12, \frac12]` (ties share their average rank; OpenAI-ES) or by
z-scores :math:`(f - \bar f)/\mathrm{std}(f)` (0 when all values are equal).
**Either changes the estimand**: the result is no longer an unbiased estimate
of :math:`\nabla f_\sigma` (not even up to scale in general); ``aux.estimand_changed``
is ``True``.

Noise source (``noise=``): ``None`` draws fresh directions with ``jax.random``;
a :class:`~pgjax._src.noise.NoiseTable` uses slices of a shared table at random
offsets (an approximation of iid Gaussian directions, see
:mod:`pgjax._src.noise`). With a table, the ``[M, d]`` population is never
materialised: with per-direction weights (no shaping; baseline none, center or
a constant; antithetic pairs) one ``lax.scan`` evaluates, weights and adds each
slice while it is in cache; otherwise function evaluations run in chunks of
``batch_size`` directions and the gradient is the matvec
:math:`\sum_i w_i T[o_i:o_i+d]` accumulated slice by slice. Note that a table closed over by a jitted function is a large
constant: the first compilation takes ~2 s for the default 128 MiB table.

Performance (``experiments/benchmarks/zo_vs_evosax.py``, this project's shared 2-core CPU, P = 256,
sphere function, one generation including an optax step, medians of interleaved repeats over several
runs): with fresh Gaussian directions pgjax takes 0.4-0.5x (d = 10), 0.84-0.94x (d = 1e3) and 0.38-0.54x
(d = 1e5) the time of evosax's ``Open_ES`` (streamed chunks, see ``batch_size``); with the noise table it
is 17-38x faster than evosax at d = 1e5, about 2x the time of reading the P table slices and 2.6-3.7x the
time of reading an already materialised ``[P, d]`` population (which XLA reduces with a dot).

Stochastic :math:`f` (``f_takes_key=True``, called as ``f(key, params)``): with
``common_random_numbers=True`` (default) every evaluation of one estimate uses
the same key, so noise common to all evaluations cancels in the differences;
the estimate stays unbiased for :math:`\nabla_x \mathbb{E}_\xi[f_\sigma(x, \xi)]`.

Why hand-written: optax removed ``optax.monte_carlo`` and never had
zeroth-order estimators; evosax (0.3) ships ES *strategies* on flat vectors with
ask/tell state, not a pure estimator over pytrees with baselines, orthogonal
directions, a traced :math:`\sigma`, and evaluation counts.

References:
  J. Su, "Policy gradient and zeroth-order optimisation reach the same place",
  2020. https://kexue.fm/archives/7737 (seed 003).
  Y. Nesterov, V. Spokoiny, "Random Gradient-Free Minimization of Convex
  Functions", 2017. https://doi.org/10.1007/s10208-015-9296-2
  T. Salimans et al., "Evolution Strategies as a Scalable Alternative to
  Reinforcement Learning", 2017. https://arxiv.org/abs/1703.03864
  K. Choromanski et al., "Structured Evolution with Compact Architectures for
  Scalable Policy Optimization", 2018. https://arxiv.org/abs/1804.02395
  A. Flaxman, A. Kalai, H. McMahan, "Online convex optimization in the bandit
  setting", 2005. https://arxiv.org/abs/cs/0408007
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from pgjax._src import noise as noise_lib

__all__ = ("ZerothOrderAux", "zeroth_order", "centered_ranks", "zscore")

_SCHEMES = {"plain": "plain", "forward": "forward", "antithetic": "antithetic", "central": "antithetic"}
_DIRECTIONS = ("gaussian", "sphere", "orthogonal", "orthogonal_sphere")
_BASELINES = ("none", "center", "mean", "leave_one_out", "optimal", "optimal_leave_one_out")
_SHAPINGS = (None, "centered_ranks", "zscore")
_CHUNK, _CHUNK_MIN_DIM = 16, 512  # default evaluation chunking (see ``batch_size``)


class ZerothOrderAux(NamedTuple):
  """Auxiliary output of a zeroth-order estimate.

  Attributes:
    values: ``[N]`` values of ``f`` at the perturbed points. For antithetic pairs
      the first ``N/2`` are at :math:`x + \\sigma u_p`, the last ``N/2`` at
      :math:`x - \\sigma u_p`.
    fitness: ``[N]`` the values after shaping (equal to ``values`` without shaping).
    baselines: ``[N]`` the baseline subtracted from each fitness (zeros for
      antithetic pairs and ``baseline="none"``; ``f(x)`` for forward differences).
    num_evaluations: int32 scalar, the number of evaluations of ``f`` spent
      (``N``, plus one when ``f(x)`` is evaluated).
    estimand_changed: bool scalar, ``True`` when fitness shaping changed what is
      estimated (the estimate is then not unbiased for the smoothed gradient).
  """

  values: jax.Array
  fitness: jax.Array
  baselines: jax.Array
  num_evaluations: jax.Array
  estimand_changed: jax.Array


def centered_ranks(x: jax.Array) -> jax.Array:
  r"""Centered ranks in :math:`[-\frac12, \frac12]`; tied values share their average rank.

  :math:`r_i = \frac{\mathrm{rank}_i}{N - 1} - \frac12` with 0-based ranks, so the
  smallest value maps to :math:`-\frac12` and the largest to :math:`\frac12`; all
  equal values map to 0. ``N = 1`` gives 0. Shape ``[N] -> [N]``.
  """
  x = jnp.asarray(x)
  n = x.shape[0]
  if n < 2:
    return jnp.zeros_like(x)
  s = jnp.sort(x)
  lo = jnp.searchsorted(s, x, side="left")
  hi = jnp.searchsorted(s, x, side="right")
  rank = 0.5 * (lo + hi - 1).astype(x.dtype)
  return rank / (n - 1) - 0.5


def zscore(x: jax.Array) -> jax.Array:
  r""":math:`(x - \bar x) / \mathrm{std}(x)` (population std); all zeros when ``std == 0``. ``[N] -> [N]``."""
  x = jnp.asarray(x)
  c = x - jnp.mean(x)
  std = jnp.sqrt(jnp.mean(c * c))
  safe = jnp.where(std > 0, std, jnp.ones_like(std))
  return jnp.where(std > 0, c / safe, jnp.zeros_like(c))


def _is_concrete(x: Any) -> bool:
  if isinstance(x, (numbers.Number, np.ndarray, np.generic)):
    return True
  return isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)


def _check_sigma(sigma: Any) -> None:
  if np.ndim(sigma) != 0:
    raise ValueError(f"`sigma` must be a scalar, got shape {np.shape(sigma)}.")
  if _is_concrete(sigma):
    s = np.asarray(sigma)
    if not np.issubdtype(s.dtype, np.number) or s.dtype == np.bool_:
      raise TypeError(f"`sigma` must be a real number, got {sigma!r}.")
    if not (np.isfinite(s) and s > 0):
      raise ValueError(f"`sigma` must be finite and > 0, got {sigma!r}.")


def _draw_directions(key: jax.Array, kind: str, m: int, d: int, dtype: Any) -> jax.Array:
  """``[m, d]`` directions with E[u u^T] = I (see module docstring)."""
  if kind == "gaussian":
    return jax.random.normal(key, (m, d), dtype)
  if kind == "sphere":
    z = jax.random.normal(key, (m, d), dtype)
    return z * (jnp.sqrt(jnp.asarray(d, dtype)) / jnp.linalg.norm(z, axis=1, keepdims=True))
  # Orthogonal blocks: reduced QR of Gaussian [d, k] matrices with the sign of diag(R) fixed is
  # Haar-distributed on the Stiefel manifold (Mezzadri 2007).
  # For Gaussian G = QR, Q is independent of R, and the column norms of G (= those of R) are iid chi_d:
  # they serve as the independent chi_d norms for free (no gamma sampler, which is slow to compile).
  k = min(m, d)
  nb = -(-m // k)
  g = jax.random.normal(key, (nb, d, k), dtype)
  q, r = jnp.linalg.qr(g)
  diag = jnp.diagonal(r, axis1=-2, axis2=-1)
  q = q * jnp.where(diag < 0, -1.0, 1.0).astype(dtype)[:, None, :]
  rows = jnp.swapaxes(q, 1, 2).reshape(nb * k, d)[:m]
  if kind == "orthogonal":  # chi_d norms: each row marginally N(0, I_d)
    norms = jnp.linalg.norm(g, axis=1).reshape(nb * k)[:m]
  else:
    norms = jnp.full((m,), np.sqrt(d), dtype)
  return rows * norms[:, None]


def zeroth_order(
    f: Callable[..., jax.Array],
    *,
    num_directions: int,
    sigma: Any,
    scheme: str = "forward",
    baseline: str | float | None = None,
    directions: str = "gaussian",
    shaping: str | None = None,
    f_takes_key: bool = False,
    common_random_numbers: bool = True,
    noise: noise_lib.NoiseTable | None = None,
    batch_size: int | None = None,
) -> Callable[[jax.Array, Any], tuple[Any, ZerothOrderAux]]:
  r"""Builds a zeroth-order estimator ``(key, params) -> (grads, aux)`` of :math:`\nabla f_\sigma`.

  See the module docstring for the estimators, their bias and their variance.

  Args:
    f: ``f(params) -> scalar`` (or ``f(key, params)`` with ``f_takes_key``), where
      ``params`` has the structure of the estimator's ``params``. Need not be
      differentiable.
    num_directions: ``N``, the number of evaluations at perturbed points (static);
      even for antithetic pairs, which use ``N/2`` distinct directions.
    sigma: smoothing scale :math:`\sigma > 0`, a scalar. It may be a traced value
      (e.g. ``jax.vmap`` over a grid of sigmas compiles once); it is checked
      only when concrete.
    scheme: ``"forward"`` (default; :math:`b = f(x)`), ``"plain"`` or
      ``"antithetic"``/``"central"``.
    baseline: for ``"plain"``: ``"none"`` (default), ``"center"``, ``"mean"``,
      ``"leave_one_out"``, ``"optimal"``, ``"optimal_leave_one_out"`` or a number.
      ``None`` picks the scheme's own (none / f(x) / none).
    directions: ``"gaussian"``, ``"sphere"``, ``"orthogonal"`` or ``"orthogonal_sphere"``.
    shaping: ``None``, ``"centered_ranks"`` or ``"zscore"`` (changes the estimand).
    f_takes_key: whether ``f`` is stochastic and takes a key first.
    common_random_numbers: with ``f_takes_key``, use one key for all evaluations
      of an estimate (default) instead of one key each.
    noise: ``None`` (fresh ``jax.random`` directions) or a shared
      :class:`~pgjax._src.noise.NoiseTable` (approximate Gaussian directions;
      requires ``directions="gaussian"``).
    batch_size: evaluate ``f`` over the directions in chunks of this many with
      ``lax.map`` instead of one ``vmap`` (bounds memory). Default: chunks of 16
      when ``d >= 512`` with a noise table or on the CPU backend (faster there,
      measured), else one ``vmap``. With fresh Gaussian/sphere directions and
      per-direction weights (no shaping; baseline none, center or a constant;
      antithetic pairs), chunks are *streamed*: drawn from per-chunk keys,
      evaluated and accumulated one at a time, so the ``[M, d]`` population is
      never formed (1.9x faster at d = 1e5 here); the estimate then differs from
      the unchunked one for the same key (same distribution). Otherwise chunking
      gives the same result as one ``vmap``.

  Returns:
    ``estimator(key, params) -> (grads, aux)`` with ``grads`` shaped and typed
    like ``params`` and ``aux`` a :class:`ZerothOrderAux`.

  Raises:
    TypeError / ValueError: naming the argument, for a non-callable ``f``, a
      ``num_directions`` < 1 (< 2 for leave-one-out baselines and shaping; odd for
      antithetic pairs), a non-positive concrete ``sigma``, unknown
      scheme/baseline/directions/shaping, or an incompatible combination.
  """
  if not callable(f):
    raise TypeError(f"`f` must be callable, got {type(f).__name__}.")
  if isinstance(num_directions, bool) or not isinstance(num_directions, (int, np.integer)):
    raise TypeError(f"`num_directions` must be an integer, got {num_directions!r}.")
  num_directions = int(num_directions)
  if num_directions < 1:
    raise ValueError(f"`num_directions` must be >= 1, got {num_directions}.")
  _check_sigma(sigma)
  if scheme not in _SCHEMES:
    raise ValueError(f"`scheme` must be one of {sorted(_SCHEMES)}, got {scheme!r}.")
  scheme = _SCHEMES[scheme]
  if directions not in _DIRECTIONS:
    raise ValueError(f"`directions` must be one of {_DIRECTIONS}, got {directions!r}.")
  if shaping not in _SHAPINGS:
    raise ValueError(f"`shaping` must be one of {_SHAPINGS}, got {shaping!r}.")

  const_baseline = None
  if baseline is None:
    baseline = {"plain": "none", "forward": "center", "antithetic": "none"}[scheme]
  elif isinstance(baseline, str):
    if baseline not in _BASELINES:
      raise ValueError(f"`baseline` must be one of {_BASELINES} or a number, got {baseline!r}.")
  elif callable(baseline) or np.ndim(baseline) != 0:
    raise TypeError(f"`baseline` must be one of {_BASELINES} or a scalar number, got {baseline!r}.")
  else:
    const_baseline = baseline
    baseline = "constant"
  if scheme == "forward" and baseline != "center":
    raise ValueError("`baseline` must be None or 'center' with scheme='forward' (forward differences "
                     f"subtract f(x)); use scheme='plain' with baseline={baseline!r}.")
  if scheme == "antithetic" and baseline != "none":
    raise ValueError("`baseline` must be None or 'none' with scheme='antithetic' (antithetic pairs "
                     f"cancel any constant), got {baseline!r}.")
  if scheme == "antithetic" and num_directions % 2:
    raise ValueError(f"`num_directions` must be even with scheme='antithetic' (it counts both "
                     f"members of each pair), got {num_directions}.")
  if baseline in ("leave_one_out", "optimal_leave_one_out") and num_directions < 2:
    raise ValueError(f"`num_directions` must be >= 2 for baseline={baseline!r}, got {num_directions}.")
  if shaping is not None:
    if baseline == "center":
      raise ValueError("`shaping` cannot be combined with the f(x) baseline (scheme='forward' or "
                       "baseline='center'): f(x) has no rank among the population; use scheme='plain' "
                       "or 'antithetic'.")
    if num_directions < 2:
      raise ValueError(f"`num_directions` must be >= 2 with shaping={shaping!r}, got {num_directions}.")
  if noise is not None:
    if directions != "gaussian":
      raise ValueError(f"`noise` tables provide approximate Gaussian directions only; got "
                       f"directions={directions!r}.")
    noise_lib.check_table(noise, 1)
  if batch_size is not None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
      raise ValueError(f"`batch_size` must be a positive integer or None, got {batch_size!r}.")
  if not isinstance(f_takes_key, bool):
    raise TypeError(f"`f_takes_key` must be a bool, got {f_takes_key!r}.")

  n = num_directions
  antithetic = scheme == "antithetic"
  m = n // 2 if antithetic else n  # distinct directions
  need_norms = baseline in ("optimal", "optimal_leave_one_out")
  with_center = baseline == "center"
  num_evals = n + int(with_center)

  def estimator(key: jax.Array, params: Any) -> tuple[Any, ZerothOrderAux]:
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
      raise ValueError("`params` must contain at least one array.")
    for leaf in leaves:
      if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
        raise TypeError(f"`params` leaves must be floating, got dtype {jnp.result_type(leaf)}.")
    flat, unravel = ravel_pytree(params)
    d = flat.shape[0]
    dtype = flat.dtype
    sig = jnp.asarray(sigma, dtype)
    k_dir, k_f = jax.random.split(key)

    bs = batch_size
    if bs is None and d >= _CHUNK_MIN_DIM and (noise is not None or jax.default_backend() == "cpu"):
      # Measured on XLA:CPU (d = 1e3 and 1e5, 128 directions): a vmapped row reduction over the fused
      # perturbation x + sigma u is 2-5x slower than lax.map over chunks of 16 directions; with a noise
      # table, chunks also keep the population from being materialised.
      bs = _CHUNK
    bs = None if bs is None else min(bs, m)
    # Streaming: with fresh directions and per-direction weights (no shaping, a baseline that does not
    # depend on the batch), draw, evaluate and accumulate chunk by chunk: the [M, d] population is never
    # formed, and drawing normals in cache-sized chunks was 2.7x faster at d = 1e5 on this CPU.
    local = shaping is None and baseline in ("none", "center", "constant")
    stream = local and (noise is not None or (bs is not None and bs < m and directions in ("gaussian", "sphere")))
    if stream and noise is None:
      bs = max(c for c in range(1, bs + 1) if m % c == 0)  # chunks of equal size
    if noise is None:
      dirs = None if stream else _draw_directions(k_dir, directions, m, d, dtype)
      table = None

      def get_u(i_input):
        return i_input
    else:
      table = noise_lib.check_table(noise, d)  # never cast the whole table: cast each slice
      dirs = noise_lib.sample_offsets(k_dir, table, m, d)

      def get_u(i_input):
        return jax.lax.dynamic_slice(table, (i_input,), (d,)).astype(dtype)

    def f_at(k, theta):
      out = f(k, unravel(theta)) if f_takes_key else f(unravel(theta))
      out = jnp.asarray(out)
      if out.shape != ():
        raise ValueError(f"`f` must return a scalar, got shape {out.shape}.")
      return out

    # Keys for f: one shared key (CRN) or one per evaluation.
    if f_takes_key and not common_random_numbers:
      all_keys = jax.random.split(k_f, n + 1)
      center_key = all_keys[n]
      eval_keys = all_keys[:n].reshape((m, 2) + all_keys.shape[1:]) if antithetic else all_keys[:n]
    else:
      center_key = k_f
      eval_keys = None

    def member(inputs):
      i_input, keys = inputs
      u = get_u(i_input)
      kp = k_f if keys is None else (keys[0] if antithetic else keys)
      out = [f_at(kp, flat + sig * u)]
      if antithetic:
        km = k_f if keys is None else keys[1]
        out.append(f_at(km, flat - sig * u))
      if need_norms:
        out.append(jnp.sum(u * u))
      return tuple(out)

    def _streamed(member, eval_keys, center_key):
      nc = m // bs if table is None else m
      if baseline == "center":
        b0 = f_at(center_key, flat)
      elif baseline == "constant":
        b0 = jnp.asarray(const_baseline)
      else:
        b0 = jnp.zeros(())
      if table is not None:
        # One fused pass over the table slices: evaluate, weight and accumulate each slice while it is in
        # cache (2.2x faster at d = 1e5 than evaluating all, then accumulating, on this CPU).
        def body_t(acc, inputs):
          o, keys_o = inputs
          outs_o = member((o, keys_o))
          w = ((outs_o[0] - outs_o[1]) if antithetic else (outs_o[0] - b0)) / (n * sig)
          return acc + w.astype(dtype) * get_u(o), outs_o

        g_flat, outs = jax.lax.scan(body_t, jnp.zeros((d,), dtype), (dirs, eval_keys), unroll=min(4, m))
        return _finish(g_flat, outs, b0)
      chunk_keys = None if eval_keys is None else eval_keys.reshape((nc, bs) + eval_keys.shape[1:])

      def body(acc, inputs):
        c, keys_c = inputs
        u_c = _draw_directions(jax.random.fold_in(k_dir, c), directions, bs, d, dtype)
        outs_c = jax.vmap(member)((u_c, keys_c))
        if antithetic:
          w = (outs_c[0] - outs_c[1]) / (n * sig)
        else:
          w = (outs_c[0] - b0) / (n * sig)
        acc = acc + jnp.dot(w.astype(dtype), u_c, precision=jax.lax.Precision.HIGHEST)
        return acc, outs_c

      g_flat, outs = jax.lax.scan(body, jnp.zeros((d,), dtype), (jnp.arange(nc), chunk_keys))
      return _finish(g_flat, outs, b0)

    def _finish(g_flat, outs, b0):
      rdtype = jnp.result_type(outs[0].dtype, dtype) if jnp.issubdtype(outs[0].dtype, jnp.floating) else dtype
      values = jnp.concatenate([o.reshape(m).astype(rdtype) for o in outs])
      b = jnp.broadcast_to((jnp.zeros(()) if antithetic else b0).astype(rdtype), values.shape)
      aux = ZerothOrderAux(values=values, fitness=values, baselines=b,
                           num_evaluations=jnp.asarray(num_evals, jnp.int32),
                           estimand_changed=jnp.asarray(False))
      return unravel(g_flat.astype(dtype)), aux

    if stream:
      return _streamed(member, eval_keys, center_key)
    if bs is None:
      outs = jax.vmap(member)((dirs, eval_keys))
    else:
      outs = jax.lax.map(member, (dirs, eval_keys), batch_size=bs)
    rdtype = jnp.result_type(outs[0].dtype, dtype) if jnp.issubdtype(outs[0].dtype, jnp.floating) else dtype
    values = jnp.concatenate([o.astype(rdtype) for o in outs[: 2 if antithetic else 1]])
    sq_norms = outs[-1].astype(rdtype) if need_norms else None

    if shaping == "centered_ranks":
      fit = centered_ranks(values)
    elif shaping == "zscore":
      fit = zscore(values)
    else:
      fit = values

    if antithetic:
      b = jnp.zeros_like(fit)
      weights = (fit[:m] - fit[m:]) / (n * sig)
    else:
      if baseline == "none":
        b = jnp.zeros_like(fit)
      elif baseline == "center":
        b = jnp.broadcast_to(f_at(center_key, flat).astype(rdtype), fit.shape)
      elif baseline == "mean":
        b = jnp.broadcast_to(jnp.mean(fit), fit.shape)
      elif baseline == "leave_one_out":
        b = (jnp.sum(fit) - fit) / (n - 1)
      elif baseline == "optimal":
        b = jnp.broadcast_to(jnp.sum(fit * sq_norms) / jnp.sum(sq_norms), fit.shape)
      elif baseline == "optimal_leave_one_out":
        b = (jnp.sum(fit * sq_norms) - fit * sq_norms) / (jnp.sum(sq_norms) - sq_norms)
      else:
        b = jnp.broadcast_to(jnp.asarray(const_baseline, rdtype), fit.shape)
      weights = (fit - b) / (n * sig)

    if table is None:
      g_flat = jnp.dot(weights.astype(dtype), dirs, precision=jax.lax.Precision.HIGHEST)
    else:
      g_flat = noise_lib.weighted_slice_sum(table, dirs, weights, d)
    grads = unravel(g_flat.astype(dtype))
    aux = ZerothOrderAux(
        values=values,
        fitness=fit,
        baselines=b,
        num_evaluations=jnp.asarray(num_evals, jnp.int32),
        estimand_changed=jnp.asarray(shaping is not None),
    )
    return grads, aux

  return estimator


def quadratic_trace_covariance(a_mat: Any, c_vec: Any, x: Any, *, sigma: float, num_directions: int,
                               scheme: str = "forward", directions: str = "gaussian", offset: float = 0.0,
                               baseline: float | None = None) -> float:
  r"""Closed-form :math:`\operatorname{tr}\operatorname{Cov}[\hat g]` of :func:`zeroth_order` on a quadratic.

  For :math:`f(x) = \tfrac12 x^\top A x + c^\top x + e` (``offset`` = e, :math:`A` symmetric), with
  :math:`g = Ax + c`, one Gaussian direction and :math:`c_0 = f(x) - b` (``scheme="plain"`` with constant
  ``baseline`` b, default 0) or :math:`c_0 = 0` (``"forward"``):

  .. math::

     V_1 = \frac{c_0^2 d}{\sigma^2} + (d+1)\|g\|^2 + c_0 (d+2)\operatorname{tr}A
           + \frac{\sigma^2}{4}(d+4)\big((\operatorname{tr}A)^2 + 2\operatorname{tr}A^2\big);

  for directions uniform on the sphere of radius :math:`\sqrt d`:
  :math:`\frac{d c_0^2}{\sigma^2} + (d-1)\|g\|^2 + d c_0\operatorname{tr}A
  + \frac{\sigma^2}{4}\frac{d^2}{d+2}((\operatorname{tr}A)^2 + 2\operatorname{tr}A^2)`; an antithetic pair
  gives :math:`(d+1)\|g\|^2` (sphere: :math:`(d-1)\|g\|^2`). With :math:`M` directions (pairs for
  ``"antithetic"``, where ``num_directions`` counts evaluations) the variance is :math:`V_1/M`, minus
  :math:`\|g\|^2\sum_b k_b(k_b-1)/M^2` for orthogonal blocks of sizes :math:`k_b = \min(M, d)`.
  Computed in float64 NumPy; a reference for tests and figures, independent of the estimator's code.
  """
  if scheme not in ("plain", "forward", "antithetic"):
    raise ValueError(f"`scheme` must be 'plain', 'forward' or 'antithetic', got {scheme!r}.")
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
