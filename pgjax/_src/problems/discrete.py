r"""Discrete problems with exact answers: a categorical bandit and Bernoulli and categorical quadratic toys."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from pgjax._src import validation
from pgjax._src.problems.base import Problem

__all__ = ("bernoulli_quadratic", "categorical_bandit", "categorical_quadratic")


def categorical_bandit(rewards: ArrayLike = (1.0, 0.0, 0.5, 0.2), *, logits: ArrayLike | None = None) -> Problem:
  r"""A K-armed bandit with deterministic rewards :math:`r` and a softmax policy over ``logits`` [K].

  :math:`J = p^\top r`, :math:`\nabla_{\text{logits}} J = p \odot (r - p^\top r)` with :math:`p=\mathrm{softmax}`.
  """
  r = jnp.asarray(rewards, jnp.float32)
  if r.ndim != 1 or r.shape[0] < 2:
    raise ValueError(f"`rewards` must have shape [K] with K >= 2, got {r.shape}.")
  k = r.shape[0]
  params = (jnp.linspace(0.5, -0.5, k, dtype=jnp.float32) if logits is None
            else jnp.asarray(logits, jnp.float32))
  if params.shape != (k,):
    raise ValueError(f"`logits` must have shape ({k},) like `rewards`, got {params.shape}.")

  def dist_fn(logits_):
    return distrax.Categorical(logits=logits_)

  def f(a):
    return r[a]

  def expectation(logits_):
    return jnp.dot(jax.nn.softmax(logits_), r)

  def true_grad(logits_):
    p = jax.nn.softmax(logits_)
    return p * (r - jnp.dot(p, r))

  return Problem("categorical_bandit", params, dist_fn, f, expectation, true_grad, False)


def bernoulli_quadratic(dim: int = 5, *, logits: ArrayLike | None = None,
                        target: ArrayLike | None = None) -> Problem:
  r"""Independent Bernoulli bits :math:`x\in\{0,1\}^d` with :math:`f(x)=\|x-t\|^2`.

  With :math:`p=\sigma(\text{logits})` and :math:`x_k^2=x_k`: :math:`J=\sum_k t_k^2 + p_k(1-2t_k)`,
  :math:`\partial_{\text{logit}_k} J = (1 - 2t_k)\,p_k(1-p_k)`. Defaults: logits 0, :math:`t_k = 0.45`
  (so all samples have similar values and a baseline matters a lot). This is the toy problem of the
  binary-variable estimator literature (:math:`t = 0.45` in Tucker et al. 2017; targets closer to 1/2, such as
  :math:`0.499`, in Grathwohl et al. 2018 and Dong et al. 2020), whose gradient is tiny next to ``f``.

  References:
    G. Tucker et al., "REBAR: low-variance, unbiased gradient estimates for discrete latent variable
    models", NeurIPS 2017. W. Grathwohl et al., "Backpropagation through the void", ICLR 2018.
    Z. Dong, A. Mnih, G. Tucker, "DisARM: an antithetic gradient estimator for binary latent variables",
    NeurIPS 2020.
  """
  dim = validation.check_positive_int(dim, "dim")
  params = jax.device_put(np.zeros(dim, np.float32)) if logits is None else jnp.asarray(logits, jnp.float32)
  t = jax.device_put(np.full((dim,), 0.45, np.float32)) if target is None else jnp.asarray(target, jnp.float32)
  if params.shape != (dim,) or t.shape != (dim,):
    raise ValueError(f"`logits` and `target` must have shape ({dim},), got {params.shape} and {t.shape}.")

  def dist_fn(logits_):
    return distrax.Independent(distrax.Bernoulli(logits=logits_), 1)

  def f(x):
    return jnp.sum((x.astype(jnp.float32) - t) ** 2)

  def expectation(logits_):
    p = jax.nn.sigmoid(logits_)
    return jnp.sum(t ** 2 + p * (1 - 2 * t))

  def true_grad(logits_):
    p = jax.nn.sigmoid(logits_)
    return (1 - 2 * t) * p * (1 - p)

  return Problem("bernoulli_quadratic", params, dist_fn, f, expectation, true_grad, False)


def categorical_quadratic(num_variables: int = 1, num_categories: int = 4, *, logits: ArrayLike | None = None,
                          target: ArrayLike | None = None) -> Problem:
  r"""Independent one-hot categorical variables :math:`y_d\in\{e_1..e_K\}` with :math:`f(y)=\sum_d\|y_d-t\|^2`.

  The categorical counterpart of :func:`bernoulli_quadratic`. The distribution is
  ``Independent(OneHotCategorical(logits [D, K], dtype=float32), 1)``, so a sample is a float one-hot
  ``[D, K]`` array and ``f`` is also defined on the simplex, where the relaxed (Gumbel-softmax) estimators
  evaluate it. On one-hot vectors :math:`\|y_d - t\|^2 = 1 - 2t_{c_d} + \|t\|^2`, so with
  :math:`p_d = \mathrm{softmax}(\text{logits}_d)`:

  .. math::

     J = \sum_d \big(1 + \|t\|^2 - 2\,p_d^\top t\big), \qquad
     \frac{\partial J}{\partial\,\text{logits}_d} = -2\, p_d \odot \big(t - p_d^\top t\big).

  Defaults: logits ``linspace(0.5, -0.5, K)`` in every row, :math:`t` = ``linspace(0.4, 0.6, K)`` (values of
  ``f`` close together, so a baseline matters).

  Args:
    num_variables: D >= 1 independent categorical variables.
    num_categories: K >= 2 categories each.
    logits: ``[D, K]`` (default as above).
    target: ``[K]`` (default as above).
  """
  d = validation.check_positive_int(num_variables, "num_variables")
  k = validation.check_positive_int(num_categories, "num_categories", minimum=2)
  params = (jnp.broadcast_to(jnp.linspace(0.5, -0.5, k, dtype=jnp.float32), (d, k)) if logits is None
            else jnp.asarray(logits, jnp.float32))
  t = jnp.linspace(0.4, 0.6, k, dtype=jnp.float32) if target is None else jnp.asarray(target, jnp.float32)
  if params.shape != (d, k):
    raise ValueError(f"`logits` must have shape ({d}, {k}) (num_variables, num_categories), got {params.shape}.")
  if t.shape != (k,):
    raise ValueError(f"`target` must have shape ({k},) (num_categories), got {t.shape}.")

  def dist_fn(logits_):
    return distrax.Independent(distrax.OneHotCategorical(logits=logits_, dtype=jnp.float32), 1)

  def f(y):
    return jnp.sum((y - t[None, :]) ** 2)

  def expectation(logits_):
    p = jax.nn.softmax(logits_, axis=-1)
    return jnp.sum(1.0 + jnp.sum(t ** 2) - 2.0 * (p @ t))

  def true_grad(logits_):
    p = jax.nn.softmax(logits_, axis=-1)
    return -2.0 * p * (t[None, :] - (p @ t)[:, None])

  return Problem("categorical_quadratic", params, dist_fn, f, expectation, true_grad, False)
