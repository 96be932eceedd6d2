"""Training loops in the ``make_train(config) -> train(key) -> (params, metrics)`` shape.

Each loop is fully jitted with the iterations in one ``lax.scan``; ``config`` is a frozen
``flax.struct.dataclass`` (numeric fields traced, shape-changing fields static), so
``jax.jit(jax.vmap(make_train(config)))(jax.random.split(key, num_seeds))`` trains many seeds at once.
:func:`make_train` dispatches on the config's type. Every trainer is a :class:`Trainer`: it also runs in
resumable pieces (``Trainer.init``, ``Trainer.run``), whose :class:`TrainState` :func:`save_checkpoint` and
:func:`load_checkpoint` write and read, and takes an optional host logging callback (``make_train(config,
callback=...)``, e.g. :class:`ProgressBar`) that works under ``jit`` and ``vmap``.

CPU pitfall (measured with jax/jaxlib 0.10.2): a jitted ``vmap`` of a trainer over 128 or more seeds
(REINFORCE on CartPole, 4 environments each; also a plain PureJaxRL-style REINFORCE written without
pgjax) can deadlock on the CPU backend -- every thread waits on a futex after compilation -- while 64
or 96 seeds run. Setting ``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false`` before
importing jax fixes it (``experiments/benchmarks/reinforce_cartpole.py`` does so).

Settings measured on the benchmark problems by ``python -m experiments.rl_trainers`` (which runs exactly these
settings; fields not listed keep their defaults): the greedy policy's return (:func:`evaluate_policy`, 8
episodes) after the stated training steps, median [interquartile range] over seeds, and the fraction of seeds
solved (CartPole-v1: >= 475; Acrobot-v1: >= -100, where -500 is the truncation floor, followed by the fraction
of seeds whose final return is still -500). On Acrobot-v1, while every episode of a window is truncated,
Monte-Carlo advantages minus a batch baseline are exactly zero, and a learned critic, once fitted, predicts
the same bootstrapped value everywhere: no advantage estimator carries a reward signal before some episode
reaches the goal, so the fraction of seeds left at -500 measures the update's exploration. A critic with
bootstrapped truncations needs ``discount < 1``: with ``discount=1`` the value of a policy that never
terminates is unbounded and the critic's targets keep falling (REINFORCE+critic then left 36% of 64 seeds
at -500).

.. list-table::
   :header-rows: 1

   * - trainer
     - CartPole-v1
     - Acrobot-v1
   * - REINFORCE: ``ReinforceConfig(num_envs=8, num_steps=500, learning_rate=0.01)``
     - 40 iterations (1.6e5 steps): 500 [500, 500], 88% of 64 seeds solved
     - 25 iterations (1e5 steps): -90 [-311, -83], 61% of 64 seeds solved, 25% at -500 (with
       ``entropy_coef=0.1``: -102 [-341, -86], 22% at -500)
   * - REINFORCE+critic: the same with ``critic=True``; ``discount=0.99, entropy_coef=0.1`` on Acrobot-v1
     - 40 iterations (1.6e5 steps): 500 [500, 500], 81% of 64 seeds solved
     - 25 iterations (1e5 steps): -83 [-90, -81], 94% of 64 seeds solved, 0% at -500
   * - A2C: ``A2CConfig()`` (16 environments x 8 steps per update)
     - 1500 updates (1.9e5 steps): 490 [374, 500], 55% of 64 seeds solved
     - 1000 updates (1.3e5 steps): -96 [-187, -84], 52% of 64 seeds solved, 3% at -500
   * - PPO: ``PPOConfig()`` (PureJaxRL's settings, 4 x 128 steps per update)
     - 976 updates (5e5 steps, PureJaxRL's budget): 500 [500, 500], 100% of 64 seeds solved (88% after
       500 updates)
     - 200 updates (1e5 steps): -95 [-150, -85], 59% of 64 seeds solved, 11% at -500
   * - NPG: ``NaturalPGConfig(method="npg", num_envs=8, num_steps=500)``, ``max_kl`` 0.02 / 0.01,
       ``critic=True`` on Acrobot-v1
     - 30 iterations (1.2e5 steps): 485 [447, 500], 58% of 64 seeds solved
     - 25 iterations (1e5 steps): -84 [-93, -80], 84% of 64 seeds solved, 5% at -500
   * - TRPO: ``NaturalPGConfig(method="trpo", num_envs=8, num_steps=500, max_kl=0.02)``, ``critic=True`` on
       Acrobot-v1
     - 30 iterations (1.2e5 steps): 500 [475, 500], 75% of 64 seeds solved
     - 25 iterations (1e5 steps): -83 [-88, -80], 91% of 64 seeds solved, 6% at -500
   * - ES: ``ESConfig(num_directions=32, sigma=0.1, learning_rate=0.03)`` (16-unit MLP)
     - 40 iterations (6.4e5 steps): 500 [500, 500], 94% of 64 seeds solved
     - 20 iterations (3.2e5 steps): -83 [-91, -79], 91% of 64 seeds solved, 0% at -500
   * - CEM: ``ParamCEMConfig(population_size=32, elite_fraction=0.2)`` (16-unit MLP)
     - 30 iterations (4.8e5 steps): 500 [500, 500], 92% of 64 seeds solved
     - 20 iterations (3.2e5 steps): -84 [-93, -79], 89% of 64 seeds solved, 0% at -500

LinearSystem (30-step episodes, ``discount=0.9, time_discount=True, normalize_advantages=False``,
:func:`linear_gaussian_policy`, 32 environments x 30 steps, 25 iterations, 16 seeds): NPG with a fixed
``step_size=0.15`` and ``damping=1e-3`` ends at a mean distance 0.033 from the discounted Riccati gain (from
0.588 at the start; 0.035 with ``step_size=0.2``); REINFORCE with ``optimizer="sgd", learning_rate=0.01`` (the
best of 0.005, 0.01, 0.02) at 0.149.
"""

