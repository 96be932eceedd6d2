r"""REINFORCE (Williams, 1992) as a fully jitted ``make_train(config) -> train(key)`` loop.

Each iteration: ``num_envs`` environments run ``num_steps`` steps from a fresh reset
(:func:`pgjax.rollout`, auto-reset inside the window), the REINFORCE pseudo-loss
(:func:`pgjax.losses.reinforce_loss`: reward-to-go or full return, a per-time-step batch baseline)
is differentiated and one optax step is taken. The iterations run in one ``lax.scan``, so
``jax.jit(jax.vmap(make_train(config)))(keys)`` trains many seeds at once; numeric config fields are
traced (a ``vmap`` over configs sweeps them) and shape-changing ones are static.

The objective is :math:`J = E[\sum_{t<T} \gamma^t r_t]` over the window (for CartPole with
``num_steps`` = the episode limit: the expected episode length).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import struct

from pgjax._src import baselines as _baselines
from pgjax._src import losses as tl
from pgjax._src.algos.policies import Policy, mlp_policy, policy_log_prob_entropy
from pgjax._src.algos.training import episode_statistics, make_env, make_optimizer
from pgjax._src.rollout import rollout
from pgjax._src.validation import check_positive_int, check_unit_interval, is_concrete

__all__ = ["ReinforceConfig", "ReinforceMetrics", "make_reinforce_train"]


@struct.dataclass
class ReinforceConfig:
  """Configuration of :func:`make_reinforce_train` (frozen; static fields marked ``pytree_node=False``).

  Attributes:
    env: gymnax-protocol environment object or id (``"CartPole-v1"``, ``"LinearSystem"``). Static.
    env_params: environment params (``None``: defaults). Traced.
    policy: a :class:`pgjax.algos.Policy`; ``None`` builds an MLP with ``hidden_sizes``. Static.
    hidden_sizes: MLP hidden layer sizes. Static.
    num_iterations: training iterations (one gradient step each). Static.
    num_envs: trajectories per iteration :math:`B` (>= 2 for a batch baseline). Static.
    num_steps: rollout horizon :math:`T`. Static.
    learning_rate: Adam step size. Traced.
    discount: :math:`\\gamma`. Traced.
    reward_to_go: reward-to-go (True) or full-return (False) weights. Static.
    time_discount: multiply the reward-to-go by :math:`\\gamma^{t - t_0}` (unbiased for the
      discounted objective when :math:`\\gamma < 1`; see :func:`pgjax.losses.reinforce_weights`). Static.
    baseline: any :func:`pgjax.baselines.get` baseline that needs only the returns (``"none"``,
      ``"mean"``, ``"leave_one_out"``, ``"group_normalize"``, a number, a callable ``[B] -> [B]``), taken per
      time step across the ``num_envs`` trajectories (:func:`pgjax.losses.subtract_baseline`). Static.
    normalize_advantages: divide the weights by their batch standard deviation (a common, biased
      rescaling that makes the learning rate scale-free). Static.
    entropy_coef: coefficient of the entropy bonus. Traced.
    max_grad_norm: global-norm gradient clipping (``inf`` disables it). Traced.
    optimizer: ``"adam"``, ``"sgd"`` (plain gradient ascent: vanilla policy gradient), both with
      ``learning_rate``, or any ``optax.GradientTransformation``. Static.
  """

  env: Any = struct.field(pytree_node=False, default="CartPole-v1")
  env_params: Any = None
  policy: Policy | None = struct.field(pytree_node=False, default=None)
  hidden_sizes: Sequence[int] = struct.field(pytree_node=False, default=(64, 64))
  num_iterations: int = struct.field(pytree_node=False, default=100)
  num_envs: int = struct.field(pytree_node=False, default=16)
  num_steps: int = struct.field(pytree_node=False, default=500)
  learning_rate: float = 0.01
  discount: float = 1.0
  reward_to_go: bool = struct.field(pytree_node=False, default=True)
  time_discount: bool = struct.field(pytree_node=False, default=False)
  baseline: Any = struct.field(pytree_node=False, default="leave_one_out")
  normalize_advantages: bool = struct.field(pytree_node=False, default=True)
  entropy_coef: float = 0.0
  max_grad_norm: float = 1.0
  optimizer: Any = struct.field(pytree_node=False, default="adam")


class ReinforceMetrics(NamedTuple):
  """Per-iteration metrics, each ``[num_iterations]``."""

  episode_return: jax.Array  # mean undiscounted return of each env's first episode
  completed_episode_return: jax.Array
  loss: jax.Array
  grad_norm: jax.Array
  entropy: jax.Array  # mean policy entropy (0 when entropy_coef is a concrete 0: not computed)


def make_reinforce_train(config: ReinforceConfig):
  """Builds ``train(key) -> (params, ReinforceMetrics)`` for REINFORCE; see :class:`ReinforceConfig`."""
  num_iterations = check_positive_int(config.num_iterations, "num_iterations")
  num_envs = check_positive_int(config.num_envs, "num_envs")
  num_steps = check_positive_int(config.num_steps, "num_steps")
  check_unit_interval(config.discount, "discount")
  baseline = _baselines.get(config.baseline, num_samples=num_envs, samples_name="num_envs", supports=())
  env, env_params = make_env(config.env, config.env_params)
  policy = config.policy or mlp_policy(env, env_params, config.hidden_sizes)
  tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                   make_optimizer(config.optimizer, config.learning_rate))

  # Skip the entropy (a full extra pass over the batch) when its coefficient is a concrete 0.
  use_entropy = not (is_concrete(config.entropy_coef) and float(config.entropy_coef) == 0.0)

  def loss_fn(params, traj):
    lp, ent = policy_log_prob_entropy(policy, params, traj.obs, traj.actions, entropy=use_entropy)
    w = tl.reinforce_weights(traj.rewards, traj.dones, discount=config.discount,
                             reward_to_go=config.reward_to_go, time_discount=config.time_discount)
    w = tl.subtract_baseline(w, baseline)
    if config.normalize_advantages:
      w = w / (jnp.std(w) + 1e-8)
    loss = tl.policy_gradient_loss(lp, w) / num_steps  # per-step scale: lr independent of T
    if not use_entropy:
      return loss, jnp.zeros((), loss.dtype)
    return loss + config.entropy_coef * tl.entropy_loss(ent), jnp.mean(ent)

  def train(key):
    k_init, k_loop = jax.random.split(key)
    params = policy.init(k_init)
    opt_state = tx.init(params)

    def iteration(carry, k):
      params, opt_state = carry
      traj = rollout(k, policy.apply, params, env, env_params, num_steps=num_steps, num_envs=num_envs)
      (loss, ent), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, traj)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      stats = episode_statistics(traj)
      metrics = ReinforceMetrics(stats.first_episode_return, stats.completed_episode_return, loss,
                                 optax.tree.norm(grads), ent)
      return (params, opt_state), metrics

    (params, _), metrics = jax.lax.scan(iteration, (params, opt_state),
                                        jax.random.split(k_loop, num_iterations))
    return params, metrics

  return train
