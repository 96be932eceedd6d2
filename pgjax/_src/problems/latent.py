r"""A binary variational autoencoder (sigmoid belief network) small enough to enumerate exactly.

The model over data :math:`x\in\{0,1\}^D` with :math:`K` binary latents :math:`z\in\{0,1\}^K`:

.. math::

   p(z) = \prod_k \mathrm{Bern}(z_k;\sigma(a_k)), \qquad
   p_\theta(x|z) = \prod_d \mathrm{Bern}\big(x_d;\sigma(z^\top W_d + c)_d\big), \qquad
   q_\phi(z|x) = \prod_k \mathrm{Bern}\big(z_k;\sigma(x^\top W_e + b_e)_k\big),

with parameters ``{"encoder": {"w": [D, K], "b": [K]}, "decoder": {"w": [K, D], "b": [D]},
"prior_logits": [K]}``. The per-example evidence lower bound is

.. math::

   \mathcal L(x) = \mathbb{E}_{q_\phi(z|x)}\big[\,\underbrace{\log p(z) + \log p_\theta(x|z)
   - \log q_\phi(z|x)}_{\ell(x, z)}\,\big] = \sum_{z\in\{0,1\}^K} q_\phi(z|x)\,\ell(x, z),

a finite sum of :math:`2^K` terms, so for :math:`K \le 12` the ELBO and its gradient are exact. The gradient
with respect to the encoder is the one gradient estimators for discrete variables are built for: since
:math:`\mathbb{E}_q[\nabla_\phi \log q_\phi] = 0`,

.. math::

   \nabla_\phi \mathcal L(x) = \mathbb{E}_{q_\phi(z|x)}\big[\ell(x, z)\,\nabla_\phi\log q_\phi(z|x)\big]
   = \nabla_\phi\, \mathbb{E}_{q_\phi(z|x)}\big[\ell_{\phi_0}(x, z)\big]\Big|_{\phi=\phi_0},

the gradient of the expectation of a *fixed* function :math:`\ell_{\phi_0}` (the encoder inside
:math:`\ell` held at its current value) under the distribution :math:`q_\phi` -- exactly the estimand of
every estimator of :math:`\nabla_\theta\mathbb{E}_{p_\theta}[f]`. Written out for the logits
:math:`l_m = x_m^\top W_e + b_e`: :math:`\partial\mathcal L(x_m)/\partial l_{mk} = \sum_z q(z|x_m)\,
\ell(x_m, z)\,(z_k - \sigma(l_{mk}))`, chained through the linear encoder by hand in
:func:`binary_vae_encoder_gradient`.

Every log-density is written with softplus, :math:`\log\mathrm{Bern}(z;\sigma(l)) = z\,l -
\mathrm{softplus}(l)`, which is linear in :math:`z` and so also defined on relaxed samples
:math:`z\in[0,1]^K` (the Concrete / Gumbel-softmax estimators evaluate it there).

References:
  R. M. Neal, "Connectionist learning of belief networks", Artificial Intelligence, 1992.
  A. Mnih, K. Gregor, "Neural variational inference and learning in belief networks", ICML 2014.
  G. Tucker, A. Mnih, C. J. Maddison, D. Lawson, J. Sohl-Dickstein, "REBAR: low-variance, unbiased gradient
  estimates for discrete latent variable models", NeurIPS 2017 (section 6: binarised MNIST with
  sigmoid belief networks, the benchmark this problem is a small exact version of).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from pgjax._src import validation
from pgjax._src.problems.base import Problem

__all__ = ("BinaryVAE", "binary_vae", "binary_vae_elbo", "binary_vae_encoder_gradient",
           "binary_vae_log_weight", "binary_vae_posterior")

_MAX_LATENTS = 12


class BinaryVAE(NamedTuple):
  r"""A binary VAE with its data and exact answers (see :func:`binary_vae`).

  Attributes:
    problem: the encoder-gradient view at ``params`` as a :class:`Problem`: ``problem.params`` is
      ``params["encoder"]``, ``problem.dist_fn(encoder)`` is :math:`q(z|x_m)` for every example (a
      ``[M, K]`` Bernoulli sample), ``problem.f(z)`` the mean over examples of :math:`\ell(x_m, z_m)` with
      every parameter held at ``params``, ``problem.expectation`` / ``problem.true_grad`` its exact
      expectation and gradient (the ELBO and its encoder gradient at ``problem.params``).
    params: the model's parameters ``{"encoder", "decoder", "prior_logits"}``.
    data: ``[M, D]`` float32 in :math:`\{0, 1\}`.
    dist_fn: ``params -> q(z|x)`` for every example: ``Independent(Bernoulli(logits [M, K]), 2)``.
    f: ``f(params, z)`` with ``z [M, K]``: :math:`\frac1M\sum_m \ell(x_m, z_m)` (the ELBO integrand; build an
      estimator with ``functools.partial(f, jax.lax.stop_gradient(params))``).
    elbo: ``params -> `` the exact mean ELBO :math:`\frac1M\sum_m \mathcal L(x_m)` by enumeration
      (differentiable: ``jax.grad(elbo)`` is the exact gradient for every parameter).
    encoder_gradient: ``params -> `` the exact ELBO gradient with respect to ``params["encoder"]``, written
      out by hand (:func:`binary_vae_encoder_gradient`).
  """
  problem: Problem
  params: Any
  data: jax.Array
  dist_fn: Callable[[Any], Any]
  f: Callable[[Any, jax.Array], jax.Array]
  elbo: Callable[[Any], jax.Array]
  encoder_gradient: Callable[[Any], Any]


def _log_bernoulli(z: jax.Array, logits: jax.Array) -> jax.Array:
  r""":math:`\sum z\,l - \mathrm{softplus}(l)` over the last axis (linear in ``z``, finite for any logit)."""
  return jnp.sum(z * logits - jax.nn.softplus(logits), axis=-1)


def _encoder_logits(params: Any, x: jax.Array) -> jax.Array:
  enc = params["encoder"]
  return x @ enc["w"] + enc["b"][None, :] if x.ndim == 2 else x @ enc["w"] + enc["b"]


def binary_vae_log_weight(params: Any, x: jax.Array, z: jax.Array) -> jax.Array:
  r""":math:`\ell(x, z) = \log p(z) + \log p_\theta(x|z) - \log q_\phi(z|x)` for one example.

  Args:
    params: the model's parameters.
    x: ``[D]`` in :math:`\{0, 1\}`.
    z: ``[K]`` in :math:`\{0, 1\}` or relaxed in :math:`[0, 1]` (the formula is linear in ``z`` inside each
      log-density).

  Returns:
    A scalar.
  """
  z = jnp.asarray(z).astype(jnp.result_type(params["prior_logits"].dtype, jnp.float32))
  dec = params["decoder"]
  log_prior = _log_bernoulli(z, params["prior_logits"])
  log_lik = _log_bernoulli(x, z @ dec["w"] + dec["b"])
  log_q = _log_bernoulli(z, _encoder_logits(params, x))
  return log_prior + log_lik - log_q


def _all_states(num_latents: int) -> jax.Array:
  """``[2^K, K]`` float32: every binary vector, the first latent the most significant bit."""
  s = np.arange(2 ** num_latents)[:, None] >> np.arange(num_latents - 1, -1, -1)[None, :]
  return jnp.asarray(s & 1, jnp.float32)


def binary_vae_posterior(params: Any, data: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""Every latent state with its encoder probability and log-weight: the exact enumeration.

  Returns:
    ``(states [S, K], q [M, S], log_weights [M, S])`` with :math:`S = 2^K`: :math:`q(z_s|x_m)` and
    :math:`\ell(x_m, z_s)`.
  """
  num_latents = params["prior_logits"].shape[-1]
  states = _all_states(num_latents)
  logits = _encoder_logits(params, data)                                          # [M, K]
  log_q = states @ logits.T - jnp.sum(jax.nn.softplus(logits), axis=-1)[None, :]  # [S, M]
  lw = jax.vmap(lambda x: jax.vmap(lambda z: binary_vae_log_weight(params, x, z))(states))(data)  # [M, S]
  return states, jnp.exp(log_q.T), lw


