r"""Score-function, pathwise and exact gradient estimators of :math:`\nabla_\theta\, \mathbb{E}_{x\sim p_\theta}[f(x)]`.

An *estimator* is a pure function ``(key, params) -> (grads, aux)``: ``grads`` has the tree structure and
dtypes of ``params`` and estimates the gradient of exactly :math:`J(\theta) = \mathbb{E}_{p_\theta}[f]` (no
sign flip: ascend it to maximise :math:`J`); ``aux`` is a ``NamedTuple`` with fixed fields.

``dist_fn(params)`` returns a distribution with distrax's interface (``sample(seed=, sample_shape=)``,
``log_prob``). A sample ``x`` is one draw of the whole distribution, of shape ``batch_shape + event_shape``;
its log-probability is ``log_prob(x)`` summed over ``batch_shape`` (the batch entries are treated as
independent components of one joint sample, so ``distrax.Normal(loc=jnp.zeros(3), ...)`` and
``distrax.MultivariateNormalDiag`` give the same estimator).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, NamedTuple, Union

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from pgjax._src import baselines as _baselines
from pgjax._src import validation

# What `baseline=` accepts: see `pgjax.baselines.get`.
BaselineArg = Union[str, float, Callable[[jax.Array], jax.Array], _baselines.Baseline, None]


class ScoreFunctionAux(NamedTuple):
  """Auxiliary output of a score-function estimator.

  Attributes:
    samples: ``[N, ...]`` the draws :math:`x_i` (no gradient path).
    values: ``[N]`` the sample values :math:`f(x_i)`.
    baselines: ``[N]`` the baselines :math:`b_i` (``[N, D]`` over the raveled parameters for the
      per-coordinate baselines; for ``"group_normalize"``, ``values - advantages``).
    log_probs: ``[N]`` :math:`\\log p_\\theta(x_i)`.
    num_evaluations: number of calls to ``f`` (``N``), for comparisons at equal budget.
  """
  samples: Any
  values: jax.Array
  baselines: jax.Array
  log_probs: jax.Array
  num_evaluations: int


class PathwiseAux(NamedTuple):
  """Auxiliary output of a pathwise estimator: ``samples [N, ...]``, ``values [N]``, ``num_evaluations``."""
  samples: Any
  values: jax.Array
  num_evaluations: int


class ExactAux(NamedTuple):
  """Auxiliary output of :func:`exact_gradient`.

  Attributes:
    value: the exact value :math:`J(\\theta)`.
    num_evaluations: calls to ``f`` (the number of support points; 0 with ``expectation=``).
  """
  value: jax.Array
  num_evaluations: int = 0


def joint_log_prob(dist: Any, x: Any) -> jax.Array:
  """``dist.log_prob(x)`` summed over the distribution's batch dimensions; ``x`` may carry leading sample dims."""
  # distrax relies on implicit rank promotion internally (e.g. its Shift bijector); allow it for its calls.
  with jax.numpy_rank_promotion("allow"):
    lp = dist.log_prob(x)
  nbatch = len(dist.batch_shape)
  if nbatch:
    lp = jnp.sum(lp, axis=tuple(range(lp.ndim - nbatch, lp.ndim)))
  return lp


def _distribution(dist_fn: Callable[[Any], Any], params: Any) -> Any:
  """``dist_fn(params)``, or ``TypeError`` naming ``dist_fn`` if it is not a distribution (duck-typed)."""
  return validation.check_distribution(dist_fn(params), "dist_fn")


def _check_params(params: Any) -> Any:
  """``TypeError`` naming ``params`` unless every leaf is a real floating array (checked at trace time)."""
  return validation.check_float_tree(params, "params")


def _propagate_nonfinite(grads: Any, values: jax.Array) -> Any:
  """NaN policy: every gradient leaf is NaN when some ``f(x_i)`` is not finite (adds ``0 * sum(values)``).

  Needed where a leaf's estimate could otherwise stay finite: a pathwise derivative through a ``where``
  whose NaN branch has a finite derivative, or a parameter the log-probability does not depend on.
  """
  poison = 0 * jnp.sum(jax.lax.stop_gradient(values))
  return jax.tree_util.tree_map(lambda g: g + poison.astype(g.dtype), grads)


def _sample(dist: Any, key: jax.Array, num_samples: int) -> Any:
  """``num_samples`` draws from ``dist`` (distrax relies on implicit rank promotion internally)."""
  with jax.numpy_rank_promotion("allow"):
    return dist.sample(seed=key, sample_shape=(num_samples,))


