r"""PPO and A2C with a learned critic, as fully jitted ``make_train(config) -> train(key)`` loops.

Each update: ``num_envs`` environments continue for ``num_steps`` steps (:func:`pgjax.rollout`, auto-reset;
episodes carry over between updates), the critic's values give generalised advantages
(:func:`pgjax.returns.gae`, bootstrapped from :math:`V(s_T)`), and the actor-critic loss

.. math::

   L = L^{\text{policy}} + c_V\, L^{V} - c_H\, \mathbb{E}_t[\mathcal{H}(\pi(\cdot|s_t))]

is minimised with optax (global-norm clipping, then Adam with an optionally annealed step size).

* **PPO** (Schulman et al. 2017): :math:`L^{\text{policy}}` is the clipped surrogate
  (:func:`pgjax.losses.ppo_clip_loss`) on advantages normalised per minibatch; ``num_epochs`` passes over the
  rollout in ``num_minibatches`` shuffled minibatches, all inside ``lax.scan``; the value loss is optionally
  clipped (:func:`pgjax.algos.value_loss`). Defaults are PureJaxRL's CartPole settings.
* **A2C** (Mnih et al. 2016, synchronous form): one gradient step per rollout on
  :math:`L^{\text{policy}} = -\mathbb{E}_t[\hat A_t \log\pi(a_t|s_t)]` with :math:`\hat A` the GAE
  advantages (:math:`\lambda = 1` gives the Monte-Carlo return minus the learned baseline).

Episode ends: gymnax signals termination and truncation (time limit) separately. Both stop the GAE recursion;
with ``bootstrap_truncation=True`` (default) a truncated step's reward gets :math:`\gamma V(s_{t+1})` added,
with :math:`s_{t+1}` the observation reached before the automatic reset (``Trajectory.next_obs``), so the
time limit is not mistaken for a terminal state (Pardo et al., "Time limits in reinforcement learning",
ICML 2018). ``bootstrap_truncation=False`` treats it as terminal, as PureJaxRL does.

Metrics (:class:`PPOMetrics`): the training metric ``episode_return`` is the mean undiscounted return of the
episodes that ended during each update's rollout (counting steps from earlier rollouts), as PureJaxRL reports;
``eval_return`` is the greedy policy's mean return on fresh episodes every ``eval_every`` updates
(:func:`pgjax.algos.evaluate_policy`), the metric to compare across trainers.

Settings: the defaults are PureJaxRL's CartPole-v1 settings (``num_envs=4, num_steps=128``, 976 updates =
5e5 environment steps); ``experiments/benchmarks/ppo_cartpole.py`` compares them with a single-file
PureJaxRL-style PPO on 64 seeds.

References:
  J. Schulman, F. Wolski, P. Dhariwal, A. Radford, O. Klimov, "Proximal policy optimization algorithms",
  2017. https://arxiv.org/abs/1707.06347
  V. Mnih et al., "Asynchronous methods for deep reinforcement learning", ICML 2016.
  C. Lu, J. Kuba, A. Letcher, L. Metz, C. Schroeder de Witt, J. Foerster, "Discovered policy optimisation"
  (PureJaxRL), NeurIPS 2022. https://github.com/luchris429/purejaxrl
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import struct

from pgjax._src import returns as _returns
from pgjax._src.algos.training import make_env
from pgjax._src.algos.actor_critic import (ActorCritic, evaluate_policy, mlp_actor_critic,
                                           running_episode_returns, value_loss)
from pgjax._src.algos.loop import Trainer
from pgjax._src.losses import ppo_clip_loss
from pgjax._src.rollout import RolloutState, rollout
from pgjax._src.validation import check_positive_int

__all__ = ["A2CConfig", "PPOConfig", "PPOMetrics", "make_a2c_train", "make_ppo_train"]


@struct.dataclass
class PPOConfig:
  """Configuration of :func:`make_ppo_train` (frozen; static fields ``pytree_node=False``).

  Attributes:
    env, env_params: environment (gymnax id or object) and params. ``env`` static.
    actor_critic: an :class:`pgjax.algos.ActorCritic`; ``None`` builds separate MLPs with ``hidden_sizes``
      (or a shared torso with ``shared_torso``). Static.
    hidden_sizes, shared_torso: for the default network. Static.
    num_updates: rollout + optimisation rounds. Static.
    num_envs, num_steps: parallel environments and steps per rollout. Static.
    num_epochs, num_minibatches: passes over each rollout and minibatches per pass. Static.
    learning_rate: Adam step size (annealed linearly to 0 over training with ``anneal_lr``). Traced.
    anneal_lr: linear step-size annealing. Static.
    discount, gae_lambda: :math:`\\gamma`, :math:`\\lambda`. Traced.
    bootstrap_truncation: bootstrap time-limit truncations with the critic (see the module docstring). Static.
    clip_epsilon: PPO ratio clip. Traced.
    value_clip_epsilon: clip of the value update (``None``: unclipped value loss). Static choice.
    value_coef, entropy_coef: :math:`c_V`, :math:`c_H`. Traced.
    max_grad_norm: global-norm clip. Traced.
    eval_every: evaluate the greedy policy every this many updates (``None``: no evaluation). Static.
    eval_episodes, eval_max_steps: episodes per evaluation and their step limit. Static.
    eval_greedy: act with the mode (True) or sample (False) in evaluation. Static.
  """

  env: Any = struct.field(pytree_node=False, default="CartPole-v1")
  env_params: Any = None
  actor_critic: ActorCritic | None = struct.field(pytree_node=False, default=None)
  hidden_sizes: Sequence[int] = struct.field(pytree_node=False, default=(64, 64))
  shared_torso: bool = struct.field(pytree_node=False, default=False)
  num_updates: int = struct.field(pytree_node=False, default=976)
  num_envs: int = struct.field(pytree_node=False, default=4)
  num_steps: int = struct.field(pytree_node=False, default=128)
  num_epochs: int = struct.field(pytree_node=False, default=4)
  num_minibatches: int = struct.field(pytree_node=False, default=4)
  learning_rate: float = 2.5e-4
  anneal_lr: bool = struct.field(pytree_node=False, default=True)
  discount: float = 0.99
  gae_lambda: float = 0.95
  bootstrap_truncation: bool = struct.field(pytree_node=False, default=True)
  clip_epsilon: float = 0.2
  value_clip_epsilon: float | None = struct.field(pytree_node=False, default=0.2)
  value_coef: float = 0.5
  entropy_coef: float = 0.01
  max_grad_norm: float = 0.5
  eval_every: int | None = struct.field(pytree_node=False, default=None)
  eval_episodes: int = struct.field(pytree_node=False, default=8)
  eval_max_steps: int = struct.field(pytree_node=False, default=500)
  eval_greedy: bool = struct.field(pytree_node=False, default=True)


@struct.dataclass
class A2CConfig:
  """Configuration of :func:`make_a2c_train`; fields as in :class:`PPOConfig` (one step per rollout).

  Defaults: 16 environments x 8 steps per update, Adam 7e-4 without annealing, :math:`\\lambda = 1`
  (Monte-Carlo return minus the learned baseline, bootstrapped at the window end).
  """

  env: Any = struct.field(pytree_node=False, default="CartPole-v1")
  env_params: Any = None
  actor_critic: ActorCritic | None = struct.field(pytree_node=False, default=None)
  hidden_sizes: Sequence[int] = struct.field(pytree_node=False, default=(64, 64))
  shared_torso: bool = struct.field(pytree_node=False, default=False)
  num_updates: int = struct.field(pytree_node=False, default=3000)
  num_envs: int = struct.field(pytree_node=False, default=16)
  num_steps: int = struct.field(pytree_node=False, default=8)
  learning_rate: float = 7e-4
  anneal_lr: bool = struct.field(pytree_node=False, default=False)
  discount: float = 0.99
  gae_lambda: float = 1.0
  bootstrap_truncation: bool = struct.field(pytree_node=False, default=True)
  value_coef: float = 0.5
  entropy_coef: float = 0.01
  max_grad_norm: float = 0.5
  eval_every: int | None = struct.field(pytree_node=False, default=None)
  eval_episodes: int = struct.field(pytree_node=False, default=8)
  eval_max_steps: int = struct.field(pytree_node=False, default=500)
  eval_greedy: bool = struct.field(pytree_node=False, default=True)


class PPOMetrics(NamedTuple):
  """Per-update metrics, each ``[num_updates]`` (``eval_return``: ``[E]``, see :func:`make_ppo_train`).

  Attributes:
    episode_return: training metric: mean return of the episodes that ended in the rollout (NaN if none).
    num_episodes: episodes that ended in the rollout.
    policy_loss, value_loss, entropy: last minibatch's terms.
    approx_kl: mean :math:`\\log\\pi_b - \\log\\pi_\\theta` over the last minibatch (Schulman's estimator).
    clip_fraction: fraction of the last minibatch's ratios outside :math:`[1-\\epsilon, 1+\\epsilon]`.
    eval_return: greedy evaluation return, one entry per ``eval_every`` updates (``[0]`` without it).
  """

  episode_return: jax.Array
  num_episodes: jax.Array
  policy_loss: jax.Array
  value_loss: jax.Array
  entropy: jax.Array
  approx_kl: jax.Array
  clip_fraction: jax.Array
  eval_return: jax.Array


def _loss_fn(ac: ActorCritic, cfg, ppo: bool):
  def loss(params, batch):
    obs, actions, old_logp, old_values, adv, targets = batch
    dist, values = ac.apply(params, obs)
    logp = dist.log_prob(actions)
    logp = logp.reshape(logp.shape[:1] + (-1,)).sum(-1)
    entropy = jnp.mean(dist.entropy().reshape(logp.shape[:1] + (-1,)).sum(-1))
    if ppo:
      adv = (adv - adv.mean()) / (adv.std() + 1e-8)
      pg = ppo_clip_loss(logp, old_logp, adv, clip_epsilon=cfg.clip_epsilon)
      clip_eps = cfg.value_clip_epsilon
      vl = value_loss(values, targets, old_values=old_values, clip_epsilon=clip_eps)
    else:
      pg = -jnp.mean(jax.lax.stop_gradient(adv) * logp)
      vl = value_loss(values, targets)
    total = pg + cfg.value_coef * vl - cfg.entropy_coef * entropy
    log_ratio = logp - old_logp
    clip_eps = cfg.clip_epsilon if ppo else 0.2
    aux = (pg, vl, entropy, jnp.mean(-log_ratio), jnp.mean(jnp.abs(jnp.exp(log_ratio) - 1.0) > clip_eps))
    return total, aux
  return loss


def _build(cfg, *, ppo: bool):
  num_updates = check_positive_int(cfg.num_updates, "num_updates")
  num_envs = check_positive_int(cfg.num_envs, "num_envs")
  num_steps = check_positive_int(cfg.num_steps, "num_steps")
  epochs = check_positive_int(cfg.num_epochs, "num_epochs") if ppo else 1
  minibatches = check_positive_int(cfg.num_minibatches, "num_minibatches") if ppo else 1
  batch = num_envs * num_steps
  if batch % minibatches:
    raise ValueError(f"`num_minibatches` ({minibatches}) must divide num_envs * num_steps ({batch}).")
  env, env_params = make_env(cfg.env, cfg.env_params)
  ac = cfg.actor_critic or mlp_actor_critic(env, env_params, cfg.hidden_sizes, shared_torso=cfg.shared_torso)
  policy_apply = ac.policy.apply
  steps_per_update = epochs * minibatches
  lr = cfg.learning_rate
  if cfg.anneal_lr:
    lr = lambda count: cfg.learning_rate * (1.0 - (count // steps_per_update) / num_updates)
  tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(lr, eps=1e-5))
  grad_fn = jax.value_and_grad(_loss_fn(ac, cfg, ppo), has_aux=True)
  evaluate = None
  if cfg.eval_every is not None:
    check_positive_int(cfg.eval_every, "eval_every")
    eval_fn = evaluate_policy(policy_apply, env, env_params, num_episodes=cfg.eval_episodes,
                              max_steps=cfg.eval_max_steps, greedy=cfg.eval_greedy)
    evaluate = lambda k, carry: eval_fn(k, carry[0])

  def update(carry, key):
    params, opt_state, rstate, running = carry
    k_roll, k_perm = jax.random.split(key)
    traj = rollout(k_roll, policy_apply, params, env, env_params, num_steps=num_steps, num_envs=num_envs,
                   init=rstate)
    _, values = ac.apply(params, traj.obs)
    _, last_value = ac.apply(params, traj.final.obs)
    rewards = traj.rewards
    if cfg.bootstrap_truncation:
      _, next_values = ac.apply(params, traj.next_obs)
      cut = jnp.logical_and(traj.truncations, jnp.logical_not(traj.terminations))
      rewards = rewards + jnp.where(cut, cfg.discount * next_values, 0.0)
    adv = _returns.gae(rewards, values, traj.dones, discount=cfg.discount, lambda_=cfg.gae_lambda,
                       bootstrap_value=last_value)
    data = (traj.obs, traj.actions, traj.log_probs, values, adv, adv + values)
    flat = jax.tree.map(lambda x: x.reshape((batch,) + x.shape[2:]), data)

    def epoch(state, k):
      perm = jax.random.permutation(k, batch)
      shuffled = jax.tree.map(lambda x: x[perm].reshape((minibatches, batch // minibatches) + x.shape[1:]), flat)

      def minibatch(state, mb):
        params, opt_state = state
        (_, aux), grads = grad_fn(params, mb)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), aux

      return jax.lax.scan(minibatch, state, shuffled)

    (params, opt_state), aux = jax.lax.scan(epoch, (params, opt_state), jax.random.split(k_perm, epochs))
    ep_return, n_eps, running = running_episode_returns(traj.rewards, traj.dones, running)
    last = jax.tree.map(lambda x: x[-1, -1], aux)
    metrics = (ep_return, n_eps) + tuple(last)
    return (params, opt_state, traj.final, running), metrics

  def setup(key):
    k_init, k_reset, k_loop = jax.random.split(key, 3)
    params = ac.init(k_init)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, num_envs), env_params)
    carry = (params, tx.init(params), RolloutState(obs, env_state), jnp.zeros((num_envs,), jnp.float32))
    return carry, k_loop, update

  return Trainer(setup, num_iterations=num_updates, params=lambda carry: carry[0],
                 metrics=lambda m, evals: PPOMetrics(*m, eval_return=evals), evaluate=evaluate,
                 eval_every=cfg.eval_every, key_stream="separate")


def make_ppo_train(config: PPOConfig):
  """Builds ``train(key) -> (params, PPOMetrics)``; see :class:`PPOConfig` and the module docstring."""
  return _build(config, ppo=True)


def make_a2c_train(config: A2CConfig):
  """Builds ``train(key) -> (params, PPOMetrics)`` for synchronous advantage actor-critic (A2C)."""
  return _build(config, ppo=False)
