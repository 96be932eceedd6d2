r"""Actor-critic pieces shared by the critic-based trainers: networks, the value loss, running episode returns
and a greedy (or sampled) evaluation that every trainer can call inside its ``lax.scan``.

An :class:`ActorCritic` is a pair of pure functions ``init(key) -> params`` and ``apply(params, obs) ->
(distribution, value)``, batched over any leading observation dimensions. :func:`mlp_actor_critic` builds
separate actor and critic MLPs (PureJaxRL's layout, the default) or one shared torso with two heads.

References:
  V. Mnih et al., "Asynchronous methods for deep reinforcement learning", ICML 2016 (A2C/A3C).
  J. Schulman, P. Moritz, S. Levine, M. Jordan, P. Abbeel, "High-dimensional continuous control using
  generalized advantage estimation", ICLR 2016 (the fitted value baseline).
  M. Andrychowicz et al., "What matters in on-policy reinforcement learning? A large-scale empirical study",
  ICLR 2021 (value clipping, advantage normalisation).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pgjax._src.algos.policies import Policy

__all__ = ["ActorCritic", "Critic", "EvalFn", "critic_advantages", "evaluate_policy", "fit_critic",
           "make_evaluation", "mlp_actor_critic", "mlp_critic", "running_episode_returns",
           "scan_with_evaluation", "value_loss"]


class ActorCritic(NamedTuple):
  """``init(key) -> params`` and ``apply(params, obs) -> (distribution, value)`` (batched over leading dims)."""

  init: Callable[[jax.Array], Any]
  apply: Callable[[Any, Any], tuple[Any, jax.Array]]

  @property
  def policy(self) -> Policy:
    """The actor alone as a :class:`pgjax.algos.Policy` (for rollouts and evaluation)."""
    return Policy(self.init, lambda params, obs: self.apply(params, obs)[0])


class _Torso(nn.Module):
  hidden_sizes: Sequence[int]
  activation: Callable = nn.tanh

  @nn.compact
  def __call__(self, x):
    for h in self.hidden_sizes:
      x = self.activation(nn.Dense(h, kernel_init=nn.initializers.orthogonal(math.sqrt(2)))(x))
    return x


class _ActorCriticNet(nn.Module):
  hidden_sizes: Sequence[int]
  num_outputs: int
  shared_torso: bool
  activation: Callable = nn.tanh

  @nn.compact
  def __call__(self, x):
    actor_h = _Torso(self.hidden_sizes, self.activation, name="actor_torso")(x)
    critic_h = actor_h if self.shared_torso else _Torso(self.hidden_sizes, self.activation,
                                                        name="critic_torso")(x)
    out = nn.Dense(self.num_outputs, kernel_init=nn.initializers.orthogonal(0.01), name="actor_head")(actor_h)
    value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="critic_head")(critic_h)
    return out, value[..., 0]


def mlp_actor_critic(env: Any, env_params: Any, hidden_sizes: Sequence[int] = (64, 64), *,
                     shared_torso: bool = False, activation: Callable = nn.tanh,
                     init_log_std: float = 0.0) -> ActorCritic:
  r"""A flax actor-critic for ``env``: categorical logits for a discrete action space, otherwise a diagonal
  Gaussian with a state-independent learned :math:`\log\sigma`; and a scalar value :math:`V(s)`.

  Args:
    env, env_params: a gymnax-protocol environment and its params (action space and observation shape).
    hidden_sizes: hidden layers of each torso.
    shared_torso: one torso feeding both heads (the gradients of the policy and value losses then both
      shape it), instead of separate actor and critic networks.
    activation: hidden activation.
    init_log_std: initial :math:`\log\sigma` for continuous actions.

  Orthogonal initialisation (gain :math:`\sqrt 2` hidden, 0.01 policy head, 1 value head), as in PureJaxRL.
  """
  space = env.action_space(env_params)
  obs0, _ = env.reset(jax.random.key(0), env_params)
  obs_shape = jnp.shape(obs0)
  discrete = hasattr(space, "n")
  act_shape = () if discrete else tuple(space.shape)
  num_outputs = int(space.n) if discrete else (int(np.prod(act_shape)) if act_shape else 1)
  net = _ActorCriticNet(tuple(hidden_sizes), num_outputs, bool(shared_torso), activation)

  def init(key):
    params = {"net": net.init(key, jnp.zeros(obs_shape, jnp.float32))}
    if not discrete:
      params["log_std"] = jnp.full((num_outputs,), init_log_std, jnp.float32)
    return params

  def apply(params, obs):
    out, value = net.apply(params["net"], jnp.asarray(obs, jnp.float32))
    if discrete:
      return distrax.Categorical(logits=out), value
    std = jnp.broadcast_to(jnp.exp(params["log_std"]), out.shape)
    if not act_shape:
      return distrax.Normal(out[..., 0], std[..., 0]), value
    return distrax.MultivariateNormalDiag(out.reshape(out.shape[:-1] + act_shape), std), value

  return ActorCritic(init, apply)


def value_loss(values: jax.Array, targets: jax.Array, *, old_values: jax.Array | None = None,
               clip_epsilon: Any = None) -> jax.Array:
  r"""Squared-error value loss :math:`\tfrac12\,\mathrm{mean}_t (V_t - G_t)^2`, optionally clipped as in PPO.

  With ``clip_epsilon`` :math:`\epsilon` and the values :math:`V^{\text{old}}` that produced the targets,
  :math:`\tfrac12\,\mathrm{mean}_t \max\big((V_t - G_t)^2, (V^{\text{old}}_t + \mathrm{clip}(V_t -
  V^{\text{old}}_t, -\epsilon, \epsilon) - G_t)^2\big)` (Schulman et al. 2017's code; Andrychowicz et al.
  2021 find it rarely helps). ``targets`` are held constant. To minimise.
  """
  targets = jax.lax.stop_gradient(targets)
  err = jnp.square(values - targets)
  if clip_epsilon is None:
    return 0.5 * jnp.mean(err)
  if old_values is None:
    raise ValueError("`old_values` is required with `clip_epsilon`.")
  clipped = old_values + jnp.clip(values - old_values, -clip_epsilon, clip_epsilon)
  return 0.5 * jnp.mean(jnp.maximum(err, jnp.square(clipped - targets)))


def running_episode_returns(rewards: jax.Array, dones: jax.Array,
                            running: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""Undiscounted returns of the episodes that *end* in a ``[T, B]`` window, counting the steps they had
  before it (``running``, the carried partial return of each environment's current episode).

  Returns:
    ``(mean_return, num_completed, new_running)``: the mean over completed episodes (NaN if none ended),
    their number, and the ``[B]`` partial returns to carry into the next window.
  """
  def step(ret, x):
    r, d = x
    ret = ret + r
    return jnp.where(d, 0.0, ret), jnp.where(d, ret, 0.0)

  new_running, finished = jax.lax.scan(step, running, (rewards, dones))
  n = jnp.sum(dones)
  mean = jnp.where(n > 0, jnp.sum(finished) / jnp.maximum(n, 1), jnp.nan)
  return mean, n, new_running


