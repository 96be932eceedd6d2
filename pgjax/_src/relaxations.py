r"""Continuous relaxations of discrete variables: Gumbel-softmax / Concrete, straight-through, REBAR and RELAX.

All four estimate :math:`\nabla_\theta\,\mathbb{E}_{b\sim p_\theta}[f(b)]` for factorised Bernoulli or categorical
variables whose logits :math:`l = l(\theta)` are read from the distribution ``dist_fn(params)`` returns
(``distrax.Bernoulli`` or ``distrax.OneHotCategorical``, possibly inside ``distrax.Independent``). Each writes
the discrete sample as a deterministic function of logits and noise,

.. math::

   \text{Bernoulli: } z = l + \log u - \log(1-u),\; b = \mathbb 1[z > 0]; \qquad
   \text{categorical: } z = \log\mathrm{softmax}(l) + g,\; b = \mathrm{onehot}(\arg\max z),

with :math:`u\sim U(0,1)` and :math:`g` standard Gumbel, and relaxes the hard threshold to
:math:`\sigma_\tau(z) = \mathrm{sigmoid}(z/\tau)` (binary Concrete) or :math:`\mathrm{softmax}(z/\tau)` (Concrete /
Gumbel-softmax) at temperature :math:`\tau > 0`.

* :func:`gumbel_softmax` differentiates :math:`f(\sigma_\tau(z))` (``f`` must be differentiable on the relaxed
  domain). **Biased**: it estimates :math:`\nabla\mathbb{E}[f(\sigma_\tau(z))]`, which tends to the true gradient
  as :math:`\tau\to0` while its variance grows. ``straight_through=True`` evaluates ``f`` at the hard sample
  :math:`b` and back-propagates through :math:`\sigma_\tau(z)`; also biased.
* :func:`rebar` and :func:`relax` are **unbiased**: REINFORCE with a control variate built on the relaxation,
  whose expectation is added back by the reparameterisation trick.

Samples are given to ``f`` as floating arrays of the distribution's sample shape (``[*batch]`` for Bernoulli,
``[*batch, K]`` one-hot for categorical); :func:`relax` evaluates ``f`` only at hard samples, in the
distribution's dtype.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import distrax
import jax
import jax.numpy as jnp

from pgjax._src import validation

__all__ = ("GumbelSoftmaxAux", "RelaxAux", "gumbel_softmax", "rebar", "relax")

_BERNOULLI = "bernoulli"
_CATEGORICAL = "categorical"


class GumbelSoftmaxAux(NamedTuple):
  r"""Auxiliary output of :func:`gumbel_softmax`.

  Attributes:
    samples: ``[N, *shape]`` the hard samples :math:`b` (floating; one-hot for categorical variables).
    relaxed: ``[N, *shape]`` the relaxed samples :math:`\sigma_\tau(z)`.
    values: ``[N]`` the values of ``f`` that were differentiated: :math:`f(\sigma_\tau(z))`, or :math:`f(b)`
      with ``straight_through=True``.
    num_evaluations: evaluations of ``f`` (each with its gradient), ``N``.
    biased: always True.
    temperature: the temperature :math:`\tau` used (traced).
  """
  samples: jax.Array
  relaxed: jax.Array
  values: jax.Array
  num_evaluations: int
  biased: bool
  temperature: jax.Array


class RelaxAux(NamedTuple):
  r"""Auxiliary output of :func:`rebar` and :func:`relax`.

  Attributes:
    samples: ``[N, *shape]`` the hard samples :math:`b` (the distribution's dtype).
    values: ``[N]`` :math:`f(b)`.
    control_values: ``[N]`` the control variate at the conditional relaxed sample, :math:`c_\phi(\tilde z)`.
    num_evaluations: evaluations of ``f``: ``3 N`` for REBAR (:math:`f(b)`, :math:`f(\sigma_\tau(z))`,
      :math:`f(\sigma_\tau(\tilde z))`), ``N * (1 + 2 * control_evaluations)`` for RELAX.
    biased: always False.
    temperature: REBAR's temperature :math:`\tau` (traced); NaN for RELAX, whose control variate carries its own.
    eta: REBAR's control-variate scale :math:`\eta` (traced); NaN for RELAX.
  """
  samples: jax.Array
  values: jax.Array
  control_values: jax.Array
  num_evaluations: int
  biased: bool
  temperature: jax.Array
  eta: jax.Array


# ----------------------------------------------------------------------------------------------------------
# Distributions: kind, logits, noise, hard and relaxed samples, conditional relaxed samples.


def _kind_and_logits(dist: Any, name: str = "dist_fn") -> tuple[str, jax.Array, Any]:
  """``(kind, logits, sample dtype)`` with logits of the full sample shape."""
  base = dist
  while isinstance(base, distrax.Independent):
    base = base.distribution
  if isinstance(base, distrax.OneHotCategorical):
    kind = _CATEGORICAL
  elif isinstance(base, distrax.Bernoulli):
    kind = _BERNOULLI
  elif isinstance(base, distrax.Categorical):
    raise TypeError(f"`{name}` returned a distrax.Categorical, whose samples are integer indices that cannot be "
                    "relaxed; use distrax.OneHotCategorical (with dtype=jnp.float32) so `f` sees one-hot "
                    "vectors, which the relaxation replaces by points of the simplex.")
  else:
    raise TypeError(f"`{name}` must return a distrax.Bernoulli or distrax.OneHotCategorical (possibly inside "
                    f"distrax.Independent), got {type(dist).__name__}.")
  shape = tuple(dist.batch_shape) + tuple(dist.event_shape)
  logits = jnp.broadcast_to(base.logits, shape)
  with jax.numpy_rank_promotion("allow"):   # distrax infers the dtype by tracing its own sampler
    dtype = base.dtype
  return kind, logits, dtype


def _float_dtype(logits: jax.Array):
  return jnp.result_type(logits.dtype, jnp.float32)


def _uniform(key, shape, dtype):
  """U(0, 1) bounded away from 0 and 1 so that log u and log(1-u) are finite."""
  tiny = jnp.finfo(dtype).tiny
  return jax.random.uniform(key, shape, dtype, minval=tiny, maxval=1.0)


def _noise(kind, key, shape, dtype):
  """Logistic noise (Bernoulli) or standard Gumbel noise (categorical), ``shape`` = ``[N, *sample shape]``."""
  if kind == _BERNOULLI:
    u = _uniform(key, shape, dtype)
    return jnp.log(u) - jnp.log1p(-u)
  return jax.random.gumbel(key, shape, dtype)


def _location(kind, logits):
  return logits if kind == _BERNOULLI else jax.nn.log_softmax(logits, axis=-1)


def _hard(kind, z):
  if kind == _BERNOULLI:
    return (z > 0).astype(z.dtype)
  return jax.nn.one_hot(jnp.argmax(z, axis=-1), z.shape[-1], dtype=z.dtype)


def _relax(kind, z, temperature):
  t = jnp.asarray(temperature, z.dtype)
  if kind == _BERNOULLI:
    return jax.nn.sigmoid(z / t)
  return jax.nn.softmax(z / t, axis=-1)


def _conditional(kind, v, logits, b):
  r"""A sample of :math:`\tilde z \sim p(z \mid b)`, reparameterised in the logits by the uniforms ``v``.

  Bernoulli (Tucker et al. 2017, appendix): with :math:`u` uniform on the interval that gives ``b``,
  :math:`b = 1`: :math:`\tilde z = \mathrm{softplus}(l + \log v) - \log(1-v) \ge 0`;
  :math:`b = 0`: :math:`\tilde z = -\mathrm{softplus}(-l + \log v) + \log(1-v) \le 0` (both overflow-free).
  Categorical: the maximum at the chosen category is standard Gumbel, :math:`\tilde z_b = -\log(-\log v_b)`, and
  the others are Gumbels with locations :math:`\log p_i` truncated below it,
  :math:`\tilde z_i = -\log\big(e^{-\tilde z_b} - \log v_i / p_i\big)`, computed as a ``logaddexp``.
  """
  if kind == _BERNOULLI:
    log_v, log1m_v = jnp.log(v), jnp.log1p(-v)
    one = jax.nn.softplus(logits + log_v) - log1m_v
    zero = -jax.nn.softplus(-logits + log_v) + log1m_v
    return jnp.where(b > 0.5, one, zero)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  gumbel_max = -jnp.log(-jnp.log(v))                                   # Gumbel(0) at every position
  top = jnp.sum(b * gumbel_max, axis=-1, keepdims=True)                # z~_b
  others = -jnp.logaddexp(-top, jnp.log(-jnp.log(v)) - log_p)
  return jnp.where(b > 0.5, top, others)


def _log_prob(kind, logits, b):
  """``log p(b)`` summed over the sample: ``[N, *shape] -> [N]``."""
  axes = tuple(range(1, b.ndim))
  if kind == _BERNOULLI:
    return jnp.sum(b * logits - jax.nn.softplus(logits), axis=axes)
  return jnp.sum(b * jax.nn.log_softmax(logits, axis=-1), axis=axes)


def _check_values(values, num_samples, name="f"):
  values = jnp.asarray(values)
  if values.shape != (num_samples,):
    raise ValueError(f"`{name}` must return a scalar for each sample; got shape {values.shape[1:]} per sample.")
  return values


def _cast_like(grads, params):
  return jax.tree_util.tree_map(lambda g, p: g.astype(jnp.asarray(p).dtype), grads, params)


# ----------------------------------------------------------------------------------------------------------
# Gumbel-softmax / Concrete and straight-through.


def gumbel_softmax(f: Callable[[jax.Array], jax.Array], dist_fn: Callable[[Any], Any], *, num_samples: int,
                   temperature: Any = 1.0, straight_through: bool = False
                   ) -> Callable[..., tuple[Any, GumbelSoftmaxAux]]:
  r"""Builds the Gumbel-softmax (Concrete) estimator, or its straight-through variant. **Biased.**

  With :math:`N` relaxed samples :math:`\sigma_\tau(z_i)` (module docstring),

  .. math::

     \hat g = \frac1N\sum_{i=1}^N \nabla_\theta\, f\big(\sigma_\tau(z_i(\theta))\big)
     \qquad\text{or, straight-through,}\qquad
     \hat g = \frac1N\sum_{i=1}^N J_{\sigma_\tau(z_i)}(\theta)^\top\, \nabla f(b_i),

  i.e. the forward pass evaluates ``f`` at the hard sample :math:`b_i` and the backward pass uses the
  derivative of the relaxation (Jang, Gu & Poole 2017, section 2.2; Bengio et al. 2013). The first is the exact
  pathwise gradient of the *relaxed* objective :math:`\mathbb{E}[f(\sigma_\tau(z))]` (the Concrete / binary
  Concrete distribution of Maddison, Mnih & Teh 2017; the Gumbel-softmax of Jang et al.), not of :math:`\mathbb{E}[f(b)]`: its bias vanishes as
  :math:`\tau\to0` (where the relaxed sample becomes the hard one), while its variance grows (the derivative of
  :math:`\sigma_\tau` near the threshold scales like :math:`1/\tau`). The straight-through estimator is
  biased too; as :math:`\tau\to0` its expectation tends in general to a derivative of ``f`` at the decision
  boundary, not to the true gradient (they agree when ``f`` is linear or quadratic in each binary
  coordinate). ``aux.biased`` is always True; measure the bias against
  :func:`pgjax.exact_gradient` on a problem with a finite support.

  ``f`` is evaluated (and differentiated) ``N`` times: ``aux.num_evaluations = num_samples``. If ``f`` returns
  a non-finite value at any sample the estimate is NaN (it propagates, as in the score-function estimators).

  Args:
    f: ``f(x) -> scalar`` for one sample ``x`` of the distribution's shape (floating, one-hot for categorical
      variables), differentiable on the relaxed domain (:math:`[0,1]` or the simplex).
    dist_fn: ``params -> distrax.Bernoulli`` or ``distrax.OneHotCategorical``, possibly inside
      ``distrax.Independent``, any batch shape (a ``distrax.Categorical`` raises ``TypeError``: use the one-hot
      form).
    num_samples: :math:`N \ge 1`, static.
    temperature: :math:`\tau > 0`, may be traced; overridden by the estimator's ``temperature=`` argument.
    straight_through: evaluate ``f`` at the hard sample (static).

  Returns:
    ``estimator(key, params, *, temperature=None) -> (grads, GumbelSoftmaxAux)``; ``grads`` has ``params``'
    structure and dtypes; ``temperature`` (traced) replaces the factory's value.

  References:
    E. Jang, S. Gu, B. Poole, "Categorical reparameterization with Gumbel-softmax", ICLR 2017.
    C. J. Maddison, A. Mnih, Y. W. Teh, "The Concrete distribution: a continuous relaxation of discrete
    random variables", ICLR 2017.
    Y. Bengio, N. Léonard, A. Courville, "Estimating or propagating gradients through stochastic neurons
    for conditional computation", 2013.
  """
  validation.check_callable(f, "f")
  validation.check_callable(dist_fn, "dist_fn")
  num_samples = validation.check_positive_int(num_samples, "num_samples")
  validation.check_positive_scalar(temperature, "temperature")
  if not isinstance(straight_through, bool):
    raise TypeError(f"`straight_through` must be a bool, got {straight_through!r}.")
  default_temperature = temperature

  def estimator(key, params, *, temperature=None):
    key = validation.as_key(key)
    validation.check_float_tree(params, "params")
    tau = default_temperature if temperature is None else temperature
    validation.check_positive_scalar(tau, "temperature")
    kind, logits, _ = _kind_and_logits(dist_fn(params))
    dtype = _float_dtype(logits)
    tau = jnp.asarray(tau, dtype)
    noise = _noise(kind, key, (num_samples,) + logits.shape, dtype)

    def relaxed_sample(p):
      _, lg, _ = _kind_and_logits(dist_fn(p))
      z = _location(kind, lg.astype(dtype))[None] + noise
      return _relax(kind, z, tau), jax.lax.stop_gradient(_hard(kind, z))

    if straight_through:
      # f and its gradient at the hard sample (constants), pulled back through the relaxation: the estimate is
      # J_soft(theta, tau)^T grad f(b), so its derivatives in params and tau are those of J_soft alone.
      soft, hard = relaxed_sample(params)
      out = jax.eval_shape(f, hard[0])
      if getattr(out, "shape", None) != ():
        raise ValueError(f"`f` must return a scalar for each sample; got shape {getattr(out, 'shape', out)} "
                         "per sample.")
      values, cot = jax.vmap(jax.value_and_grad(f))(hard)
      values = _check_values(values, num_samples)
      cot = jax.lax.stop_gradient(cot.astype(soft.dtype))
      grads = jax.grad(lambda p: jnp.sum(cot * relaxed_sample(p)[0]) / num_samples)(params)
    else:
      def objective(p):
        soft, hard = relaxed_sample(p)
        values = _check_values(jax.vmap(f)(soft), num_samples)
        return jnp.mean(values), (hard, soft, values)

      grads, (hard, soft, values) = jax.grad(objective, has_aux=True)(params)
    soft, values = jax.lax.stop_gradient(soft), jax.lax.stop_gradient(values)
    # A non-finite value of f makes the whole estimate NaN (as in the score-function estimators), even where
    # f's derivative is finite (e.g. f = where(cond, nan, g)).
    bad = ~jnp.all(jnp.isfinite(values))
    grads = jax.tree_util.tree_map(lambda g: jnp.where(bad, jnp.nan, g), grads)
    return _cast_like(grads, params), GumbelSoftmaxAux(hard, soft, values, num_samples, True, tau)

  return estimator


# ----------------------------------------------------------------------------------------------------------
# REBAR and RELAX.


def _relax_estimate(f, dist_fn, num_samples, key, params, control_variate, control_params):
  r"""The single-sample RELAX estimator averaged over ``num_samples`` (Grathwohl et al. 2018, Algorithm 2).

  .. math::

     \hat g = \big[f(b) - c_\phi(\tilde z)\big]\nabla_\theta\log p_\theta(b)
              + \nabla_\theta c_\phi(z) - \nabla_\theta c_\phi(\tilde z),

  with :math:`z` and :math:`\tilde z` reparameterised in :math:`\theta` and :math:`b` held fixed in
  :math:`\tilde z`. Differentiable in ``control_params`` (the weight :math:`f(b) - c_\phi(\tilde z)` keeps its
  dependence on :math:`\phi`), so ``jax.grad`` of :math:`\|\hat g\|^2` is the variance gradient.
  """
  key = validation.as_key(key)
  validation.check_float_tree(params, "params")
  kind, logits, sample_dtype = _kind_and_logits(dist_fn(params))
  dtype = _float_dtype(logits)
  k_u, k_v = jax.random.split(key)
  shape = (num_samples,) + logits.shape
  noise = _noise(kind, k_u, shape, dtype)
  v = _uniform(k_v, shape, dtype)

  def logits_of(p):
    return _kind_and_logits(dist_fn(p))[1].astype(dtype)

  def z_of(lg):
    return _location(kind, lg)[None] + noise

  lg0 = jax.lax.stop_gradient(logits_of(params))
  b = jax.lax.stop_gradient(_hard(kind, z_of(lg0)))
  values = _check_values(jax.vmap(f)(b.astype(sample_dtype)), num_samples)
  values = jax.lax.stop_gradient(values.astype(dtype))
  cv = jax.vmap(control_variate, in_axes=(None, 0))

  def z_tilde_of(lg):
    return _conditional(kind, v, lg[None], b)

  # The weight's dependence on theta is not part of the estimator (b and f(b) are fixed; c(z~) enters as a
  # number); its dependence on phi is kept for the variance gradient.
  control_values = _check_values(cv(control_params, z_tilde_of(jax.lax.stop_gradient(logits_of(params)))),
                                 num_samples, "control_variate").astype(dtype)
  weights = values - control_values

  def surrogate(p):
    lg = logits_of(p)
    reinforce = jnp.mean(weights * _log_prob(kind, lg[None], b))
    path = jnp.mean(cv(control_params, z_of(lg))) - jnp.mean(cv(control_params, z_tilde_of(lg)))
    return reinforce + path

  grads = jax.grad(surrogate)(params)
  return _cast_like(grads, params), b.astype(sample_dtype), values, control_values


def rebar(f: Callable[[jax.Array], jax.Array], dist_fn: Callable[[Any], Any], *, num_samples: int = 1,
          temperature: Any = 0.5, eta: Any = 1.0) -> Callable[..., tuple[Any, RelaxAux]]:
  r"""Builds the REBAR estimator (unbiased; REINFORCE with a Concrete-relaxation control variate).

  For each of :math:`N` independent samples: :math:`z` as in the module docstring, :math:`b = H(z)`, and a
  second relaxed sample :math:`\tilde z \sim p(z \mid b)` drawn conditionally on :math:`b` with fresh uniforms
  (Tucker et al. 2017, eq. 6-8, appendix for the conditional sampler),

  .. math::

     \hat g = \big[f(b) - \eta\, f(\sigma_\tau(\tilde z))\big]\,\nabla_\theta\log p_\theta(b)
              + \eta\,\nabla_\theta f\big(\sigma_\tau(z)\big) - \eta\,\nabla_\theta f\big(\sigma_\tau(\tilde z)\big),

  averaged over the :math:`N` samples. The last two terms have the same expectation as the score-function
  term of the control variate, :math:`\mathbb{E}[\eta f(\sigma_\tau(\tilde z))\nabla\log p(b)]`, so the estimate
  is **unbiased** for :math:`\nabla_\theta\mathbb{E}_{p_\theta}[f(b)]` for every :math:`\eta` and
  :math:`\tau > 0`; they only change its variance. ``f`` is evaluated at :math:`b`, :math:`\sigma_\tau(z)` and
  :math:`\sigma_\tau(\tilde z)` (and differentiated at the last two): ``aux.num_evaluations = 3 * num_samples``.

  :math:`\eta` and :math:`\tau` are traced and the estimate is differentiable in them: Tucker et al. tune them
  online by gradient descent on the variance,
  :math:`\partial_{\eta,\tau}\mathbb{E}\|\hat g\|^2` (the mean does not depend on them), e.g.
  ``jax.grad(lambda eta: sum_of_squares(est(key, params, eta=eta)[0]))(eta)``.

  Args:
    f: ``f(x) -> scalar``, differentiable on the relaxed domain (see :func:`gumbel_softmax`); at :math:`b`
      it receives the distribution's sample dtype.
    dist_fn: ``params -> distrax.Bernoulli`` or ``distrax.OneHotCategorical``, possibly inside
      ``distrax.Independent``.
    num_samples: :math:`N \ge 1`, static.
    temperature: :math:`\tau > 0` of the control variate's relaxation (traced).
    eta: the control-variate scale :math:`\eta` (traced; 1 in the paper's untuned variant).

  Returns:
    ``estimator(key, params, *, temperature=None, eta=None) -> (grads, RelaxAux)``; the keyword arguments
    (traced) replace the factory's values.

  References:
    G. Tucker, A. Mnih, C. J. Maddison, D. Lawson, J. Sohl-Dickstein, "REBAR: low-variance, unbiased gradient
    estimates for discrete latent variable models", NeurIPS 2017.
  """
  validation.check_callable(f, "f")
  validation.check_callable(dist_fn, "dist_fn")
  num_samples = validation.check_positive_int(num_samples, "num_samples")
  validation.check_positive_scalar(temperature, "temperature")
  validation.check_scalar(eta, "eta")
  default_temperature, default_eta = temperature, eta

  def estimator(key, params, *, temperature=None, eta=None):
    key = validation.as_key(key)
    validation.check_float_tree(params, "params")
    tau = default_temperature if temperature is None else temperature
    scale = default_eta if eta is None else eta
    validation.check_positive_scalar(tau, "temperature")
    validation.check_scalar(scale, "eta")
    kind, logits, _ = _kind_and_logits(dist_fn(params))
    dtype = _float_dtype(logits)

    def control_variate(phi, z):
      return phi["eta"] * f(_relax(kind, z, phi["temperature"]))

    phi = {"eta": jnp.asarray(scale, dtype), "temperature": jnp.asarray(tau, dtype)}
    grads, b, values, control_values = _relax_estimate(f, dist_fn, num_samples, key, params, control_variate,
                                                       phi)
    return grads, RelaxAux(b, values, control_values, 3 * num_samples, False, phi["temperature"], phi["eta"])

  return estimator


def relax(f: Callable[[jax.Array], jax.Array], dist_fn: Callable[[Any], Any], *,
          control_variate: Callable[[Any, jax.Array], jax.Array], control_params: Any, num_samples: int = 1,
          control_evaluations: int = 0) -> Callable[..., tuple[Any, RelaxAux]]:
  r"""Builds the RELAX estimator (unbiased; REINFORCE with a learned, reparameterised control variate).

  With a differentiable surrogate :math:`c_\phi(z)` of ``f`` on the continuous variable :math:`z` (module
  docstring), :math:`b = H(z)` and :math:`\tilde z \sim p(z \mid b)` as in :func:`rebar` (Grathwohl et al. 2018,
  Algorithm 2, the estimator for discrete variables),

  .. math::

     \hat g = \big[f(b) - c_\phi(\tilde z)\big]\,\nabla_\theta\log p_\theta(b)
              + \nabla_\theta c_\phi(z) - \nabla_\theta c_\phi(\tilde z),

  averaged over :math:`N` independent samples. **Unbiased** for every :math:`\phi`; ``f`` itself is only
  evaluated at the hard sample :math:`b` (it may be a black box). :func:`rebar` is the special case
  :math:`c_\phi(z) = \eta f(\sigma_\tau(z))`, :math:`\phi = (\eta, \tau)`.

  The estimate is differentiable in ``control_params``: RELAX trains :math:`\phi` by stochastic gradient
  descent on the variance, whose gradient is :math:`\partial_\phi\mathbb{E}\|\hat g\|^2 =
  \mathbb{E}[2\hat g^\top\partial_\phi\hat g]` because the mean does not depend on :math:`\phi`
  (Grathwohl et al.):

  .. code-block:: python

     def variance_loss(phi, key, params):
       g, _ = estimator(key, params, control_params=phi)
       return sum(jnp.sum(x ** 2) for x in jax.tree_util.tree_leaves(g))
     phi_grad = jax.grad(variance_loss)(phi, key, params)   # then any optax update of phi

  Args:
    f: ``f(b) -> scalar`` at hard samples (the distribution's sample dtype); never differentiated.
    dist_fn: ``params -> distrax.Bernoulli`` or ``distrax.OneHotCategorical``, possibly inside
      ``distrax.Independent``.
    control_variate: ``c(phi, z) -> scalar`` for one continuous sample ``z`` of the distribution's shape
      (logistic for Bernoulli, Gumbel-perturbed log-probabilities for categorical variables), differentiable
      in ``z`` and ``phi``.
    control_params: the default :math:`\phi` (any pytree); the estimator's ``control_params=`` replaces it.
    num_samples: :math:`N \ge 1`, static.
    control_evaluations: how many times one call of ``control_variate`` evaluates ``f`` (e.g. 1 for
      :math:`c_\phi(z) = f(\sigma_\lambda(z)) + r_\rho(z)`), for ``aux.num_evaluations =
      N * (1 + 2 * control_evaluations)``.

  Returns:
    ``estimator(key, params, *, control_params=None) -> (grads, RelaxAux)``.

  References:
    W. Grathwohl, D. Choi, Y. Wu, G. Roeder, D. Duvenaud, "Backpropagation through the void: optimizing
    control variates for black-box gradient estimation", ICLR 2018.
  """
  validation.check_callable(f, "f")
  validation.check_callable(dist_fn, "dist_fn")
  validation.check_callable(control_variate, "control_variate")
  num_samples = validation.check_positive_int(num_samples, "num_samples")
  control_evaluations = validation.check_positive_int(control_evaluations, "control_evaluations", minimum=0)
  default_phi = control_params
  num_evaluations = num_samples * (1 + 2 * control_evaluations)

  def estimator(key, params, *, control_params=None):
    phi = default_phi if control_params is None else control_params
    grads, b, values, control_values = _relax_estimate(f, dist_fn, num_samples, key, params, control_variate,
                                                       phi)
    nan = jnp.full((), jnp.nan, values.dtype)
    return grads, RelaxAux(b, values, control_values, num_evaluations, False, nan, nan)

  return estimator
