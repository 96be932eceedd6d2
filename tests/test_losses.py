"""score_function_surrogate against hand-computed gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax


def test_surrogate_gradient_hand_computed():
  # Categorical with logits z, samples a = [0, 2, 2], weights w = [1, -2, 0.5].
  # d/dz log softmax(z)[a] = e_a - p, so d/dz L = -(1/3) sum_i w_i (e_{a_i} - p).
  z = jnp.array([0.0, jnp.log(2.0), jnp.log(3.0)])       # p = [1, 2, 3] / 6
  a = jnp.array([0, 2, 2])
  w = jnp.array([1.0, -2.0, 0.5])

  def loss(z):
    return pgjax.score_function_surrogate(jax.nn.log_softmax(z)[a], w)

  p = np.array([1.0, 2.0, 3.0]) / 6
  e = np.eye(3)[np.array([0, 2, 2])]
  want = -np.mean(np.array([1.0, -2.0, 0.5])[:, None] * (e - p), axis=0)
  np.testing.assert_allclose(jax.grad(loss)(z), want, rtol=1e-6, atol=1e-7)
  # Value: -mean(w * log p_a).
  np.testing.assert_allclose(loss(z), -np.mean(np.array([1.0, -2.0, 0.5]) * np.log(p[[0, 2, 2]])), rtol=1e-6)


def test_weights_are_held_constant():
  lp = jnp.array([-1.0, -2.0])
  g = jax.grad(lambda w: pgjax.score_function_surrogate(lp, w))(jnp.array([1.0, 1.0]))
  np.testing.assert_array_equal(g, [0.0, 0.0])


def test_minus_surrogate_gradient_equals_score_function_estimate(key):
  """The estimator's gradient is -grad(surrogate) evaluated on its own samples and weights."""
  from pgjax import problems as P
  prob = P.categorical_bandit()
  est = pgjax.score_function(prob.f, prob.dist_fn, num_samples=6, baseline="leave_one_out")
  g, aux = est(key, prob.params)
  surrogate_grad = jax.grad(lambda z: pgjax.score_function_surrogate(
      prob.dist_fn(z).log_prob(aux.samples), aux.values - aux.baselines))(prob.params)
  np.testing.assert_allclose(g, -surrogate_grad, rtol=1e-5, atol=1e-7)


def test_shape_mismatch_raises():
  with pytest.raises(ValueError, match="log_probs"):
    pgjax.score_function_surrogate(jnp.zeros(3), jnp.zeros(4))
