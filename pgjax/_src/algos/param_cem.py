r"""The cross-entropy method on policy parameters, as a ``make_train(config) -> train(key)`` loop.

A diagonal Gaussian over the policy's parameter pytree (:mod:`pgjax.cem`) is sampled, each member is
scored by the mean return of ``episodes_per_eval`` episodes (deterministic policy by default), and the
Gaussian is refitted by maximum likelihood to the elite (top ``elite_fraction``) with smoothing and
a decaying noise floor (Szita & Lőrincz, "Learning Tetris Using the Noisy Cross-Entropy Method",
2006). The update is the maximum-likelihood (KL) projection of the elite-weighted importance-sampling
estimate onto the Gaussian family (Rubinstein & Kroese, *The Cross-Entropy Method*, 2004). One
``lax.scan``; ``vmap`` over seeds.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
from flax import struct

from pgjax._src import cem as _cem
from pgjax._src.algos.es import episode_fitness
from pgjax._src.algos.actor_critic import make_evaluation
from pgjax._src.algos.loop import Trainer
from pgjax._src.algos.policies import Policy, mlp_policy
from pgjax._src.algos.training import make_env
from pgjax._src.validation import check_positive_int

__all__ = ["ParamCEMConfig", "ParamCEMMetrics", "make_param_cem_train"]


@struct.dataclass
class ParamCEMConfig:
  """Configuration of :func:`make_param_cem_train` (frozen; static fields ``pytree_node=False``).

  Attributes:
    env, env_params, policy, hidden_sizes, num_iterations, num_steps: as in
      :class:`pgjax.algos.ReinforceConfig`.
    population_size: members per generation. Static.
    elite_fraction: :math:`\\rho` (sets the elite size). Static.
    episodes_per_eval: episodes averaged per member. Static.
    deterministic: act with the policy's mode. Static.
    init_std: initial standard deviation of every parameter. Traced.
    extra_std: initial noise floor, decayed by ``extra_std_decay`` per generation. Traced.
    extra_std_decay: traced.
    mean_smoothing: weight on the old mean. Traced.
    eval_every, eval_episodes, eval_max_steps, eval_greedy: evaluation of the search distribution's mean with
      :func:`pgjax.algos.evaluate_policy` every ``eval_every`` iterations and after the last
      (``None``: never), as in :class:`pgjax.algos.ReinforceConfig`. Static.
  """

  env: Any = struct.field(pytree_node=False, default="CartPole-v1")
  env_params: Any = None
  policy: Policy | None = struct.field(pytree_node=False, default=None)
  hidden_sizes: Sequence[int] = struct.field(pytree_node=False, default=(16,))
  num_iterations: int = struct.field(pytree_node=False, default=30)
  num_steps: int = struct.field(pytree_node=False, default=500)
  population_size: int = struct.field(pytree_node=False, default=32)
  elite_fraction: float = struct.field(pytree_node=False, default=0.2)
  episodes_per_eval: int = struct.field(pytree_node=False, default=1)
  deterministic: bool = struct.field(pytree_node=False, default=True)
  init_std: float = 0.5
  extra_std: float = 0.1
  extra_std_decay: float = 0.95
  mean_smoothing: float = 0.0
  eval_every: int | None = struct.field(pytree_node=False, default=None)
  eval_episodes: int = struct.field(pytree_node=False, default=8)
  eval_max_steps: int = struct.field(pytree_node=False, default=500)
  eval_greedy: bool = struct.field(pytree_node=False, default=True)


class ParamCEMMetrics(NamedTuple):
  """Per-iteration metrics, each ``[num_iterations]`` except ``eval_return`` (:class:`pgjax.cem.CEMInfo`).

  Attributes:
    episode_return: training metric: mean fitness of the *sampled population* (its members' mode returns by
      default, ``deterministic``), not of the distribution's mean.
    max_return: best fitness in the population.
    elite_threshold: lowest elite fitness.
    std_mean: mean standard deviation of the search distribution.
    eval_return: ``[E]``, :func:`pgjax.algos.evaluate_policy` of the search distribution's mean every
      ``eval_every`` iterations and after the last (``[0]`` without ``eval_every``); comparable across
      trainers.
  """

  episode_return: jax.Array
  max_return: jax.Array
  elite_threshold: jax.Array
  std_mean: jax.Array
  eval_return: jax.Array


def make_param_cem_train(config: ParamCEMConfig):
  """Builds ``train(key) -> (params, ParamCEMMetrics)`` (a resumable :class:`pgjax.algos.Trainer`);
  ``params`` is the final CEM mean."""
  num_iterations = check_positive_int(config.num_iterations, "num_iterations")
  num_steps = check_positive_int(config.num_steps, "num_steps")
  episodes = check_positive_int(config.episodes_per_eval, "episodes_per_eval")
  env, env_params = make_env(config.env, config.env_params)
  policy = config.policy or mlp_policy(env, env_params, config.hidden_sizes)
  fitness = episode_fitness(policy, env, env_params, num_steps=num_steps, num_episodes=episodes,
                            deterministic=config.deterministic)
  cem = _cem.cross_entropy_method(population_size=config.population_size,
                                  elite_fraction=config.elite_fraction,
                                  mean_smoothing=config.mean_smoothing, extra_std=config.extra_std,
                                  extra_std_decay=config.extra_std_decay, f_takes_key=True)

  evaluate = make_evaluation(policy.apply, env, env_params, config)
  evaluate_state = None if evaluate is None else (lambda k, state: evaluate(k, state.mean))

  def setup(key):
    k_init, k_loop = jax.random.split(key)
    state = cem.init(policy.init(k_init), config.init_std)
    # the generations of pgjax.cem.run (same keys), with the evaluation between blocks
    return state, k_loop, lambda s, k: cem.step(k, s, fitness)

  def metrics(info, evals):
    return ParamCEMMetrics(info.fitness_mean, info.fitness_max, info.elite_threshold, info.std_mean, evals)

  return Trainer(setup, num_iterations=num_iterations, params=lambda state: state.mean, metrics=metrics,
                 evaluate=evaluate_state, eval_every=config.eval_every)
