r"""Classification as a gradient-estimation problem: a linear softmax policy answers labelled examples.

Two views of one linear classifier with logits :math:`z(x) = x^\top W + b` (params ``{"w": [F, C], "b": [C]}``)
on a synthetic data set of Gaussian blobs (:func:`make_classification_data`):

* the **classification robot** (:func:`classification_robot`): the policy answers every example, reward 1
  when the answer is the label. Two identities hold exactly: the policy gradient of the expected accuracy
  :math:`\mathbb{E}_{a\sim\pi}[r\,\nabla\log\pi(a|s)] = \nabla\pi(y|s)`, and scoring every action by its
  label instead of sampling, :math:`\sum_a r(s,a)\nabla\log\pi(a|s) = \nabla\log\pi(y|s)`, the negative
  cross-entropy gradient;
* the **argmax classifier** (:func:`argmax_classifier`): argmax accuracy against the softmax expected reward.

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

Su (2020) argues that the zeroth-order gradient of :math:`R` is approximately the policy gradient of
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
  R. J. Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement
  learning", Machine Learning, 1992.
  J. Su, "Policy gradient and zeroth-order optimisation reach the same place", 2020.
  https://kexue.fm/archives/7737
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import jax.scipy.stats as jstats
import numpy as np
import optax

from pgjax._src import validation
from pgjax._src.problems.base import Problem

__all__ = ("ClassificationData", "argmax_accuracy", "argmax_classifier", "classification_robot",
           "cross_entropy_gradient", "expected_reward_gradient", "label_scored_gradient",
           "linear_policy_logits", "make_classification_data", "policy_gradient_by_enumeration",
           "score_weighted_gradient", "smoothed_argmax_accuracy", "softmax_expected_reward",
           "softmax_expected_reward_gradient")


class ClassificationData(NamedTuple):
  """A synthetic classification data set: ``features [M, F]`` and integer ``labels [M]``."""
  features: jax.Array
  labels: jax.Array


def make_classification_data(key: jax.Array, *, num_examples: int = 64, num_features: int = 4,
                             num_classes: int = 3, separation: float = 2.0) -> ClassificationData:
  """Gaussian blobs: class ``c`` has a random centre ``separation * N(0, I)`` and unit covariance."""
  num_examples = validation.check_positive_int(num_examples, "num_examples")
  num_features = validation.check_positive_int(num_features, "num_features")
  num_classes = validation.check_positive_int(num_classes, "num_classes", minimum=2)
  k_label, k_centre, k_noise = jax.random.split(validation.as_key(key), 3)
  labels = jax.random.randint(k_label, (num_examples,), 0, num_classes)
  centres = separation * jax.random.normal(k_centre, (num_classes, num_features))
  features = centres[labels] + jax.random.normal(k_noise, (num_examples, num_features))
  return ClassificationData(features.astype(jnp.float32), labels.astype(jnp.int32))


def linear_policy_logits(params: Any, features: jax.Array) -> jax.Array:
  """Logits ``features @ params["w"] + params["b"]`` of the linear softmax classifier, ``[M, C]``."""
  return features @ params["w"] + params["b"][None, :]


def expected_reward_gradient(params: Any, data: ClassificationData) -> Any:
  r"""The exact policy gradient of the expected accuracy, :math:`\nabla\frac1M\sum_m \pi(y_m|s_m)`.

  Written by hand: :math:`\partial\pi(y|s)/\partial z = \pi(y|s)(e_y - \pi(\cdot|s))` for logits
  :math:`z = s^\top W + b`, chained through the linear layer.
  """
  probs = jax.nn.softmax(linear_policy_logits(params, data.features))
  onehot = jax.nn.one_hot(data.labels, probs.shape[-1], dtype=probs.dtype)
  p_y = jnp.sum(probs * onehot, axis=-1, keepdims=True)
  dz = p_y * (onehot - probs) / data.features.shape[0]
  return {"w": data.features.T @ dz, "b": jnp.sum(dz, axis=0)}


def score_weighted_gradient(params: Any, data: ClassificationData, action_weights: jax.Array) -> Any:
  r""":math:`\frac1M\sum_m \sum_a w_m(a)\, \nabla\log\pi(a|s_m)`, by autodiff of each action's log-probability.

  With :math:`w_m(a) = \pi(a|s_m)\, r(s_m, a)` this is the policy gradient written as an expectation over
  actions (the first identity of the module docstring); with :math:`w_m(a) = r(s_m, a)` (every action scored
  by its label, not sampled) it is the label-scored gradient, which equals the negative cross-entropy gradient (second identity).
  ``action_weights`` is ``[M, C]`` and held constant.
  """
  weights = jax.lax.stop_gradient(action_weights)

  def weighted_log_probs(p):
    logp = jax.nn.log_softmax(linear_policy_logits(p, data.features))
    return jnp.sum(weights * logp) / data.features.shape[0]

  return jax.grad(weighted_log_probs)(params)


def policy_gradient_by_enumeration(params: Any, data: ClassificationData) -> Any:
  r""":math:`\mathbb{E}_{a\sim\pi}[r\,\nabla\log\pi(a|s)] = \sum_a \pi(a|s) r(s,a) \nabla\log\pi(a|s)`, averaged over the data."""
  probs = jax.nn.softmax(linear_policy_logits(params, data.features))
  rewards = jax.nn.one_hot(data.labels, probs.shape[-1], dtype=probs.dtype)
  return score_weighted_gradient(params, data, probs * rewards)


def label_scored_gradient(params: Any, data: ClassificationData) -> Any:
  r""":math:`\sum_a r(s,a)\nabla\log\pi(a|s) = \nabla\log\pi(y|s)`: every action scored by its reward, none sampled."""
  probs = jax.nn.softmax(linear_policy_logits(params, data.features))
  return score_weighted_gradient(params, data, jax.nn.one_hot(data.labels, probs.shape[-1], dtype=probs.dtype))


def cross_entropy_gradient(params: Any, data: ClassificationData) -> Any:
  """Minus the gradient of the mean softmax cross-entropy (optax), i.e. the direction that ascends log-likelihood."""
  def loss(p):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        linear_policy_logits(p, data.features), data.labels))
  return jax.tree_util.tree_map(jnp.negative, jax.grad(loss)(params))


def classification_robot(key: jax.Array | None = None, *, num_examples: int = 32, num_features: int = 4,
                         num_classes: int = 3, init_scale: float = 0.3) -> tuple[Problem, ClassificationData]:
  r"""The "classification robot": a linear softmax policy answers every example, reward 1 if correct.

  One sample :math:`x\in\{0..C-1\}^M` is the vector of answers to all M examples (an ``Independent``
  categorical over the data set); :math:`f(x) = \frac1M\sum_m \mathbb 1[x_m = y_m]` (accuracy, not
  differentiable) and :math:`J = \frac1M\sum_m\pi(y_m|s_m)`, whose gradient is
  :func:`expected_reward_gradient`. Params ``{"w": [F, C], "b": [C]}``.

  Returns:
    ``(problem, data)``; the two identities are :func:`policy_gradient_by_enumeration` ==
    :func:`expected_reward_gradient` and :func:`label_scored_gradient` == :func:`cross_entropy_gradient`.
  """
  key = jax.random.key(0) if key is None else validation.as_key(key)
  k_data, k_init = jax.random.split(key)
  data = make_classification_data(k_data, num_examples=num_examples, num_features=num_features,
                                  num_classes=num_classes)
  params = {"w": init_scale * jax.random.normal(k_init, (num_features, num_classes), jnp.float32),
            "b": jnp.zeros((num_classes,), jnp.float32)}

  def dist_fn(p):
    return distrax.Independent(distrax.Categorical(logits=linear_policy_logits(p, data.features)), 1)

  def f(answers):
    return jnp.mean((answers == data.labels).astype(jnp.float32))

  def expectation(p):
    probs = jax.nn.softmax(linear_policy_logits(p, data.features))
    return jnp.mean(jnp.take_along_axis(probs, data.labels[:, None], axis=-1))

  def true_grad(p):
    return expected_reward_gradient(p, data)

  return Problem("classification_robot", params, dist_fn, f, expectation, true_grad, False), data


def argmax_accuracy(params: Any, data: ClassificationData) -> jax.Array:
  r""":math:`\frac1M\sum_m \mathbb 1[\arg\max_y z_y(x_m) = y_m]` (ties go to the lowest index). Not differentiable."""
  logits = linear_policy_logits(params, data.features)
  return jnp.mean((jnp.argmax(logits, axis=-1) == data.labels).astype(logits.dtype))


def softmax_expected_reward(params: Any, data: ClassificationData, temperature: Any = 1.0) -> jax.Array:
  r""":math:`J_\tau = \frac1M\sum_m \mathrm{softmax}(z(x_m)/\tau)_{y_m}`; ``temperature`` may be traced."""
  validation.check_positive_scalar(temperature, "temperature")
  logits = linear_policy_logits(params, data.features) / temperature
  probs = jax.nn.softmax(logits)
  return jnp.mean(jnp.take_along_axis(probs, data.labels[:, None], axis=-1))


def softmax_expected_reward_gradient(params: Any, data: ClassificationData, temperature: Any = 1.0) -> Any:
  r"""The exact policy gradient :math:`\nabla_\theta J_\tau`, written by hand.

  :math:`\partial \pi_\tau(y|x)/\partial z = \pi_\tau(y|x)(e_y - \pi_\tau(\cdot|x))/\tau`, chained through
  :math:`z = x^\top W + b`: ``w`` gets :math:`X^\top D / M`, ``b`` gets :math:`\sum_m D_m / M` with
  :math:`D_m = \pi_\tau(y_m|x_m)(e_{y_m} - \pi_\tau(\cdot|x_m))/\tau`.
  """
  validation.check_positive_scalar(temperature, "temperature")
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
  if validation.is_concrete(sigma) and not float(np.asarray(sigma)) > 0:
    raise ValueError(f"`sigma` must be > 0, got {sigma!r}.")
  logits = linear_policy_logits(params, data.features)
  z_y = jnp.take_along_axis(logits, data.labels[:, None], axis=-1)[:, 0]
  z_o = jnp.take_along_axis(logits, 1 - data.labels[:, None], axis=-1)[:, 0]
  s = sigma * jnp.sqrt(jnp.sum(data.features ** 2, axis=-1) + 1.0)
  return jnp.mean(jstats.norm.cdf((z_y - z_o) / (jnp.sqrt(2.0) * s)))


def argmax_classifier(key: jax.Array | None = None, *, num_examples: int = 64, num_features: int = 4,
                      num_classes: int = 3, temperature: float = 1.0, init_scale: float = 0.3,
                      separation: float = 2.0) -> tuple[Problem, ClassificationData]:
  r"""A softmax classifier (Su, 2020): argmax accuracy and its softmax-expected-reward counterpart.

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
  validation.check_positive_scalar(temperature, "temperature")
  if not isinstance(init_scale, numbers.Real) or not init_scale >= 0:
    raise ValueError(f"`init_scale` must be a number >= 0, got {init_scale!r}.")
  key = jax.random.key(0) if key is None else validation.as_key(key)
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