def binary_vae_elbo(params: Any, data: jax.Array) -> jax.Array:
  r"""The exact mean ELBO :math:`\frac1M\sum_m\sum_z q(z|x_m)\,\ell(x_m, z)` over all :math:`2^K` states."""
  _, q, lw = binary_vae_posterior(params, data)
  return jnp.mean(jnp.sum(q * lw, axis=-1))


def binary_vae_encoder_gradient(params: Any, data: jax.Array, *, encoder: Any = None) -> Any:
  r"""The exact gradient in :math:`\phi` of :math:`\frac1M\sum_m\mathbb{E}_{q_{\phi}(z|x_m)}[\ell(x_m, z)]`, ``params`` in :math:`\ell`.

  With ``encoder=None`` (:math:`\phi` = ``params["encoder"]``) this is the ELBO's encoder gradient.
  Written by hand from the enumeration: :math:`G_{mk} = \sum_z q_\phi(z|x_m)\,\ell(x_m, z)\,
  (z_k - \sigma(l_{mk}))`, then :math:`\partial/\partial W_e = X^\top G / M`,
  :math:`\partial/\partial b_e = \sum_m G_m / M`.

  Args:
    params: the model's parameters (those inside :math:`\ell`).
    data: ``[M, D]``.
    encoder: the encoder :math:`\phi` of the sampling distribution (default ``params["encoder"]``).
  """
  enc = params["encoder"] if encoder is None else encoder
  states, _, lw = binary_vae_posterior(params, data)
  logits = data @ enc["w"] + enc["b"][None, :]                                    # [M, K]
  log_q = logits @ states.T - jnp.sum(jax.nn.softplus(logits), axis=-1)[:, None]  # [M, S]
  q = jnp.exp(log_q)
  score = states[None, :, :] - jax.nn.sigmoid(logits)[:, None, :]                 # [M, S, K]
  g = jnp.sum((q * lw)[:, :, None] * score, axis=1)                               # [M, K]
  m = data.shape[0]
  return {"w": data.T @ g / m, "b": jnp.sum(g, axis=0) / m}


