r"""Gradient estimation for a categorical variable from samples drawn without replacement.

The unordered set estimator (Kool, van Hoof & Welling 2020) of
:math:`\nabla_\theta\,\mathbb{E}_{x\sim p_\theta}[f(x)]` for one categorical variable with :math:`K`
categories draws :math:`k` *distinct* categories :math:`S = \{s_1..s_k\}` without replacement (Gumbel-top-k:
the :math:`k` largest of :math:`\log p_i + g_i`, :math:`g_i` standard Gumbel) and weighs each by the
probability that it was drawn first given the unordered set,

.. math::

   p(s)\,R(S, s) = P(s_1 = s \mid S), \qquad R(S, s) = \frac{p^{D\setminus\{s\}}(S\setminus\{s\})}{p(S)},

where :math:`p(S) = \sum_{\text{orderings } \pi}\prod_{i=1}^k \frac{p(s_{\pi_i})}{1-\sum_{j<i}p(s_{\pi_j})}` is
the probability of the unordered sample and :math:`p^{D\setminus A}` the distribution with the categories
:math:`A` removed and renormalised. It is the Rao-Blackwellisation of the single-sample REINFORCE estimator
given the set, so it is unbiased, and it never evaluates ``f`` twice at the same category: with peaked
distributions, where samples with replacement repeat, it spends every evaluation on a new category.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from pgjax._src import validation

__all__ = ("UnorderedSetAux", "unordered_set")

_MAX_SET_SIZE = 7   # the set probabilities sum over k! orderings


class UnorderedSetAux(NamedTuple):
  r"""Auxiliary output of :func:`unordered_set`.

  Attributes:
    samples: ``[k, *shape]`` the distinct sampled categories in the distribution's representation (indices for
      ``Categorical``, one-hot vectors for ``OneHotCategorical``), in the order drawn.
    values: ``[k]`` :math:`f(s)`.
    weights: ``[k]`` the final score-function weights :math:`w_s` (the gradient is
      :math:`\sum_s w_s\nabla\log p_\theta(s)`).
    set_weights: ``[k]`` :math:`p(s)R(S,s) = P(s_1 = s\mid S)`.
    log_set_probability: :math:`\log p(S)`.
    num_evaluations: evaluations of ``f``, ``k``.
    biased: always False.
  """
  samples: jax.Array
  values: jax.Array
  weights: jax.Array
  set_weights: jax.Array
  log_set_probability: jax.Array
  num_evaluations: int
  biased: bool


def _categorical(dist: Any, name: str = "dist_fn") -> tuple[jax.Array, bool, tuple[int, ...], Any]:
  """``(logits [K], one_hot, batch shape, sample dtype)`` of a single categorical variable."""
  base = dist
  while isinstance(base, distrax.Independent):
    base = base.distribution
  if not isinstance(base, (distrax.Categorical, distrax.OneHotCategorical)):
    raise TypeError(f"`{name}` must return a distrax.Categorical or distrax.OneHotCategorical (possibly "
                    f"inside distrax.Independent), got {type(dist).__name__}.")
  one_hot = isinstance(base, distrax.OneHotCategorical)
  batch = tuple(dist.batch_shape) + tuple(dist.event_shape)
  batch = batch[:-1] if one_hot else batch
  if math.prod(batch) != 1:
    raise ValueError(f"`{name}` must describe exactly one categorical variable for the unordered set "
                     f"estimator (samples without replacement of a product space are not supported); got a "
                     f"batch of shape {batch}.")
  logits = jnp.reshape(base.logits, (-1,))
  with jax.numpy_rank_promotion("allow"):   # distrax infers the dtype by tracing its own sampler
    dtype = base.dtype
  return logits, one_hot, batch, dtype


def _log_set_probabilities(log_w: jax.Array, log_out: jax.Array, subsets: np.ndarray) -> jax.Array:
  r""":math:`\log p(T)` for each subset :math:`T` (rows of ``subsets``, positions into ``log_w``), all of size m.

  With unnormalised weights :math:`w` of the members and :math:`w_{\text{out}}` the mass outside the sampled
  set, drawing the ordering :math:`\pi` of :math:`T` first has probability
  :math:`\prod_i w_{\pi_i} / (w_{\text{out}} + \sum_{j\ge i} w_{\pi_j})`; summed over the :math:`m!`
  orderings. The same formula with the removed categories left out of the domain gives
  :math:`p^{D\setminus A}(T)` (normalisation cancels).
  """
  n_sub, m = subsets.shape
  if m == 0:
    return jnp.zeros((n_sub,), log_w.dtype)
  perms = np.array(list(itertools.permutations(range(m))), dtype=np.int32)          # [m!, m]
  idx = subsets[:, perms]                                                            # [n_sub, m!, m]
  lw = log_w[idx]
  rest = jax.lax.cumlogsumexp(lw, axis=lw.ndim - 1, reverse=True)                           # sum_{j >= i}
  log_terms = jnp.sum(lw - jnp.logaddexp(log_out, rest), axis=-1)
  return jax.nn.logsumexp(log_terms, axis=-1)


def _set_weights(log_p: jax.Array, chosen: jax.Array, values: jax.Array, baseline: bool):
  r"""The weights :math:`w_s` of the unordered set estimator for the categories ``chosen`` ``[k]``.

  Returns ``(w [k], p(s)R(S,s) [k], log p(S))``; everything in log space.
  """
  k = chosen.shape[0]
  num_categories = log_p.shape[0]
  log_ps = log_p[chosen]                                                             # [k]
  outside = jnp.ones((num_categories,), bool).at[chosen].set(False)
  log_out = jax.nn.logsumexp(jnp.where(outside, log_p, -jnp.inf))
  full = np.arange(k, dtype=np.int32)[None, :]
  log_p_set = _log_set_probabilities(log_ps, log_out, full)[0]
  leave_one = np.array([[j for j in range(k) if j != i] for i in range(k)], dtype=np.int32).reshape(k, k - 1)
  log_p_minus = _log_set_probabilities(log_ps, log_out, leave_one)                   # [k]
  set_weights = jnp.exp(log_ps + log_p_minus - log_p_set)                            # p(s) R(S, s)
  if not baseline:
    return set_weights * values, set_weights, log_p_set
  # (1 - p(s)) = mass of every other category, computed without cancellation.
  others = ~jnp.eye(num_categories, dtype=bool)[chosen]                              # [k, K]
  log_1m_ps = jax.nn.logsumexp(jnp.where(others, log_p[None, :], -jnp.inf), axis=-1)
  pairs = [(i, j) for i in range(k) for j in range(k) if i != j]
  leave_two = np.array([[t for t in range(k) if t not in (i, j)] for i, j in pairs],
                       dtype=np.int32).reshape(len(pairs), k - 2)
  log_p_minus2 = _log_set_probabilities(log_ps, log_out, leave_two)                  # [k (k - 1)]
  rows = np.array([i for i, _ in pairs])
  cols = np.array([j for _, j in pairs])
  # (1 - p(s)) * mu_{-s}: the unordered set estimate of E[f] under p^{D \ s} from S \ {s}, times 1 - p(s).
  terms = jnp.exp(log_ps[cols] + log_p_minus2 - log_p_minus[rows]) * values[cols]
  loo = jnp.zeros((k,), values.dtype).at[rows].add(terms)
  weights = set_weights * (jnp.exp(log_1m_ps) * values - loo)
  return weights, set_weights, log_p_set


def unordered_set(f: Callable[[Any], jax.Array], dist_fn: Callable[[Any], Any], *, num_samples: int,
                  baseline: bool = True) -> Callable[..., tuple[Any, UnorderedSetAux]]:
  r"""Builds the unordered set estimator for one categorical variable (samples without replacement).

  With :math:`S` the set of :math:`k` = ``num_samples`` distinct categories drawn without replacement
  (module docstring), the unordered set estimator of Kool, van Hoof & Welling (2020) without and with its
  built-in baseline:

  .. math::

     \hat g = \sum_{s\in S} p(s)R(S,s)\,\nabla_\theta\log p_\theta(s)\,f(s)
     \qquad\text{or}\qquad
     \hat g = \sum_{s\in S} p(s)R(S,s)\,\nabla_\theta\log p_\theta(s)
       \Big[(1-p(s))f(s) - \sum_{s'\in S\setminus\{s\}} p(s')\,R^{D\setminus\{s\}}(S, s')\,f(s')\Big],

  with :math:`R^{D\setminus\{s\}}(S,s') = p^{D\setminus\{s,s'\}}(S\setminus\{s,s'\}) /
  p^{D\setminus\{s\}}(S\setminus\{s\})`. The bracket is :math:`(1-p(s))(f(s) - \hat\mu_{-s})`, where
  :math:`\hat\mu_{-s}` is the unordered set estimate of :math:`\mathbb{E}[f]` under :math:`p` with :math:`s`
  removed, built from the other :math:`k-1` samples; since
  :math:`\sum_s \nabla p(s)(1-p(s))(f(s) - \mu_{-s}) = \nabla J` exactly, both forms are **unbiased** for every
  :math:`k`. With :math:`k = K` both return the exact gradient. ``f`` is evaluated once per distinct
  category: ``aux.num_evaluations = k``. The set probabilities sum over the :math:`k!` orderings, so
  :math:`k \le 7`.

  Args:
    f: ``f(x) -> scalar`` for one sample in the distribution's representation (an index for
      ``distrax.Categorical``, a one-hot vector for ``distrax.OneHotCategorical``); never differentiated.
    dist_fn: ``params -> distrax.Categorical`` or ``distrax.OneHotCategorical`` describing **one** variable
      (batch shape ``()`` or of size 1, possibly inside ``distrax.Independent``).
    num_samples: :math:`k`, static; :math:`1 \le k \le \min(K, 7)`, and :math:`k \ge 2` with the baseline.
    baseline: use the built-in baseline (static).

  Returns:
    ``estimator(key, params) -> (grads, UnorderedSetAux)``; ``grads`` has ``params``' structure and dtypes.

  References:
    W. Kool, H. van Hoof, M. Welling, "Estimating gradients for discrete random variables by sampling without
    replacement", ICLR 2020.
    W. Kool, H. van Hoof, M. Welling, "Stochastic beams and where to find them: the Gumbel-top-k trick for
    sampling sequences without replacement", ICML 2019.
  """
  validation.check_callable(f, "f")
  validation.check_callable(dist_fn, "dist_fn")
  num_samples = validation.check_positive_int(num_samples, "num_samples")
  if not isinstance(baseline, bool):
    raise TypeError(f"`baseline` must be a bool, got {baseline!r}.")
  if baseline and num_samples < 2:
    raise ValueError("`num_samples` must be >= 2 with `baseline=True` (the baseline for each sample is built "
                     f"from the others), got {num_samples}.")
  if num_samples > _MAX_SET_SIZE:
    raise ValueError(f"`num_samples` must be <= {_MAX_SET_SIZE} (the set probabilities sum over k! "
                     f"orderings), got {num_samples}.")

  def estimator(key, params):
    key = validation.as_key(key)
    validation.check_float_tree(params, "params")
    logits, one_hot, batch, dtype = _categorical(dist_fn(params))
    num_categories = logits.shape[0]
    if num_samples > num_categories:
      raise ValueError(f"`num_samples` ({num_samples}) must be <= the number of categories ({num_categories}).")
    log_p = jax.lax.stop_gradient(jax.nn.log_softmax(logits))
    perturbed = log_p + jax.random.gumbel(key, log_p.shape, log_p.dtype)
    _, chosen = jax.lax.top_k(perturbed, num_samples)                                # in the order drawn
    if one_hot:
      samples = jnp.reshape(jax.nn.one_hot(chosen, num_categories, dtype=dtype),
                            (num_samples,) + batch + (num_categories,))
    else:
      samples = jnp.reshape(chosen.astype(dtype), (num_samples,) + batch)
    values = jnp.asarray(jax.vmap(f)(samples))
    if values.shape != (num_samples,):
      raise ValueError(f"`f` must return a scalar for each sample; got shape {values.shape[1:]} per sample.")
    values = jax.lax.stop_gradient(values.astype(log_p.dtype))
    weights, set_weights, log_p_set = _set_weights(log_p, chosen, values, baseline)
    weights = jax.lax.stop_gradient(weights)

    def surrogate(p):
      lp = jax.nn.log_softmax(_categorical(dist_fn(p))[0])
      return jnp.sum(weights * lp[chosen])

    grads = jax.grad(surrogate)(params)
    grads = jax.tree_util.tree_map(lambda g, p: g.astype(jnp.asarray(p).dtype), grads, params)
    return grads, UnorderedSetAux(samples, values, weights, jax.lax.stop_gradient(set_weights),
                                  jax.lax.stop_gradient(log_p_set), num_samples, False)

  return estimator
