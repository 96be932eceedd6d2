"""``make_train(config)``: dispatch to the trainer of the config's type."""

from __future__ import annotations

from typing import Any, Callable

from pgjax._src.algos import episode_cem, es, natural_pg, nes_es, param_cem, ppo, reinforce

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


def make_train(config: Any) -> Callable:
  """Returns ``train(key) -> (params, metrics)`` for any pgjax.algos config (e.g. ``ReinforceConfig``).

  Raises:
    TypeError: ``config`` is not a known config type.
  """
  factory = _TRAINERS.get(type(config))
  if factory is None:
    names = ", ".join(sorted(t.__name__ for t in _TRAINERS))
    raise TypeError(f"`config` must be one of {names}, got {type(config).__name__}.")
  return factory(config)
