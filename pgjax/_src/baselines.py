r"""Baselines for score-function estimators, as pure functions of one batch.

A baseline :math:`b_i` is subtracted from the sample value :math:`f(x_i)` in

.. math::

   \hat g = \frac{1}{N} \sum_{i=1}^N (f(x_i) - b_i)\, \nabla_\theta \log p_\theta(x_i).

Since :math:`\mathbb{E}[\nabla_\theta \log p_\theta(x)] = 0`, any :math:`b_i` that is independent of
:math:`x_i` leaves :math:`\hat g` unbiased; a :math:`b_i` computed from a batch *containing* :math:`x_i`
generally biases it. Every function here says which case it is in.

Shapes: ``rewards`` is ``[N]`` (one batch; ``vmap`` for more). ``sq_norms`` is ``[N]`` with
:math:`\|\nabla_\theta \log p(x_i)\|^2`; ``sq_scores`` is ``[N, D]`` with the squared per-coordinate scores
:math:`(\partial_k \log p(x_i))^2`. Every function returns baselines of shape ``[N]`` (``[N, D]`` for the
per-coordinate forms), so the weights are simply ``rewards - baselines``.

References:
  Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement learning", 1992.
  Kool, van Hoof, Welling, "Buy 4 REINFORCE samples, get a baseline for free!", 2019 (leave-one-out).
  Greensmith, Bartlett, Baxter, "Variance reduction techniques for gradient estimates in RL", JMLR 2004
  (variance-optimal baselines).
  Su Jianlin, "Policy gradient and zeroth-order optimisation reach the same place", 2020 (seed 003).
  Shao et al., "DeepSeekMath" (GRPO group normalisation), 2024.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from pgjax._src import utils

# Smallest denominator treated as non-zero when dividing by sums of squared scores.
_TINY = 1e-30


def _check_rewards(rewards: ArrayLike, *, min_samples: int = 1) -> jax.Array:
  rewards = jnp.asarray(rewards)
  if rewards.ndim != 1:
    raise ValueError(f"`rewards` must have shape [N], got shape {rewards.shape}.")
  if rewards.shape[0] < min_samples:
    raise ValueError(f"this baseline needs at least {min_samples} samples (N = rewards.shape[0]), "
                     f"got N = {rewards.shape[0]}.")
  if not jnp.issubdtype(rewards.dtype, jnp.floating):
    rewards = rewards.astype(jnp.result_type(float))
  return rewards


def _check_paired(rewards: jax.Array, other: ArrayLike, name: str, ndim: int) -> jax.Array:
  other = jnp.asarray(other, dtype=rewards.dtype)
  if other.ndim != ndim or other.shape[0] != rewards.shape[0]:
    want = "[N]" if ndim == 1 else "[N, D]"
    raise ValueError(f"`{name}` must have shape {want} with N = {rewards.shape[0]} "
                     f"(rewards.shape[0]), got {other.shape}.")
  return other


def none(rewards: ArrayLike) -> jax.Array:
  """No baseline: zeros of shape ``[N]``. Unbiased."""
  rewards = _check_rewards(rewards)
  return jnp.zeros_like(rewards)


def constant(rewards: ArrayLike, value: ArrayLike) -> jax.Array:
  """A constant baseline ``value`` (may be traced) broadcast to ``[N]``. Unbiased."""
  rewards = _check_rewards(rewards)
  value = jnp.asarray(value, rewards.dtype)
  chex.assert_rank(value, 0)
  return jnp.full_like(rewards, value)


def batch_mean(rewards: ArrayLike) -> jax.Array:
  r"""The batch mean :math:`\bar f = \frac1N\sum_j f(x_j)`, including :math:`x_i` itself.

  Bias: :math:`b_i` contains :math:`f(x_i)/N`, so :math:`\mathbb{E}[\hat g] = \frac{N-1}{N}\nabla J`
  exactly (the estimator is shrunk by :math:`(N-1)/N`). With :math:`N = 1` the gradient is always zero.
  Use :func:`leave_one_out` for the unbiased version (which equals this one times ``N/(N-1)``).
  """
  rewards = _check_rewards(rewards)
  return jnp.full_like(rewards, jnp.mean(rewards))


def leave_one_out(rewards: ArrayLike) -> jax.Array:
  r"""Leave-one-out ("RLOO") baseline :math:`b_i = \frac{1}{N-1}\sum_{j\ne i} f(x_j)`. Unbiased; needs N >= 2.

  Kool et al., "Buy 4 REINFORCE samples, get a baseline for free!", ICLR workshop 2019.
  """
  rewards = _check_rewards(rewards, min_samples=2)
  n = rewards.shape[0]
  return (jnp.sum(rewards) - rewards) / (n - 1)


def _weighted_mean(rewards, weights, axis=0):
  num = jnp.sum(rewards * weights, axis=axis)
  den = jnp.sum(weights, axis=axis)
  fallback = jnp.mean(rewards, axis=axis)
  safe = den > _TINY
  return jnp.where(safe, num / jnp.where(safe, den, 1.0), fallback * jnp.ones_like(num))


def _exclusive_sum(x: jax.Array, axis: int) -> jax.Array:
  """``sum_{j != i} x_j`` along ``axis`` from exclusive prefix and suffix sums (no ``total - x_i`` cancellation)."""
  zero = jnp.zeros_like(jax.lax.slice_in_dim(x, 0, 1, axis=axis))
  head = jax.lax.slice_in_dim(x, 0, x.shape[axis] - 1, axis=axis)       # x_0 .. x_{N-2}
  tail = jax.lax.slice_in_dim(x, 1, x.shape[axis], axis=axis)           # x_1 .. x_{N-1}
  prefix = jnp.concatenate([zero, jnp.cumsum(head, axis=axis)], axis=axis)                  # sum_{j < i}
  suffix = jnp.concatenate([jnp.flip(jnp.cumsum(jnp.flip(tail, axis), axis=axis), axis), zero], axis=axis)
  return prefix + suffix


def optimal(rewards: ArrayLike, sq_norms: ArrayLike) -> jax.Array:
  r"""In-batch variance-optimal scalar baseline, broadcast to ``[N]``.

  .. math::

     b^* = \frac{\mathbb{E}[f(x)\,\|\nabla\log p(x)\|^2]}{\mathbb{E}[\|\nabla\log p(x)\|^2]}
     \approx \frac{\sum_i f(x_i)\, \|s_i\|^2}{\sum_i \|s_i\|^2}

  minimises the total variance :math:`\mathbb{E}\|\hat g\|^2 - \|\nabla J\|^2` among constant baselines
  (seed 003). Bias: estimated from the batch that contains :math:`x_i`, so the estimator is biased by
  :math:`O(1/N)`; use :func:`optimal_leave_one_out` for an unbiased version. When every score is zero the
  gradient is zero whatever the baseline; the batch mean is returned then (finite, documented).
  """
  rewards = _check_rewards(rewards)
  sq_norms = _check_paired(rewards, sq_norms, "sq_norms", 1)
  return jnp.full_like(rewards, _weighted_mean(rewards, sq_norms))


def optimal_leave_one_out(rewards: ArrayLike, sq_norms: ArrayLike) -> jax.Array:
  r"""Leave-one-out variance-optimal scalar baseline: :math:`b_i = \sum_{j\ne i} f_j\|s_j\|^2 / \sum_{j\ne i}\|s_j\|^2`.

  Unbiased (:math:`b_i` is a function of the other samples only); needs N >= 2. Where the other samples'
  scores are all zero it falls back to their plain mean.
  """
  rewards = _check_rewards(rewards, min_samples=2)
  sq_norms = _check_paired(rewards, sq_norms, "sq_norms", 1)
  num = _exclusive_sum(rewards * sq_norms, axis=0)
  den = _exclusive_sum(sq_norms, axis=0)
  fallback = leave_one_out(rewards)
  # The threshold depends on the other samples only, so b_i stays independent of x_i (unbiased).
  safe = den > _TINY
  return jnp.where(safe, num / jnp.where(safe, den, 1.0), fallback)


def optimal_per_coordinate(rewards: ArrayLike, sq_scores: ArrayLike) -> jax.Array:
  r"""In-batch per-coordinate optimal baseline :math:`b^*_k = \sum_i f_i s_{ik}^2 / \sum_i s_{ik}^2`, shape ``[N, D]``.

  Minimises the variance of each coordinate separately. Biased by :math:`O(1/N)` (in-batch); see
  :func:`optimal_per_coordinate_leave_one_out`. Coordinates whose scores are all zero get the batch mean.
  """
  rewards = _check_rewards(rewards)
  sq_scores = _check_paired(rewards, sq_scores, "sq_scores", 2)
  b = _weighted_mean(rewards[:, None], sq_scores, axis=0)
  return jnp.broadcast_to(b[None, :], sq_scores.shape)


def optimal_per_coordinate_leave_one_out(rewards: ArrayLike, sq_scores: ArrayLike) -> jax.Array:
  r"""Leave-one-out per-coordinate optimal baseline, shape ``[N, D]``. Unbiased; needs N >= 2."""
  rewards = _check_rewards(rewards, min_samples=2)
  sq_scores = _check_paired(rewards, sq_scores, "sq_scores", 2)
  weighted = rewards[:, None] * sq_scores
  num = _exclusive_sum(weighted, axis=0)
  den = _exclusive_sum(sq_scores, axis=0)
  fallback = leave_one_out(rewards)[:, None]
  safe = den > _TINY
  return jnp.where(safe, num / jnp.where(safe, den, 1.0), fallback)


class EmaState(NamedTuple):
  """State of :func:`ema_update`: the running average, the number of updates and the initial value."""
  value: jax.Array
  count: jax.Array
  initial: jax.Array


def ema_init(value: ArrayLike = 0.0, *, dtype: Any = jnp.float32) -> EmaState:
  """Initial state for the exponential-moving-average baseline; ``value`` is the baseline before any data."""
  value = jnp.asarray(value, dtype)
  chex.assert_rank(value, 0)
  return EmaState(value=value, count=jnp.zeros((), jnp.int32), initial=value)


def ema_update(state: EmaState, rewards: ArrayLike, *, decay: ArrayLike = 0.9,
               debias: bool = True) -> tuple[jax.Array, EmaState]:
  r"""Exponential-moving-average baseline: ``(state, rewards) -> (baselines [N], new_state)``.

  The returned baseline is the average of *previous* batches (before ``rewards`` are folded in), so it is
  independent of the current samples and the estimator stays unbiased. Before the first update it is the
  initial value :math:`m_0`.

  .. math:: m_{t} = \text{decay}\, m_{t-1} + (1 - \text{decay})\, \bar f_t

  With ``debias=True`` the weight left on :math:`m_0` is removed, as in Adam:
  :math:`\hat m_t = (m_t - \text{decay}^t m_0) / (1 - \text{decay}^t)`, the exactly weighted average of the
  batch means seen so far (for :math:`m_0 = 0` this is Adam's :math:`m_t / (1-\text{decay}^t)`).

  Args:
    state: from :func:`ema_init` or a previous call.
    rewards: ``[N]`` values of the current batch.
    decay: in [0, 1); may be traced (a concrete value outside [0, 1) raises ``ValueError``).
    debias: remove the initial value's weight.
  """
  rewards = _check_rewards(rewards)
  if utils.is_concrete(decay) and not 0.0 <= float(decay) < 1.0:
    raise ValueError(f"`decay` must be in [0, 1), got {decay!r}.")
  decay = jnp.asarray(decay, state.value.dtype)
  if debias:
    weight0 = decay ** state.count.astype(state.value.dtype)
    seen = state.count > 0
    current = jnp.where(seen, (state.value - weight0 * state.initial)
                        / jnp.where(seen, 1.0 - weight0, 1.0), state.initial)
  else:
    current = state.value
  new_value = decay * state.value + (1.0 - decay) * jnp.mean(rewards).astype(state.value.dtype)
  baselines = jnp.full_like(rewards, current.astype(rewards.dtype))
  return baselines, EmaState(value=new_value, count=state.count + 1, initial=state.initial)


def group_normalize(rewards: ArrayLike, *, eps: float = 1e-6, ddof: int = 0) -> jax.Array:
  r"""Group-normalised advantages (GRPO): :math:`A_i = (f_i - \bar f) / \mathrm{std}(f)` over the last axis.

  ``rewards`` is ``[..., G]``: each row along the last axis is one group (responses to one prompt, say).
  This returns *advantages* (the weights), not a baseline. Bias: both the mean (includes :math:`x_i`) and the
  division by the in-group standard deviation bias the estimator; the division also rescales the gradient
  per group. A group whose standard deviation is <= ``eps`` (e.g. all rewards equal) gets advantage 0, never
  :math:`\pm 1/\epsilon`.

  References: Shao et al., "DeepSeekMath: pushing the limits of mathematical reasoning", 2024.
  """
  rewards = jnp.asarray(rewards)
  if rewards.ndim < 1 or rewards.shape[-1] < 1:
    raise ValueError(f"`rewards` must have shape [..., G] with G >= 1, got {rewards.shape}.")
  if rewards.shape[-1] - ddof < 1:
    raise ValueError(f"`ddof`={ddof} needs groups of size > {ddof}, got G = {rewards.shape[-1]}.")
  if not jnp.issubdtype(rewards.dtype, jnp.floating):
    rewards = rewards.astype(jnp.result_type(float))
  centred = rewards - jnp.mean(rewards, axis=-1, keepdims=True)
  std = jnp.sqrt(jnp.sum(centred ** 2, axis=-1, keepdims=True) / (rewards.shape[-1] - ddof))
  ok = std > eps
  return jnp.where(ok, centred / jnp.where(ok, std, 1.0), 0.0)
