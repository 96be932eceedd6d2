r"""Evolution strategies (zeroth-order policy search) as a ``make_train(config) -> train(key)`` loop.

The fitness of parameters :math:`\theta` is the mean undiscounted return of ``episodes_per_eval``
episodes played with the policy (deterministic by default: the distribution's mode, as in Salimans
et al., 2017). Each iteration estimates the gradient of the Gaussian-smoothed fitness
:math:`f_\sigma(\theta) = E_{u\sim N(0, I)}[f(\theta + \sigma u)]` with
:func:`pgjax.zeroth_order` (antithetic pairs, optional rank shaping — which changes the estimand)
and hands it to any optax optimiser (as ``evosax``'s OpenES does): ascent on :math:`f_\sigma`, i.e.
the optimiser receives :math:`-\hat g`. One ``lax.scan`` over iterations; ``vmap`` over seeds.

Reference: T. Salimans, J. Ho, X. Chen, S. Sidor, I. Sutskever, "Evolution Strategies as a Scalable
Alternative to Reinforcement Learning", 2017, https://arxiv.org/abs/1703.03864.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import distrax
import jax
import jax.numpy as jnp
import optax
from flax import struct

from pgjax._src import returns as _returns
from pgjax._src.algos.actor_critic import make_evaluation
from pgjax._src.algos.loop import Trainer
from pgjax._src.algos.policies import Policy, mlp_policy
from pgjax._src.algos.training import make_env, make_optimizer
from pgjax._src.rollout import rollout
from pgjax._src.validation import check_positive_int
from pgjax._src.zeroth_order import zeroth_order

__all__ = ["ESConfig", "ESMetrics", "episode_fitness", "make_es_train"]


@struct.dataclass
class ESConfig:
  """Configuration of :func:`make_es_train` (frozen; static fields ``pytree_node=False``).

  Attributes:
    env, env_params, policy, hidden_sizes, num_iterations, num_steps: as in
      :class:`pgjax.algos.ReinforceConfig`.
    num_directions: perturbations per iteration :math:`N` (even for antithetic pairs). Static.
    episodes_per_eval: episodes averaged per fitness evaluation. Static.
    deterministic: act with the policy's mode (True) or sample (False). Static.
    scheme: ``"antithetic"``, ``"forward"`` or ``"plain"`` (see :func:`pgjax.zeroth_order`). Static.
    shaping: ``None`` or ``"centered_ranks"`` (OpenAI-ES fitness shaping; changes the estimand). Static.
    baseline: :func:`pgjax.zeroth_order`'s ``baseline``: ``None`` for the scheme's own (none for antithetic
      pairs, :math:`f(\\theta)` for forward differences); with ``scheme="plain"`` any
      :func:`pgjax.baselines.get` baseline (``"mean"``, ``"leave_one_out"``, ``"optimal"``, a number or a
      callable ``[N] -> [N]``). Static.
    sigma: smoothing scale :math:`\\sigma`. Traced.
    learning_rate: step size of the optimiser. Traced.
    optimizer: ``"adam"``, ``"sgd"`` (with ``learning_rate``) or any ``optax.GradientTransformation``
      (e.g. ``optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(3e-3))``). Static.
    eval_every, eval_episodes, eval_max_steps, eval_greedy: evaluation of the unperturbed params with
      :func:`pgjax.algos.evaluate_policy` every ``eval_every`` iterations and after the last
      (``None``: never), as in :class:`pgjax.algos.ReinforceConfig`. Static.
  """

  env: Any = struct.field(pytree_node=False, default="CartPole-v1")
  env_params: Any = None
  policy: Policy | None = struct.field(pytree_node=False, default=None)
  hidden_sizes: Sequence[int] = struct.field(pytree_node=False, default=(16,))
  num_iterations: int = struct.field(pytree_node=False, default=50)
  num_steps: int = struct.field(pytree_node=False, default=500)
  num_directions: int = struct.field(pytree_node=False, default=32)
  episodes_per_eval: int = struct.field(pytree_node=False, default=1)
  deterministic: bool = struct.field(pytree_node=False, default=True)
  scheme: str = struct.field(pytree_node=False, default="antithetic")
  shaping: str | None = struct.field(pytree_node=False, default="centered_ranks")
  baseline: Any = struct.field(pytree_node=False, default=None)
  sigma: float = 0.1
  learning_rate: float = 0.03
  optimizer: Any = struct.field(pytree_node=False, default="adam")
  eval_every: int | None = struct.field(pytree_node=False, default=None)
  eval_episodes: int = struct.field(pytree_node=False, default=8)
  eval_max_steps: int = struct.field(pytree_node=False, default=500)
  eval_greedy: bool = struct.field(pytree_node=False, default=True)


class ESMetrics(NamedTuple):
  r"""Per-iteration metrics, each ``[num_iterations]`` except ``eval_return``.

  Attributes:
    episode_return: training metric: mean fitness of the *perturbed* population
      :math:`\theta + \sigma u_i` (its mode's return by default, ``deterministic``), not of
      :math:`\theta` itself.
    max_return: best fitness in the perturbed population.
    grad_norm: norm of the smoothed-fitness gradient estimate.
    eval_return: ``[E]``, :func:`pgjax.algos.evaluate_policy` of the unperturbed params every ``eval_every``
      iterations and after the last (``[0]`` without ``eval_every``); comparable across trainers.
  """

  episode_return: jax.Array
  max_return: jax.Array
  grad_norm: jax.Array
  eval_return: jax.Array


def episode_fitness(policy: Policy, env: Any, env_params: Any, *, num_steps: int, num_episodes: int,
                    deterministic: bool = True):
  """``fitness(key, params)``: mean undiscounted return of each window's first episode."""

  def apply(params, obs):
    dist = policy.apply(params, obs)
    return distrax.Deterministic(dist.mode()) if deterministic else dist

  def fitness(key, params):
    traj = rollout(key, apply, params, env, env_params, num_steps=num_steps, num_envs=num_episodes)
    mask = _returns.first_episode_mask(traj.dones)
    return jnp.mean(jnp.sum(jnp.where(mask, traj.rewards, 0.0), axis=0))

  return fitness


def make_es_train(config: ESConfig):
  """Builds ``train(key) -> (params, ESMetrics)`` (a resumable :class:`pgjax.algos.Trainer`); see
  :class:`ESConfig`."""
  num_iterations = check_positive_int(config.num_iterations, "num_iterations")
  num_steps = check_positive_int(config.num_steps, "num_steps")
  episodes = check_positive_int(config.episodes_per_eval, "episodes_per_eval")
  env, env_params = make_env(config.env, config.env_params)
  policy = config.policy or mlp_policy(env, env_params, config.hidden_sizes)
  fitness = episode_fitness(policy, env, env_params, num_steps=num_steps, num_episodes=episodes,
                            deterministic=config.deterministic)
  estimator = zeroth_order(fitness, num_directions=config.num_directions, sigma=config.sigma,
                           scheme=config.scheme, shaping=config.shaping, baseline=config.baseline,
                           f_takes_key=True)
  tx = make_optimizer(config.optimizer, config.learning_rate)
  evaluate = make_evaluation(policy.apply, env, env_params, config)
  evaluate_carry = None if evaluate is None else (lambda k, carry: evaluate(k, carry[0]))

  def setup(key):
    k_init, k_loop = jax.random.split(key)
    params = policy.init(k_init)
    opt_state = tx.init(params)

    def iteration(carry, k):
      params, opt_state = carry
      g, aux = estimator(k, params)
      updates, opt_state = tx.update(jax.tree.map(jnp.negative, g), opt_state, params)
      params = optax.apply_updates(params, updates)
      return (params, opt_state), (jnp.mean(aux.values), jnp.max(aux.values), optax.tree.norm(g))

    return (params, opt_state), k_loop, iteration

  return Trainer(setup, num_iterations=num_iterations, params=lambda carry: carry[0],
                 metrics=lambda m, evals: ESMetrics(*m, eval_return=evals), evaluate=evaluate_carry,
                 eval_every=config.eval_every)
