r"""The cross-entropy method (CEM): derivative-free maximisation over parameter pytrees.

CEM keeps a diagonal Gaussian :math:`\mathcal{N}(\mu, \mathrm{diag}(\sigma^2))` over the parameters,
samples a population, keeps the elite (the fraction ``elite_fraction`` of highest fitness) and refits the
Gaussian to the elite by maximum likelihood, optionally with smoothing, a decaying noise floor
(noisy CEM) and importance weights towards a target density.

Example (a doctest)::

  >>> import jax, jax.numpy as jnp, pgjax
  >>> cem = pgjax.cem.cross_entropy_method(population_size=50, elite_fraction=0.2, extra_std=0.1,
  ...                                      extra_std_decay=0.9)
  >>> fitness = lambda p: -jnp.sum((p["w"] - 1.0) ** 2)
  >>> state = cem.init({"w": jnp.zeros(3)}, 1.0)
  >>> state, infos = pgjax.cem.run(cem, jax.random.key(0), state, fitness, num_steps=40)   # one lax.scan
  >>> bool(fitness(state.mean) > -1e-3)
  True

Many seeds: ``jax.vmap(lambda k: pgjax.cem.run(cem, k, state, fitness, num_steps=40))(keys)``.

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