EvalFn = Callable[[jax.Array, Any], jax.Array]


def evaluate_policy(policy_apply: Callable[[Any, Any], Any], env: Any, env_params: Any, *, num_episodes: int,
                    max_steps: int, greedy: bool = True) -> EvalFn:
  r"""``eval_fn(key, params) -> mean return``: ``num_episodes`` fresh episodes of at most ``max_steps`` steps.

  ``greedy=True`` acts with the distribution's mode (the deterministic policy), otherwise samples. Each
  episode's undiscounted return up to its first end (or ``max_steps``) is averaged. The same function is the
  evaluation metric of every critic-based trainer, so their curves are comparable.
  """
  from pgjax._src import returns as _returns  # pylint: disable=import-outside-toplevel
  from pgjax._src.rollout import rollout  # pylint: disable=import-outside-toplevel

  def act(params, obs):
    dist = policy_apply(params, obs)
    return distrax.Deterministic(dist.mode()) if greedy else dist

  def eval_fn(key, params):
    traj = rollout(key, act, params, env, env_params, num_steps=max_steps, num_envs=num_episodes)
    mask = _returns.first_episode_mask(traj.dones)
    return jnp.mean(jnp.sum(jnp.where(mask, traj.rewards, 0.0), axis=0))

  return eval_fn


