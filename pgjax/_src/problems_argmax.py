r"""Seed 003's problem: argmax accuracy of a softmax classifier and its softmax-expected-reward stand-in.

A linear classifier with logits :math:`z(x) = x^\top W + b` (params ``{"w": [F, C], "b": [C]}``) on a
synthetic data set :math:`\{(x_m, y_m)\}_{m=1}^M` (Gaussian blobs, :func:`make_classification_data`) is
scored by

* the **argmax accuracy** :math:`R(\theta) = \frac1M\sum_m \mathbb 1[\arg\max_y z_y(x_m) = y_m]`,
  piecewise constant in :math:`\theta` (its gradient is 0 almost everywhere): the objective a
  zeroth-order method attacks directly;
* the **softmax expected reward** at temperature :math:`\tau`,
  :math:`J_\tau(\theta) = \frac1M\sum_m \pi_\tau(y_m|x_m)`, :math:`\pi_\tau = \mathrm{softmax}(z/\tau)`,
  differentiable, whose gradient is the policy gradient
  :math:`\mathbb{E}_{y\sim\pi_\tau}[r\,\nabla\log\pi_\tau(y|x)]`; as :math:`\tau \to 0`,
  :math:`J_\tau \to R` (away from ties).

Seed 003 (Su 2020) argues that the zeroth-order gradient of :math:`R` is approximately the policy gradient of
:math:`J_\tau`. For this linear model the Gaussian-smoothed accuracy has an exact description:
perturbing :math:`\theta` by :math:`\sigma u` with :math:`u \sim \mathcal N(0, I)` perturbs the logits of
example :math:`m` by :math:`\sigma\sqrt{\|x_m\|^2 + 1}\,\xi` with :math:`\xi \sim \mathcal N(0, I_C)`, so
:math:`\mathbb{E}_u[R(\theta + \sigma u)]` is the accuracy of a *probit* (Thurstone) choice model with noise
scale :math:`s_m = \sigma\sqrt{\|x_m\|^2+1}`. A softmax is the same choice model with Gumbel noise of scale
:math:`\tau`; matching the standard deviations of the noise differences
(:math:`\pi\tau/\sqrt3 = \sqrt2 s`) suggests the zeroth-order gradient at :math:`\sigma` is closest to the
policy gradient at :math:`\tau \approx \sqrt6\,s/\pi \approx 0.78\, s` (``experiments/zo_vs_pg.py``
measures it). For :math:`C = 2` the smoothed accuracy is in closed form,
:math:`\frac1M\sum_m \Phi\big((z_{y_m} - z_{\bar y_m}) / (\sqrt2 s_m)\big)`
(:func:`smoothed_argmax_accuracy`), which tests zeroth-order estimators on this problem exactly.

References:
  J. Su, "Policy gradient and zeroth-order optimisation reach the same place", 2020.
  https://kexue.fm/archives/7737 (seed 003)
"""

from __future__ import annotations

import numbers
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import jax.scipy.stats as jstats
import numpy as np

from pgjax._src import utils
from pgjax._src.problems import ClassificationData
from pgjax._src.problems import linear_policy_logits
from pgjax._src.problems import make_classification_data
from pgjax._src.problems import Problem

__all__ = ("argmax_accuracy", "argmax_classifier", "smoothed_argmax_accuracy", "softmax_expected_reward",
           "softmax_expected_reward_gradient")


def _check_temperature(temperature: Any) -> None:
  if np.ndim(temperature) != 0:
    raise ValueError(f"`temperature` must be a scalar, got shape {np.shape(temperature)}.")
  if utils.is_concrete(temperature):
    t = float(np.asarray(temperature))
    if not (np.isfinite(t) and t > 0):
      raise ValueError(f"`temperature` must be finite and > 0, got {temperature!r}.")


def argmax_accuracy(params: Any, data: ClassificationData) -> jax.Array:
  r""":math:`\frac1M\sum_m \mathbb 1[\arg\max_y z_y(x_m) = y_m]` (ties go to the lowest index). Not differentiable."""
  logits = linear_policy_logits(params, data.features)
  return jnp.mean((jnp.argmax(logits, axis=-1) == data.labels).astype(logits.dtype))


def softmax_expected_reward(params: Any, data: ClassificationData, temperature: Any = 1.0) -> jax.Array:
  r""":math:`J_\tau = \frac1M\sum_m \mathrm{softmax}(z(x_m)/\tau)_{y_m}`; ``temperature`` may be traced."""
  _check_temperature(temperature)
  logits = linear_policy_logits(params, data.features) / temperature
  probs = jax.nn.softmax(logits)
  return jnp.mean(jnp.take_along_axis(probs, data.labels[:, None], axis=-1))


