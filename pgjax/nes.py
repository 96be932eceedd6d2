r"""Natural evolution strategies (SNES, xNES, PGPE): the score-function gradient of
:math:`\mathbb{E}_{x\sim\mathcal{N}(\mu,\Sigma)}[f(x)]` with respect to the search distribution's own parameters,
preconditioned by that distribution's exact Fisher.

Every strategy has the shape of :mod:`pgjax.cem`: ``es = pgjax.nes.snes(...)``, then ``state = es.init(params,
init_sigma)``, ``population, noise = es.ask(key, state)``, ``state, info = es.tell(state, noise, fitness)``, or
``es.step(key, state, f)``; :func:`run` does a whole run in one ``lax.scan`` (``jax.vmap`` it over seeds), with
optional IPOP restarts. Fitness is maximised. See :mod:`pgjax._src.nes` for the updates and references.
"""

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
