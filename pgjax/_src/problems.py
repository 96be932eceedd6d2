r"""Problems with a known true gradient, for tests, sweeps and figures.

Each constructor returns a :class:`Problem`: initial ``params``, ``dist_fn(params)`` (a distrax
distribution), the per-sample objective ``f(x)``, the closed-form ``expectation(params)`` =
:math:`J(\theta)=\mathbb{E}_{p_\theta}[f]` and ``true_grad(params)`` = :math:`\nabla_\theta J`, both written
out by hand (not by autodiff of the estimator), so tests compare estimators against independent formulas.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import jax.scipy.stats as jstats
import optax
from jax.typing import ArrayLike

from pgjax._src import utils


class Problem(NamedTuple):
  """A gradient-estimation problem with its closed-form answer.

  Attributes:
    name: short identifier.
    params: the parameters at which to estimate (a pytree).
    dist_fn: ``params -> distribution`` (distrax interface).
    f: objective of one sample (not differentiable in general).
    expectation: ``params -> J(params)`` in closed form.
    true_grad: ``params -> grad J(params)`` in closed form (same pytree as ``params``).
    differentiable: whether ``f`` is differentiable (so :func:`pgjax.pathwise` applies).
  """
  name: str
  params: Any
  dist_fn: Callable[[Any], Any]
  f: Callable[[Any], jax.Array]
  expectation: Callable[[Any], jax.Array]
  true_grad: Callable[[Any], Any]
  differentiable: bool


def _gaussian(params):
  return distrax.MultivariateNormalDiag(loc=params["mean"], scale_diag=jnp.exp(params["log_std"]))


def _gaussian_params(dim, mean, log_std):
  mean = jnp.zeros(dim) if mean is None else jnp.asarray(mean, jnp.float32)
  log_std = jnp.zeros(dim) if log_std is None else jnp.broadcast_to(jnp.asarray(log_std, jnp.float32), (dim,))
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
  dim = utils.check_positive_int(dim, "dim")
  params = _gaussian_params(dim, mean, log_std)
  c = (jnp.arange(1, dim + 1, dtype=jnp.float32) / dim) if target is None else jnp.asarray(target, jnp.float32)

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
  dim = utils.check_positive_int(dim, "dim")
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
  (so all samples have similar values and a baseline matters a lot).
  """
  dim = utils.check_positive_int(dim, "dim")
  params = jnp.zeros(dim, jnp.float32) if logits is None else jnp.asarray(logits, jnp.float32)
  t = jnp.full((dim,), 0.45, jnp.float32) if target is None else jnp.asarray(target, jnp.float32)
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


class ClassificationData(NamedTuple):
  """A synthetic classification data set: ``features [M, F]`` and integer ``labels [M]``."""
  features: jax.Array
  labels: jax.Array


def make_classification_data(key: jax.Array, *, num_examples: int = 64, num_features: int = 4,
                             num_classes: int = 3, separation: float = 2.0) -> ClassificationData:
  """Gaussian blobs: class ``c`` has a random centre ``separation * N(0, I)`` and unit covariance."""
  num_examples = utils.check_positive_int(num_examples, "num_examples")
  num_features = utils.check_positive_int(num_features, "num_features")
  num_classes = utils.check_positive_int(num_classes, "num_classes", minimum=2)
  k_label, k_centre, k_noise = jax.random.split(utils.as_key(key), 3)
  labels = jax.random.randint(k_label, (num_examples,), 0, num_classes)
  centres = separation * jax.random.normal(k_centre, (num_classes, num_features))
  features = centres[labels] + jax.random.normal(k_noise, (num_examples, num_features))
  return ClassificationData(features.astype(jnp.float32), labels.astype(jnp.int32))


def linear_policy_logits(params: Any, features: jax.Array) -> jax.Array:
  """Logits ``features @ params["w"] + params["b"]`` of the linear softmax classifier, ``[M, C]``."""
  return features @ params["w"] + params["b"]


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
  actions (SPEC 1.2, first identity); with :math:`w_m(a) = r(s_m, a)` (every action scored by its label, not
  sampled) it is the label-scored gradient, which equals the negative cross-entropy gradient (second identity).
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
  r"""The seed-000 "classification robot": a linear softmax policy answers every example, reward 1 if correct.

  One sample :math:`x\in\{0..C-1\}^M` is the vector of answers to all M examples (an ``Independent``
  categorical over the data set); :math:`f(x) = \frac1M\sum_m \mathbb 1[x_m = y_m]` (accuracy, not
  differentiable) and :math:`J = \frac1M\sum_m\pi(y_m|s_m)`, whose gradient is
  :func:`expected_reward_gradient`. Params ``{"w": [F, C], "b": [C]}``.

  Returns:
    ``(problem, data)``; the SPEC 1.2 identities are :func:`policy_gradient_by_enumeration` ==
    :func:`expected_reward_gradient` and :func:`label_scored_gradient` == :func:`cross_entropy_gradient`.
  """
  key = jax.random.key(0) if key is None else utils.as_key(key)
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