def softmax_expected_reward_gradient(params: Any, data: ClassificationData, temperature: Any = 1.0) -> Any:
  r"""The exact policy gradient :math:`\nabla_\theta J_\tau`, written by hand.

  :math:`\partial \pi_\tau(y|x)/\partial z = \pi_\tau(y|x)(e_y - \pi_\tau(\cdot|x))/\tau`, chained through
  :math:`z = x^\top W + b`: ``w`` gets :math:`X^\top D / M`, ``b`` gets :math:`\sum_m D_m / M` with
  :math:`D_m = \pi_\tau(y_m|x_m)(e_{y_m} - \pi_\tau(\cdot|x_m))/\tau`.
  """
  _check_temperature(temperature)
  probs = jax.nn.softmax(linear_policy_logits(params, data.features) / temperature)
  onehot = jax.nn.one_hot(data.labels, probs.shape[-1], dtype=probs.dtype)
  p_y = jnp.sum(probs * onehot, axis=-1, keepdims=True)
  dz = p_y * (onehot - probs) / (temperature * data.features.shape[0])
  return {"w": data.features.T @ dz, "b": jnp.sum(dz, axis=0)}


def smoothed_argmax_accuracy(params: Any, data: ClassificationData, sigma: Any) -> jax.Array:
  r"""Closed form of :math:`\mathbb{E}_{u\sim\mathcal N(0,I)}[R(\theta + \sigma u)]` for **two classes**.

  With margin :math:`\Delta_m = z_{y_m} - z_{1-y_m}` and :math:`s_m = \sigma\sqrt{\|x_m\|^2 + 1}`, the
  perturbed margin is :math:`\Delta_m + \sqrt2 s_m \xi`, :math:`\xi\sim\mathcal N(0,1)`, so the value is
  :math:`\frac1M\sum_m\Phi(\Delta_m/(\sqrt2 s_m))`. Differentiable: ``jax.grad`` of it is the estimand of
  :func:`pgjax.zeroth_order` applied to :func:`argmax_accuracy` (Gaussian directions).

  Raises:
    ValueError: ``num_classes`` (the width of ``params["w"]``) is not 2, or a non-positive concrete ``sigma``.
  """
  if params["w"].shape[-1] != 2:
    raise ValueError(f"smoothed_argmax_accuracy has a closed form only for num_classes == 2, got "
                     f"num_classes={params['w'].shape[-1]}.")
  if utils.is_concrete(sigma) and not float(np.asarray(sigma)) > 0:
    raise ValueError(f"`sigma` must be > 0, got {sigma!r}.")
  logits = linear_policy_logits(params, data.features)
  z_y = jnp.take_along_axis(logits, data.labels[:, None], axis=-1)[:, 0]
  z_o = jnp.take_along_axis(logits, 1 - data.labels[:, None], axis=-1)[:, 0]
  s = sigma * jnp.sqrt(jnp.sum(data.features ** 2, axis=-1) + 1.0)
  return jnp.mean(jstats.norm.cdf((z_y - z_o) / (jnp.sqrt(2.0) * s)))


def argmax_classifier(key: jax.Array | None = None, *, num_examples: int = 64, num_features: int = 4,
                      num_classes: int = 3, temperature: float = 1.0, init_scale: float = 0.3,
                      separation: float = 2.0) -> tuple[Problem, ClassificationData]:
  r"""Seed 003's softmax classifier: argmax accuracy and its softmax-expected-reward counterpart.

  The returned :class:`~pgjax.problems.Problem` is the *policy* view at temperature :math:`\tau`: one sample
  is the vector of answers to all M examples drawn from :math:`\pi_\tau` (an ``Independent`` categorical
  with logits :math:`z/\tau`), ``f`` is the fraction answered correctly, ``expectation`` is
  :func:`softmax_expected_reward` and ``true_grad`` is :func:`softmax_expected_reward_gradient`. The
  zeroth-order view uses :func:`argmax_accuracy` ``(params, data)`` directly.

  Args:
    key: PRNG key for the data and the initial params (default ``jax.random.key(0)``).
    num_examples, num_features, num_classes: data-set sizes (static).
    temperature: :math:`\tau > 0`.
    init_scale: std of the initial weights ``w`` (``b`` starts at 0).
    separation: scale of the class centres (larger is easier).

  Returns:
    ``(problem, data)``.
  """
  _check_temperature(temperature)
  if not isinstance(init_scale, numbers.Real) or not init_scale >= 0:
    raise ValueError(f"`init_scale` must be a number >= 0, got {init_scale!r}.")
  key = jax.random.key(0) if key is None else utils.as_key(key)
  k_data, k_init = jax.random.split(key)
  data = make_classification_data(k_data, num_examples=num_examples, num_features=num_features,
                                  num_classes=num_classes, separation=separation)
  params = {"w": init_scale * jax.random.normal(k_init, (num_features, num_classes), jnp.float32),
            "b": jnp.zeros((num_classes,), jnp.float32)}

  def dist_fn(p):
    return distrax.Independent(distrax.Categorical(logits=linear_policy_logits(p, data.features) / temperature), 1)

  def f(answers):
    return jnp.mean((answers == data.labels).astype(jnp.float32))

  def expectation(p):
    return softmax_expected_reward(p, data, temperature)

  def true_grad(p):
    return softmax_expected_reward_gradient(p, data, temperature)

  return Problem("argmax_classifier", params, dist_fn, f, expectation, true_grad, False), data