def _evaluate(f, key, samples, num_samples, f_takes_key, check_finite):
  if f_takes_key:
    values = jax.vmap(f)(jax.random.split(key, num_samples), samples)
  else:
    values = jax.vmap(f)(samples)
  values = jnp.asarray(values)
  if values.shape != (num_samples,):
    raise ValueError(f"`f` must return a scalar for each sample; got shape {values.shape[1:]} per sample.")
  if not jnp.issubdtype(values.dtype, jnp.floating):
    values = values.astype(jnp.result_type(float))
  if check_finite:
    def _raise_if_bad(v):
      if not np.all(np.isfinite(v)):
        bad = np.flatnonzero(~np.isfinite(v))
        raise FloatingPointError(f"`f` returned non-finite values at samples {bad[:10].tolist()} "
                                 f"(check_finite=True): {np.asarray(v)[bad[:10]].tolist()}")
    jax.debug.callback(_raise_if_bad, values)
  # No stop_gradient: the samples carry none, so the values have no path to the distribution's params; any
  # other dependence of f (on a hyperparameter it closes over) is part of the estimate's true derivative.
  return values


def score_function(f: Callable[..., jax.Array], dist_fn: Callable[[Any], Any], *, num_samples: int,
                   baseline: BaselineArg = "none", f_takes_key: bool = False,
                   check_finite: bool = False) -> Callable[..., tuple[Any, ScoreFunctionAux]]:
  r"""Builds the score-function (likelihood-ratio, REINFORCE) estimator of :math:`\nabla_\theta \mathbb{E}_{p_\theta}[f]`.

  .. math::

     \hat g = \frac{1}{N} \sum_{i=1}^N \big(f(x_i) - b_i\big)\, \nabla_\theta \log p_\theta(x_i),
     \qquad x_i \sim p_\theta \text{ i.i.d.}

  computed as one vector-Jacobian product of :math:`\theta \mapsto (\log p_\theta(x_i))_i` with the
  cotangent :math:`(f(x_i) - b_i)/N` (one backward pass; no per-sample Jacobian), unless the baseline needs
  per-sample scores (``optimal*``), in which case the scores :math:`s_i = \nabla_\theta\log p_\theta(x_i)`
  are formed once by ``vmap(grad)`` and reused for the estimate.

  Baselines (``baseline=``, resolved by :func:`pgjax.baselines.get`, which lists the formulas and their
  bias): ``"none"``, a number, ``"constant"`` (reads ``baseline_value=`` at call time), ``"mean"``,
  ``"leave_one_out"``, ``"optimal"``, ``"optimal_leave_one_out"``, ``"optimal_per_coordinate"``,
  ``"optimal_per_coordinate_leave_one_out"``, ``"group_normalize"``, a callable ``b(values [N]) -> [N]``
  (unbiased iff :math:`b_i` ignores :math:`x_i`) or a :class:`pgjax.baselines.Baseline`.

  With ``num_samples=1`` the in-batch baselines equal the single value (``"mean"``, ``"group_normalize"``
  exactly; ``"optimal"`` and ``"optimal_per_coordinate"`` as :math:`f s^2/s^2`, up to rounding), so the
  estimate is zero up to rounding error; the leave-one-out ones need N >= 2 and raise.

  NaN policy: a non-finite :math:`f(x_i)` makes every gradient leaf NaN, with every baseline; nothing is
  ranked, dropped or zeroed. Pass ``check_finite=True`` to raise instead.

  Differentiating the estimate: the samples are drawn without a gradient path, and nothing else is held
  constant, so ``jax.grad`` of a function of the estimate with respect to ``baseline_value``, a
  hyperparameter that ``f`` or a callable baseline closes over, or ``params`` (through the scores
  :math:`\nabla_\theta\log p_\theta(x_i)` and the ``optimal*`` coefficients, with the samples fixed) gives
  the true derivative of the estimate (as used to tune control variates, e.g. Grathwohl et al., "Backpropagation
  through the void", 2018).

  Args:
    f: the objective of one sample, ``f(x) -> scalar`` (or ``f(key, x)`` with ``f_takes_key=True`` for a noisy
      objective: each sample gets its own key, split from the estimator's key). It is never differentiated
      for the estimate.
    dist_fn: ``params -> distribution`` with distrax's interface (``sample(seed=, sample_shape=)`` and
      ``log_prob``; checked at trace time).
    num_samples: N >= 1, static.
    baseline: see above; static (a number may be traced).
    f_takes_key: whether ``f`` takes a PRNG key first.
    check_finite: if True, a non-finite ``f`` value raises ``FloatingPointError`` at run time (through a host
      callback; costs a device-to-host transfer of the values).

  Returns:
    ``estimator(key, params, *, baseline_value=0.0) -> (grads, ScoreFunctionAux)``; ``grads`` has ``params``'
    structure and dtypes. ``baseline_value`` (traced, scalar) is used by ``baseline="constant"`` only
    (ignored otherwise), e.g. an EMA baseline carried by the caller (:func:`pgjax.baselines.ema_value`).

  Raises:
    ValueError / TypeError naming the argument for a bad ``num_samples``, ``baseline``, ``f``, ``dist_fn`` or
    ``key`` (at construction or trace time).

  References:
    Williams, "Simple statistical gradient-following algorithms for connectionist RL", Machine Learning 1992.
    Mohamed, Rosca, Figurnov, Mnih, "Monte Carlo gradient estimation in machine learning", JMLR 2020.
  """
  validation.check_callable(f, "f")
  validation.check_callable(dist_fn, "dist_fn")
  num_samples = validation.check_positive_int(num_samples, "num_samples")
  spec = _baselines.get(baseline, num_samples=num_samples,
                        supports=("sq_norms", "sq_scores", "value"))
  per_sample_scores = "sq_norms" in spec.inputs or "sq_scores" in spec.inputs

  def estimator(key, params, *, baseline_value=0.0):
    key = validation.as_key(key)
    _check_params(params)
    k_sample, k_f = jax.random.split(key)
    dist = _distribution(dist_fn, params)
    samples = jax.lax.stop_gradient(_sample(dist, k_sample, num_samples))
    values = _evaluate(f, k_f, samples, num_samples, f_takes_key, check_finite)

    def log_prob_batch(p):
      return joint_log_prob(dist_fn(p), samples)

    if per_sample_scores:
      flat, unravel = ravel_pytree(params)

      def one_log_prob(flat_p, x):
        return joint_log_prob(dist_fn(unravel(flat_p)), x)

      scores = jax.vmap(jax.grad(one_log_prob), in_axes=(None, 0))(flat, samples)  # [N, D]
      sq = scores * scores
      w = spec.weights(values, sq_norms=jnp.sum(sq, axis=1), sq_scores=sq, value=baseline_value)
      w2 = w if w.ndim == 2 else w[:, None]
      g_flat = jnp.mean(w2.astype(scores.dtype) * scores, axis=0)
      grads = jax.tree_util.tree_map(lambda g, p: g.astype(jnp.asarray(p).dtype), unravel(g_flat), params)
      log_probs = log_prob_batch(params)
    else:
      w = spec.weights(values, value=baseline_value)
      # g = J^T w / N with J the Jacobian of the log-probs: the weights enter linearly (no stop_gradient), so
      # outer derivatives with respect to the baseline are exact.
      log_probs, vjp_fn = jax.vjp(log_prob_batch, params)
      (grads,) = vjp_fn((w / num_samples).astype(log_probs.dtype))
    b = values[:, None] - w if w.ndim == 2 else values - w
    return _propagate_nonfinite(grads, values), ScoreFunctionAux(samples, values, b, log_probs, num_samples)

  return estimator