def scan_with_evaluation(update: Callable, evaluate: Callable[[jax.Array, Any], jax.Array] | None, carry: Any,
                         key: jax.Array, *, num_updates: int, eval_every: int | None):
  r"""``lax.scan`` of ``update(carry, key) -> (carry, metrics)`` over ``num_updates`` keys, calling
  ``evaluate(key, carry)`` after every ``eval_every`` updates (and after the last).

  The updates run as an outer scan over blocks of ``eval_every`` updates (an inner scan), so the evaluation
  is not a ``lax.cond`` (which ``vmap`` would turn into computing both branches every step).

  Returns:
    ``(carry, metrics, evaluations)``: metrics stacked to ``[num_updates]``; evaluations ``[E]`` with
    ``E = ceil(num_updates / eval_every)`` (``None`` without ``evaluate``).
  """
  k_updates, k_eval = jax.random.split(key)
  keys = jax.random.split(k_updates, num_updates)
  if evaluate is None or eval_every is None:
    carry, metrics = jax.lax.scan(update, carry, keys)
    return carry, metrics, None
  blocks, rest = divmod(num_updates, eval_every)
  eval_keys = jax.random.split(k_eval, blocks + (rest > 0))
  return _scan_blocks(update, evaluate, carry, keys, eval_keys, eval_every)


def _num_evaluations(num_updates: int, eval_every: int | None) -> int:
  return 0 if eval_every is None else -(-num_updates // eval_every)


def _scan_blocks(update, evaluate, carry, keys, eval_keys, eval_every):
  """The evaluated scan of :func:`scan_with_evaluation` on given update and evaluation keys."""
  num_updates = keys.shape[0]
  blocks, rest = divmod(num_updates, eval_every)

  def block(c, xs):
    block_keys, ek = xs
    c, m = jax.lax.scan(update, c, block_keys)
    return c, (m, evaluate(ek, c))

  parts, evals = [], []
  if blocks:
    carry, (m, e) = jax.lax.scan(block, carry, (keys[:blocks * eval_every].reshape(
        (blocks, eval_every) + keys.shape[1:]), eval_keys[:blocks]))
    parts.append(jax.tree.map(lambda x: x.reshape((blocks * eval_every,) + x.shape[2:]), m))
    evals.append(e)
  if rest:
    carry, m = jax.lax.scan(update, carry, keys[blocks * eval_every:])
    parts.append(m)
    evals.append(evaluate(eval_keys[-1], carry)[None])
  metrics = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts) if len(parts) > 1 else parts[0]
  return carry, metrics, jnp.concatenate(evals)


def make_evaluation(policy_apply: Callable[[Any, Any], Any], env: Any, env_params: Any,
                    config: Any) -> EvalFn | None:
  """The evaluation a trainer config asks for (its ``eval_every``, ``eval_episodes``, ``eval_max_steps``,
  ``eval_greedy`` fields) as ``eval_fn(key, policy_params)``, or ``None`` when ``eval_every`` is ``None``.

  Raises:
    ValueError: a non-positive ``eval_every``, ``eval_episodes`` or ``eval_max_steps``.
  """
  from pgjax._src.validation import check_positive_int  # pylint: disable=import-outside-toplevel

  if config.eval_every is None:
    return None
  check_positive_int(config.eval_every, "eval_every")
  return evaluate_policy(policy_apply, env, env_params,
                         num_episodes=check_positive_int(config.eval_episodes, "eval_episodes"),
                         max_steps=check_positive_int(config.eval_max_steps, "eval_max_steps"),
                         greedy=bool(config.eval_greedy))


