r"""Control variates for the score-function estimator of :math:`\nabla_\theta\, \mathbb{E}_{x\sim p_\theta}[f(x)]`.

A control variate subtracts a zero-mean random vector correlated with the estimate. For the score-function
estimator the natural controls are built from a function :math:`h` whose expectation under :math:`p_\theta` is
known in closed form: :math:`h(x)\nabla_\theta\log p_\theta(x)` has mean :math:`\nabla_\theta\mathbb E_{p_\theta}[h]`,
so with per-sample terms

.. math::

   g_i = f(x_i)\, s_i, \qquad c_i = h(x_i)\, s_i - \nabla_\theta \mathbb E_{p_\theta}[h], \qquad
   s_i = \nabla_\theta \log p_\theta(x_i),

the estimate :math:`\hat g = \frac1N\sum_i (g_i - \beta_i \odot c_i)` is unbiased whenever the coefficient
:math:`\beta_i` does not depend on :math:`x_i` (Mohamed, Rosca, Figurnov & Mnih 2020, section 7). Two
families of :math:`h`:

* **linear control variates on the score**: :math:`h \equiv 1`, :math:`c_i = s_i` (the score has mean zero), so
  :math:`\beta` acts as a per-coordinate baseline; a constant baseline is the special case of a fixed scalar
  :math:`\beta`;
* **the delta method** (Paisley, Blei & Jordan 2012; Mohamed et al. 2020, section 7): for a Gaussian
  :math:`p_\theta` with mean :math:`m` and covariance :math:`\Sigma`, :math:`h` is the second-order Taylor
  expansion of :math:`f` around the (fixed) current mean :math:`m_0`,
  :math:`h(x) = f(m_0) + \nabla f(m_0)^\top (x-m_0) + \tfrac12 (x-m_0)^\top \nabla^2 f(m_0) (x-m_0)`, whose
  expectation :math:`f(m_0) + \nabla f(m_0)^\top(m - m_0) + \tfrac12\big[(m-m_0)^\top\nabla^2 f(m_0)(m-m_0) +
  \mathrm{tr}(\nabla^2 f(m_0)\Sigma)\big]` is differentiated with respect to :math:`\theta` (through :math:`m`
  and :math:`\Sigma`, with :math:`m_0` held fixed);

and any user :math:`h` with its closed-form expectation.

The coefficient (per gradient coordinate :math:`k`):

* a number: fixed, the same for every coordinate (unbiased);
* ``"optimal"``: :math:`\beta_k = \widehat{\mathrm{Cov}}(g_k, c_k)/\widehat{\mathrm{Var}}(c_k)` from the
  batch, which minimises the per-coordinate variance, :math:`(1-\rho_k^2)\mathrm{Var}[g_k]` with
  :math:`\rho_k = \mathrm{corr}(g_k, c_k)` at the exact coefficient; estimated in-batch it depends on
  :math:`x_i`, a bias of order :math:`1/N`;
* ``"leave_one_out"``: :math:`\beta^{(-i)}_k` from the other :math:`N-1` samples; unbiased.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import distrax
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from pgjax._src import validation
from pgjax._src.score_function import joint_log_prob

CONTROLS = ("delta_method", "constant")
COEFFICIENTS = ("optimal", "leave_one_out")

Control = Union[str, Callable[[Any], jax.Array]]


class ControlVariateAux(NamedTuple):
  r"""Auxiliary output of :func:`control_variate`.

  Attributes:
    samples: ``[N, ...]`` the draws :math:`x_i` (no gradient path).
    values: ``[N]`` :math:`f(x_i)`.
    controls: ``[N]`` :math:`h(x_i)`.
    coefficient: ``[D]`` the coefficient :math:`\beta` over the raveled parameters (for ``"leave_one_out"`` the
      mean over :math:`i` of :math:`\beta^{(-i)}`).
    variance_ratio: in-batch estimate of :math:`\mathrm{tr}\,\mathrm{Var}[g_i - \beta\odot c_i] /
      \mathrm{tr}\,\mathrm{Var}[g_i]`, the factor by which the control variate shrinks the variance of the
      plain score-function estimate (1 when the plain per-sample terms have zero batch variance).
    num_evaluations: evaluations of ``f``: ``N``, plus one at the mean for ``"delta_method"`` (which also
      evaluates the gradient and Hessian of ``f`` there).
    biased: True only for ``coefficient="optimal"`` (in-batch coefficient, :math:`O(1/N)` bias).
  """
  samples: Any
  values: jax.Array
  controls: jax.Array
  coefficient: jax.Array
  variance_ratio: jax.Array
  num_evaluations: int
  biased: bool


def _gaussian_moments(dist: Any) -> tuple[jax.Array, jax.Array, bool]:
  """``(mean [d], cov, is_diag)`` of a Gaussian over the raveled sample; TypeError naming ``dist_fn`` otherwise."""
  base = dist
  while isinstance(base, distrax.Independent):
    base = base.distribution
  shape = tuple(dist.batch_shape) + tuple(dist.event_shape)
  if isinstance(base, distrax.Normal):
    loc = jnp.broadcast_to(base.loc, shape).reshape(-1)
    var = jnp.broadcast_to(base.scale, shape).reshape(-1) ** 2
    return loc, var, True
  if isinstance(base, distrax.MultivariateNormalDiag):
    loc = jnp.broadcast_to(base.loc, shape).reshape(-1)
    var = jnp.broadcast_to(base.scale_diag, shape).reshape(-1) ** 2
    return loc, var, True
  if (isinstance(base, distrax.MultivariateNormalFromBijector) and base is dist
      and not tuple(dist.batch_shape) and len(dist.event_shape) == 1):
    return dist.mean(), dist.covariance(), False
  raise TypeError("`dist_fn` must return a Gaussian (distrax.Normal, distrax.MultivariateNormalDiag, or an "
                  "unbatched distrax.MultivariateNormal*) for control='delta_method', got "
                  f"{type(dist).__name__}.")


def _safe_div(a, b):
  ok = b > 0
  return jnp.where(ok, a / jnp.where(ok, b, 1.0), 0.0)


def _optimal_coefficient(g, c):
  """In-batch per-coordinate :math:`\\mathrm{Cov}(g,c)/\\mathrm{Var}(c)` over axis 0: ``[N, D] -> [D]``."""
  gc, cc = g - jnp.mean(g, axis=0, keepdims=True), c - jnp.mean(c, axis=0, keepdims=True)
  return _safe_div(jnp.sum(gc * cc, axis=0), jnp.sum(cc * cc, axis=0))


def _leave_one_out_coefficient(g, c):
  """``[N, D]``: row ``i`` is the coefficient from every sample but ``i`` (sums minus own terms)."""
  n = g.shape[0]
  m = n - 1
  sg, sc = jnp.sum(g, axis=0), jnp.sum(c, axis=0)
  # shift by the batch mean before forming second moments (numerical stability); the shift cancels exactly
  g0, c0 = g - sg[None] / n, c - sc[None] / n
  sg0, sc0 = jnp.sum(g0, axis=0, keepdims=True), jnp.sum(c0, axis=0, keepdims=True)
  sgc, scc = jnp.sum(g0 * c0, axis=0), jnp.sum(c0 * c0, axis=0)
  sg_i, sc_i = sg0 - g0, sc0 - c0                                  # [N, D] sums without i
  cov = (sgc[None] - g0 * c0) - sg_i * sc_i / m
  var = (scc[None] - c0 * c0) - sc_i * sc_i / m
  return _safe_div(cov, var)


def control_variate(f: Callable[[Any], jax.Array], dist_fn: Callable[[Any], Any], *, num_samples: int,
                    control: Control = "delta_method", expectation: Callable[[Any], jax.Array] | None = None,
                    coefficient: Union[str, float] = "optimal"
                    ) -> Callable[..., tuple[Any, ControlVariateAux]]:
  r"""Builds the score-function estimator with a control variate of known expectation.

  .. math::

     \hat g = \frac1N \sum_{i=1}^N \Big(f(x_i)\, s_i - \beta_i \odot \big(h(x_i)\, s_i
        - \nabla_\theta \mathbb E_{p_\theta}[h]\big)\Big), \qquad s_i = \nabla_\theta \log p_\theta(x_i),

  an estimate of :math:`\nabla_\theta\mathbb E_{p_\theta}[f]` (ascend it to increase the expectation; no sign flip),
  with :math:`h` and :math:`\beta` as in the module docstring. Why a factory of its own rather than an option of
  :func:`pgjax.score_function`: a control variate needs two things the plain estimator never computes, the
  per-sample scores :math:`s_i` (the coefficient is a per-coordinate regression of :math:`g_i` on :math:`c_i`) and
  the gradient of a second, closed-form expectation; keeping them here leaves ``score_function`` a single
  backward pass. With ``control="constant"`` and a fixed coefficient ``b`` it *is* ``score_function`` with the
  constant baseline ``b``.

  Bias: none for a fixed coefficient or ``"leave_one_out"``; :math:`O(1/N)` for ``"optimal"`` (flagged in
  ``aux.biased``). Cost: ``N`` evaluations of ``f`` (``+1`` for the delta method, which also takes
  :math:`\nabla f` and :math:`\nabla^2 f` at the mean: the Hessian is formed densely, :math:`d^2` memory for a
  ``d``-dimensional sample), and ``N`` per-sample score vectors (``[N, D]`` memory for ``D`` parameters).

  Args:
    f: objective of one sample, ``f(x) -> scalar``. Only the delta method differentiates it (twice, at the mean).
    dist_fn: ``params -> distribution`` with distrax's interface; a Gaussian for ``control="delta_method"``
      (``distrax.Normal`` of any batch shape, ``distrax.MultivariateNormalDiag``, or an unbatched
      ``distrax.MultivariateNormal*``).
    num_samples: :math:`N`, static; >= 2 for ``"optimal"`` and ``"leave_one_out"`` (with :math:`N = 2` the
      leave-one-out coefficient is 0: use :math:`N \ge 3`).
    control: ``"delta_method"``, ``"constant"`` (:math:`h \equiv 1`: a linear control variate on the score, a
      per-coordinate baseline), or a callable ``h(x) -> scalar``; static.
    expectation: ``params -> E_{p_params}[h]`` in closed form, required with a callable ``control`` (and only then).
    coefficient: ``"optimal"``, ``"leave_one_out"`` or a number (fixed, traced allowed).

  Returns:
    ``estimator(key, params) -> (grads, ControlVariateAux)``; ``grads`` has ``params``' structure and dtypes and
    is differentiable in ``params``.

  Raises:
    ValueError / TypeError naming the argument for a bad ``control``, ``expectation``, ``coefficient``,
    ``num_samples``, ``f`` or ``dist_fn`` (a non-Gaussian with the delta method raises at trace time).

  References:
    Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo gradient estimation in machine learning", JMLR 2020,
    section 7.
    Paisley, Blei & Jordan, "Variational Bayesian inference with stochastic search", ICML 2012.
    Glasserman, "Monte Carlo methods in financial engineering", 2003, section 4.1 (the coefficient and the
    :math:`1-\rho^2` factor).
  """
  validation.check_callable(f, "f")
  validation.check_callable(dist_fn, "dist_fn")
  num_samples = validation.check_positive_int(num_samples, "num_samples")
  if callable(control):
    if expectation is None:
      raise ValueError("a callable `control` needs `expectation` (params -> E[h] in closed form).")
    validation.check_callable(expectation, "expectation")
  elif control in CONTROLS:
    if expectation is not None:
      raise ValueError(f"`expectation` is only used with a callable `control`; control={control!r} knows its own.")
  else:
    raise ValueError(f"`control` must be one of {CONTROLS} or a callable h(x), got {control!r}.")
  if isinstance(coefficient, str):
    if coefficient not in COEFFICIENTS:
      raise ValueError(f"`coefficient` must be one of {COEFFICIENTS} or a number, got {coefficient!r}.")
    if num_samples < 2:
      raise ValueError(f"`coefficient`={coefficient!r} estimates the coefficient from the batch and needs "
                       f"`num_samples` >= 2, got {num_samples}.")
    kind = coefficient
  else:
    validation.check_scalar(coefficient, "coefficient")
    kind = "fixed"
  biased = kind == "optimal"

  def estimator(key, params):
    key = validation.as_key(key)
    validation.check_float_tree(params, "params")
    dist = dist_fn(params)
    k_sample, _ = jax.random.split(key)       # the split of pgjax.score_function: the same key, the same samples
    if control == "delta_method":
      _gaussian_moments(dist)                 # TypeError naming `dist_fn` before anything else is traced
    with jax.numpy_rank_promotion("allow"):   # distrax's samplers broadcast implicitly
      samples = jax.lax.stop_gradient(dist.sample(seed=k_sample, sample_shape=(num_samples,)))
    values = jnp.asarray(jax.vmap(f)(samples))
    if values.shape != (num_samples,):
      raise ValueError(f"`f` must return a scalar for each sample; got shape {values.shape[1:]} per sample.")
    flat, unravel = ravel_pytree(params)
    values = jax.lax.stop_gradient(values.astype(flat.dtype))

    def one_log_prob(flat_p, x):
      return joint_log_prob(dist_fn(unravel(flat_p)), x)

    scores = jax.vmap(jax.grad(one_log_prob), in_axes=(None, 0))(flat, samples)   # [N, D]
    num_evals = num_samples

    if control == "constant":
      h = jnp.ones_like(values)
      grad_eh = jnp.zeros_like(flat)
    elif control == "delta_method":
      mean0, _, diag = _gaussian_moments(dist)
      mean0 = jax.lax.stop_gradient(mean0)
      sample_shape = samples.shape[1:]

      def f_flat(v):
        return jnp.asarray(f(v.reshape(sample_shape).astype(samples.dtype)), v.dtype)

      f0 = jax.lax.stop_gradient(f_flat(mean0))
      df0 = jax.lax.stop_gradient(jax.grad(f_flat)(mean0))
      hess = jax.lax.stop_gradient(jax.hessian(f_flat)(mean0))
      num_evals += 1

      def taylor(x):
        dx = x.reshape(-1).astype(mean0.dtype) - mean0
        return f0 + jnp.dot(df0, dx) + 0.5 * jnp.dot(dx, hess @ dx)

      h = jax.vmap(taylor)(samples)

      def expected_taylor(flat_p):
        m, cov, _ = _gaussian_moments(dist_fn(unravel(flat_p)))
        dm = m - mean0
        tr = jnp.sum(jnp.diagonal(hess) * cov) if diag else jnp.sum(hess * cov)
        return f0 + jnp.dot(df0, dm) + 0.5 * (jnp.dot(dm, hess @ dm) + tr)

      grad_eh = jax.grad(expected_taylor)(flat)
    else:
      h = jnp.asarray(jax.vmap(control)(samples))
      if h.shape != (num_samples,):
        raise ValueError(f"`control` must return a scalar for each sample; got shape {h.shape[1:]} per sample.")
      grad_eh = jax.grad(lambda fp: jnp.asarray(expectation(unravel(fp)), flat.dtype))(flat)
    h = jax.lax.stop_gradient(h.astype(flat.dtype))

    g = values[:, None] * scores                       # [N, D]
    c = h[:, None] * scores - grad_eh[None, :]         # [N, D], mean zero
    if kind == "optimal":
      beta = _optimal_coefficient(g, c)[None, :]
    elif kind == "leave_one_out":
      beta = _leave_one_out_coefficient(g, c)
    else:
      beta = jnp.broadcast_to(jnp.asarray(coefficient, flat.dtype), (1, flat.shape[0]))
    terms = g - beta * c
    g_flat = jnp.mean(terms, axis=0)

    def batch_var(t):
      return jnp.sum(jnp.var(jax.lax.stop_gradient(t), axis=0))

    v_plain = batch_var(g)
    ratio = jnp.where(v_plain > 0, batch_var(terms) / jnp.where(v_plain > 0, v_plain, 1.0), 1.0)
    grads = unravel(g_flat)
    grads = jax.tree_util.tree_map(lambda x, p: x.astype(jnp.asarray(p).dtype), grads, params)
    aux = ControlVariateAux(samples, values, h, jax.lax.stop_gradient(jnp.mean(beta, axis=0)),
                            ratio, num_evals, biased)
    return grads, aux

  return estimator
