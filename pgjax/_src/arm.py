r"""Antithetic gradient estimators for factorised binary variables: ARM and DisARM.

Both estimate :math:`\nabla_\theta\, \mathbb{E}_{b\sim p_\theta}[f(b)]` for :math:`b\in\{0,1\}^K` with independent
coordinates :math:`b_k\sim\mathrm{Bernoulli}(\sigma(\phi_k))`, where the logits :math:`\phi=\phi(\theta)` are read
from the distribution ``dist_fn(params)`` returns and the gradient reaches ``params`` by the chain rule
(a vector-Jacobian product of the map ``params -> logits``). ``f`` is never differentiated.

Each *pair* shares one uniform vector :math:`u\sim U(0,1)^K` and evaluates ``f`` at two antithetic samples

.. math::

   b = \mathbb 1[u < \sigma(\phi)], \qquad \tilde b = \mathbb 1[1 - u < \sigma(\phi)] = \mathbb 1[u > \sigma(-\phi)],

each marginally :math:`\mathrm{Bernoulli}(\sigma(\phi))`: 2 evaluations of ``f`` per pair.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import distrax
import jax
import jax.numpy as jnp

from pgjax._src import validation


class ARMAux(NamedTuple):
  r"""Auxiliary output of :func:`arm` and :func:`disarm`.

  Attributes:
    samples: ``[N, *shape]`` the samples :math:`b = \mathbb 1[u<\sigma(\phi)]` (the distribution's dtype).
    antithetic_samples: ``[N, *shape]`` the antithetic samples :math:`\tilde b = \mathbb 1[u>\sigma(-\phi)]`.
    values: ``[N]`` :math:`f(b)`.
    antithetic_values: ``[N]`` :math:`f(\tilde b)`.
    num_evaluations: evaluations of ``f``, ``2 * num_pairs``.
    biased: always False (both estimators are unbiased).
  """
  samples: jax.Array
  antithetic_samples: jax.Array
  values: jax.Array
  antithetic_values: jax.Array
  num_evaluations: int
  biased: bool


def _bernoulli_logits(dist: Any, name: str = "dist_fn") -> tuple[jax.Array, Any]:
  """``(logits, sample dtype)`` of a distrax ``Bernoulli`` (possibly inside ``Independent``)."""
  base = dist
  while isinstance(base, distrax.Independent):
    base = base.distribution
  if not isinstance(base, distrax.Bernoulli):
    raise TypeError(f"`{name}` must return a distrax.Bernoulli (or distrax.Independent of one) for ARM/DisARM, "
                    f"got {type(dist).__name__}.")
  logits = jnp.broadcast_to(base.logits, tuple(dist.batch_shape) + tuple(dist.event_shape))
  with jax.numpy_rank_promotion("allow"):   # distrax infers the dtype by tracing its own sampler
    dtype = base.dtype
  return logits, dtype


def _antithetic_estimator(f, dist_fn, num_pairs, weight_fn):
  validation.check_callable(f, "f")
  validation.check_callable(dist_fn, "dist_fn")
  num_pairs = validation.check_positive_int(num_pairs, "num_pairs")

  def estimator(key, params):
    key = validation.as_key(key)
    validation.check_float_tree(params, "params")
    _, dtype = _bernoulli_logits(dist_fn(params))
    logits, vjp_fn = jax.vjp(lambda p: _bernoulli_logits(dist_fn(p))[0], params)
    logits_n = jnp.broadcast_to(logits[None], (num_pairs,) + logits.shape)
    phi = jax.lax.stop_gradient(logits_n)
    u = jax.random.uniform(key, phi.shape, dtype=jnp.result_type(phi.dtype, jnp.float32))
    b = jax.lax.stop_gradient(u < jax.nn.sigmoid(phi)).astype(dtype)
    b_tilde = jax.lax.stop_gradient(u > jax.nn.sigmoid(-phi)).astype(dtype)
    fv = jax.vmap(f)
    values = jnp.asarray(fv(b))
    values_tilde = jnp.asarray(fv(b_tilde))
    if values.shape != (num_pairs,):
      raise ValueError(f"`f` must return a scalar for each sample; got shape {values.shape[1:]} per sample.")
    values = jax.lax.stop_gradient(values.astype(logits.dtype))
    values_tilde = jax.lax.stop_gradient(values_tilde.astype(logits.dtype))
    # The weights depend on the logits (DisARM's sigma(|phi|)); keep that dependence differentiable so that
    # jax.grad through the estimate is the derivative of the estimator as a function of params.
    per_pair = weight_fn(u, b, b_tilde, values, values_tilde, logits_n)   # [N, *shape]
    g_logits = jnp.mean(per_pair, axis=0).astype(logits.dtype)
    (grads,) = vjp_fn(g_logits)
    grads = jax.tree_util.tree_map(lambda g, p: g.astype(jnp.asarray(p).dtype), grads, params)
    return grads, ARMAux(b, b_tilde, values, values_tilde, 2 * num_pairs, False)

  return estimator


def _expand(v, like):
  return jnp.reshape(v, v.shape + (1,) * (like.ndim - v.ndim))


def _arm_weights(u, b, b_tilde, values, values_tilde, logits):
  del b, b_tilde, logits
  return _expand(values_tilde - values, u) * (u - 0.5).astype(values.dtype)


def _disarm_weights(u, b, b_tilde, values, values_tilde, logits):
  del u
  differ = (b != b_tilde).astype(values.dtype)
  sign = 1.0 - 2.0 * b_tilde.astype(values.dtype)       # (-1)^{b~}
  return 0.5 * _expand(values - values_tilde, differ) * differ * sign * jax.nn.sigmoid(jnp.abs(logits))


def arm(f: Callable[[Any], jax.Array], dist_fn: Callable[[Any], Any], *,
        num_pairs: int) -> Callable[..., tuple[Any, ARMAux]]:
  r"""Builds the ARM (augment-REINFORCE-merge) estimator for factorised Bernoulli variables.

  With :math:`N` pairs :math:`(b^{(n)}, \tilde b^{(n)})` sharing :math:`u^{(n)}\sim U(0,1)^K` (module docstring),
  the gradient with respect to the logits is the ARM estimator of Yin & Zhou (2019), written with
  :math:`\tilde b` the sample thresholded at :math:`\sigma(-\phi)`:

  .. math::

     \hat g_{\phi_k} = \frac1N \sum_{n=1}^N \big(f(\tilde b^{(n)}) - f(b^{(n)})\big)\,\big(u^{(n)}_k - \tfrac12\big),

  and :math:`\hat g_\theta = (\partial\phi/\partial\theta)^\top \hat g_\phi`. Unbiased for
  :math:`\nabla_\theta \mathbb E_{p_\theta}[f]` (the sign: ascend it to increase the expectation), 2 evaluations
  of ``f`` per pair (``aux.num_evaluations = 2 * num_pairs``). Its variance is never below DisARM's
  (:func:`disarm` is ARM conditioned on the pair :math:`(b,\tilde b)`).

  Args:
    f: objective of one sample, ``f(b) -> scalar``; ``b`` has the distribution's shape and sample dtype
      (``int32`` for a default ``distrax.Bernoulli``). Never differentiated.
    dist_fn: ``params -> distrax.Bernoulli`` (or ``distrax.Independent`` of one), any batch shape; the
      logits (``dist.logits``, derived from ``probs`` when the distribution was built from probabilities) are
      differentiated with respect to ``params``. Anything else raises ``TypeError`` naming ``dist_fn``.
    num_pairs: :math:`N \ge 1` antithetic pairs, static.

  Returns:
    ``estimator(key, params) -> (grads, ARMAux)``; ``grads`` has ``params``' structure and dtypes. The
    estimate is differentiable in ``params`` (``jax.grad`` through it sees the chain rule through the logits).

  Edge cases: large finite logits (``|phi| = 60`` in float32, where :math:`\sigma(\phi)` rounds to 0 or 1) give
  finite estimates (DisARM's coordinate is then exactly 0, ARM's is zero-mean noise from the other coordinates).
  A Bernoulli built from probabilities exactly 0 or 1 has infinite logits; the derivative of the logit with
  respect to the probability is infinite there, so the gradient of those parameters is NaN: use
  :func:`pgjax.measure_valued`, which differentiates the probabilities, for such parameterisations.

  References:
    Yin & Zhou, "ARM: Augment-REINFORCE-merge gradient for stochastic binary networks", ICLR 2019.
  """
  return _antithetic_estimator(f, dist_fn, num_pairs, _arm_weights)


def disarm(f: Callable[[Any], jax.Array], dist_fn: Callable[[Any], Any], *,
           num_pairs: int) -> Callable[..., tuple[Any, ARMAux]]:
  r"""Builds the DisARM estimator for factorised Bernoulli variables (ARM with the uniform integrated out).

  With the same antithetic pairs as :func:`arm`, the DisARM estimator of Dong, Mnih & Tucker (2020) (the same
  form as the ``disarm`` gradient of the authors' published code) is

  .. math::

     \hat g_{\phi_k} = \frac1N \sum_{n=1}^N \tfrac12\big(f(b^{(n)}) - f(\tilde b^{(n)})\big)\,
       (-1)^{\tilde b^{(n)}_k}\, \mathbb 1\big[b^{(n)}_k \ne \tilde b^{(n)}_k\big]\, \sigma(|\phi_k|),

  and :math:`\hat g_\theta = (\partial\phi/\partial\theta)^\top \hat g_\phi`. It equals
  :math:`\mathbb E[\hat g^{\mathrm{ARM}} \mid b, \tilde b]`, so it is unbiased and, by the law of total variance,
  its variance is at most ARM's for every ``f`` and every logit (per coordinate). Coordinates where the pair
  agrees get exactly zero. 2 evaluations of ``f`` per pair (``aux.num_evaluations = 2 * num_pairs``).

  Args:
    f: objective of one sample, ``f(b) -> scalar`` (see :func:`arm`).
    dist_fn: ``params -> distrax.Bernoulli`` or ``distrax.Independent`` of one (see :func:`arm`).
    num_pairs: :math:`N \ge 1` antithetic pairs, static.

  Returns:
    ``estimator(key, params) -> (grads, ARMAux)``. The estimate is differentiable in ``params`` (including the
    :math:`\sigma(|\phi|)` weight). Edge cases as for :func:`arm`.

  References:
    Dong, Mnih & Tucker, "DisARM: An antithetic gradient estimator for binary latent variables", NeurIPS 2020.
    Yin & Zhou, "ARM: Augment-REINFORCE-merge gradient for stochastic binary networks", ICLR 2019.
  """
  return _antithetic_estimator(f, dist_fn, num_pairs, _disarm_weights)
