r"""Policy search with a natural evolution strategy (SNES, xNES or PGPE) as ``make_train(config) -> train(key)``.

The search distribution's step sizes adapt (per parameter for SNES and PGPE, a full covariance for xNES),
unlike the fixed-:math:`\sigma` evolution strategy of :func:`pgjax.algos.make_es_train`. The fitness of
parameters :math:`\theta` is the mean undiscounted return of ``episodes_per_eval`` episodes played with the
policy (its mode by default, as in Salimans et al. 2017), and :mod:`pgjax.nes` maximises
:math:`\mathbb{E}_{\theta\sim\pi_\psi}[\text{return}(\theta)]`. One ``lax.scan`` over generations; ``vmap``
over seeds. The returned params are the search distribution's final mean.

References:
  D. Wierstra et al., "Natural evolution strategies", JMLR 2014.
  F. Sehnke et al., "Parameter-exploring policy gradients", Neural Networks 2010.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import optax
from flax import struct

from pgjax._src import nes as _nes
from pgjax._src.algos.actor_critic import make_evaluation
from pgjax._src.algos.loop import Trainer
from pgjax._src.algos.policies import Policy, mlp_policy
from pgjax._src.algos.training import make_env
from pgjax._src.algos.es import episode_fitness
from pgjax._src.validation import check_positive_int

__all__ = ["NESConfig", "NESMetrics", "make_nes_train"]

_STRATEGIES = ("snes", "xnes", "pgpe")


@struct.dataclass
class NESConfig:
  """Configuration of :func:`make_nes_train` (frozen; static fields ``pytree_node=False``).

  Attributes:
    env, env_params, policy, hidden_sizes, num_iterations, num_steps: as in
      :class:`pgjax.algos.ReinforceConfig` (``num_iterations`` counts generations).
    strategy: ``"snes"`` (default), ``"xnes"`` or ``"pgpe"``. Static.
    population_size: members per generation; ``None`` for the strategy's default
      :math:`4 + \\lfloor 3 \\ln d \\rfloor`. Static.
    episodes_per_eval: episodes averaged per member. Static.
    deterministic: act with the policy's mode. Static.
    init_sigma: initial step size of every parameter. Traced.
    learning_rate_mean: :math:`\\eta_\\mu` (SNES/xNES; ``None`` for the paper's default 1). Traced.
    learning_rate_sigma: :math:`\\eta_\\sigma` (``None`` for the paper's default). Traced.
    pgpe_learning_rate: Adam step size of PGPE's mean. Traced.
    eval_every, eval_episodes, eval_max_steps, eval_greedy: evaluation of the search distribution's mean with
      :func:`pgjax.algos.evaluate_policy` every ``eval_every`` iterations and after the last
      (``None``: never), as in :class:`pgjax.algos.ReinforceConfig`. Static.
  """

  env: Any = struct.field(pytree_node=False, default="CartPole-v1")
  env_params: Any = None
  policy: Policy | None = struct.field(pytree_node=False, default=None)
  hidden_sizes: Sequence[int] = struct.field(pytree_node=False, default=(16,))
  num_iterations: int = struct.field(pytree_node=False, default=50)
  num_steps: int = struct.field(pytree_node=False, default=500)
  strategy: str = struct.field(pytree_node=False, default="snes")
  population_size: int | None = struct.field(pytree_node=False, default=None)
  episodes_per_eval: int = struct.field(pytree_node=False, default=1)
  deterministic: bool = struct.field(pytree_node=False, default=True)
  init_sigma: float = 0.5
  learning_rate_mean: float | None = None
  learning_rate_sigma: float | None = None
  pgpe_learning_rate: float = 0.05
  eval_every: int | None = struct.field(pytree_node=False, default=None)
  eval_episodes: int = struct.field(pytree_node=False, default=8)
  eval_max_steps: int = struct.field(pytree_node=False, default=500)
  eval_greedy: bool = struct.field(pytree_node=False, default=True)


class NESMetrics(NamedTuple):
  """Per-generation metrics, each ``[num_iterations]`` (from :class:`pgjax.nes.NESInfo`).

  Attributes:
    episode_return: training metric: mean return over the *sampled population* (its members' mode returns
      by default, ``deterministic``), not of the distribution's mean.
    max_return: best return in the population.
    best_return: best return seen so far.
    sigma_mean: mean step size of the search distribution.
    eval_return: ``[E]``, :func:`pgjax.algos.evaluate_policy` of the search distribution's mean every
      ``eval_every`` iterations and after the last (``[0]`` without ``eval_every``); comparable across
      trainers.
  """

  episode_return: jax.Array
  max_return: jax.Array
  best_return: jax.Array
  sigma_mean: jax.Array
  eval_return: jax.Array


def _strategy(config: NESConfig) -> _nes.EvolutionStrategy:
  if config.strategy not in _STRATEGIES:
    raise ValueError(f"`strategy` must be one of {_STRATEGIES}, got {config.strategy!r}.")
  if config.strategy == "pgpe":
    if config.learning_rate_mean is not None:
      raise ValueError("`learning_rate_mean` is for snes/xnes; PGPE's mean uses `pgpe_learning_rate` (Adam).")
    return _nes.pgpe(population_size=config.population_size, optimizer=optax.adam(config.pgpe_learning_rate),
                     f_takes_key=True, **({} if config.learning_rate_sigma is None
                                          else {"learning_rate_sigma": config.learning_rate_sigma}))
  make = _nes.snes if config.strategy == "snes" else _nes.xnes
  return make(population_size=config.population_size, learning_rate_mean=config.learning_rate_mean,
              learning_rate_sigma=config.learning_rate_sigma, f_takes_key=True)


def make_nes_train(config: NESConfig):
  """Builds ``train(key) -> (params, NESMetrics)`` (a resumable :class:`pgjax.algos.Trainer`); ``params`` is
  the final mean of the search distribution."""
  num_iterations = check_positive_int(config.num_iterations, "num_iterations")
  num_steps = check_positive_int(config.num_steps, "num_steps")
  episodes = check_positive_int(config.episodes_per_eval, "episodes_per_eval")
  env, env_params = make_env(config.env, config.env_params)
  policy = config.policy or mlp_policy(env, env_params, config.hidden_sizes)
  fitness = episode_fitness(policy, env, env_params, num_steps=num_steps, num_episodes=episodes,
                            deterministic=config.deterministic)
  strategy = _strategy(config)

  evaluate = make_evaluation(policy.apply, env, env_params, config)
  evaluate_state = None if evaluate is None else (lambda k, state: evaluate(k, state.mean))

  def setup(key):
    k_init, k_loop = jax.random.split(key)
    state = strategy.init(policy.init(k_init), config.init_sigma)
    # the generations of pgjax.nes.run without restarts (same keys), with the evaluation between blocks
    return state, k_loop, lambda s, k: strategy.step(k, s, fitness)

  def metrics(info, evals):
    return NESMetrics(info.fitness_mean, info.fitness_max, info.best_fitness, info.sigma_mean, evals)

  return Trainer(setup, num_iterations=num_iterations, params=lambda state: state.mean, metrics=metrics,
                 evaluate=evaluate_state, eval_every=config.eval_every)
