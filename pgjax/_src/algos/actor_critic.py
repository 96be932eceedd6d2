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

__all__ = ["ActorCritic", "EvalFn", "evaluate_policy", "mlp_actor_critic", "running_episode_returns",
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
