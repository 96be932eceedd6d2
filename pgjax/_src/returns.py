r"""Returns, reward-to-go and advantages over time-major trajectories with episode boundaries.

Every function here takes time-major arrays ``[T, ...]`` (any trailing batch dimensions, e.g.
``[T, num_envs]``) and a done mask of the same shape with the convention

    ``dones[t] = True``  means the episode ended *at* step ``t``: ``rewards[t]`` is its last reward
    and step ``t + 1`` (if any) belongs to a new episode (the auto-reset convention of gymnax and of
    :func:`pgjax.rollout`).

Nothing is ever summed across an episode boundary. The recursions run as a single ``lax.scan`` over
time (reverse for returns, forward for episode bookkeeping), so the functions are jittable,
vmappable and differentiable, and cost ``O(T)``.

Why hand-written rather than taken from rlax: rlax's ``discounted_returns`` / ``truncated_generalized_
advantage_estimation`` take a per-step ``discount_t`` in which the episode boundary is encoded as a
zero discount, and have no full-episode return; here the done mask is explicit (what a rollout
produces), the same mask drives the full return and the ``gamma^{t - t_0}`` factor that the unbiased
discounted REINFORCE estimator needs, and pgjax stays free of an rlax dependency. The tests check the
functions against hand-computed arrays, not against rlax.

References:
  R. S. Sutton and A. G. Barto, *Reinforcement Learning: An Introduction*, 2nd ed., 2018, ch. 3, 13.
  J. Schulman, P. Moritz, S. Levine, M. Jordan, P. Abbeel, "High-Dimensional Continuous Control Using
  Generalized Advantage Estimation", ICLR 2016, https://arxiv.org/abs/1506.02438.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from pgjax._src.utils import is_concrete

__all__ = [
    "check_unit_interval",
    "discounted_returns",
    "episode_discounts",
    "episode_returns",
    "episode_time",
    "first_episode_mask",
    "gae",
    "reward_to_go",
]


def check_unit_interval(value: Any, name: str) -> None:
  """Raises ``ValueError`` naming ``name`` if a concrete value lies outside ``[0, 1]`` (or is NaN).

  Traced values pass (they cannot be inspected at trace time).
  """
  if not is_concrete(value):
    return
  arr = np.asarray(value, dtype=np.float64)
  if arr.size and (np.any(~np.isfinite(arr)) or np.any(arr < 0.0) or np.any(arr > 1.0)):
    raise ValueError(f"`{name}` must lie in [0, 1], got {value!r}.")


def _check_time_major(x: Any, name: str) -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim < 1:
    raise ValueError(f"`{name}` must be time-major with shape [T, ...] (T >= 1), got a scalar.")
  if x.shape[0] < 1:
    raise ValueError(f"`{name}` must have at least one time step (T >= 1), got shape {x.shape}.")
  return x


def _prepare(rewards: ArrayLike, dones: ArrayLike, discount: ArrayLike,
             rewards_name: str = "rewards") -> tuple[jax.Array, jax.Array, jax.Array]:
  rewards = _check_time_major(rewards, rewards_name)
  if not jnp.issubdtype(rewards.dtype, jnp.floating):
    rewards = rewards.astype(jnp.result_type(float))
  dones = _check_time_major(dones, "dones")
  if dones.shape != rewards.shape:
    raise ValueError(f"`dones` must have the shape of `{rewards_name}` {rewards.shape}, "
                     f"got {dones.shape}.")
  check_unit_interval(discount, "discount")
  discount = jnp.asarray(discount, rewards.dtype)
  try:
    discount = jnp.broadcast_to(discount, rewards.shape)
  except ValueError:
    raise ValueError(f"`discount` must be a scalar or broadcastable to {rewards.shape}, "
                     f"got shape {discount.shape}.") from None
  return rewards, dones.astype(bool), discount


def _bootstrap(bootstrap_value: ArrayLike | None, like: jax.Array) -> jax.Array:
  if bootstrap_value is None:
    return jnp.zeros(like.shape[1:], like.dtype)
  b = jnp.asarray(bootstrap_value, like.dtype)
  if b.shape != like.shape[1:]:
    raise ValueError(f"`bootstrap_value` must have shape {like.shape[1:]} (one value per "
                     f"trajectory, the value of the state after the last step), got {b.shape}.")
  return b


def discounted_returns(rewards: ArrayLike, dones: ArrayLike, *, discount: ArrayLike,
                       bootstrap_value: ArrayLike | None = None) -> jax.Array:
  r"""Discounted return from every step to the end of its episode (the reward-to-go).

  .. math::
     G_t = r_t + \gamma_t (1 - d_t) G_{t+1}, \qquad G_T = b,

  i.e. :math:`G_t = \sum_{t' = t}^{e(t)} \gamma^{t' - t} r_{t'}` where :math:`e(t)` is the last step
  of the episode containing ``t``. If the last episode in the window has not ended
  (``dones[-1] = False``), ``bootstrap_value`` :math:`b` (e.g. a learned :math:`V(s_T)`) stands for
  the rewards after the window; ``None`` means 0 (the partial sum).

  Args:
    rewards: ``[T, ...]`` rewards.
    dones: ``[T, ...]`` bool, True where the episode ends at that step.
    discount: :math:`\gamma \in [0, 1]`, a scalar or an array broadcastable to ``[T, ...]``
      (per-step discounts; traced values allowed).
    bootstrap_value: optional ``[...]`` value of the state after the last step.

  Returns:
    ``[T, ...]`` returns :math:`G_t`, the dtype of ``rewards``.

  Raises:
    ValueError: ``T < 1``, mismatched shapes, or a concrete ``discount`` outside ``[0, 1]``.
  """
  rewards, dones, discount = _prepare(rewards, dones, discount)
  carry0 = _bootstrap(bootstrap_value, rewards)

  def body(g_next, xs):
    r, d, gamma = xs
    g = r + gamma * jnp.where(d, 0.0, g_next)
    return g, g

  _, out = jax.lax.scan(body, carry0, (rewards, dones, discount), reverse=True)
  return out


def reward_to_go(rewards: ArrayLike, dones: ArrayLike, *, discount: ArrayLike = 1.0) -> jax.Array:
  r"""Reward-to-go :math:`Q_t = \sum_{t' \ge t,\ \text{same episode}} \gamma^{t'-t} r_{t'}` (no bootstrap).

  The causality form of the policy gradient (SPEC 1.3): replacing the episode return by
  :math:`Q_t` in :math:`\sum_t \nabla\log\pi(a_t|s_t)\,(\cdot)` keeps the estimator unbiased for the
  undiscounted objective (``discount = 1``) and lowers its variance. Equals
  :func:`discounted_returns` with ``bootstrap_value=None``; the default ``discount`` is 1.

  Args:
    rewards: ``[T, ...]`` rewards.
    dones: ``[T, ...]`` episode-end mask.
    discount: :math:`\gamma \in [0, 1]`, default 1.

  Returns:
    ``[T, ...]`` reward-to-go.
  """
  return discounted_returns(rewards, dones, discount=discount)


def _forward_scan(fn, init, xs):
  _, out = jax.lax.scan(fn, init, xs)
  return out


def episode_returns(rewards: ArrayLike, dones: ArrayLike, *, discount: ArrayLike = 1.0) -> jax.Array:
  r"""The full (discounted) return of the episode containing each step, broadcast over its steps.

  .. math::
     R_t = \sum_{t' = t_0(t)}^{e(t)} \gamma^{t' - t_0(t)} r_{t'},

  where :math:`t_0(t)` is the first step of the episode containing ``t`` (step 0, or the step after
  a done) and :math:`e(t)` its last. This is the weight of the "full-return" REINFORCE estimator
  :math:`\sum_t \nabla\log\pi(a_t|s_t) R(\tau)`. An episode cut by the end of the window contributes
  its partial sum; an episode already running at step 0 is treated as starting at step 0.

  Args:
    rewards: ``[T, ...]`` rewards.
    dones: ``[T, ...]`` episode-end mask.
    discount: :math:`\gamma \in [0, 1]`, default 1.

  Returns:
    ``[T, ...]`` episode returns.
  """
  q = discounted_returns(rewards, dones, discount=discount)
  dones = jnp.asarray(dones, bool)

  def body(carry, xs):
    prev_done, prev_r = carry
    q_t, d_t = xs
    r_t = jnp.where(prev_done, q_t, prev_r)
    return (d_t, r_t), r_t

  init = (jnp.ones(q.shape[1:], bool), jnp.zeros(q.shape[1:], q.dtype))
  return _forward_scan(body, init, (q, dones))


def episode_time(dones: ArrayLike) -> jax.Array:
  r"""Index of each step within its episode, :math:`t - t_0(t)` (int32, ``[T, ...]``).

  Step 0 and every step after a done have index 0.
  """
  dones = _check_time_major(dones, "dones").astype(bool)

  def body(carry, d_t):
    prev_done, prev_i = carry
    i = jnp.where(prev_done, 0, prev_i + 1)
    return (d_t, i), i

  init = (jnp.ones(dones.shape[1:], bool), jnp.zeros(dones.shape[1:], jnp.int32))
  return _forward_scan(body, init, dones)


def episode_discounts(dones: ArrayLike, *, discount: ArrayLike) -> jax.Array:
  r"""The factor :math:`\gamma^{t - t_0(t)}` (product of the per-step discounts since the episode start).

  The unbiased estimator of the gradient of the *discounted* objective
  :math:`J_\gamma = E[\sum_t \gamma^t r_t]` is :math:`\sum_t \gamma^{t}\,\nabla\log\pi(a_t|s_t)\,Q^\gamma_t`;
  the common practice of dropping :math:`\gamma^t` estimates something else (Thomas, "Bias in
  Natural Actor-Critic Algorithms", ICML 2014). Multiply the reward-to-go by this factor to keep it.

  Args:
    dones: ``[T, ...]`` episode-end mask.
    discount: :math:`\gamma \in [0, 1]`, a scalar or broadcastable to ``[T, ...]``; the factor at
      step ``t`` is the product of ``discount[t0 .. t-1]``.

  Returns:
    ``[T, ...]`` float factors, 1 at each episode start.
  """
  dones = _check_time_major(dones, "dones")
  _, dones, discount = _prepare(jnp.zeros(dones.shape, jnp.result_type(float)), dones, discount,
                                rewards_name="dones")

  def body(carry, xs):
    prev_done, prev_w, prev_gamma = carry
    d_t, gamma_t = xs
    w = jnp.where(prev_done, 1.0, prev_w * prev_gamma)
    return (d_t, w, gamma_t), w

  batch = dones.shape[1:]
  init = (jnp.ones(batch, bool), jnp.ones(batch, discount.dtype), jnp.ones(batch, discount.dtype))
  return _forward_scan(body, init, (dones, discount))


def first_episode_mask(dones: ArrayLike) -> jax.Array:
  """Bool ``[T, ...]``: True for the steps of the first episode in the window (up to its done)."""
  dones = _check_time_major(dones, "dones").astype(bool)
  ended_before = jnp.cumsum(dones, axis=0) - dones  # dones strictly before t
  return ended_before == 0


def gae(rewards: ArrayLike, values: ArrayLike, dones: ArrayLike, *, discount: ArrayLike,
        lambda_: ArrayLike, bootstrap_value: ArrayLike | None = None) -> jax.Array:
  r"""Generalised advantage estimation (Schulman et al., 2016) with episode boundaries.

  .. math::
     \delta_t &= r_t + \gamma (1 - d_t) V_{t+1} - V_t, \\
     A_t &= \delta_t + \gamma \lambda (1 - d_t) A_{t+1}, \qquad A_T = 0,

  with :math:`V_{T} = ` ``bootstrap_value`` (0 if ``None``). :math:`\lambda = 1` gives
  :math:`A_t = G_t - V_t` (Monte-Carlo return minus baseline, unbiased for any ``values`` that do
  not depend on the action at ``t``); :math:`\lambda = 0` the one-step TD error. The value targets
  for a critic are ``advantages + values``. A done ends the bootstrap whether the episode
  terminated or was truncated by a time limit: treating truncation as termination biases the
  advantage near the limit; pass ``discount`` as an array that is 0 only at true terminations and
  ``dones`` = terminations if you want bootstrapping through truncations instead.

  Args:
    rewards: ``[T, ...]`` rewards.
    values: ``[T, ...]`` value estimates :math:`V(s_t)` (gradients are *not* stopped; wrap in
      ``jax.lax.stop_gradient`` if they come from a network you differentiate).
    dones: ``[T, ...]`` episode-end mask.
    discount: :math:`\gamma \in [0, 1]`.
    lambda_: :math:`\lambda \in [0, 1]`.
    bootstrap_value: optional ``[...]`` :math:`V(s_T)` of the state after the last step.

  Returns:
    ``[T, ...]`` advantages.

  Raises:
    ValueError: bad shapes, ``discount`` or ``lambda_`` outside ``[0, 1]``.
  """
  rewards, dones, discount = _prepare(rewards, dones, discount)
  values = _check_time_major(values, "values")
  if values.shape != rewards.shape:
    raise ValueError(f"`values` must have the shape of `rewards` {rewards.shape}, got {values.shape}.")
  values = values.astype(rewards.dtype)
  check_unit_interval(lambda_, "lambda_")
  lam = jnp.asarray(lambda_, rewards.dtype)
  v_last = _bootstrap(bootstrap_value, rewards)
  next_values = jnp.concatenate([values[1:], v_last[None]], axis=0)
  not_done = 1.0 - dones.astype(rewards.dtype)
  deltas = rewards + discount * not_done * next_values - values

  def body(a_next, xs):
    delta, gamma, nd = xs
    a = delta + gamma * lam * nd * a_next
    return a, a

  _, adv = jax.lax.scan(body, jnp.zeros(rewards.shape[1:], rewards.dtype),
                        (deltas, discount, not_done), reverse=True)
  return adv
