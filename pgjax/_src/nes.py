r"""Natural evolution strategies on parameter pytrees: SNES, xNES and PGPE.

A search distribution :math:`\pi_\psi = \mathcal{N}(\mu, \Sigma)` over the parameters :math:`x` of a fitness
:math:`f` (to *maximise*) turns the search for a good :math:`x` into gradient ascent on
:math:`J(\psi) = \mathbb{E}_{x\sim\pi_\psi}[f(x)]`. The gradient is the score-function estimate on the search
distribution's own parameters,

.. math::

   \nabla_\psi J \approx \sum_{k=1}^{\lambda} u_k\, \nabla_\psi \log \pi_\psi(x_k),

with rank-based utilities :math:`u_k` in place of the raw fitness (a fitness-shaped, baseline-corrected
weight), and natural evolution strategies precondition it with the exact Fisher of :math:`\pi_\psi`:
:math:`\psi \leftarrow \psi + \eta\, F_\psi^{-1} \nabla_\psi J`. With :math:`x_k = \mu + \sigma \odot s_k`,
:math:`s_k \sim \mathcal{N}(0, I)`:

* **SNES** (separable NES; Schaul, Glasmachers, Schmidhuber 2011), :math:`\psi = (\mu, \log\sigma)` with a
  diagonal :math:`\sigma`. The Fisher is :math:`\mathrm{diag}(1/\sigma^2, 2)`, so the natural gradient is
  :math:`(\sigma \odot \sum_k u_k s_k,\ \tfrac12 \sum_k u_k (s_k^2 - 1))` and

  .. math::

     \mu \leftarrow \mu + \eta_\mu\, \sigma \odot \sum_k u_k s_k, \qquad
     \sigma \leftarrow \sigma \odot \exp\Big(\tfrac{\eta_\sigma}{2} \sum_k u_k (s_k^2 - 1)\Big).

  Options of :func:`snes`: mirrored sampling (pairs :math:`s, -s`; Brockhoff et al. 2010) and adaptation
  sampling of :math:`\eta_\sigma` (Wierstra et al. 2014, Section 3.3).

* **xNES** (exponential NES; Glasmachers, Schaul, Sun, Wierstra, Schmidhuber 2010), full covariance
  :math:`\Sigma = \sigma^2 B B^\top` with :math:`\det B = 1`, :math:`x_k = \mu + \sigma B s_k`. In the local
  exponential coordinates the Fisher is the identity, and the natural gradient is
  :math:`G_\delta = \sum_k u_k s_k`, :math:`G_M = \sum_k u_k (s_k s_k^\top - I)`; with
  :math:`G_\sigma = \mathrm{tr}(G_M)/d` and :math:`G_B = G_M - G_\sigma I`:

  .. math::

     \mu \leftarrow \mu + \eta_\mu \sigma B G_\delta, \quad
     \sigma \leftarrow \sigma \exp(\tfrac{\eta_\sigma}{2} G_\sigma), \quad
     B \leftarrow B \exp(\tfrac{\eta_B}{2} G_B).

  It costs :math:`O(d^3)` per generation (the exponential of the symmetric :math:`G_B`, through its
  eigendecomposition): use it for :math:`d` up to a few hundred.

* **PGPE** (policy gradients with parameter-based exploration; Sehnke et al. 2010) samples symmetric pairs
  :math:`\mu \pm \epsilon_k`, :math:`\epsilon_k = \sigma \odot s_k`, and with fitness values
  :math:`r^\pm_k` (centred ranks by default) and :math:`\bar r` their mean uses

  .. math::

     g_\mu = \frac1n \sum_k \epsilon_k \frac{r_k^+ - r_k^-}{2}, \qquad
     g_\sigma = \frac1n \sum_k \Big(\frac{r_k^+ + r_k^-}{2} - \bar r\Big) \frac{\epsilon_k^2 - \sigma^2}{\sigma},

  which is the natural gradient in :math:`\mu` and twice the natural gradient in :math:`\sigma` of a
  diagonal Gaussian (Fisher :math:`\mathrm{diag}(1/\sigma^2, 2/\sigma^2)`). :math:`g_\mu` goes to an optax
  optimiser (plain ascent by default, or Adam / ClipUp-like choices); :math:`\sigma` moves by
  :math:`\eta_\sigma g_\sigma`, each coordinate's relative change clipped to ``max_sigma_change``.

Utilities (SNES, xNES): :math:`u_k = \frac{\max(0, \log(\lambda/2 + 1) - \log k)}{\sum_j \max(0,
\log(\lambda/2+1) - \log j)} - \frac1\lambda` for the member of rank :math:`k` (1 = fittest); they sum to 0
(:func:`pgjax.shaping.nes_utilities`; invariant to monotone transformations of :math:`f`). NaN fitness ranks
last (worst) and is counted in :class:`NESInfo`.

Defaults from the papers, with :math:`d` the number of parameters: population
:math:`\lambda = 4 + \lfloor 3 \ln d \rfloor`; SNES :math:`\eta_\mu = 1`,
:math:`\eta_\sigma = (3 + \ln d) / (5\sqrt d)`; xNES :math:`\eta_\mu = 1`,
:math:`\eta_\sigma = \eta_B = 3(3 + \ln d) / (5 d \sqrt d)`; PGPE :math:`\eta_\mu = 0.2`,
:math:`\eta_\sigma = 0.1` (Sehnke et al. 2010).

The functions are pure: ``init`` builds the state, ``ask`` samples, ``tell`` updates, ``step`` does all three,
and :func:`run` does ``num_steps`` generations in one ``lax.scan`` (``jax.vmap`` over seeds, or over traced
learning rates). Restarts with a growing population (IPOP; Auger & Hansen 2005) are an option of :func:`run`.

Why hand-written: evosax's strategies are flat-vector classes; here the search distribution acts on any
parameter pytree, each update is a few lines that can be checked against the score-function estimator and
the closed-form Gaussian Fisher (the test suite does), and every numeric setting can be traced.

References:
  D. Wierstra, T. Schaul, T. Glasmachers, Y. Sun, J. Peters, J. Schmidhuber, "Natural evolution strategies",
  JMLR 15, 2014 (Algorithms 5 and 6, eq. 11 for the utilities). https://jmlr.org/papers/v15/wierstra14a.html
  T. Schaul, T. Glasmachers, J. Schmidhuber, "High dimensions and heavy tails for natural evolution
  strategies", GECCO 2011 (SNES).
  T. Glasmachers, T. Schaul, Y. Sun, D. Wierstra, J. Schmidhuber, "Exponential natural evolution
  strategies", GECCO 2010 (xNES).
  F. Sehnke, C. Osendorfer, T. Rückstieß, A. Graves, J. Peters, J. Schmidhuber, "Parameter-exploring policy
  gradients", Neural Networks 23(4), 2010.
  A. Auger, N. Hansen, "A restart CMA evolution strategy with increasing population size", CEC 2005.
  D. Brockhoff, A. Auger, N. Hansen, D. V. Arnold, T. Hohm, "Mirrored sampling and sequential selection for
  evolution strategies", PPSN XI, 2010.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from pgjax._src import shaping as _shaping
from pgjax._src import utils
from pgjax._src import validation

__all__ = ("NESInfo", "NESState", "EvolutionStrategy", "SNESAdaptation", "snes", "xnes", "pgpe", "run",
           "default_population_size")


class NESState(NamedTuple):
  """State of a natural evolution strategy.

  Attributes:
    mean: pytree, the search distribution's mean :math:`\\mu`.
    sigma: SNES and PGPE: pytree like ``mean`` (per-coordinate :math:`\\sigma`); xNES: scalar :math:`\\sigma`.
    shape: xNES: ``[d, d]`` matrix :math:`B` with :math:`\\det B = 1`; otherwise ``[0]`` (unused).
    opt_state: PGPE: the optax state of the mean's optimiser; SNES with adaptation sampling: a
      :class:`SNESAdaptation`; otherwise ``()``.
    step: int32 scalar, generations done since the last (re)start.
    num_active: int32 scalar, members of the population in use (fewer than the allocated population
      before an IPOP restart doubles it).
    best_params: pytree like ``mean``, the fittest member seen so far.
    best_fitness: scalar, its fitness (``-inf`` before the first generation).
  """

  mean: Any
  sigma: Any
  shape: jax.Array
  opt_state: Any
  step: jax.Array
  num_active: jax.Array
  best_params: Any
  best_fitness: jax.Array


class NESInfo(NamedTuple):
  """Per-generation diagnostics (scalars).

  Attributes:
    fitness_mean: mean finite fitness of the active population.
    fitness_max: best fitness of the active population.
    best_fitness: best fitness seen so far.
    sigma_mean: mean step size (for xNES, :math:`\\sigma` times the mean diagonal of :math:`B`'s row norms).
    num_nonfinite: active members whose fitness was NaN or infinite (NaN ranks last).
    num_evaluations: evaluations of ``f`` this generation (the active population).
  """

  fitness_mean: jax.Array
  fitness_max: jax.Array
  best_fitness: jax.Array
  sigma_mean: jax.Array
  num_nonfinite: jax.Array
  num_evaluations: jax.Array


class EvolutionStrategy(NamedTuple):
  """The pure functions of one strategy (built by :func:`snes`, :func:`xnes` or :func:`pgpe`).

  Attributes:
    init: ``init(params, init_sigma=1.0) -> NESState`` (``init_sigma`` a scalar or a pytree like params).
    ask: ``ask(key, state) -> (population, noise)``: population a pytree with a leading ``[P]`` axis, noise
      the ``[P, d]`` standard normal draws it was built from.
    tell: ``tell(state, noise, fitness) -> (state, NESInfo)``; ``fitness`` is ``[P]``, higher is better.
    step: ``step(key, state, f) -> (state, NESInfo)``: ask, evaluate ``f`` on each member (``vmap``), tell.
    population_size: ``population_size(params) -> int``, the population for these params (static).
    name: ``"snes"``, ``"xnes"`` or ``"pgpe"``.
    with_population_size: ``with_population_size(P) -> EvolutionStrategy``, the same strategy with
      population ``P`` (used by :func:`run`'s restarts).
  """

  init: Callable[..., NESState]
  ask: Callable[..., Any]
  tell: Callable[..., tuple[NESState, NESInfo]]
  step: Callable[..., tuple[NESState, NESInfo]]
  population_size: Callable[[Any], int]
  name: str
  with_population_size: Callable[[int], "EvolutionStrategy"]


def default_population_size(dim: int) -> int:
  r"""The NES population :math:`4 + \lfloor 3 \ln d \rfloor` (Wierstra et al. 2014, Table 1)."""
  dim = validation.check_positive_int(dim, "dim")
  return 4 + int(math.floor(3 * math.log(dim)))


def _active(name: str, p: int, num_active: jax.Array) -> jax.Array:
  """Mask of the members in use: the first ``num_active``, or for PGPE's pairs (k, k + P/2) the first pairs."""
  idx = jnp.arange(p)
  if name == "pgpe":
    return (idx % (p // 2)) < num_active // 2
  return idx < num_active


def _info(fitness, active, state, sigma_mean):
  finite = active & jnp.isfinite(fitness)
  mean = jnp.sum(jnp.where(finite, fitness, 0.0)) / jnp.maximum(jnp.sum(finite), 1)
  fmax = jnp.max(jnp.where(active & ~jnp.isnan(fitness), fitness, -jnp.inf))
  return NESInfo(fitness_mean=mean, fitness_max=fmax, best_fitness=state.best_fitness,
                 sigma_mean=sigma_mean, num_nonfinite=jnp.sum(active & ~jnp.isfinite(fitness)),
                 num_evaluations=jnp.sum(active).astype(jnp.int32))


def _track_best(state: NESState, population_flat, fitness, active, unravel) -> tuple[Any, jax.Array]:
  clean = jnp.where(active & ~jnp.isnan(fitness), fitness, -jnp.inf)
  i = jnp.argmax(clean)
  better = clean[i] > state.best_fitness
  best = jax.tree_util.tree_map(lambda new, old: jnp.where(better, new, old),
                                unravel(population_flat[i]), state.best_params)
  return best, jnp.where(better, clean[i], state.best_fitness)


def _expm_symmetric(a: jax.Array) -> jax.Array:
  """exp(A) of a symmetric matrix as V diag(exp(w)) V^T (exact for symmetric A; det = exp(tr A))."""
  w, v = jnp.linalg.eigh(a, symmetrize_input=True)
  return (v * jnp.exp(w)[None, :]) @ v.T


def _lr(value, default):
  return default if value is None else value


def _mirrored_normal(key, p: int, d: int, dtype) -> jax.Array:
  """``[p, d]`` standard normal rows in mirrored pairs ``z_1, -z_1, z_2, -z_2, ...`` (an odd ``p`` ends with an
  unpaired ``z``): ``ceil(p / 2)`` independent draws. Interleaved, so the first ``2m`` rows are ``m`` whole
  pairs (an IPOP run's smaller active population stays mirrored)."""
  z = jax.random.normal(key, ((p + 1) // 2, d), dtype)
  return jnp.stack([z, -z], axis=1).reshape(-1, d)[:p]


def _make(name: str, population_size: int | None, sample: Callable, update: Callable,
          init_extra: Callable, sigma_mean: Callable, f_takes_key: bool,
          rebuild: Callable[[int], EvolutionStrategy], mirrored: bool = False) -> EvolutionStrategy:
  """Assembles ``init/ask/tell/step`` from a strategy's sampling and update rules (on flat vectors)."""

  def pop_size(params) -> int:
    d = utils.tree_size(params)
    p = default_population_size(d) if population_size is None else population_size
    return p + (p % 2 if name == "pgpe" else 0)

  def init(params, init_sigma: Any = 1.0) -> NESState:
    params = validation.check_float_tree(params, "params")
    flat, unravel = ravel_pytree(params)
    if isinstance(init_sigma, (int, float)) or np.ndim(init_sigma) == 0:
      validation.check_positive(init_sigma, "init_sigma")
      sig_flat = jnp.full_like(flat, init_sigma)
    else:
      sig_flat, _ = ravel_pytree(init_sigma)
      if sig_flat.shape != flat.shape:
        raise ValueError("`init_sigma` must be a scalar or a pytree like `params`.")
      sig_flat = sig_flat.astype(flat.dtype)
    sigma, shape, opt_state = init_extra(flat, sig_flat)
    return NESState(mean=params, sigma=sigma if name == "xnes" else unravel(sigma), shape=shape,
                    opt_state=opt_state, step=jnp.zeros((), jnp.int32),
                    num_active=jnp.asarray(pop_size(params), jnp.int32), best_params=params,
                    best_fitness=jnp.asarray(-jnp.inf, flat.dtype))

  def ask(key, state: NESState):
    key = validation.as_key(key)
    mean, unravel = ravel_pytree(state.mean)
    sigma = state.sigma if name == "xnes" else ravel_pytree(state.sigma)[0]
    if mirrored:
      noise = _mirrored_normal(key, pop_size(state.mean), mean.shape[0], mean.dtype)
    else:
      noise = jax.random.normal(key, (pop_size(state.mean), mean.shape[0]), mean.dtype)
    population = sample(mean, sigma, state.shape, noise)
    return jax.vmap(unravel)(population), noise

  def tell(state: NESState, noise, fitness):
    mean, unravel = ravel_pytree(state.mean)
    fitness = jnp.asarray(fitness)
    if fitness.shape != (noise.shape[0],):
      raise ValueError(f"`fitness` must have shape [{noise.shape[0]}], got {fitness.shape}.")
    sigma = state.sigma if name == "xnes" else ravel_pytree(state.sigma)[0]
    population = sample(mean, sigma, state.shape, noise)
    active = _active(name, noise.shape[0], state.num_active)
    best, best_f = _track_best(state, population, fitness, active, unravel)
    new_mean, new_sigma, new_shape, new_opt = update(mean, sigma, state.shape, state.opt_state, noise,
                                                     fitness, active)
    new_state = NESState(mean=unravel(new_mean), sigma=new_sigma if name == "xnes" else unravel(new_sigma),
                         shape=new_shape, opt_state=new_opt, step=state.step + 1,
                         num_active=state.num_active, best_params=best, best_fitness=best_f)
    return new_state, _info(fitness, active, new_state, sigma_mean(new_sigma, new_shape))

  def step(key, state: NESState, f: Callable[..., jax.Array]):
    validation.check_callable(f, "f")
    k_ask, k_f = jax.random.split(validation.as_key(key))
    population, noise = ask(k_ask, state)
    p = noise.shape[0]
    fitness = jax.vmap(f)(jax.random.split(k_f, p), population) if f_takes_key else jax.vmap(f)(population)
    if jnp.shape(fitness) != (p,):
      raise ValueError(f"`f` must return a scalar, got shape {jnp.shape(fitness)[1:]}.")
    return tell(state, noise, fitness)

  return EvolutionStrategy(init=init, ask=ask, tell=tell, step=step, population_size=pop_size, name=name,
                           with_population_size=rebuild)


def _check_pop(population_size, minimum=2):
  if population_size is not None:
    validation.check_positive_int(population_size, "population_size", minimum=minimum)


class SNESAdaptation(NamedTuple):
  """SNES's ``opt_state`` with adaptation sampling: the step-size learning rate now and the previous step size.

  Attributes:
    learning_rate_sigma: scalar, the current :math:`\\eta_\\sigma`.
    previous_sigma: ``[d]`` flat step sizes of the previous generation (:math:`\\sigma_{t-1}`).
  """

  learning_rate_sigma: jax.Array
  previous_sigma: jax.Array


_ADAPT_RATE = 0.1          # c' of adaptation sampling (Wierstra et al. 2014, Section 3.3)
_ADAPT_LOG_WEIGHT = 30.0   # importance log-weights are clipped to +-this (finite; a larger one decides anyway)


def _adapted_learning_rate(eta, eta_init, sigma, previous_sigma, noise, fitness, active):
  r"""One adaptation-sampling step of :math:`\eta_\sigma` (Wierstra et al. 2014, Algorithm 6); see :func:`snes`."""
  d = sigma.shape[0]
  dtype = sigma.dtype
  half_step = 0.5 * (jnp.log(sigma) - jnp.log(previous_sigma))           # log(sigma' / sigma)
  log_w = -jnp.sum(half_step) - 0.5 * (noise ** 2) @ jnp.expm1(-2.0 * half_step)
  w = jnp.where(active, jnp.exp(jnp.clip(log_w, -_ADAPT_LOG_WEIGHT, _ADAPT_LOG_WEIGHT)), 0.0)
  n = jnp.sum(active).astype(dtype)
  # average 1-based ascending rank (1 = worst; NaN ranks last) of each active member
  rank = (_shaping.centered_ranks(fitness, where=active).astype(dtype) + 0.5) * (n - 1.0) + 1.0
  n_w = jnp.sum(w)
  z = (jnp.sum(w * (rank - 0.5)) - 0.5 * n * n_w) / (jnp.sqrt(n * n_w / 12.0) * jnp.sqrt(n + n_w + 1.0))
  p_value = 0.5 * jax.lax.erfc(z / math.sqrt(2.0))                        # P(Z >= z), Z standard normal
  rho = 0.5 - 1.0 / (3.0 * (d + 1))
  return jnp.where(p_value < rho, jnp.minimum((1.0 + _ADAPT_RATE) * eta, 1.0),
                   (1.0 - _ADAPT_RATE) * eta + _ADAPT_RATE * eta_init).astype(dtype)


def snes(*, population_size: int | None = None, learning_rate_mean: Any = None,
         learning_rate_sigma: Any = None, mirrored: bool = False, adaptation_sampling: bool = False,
         f_takes_key: bool = False) -> EvolutionStrategy:
  r"""Separable natural evolution strategy (diagonal Gaussian search distribution).

  Each generation draws :math:`\lambda` members :math:`x_k = \mu + \sigma \odot s_k` (:math:`\lambda`
  evaluations of ``f``) and applies the natural-gradient update in the module docstring. Maximises ``f``.
  With both options off (the default) this is the SNES of Schaul et al. (2011) and Wierstra et al. (2014).

  **Mirrored sampling** (``mirrored=True``; Brockhoff, Auger, Hansen, Arnold, Hohm 2010): the
  :math:`\lambda` draws come in pairs :math:`s, -s` (:math:`\lceil\lambda/2\rceil` independent draws; members
  :math:`2j, 2j+1` form a pair, an odd :math:`\lambda` ends with one unpaired draw). The update is unchanged:
  it is the same score-function natural gradient, estimated on the mirrored sample set. For a linear
  :math:`f(x) = c + g^\top x` and even :math:`\lambda`, every pair has exactly one member in the better half,
  so the mean step is exactly the weighted recombination of the pairs' winners,

  .. math::

     \Delta\mu = \eta_\mu\, \sigma \odot \sum_{r=1}^{\lambda/2} w_r\, t_{(r)}, \qquad
     w_r = \frac{\max(0, \log(\lambda/2+1) - \log r)}{\sum_{j}\max(0, \log(\lambda/2+1) - \log j)},

  with :math:`t_j = \mathrm{sign}(g^\top(\sigma\odot s_j))\, s_j` ordered by decreasing
  :math:`|g^\top(\sigma\odot s_j)|`: every step ascends (:math:`g^\top \Delta\mu > 0`), and :math:`c` drops out.

  **Adaptation sampling** (``adaptation_sampling=True``; Wierstra et al. 2014, Section 3.3 and Algorithm 6)
  adapts :math:`\eta_\sigma` online. With :math:`\sigma_{t-1}, \sigma_t` the last two step sizes, the
  hypothetical :math:`\sigma' = \sigma_t (\sigma_t/\sigma_{t-1})^{1/2}` repeats the last update with
  :math:`\tfrac32` of its learning rate. The current members get importance weights
  :math:`w'_k = \mathcal{N}(x_k; \mu, \sigma'^2)/\mathcal{N}(x_k; \mu, \sigma_t^2)
  = \prod_i \frac{\sigma_{t,i}}{\sigma'_i} \exp\big(-\tfrac12 s_{k,i}^2 (\sigma_{t,i}^2/\sigma'^2_i - 1)\big)`,
  and a weighted Mann-Whitney test asks whether they favour the fitter members: with :math:`r_k` the
  ascending rank (1 = worst, ties averaged), :math:`n = \lambda` and :math:`n' = \sum_k w'_k`,

  .. math::

     U = \sum_k w'_k (r_k - \tfrac12), \quad
     z = \frac{U - n n'/2}{\sqrt{n n' (n + n' + 1)/12}}, \quad p = 1 - \Phi(z).

  (Equal weights give :math:`z = 0`.) If :math:`p < \rho = \tfrac12 - \frac{1}{3(d+1)}` the larger rate looks
  better and :math:`\eta_\sigma \leftarrow \min((1 + c')\eta_\sigma, 1)`; otherwise it relaxes towards its
  initial value, :math:`\eta_\sigma \leftarrow (1 - c')\eta_\sigma + c'\eta_{\sigma,0}`, with :math:`c' = 1/10`.
  The adapted rate is used for this generation's step-size update; it and :math:`\sigma_t` are kept in
  ``state.opt_state`` (a :class:`SNESAdaptation`). The importance log-weights are clipped to :math:`\pm 30`.
  The rate rises only on evidence (:math:`p < \rho`); with no evidence either way (:math:`z = 0`) it relaxes.
  (Some public xNES codes raise it unless :math:`\Phi(z) < \rho`, i.e. also without evidence.)

  Args:
    population_size: :math:`\lambda` (static); default :math:`4 + \lfloor 3 \ln d \rfloor`.
    learning_rate_mean: :math:`\eta_\mu`, default 1; may be traced.
    learning_rate_sigma: :math:`\eta_\sigma` (with adaptation sampling, its initial value
      :math:`\eta_{\sigma,0}`), default :math:`(3 + \ln d)/(5\sqrt d)`; may be traced.
    mirrored: draw the population in mirrored pairs (static bool).
    adaptation_sampling: adapt :math:`\eta_\sigma` by adaptation sampling (static bool).
    f_takes_key: ``f(key, x)`` instead of ``f(x)`` (each member gets its own key).

  Returns:
    An :class:`EvolutionStrategy`.

  Example (a doctest)::

    >>> import jax, jax.numpy as jnp, pgjax
    >>> es = pgjax.nes.snes()
    >>> state = es.init(jnp.zeros(10), init_sigma=1.0)
    >>> sphere = lambda x: -jnp.sum((x - 1.0) ** 2)
    >>> state, infos = pgjax.nes.run(es, jax.random.key(0), state, sphere, num_steps=300)
    >>> bool(infos.best_fitness[-1] > -1e-6), es.population_size(state.mean)
    (True, 10)

  References:
    D. Brockhoff, A. Auger, N. Hansen, D. V. Arnold, T. Hohm, "Mirrored sampling and sequential selection
    for evolution strategies", PPSN XI, 2010.
    D. Wierstra, T. Schaul, T. Glasmachers, Y. Sun, J. Peters, J. Schmidhuber, "Natural evolution
    strategies", JMLR 15, 2014 (Section 3.3, adaptation sampling).
  """
  _check_pop(population_size)
  for value, arg in ((mirrored, "mirrored"), (adaptation_sampling, "adaptation_sampling")):
    if not isinstance(value, (bool, np.bool_)):
      raise TypeError(f"`{arg}` must be a bool, got {type(value).__name__}.")

  def sample(mean, sigma, shape, noise):
    return mean[None, :] + sigma[None, :] * noise

  def default_eta_sigma(d):
    return _lr(learning_rate_sigma, (3 + math.log(d)) / (5 * math.sqrt(d)))

  def update(mean, sigma, shape, opt_state, noise, fitness, active):
    d = mean.shape[0]
    eta_mu = _lr(learning_rate_mean, 1.0)
    eta_sigma = default_eta_sigma(d)
    u = _shaping.nes_utilities(fitness, where=active).astype(mean.dtype)
    if adaptation_sampling:
      eta_sigma = _adapted_learning_rate(opt_state.learning_rate_sigma, jnp.asarray(eta_sigma, mean.dtype),
                                         sigma, opt_state.previous_sigma, noise, fitness, active)
      opt_state = SNESAdaptation(learning_rate_sigma=eta_sigma, previous_sigma=sigma)
    g_mu = u @ noise
    g_sigma = u @ (noise ** 2 - 1.0)
    return mean + eta_mu * sigma * g_mu, sigma * jnp.exp(0.5 * eta_sigma * g_sigma), shape, opt_state

  def init_extra(flat, sig):
    opt_state = ()
    if adaptation_sampling:
      opt_state = SNESAdaptation(learning_rate_sigma=jnp.asarray(default_eta_sigma(flat.shape[0]), flat.dtype),
                                 previous_sigma=sig)
    return sig, jnp.zeros((0,), flat.dtype), opt_state

  rebuild = lambda p: snes(population_size=p, learning_rate_mean=learning_rate_mean,
                           learning_rate_sigma=learning_rate_sigma, mirrored=mirrored,
                           adaptation_sampling=adaptation_sampling, f_takes_key=f_takes_key)
  return _make("snes", population_size, sample, update, init_extra, lambda s, b: jnp.mean(s), f_takes_key,
               rebuild, mirrored=mirrored)


def xnes(*, population_size: int | None = None, learning_rate_mean: Any = None,
         learning_rate_sigma: Any = None, learning_rate_shape: Any = None,
         f_takes_key: bool = False) -> EvolutionStrategy:
  r"""Exponential natural evolution strategy (full covariance :math:`\sigma^2 B B^\top`).

  Each generation draws :math:`\lambda` members :math:`x_k = \mu + \sigma B s_k` (:math:`\lambda` evaluations
  of ``f``) and applies the update in the module docstring, :math:`O(d^3)` for the matrix exponential.
  ``init_sigma`` must be a scalar (a pytree sets :math:`B` to the normalised diagonal). Maximises ``f``.

  Args:
    population_size: :math:`\lambda` (static); default :math:`4 + \lfloor 3 \ln d \rfloor`.
    learning_rate_mean: :math:`\eta_\mu`, default 1; may be traced.
    learning_rate_sigma: :math:`\eta_\sigma`, default :math:`3(3 + \ln d)/(5 d\sqrt d)`; may be traced.
    learning_rate_shape: :math:`\eta_B`, default equal to the :math:`\eta_\sigma` default; may be traced.
    f_takes_key: ``f(key, x)`` instead of ``f(x)``.

  Returns:
    An :class:`EvolutionStrategy`.
  """
  _check_pop(population_size)

  def sample(mean, sigma, shape, noise):
    return mean[None, :] + sigma * (noise @ shape.T)

  def update(mean, sigma, shape, opt_state, noise, fitness, active):
    d = mean.shape[0]
    default = 3 * (3 + math.log(d)) / (5 * d * math.sqrt(d))
    eta_mu = _lr(learning_rate_mean, 1.0)
    eta_sigma = _lr(learning_rate_sigma, default)
    eta_b = _lr(learning_rate_shape, default)
    u = _shaping.nes_utilities(fitness, where=active).astype(mean.dtype)
    g_delta = u @ noise
    g_m = (noise * u[:, None]).T @ noise - jnp.sum(u) * jnp.eye(d, dtype=mean.dtype)
    g_sigma = jnp.trace(g_m) / d
    g_b = g_m - g_sigma * jnp.eye(d, dtype=mean.dtype)
    new_mean = mean + eta_mu * sigma * (shape @ g_delta)
    new_sigma = sigma * jnp.exp(0.5 * eta_sigma * g_sigma)
    new_shape = shape @ _expm_symmetric(0.5 * eta_b * g_b)
    return new_mean, new_sigma, new_shape, opt_state

  def init_extra(flat, sig):
    # sigma = geometric mean of the given scales, B = diag(scales / sigma) (det 1).
    log_sig = jnp.log(sig)
    sigma = jnp.exp(jnp.mean(log_sig))
    return sigma, jnp.diag(jnp.exp(log_sig - jnp.mean(log_sig))), ()

  def sigma_mean(sigma, shape):
    return sigma * jnp.mean(jnp.sqrt(jnp.sum(shape ** 2, axis=1)))

  rebuild = lambda p: xnes(population_size=p, learning_rate_mean=learning_rate_mean,
                           learning_rate_sigma=learning_rate_sigma, learning_rate_shape=learning_rate_shape,
                           f_takes_key=f_takes_key)
  return _make("xnes", population_size, sample, update, init_extra, sigma_mean, f_takes_key, rebuild)


def pgpe(*, population_size: int | None = None, optimizer: optax.GradientTransformation | None = None,
         learning_rate_sigma: Any = 0.1, max_sigma_change: Any = 0.2, shaping: str | None = "centered_ranks",
         f_takes_key: bool = False) -> EvolutionStrategy:
  r"""PGPE with symmetric sampling and adaptive per-coordinate :math:`\sigma` (Sehnke et al. 2010).

  Each generation draws :math:`n = \lambda/2` pairs :math:`\mu \pm \sigma\odot s_k` (:math:`\lambda`
  evaluations of ``f``; members ``k`` and ``k + n`` form a pair) and applies the update in the module
  docstring. Maximises ``f``.

  Args:
    population_size: :math:`\lambda`, even (static; rounded up to even); default
      :math:`4 + \lfloor 3 \ln d \rfloor` rounded up to even.
    optimizer: optax transformation for the mean, fed the *negated* ascent direction :math:`-g_\mu` (optax
      minimises); default ``optax.sgd(0.2)``, the paper's :math:`\alpha_\mu`.
    learning_rate_sigma: :math:`\eta_\sigma` (the paper's :math:`\alpha_\sigma = 0.1`); may be traced.
    max_sigma_change: each coordinate's :math:`|\Delta\sigma| / \sigma` is clipped to this (0.2, as in
      pgpelib); may be traced.
    shaping: ``"centered_ranks"`` (fitness replaced by centred ranks in [-0.5, 0.5]; NaN ranks last) or
      ``None`` (raw fitness: NaN then propagates into the update).
    f_takes_key: ``f(key, x)`` instead of ``f(x)``.

  Returns:
    An :class:`EvolutionStrategy`.
  """
  _check_pop(population_size)
  if shaping not in (None, "centered_ranks"):
    raise ValueError(f"`shaping` must be None or 'centered_ranks', got {shaping!r}.")
  opt = optax.sgd(0.2) if optimizer is None else optimizer
  if not hasattr(opt, "init") or not hasattr(opt, "update"):
    raise TypeError(f"`optimizer` must be an optax GradientTransformation, got {type(opt).__name__}.")

  def sample(mean, sigma, shape, noise):
    n = noise.shape[0] // 2
    eps = sigma[None, :] * noise[:n]
    return jnp.concatenate([mean[None, :] + eps, mean[None, :] - eps], axis=0)

  def update(mean, sigma, shape, opt_state, noise, fitness, active):
    n = noise.shape[0] // 2
    if shaping == "centered_ranks":
      r = _shaping.centered_ranks(fitness, where=active).astype(mean.dtype)
    else:
      r = jnp.where(active, fitness, 0.0).astype(mean.dtype)
    pair_active = active[:n].astype(mean.dtype)
    n_active = jnp.maximum(jnp.sum(pair_active), 1.0)
    eps = sigma[None, :] * noise[:n]
    r_plus, r_minus = r[:n] * pair_active, r[n:] * pair_active
    g_mu = ((r_plus - r_minus) / 2) @ eps / n_active
    r_bar = jnp.sum(r_plus + r_minus) / (2 * n_active)
    g_sigma = (((r_plus + r_minus) / 2 - r_bar) * pair_active) @ ((eps ** 2 - sigma[None, :] ** 2)
                                                                  / sigma[None, :]) / n_active
    updates, new_opt = opt.update(-g_mu, opt_state, mean)
    change = jnp.clip(learning_rate_sigma * g_sigma / sigma, -max_sigma_change, max_sigma_change)
    return optax.apply_updates(mean, updates), sigma * (1.0 + change), shape, new_opt

  def init_extra(flat, sig):
    return sig, jnp.zeros((0,), flat.dtype), opt.init(flat)

  rebuild = lambda p: pgpe(population_size=p, optimizer=optimizer, learning_rate_sigma=learning_rate_sigma,
                           max_sigma_change=max_sigma_change, shaping=shaping, f_takes_key=f_takes_key)
  return _make("pgpe", population_size, sample, update, init_extra, lambda s, b: jnp.mean(s), f_takes_key,
               rebuild)


def run(strategy: EvolutionStrategy, key: jax.Array, state: NESState, f: Callable[..., jax.Array], *,
        num_steps: int, restarts: int = 0, patience: int = 50, min_improvement: Any = 1e-12,
        min_sigma: Any = 1e-12) -> tuple[NESState, NESInfo]:
  r"""Runs ``num_steps`` generations in one ``lax.scan``, optionally with IPOP restarts.

  With ``restarts = R > 0`` the population is allocated at :math:`\lambda_0 2^R` and starts with
  :math:`\lambda_0` active members; when the best fitness has not improved by ``min_improvement`` for
  ``patience`` generations, or the mean step size falls below ``min_sigma``, the strategy restarts from the
  initial mean and step size with twice the active population (Auger & Hansen 2005), at most ``R`` times.
  The best member over all restarts is kept. Inactive members are still computed (fixed shapes under
  ``jit``), but :attr:`NESInfo.num_evaluations` counts only the active ones.

  Args:
    strategy: from :func:`snes`, :func:`xnes` or :func:`pgpe`. With restarts, its ``population_size`` is the
      initial :math:`\lambda_0`.
    key: PRNG key.
    state: from ``strategy.init``; the restart point.
    f: fitness to maximise, ``f(x)`` (or ``f(key, x)``).
    num_steps: generations (static).
    restarts: maximum number of restarts (static, >= 0).
    patience: generations without improvement that trigger a restart (static).
    min_improvement: improvement of the best fitness that resets the patience counter; may be traced.
    min_sigma: a mean step size below this triggers a restart; may be traced.

  Returns:
    ``(final_state, infos)`` with every :class:`NESInfo` field stacked to ``[num_steps]``.
  """
  num_steps = validation.check_positive_int(num_steps, "num_steps")
  restarts = validation.check_positive_int(restarts, "restarts", minimum=0)
  key = validation.as_key(key)
  keys = jax.random.split(key, num_steps)
  if restarts == 0:
    return jax.lax.scan(lambda s, k: strategy.step(k, s, f), state, keys)

  patience = validation.check_positive_int(patience, "patience")
  p0 = strategy.population_size(state.mean)
  big = strategy.with_population_size(p0 * 2 ** restarts)
  start = state._replace(num_active=jnp.asarray(p0, jnp.int32))

  def body(carry, k):
    s, last_best, stall, used = carry
    s, info = big.step(k, s, f)
    improved = s.best_fitness > last_best + min_improvement
    stall = jnp.where(improved, 0, stall + 1)
    last_best = jnp.where(improved, s.best_fitness, last_best)
    stuck = (stall >= patience) | (info.sigma_mean < min_sigma)
    do = stuck & (used < restarts)
    fresh = start._replace(num_active=jnp.minimum(s.num_active * 2, p0 * 2 ** restarts),
                           best_params=s.best_params, best_fitness=s.best_fitness)
    s = jax.tree_util.tree_map(lambda a, b: jnp.where(do, a, b), fresh, s)
    return (s, last_best, jnp.where(do, 0, stall), used + do.astype(jnp.int32)), info

  carry0 = (start, start.best_fitness, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
  (final, *_), infos = jax.lax.scan(body, carry0, keys)
  return final, infos