def pathwise(f: Callable[[Any], jax.Array], dist_fn: Callable[[Any], Any], *,
             num_samples: int) -> Callable[..., tuple[Any, PathwiseAux]]:
  r"""Builds the pathwise (reparameterisation) estimator :math:`\frac1N\sum_i \nabla_\theta f(x_\theta(\epsilon_i))`.

  The samples are drawn with the distribution's own ``sample``, which for distrax's continuous distributions
  (Normal, MultivariateNormalDiag, ...) is the differentiable map :math:`x = \mu + \sigma\epsilon`; ``f`` is
  differentiated through it. It is the low-variance reference for *differentiable* ``f``. For an ``f`` that is
  piecewise constant (a step, an argmax) its gradient is zero almost surely, so it is biased (visibly wrong),
  and for discrete distributions there is no gradient path at all: use :func:`score_function` there.

  NaN policy: as for :func:`score_function`, a non-finite :math:`f(x_i)` makes every gradient leaf NaN
  (even where ``f``'s NaN comes from a ``jnp.where`` branch whose derivative is finite).

  Args:
    f: differentiable objective of one sample, ``f(x) -> scalar``.
    dist_fn: ``params -> distribution`` whose ``sample`` is reparameterised.
    num_samples: N >= 1, static.

  Returns:
    ``estimator(key, params) -> (grads, PathwiseAux)``.

  References:
    Kingma & Welling, "Auto-encoding variational Bayes", 2014; Mohamed et al., JMLR 2020, section 5.
  """
  validation.check_callable(f, "f")
  validation.check_callable(dist_fn, "dist_fn")
  num_samples = validation.check_positive_int(num_samples, "num_samples")

  def estimator(key, params):
    key = validation.as_key(key)
    _check_params(params)

    def objective(p):
      x = _sample(_distribution(dist_fn, p), key, num_samples)
      v = jax.vmap(f)(x)
      if v.shape != (num_samples,):
        raise ValueError(f"`f` must return a scalar for each sample; got shape {v.shape[1:]} per sample.")
      return jnp.mean(v), (jax.lax.stop_gradient(x), jax.lax.stop_gradient(v))

    grads, (samples, values) = jax.grad(objective, has_aux=True)(params)
    return _propagate_nonfinite(grads, values), PathwiseAux(samples, values, num_samples)

  return estimator


