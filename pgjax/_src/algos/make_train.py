"""``make_train(config)``: dispatch to the trainer of the config's type."""

from __future__ import annotations

from typing import Any, Callable

from pgjax._src.algos import episode_cem, es, natural_pg, nes_es, param_cem, ppo, reinforce
from pgjax._src.algos.loop import Trainer

__all__ = ["make_train"]

_TRAINERS: dict[type, Callable[[Any], Callable]] = {
    reinforce.ReinforceConfig: reinforce.make_reinforce_train,
    episode_cem.EpisodeCEMConfig: episode_cem.make_episode_cem_train,
    natural_pg.NaturalPGConfig: natural_pg.make_natural_pg_train,
    es.ESConfig: es.make_es_train,
    param_cem.ParamCEMConfig: param_cem.make_param_cem_train,
    nes_es.NESConfig: nes_es.make_nes_train,
    ppo.PPOConfig: ppo.make_ppo_train,
    ppo.A2CConfig: ppo.make_a2c_train,
}


def make_train(config: Any, *, callback: Callable[[int, dict], None] | None = None,
               log_every: int = 1) -> Trainer:
  r"""Returns ``train(key) -> (params, metrics)`` for any pgjax.algos config (e.g. ``ReinforceConfig``).

  ``train`` is a :class:`pgjax.algos.Trainer`: it also runs in resumable pieces (``train.init(key)``,
  ``train.run(state, num_iterations)``; checkpoints with :func:`pgjax.algos.save_checkpoint`).

  Args:
    config: the trainer's config.
    callback: optional host function ``callback(iteration, metrics)`` called after iteration ``iteration``
      (0-based) when ``iteration + 1`` is a multiple of ``log_every`` and after the last iteration, with a
      dict of that iteration's metrics (numpy; leading batch axes under ``vmap``, still one call per
      iteration). Works under ``jit`` and ``vmap``; the trained params are unchanged. E.g.
      :class:`pgjax.algos.ProgressBar`.
    log_every: see ``callback``.

  Raises:
    TypeError: ``config`` is not a known config type, or ``callback`` is not callable.
    ValueError: ``log_every`` is not a positive integer.
  """
  factory = _TRAINERS.get(type(config))
  if factory is None:
    names = ", ".join(sorted(t.__name__ for t in _TRAINERS))
    raise TypeError(f"`config` must be one of {names}, got {type(config).__name__}.")
  trainer = factory(config)
  if callback is not None or log_every != 1:
    trainer = trainer.with_callback(callback, log_every)
  return trainer
