r"""Natural evolution strategies (SNES, xNES, PGPE): the score-function gradient of
:math:`\mathbb{E}_{x\sim\mathcal{N}(\mu,\Sigma)}[f(x)]` with respect to the search distribution's own parameters,
preconditioned by that distribution's exact Fisher.

Every strategy has the shape of :mod:`pgjax.cem`: ``es = pgjax.nes.snes(...)``, then ``state = es.init(params,
init_sigma)``, ``population, noise = es.ask(key, state)``, ``state, info = es.tell(state, noise, fitness)``, or
``es.step(key, state, f)``; :func:`run` does a whole run in one ``lax.scan`` (``jax.vmap`` it over seeds), with
optional IPOP restarts. Fitness is maximised. See :mod:`pgjax._src.nes` for the updates and references.

``pgjax.nes.nes_utilities(fitness, num_active=None)`` is deprecated: use
``pgjax.shaping.nes_utilities(fitness, where=jnp.arange(P) < num_active)``.
"""

import warnings as _warnings

import jax.numpy as _jnp

from pgjax._src import shaping as _shaping
from pgjax._src.nes import default_population_size
from pgjax._src.nes import EvolutionStrategy
from pgjax._src.nes import NESInfo
from pgjax._src.nes import NESState
from pgjax._src.nes import pgpe
from pgjax._src.nes import run
from pgjax._src.nes import snes
from pgjax._src.nes import SNESAdaptation
from pgjax._src.nes import xnes

__all__ = (
    "EvolutionStrategy",
    "NESInfo",
    "NESState",
    "SNESAdaptation",
    "default_population_size",
    "pgpe",
    "run",
    "snes",
    "xnes",
)


def _deprecated_nes_utilities(fitness, num_active=None):
  """The former ``pgjax.nes.nes_utilities``: rank utilities of ``[P]`` fitness, the first ``num_active`` only."""
  fitness = _jnp.asarray(fitness)
  if fitness.ndim != 1:
    raise ValueError(f"`fitness` must have shape [P], got {fitness.shape}.")
  where = None if num_active is None else _jnp.arange(fitness.shape[0]) < num_active
  return _shaping.nes_utilities(fitness, where=where)


def __getattr__(name):
  if name == "nes_utilities":
    _warnings.warn("pgjax.nes.nes_utilities is deprecated and will be removed: use "
                  "pgjax.shaping.nes_utilities(fitness, where=jnp.arange(P) < num_active).",
                  DeprecationWarning, stacklevel=2)
    return _deprecated_nes_utilities
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