_MAX_SUPPORT = 2 ** 20


def enumerate_support(dist: Any) -> jax.Array:
  """All joint outcomes of a finite distribution, shape ``[K, *batch_shape]``.

  Supports distrax ``Categorical``, ``Bernoulli`` and ``Independent`` wrappers of them (products of small
  discrete variables: every combination of the batch entries). Raises ``ValueError`` if the support has more
  than 2**20 points or the distribution is not finite.
  """
  base = dist
  while isinstance(base, distrax.Independent):
    base = base.distribution
  if isinstance(base, distrax.Categorical):
    k = base.num_categories
    values = np.arange(k)
  elif isinstance(base, distrax.Bernoulli):
    values = np.arange(2)
  else:
    raise ValueError(f"cannot enumerate the support of {type(base).__name__}: pass `support=` explicitly "
                     "or use `expectation=`.")
  shape = tuple(dist.batch_shape) + tuple(dist.event_shape)
  m = int(np.prod(shape)) if shape else 1
  if len(values) ** m > _MAX_SUPPORT:
    raise ValueError(f"support has {len(values)}**{m} points (> 2**20); pass `expectation=` instead.")
  grid = np.array(list(itertools.product(values, repeat=m)), dtype=np.int32).reshape((-1,) + shape)
  return jnp.asarray(grid)


def exact_gradient(f: Callable[[Any], jax.Array] | None = None, dist_fn: Callable[[Any], Any] | None = None,
                   *, support: Any = None, expectation: Callable[[Any], jax.Array] | None = None):
  r"""The true gradient :math:`\nabla_\theta J(\theta)`, as an estimator with zero variance (the oracle).

  Two ways to give :math:`J`:

  * by enumeration: ``exact_gradient(f, dist_fn)`` computes
    :math:`J(\theta) = \sum_{x\in\mathcal X} p_\theta(x) f(x)` over the finite support (inferred for
    distrax ``Categorical`` / ``Bernoulli`` and ``Independent`` products of them, or given as ``support``,
    an array ``[K, *sample_shape]`` of every outcome) and differentiates it with ``jax.grad``;
  * from a closed form: ``exact_gradient(expectation=J)`` differentiates ``J(params)``.

  Returns:
    ``oracle(key, params) -> (grads, ExactAux(value=J))``; ``key`` is ignored (``None`` is allowed), so the
    oracle plugs in wherever an estimator does (its variance is exactly zero).
  """
  if expectation is not None:
    if f is not None or dist_fn is not None or support is not None:
      raise ValueError("pass either `expectation` or (`f`, `dist_fn`, `support`), not both.")
    validation.check_callable(expectation, "expectation")
    def value_fn(params):
      return expectation(params)
  else:
    if f is None or dist_fn is None:
      raise ValueError("`exact_gradient` needs `f` and `dist_fn` (enumeration) or `expectation=`.")
    validation.check_callable(f, "f")
    validation.check_callable(dist_fn, "dist_fn")

    def enumerated(params, xs):
      dist = _distribution(dist_fn, params)
      vals = jnp.asarray(jax.vmap(f)(xs))
      if vals.shape != xs.shape[:1]:
        raise ValueError(f"`f` must return a scalar for each outcome; got shape {vals.shape[1:]}.")
      probs = jnp.exp(joint_log_prob(dist, xs))
      return jnp.sum(probs * jax.lax.stop_gradient(vals.astype(probs.dtype)))

  def oracle(key, params):
    del key
    _check_params(params)
    if expectation is not None:
      value, grads = jax.value_and_grad(value_fn)(params)
      return grads, ExactAux(value, 0)
    xs = enumerate_support(_distribution(dist_fn, params)) if support is None else jnp.asarray(support)
    value, grads = jax.value_and_grad(enumerated)(params, xs)
    return grads, ExactAux(value, int(xs.shape[0]))

  return oracle
