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
