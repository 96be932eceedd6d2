r"""REINFORCE (Williams, 1992) as a fully jitted ``make_train(config) -> train(key)`` loop.

Each iteration: ``num_envs`` environments run ``num_steps`` steps from a fresh reset
(:func:`pgjax.rollout`, auto-reset inside the window), the REINFORCE pseudo-loss
(:func:`pgjax.losses.reinforce_loss`: reward-to-go or full return, a per-time-step batch baseline)
is differentiated and one optax step is taken. The iterations run in one ``lax.scan``, so
``jax.jit(jax.vmap(make_train(config)))(keys)`` trains many seeds at once; numeric config fields are
traced (a ``vmap`` over configs sweeps them) and shape-changing ones are static.

The objective is :math:`J = E[\sum_{t<T} \gamma^t r_t]` over the window (for CartPole with
``num_steps`` = the episode limit: the expected episode length).

With ``critic=True`` the weights are generalised advantages (:func:`pgjax.returns.gae`) computed with a
learned value :math:`V_\phi(s)` (a separate flax MLP with ``critic_hidden_sizes``, orthogonal initialisation)
instead of the per-time-step batch baseline: the recursion stops at episode ends, unfinished episodes are
bootstrapped from :math:`V_\phi(s_T)`, and time-limit truncations from :math:`V_\phi(s_{t+1})`
(``bootstrap_truncation``). After the policy step the critic takes ``critic_steps`` full-batch Adam steps
on :func:`pgjax.algos.value_loss` towards the :math:`\lambda`-returns (Schulman et al., "High-dimensional
continuous control using generalized advantage estimation", ICLR 2016). This matters when every episode in
a batch has the same return (e.g. all truncated at a time limit): then the per-time-step batch baseline
makes every weight 0 up to rounding (which ``normalize_advantages`` rescales into a random direction),
while the learned values still separate the states. The critic's params live in the scan's carry;
``train`` returns the policy params only.

Evaluation (``eval_every``): :func:`pgjax.algos.evaluate_policy` on the policy params every ``eval_every``
iterations and after the last, reported as ``metrics.eval_return``, the same metric in every trainer.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import struct

from pgjax._src import baselines as _baselines
from pgjax._src import losses as tl
from pgjax._src.algos.actor_critic import critic_advantages, fit_critic, make_evaluation, mlp_critic
from pgjax._src.algos.loop import Trainer
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
      rescaling that makes the learning rate scale-free); with ``critic=True`` the batch mean is subtracted
      first (a batch-mean baseline, biased only through each sample's 1/N share of the mean: it removes the
      critic's common offset, its largest error while it is still far from the returns). Static.
    entropy_coef: coefficient of the entropy bonus. Traced.
    max_grad_norm: global-norm gradient clipping (``inf`` disables it). Traced.
    optimizer: ``"adam"``, ``"sgd"`` (plain gradient ascent: vanilla policy gradient), both with
      ``learning_rate``, or any ``optax.GradientTransformation``. Static.
    critic: learn a value function and use GAE advantages instead of ``reward_to_go``,
      ``time_discount`` and ``baseline`` (which are then ignored). Use ``discount < 1`` with it when
      ``bootstrap_truncation`` is on: with :math:`\\gamma = 1` the value of a policy that never terminates
      is unbounded, and each fit moves the critic's targets by about :math:`-1/(1-\\lambda)` again (the
      value loss does not decrease). Static.
    critic_hidden_sizes: hidden layers of the critic MLP. Static.
    critic_learning_rate: Adam step size of the critic. Traced.
    critic_steps: full-batch critic steps per iteration. Static.
    gae_lambda: :math:`\\lambda` of the GAE advantages. Traced.
    bootstrap_truncation: bootstrap time-limit truncations with the critic. Static.
    eval_every: evaluate the policy every this many iterations and after the last (``None``: never). Static.
    eval_episodes, eval_max_steps: fresh episodes per evaluation and their step limit. Static.
    eval_greedy: evaluate the policy's mode (True) or sample actions (False). Static.
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
  critic: bool = struct.field(pytree_node=False, default=False)
  critic_hidden_sizes: Sequence[int] = struct.field(pytree_node=False, default=(64, 64))
  critic_learning_rate: float = 1e-2
  critic_steps: int = struct.field(pytree_node=False, default=20)
  gae_lambda: float = 0.95
  bootstrap_truncation: bool = struct.field(pytree_node=False, default=True)
  eval_every: int | None = struct.field(pytree_node=False, default=None)
  eval_episodes: int = struct.field(pytree_node=False, default=8)
  eval_max_steps: int = struct.field(pytree_node=False, default=500)
  eval_greedy: bool = struct.field(pytree_node=False, default=True)


class ReinforceMetrics(NamedTuple):
  """Per-iteration metrics, each ``[num_iterations]`` except ``eval_return``.

  Attributes:
    episode_return: training metric: mean undiscounted return of each environment's first episode in the
      iteration's window of the *sampling* (stochastic) policy, cut at ``num_steps``.
    completed_episode_return: mean return of the episodes that ended inside the window (0 if none).
    loss: the REINFORCE pseudo-loss (per step).
    grad_norm: global norm of the policy gradient before clipping.
    entropy: mean policy entropy (0 when ``entropy_coef`` is a concrete 0: not computed).
    value_loss: critic's :func:`pgjax.algos.value_loss` on the iteration's targets before its fit (0
      without a critic).
    eval_return: ``[E]``, :func:`pgjax.algos.evaluate_policy` every ``eval_every`` iterations and after the
      last (``[0]`` without ``eval_every``); comparable across trainers.
  """

  episode_return: jax.Array
  completed_episode_return: jax.Array
  loss: jax.Array
  grad_norm: jax.Array
  entropy: jax.Array
  value_loss: jax.Array
  eval_return: jax.Array


def make_reinforce_train(config: ReinforceConfig):
  """Builds ``train(key) -> (params, ReinforceMetrics)`` for REINFORCE (a :class:`pgjax.algos.Trainer`,
  resumable); see :class:`ReinforceConfig`."""
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

  use_critic = bool(config.critic)
  if use_critic:
    critic_steps = check_positive_int(config.critic_steps, "critic_steps")
    check_unit_interval(config.gae_lambda, "gae_lambda")
    critic = mlp_critic(env, env_params, config.critic_hidden_sizes)
    critic_tx = optax.adam(config.critic_learning_rate)
  evaluate = make_evaluation(policy.apply, env, env_params, config)
  if evaluate is not None:
    evaluate_carry = lambda k, carry: evaluate(k, carry[0])
  else:
    evaluate_carry = None

  def loss_fn(params, traj, adv):
    lp, ent = policy_log_prob_entropy(policy, params, traj.obs, traj.actions, entropy=use_entropy)
    if adv is None:
      w = tl.reinforce_weights(traj.rewards, traj.dones, discount=config.discount,
                               reward_to_go=config.reward_to_go, time_discount=config.time_discount)
      w = tl.subtract_baseline(w, baseline)
    else:
      w = adv
    if config.normalize_advantages:
      if adv is not None:   # a learned critic's common offset is a baseline: remove it before scaling
        w = w - jnp.mean(w)
      w = w / (jnp.std(w) + 1e-8)
    loss = tl.policy_gradient_loss(lp, w) / num_steps  # per-step scale: lr independent of T
    if not use_entropy:
      return loss, jnp.zeros((), loss.dtype)
    return loss + config.entropy_coef * tl.entropy_loss(ent), jnp.mean(ent)

  def setup(key):
    k_init, k_loop = jax.random.split(key)
    params = policy.init(k_init)
    opt_state = tx.init(params)
    critic_state = ()
    if use_critic:
      critic_params = critic.init(jax.random.fold_in(k_init, 1))
      critic_state = (critic_params, critic_tx.init(critic_params))

    def iteration(carry, k):
      params, opt_state, critic_state = carry
      traj = rollout(k, policy.apply, params, env, env_params, num_steps=num_steps, num_envs=num_envs)
      adv = None
      if use_critic:
        adv, targets, _ = critic_advantages(critic.apply, critic_state[0], traj, discount=config.discount,
                                            gae_lambda=config.gae_lambda,
                                            bootstrap_truncation=config.bootstrap_truncation)
      (loss, ent), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, traj, adv)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      vloss = jnp.zeros((), loss.dtype)
      if use_critic:
        cp, cs, vloss = fit_critic(critic.apply, critic_tx, *critic_state, traj.obs, targets,
                                   num_steps=critic_steps)
        critic_state = (cp, cs)
      stats = episode_statistics(traj)
      metrics = (stats.first_episode_return, stats.completed_episode_return, loss, optax.tree.norm(grads),
                 ent, vloss)
      return (params, opt_state, critic_state), metrics

    return (params, opt_state, critic_state), k_loop, iteration

  return Trainer(setup, num_iterations=num_iterations, params=lambda carry: carry[0],
                 metrics=lambda m, evals: ReinforceMetrics(*m, eval_return=evals), evaluate=evaluate_carry,
                 eval_every=config.eval_every)
