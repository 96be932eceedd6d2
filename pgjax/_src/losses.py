r"""The score-function surrogate ("pseudo-loss") on given samples."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def score_function_surrogate(log_probs: ArrayLike, weights: ArrayLike) -> jax.Array:
  r"""Pseudo-loss whose gradient is minus the score-function gradient estimate.

  .. math::

     L(\theta) = -\frac{1}{N} \sum_{i=1}^N \operatorname{sg}(w_i)\, \log p_\theta(x_i),
     \qquad -\nabla_\theta L = \frac1N \sum_i w_i \nabla_\theta \log p_\theta(x_i)

  where :math:`w_i = f(x_i) - b_i` and sg is ``stop_gradient``. Minimising ``L`` ascends
  :math:`\mathbb{E}[f]`; to descend a cost, pass ``weights = -(cost - baseline)``. The samples :math:`x_i` must
  enter ``log_probs`` without a gradient path (draw them outside the differentiated function or wrap them in
  ``stop_gradient``): the estimator is correct only when autodiff does not see how the samples depend on
  :math:`\theta` (seed 003's comments; CS285 lecture 5).

  Args:
    log_probs: ``[N, ...]`` log-probabilities :math:`\log p_\theta(x_i)` (any shape; all entries averaged).
    weights: same shape as ``log_probs``; held constant.

  Returns:
    The scalar loss (to minimise).
  """
  log_probs = jnp.asarray(log_probs)
  weights = jnp.asarray(weights)
  if log_probs.shape != weights.shape:
    raise ValueError(f"`log_probs` and `weights` must have the same shape, got {log_probs.shape} and "
                     f"{weights.shape}.")
  chex.assert_type([log_probs, weights], float)
  return -jnp.mean(jax.lax.stop_gradient(weights) * log_probs)
