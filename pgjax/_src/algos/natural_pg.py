r"""Natural policy gradient and TRPO as ``make_train(config) -> train(key)`` loops (pgjax.natural inside).

Each iteration collects ``num_envs`` windows of ``num_steps`` steps, forms REINFORCE advantages
:math:`A_t` (reward-to-go minus a per-step batch baseline, optionally normalised) and the surrogate

.. math::
   L(\theta') = \operatorname{mean}_{t,b}\ \frac{\pi_{\theta'}(a_t|s_t)}{\pi_\theta(a_t|s_t)} A_t,
   \qquad \nabla L(\theta) = \operatorname{mean}_{t,b}\ \nabla\log\pi_\theta(a_t|s_t) A_t = g,

whose gradient at :math:`\theta` is the policy gradient (per step). The direction
:math:`d = (F + \lambda I)^{-1} g` comes from conjugate gradient on the exact Fisher of the policy's
distribution averaged over the visited states (:func:`pgjax.natural.fisher_vector_product`, a
Gauss-Newton product; the matrix is never formed). Then

* ``method="npg"`` (Kakade, 2001): :math:`\theta \leftarrow \theta + \eta\, d`. By default
  (``step_size=None``) the step is the normalised natural gradient

  .. math::
     \eta = \sqrt{\frac{2\,\delta}{d^\top F d}}, \qquad \tfrac12 (\eta d)^\top F (\eta d) = \delta,

  so that the quadratic model of the mean KL of every step equals the target :math:`\delta` = ``max_kl``
  (undamped :math:`F`, :func:`pgjax.natural.trust_region_step`, no line search; the step rule of
  Schulman et al.'s TRPO without its safeguard, and of Rajeswaran et al., "Towards generalization and
  simplicity in continuous control", NeurIPS 2017). The achieved KL differs from :math:`\delta` by the
  model's third-order error only; it is exact when the policy's mean is linear in the params and its
  variance fixed. With a number ``step_size`` the step is that fixed :math:`\eta`, whose KL scales with
  :math:`|g|^2` and so with the reward scale, the network and the advantage normalisation: a fixed
  :math:`\eta` that moves the policy on one problem can leave it almost still on another;
* ``method="trpo"`` (Schulman et al., 2015): the step is scaled to the KL radius
  (:func:`pgjax.natural.trust_region_step`, undamped curvature) and accepted by the vectorised
  backtracking line search on the exact mean KL and the surrogate
  (:func:`pgjax.natural.backtracking_line_search`).

By default the advantages are Monte-Carlo reward-to-go with a batch baseline (as in the original TRPO
"single path" experiments without a learned value). With ``critic=True`` they are generalised advantages
with a learned value function, the standard form of TRPO (Schulman et al., "High-dimensional continuous
control using generalized advantage estimation", ICLR 2016): advantages from the current critic
(:func:`pgjax.returns.gae`, bootstrapped at the window end and, with ``bootstrap_truncation``, at
time-limit truncations), then the natural-gradient step, then ``critic_steps`` full-batch Adam steps of the
critic on :func:`pgjax.algos.value_loss` towards the :math:`\lambda`-returns. The critic is a separate flax
MLP whose params stay in the scan's carry (``train`` returns the policy params only). Everything runs in
one ``lax.scan``.

Evaluation (``eval_every``): :func:`pgjax.algos.evaluate_policy` on the policy params every ``eval_every``
iterations and after the last, reported as ``metrics.eval_return``, the same metric in every trainer.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import struct

from pgjax._src import fisher as _fisher
from pgjax._src import natural_gradient as _ng
from pgjax._src import baselines as _baselines
from pgjax._src import losses as tl
from pgjax._src.algos.actor_critic import critic_advantages, fit_critic, make_evaluation, mlp_critic
from pgjax._src.algos.loop import Trainer
from pgjax._src.algos.policies import Policy, mlp_policy, policy_log_prob_entropy
from pgjax._src.algos.training import episode_statistics, make_env
from pgjax._src.rollout import rollout
from pgjax._src.validation import check_positive, check_positive_int, check_unit_interval

__all__ = ["NaturalPGConfig", "NaturalPGMetrics", "make_natural_pg_train"]


@struct.dataclass
class NaturalPGConfig:
  """Configuration of :func:`make_natural_pg_train` (frozen; static fields ``pytree_node=False``).

  Attributes:
    env, env_params, policy, hidden_sizes, num_iterations, num_envs, num_steps, discount,
      reward_to_go, time_discount, baseline, normalize_advantages: as in
      :class:`pgjax.algos.ReinforceConfig` (``time_discount`` multiplies the reward-to-go by
      :math:`\\gamma^{t - t_0}`, the unbiased form for :math:`\\gamma < 1`).
    method: ``"npg"`` (no line search) or ``"trpo"`` (KL radius ``max_kl`` + line search). Static.
    step_size: NPG only. ``None`` (default): the step is scaled so that its quadratic-model KL
      :math:`\\tfrac12 s^\\top F s` equals ``max_kl`` (normalised natural gradient); a number: the fixed
      step :math:`\\eta` of :math:`\\theta + \\eta (F + \\lambda I)^{-1} g` (traced, so a grid is a
      ``vmap``). The choice between the two is static.
    max_kl: :math:`\\delta`: TRPO's radius, and NPG's KL target when ``step_size`` is ``None``. Traced.
    damping: :math:`\\lambda` in :math:`(F + \\lambda I)^{-1} g`. Traced.
    cg_iters: conjugate-gradient iterations. Static.
    line_search_steps: TRPO backtracking fractions tried. Static.
    critic, critic_hidden_sizes, critic_learning_rate, critic_steps, gae_lambda, bootstrap_truncation: the
      learned value baseline, as in :class:`pgjax.algos.ReinforceConfig` (``critic=True`` replaces
      ``reward_to_go``, ``time_discount`` and ``baseline``).
    eval_every, eval_episodes, eval_max_steps, eval_greedy: evaluation, as in
      :class:`pgjax.algos.ReinforceConfig`.
  """

  env: Any = struct.field(pytree_node=False, default="CartPole-v1")
  env_params: Any = None
  policy: Policy | None = struct.field(pytree_node=False, default=None)
  hidden_sizes: Sequence[int] = struct.field(pytree_node=False, default=(32, 32))
  num_iterations: int = struct.field(pytree_node=False, default=50)
  num_envs: int = struct.field(pytree_node=False, default=16)
  num_steps: int = struct.field(pytree_node=False, default=500)
  discount: float = 1.0
  reward_to_go: bool = struct.field(pytree_node=False, default=True)
  time_discount: bool = struct.field(pytree_node=False, default=False)
  baseline: Any = struct.field(pytree_node=False, default="leave_one_out")
  normalize_advantages: bool = struct.field(pytree_node=False, default=True)
  method: str = struct.field(pytree_node=False, default="trpo")
  step_size: float | None = None
  max_kl: float = 0.01
  damping: float = 0.1
  cg_iters: int = struct.field(pytree_node=False, default=10)
  line_search_steps: int = struct.field(pytree_node=False, default=10)
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


class NaturalPGMetrics(NamedTuple):
  r"""Per-iteration metrics, each ``[num_iterations]`` except ``eval_return``.

  Attributes:
    episode_return: training metric: mean undiscounted return of each environment's first episode in the
      iteration's window of the *sampling* (stochastic) policy, cut at ``num_steps``.
    completed_episode_return: mean return of the episodes that ended inside the window (0 if none).
    grad_norm: :math:`|g|` of the per-step surrogate.
    kl: exact mean :math:`KL(\pi_{old} \| \pi_{new})` over the visited states after the update.
    step_fraction: TRPO: accepted line-search fraction (0: rejected); NPG: 1.
    cg_residual: conjugate-gradient residual norm.
    value_loss: critic's :func:`pgjax.algos.value_loss` on the iteration's targets before its fit (0
      without a critic).
    eval_return: ``[E]``, :func:`pgjax.algos.evaluate_policy` every ``eval_every`` iterations and after the
      last (``[0]`` without ``eval_every``); comparable across trainers.
  """

  episode_return: jax.Array
  completed_episode_return: jax.Array
  grad_norm: jax.Array
  kl: jax.Array
  step_fraction: jax.Array
  cg_residual: jax.Array
  value_loss: jax.Array
  eval_return: jax.Array


def make_natural_pg_train(config: NaturalPGConfig):
  """Builds ``train(key) -> (params, NaturalPGMetrics)`` for NPG or TRPO; see :class:`NaturalPGConfig`."""
  num_iterations = check_positive_int(config.num_iterations, "num_iterations")
  num_envs = check_positive_int(config.num_envs, "num_envs")
  num_steps = check_positive_int(config.num_steps, "num_steps")
  cg_iters = check_positive_int(config.cg_iters, "cg_iters")
  ls_steps = check_positive_int(config.line_search_steps, "line_search_steps")
  check_unit_interval(config.discount, "discount")
  check_positive(config.step_size, "step_size")  # None (the KL-target rule) and traced values pass
  check_positive(config.max_kl, "max_kl")
  if config.method not in ("npg", "trpo"):
    raise ValueError(f"`method` must be 'npg' or 'trpo', got {config.method!r}.")
  baseline = _baselines.get(config.baseline, num_samples=num_envs, samples_name="num_envs", supports=())
  env, env_params = make_env(config.env, config.env_params)
  policy = config.policy or mlp_policy(env, env_params, config.hidden_sizes)

  use_critic = bool(config.critic)
  if use_critic:
    critic_steps = check_positive_int(config.critic_steps, "critic_steps")
    check_unit_interval(config.gae_lambda, "gae_lambda")
    critic = mlp_critic(env, env_params, config.critic_hidden_sizes)
    critic_tx = optax.adam(config.critic_learning_rate)
  evaluate = make_evaluation(policy.apply, env, env_params, config)
  evaluate_carry = None if evaluate is None else (lambda k, carry: evaluate(k, carry[0]))

  def setup(key):
    k_init, k_loop = jax.random.split(key)
    params = policy.init(k_init)
    critic_state = ()
    if use_critic:
      critic_params = critic.init(jax.random.fold_in(k_init, 1))
      critic_state = (critic_params, critic_tx.init(critic_params))

    def iteration(carry, k):
      params, critic_state = carry
      traj = rollout(k, policy.apply, params, env, env_params, num_steps=num_steps, num_envs=num_envs)
      if use_critic:
        adv, targets, _ = critic_advantages(critic.apply, critic_state[0], traj, discount=config.discount,
                                            gae_lambda=config.gae_lambda,
                                            bootstrap_truncation=config.bootstrap_truncation)
      else:
        w = tl.reinforce_weights(traj.rewards, traj.dones, discount=config.discount,
                                 reward_to_go=config.reward_to_go, time_discount=config.time_discount)
        adv = tl.subtract_baseline(w, baseline)
      if config.normalize_advantages:
        adv = adv / (jnp.std(adv) + 1e-8)
      adv = jax.lax.stop_gradient(adv)
      old_lp = jax.lax.stop_gradient(policy_log_prob_entropy(policy, params, traj.obs, traj.actions)[0])
      old_dist = policy.apply(params, traj.obs)

      def surrogate(p):
        lp, _ = policy_log_prob_entropy(policy, p, traj.obs, traj.actions)
        return jnp.mean(jnp.exp(lp - old_lp) * adv)

      def mean_kl(p):
        kl = old_dist.kl_divergence(policy.apply(p, traj.obs))
        return jnp.mean(kl)

      g = jax.grad(surrogate)(params)
      fvp = _fisher.fisher_vector_product(lambda p: policy.apply(p, traj.obs), params)
      d, cg_info = _ng.natural_gradient(g, fvp, damping=config.damping, iters=cg_iters)
      if config.method == "npg":
        if config.step_size is None:  # normalised: quadratic-model KL of the step = max_kl
          d, _ = _ng.trust_region_step(d, g, fvp, max_kl=config.max_kl)
          new_params = jax.tree.map(lambda p, x: p + x, params, d)
        else:
          new_params = jax.tree.map(lambda p, x: p + config.step_size * x, params, d)
        fraction = jnp.ones(())
      else:
        step, tr = _ng.trust_region_step(d, g, fvp, max_kl=config.max_kl)
        new_params, ls = _ng.backtracking_line_search(
            surrogate, mean_kl, params, step, max_kl=config.max_kl,
            expected_improvement=tr.expected_improvement, num_steps=ls_steps)
        fraction = ls.step_fraction
      vloss = jnp.zeros((), jnp.float32)
      if use_critic:
        cp, cs, vloss = fit_critic(critic.apply, critic_tx, *critic_state, traj.obs, targets,
                                   num_steps=critic_steps)
        critic_state = (cp, cs)
      stats = episode_statistics(traj)
      metrics = (stats.first_episode_return, stats.completed_episode_return, optax.tree.norm(g),
                 mean_kl(new_params), fraction, cg_info.residual_norm, vloss)
      return (new_params, critic_state), metrics

    return (params, critic_state), k_loop, iteration

  return Trainer(setup, num_iterations=num_iterations, params=lambda carry: carry[0],
                 metrics=lambda m, evals: NaturalPGMetrics(*m, eval_return=evals), evaluate=evaluate_carry,
                 eval_every=config.eval_every)
