r"""The cross-entropy method (CEM) on parameter pytrees with a diagonal Gaussian.

CEM maximises a fitness :math:`f` (a reward; negate a loss) by iterating on a
sampling distribution :math:`q_t = \mathcal{N}(\mu_t, \mathrm{diag}(\sigma_t^2))`
(seed 004; Rubinstein 1999; de Boer et al. 2005):

1. sample a population :math:`x_1, \dots, x_P \sim q_t`;
2. keep the elite: the :math:`K = \lfloor \rho P \rfloor` members of highest
   fitness (:math:`\rho` the elite fraction; ties broken by index, NaN fitness
   ranks last);
3. refit by maximum likelihood on the elite — the cross-entropy / KL projection
   :math:`q_{t+1} = \arg\min_q -\mathbb{E}_{q_t}\!\big[\tfrac{p(x)}{q_t(x)} H(x) \log q(x)\big]`
   with :math:`H` the indicator "in the elite" and, by default, :math:`p = q_t`
   (so all elite weights are equal). For a diagonal Gaussian the maximiser is
   the weighted mean and the weighted *biased* (divisor :math:`\sum w`) variance

   .. math::

      \hat\mu = \frac{\sum_{i \in E} w_i x_i}{\sum_{i\in E} w_i}, \qquad
      \hat\sigma^2 = \frac{\sum_{i\in E} w_i (x_i - \hat\mu)^2}{\sum_{i\in E} w_i};

4. optionally add a noise floor (Szita & Lőrincz 2006), which keeps CEM from
   collapsing before it reaches the optimum, and smooth:

   .. math::

      \sigma_{t+1} = \max\Big(\beta\,\sigma_t + (1 - \beta)\sqrt{\hat\sigma^2 + \epsilon_t^2},\ \sigma_{\min}\Big),
      \quad \mu_{t+1} = \alpha\,\mu_t + (1 - \alpha)\,\hat\mu,
      \quad \epsilon_t = \epsilon_0\,\gamma^t,

   with :math:`\alpha` = ``mean_smoothing`` and :math:`\beta` = ``std_smoothing``
   the weights on the *old* values (0: pure refit), :math:`\epsilon_0` =
   ``extra_std`` and :math:`\gamma` = ``extra_std_decay``.

Importance weights (seed 004): with ``target_log_prob`` (a log-density
:math:`\log p`, e.g. the nominal distribution of a rare-event problem), elite
member :math:`i` is weighted by :math:`w_i \propto p(x_i) / q_t(x_i)`; or pass
``log_weights`` to :func:`tell` directly.

The functions are pure: ``init`` builds the state, ``step`` does one
generation, :func:`run` does ``num_steps`` generations in one ``lax.scan``, and
``jax.vmap(lambda k: run(cem, k, state, f, num_steps=T))(keys)`` runs many seeds
at once. Shape-changing settings (population size, elite count) are bound by
:func:`cross_entropy_method`; the numeric ones may be traced.

Why hand-written: evosax's ``CMA_ES``/``SimpleES`` are flat-vector ask/tell
classes; pgjax needs CEM on pytrees, with elite importance weights and the
decaying noise floor, as pure functions usable inside ``vmap``/``scan``.

References:
  R. Rubinstein, "The Cross-Entropy Method for Combinatorial and Continuous
  Optimization", 1999. https://doi.org/10.1023/A:1010091220143
  P.-T. de Boer, D. Kroese, S. Mannor, R. Rubinstein, "A Tutorial on the
  Cross-Entropy Method", 2005. https://doi.org/10.1007/s10479-005-5724-z
  I. Szita, A. Lőrincz, "Learning Tetris Using the Noisy Cross-Entropy Method",
  2006. https://doi.org/10.1162/neco.2006.18.12.2936
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ("CEMInfo", "CEMState", "CrossEntropyMethod", "cross_entropy_method", "elite_fit", "num_elite",
           "run")


class CEMState(NamedTuple):
  """State of CEM.

  Attributes:
    mean: pytree, the mean :math:`\\mu_t` of the sampling distribution.
    std: pytree like ``mean``, the per-coordinate standard deviation :math:`\\sigma_t`.
    step: int32 scalar, generations done.
    best_params: pytree like ``mean``, the fittest member seen so far.
    best_fitness: scalar, its fitness (``-inf`` before the first generation).
  """

  mean: Any
  std: Any
  step: jax.Array
  best_params: Any
  best_fitness: jax.Array


class CEMInfo(NamedTuple):
  """Per-generation diagnostics (all scalars).

  Attributes:
    fitness_mean: mean fitness of the population (NaN members excluded).
    fitness_max: best fitness of the population.
    elite_threshold: the lowest fitness in the elite (the empirical
      :math:`(1 - \\rho)` quantile).
    elite_mean: mean fitness of the elite.
    extra_std: the noise floor :math:`\\epsilon_t` used in this generation.
    std_mean: mean of the new standard deviations over all coordinates.
  """

  fitness_mean: jax.Array
  fitness_max: jax.Array
  elite_threshold: jax.Array
  elite_mean: jax.Array
  extra_std: jax.Array
  std_mean: jax.Array


class CrossEntropyMethod(NamedTuple):
  """The pure functions of one CEM configuration (see :func:`cross_entropy_method`).

  Attributes:
    init: ``init(params, init_std=1.0) -> CEMState``.
    ask: ``ask(key, state) -> population`` (pytree with a leading ``[P]`` axis).
    tell: ``tell(state, population, fitness, log_weights=None) -> (state, CEMInfo)``.
    step: ``step(key, state, f) -> (state, CEMInfo)``: ask, evaluate ``f`` on
      every member (``vmap``), tell.
    population_size: ``P`` (static).
    num_elite: ``K`` (static).
  """

  init: Callable[..., CEMState]
  ask: Callable[..., Any]
  tell: Callable[..., tuple[CEMState, CEMInfo]]
  step: Callable[..., tuple[CEMState, CEMInfo]]
  population_size: int
  num_elite: int


def _is_concrete(x: Any) -> bool:
  if isinstance(x, (numbers.Number, np.ndarray, np.generic)):
    return True
  return isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)


def _check_range(value: Any, name: str, lo: float, hi: float, lo_open: bool, hi_open: bool) -> None:
  if np.ndim(value) != 0:
    raise ValueError(f"`{name}` must be a scalar, got shape {np.shape(value)}.")
  if not _is_concrete(value):
    return
  v = float(np.asarray(value))
  ok = np.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
  if not ok:
    lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
    raise ValueError(f"`{name}` must be in {lb}{lo}, {hi}{rb}, got {value!r}.")


def num_elite(population_size: int, elite_fraction: float) -> int:
  r"""The elite size :math:`K = \lfloor \rho P \rfloor` (with a 1e-9 guard against float round-off).

  Raises:
    ValueError: ``elite_fraction`` outside :math:`(0, 1]`, or a population too small for one elite.
  """
  if isinstance(population_size, bool) or not isinstance(population_size, (int, np.integer)):
    raise TypeError(f"`population_size` must be an integer, got {population_size!r}.")
  if population_size < 1:
    raise ValueError(f"`population_size` must be >= 1, got {population_size}.")
  if not isinstance(elite_fraction, (numbers.Real, np.floating)) or isinstance(elite_fraction, bool):
    raise TypeError(f"`elite_fraction` must be a Python/NumPy number (it sets a shape), got {elite_fraction!r}.")
  if not (0.0 < float(elite_fraction) <= 1.0):
    raise ValueError(f"`elite_fraction` must be in (0, 1], got {elite_fraction!r}.")
  k = int(np.floor(float(elite_fraction) * int(population_size) + 1e-9))
  if k < 1:
    raise ValueError(f"`population_size` {population_size} is too small for one elite member at "
                     f"elite_fraction={elite_fraction} (need population_size >= {int(np.ceil(1 / elite_fraction))}).")
  return k


def elite_fit(population: Any, fitness: jax.Array, *, num_elite: int,
              log_weights: jax.Array | None = None) -> tuple[Any, Any, jax.Array]:
  r"""Maximum-likelihood diagonal Gaussian fitted to the ``num_elite`` fittest members.

  Args:
    population: pytree of ``[P, ...]`` arrays.
    fitness: ``[P]`` fitness, higher is better; NaN counts as :math:`-\infty`.
    num_elite: ``K`` (static), ``1 <= K <= P``.
    log_weights: optional ``[P]`` log importance weights; the elite weights are
      :math:`w_i \propto \exp(\text{log\_weights}_i)`, normalised over the elite.

  Returns:
    ``(mean, std, elite_indices)``: pytrees like one member, and ``[K]`` indices.
    ``std`` uses the ML (biased, divisor :math:`\sum w`) variance; it is 0 for ``K = 1``.
  """
  fitness = jnp.asarray(fitness)
  p = fitness.shape[0]
  if not 1 <= num_elite <= p:
    raise ValueError(f"`num_elite` must be in [1, {p}] (the population size), got {num_elite}.")
  clean = jnp.where(jnp.isnan(fitness), -jnp.inf, fitness)
  _, idx = jax.lax.top_k(clean, num_elite)
  if log_weights is None:
    w = jnp.full((num_elite,), 1.0 / num_elite)
  else:
    lw = jnp.asarray(log_weights)[idx]
    w = jax.nn.softmax(lw)

  def fit(x):
    e = x[idx]
    wb = w.reshape((num_elite,) + (1,) * (e.ndim - 1)).astype(e.dtype)
    mu = jnp.sum(wb * e, axis=0)
    var = jnp.sum(wb * (e - mu) ** 2, axis=0)
    return mu, jnp.sqrt(jnp.maximum(var, 0.0))

  fits = jax.tree_util.tree_map(fit, population)
  treedef = jax.tree_util.tree_structure(population)
  leaves = treedef.flatten_up_to(fits)
  mean = treedef.unflatten([m for m, _ in leaves])
  std = treedef.unflatten([s for _, s in leaves])
  return mean, std, idx


def cross_entropy_method(
    *,
    population_size: int,
    elite_fraction: float = 0.1,
    mean_smoothing: Any = 0.0,
    std_smoothing: Any = 0.0,
    extra_std: Any = 0.0,
    extra_std_decay: Any = 1.0,
    min_std: Any = 0.0,
    target_log_prob: Callable[[Any], jax.Array] | None = None,
    f_takes_key: bool = False,
) -> CrossEntropyMethod:
  r"""Builds CEM's pure functions for one configuration (see the module docstring for the update).

  Args:
    population_size: ``P`` (static).
    elite_fraction: :math:`\rho \in (0, 1]` (static, sets ``K``).
    mean_smoothing: :math:`\alpha \in [0, 1)`, weight on the old mean.
    std_smoothing: :math:`\beta \in [0, 1)`, weight on the old std.
    extra_std: :math:`\epsilon_0 \ge 0`, the noise floor added in quadrature to the elite std.
    extra_std_decay: :math:`\gamma \in (0, 1]`, per-generation decay of the noise floor.
    min_std: :math:`\sigma_{\min} \ge 0`, a hard lower bound on every std.
    target_log_prob: optional ``params -> log p(params)``; weights the elite by
      :math:`p(x)/q_t(x)` (seed 004's importance weights).
    f_takes_key: ``step``'s ``f`` is called as ``f(key, params)`` with one key per member.

  Returns:
    A :class:`CrossEntropyMethod`.

  Raises:
    TypeError / ValueError: naming the argument (``population_size`` too small for
      one elite, ``elite_fraction`` outside (0, 1], a concrete numeric setting out of range).
  """
  k = num_elite(population_size, elite_fraction)
  p = int(population_size)
  _check_range(mean_smoothing, "mean_smoothing", 0.0, 1.0, False, True)
  _check_range(std_smoothing, "std_smoothing", 0.0, 1.0, False, True)
  _check_range(extra_std, "extra_std", 0.0, np.inf, False, True)
  _check_range(extra_std_decay, "extra_std_decay", 0.0, 1.0, True, False)
  _check_range(min_std, "min_std", 0.0, np.inf, False, True)
  if target_log_prob is not None and not callable(target_log_prob):
    raise TypeError(f"`target_log_prob` must be callable or None, got {type(target_log_prob).__name__}.")

  def init(params: Any, init_std: Any = 1.0) -> CEMState:
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
      raise ValueError("`params` must contain at least one array.")
    for leaf in leaves:
      if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
        raise TypeError(f"`params` leaves must be floating, got dtype {jnp.result_type(leaf)}.")
    if isinstance(init_std, (numbers.Number, np.ndarray, np.generic, jax.Array)) and np.ndim(init_std) == 0:
      if _is_concrete(init_std) and not (np.isfinite(float(init_std)) and float(init_std) > 0):
        raise ValueError(f"`init_std` must be finite and > 0, got {init_std!r}.")
      std = jax.tree_util.tree_map(lambda x: jnp.full(jnp.shape(x), init_std, jnp.result_type(x)), params)
    else:
      std = jax.tree_util.tree_map(lambda x, s: jnp.broadcast_to(jnp.asarray(s, jnp.result_type(x)),
                                                                 jnp.shape(x)), params, init_std)
      for s in jax.tree_util.tree_leaves(std):
        if _is_concrete(s) and not np.all(np.asarray(s) > 0):
          raise ValueError("`init_std` must be > 0 everywhere.")
    mean = jax.tree_util.tree_map(jnp.asarray, params)
    return CEMState(mean=mean, std=std, step=jnp.zeros((), jnp.int32), best_params=mean,
                    best_fitness=jnp.asarray(-jnp.inf, jnp.float32))

  def ask(key: jax.Array, state: CEMState) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(state.mean)
    keys = jax.random.split(key, len(leaves))
    stds = treedef.flatten_up_to(state.std)
    out = [m + s * jax.random.normal(kk, (p,) + jnp.shape(m), jnp.result_type(m))
           for kk, m, s in zip(keys, leaves, stds)]
    return treedef.unflatten(out)

  def _log_q(state, population):
    def leaf(x, m, s):
      z = (x - m) / s
      return jnp.sum((-0.5 * z * z - jnp.log(s) - 0.5 * np.log(2 * np.pi)).reshape(p, -1), axis=1)
    terms = jax.tree_util.tree_map(leaf, population, state.mean, state.std)
    return sum(jax.tree_util.tree_leaves(terms))

  def tell(state: CEMState, population: Any, fitness: jax.Array,
           log_weights: jax.Array | None = None) -> tuple[CEMState, CEMInfo]:
    fitness = jnp.asarray(fitness)
    if fitness.shape != (p,):
      raise ValueError(f"`fitness` must have shape ({p},) (population_size), got {fitness.shape}.")
    if log_weights is not None and jnp.shape(log_weights) != (p,):
      raise ValueError(f"`log_weights` must have shape ({p},), got {jnp.shape(log_weights)}.")
    mu_e, std_e, idx = elite_fit(population, fitness, num_elite=k, log_weights=log_weights)
    t = state.step
    eps = jnp.asarray(extra_std, jnp.float32) * jnp.asarray(extra_std_decay, jnp.float32) ** t.astype(jnp.float32)

    def new_std(s_old, s_e):
      s_new = jnp.sqrt(s_e ** 2 + eps.astype(s_e.dtype) ** 2)
      s_new = std_smoothing * s_old + (1 - std_smoothing) * s_new
      return jnp.maximum(s_new, min_std).astype(s_old.dtype)

    mean = jax.tree_util.tree_map(lambda m_old, m_e: (mean_smoothing * m_old + (1 - mean_smoothing) * m_e
                                                      ).astype(m_old.dtype), state.mean, mu_e)
    std = jax.tree_util.tree_map(new_std, state.std, std_e)
    clean = jnp.where(jnp.isnan(fitness), -jnp.inf, fitness)
    i_best = jnp.argmax(clean)
    gen_best = clean[i_best]
    improved = gen_best > state.best_fitness
    best_params = jax.tree_util.tree_map(lambda b, x: jnp.where(improved, x[i_best], b),
                                         state.best_params, population)
    best_fitness = jnp.where(improved, gen_best, state.best_fitness).astype(state.best_fitness.dtype)
    finite = jnp.isfinite(clean)
    std_leaves = jax.tree_util.tree_leaves(std)
    info = CEMInfo(
        fitness_mean=jnp.sum(jnp.where(finite, clean, 0.0)) / jnp.maximum(jnp.sum(finite), 1),
        fitness_max=gen_best,
        elite_threshold=clean[idx[-1]],
        elite_mean=jnp.mean(clean[idx]),
        extra_std=eps,
        std_mean=sum(jnp.sum(s) for s in std_leaves) / sum(s.size for s in std_leaves),
    )
    return CEMState(mean, std, t + 1, best_params, best_fitness), info

  def step(key: jax.Array, state: CEMState, f: Callable[..., jax.Array]) -> tuple[CEMState, CEMInfo]:
    if not callable(f):
      raise TypeError(f"`f` must be callable, got {type(f).__name__}.")
    k_pop, k_f = jax.random.split(key)
    population = ask(k_pop, state)
    if f_takes_key:
      fitness = jax.vmap(f)(jax.random.split(k_f, p), population)
    else:
      fitness = jax.vmap(f)(population)
    if jnp.shape(fitness) != (p,):
      raise ValueError(f"`f` must return a scalar, got shape {jnp.shape(fitness)[1:]}.")
    log_w = None
    if target_log_prob is not None:
      log_w = jax.vmap(target_log_prob)(population) - _log_q(state, population)
    return tell(state, population, fitness, log_w)

  return CrossEntropyMethod(init=init, ask=ask, tell=tell, step=step, population_size=p, num_elite=k)


def run(cem: CrossEntropyMethod, key: jax.Array, state: CEMState, f: Callable[..., jax.Array], *,
        num_steps: int) -> tuple[CEMState, CEMInfo]:
  """Runs ``num_steps`` generations of ``cem`` in one ``lax.scan``.

  Returns:
    ``(final_state, infos)`` with every :class:`CEMInfo` field stacked to ``[num_steps]``.
  """
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f"`num_steps` must be a positive integer, got {num_steps!r}.")
  keys = jax.random.split(key, int(num_steps))
  return jax.lax.scan(lambda s, kk: cem.step(kk, s, f), state, keys)
