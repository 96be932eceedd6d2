"""Problems: hand-written true gradients against enumeration / autodiff; the SPEC 1.2 identities."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pgjax
from pgjax import problems as P


def test_spec_1_2_policy_gradient_identity():
  """E_{a~pi}[r grad log pi(a|s)] = grad pi(y|s) (the exact PG of the expected accuracy), to 1e-6."""

  @jax.jit
  def gradients(key):
    prob, data = P.classification_robot(key, num_examples=16, num_features=5, num_classes=4)
    lhs = P.policy_gradient_by_enumeration(prob.params, data)

    # grad pi(y|s) by autodiff of the softmax probability of the label (independent of the hand formula).
    def mean_p_label(p):
      probs = jax.nn.softmax(P.linear_policy_logits(p, data.features))
      return jnp.mean(probs[jnp.arange(data.labels.shape[0]), data.labels])
    return lhs, jax.grad(mean_p_label)(prob.params), P.expected_reward_gradient(prob.params, data)

  lhs, autodiff, hand = gradients(jax.random.key(1))
  chex.assert_trees_all_close(lhs, autodiff, atol=1e-6)
  chex.assert_trees_all_close(lhs, hand, atol=1e-6)


def test_spec_1_2_cross_entropy_identity():
  """sum_a r(s,a) grad log pi(a|s) = grad log pi(y|s) = -grad CE, to 1e-6."""

  @jax.jit
  def gradients(key):
    prob, data = P.classification_robot(key, num_examples=16, num_features=5, num_classes=4)
    lhs = P.label_scored_gradient(prob.params, data)

    def ce(p):
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
          P.linear_policy_logits(p, data.features), data.labels))
    minus_grad_ce = jax.tree_util.tree_map(jnp.negative, jax.grad(ce)(prob.params))
    return (lhs, minus_grad_ce, P.cross_entropy_gradient(prob.params, data),
            P.policy_gradient_by_enumeration(prob.params, data))

  lhs, minus_grad_ce, ce_grad, pg = gradients(jax.random.key(2))
  chex.assert_trees_all_close(lhs, minus_grad_ce, atol=1e-6)
  chex.assert_trees_all_close(lhs, ce_grad, atol=1e-6)
  # And the two gradients differ in general: the PG weighs each example by pi(y|s).
  diff = jax.tree_util.tree_map(lambda a, b: np.max(np.abs(np.asarray(a) - np.asarray(b))), lhs, pg)
  assert max(jax.tree_util.tree_leaves(diff)) > 1e-3


def test_classification_robot_true_grad_against_enumeration():

  @jax.jit
  def gradients(key):
    prob, _ = P.classification_robot(key, num_examples=4, num_features=2, num_classes=3)
    g, aux = pgjax.exact_gradient(prob.f, prob.dist_fn)(None, prob.params)  # 3**4 joint answers
    return g, aux.value, prob.true_grad(prob.params), prob.expectation(prob.params)

  g, value, true_grad, expectation = gradients(jax.random.key(3))
  chex.assert_trees_all_close(g, true_grad, atol=1e-6)
  np.testing.assert_allclose(value, expectation, rtol=1e-6)


@pytest.mark.parametrize("make", [P.categorical_bandit, lambda: P.bernoulli_quadratic(4)])
def test_discrete_true_grads_against_enumeration(make):

  @jax.jit
  def gradients():
    prob = make()
    params = jax.tree_util.tree_map(lambda x: x + 0.3 * jnp.arange(x.size).reshape(x.shape), prob.params)
    g, aux = pgjax.exact_gradient(prob.f, prob.dist_fn)(None, params)
    return g, aux.value, prob.true_grad(params), prob.expectation(params)

  g, value, true_grad, expectation = gradients()
  chex.assert_trees_all_close(g, true_grad, atol=1e-6)
  np.testing.assert_allclose(value, expectation, rtol=1e-6)


def test_categorical_quadratic_true_grad_against_enumeration():
  """Two one-hot categorical variables with 3 categories: closed form against the 9 joint outcomes."""
  eye = np.eye(3, dtype=np.float32)
  support = np.array([[eye[i], eye[j]] for i in range(3) for j in range(3)])

  @jax.jit
  def gradients(support, key):
    prob = P.categorical_quadratic(2, 3, logits=[[0.3, -1.0, 0.5], [2.0, 0.0, -0.7]], target=[0.1, 0.9, 0.4])
    g, aux = pgjax.exact_gradient(prob.f, prob.dist_fn, support=support)(None, prob.params)
    x = prob.dist_fn(prob.params).sample(seed=key)
    return g, aux.value, prob.true_grad(prob.params), prob.expectation(prob.params), x

  g, value, true_grad, expectation, x = gradients(support, jax.random.key(0))
  chex.assert_trees_all_close(g, true_grad, atol=1e-6)
  np.testing.assert_allclose(value, expectation, rtol=1e-6)
  # Samples are float one-hot vectors, so the relaxed estimators can evaluate f on the simplex.
  assert x.dtype == jnp.float32 and x.shape == (2, 3)
  np.testing.assert_array_equal(np.sum(np.asarray(x), axis=-1), [1.0, 1.0])


@pytest.mark.parametrize("make", [P.gaussian_quadratic, P.gaussian_step])
def test_gaussian_true_grads_against_autodiff_of_expectation(make):

  @jax.jit
  def gradients():
    prob = make(3, mean=[0.2, -0.4, 1.0], log_std=[0.1, -0.3, 0.5])
    return prob.true_grad(prob.params), jax.grad(prob.expectation)(prob.params)

  true_grad, autodiff = gradients()
  chex.assert_trees_all_close(true_grad, autodiff, atol=1e-6)


def test_classification_data_is_learnable_and_deterministic():
  make = jax.jit(functools.partial(P.make_classification_data, num_examples=200))
  d1 = make(jax.random.key(0))
  d2 = make(jax.random.key(0))
  chex.assert_trees_all_equal(d1, d2)
  assert set(np.unique(d1.labels)) == {0, 1, 2}


@pytest.mark.parametrize("call, exc, match", [
    (lambda: P.gaussian_quadratic(0), ValueError, "dim"),
    (lambda: P.gaussian_quadratic(3, mean=[0.0, 1.0]), ValueError, "mean"),
    (lambda: P.categorical_bandit((1.0,)), ValueError, "rewards"),
    (lambda: P.categorical_bandit((1.0, 2.0), logits=[0.0, 0.0, 0.0]), ValueError, "logits"),
    (lambda: P.bernoulli_quadratic(3, target=[0.0, 1.0]), ValueError, "target"),
    (lambda: P.categorical_quadratic(2, 3, logits=[0.0, 1.0, 2.0]), ValueError, "logits"),
    (lambda: P.categorical_quadratic(1, 3, target=[0.0, 1.0]), ValueError, "target"),
    (lambda: P.categorical_quadratic(1, 1), ValueError, "num_categories"),
    (lambda: P.make_classification_data(jax.random.key(0), num_classes=1), ValueError, "num_classes"),
])
def test_bad_input(call, exc, match):
  with pytest.raises(exc, match=match):
    call()
