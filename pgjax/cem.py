r"""The cross-entropy method (CEM): derivative-free maximisation over parameter pytrees.

CEM keeps a diagonal Gaussian :math:`\mathcal{N}(\mu, \mathrm{diag}(\sigma^2))` over the parameters,
samples a population, keeps the elite (the fraction ``elite_fraction`` of highest fitness) and refits the
Gaussian to the elite by maximum likelihood, optionally with smoothing, a decaying noise floor
(noisy CEM) and importance weights towards a target density.

Example::

  cem = pgjax.cem.cross_entropy_method(population_size=100, elite_fraction=0.1, extra_std=0.1,
                                       extra_std_decay=0.95)
  state = cem.init({"w": jnp.zeros(10)}, 1.0)
  state, infos = pgjax.cem.run(cem, key, state, fitness, num_steps=50)   # one lax.scan
  # many seeds: jax.vmap(lambda k: pgjax.cem.run(cem, k, state, fitness, num_steps=50))(keys)

``fitness(params) -> scalar`` is maximised (negate a loss). ``cem.ask`` / ``cem.tell`` expose the two
halves of a generation for fitness evaluated elsewhere; :func:`elite_fit` is the refit alone.

NaN fitness ranks last and is counted in ``CEMInfo.num_nonfinite``. With a single elite member (or an
elite of identical members) the std collapses to 0 unless ``min_std`` or ``extra_std`` is positive; the
state stays finite. Formulas, the policies for non-finite values and references: :mod:`pgjax._src.cem`.
"""

from pgjax._src.cem import CEMInfo
from pgjax._src.cem import CEMState
from pgjax._src.cem import CrossEntropyMethod
from pgjax._src.cem import cross_entropy_method
from pgjax._src.cem import elite_fit
from pgjax._src.cem import num_elite
from pgjax._src.cem import run

__all__ = (
    "CEMInfo",
    "CEMState",
    "CrossEntropyMethod",
    "cross_entropy_method",
    "elite_fit",
    "num_elite",
    "run",
)