@jax.jit
def _fixed_integrand_expectation(params, data, encoder):
  r""":math:`\frac1M\sum_m\sum_z q_{\text{encoder}}(z|x_m)\,\ell_{\text{params}}(x_m, z)`."""
  _, _, lw = binary_vae_posterior(params, data)
  _, q, _ = binary_vae_posterior({**params, "encoder": encoder}, data)
  return jnp.mean(jnp.sum(q * lw, axis=-1))


_elbo_jit = jax.jit(binary_vae_elbo)
_encoder_gradient_jit = jax.jit(binary_vae_encoder_gradient)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _synthetic_data(key, num_latents, num_pixels, num_examples):
  k_z, k_w, k_x = jax.random.split(jax.random.fold_in(key, 0), 3)
  z = jax.random.bernoulli(k_z, 0.5, (num_examples, num_latents)).astype(jnp.float32)
  w_true = jax.random.normal(k_w, (num_latents, num_pixels))
  return jax.random.bernoulli(k_x, jax.nn.sigmoid(3.0 * (z @ w_true) - 1.5)).astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=(2,))
def _init_params(key, data, num_latents, init_scale):
  k_enc, k_dec = jax.random.split(jax.random.fold_in(key, 1))
  num_pixels = data.shape[1]
  mean = jnp.clip(jnp.mean(data, axis=0), 0.05, 0.95)
  return {
      "encoder": {"w": init_scale * jax.random.normal(k_enc, (num_pixels, num_latents), jnp.float32),
                  "b": jnp.zeros((num_latents,), jnp.float32)},
      "decoder": {"w": init_scale * jax.random.normal(k_dec, (num_latents, num_pixels), jnp.float32),
                  "b": jnp.log(mean) - jnp.log1p(-mean)},
      "prior_logits": jnp.zeros((num_latents,), jnp.float32),
  }


