r"""Returns, reward-to-go, advantages and off-policy multistep targets over time-major trajectories.

Every function here takes time-major arrays ``[T, ...]`` (any trailing batch dimensions, e.g.
``[T, num_envs]``) and a done mask of the same shape with the convention

    ``dones[t] = True``  means the episode ended *at* step ``t``: ``rewards[t]`` is its last reward
    and step ``t + 1`` (if any) belongs to a new episode (the auto-reset convention of gymnax and of
    :func:`pgjax.rollout`).

Nothing is ever summed or bootstrapped across an episode boundary: in every recursion the discount
of step ``t`` is :math:`\gamma_t (1 - d_t)`. Value-based functions take ``values[t]`` :math:`= V(s_t)`
for the states the trajectory visited and a separate ``bootstrap_value`` :math:`= V(s_T)` for the state
after the last step (0 when ``None``); it is used only if the last episode has not ended.

Per-step parameters: ``discount`` and ``lambda_`` are scalars or arrays; an array whose shape is a
prefix of ``[T, ...]`` (e.g. ``[T]`` for a ``[T, B]`` batch) is aligned with the leading time axis,
any other shape is broadcast to ``[T, ...]`` by NumPy rules. ``lambda_[t]`` weighs the bootstrap
from :math:`s_{t+1}` in the return from :math:`s_t` (rlax's convention, shifted to pgjax's indices).

Termination and truncation: a done stops the bootstrap, which is right for a terminal state. For an
episode cut by a time limit at step ``t`` (the environment resets, so :math:`V(s_{t+1})` of the cut
episode is not in ``values``), add :math:`\gamma_t V(s^{\text{final}}_{t+1})` to ``rewards[t]``
(:func:`pgjax.rollout` records :math:`s^{\text{final}}_{t+1}` as ``Trajectory.next_obs``): for every
function here this gives exactly the targets that bootstrap through the truncation.

Conventions of rlax (which the tests use as the reference, converting): rlax is batch-major, encodes
episode ends as a zero ``discount_t``, and takes the values of the *next* states
:math:`V(s_{t+1})`; here arrays are time-major, the done mask is explicit, and ``values`` are
:math:`V(s_t)` with a separate ``bootstrap_value``. A zero ``discount`` and a done are
interchangeable in every recursion of this module.

Each recursion is one ``lax.scan`` over time (reverse for returns, forward for episode bookkeeping;
:func:`n_step_returns` scans over the ``n`` horizons instead, each step vectorised over time), so the
functions are jittable, vmappable and differentiable. Gradients are *not* stopped anywhere: wrap
targets in ``jax.lax.stop_gradient`` when a critic is trained on them.

References:
  R. S. Sutton and A. G. Barto, *Reinforcement Learning: An Introduction*, 2nd ed., 2018, ch. 3,
  7 (n-step returns), 12 (lambda-returns), 13.
  J. Schulman, P. Moritz, S. Levine, M. Jordan, P. Abbeel, "High-Dimensional Continuous Control Using
  Generalized Advantage Estimation", ICLR 2016, https://arxiv.org/abs/1506.02438.
  D. Precup, R. S. Sutton, S. Singh, "Eligibility Traces for Off-Policy Policy Evaluation", ICML 2000.
  R. S. Sutton, A. R. Mahmood, D. Precup, H. van Hasselt, "A new Q(lambda) with interim forward view
  and Monte Carlo equivalence", ICML 2014.
  L. Espeholt et al., "IMPALA: Scalable Distributed Deep-RL with Importance Weighted Actor-Learner
  Architectures", ICML 2018, https://arxiv.org/abs/1802.01561 (V-trace, section 4).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from pgjax._src import validation
from pgjax._src.validation import check_unit_interval  # re-exported: the trainers import it from here

__all__ = [
    "VTraceOutput",
    "check_unit_interval",
    "discounted_returns",
    "episode_discounts",
    "episode_returns",
    "episode_time",
    "first_episode_mask",
    "gae",
    "importance_corrected_td_errors",
    "lambda_returns",
    "n_step_returns",
    "reward_to_go",
    "vtrace",
]


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
  discount = _per_step(discount, "discount", rewards)
  return rewards, dones.astype(bool), discount


def _per_step(value: ArrayLike, name: str, like: jax.Array, *, unit_interval: bool = True) -> jax.Array:
  """A scalar or per-step parameter in ``[0, 1]`` as an array of ``like``'s shape and dtype.

  An array whose shape is a prefix of ``like.shape`` is aligned with the leading (time) axes;
  anything else is broadcast by NumPy rules.
  """
  if unit_interval:
    check_unit_interval(value, name)
  else:
    validation.check_nonnegative(value, name)
  value = jnp.asarray(value, like.dtype)
  if 0 < value.ndim < like.ndim and value.shape == like.shape[:value.ndim]:
    value = jnp.reshape(value, value.shape + (1,) * (like.ndim - value.ndim))
  try:
    return jnp.broadcast_to(value, like.shape)
  except ValueError:
    raise ValueError(f"`{name}` must be a scalar, an array of shape {like.shape[:1]} (per step) or "
                     f"broadcastable to {like.shape}, got shape {value.shape}.") from None


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

  The causality form of the policy gradient (Sutton and Barto, 2018, sec. 13.3): replacing the
  episode return by :math:`Q_t` in :math:`\sum_t \nabla\log\pi(a_t|s_t)\,(\cdot)` keeps the estimator unbiased for the
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
  r"""Generalised advantage estimation (Schulman et al., 2016, eq. 16) with episode boundaries.

  .. math::
     \delta_t &= r_t + \gamma_t (1 - d_t) V_{t+1} - V_t, \\
     A_t &= \delta_t + \gamma_t \lambda_t (1 - d_t) A_{t+1}, \qquad A_T = 0,

  with :math:`V_{T} = ` ``bootstrap_value`` (0 if ``None``). :math:`\lambda = 1` gives
  :math:`A_t = G_t - V_t` (Monte-Carlo return minus baseline, unbiased for any ``values`` that do
  not depend on the action at ``t``); :math:`\lambda = 0` the one-step TD error. The value targets
  for a critic are ``advantages + values`` (the lambda-returns of :func:`lambda_returns`). A done
  ends the bootstrap; for time-limit truncations see the module docstring.

  Equals rlax's ``truncated_generalized_advantage_estimation`` with ``discount_t`` :math:`=
  \gamma_t (1 - d_t)` and ``values`` :math:`= [V_0, \dots, V_{T-1}, V_T]`.

  Args:
    rewards: ``[T, ...]`` rewards.
    values: ``[T, ...]`` value estimates :math:`V(s_t)` (gradients are *not* stopped; wrap in
      ``jax.lax.stop_gradient`` if they come from a network you differentiate).
    dones: ``[T, ...]`` episode-end mask.
    discount: :math:`\gamma \in [0, 1]`, a scalar or per-step array (see the module docstring).
    lambda_: :math:`\lambda \in [0, 1]`, a scalar or per-step array; ``lambda_[t]`` multiplies
      :math:`A_{t+1}` in :math:`A_t`.
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
  lam = _per_step(lambda_, "lambda_", rewards)
  next_values = _next_values(values, bootstrap_value)
  gamma = discount * (1.0 - dones.astype(rewards.dtype))
  deltas = rewards + gamma * next_values - values

  def body(a_next, xs):
    delta, g, l = xs
    a = delta + g * l * a_next
    return a, a

  _, adv = jax.lax.scan(body, jnp.zeros(rewards.shape[1:], rewards.dtype), (deltas, gamma, lam),
                        reverse=True)
  return adv


# --------------------------------------------------------------------------
# Multistep and off-policy targets
# --------------------------------------------------------------------------


class VTraceOutput(NamedTuple):
  r"""Outputs of :func:`vtrace` (each ``[T, ...]``).

  Attributes:
    targets: the V-trace value targets :math:`v_t` (IMPALA eq. 1).
    errors: :math:`v_t - V(s_t)`, the V-trace TD errors (rlax's ``errors``).
    pg_advantages: :math:`\min(\bar\rho_{pg}, \rho_t)\,(q_t - V(s_t))`, the advantages of the
      IMPALA policy gradient.
    q_estimates: :math:`q_t = r_t + \gamma_t (1 - d_t) (\lambda_t v_{t+1} + (1 - \lambda_t)
      V(s_{t+1}))`, with :math:`v_T = V(s_T)`.
  """

  targets: jax.Array
  errors: jax.Array
  pg_advantages: jax.Array
  q_estimates: jax.Array


def _next_values(values: jax.Array, bootstrap_value: ArrayLike | None) -> jax.Array:
  """:math:`V(s_{t+1})` for every step: ``values[1:]`` followed by the bootstrap value."""
  return jnp.concatenate([values[1:], _bootstrap(bootstrap_value, values)[None]], axis=0)


def _prepare_values(rewards, values, dones, discount, lambda_, bootstrap_value, lambda_unit=True):
  """Checked arrays: rewards, V(s_t), V(s_{t+1}), the effective discount gamma_t (1 - d_t), lambda."""
  rewards, dones, discount = _prepare(rewards, dones, discount)
  values = _check_time_major(values, "values")
  if values.shape != rewards.shape:
    raise ValueError(f"`values` must have the shape of `rewards` {rewards.shape}, got {values.shape}.")
  values = values.astype(rewards.dtype)
  lam = _per_step(lambda_, "lambda_", rewards, unit_interval=lambda_unit)
  gamma = discount * (1.0 - dones.astype(rewards.dtype))
  return rewards, values, _next_values(values, bootstrap_value), gamma, lam


def _prepare_rhos(rhos, rewards):
  rhos = _check_time_major(rhos, "rhos")
  if rhos.shape != rewards.shape:
    raise ValueError(f"`rhos` must have the shape of `rewards` {rewards.shape}, got {rhos.shape}.")
  validation.check_nonnegative(rhos, "rhos")
  return rhos.astype(rewards.dtype)


def lambda_returns(rewards: ArrayLike, values: ArrayLike, dones: ArrayLike, *, discount: ArrayLike,
                   lambda_: ArrayLike, bootstrap_value: ArrayLike | None = None) -> jax.Array:
  r"""Lambda-returns :math:`G^\lambda_t` (TD(lambda) targets), with per-step discount and lambda.

  .. math::
     G^\lambda_t = r_t + \gamma_t (1 - d_t)\,\big[(1 - \lambda_t)\, V(s_{t+1})
     + \lambda_t\, G^\lambda_{t+1}\big], \qquad G^\lambda_T = V(s_T),

  the recursive form of the exponentially weighted mix of n-step returns (Sutton and Barto, 2018,
  eq. 12.3 and 12.18). :math:`\lambda = 1` gives the discounted return bootstrapped with
  :math:`V(s_T)` (:func:`discounted_returns`), :math:`\lambda = 0` the one-step target
  :math:`r_t + \gamma_t (1 - d_t) V(s_{t+1})`. With a per-step
  :math:`\lambda_t = \lambda \rho_{t+1}` or :math:`\min(1, \rho_{t+1})` this gives the
  off-policy corrections of per-decision importance sampling and of V-trace. Equals
  ``gae(...) + values`` for the same arguments.

  Equals rlax's ``lambda_returns(r_t, discount_t, v_t, lambda_)`` with ``discount_t`` :math:`=
  \gamma_t (1 - d_t)` and ``v_t`` :math:`= V(s_{t+1})`.

  Args:
    rewards: ``[T, ...]`` rewards.
    values: ``[T, ...]`` :math:`V(s_t)`; ``values[0]`` is not used (only next-state values enter).
    dones: ``[T, ...]`` episode-end mask.
    discount: :math:`\gamma \in [0, 1]`, scalar or per-step.
    lambda_: :math:`\lambda \ge 0`, scalar or per-step; ``lambda_[t]`` mixes the bootstrap
      from :math:`s_{t+1}`. Values above 1 are accepted for the importance-weighted form
      :math:`\lambda_t = \lambda \rho_{t+1}`; on-policy, :math:`\lambda \in [0, 1]`.
    bootstrap_value: optional ``[...]`` :math:`V(s_T)` (0 when ``None``).

  Returns:
    ``[T, ...]`` lambda-returns.

  Raises:
    ValueError: bad shapes, ``discount`` outside ``[0, 1]``, negative ``lambda_``.
  """
  rewards, _, next_values, gamma, lam = _prepare_values(rewards, values, dones, discount, lambda_,
                                                        bootstrap_value, lambda_unit=False)

  def body(g_next, xs):
    r, g, l, v = xs
    out = r + g * ((1.0 - l) * v + l * g_next)
    return out, out

  _, out = jax.lax.scan(body, next_values[-1], (rewards, gamma, lam, next_values), reverse=True)
  return out


def n_step_returns(rewards: ArrayLike, values: ArrayLike, dones: ArrayLike, *, n: int,
                   discount: ArrayLike, lambda_: ArrayLike = 1.0,
                   bootstrap_value: ArrayLike | None = None) -> jax.Array:
  r"""n-step bootstrapped returns (Sutton and Barto, 2018, eq. 7.1), truncated at dones and at ``T``.

  .. math::
     G^{(n)}_t = \sum_{k=0}^{m-1} \Big(\prod_{j<k} \gamma_{t+j}(1 - d_{t+j})\Big) r_{t+k}
     + \Big(\prod_{j<m} \gamma_{t+j}(1 - d_{t+j})\Big) V(s_{t+m}),
     \qquad m = \min(n, T - t),

  so a step within ``n`` of the window's end bootstraps from :math:`V(s_T)` and an episode end
  within the horizon stops the sum (its discount is 0). With ``lambda_`` < 1 each of the ``n``
  backups mixes in the value as in :func:`lambda_returns`,
  :math:`G \leftarrow r_{t+k} + \gamma_{t+k}(1 - d_{t+k})[(1 - \lambda_{t+k}) V(s_{t+k+1}) +
  \lambda_{t+k} G]`, truncated after ``n`` backups; ``n >= T`` gives :func:`lambda_returns`.

  Equals rlax's ``n_step_bootstrapped_returns`` with the conventions converted as in
  :func:`lambda_returns`. Cost :math:`O(nT)`: one ``lax.scan`` over the ``n`` backups, each
  vectorised over time.

  Args:
    rewards: ``[T, ...]`` rewards.
    values: ``[T, ...]`` :math:`V(s_t)` (``values[0]`` is not used).
    dones: ``[T, ...]`` episode-end mask.
    n: horizon, a static Python int >= 1.
    discount: :math:`\gamma \in [0, 1]`, scalar or per-step.
    lambda_: :math:`\lambda \in [0, 1]`, scalar or per-step (default 1: plain n-step returns).
    bootstrap_value: optional ``[...]`` :math:`V(s_T)` (0 when ``None``).

  Returns:
    ``[T, ...]`` n-step returns.

  Raises:
    TypeError / ValueError: ``n`` not an int >= 1; bad shapes or parameters outside ``[0, 1]``.
  """
  n = validation.check_positive_int(n, "n", minimum=1)
  rewards, _, next_values, gamma, lam = _prepare_values(rewards, values, dones, discount, lambda_,
                                                        bootstrap_value)
  t = rewards.shape[0]
  batch = rewards.shape[1:]

  def pad(x, fill):  # [T + n - 1, ...]: beyond the window, zero reward and unit discount / lambda
    return jnp.concatenate([x, jnp.broadcast_to(jnp.asarray(fill, x.dtype), (n - 1,) + batch)], axis=0)

  v_pad = pad(next_values, next_values[-1])
  padded = (pad(rewards, 0.0), pad(gamma, 1.0), pad(lam, 1.0), v_pad)

  def backup(g, k):  # the (k+1)-th step of every return, from the last backup to the first
    r, gm, l, v = (jax.lax.dynamic_slice_in_dim(x, k, t, axis=0) for x in padded)
    g = r + gm * ((1.0 - l) * v + l * g)
    return g, None

  g_init = jax.lax.dynamic_slice_in_dim(v_pad, n - 1, t, axis=0)  # V(s_{t+n}), V(s_T) past the end
  out, _ = jax.lax.scan(backup, g_init, jnp.arange(n), reverse=True)
  return out


def importance_corrected_td_errors(rewards: ArrayLike, values: ArrayLike, dones: ArrayLike,
                                   rhos: ArrayLike, *, discount: ArrayLike, lambda_: ArrayLike = 1.0,
                                   bootstrap_value: ArrayLike | None = None) -> jax.Array:
  r"""Multistep TD errors with per-decision importance sampling (Precup et al., 2000).

  With :math:`\rho_t = \pi(a_t \mid s_t) / \mu(a_t \mid s_t)` the ratio of the target policy
  :math:`\pi` to the behaviour policy :math:`\mu` that chose the actions,

  .. math::
     \delta_t &= r_t + \gamma_t (1 - d_t) V(s_{t+1}) - V(s_t), \\
     E_t &= \delta_t + \gamma_t (1 - d_t)\, \lambda_t\, \rho_{t+1}\, E_{t+1},
     \qquad E_T = 0, \\
     \text{output}_t &= \rho_t E_t = \rho_t \big(G_t - V(s_t)\big),

  where :math:`G_t` is the lambda-return (:func:`lambda_returns`) with per-step
  :math:`\lambda_t \rho_{t+1}` (Sutton et al., 2014). Unclipped: unbiased for :math:`\pi`'s
  lambda-return errors, with variance growing with the products of ratios (see :func:`vtrace` for
  the clipped version). With all ratios 1 it equals :func:`gae`.

  Equals rlax's ``importance_corrected_td_errors`` with ``rho_tm1`` = ``rhos`` and the conventions
  converted as in :func:`lambda_returns`.

  Args:
    rewards: ``[T, ...]`` rewards.
    values: ``[T, ...]`` :math:`V(s_t)` under :math:`\pi`.
    dones: ``[T, ...]`` episode-end mask.
    rhos: ``[T, ...]`` importance ratios :math:`\rho_t \ge 0`.
    discount: :math:`\gamma \in [0, 1]`, scalar or per-step.
    lambda_: :math:`\lambda \in [0, 1]`, scalar or per-step (default 1).
    bootstrap_value: optional ``[...]`` :math:`V(s_T)` (0 when ``None``).

  Returns:
    ``[T, ...]`` importance-corrected TD errors :math:`\rho_t E_t`.

  Raises:
    ValueError: bad shapes, negative concrete ``rhos``, parameters outside ``[0, 1]``.
  """
  rewards, values, next_values, gamma, lam = _prepare_values(rewards, values, dones, discount,
                                                             lambda_, bootstrap_value)
  rhos = _prepare_rhos(rhos, rewards)
  deltas = rewards + gamma * next_values - values
  # rho_{t+1}; the last entry multiplies E_T = 0 and is irrelevant.
  next_rhos = jnp.concatenate([rhos[1:], jnp.ones_like(rhos[:1])], axis=0)

  def body(e_next, xs):
    delta, g, l, rho_next = xs
    e = delta + g * l * rho_next * e_next
    return e, e

  _, errors = jax.lax.scan(body, jnp.zeros(rewards.shape[1:], rewards.dtype),
                           (deltas, gamma, lam, next_rhos), reverse=True)
  return rhos * errors


def vtrace(rewards: ArrayLike, values: ArrayLike, dones: ArrayLike, rhos: ArrayLike, *,
           discount: ArrayLike, lambda_: ArrayLike = 1.0, clip_rho_threshold: ArrayLike = 1.0,
           clip_c_threshold: ArrayLike = 1.0, clip_pg_rho_threshold: ArrayLike = 1.0,
           bootstrap_value: ArrayLike | None = None) -> VTraceOutput:
  r"""V-trace targets and policy-gradient advantages (Espeholt et al., 2018, IMPALA, eq. 1 and 4).

  With importance ratios :math:`\rho_t = \pi(a_t \mid s_t) / \mu(a_t \mid s_t)`, clipped
  :math:`\bar\rho_t = \min(\bar\rho, \rho_t)` and traces :math:`c_t = \lambda_t
  \min(\bar c, \rho_t)`:

  .. math::
     \delta_t &= \bar\rho_t \big(r_t + \gamma_t (1 - d_t) V(s_{t+1}) - V(s_t)\big), \\
     v_t - V(s_t) &= \delta_t + \gamma_t (1 - d_t)\, c_t\, \big(v_{t+1} - V(s_{t+1})\big),
     \qquad v_T = V(s_T),

  the recursive form of IMPALA's eq. (1),
  :math:`v_s = V(s_s) + \sum_{t \ge s} \gamma^{t-s} (\prod_{i=s}^{t-1} c_i)\, \delta_t`. The
  policy gradient uses :math:`\min(\bar\rho_{pg}, \rho_t)\,(q_t - V(s_t))` with
  :math:`q_t = r_t + \gamma_t (1 - d_t)(\lambda_t v_{t+1} + (1 - \lambda_t) V(s_{t+1}))`
  (eq. 4 for :math:`\lambda = 1`). On-policy (all :math:`\rho_t = 1`) the targets are the
  lambda-returns and the errors the GAE advantages. Bias: with :math:`\bar\rho < \infty` the
  targets estimate the value of a policy between :math:`\mu` and :math:`\pi` (IMPALA, section 4.1).

  Equals rlax's ``vtrace_td_error_and_advantage`` (``errors``, ``pg_advantage``, ``q_estimate``)
  with ``clip_c_threshold = 1`` and the conventions converted as in :func:`lambda_returns`
  (``v_tm1`` = ``values``, ``v_t`` = next values with ``bootstrap_value`` last).

  Args:
    rewards: ``[T, ...]`` rewards.
    values: ``[T, ...]`` :math:`V(s_t)`.
    dones: ``[T, ...]`` episode-end mask.
    rhos: ``[T, ...]`` importance ratios :math:`\rho_t \ge 0` (e.g.
      ``jnp.exp(pi.log_prob(a) - mu.log_prob(a))``).
    discount: :math:`\gamma \in [0, 1]`, scalar or per-step.
    lambda_: :math:`\lambda \in [0, 1]`, scalar or per-step (default 1).
    clip_rho_threshold: :math:`\bar\rho > 0` (default 1); may be traced.
    clip_c_threshold: :math:`\bar c > 0` (default 1); may be traced.
    clip_pg_rho_threshold: :math:`\bar\rho_{pg} > 0` (default 1); may be traced.
    bootstrap_value: optional ``[...]`` :math:`V(s_T)` (0 when ``None``).

  Returns:
    A :class:`VTraceOutput` of ``[T, ...]`` arrays. No gradient is stopped: wrap ``targets`` and
    ``pg_advantages`` in ``jax.lax.stop_gradient`` for the IMPALA losses.

  Raises:
    ValueError: bad shapes, negative ``rhos``, non-positive thresholds, parameters outside
      ``[0, 1]``.
  """
  rewards, values, next_values, gamma, lam = _prepare_values(rewards, values, dones, discount,
                                                             lambda_, bootstrap_value)
  rhos = _prepare_rhos(rhos, rewards)
  for value, name in ((clip_rho_threshold, "clip_rho_threshold"), (clip_c_threshold, "clip_c_threshold"),
                      (clip_pg_rho_threshold, "clip_pg_rho_threshold")):
    validation.check_scalar(value, name)
    validation.check_nonnegative(value, name, strict=True)
  dtype = rewards.dtype
  clipped_rhos = jnp.minimum(jnp.asarray(clip_rho_threshold, dtype), rhos)
  cs = lam * jnp.minimum(jnp.asarray(clip_c_threshold, dtype), rhos)
  deltas = clipped_rhos * (rewards + gamma * next_values - values)

  def body(e_next, xs):
    delta, g, c = xs
    e = delta + g * c * e_next
    return e, e

  _, errors = jax.lax.scan(body, jnp.zeros(rewards.shape[1:], dtype), (deltas, gamma, cs),
                           reverse=True)
  targets = values + errors
  next_targets = jnp.concatenate([targets[1:], next_values[-1:]], axis=0)
  q = rewards + gamma * (lam * next_targets + (1.0 - lam) * next_values)
  pg_advantages = jnp.minimum(jnp.asarray(clip_pg_rho_threshold, dtype), rhos) * (q - values)
  return VTraceOutput(targets=targets, errors=errors, pg_advantages=pg_advantages, q_estimates=q)