from pgjax._src.algos.actor_critic import ActorCritic
from pgjax._src.algos.actor_critic import evaluate_policy
from pgjax._src.algos.actor_critic import mlp_actor_critic
from pgjax._src.algos.actor_critic import running_episode_returns
from pgjax._src.algos.actor_critic import scan_with_evaluation
from pgjax._src.algos.actor_critic import value_loss
from pgjax._src.algos.checkpoint import load_checkpoint
from pgjax._src.algos.checkpoint import save_checkpoint
from pgjax._src.algos.episode_cem import EpisodeCEMConfig
from pgjax._src.algos.episode_cem import EpisodeCEMMetrics
from pgjax._src.algos.episode_cem import make_episode_cem_train
from pgjax._src.algos.es import ESConfig
from pgjax._src.algos.es import ESMetrics
from pgjax._src.algos.es import episode_fitness
from pgjax._src.algos.es import make_es_train
from pgjax._src.algos.loop import ProgressBar
from pgjax._src.algos.loop import TrainState
from pgjax._src.algos.loop import Trainer
from pgjax._src.algos.loop import concatenate_metrics
from pgjax._src.algos.make_train import make_train
from pgjax._src.algos.natural_pg import NaturalPGConfig
from pgjax._src.algos.natural_pg import NaturalPGMetrics
from pgjax._src.algos.natural_pg import make_natural_pg_train
from pgjax._src.algos.nes_es import NESConfig
from pgjax._src.algos.nes_es import NESMetrics
from pgjax._src.algos.nes_es import make_nes_train
from pgjax._src.algos.param_cem import ParamCEMConfig
from pgjax._src.algos.param_cem import ParamCEMMetrics
from pgjax._src.algos.param_cem import make_param_cem_train
from pgjax._src.algos.ppo import A2CConfig
from pgjax._src.algos.ppo import PPOConfig
from pgjax._src.algos.ppo import PPOMetrics
from pgjax._src.algos.ppo import make_a2c_train
from pgjax._src.algos.ppo import make_ppo_train
from pgjax._src.algos.policies import Policy
from pgjax._src.algos.policies import linear_gaussian_policy
from pgjax._src.algos.policies import mlp_policy
from pgjax._src.algos.reinforce import ReinforceConfig
from pgjax._src.algos.reinforce import ReinforceMetrics
from pgjax._src.algos.reinforce import make_reinforce_train
from pgjax._src.algos.training import episode_statistics
from pgjax._src.algos.training import make_env

__all__ = (
    "A2CConfig",
    "ActorCritic",
    "ESConfig",
    "ESMetrics",
    "EpisodeCEMConfig",
    "EpisodeCEMMetrics",
    "NESConfig",
    "NESMetrics",
    "NaturalPGConfig",
    "NaturalPGMetrics",
    "PPOConfig",
    "PPOMetrics",
    "ParamCEMConfig",
    "ParamCEMMetrics",
    "Policy",
    "ProgressBar",
    "ReinforceConfig",
    "ReinforceMetrics",
    "TrainState",
    "Trainer",
    "concatenate_metrics",
    "episode_fitness",
    "episode_statistics",
    "evaluate_policy",
    "linear_gaussian_policy",
    "load_checkpoint",
    "make_a2c_train",
    "make_env",
    "make_episode_cem_train",
    "make_es_train",
    "make_natural_pg_train",
    "make_nes_train",
    "make_param_cem_train",
    "make_ppo_train",
    "make_reinforce_train",
    "make_train",
    "mlp_actor_critic",
    "mlp_policy",
    "running_episode_returns",
    "save_checkpoint",
    "scan_with_evaluation",
    "value_loss",
)