def _check_binary_data(data: Any) -> jax.Array:
  arr = np.asarray(data)
  if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
    raise ValueError(f"`data` must have shape [M, D] with M, D >= 1, got {arr.shape}.")
  if not np.all((arr == 0) | (arr == 1)):
    raise ValueError("`data` must be binary (every entry 0 or 1).")
  return jnp.asarray(arr, jnp.float32)


def binary_vae(key: jax.Array | None = None, *, num_latents: int = 8, num_pixels: int = 16,
               num_examples: int = 16, data: Any = None, init_scale: float = 0.3) -> BinaryVAE:
  r"""A binary VAE with ``num_latents`` <= 12 Bernoulli latents, synthetic binary data and exact answers.

  The data (unless given) are drawn from a ground-truth sigmoid belief network with the same number of
  latents: :math:`z\sim\mathrm{Bern}(1/2)^K`, :math:`x\sim\mathrm{Bern}(\sigma(3\,z^\top W^* - 1.5))` with
  :math:`W^*\sim\mathcal N(0, 1)^{K\times D}`, so the data have latent structure to learn. The initial
  parameters are :math:`W_e, W_d \sim \mathcal N(0, \text{init\_scale}^2)`, :math:`b_e = 0`, the decoder
  bias the logit of the pixel means (clipped to [0.05, 0.95]), prior logits 0.

  Args:
    key: PRNG key for the data and the initial parameters (default ``jax.random.key(0)``).
    num_latents: K in [1, 12] (the enumeration has :math:`2^K` states per example).
    num_pixels: D, the data dimension (ignored when ``data`` is given).
    num_examples: M (ignored when ``data`` is given).
    data: optional ``[M, D]`` binary array to use instead of the synthetic data.
    init_scale: std of the initial weights.

  Returns:
    A :class:`BinaryVAE`.

  Raises:
    ValueError: ``num_latents`` outside [1, 12], non-binary ``data``, a negative ``init_scale``.
  """
  num_latents = validation.check_positive_int(num_latents, "num_latents")
  if num_latents > _MAX_LATENTS:
    raise ValueError(f"`num_latents` must be <= {_MAX_LATENTS} (exact enumeration of 2**K states), "
                     f"got {num_latents}.")
  validation.check_nonnegative(init_scale, "init_scale")
  key = jax.random.key(0) if key is None else validation.as_key(key)
  if data is None:
    num_pixels = validation.check_positive_int(num_pixels, "num_pixels")
    num_examples = validation.check_positive_int(num_examples, "num_examples")
    data = np.asarray(_synthetic_data(key, num_latents, num_pixels, num_examples))
  data = _check_binary_data(data)
  params = _init_params(key, data, num_latents, init_scale)

  def dist_fn(p):
    return distrax.Independent(distrax.Bernoulli(logits=_encoder_logits(p, data)), 2)

  def f(p, z):
    return jnp.mean(jax.vmap(binary_vae_log_weight, in_axes=(None, 0, 0))(p, data, z))

  def elbo(p):
    return _elbo_jit(p, data)

  def encoder_gradient(p):
    return _encoder_gradient_jit(p, data)

  fixed = params

  def problem_dist_fn(enc):
    return dist_fn({**fixed, "encoder": enc})

  def problem_f(z):
    return f(fixed, z)

  def expectation(enc):
    return _fixed_integrand_expectation(fixed, data, enc)

  def true_grad(enc):
    return _encoder_gradient_jit(fixed, data, encoder=enc)

  problem = Problem("binary_vae", params["encoder"], problem_dist_fn, problem_f, expectation, true_grad, False)
  return BinaryVAE(problem, params, data, dist_fn, f, elbo, encoder_gradient)
