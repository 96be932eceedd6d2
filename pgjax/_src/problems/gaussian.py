r"""Gaussian problems with closed-form expectations and gradients: a quadratic and a step reward."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import jax.scipy.stats as jstats
from jax.typing import ArrayLike

from pgjax._src import validation
from pgjax._src.problems.base import Problem

__all__ = ("gaussian_quadratic", "gaussian_step")


def _gaussian(params):
  return distrax.MultivariateNormalDiag(loc=params["mean"], scale_diag=jnp.exp(params["log_std"]))


def _gaussian_params(dim, mean, log_std):
  # Default constants are built in numpy and transferred: no program is compiled to build a problem.
  mean = jax.device_put(np.zeros(dim, np.float32)) if mean is None else jnp.asarray(mean, jnp.float32)
  log_std = (jax.device_put(np.zeros(dim, np.float32)) if log_std is None
             else jnp.broadcast_to(jnp.asarray(log_std, jnp.float32), (dim,)))
  if mean.shape != (dim,):
    raise ValueError(f"`mean` must have shape ({dim},) (dim), got {mean.shape}.")
  return {"mean": mean, "log_std": log_std}


def gaussian_quadratic(dim: int = 3, *, mean: ArrayLike | None = None, log_std: ArrayLike | None = None,
                       target: ArrayLike | None = None) -> Problem:
  r"""Gaussian :math:`x\sim\mathcal N(\mu, \mathrm{diag}(\sigma^2))` with the quadratic :math:`f(x)=\|x-c\|^2`.

  Params ``{"mean": [d], "log_std": [d]}``.
  :math:`J = \|\mu - c\|^2 + \sum_k \sigma_k^2`, :math:`\partial_\mu J = 2(\mu - c)`,
  :math:`\partial_{\log\sigma} J = 2\sigma^2`. Defaults: :math:`\mu = 0`, :math:`\sigma = 1`,
  :math:`c = (1, 2, \dots, d)/d`.
  """
  dim = validation.check_positive_int(dim, "dim")
  params = _gaussian_params(dim, mean, log_std)
  c = (jax.device_put(np.arange(1, dim + 1, dtype=np.float32) / np.float32(dim)) if target is None
       else jnp.asarray(target, jnp.float32))

  def f(x):
    return jnp.sum((x - c) ** 2)

  def expectation(p):
    return jnp.sum((p["mean"] - c) ** 2) + jnp.sum(jnp.exp(2 * p["log_std"]))

  def true_grad(p):
    return {"mean": 2 * (p["mean"] - c), "log_std": 2 * jnp.exp(2 * p["log_std"])}

  return Problem("gaussian_quadratic", params, _gaussian, f, expectation, true_grad, True)


def gaussian_step(dim: int = 3, *, mean: ArrayLike | None = None, log_std: ArrayLike | None = None,
                  threshold: ArrayLike = 0.5) -> Problem:
  r"""Gaussian with the non-differentiable step reward :math:`f(x) = \sum_k \mathbb 1[x_k > t_k]`.

  With :math:`z_k = (\mu_k - t_k)/\sigma_k`: :math:`J = \sum_k \Phi(z_k)`,
  :math:`\partial_{\mu_k} J = \varphi(z_k)/\sigma_k`, :math:`\partial_{\log\sigma_k} J = -z_k\varphi(z_k)`.
  The pathwise estimator returns exactly zero here (``f``'s derivative is zero almost everywhere), while the
  score-function estimator is unbiased.
  """
  dim = validation.check_positive_int(dim, "dim")
  params = _gaussian_params(dim, mean, log_std)
  t = jnp.broadcast_to(jnp.asarray(threshold, jnp.float32), (dim,))

  def f(x):
    return jnp.sum((x > t).astype(jnp.float32))

  def _z(p):
    return (p["mean"] - t) / jnp.exp(p["log_std"])

  def expectation(p):
    return jnp.sum(jstats.norm.cdf(_z(p)))

  def true_grad(p):
    z = _z(p)
    pdf = jstats.norm.pdf(z)
    return {"mean": pdf / jnp.exp(p["log_std"]), "log_std": -z * pdf}

  return Problem("gaussian_step", params, _gaussian, f, expectation, true_grad, False)
