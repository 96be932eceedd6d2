r"""The cross-entropy method (CEM) on parameter pytrees with a diagonal Gaussian.

CEM maximises a fitness :math:`f` (a reward; negate a loss) by iterating on a sampling distribution
:math:`q_t = \mathcal{N}(\mu_t, \mathrm{diag}(\sigma_t^2))` (Rubinstein 1999; de Boer et al. 2005):

1. sample a population :math:`x_1, \dots, x_P \sim q_t`;
2. keep the elite: the :math:`K = \lfloor \rho P \rfloor` members of highest fitness (:math:`\rho` the
   elite fraction; ties broken by index; see the NaN policy below);
3. refit by maximum likelihood on the elite — the cross-entropy / KL projection
   :math:`q_{t+1} = \arg\min_q -\mathbb{E}_{q_t}\!\big[\tfrac{p(x)}{q_t(x)} H(x) \log q(x)\big]` with
   :math:`H` the indicator "in the elite" and, by default, :math:`p = q_t` (so all elite weights are
   equal). For a diagonal Gaussian the maximiser is the weighted mean and the weighted *biased* (divisor
   :math:`\sum w`) variance

   .. math::

      \hat\mu = \frac{\sum_{i \in E} w_i x_i}{\sum_{i\in E} w_i}, \qquad
      \hat\sigma^2 = \frac{\sum_{i\in E} w_i (x_i - \hat\mu)^2}{\sum_{i\in E} w_i};

4. optionally add a noise floor (Szita & Lőrincz 2006), which keeps CEM from collapsing before it reaches
   the optimum, and smooth:

   .. math::

      \sigma_{t+1} = \max\Big(\beta\,\sigma_t + (1 - \beta)\sqrt{\hat\sigma^2 + \epsilon_t^2},\ \sigma_{\min}\Big),
      \quad \mu_{t+1} = \alpha\,\mu_t + (1 - \alpha)\,\hat\mu,
      \quad \epsilon_t = \epsilon_0\,\gamma^t,

   with :math:`\alpha` = ``mean_smoothing`` and :math:`\beta` = ``std_smoothing`` the weights on the *old*
   values (0: pure refit), :math:`\epsilon_0` = ``extra_std`` and :math:`\gamma` = ``extra_std_decay``.

**Importance weights.** With ``target_log_prob`` (a log-density :math:`\log p`, e.g. the nominal
distribution of a rare-event problem), elite member :math:`i` is weighted by :math:`w_i \propto p(x_i) /
q_t(x_i)`; or pass ``log_weights`` to ``tell`` directly. The weights are normalised over the elite, so
factors common to all members cancel: a coordinate whose standard deviation is 0 (a collapsed
distribution, where every member equals the mean) is left out of :math:`\log q_t`. Non-finite log-weights
are handled so the result stays finite: NaN counts as :math:`-\infty` (weight 0); if some are
:math:`+\infty` they share the weight equally; if none is finite, the elite is weighted equally.

**Collapse.** The elite's standard deviation can be 0 (always with :math:`K = 1`): without a noise floor
(``extra_std``) or ``min_std`` the distribution then collapses to a point, every later population equals
the mean, and CEM stops moving. The state stays finite; set ``min_std > 0`` or ``extra_std > 0`` to keep
exploring.

**NaN fitness** (the library's policy, :mod:`pgjax.shaping`): CEM ranks, so a NaN fitness ranks last
(below :math:`-\infty`) and enters the elite only when fewer than :math:`K` members are not NaN;
``CEMInfo.num_nonfinite`` counts the NaN or :math:`\pm\infty` fitness values of each generation.

The functions are pure: ``init`` builds the state, ``step`` does one generation, :func:`run` does
``num_steps`` generations in one ``lax.scan``, and ``jax.vmap(lambda k: run(cem, k, state, f,
num_steps=T))(keys)`` runs many seeds at once. Shape-changing settings (population size, elite count) are
bound by :func:`cross_entropy_method`; the numeric ones may be traced.

Why hand-written: evosax's ``CMA_ES``/``SimpleES`` are flat-vector ask/tell classes; CEM here works on
pytrees, with elite importance weights and the decaying noise floor, as pure functions usable inside
``vmap``/``scan``.

References:
  R. Rubinstein, "The Cross-Entropy Method for Combinatorial and Continuous Optimization", Methodology
  and Computing in Applied Probability, 1999. https://doi.org/10.1023/A:1010091220143
  P.-T. de Boer, D. Kroese, S. Mannor, R. Rubinstein, "A Tutorial on the Cross-Entropy Method", Annals
  of Operations Research, 2005. https://doi.org/10.1007/s10479-005-5724-z
  I. Szita, A. Lőrincz, "Learning Tetris Using the Noisy Cross-Entropy Method", Neural Computation,
  2006. https://doi.org/10.1162/neco.2006.18.12.2936
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pgjax._src import shaping
from pgjax._src import validation
from pgjax._src.base import PyTree

__all__ = ("CEMInfo", "CEMState", "CrossEntropyMethod", "cross_entropy_method", "elite_fit", "num_elite",
           "run")


class CEMState(NamedTuple):
  r"""State of CEM.

  Attributes:
    mean: pytree, the mean :math:`\mu_t` of the sampling distribution.
    std: pytree like ``mean``, the per-coordinate standard deviation :math:`\sigma_t`.
    step: int32 scalar, generations done.
    best_params: pytree like ``mean``, the fittest member seen so far.
    best_fitness: scalar, its fitness (``-inf`` before the first generation).
  """

  mean: PyTree
  std: PyTree
  step: jax.Array
  best_params: PyTree
  best_fitness: jax.Array


class CEMInfo(NamedTuple):
  r"""Per-generation diagnostics (all scalars).

  Attributes:
    fitness_mean: mean fitness of the population's finite members (0 if none is finite).
    fitness_max: best fitness of the population (NaN ranks last; ``-inf`` if all are NaN).
    elite_threshold: the lowest fitness in the elite (the empirical :math:`(1 - \rho)` quantile).
    elite_mean: mean fitness of the elite.
    extra_std: the noise floor :math:`\epsilon_t` used in this generation.
    std_mean: mean of the new standard deviations over all coordinates.
    num_nonfinite: int32, how many members had a NaN or :math:`\pm\infty` fitness.
  """

  fitness_mean: jax.Array
  fitness_max: jax.Array
  elite_threshold: jax.Array
  elite_mean: jax.Array
  extra_std: jax.Array
  std_mean: jax.Array
  num_nonfinite: jax.Array


class CrossEntropyMethod(NamedTuple):
  """The pure functions of one CEM configuration (see :func:`cross_entropy_method`).

  Attributes:
    init: ``init(params, init_std=1.0) -> CEMState``.
    ask: ``ask(key, state) -> population`` (pytree with a leading ``[P]`` axis).
    tell: ``tell(state, population, fitness, log_weights=None) -> (state, CEMInfo)``.
    step: ``step(key, state, f) -> (state, CEMInfo)``: ask, evaluate ``f`` on every member (``vmap``),
      tell.
    population_size: ``P`` (static).
    num_elite: ``K`` (static).
  """

  init: Callable[..., CEMState]
  ask: Callable[..., PyTree]
  tell: Callable[..., tuple[CEMState, CEMInfo]]
  step: Callable[..., tuple[CEMState, CEMInfo]]
  population_size: int
  num_elite: int


class _Settings(NamedTuple):
  population_size: int
  num_elite: int
  mean_smoothing: Any
  std_smoothing: Any
  extra_std: Any
  extra_std_decay: Any
  min_std: Any
  target_log_prob: Callable[[PyTree], jax.Array] | None
  f_takes_key: bool


def num_elite(population_size: int, elite_fraction: float) -> int:
  r"""The elite size :math:`K = \lfloor \rho P \rfloor` (with a 1e-9 guard against float round-off).

  Raises:
    TypeError / ValueError: naming the argument: ``elite_fraction`` outside :math:`(0, 1]`, or a
      population too small for one elite member.
  """
  population_size = validation.check_positive_int(population_size, "population_size")
  if not isinstance(elite_fraction, (numbers.Real, np.floating)) or isinstance(elite_fraction, bool):
    raise TypeError(f"`elite_fraction` must be a Python/NumPy number (it sets a shape), got {elite_fraction!r}.")
  validation.check_range(elite_fraction, "elite_fraction", 0.0, 1.0, lo_open=True)
  k = int(np.floor(float(elite_fraction) * population_size + 1e-9))
  if k < 1:
    raise ValueError(f"`population_size` {population_size} is too small for one elite member at "
                     f"elite_fraction={elite_fraction} (need population_size >= "
                     f"{int(np.ceil(1 / elite_fraction))}).")
  return k


def _elite_weights(log_weights: jax.Array | None, num: int, dtype: Any) -> jax.Array:
  """Normalised ``[K]`` weights from elite log-weights, finite whatever they contain (module docstring)."""
  if log_weights is None:
    return jnp.full((num,), 1.0 / num, dtype)
  lw = jnp.asarray(log_weights)
  lw = jnp.where(jnp.isnan(lw), -jnp.inf, lw)
  top = jnp.max(lw)
  shifted = jnp.where(jnp.isfinite(top), lw - jnp.where(jnp.isfinite(top), top, 0.0), 0.0)
  w = jnp.where(top == jnp.inf, (lw == jnp.inf).astype(lw.dtype),        # the +inf members share
                jnp.where(top == -jnp.inf, jnp.ones_like(lw), jnp.exp(shifted)))  # none finite: equal
  return (w / jnp.sum(w)).astype(dtype)


def elite_fit(population: PyTree, fitness: jax.Array, *, num_elite: int,
              log_weights: jax.Array | None = None) -> tuple[PyTree, PyTree, jax.Array]:
  r"""Maximum-likelihood diagonal Gaussian fitted to the ``num_elite`` fittest members.

  Args:
    population: pytree of ``[P, ...]`` arrays.
    fitness: ``[P]`` fitness, higher is better; NaN ranks last (:func:`pgjax.shaping.elite_indices`).
    num_elite: ``K`` (static), ``1 <= K <= P``.
    log_weights: optional ``[P]`` log importance weights; the elite weights are
      :math:`w_i \propto \exp(\text{log\_weights}_i)`, normalised over the elite (non-finite values are
      handled as in the module docstring, so the fit is finite).

  Returns:
    ``(mean, std, elite_indices)``: pytrees like one member, and ``[K]`` indices (best first). ``std``
    uses the ML (biased, divisor :math:`\sum w`) variance; it is 0 for ``K = 1``.
  """
  fitness = jnp.asarray(fitness)
  idx = shaping.elite_indices(fitness, num_elite)
  lw = None if log_weights is None else jnp.asarray(log_weights)[idx]

  def fit(x):
    e = x[idx]
    w = _elite_weights(lw, num_elite, e.dtype).reshape((num_elite,) + (1,) * (e.ndim - 1))
    mu = jnp.sum(w * e, axis=0)
    var = jnp.sum(w * jnp.square(e - mu[None]), axis=0)
    return mu, jnp.sqrt(jnp.maximum(var, 0.0))

  leaves, treedef = jax.tree_util.tree_flatten(population)
  fits = [fit(x) for x in leaves]
  return treedef.unflatten([m for m, _ in fits]), treedef.unflatten([s for _, s in fits]), idx


def _init(params: PyTree, init_std: Any = 1.0) -> CEMState:
  validation.check_float_tree(params, "params")
  if jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(init_std)) and np.ndim(init_std) == 0:
    validation.check_positive(init_std, "init_std")
    std = jax.tree_util.tree_map(lambda x: jnp.full(jnp.shape(x), init_std, jnp.result_type(x)), params)
  else:
    try:
      std = jax.tree_util.tree_map(
          lambda x, s: jnp.broadcast_to(jnp.asarray(s, jnp.result_type(x)), jnp.shape(x)), params, init_std)
    except (ValueError, TypeError) as e:
      raise ValueError(f"`init_std` must be a positive scalar or a pytree like `params` with leaves "
                       f"broadcastable to its leaves ({str(e).splitlines()[0][:200]}).") from None
    for s in jax.tree_util.tree_leaves(std):
      validation.check_positive(s, "init_std")
  mean = jax.tree_util.tree_map(jnp.asarray, params)
  return CEMState(mean=mean, std=std, step=jnp.zeros((), jnp.int32), best_params=mean,
                  best_fitness=jnp.asarray(-jnp.inf, jnp.float32))


def _ask(cfg: _Settings, key: jax.Array, state: CEMState) -> PyTree:
  key = validation.as_key(key, "key")
  p = cfg.population_size
  leaves, treedef = jax.tree_util.tree_flatten(state.mean)
  keys = jax.random.split(key, len(leaves))
  stds = treedef.flatten_up_to(state.std)
  out = [m[None] + s[None] * jax.random.normal(k, (p,) + jnp.shape(m), jnp.result_type(m))
         for k, m, s in zip(keys, leaves, stds)]
  return treedef.unflatten(out)


def _log_q(cfg: _Settings, state: CEMState, population: PyTree) -> jax.Array:
  """``[P]`` log-density of each member under ``q_t``, over the coordinates with a positive std."""
  p = cfg.population_size

  def leaf(x, m, s):
    ok = s > 0
    safe = jnp.where(ok, s, 1.0)
    z = (x - m[None]) / safe[None]
    terms = jnp.where(ok[None], -0.5 * z * z - jnp.log(safe)[None] - 0.5 * np.log(2 * np.pi), 0.0)
    return jnp.sum(terms.reshape(p, -1), axis=1)

  terms = jax.tree_util.tree_map(leaf, population, state.mean, state.std)
  return sum(jax.tree_util.tree_leaves(terms))


def _tell(cfg: _Settings, state: CEMState, population: PyTree, fitness: jax.Array,
          log_weights: jax.Array | None = None) -> tuple[CEMState, CEMInfo]:
  p, k = cfg.population_size, cfg.num_elite
  fitness = jnp.asarray(fitness)
  if fitness.shape != (p,):
    raise ValueError(f"`fitness` must have shape ({p},) (population_size), got {fitness.shape}.")
  if log_weights is not None and jnp.shape(log_weights) != (p,):
    raise ValueError(f"`log_weights` must have shape ({p},), got {jnp.shape(log_weights)}.")
  mu_e, std_e, idx = elite_fit(population, fitness, num_elite=k, log_weights=log_weights)
  t = state.step
  eps = jnp.asarray(cfg.extra_std, jnp.float32) * jnp.asarray(cfg.extra_std_decay, jnp.float32) ** t.astype(
      jnp.float32)
  alpha, beta = cfg.mean_smoothing, cfg.std_smoothing

  def new_std(s_old, s_e):
    s_new = jnp.sqrt(s_e ** 2 + eps.astype(s_e.dtype) ** 2)
    s_new = beta * s_old + (1 - beta) * s_new
    return jnp.maximum(s_new, cfg.min_std).astype(s_old.dtype)

  mean = jax.tree_util.tree_map(lambda m_old, m_e: (alpha * m_old + (1 - alpha) * m_e).astype(m_old.dtype),
                                state.mean, mu_e)
  std = jax.tree_util.tree_map(new_std, state.std, std_e)
  clean = jnp.where(jnp.isnan(fitness), -jnp.inf, fitness)
  i_best = idx[0]
  gen_best = clean[i_best]
  improved = gen_best > state.best_fitness
  best_params = jax.tree_util.tree_map(lambda b, x: jnp.where(improved, x[i_best], b), state.best_params,
                                       population)
  best_fitness = jnp.where(improved, gen_best, state.best_fitness).astype(state.best_fitness.dtype)
  finite = jnp.isfinite(fitness)
  std_leaves = jax.tree_util.tree_leaves(std)
  info = CEMInfo(
      fitness_mean=jnp.sum(jnp.where(finite, fitness, 0.0)) / jnp.maximum(jnp.sum(finite), 1),
      fitness_max=gen_best,
      elite_threshold=clean[idx[-1]],
      elite_mean=jnp.mean(clean[idx]),
      extra_std=eps,
      std_mean=sum(jnp.sum(s) for s in std_leaves) / max(sum(s.size for s in std_leaves), 1),
      num_nonfinite=shaping.num_nonfinite(fitness),
  )
  return CEMState(mean, std, t + 1, best_params, best_fitness), info


def _step(cfg: _Settings, key: jax.Array, state: CEMState, f: Callable[..., jax.Array]
          ) -> tuple[CEMState, CEMInfo]:
  validation.check_callable(f, "f")
  key = validation.as_key(key, "key")
  k_pop, k_f = jax.random.split(key)
  population = _ask(cfg, k_pop, state)
  if cfg.f_takes_key:
    fitness = jax.vmap(f)(jax.random.split(k_f, cfg.population_size), population)
  else:
    fitness = jax.vmap(f)(population)
  if jnp.shape(fitness) != (cfg.population_size,):
    raise ValueError(f"`f` must return a scalar, got shape {jnp.shape(fitness)[1:]}.")
  log_w = None
  if cfg.target_log_prob is not None:
    log_w = jax.vmap(cfg.target_log_prob)(population) - _log_q(cfg, state, population)
  return _tell(cfg, state, population, fitness, log_w)


def cross_entropy_method(
    *,
    population_size: int,
    elite_fraction: float = 0.1,
    mean_smoothing: Any = 0.0,
    std_smoothing: Any = 0.0,
    extra_std: Any = 0.0,
    extra_std_decay: Any = 1.0,
    min_std: Any = 0.0,
    target_log_prob: Callable[[PyTree], jax.Array] | None = None,
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
    target_log_prob: optional ``params -> log p(params)``; weights the elite by :math:`p(x)/q_t(x)`.
    f_takes_key: ``step``'s ``f`` is called as ``f(key, params)`` with one key per member.

  Returns:
    A :class:`CrossEntropyMethod`.

  Raises:
    TypeError / ValueError: naming the argument (``population_size`` too small for one elite,
      ``elite_fraction`` outside (0, 1], a concrete numeric setting out of range).
  """
  k = num_elite(population_size, elite_fraction)
  validation.check_range(mean_smoothing, "mean_smoothing", 0.0, 1.0, hi_open=True)
  validation.check_range(std_smoothing, "std_smoothing", 0.0, 1.0, hi_open=True)
  validation.check_range(extra_std, "extra_std", 0.0, np.inf, hi_open=True)
  validation.check_range(extra_std_decay, "extra_std_decay", 0.0, 1.0, lo_open=True)
  validation.check_range(min_std, "min_std", 0.0, np.inf, hi_open=True)
  if target_log_prob is not None:
    validation.check_callable(target_log_prob, "target_log_prob")
  if not isinstance(f_takes_key, bool):
    raise TypeError(f"`f_takes_key` must be a bool, got {f_takes_key!r}.")
  cfg = _Settings(int(population_size), k, mean_smoothing, std_smoothing, extra_std, extra_std_decay, min_std,
                  target_log_prob, f_takes_key)
  return CrossEntropyMethod(init=_init, ask=functools.partial(_ask, cfg), tell=functools.partial(_tell, cfg),
                            step=functools.partial(_step, cfg), population_size=cfg.population_size,
                            num_elite=k)


def run(cem: CrossEntropyMethod, key: jax.Array, state: CEMState, f: Callable[..., jax.Array], *,
        num_steps: int) -> tuple[CEMState, CEMInfo]:
  """Runs ``num_steps`` generations of ``cem`` in one ``lax.scan``.

  Returns:
    ``(final_state, infos)`` with every :class:`CEMInfo` field stacked to ``[num_steps]``.
  """
  num_steps = validation.check_positive_int(num_steps, "num_steps")
  keys = jax.random.split(validation.as_key(key, "key"), num_steps)
  return jax.lax.scan(lambda s, kk: cem.step(kk, s, f), state, keys)