class _ValueNet(nn.Module):
  hidden_sizes: Sequence[int]
  activation: Callable = nn.tanh

  @nn.compact
  def __call__(self, x):
    h = _Torso(self.hidden_sizes, self.activation, name="critic_torso")(x)
    return nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="critic_head")(h)[..., 0]


class Critic(NamedTuple):
  """``init(key) -> params`` and ``apply(params, obs) -> value`` (batched over leading observation dims)."""

  init: Callable[[jax.Array], Any]
  apply: Callable[[Any, Any], jax.Array]


def mlp_critic(env: Any, env_params: Any, hidden_sizes: Sequence[int] = (64, 64), *,
               activation: Callable = nn.tanh) -> Critic:
  r"""A flax value network :math:`V(s)` for ``env``'s observations (the critic of :func:`mlp_actor_critic`
  alone: orthogonal initialisation, gain :math:`\sqrt 2` hidden and 1 at the head)."""
  obs0, _ = env.reset(jax.random.key(0), env_params)
  net = _ValueNet(tuple(hidden_sizes), activation)

  def init(key):
    return net.init(key, jnp.zeros(jnp.shape(obs0), jnp.float32))

  def apply(params, obs):
    return net.apply(params, jnp.asarray(obs, jnp.float32))

  return Critic(init, apply)


def critic_advantages(critic_apply: Callable[[Any, Any], jax.Array], critic_params: Any, traj: Any, *,
                      discount: Any, gae_lambda: Any,
                      bootstrap_truncation: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""GAE advantages of a ``[T, B]`` trajectory with a learned value (gradients stopped).

  The recursion stops at every episode end and bootstraps the window's unfinished episodes from
  :math:`V(s_T)` (``traj.final.obs``); with ``bootstrap_truncation`` a time-limit truncation at step
  :math:`t` adds :math:`\gamma V(s_{t+1})` (``traj.next_obs``) to :math:`r_t` (Pardo et al. 2018).

  Returns:
    ``(advantages, value_targets, values)``, each ``[T, B]``; ``value_targets = advantages + values``
    (the :math:`\lambda`-returns).
  """
  from pgjax._src import returns as _returns  # pylint: disable=import-outside-toplevel

  values = jax.lax.stop_gradient(critic_apply(critic_params, traj.obs))
  last = jax.lax.stop_gradient(critic_apply(critic_params, traj.final.obs))
  rewards = traj.rewards
  if bootstrap_truncation:
    next_values = jax.lax.stop_gradient(critic_apply(critic_params, traj.next_obs))
    cut = jnp.logical_and(traj.truncations, jnp.logical_not(traj.terminations))
    rewards = rewards + jnp.where(cut, discount * next_values, 0.0)
  adv = _returns.gae(rewards, values, traj.dones, discount=discount, lambda_=gae_lambda, bootstrap_value=last)
  adv = jax.lax.stop_gradient(adv)
  return adv, adv + values, values


def fit_critic(critic_apply: Callable[[Any, Any], jax.Array], tx: Any, critic_params: Any, opt_state: Any,
               obs: Any, targets: jax.Array, *, num_steps: int) -> tuple[Any, Any, jax.Array]:
  """``num_steps`` full-batch optax steps on :func:`value_loss` (one ``lax.scan``), as TRPO's reference
  fits its value function after each policy update.

  Returns:
    ``(critic_params, opt_state, loss_before)``: the value loss on ``targets`` before the first step.
  """
  loss_fn = lambda p: value_loss(critic_apply(p, obs), targets)
  grad_fn = jax.value_and_grad(loss_fn)

  def step(c, _):
    p, s = c
    loss, g = grad_fn(p)
    updates, s = tx.update(g, s, p)
    return (jax.tree.map(lambda a, u: a + u, p, updates), s), loss

  (critic_params, opt_state), losses = jax.lax.scan(step, (critic_params, opt_state), None, length=num_steps)
  return critic_params, opt_state, losses[0]
