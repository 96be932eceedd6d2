"""Tests of the seed-003 argmax-accuracy classifier problem against closed forms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import pgjax
from pgjax import testing
from pgjax._src import problems as base_problems
from pgjax._src.problems import classification as pa
from tests.helpers import flat


@jax.jit
def _binary_params_and_data(key):
  """The two-class problem of the smoothed-accuracy tests (12 examples, 3 features), built in one program."""
  problem, data = pa.argmax_classifier(key, num_examples=12, num_classes=2, num_features=3, init_scale=0.5)
  return problem.params, data


def test_policy_gradient_closed_form_matches_autodiff_and_foundation(key):
  taus = np.array([0.3, 1.0, 3.0], np.float32)

  @jax.jit
  def gradients(key, taus):
    problem, data = pa.argmax_classifier(key, num_examples=16, num_classes=3)
    params = problem.params
    # one jit, vmapped over the (traced) temperature
    by_hand, auto = jax.vmap(lambda t: (
        pa.softmax_expected_reward_gradient(params, data, t),
        jax.grad(pa.softmax_expected_reward)(params, data, t)))(taus)
    return by_hand, auto, base_problems.expected_reward_gradient(params, data)

  by_hand, auto, ref = gradients(key, taus)
  for name in ("w", "b"):
    np.testing.assert_allclose(by_hand[name], auto[name], rtol=1e-5, atol=1e-7)
  # tau = 1 is the seed-000 classification robot's expected reward (an independent hand formula)
  ref = flat(ref)
  ours = flat(jax.tree_util.tree_map(lambda v: np.asarray(v)[1], by_hand))
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)
  # power control: the temperature matters
  hot = flat(jax.tree_util.tree_map(lambda v: np.asarray(v)[0], by_hand))
  assert not np.allclose(hot, ref, rtol=1e-2)


def test_zero_temperature_limit_is_argmax_accuracy(key):

  @jax.jit
  def accuracies(key):
    problem, data = pa.argmax_classifier(key, num_examples=64, num_classes=4, init_scale=1.0)
    logits = base_problems.linear_policy_logits(problem.params, data.features)
    top2 = jnp.sort(logits, axis=-1)[:, -2:]
    min_gap = jnp.min(top2[:, 1] - top2[:, 0])
    tau = min_gap / 30.0  # every softmax is within exp(-30) of one-hot
    return (pa.argmax_accuracy(problem.params, data), pa.softmax_expected_reward(problem.params, data, tau),
            pa.softmax_expected_reward(problem.params, data, 1.0))

  acc, cold, warm = (float(v) for v in accuracies(key))
  assert 0.0 < acc < 1.0
  np.testing.assert_allclose(cold, acc, atol=1e-6)
  assert abs(warm - acc) > 1e-2


def test_score_function_is_unbiased_for_the_softmax_policy_gradient(key):
  # The problem is built inside the traced programs (its data generation then compiles into them instead of op
  # by op); the same key gives the same problem in both.
  build = functools.partial(pa.argmax_classifier, key, num_examples=8, num_classes=3, temperature=0.5)

  def est(k, params):
    problem, _ = build()
    return pgjax.score_function(problem.f, problem.dist_fn, num_samples=4, baseline="leave_one_out")(k, params)

  @jax.jit
  def reference():
    problem, data = build()
    p = problem.params
    return p, problem.true_grad(p), problem.expectation(p), pa.softmax_expected_reward(p, data, 0.5)

  params, target, expectation, reference = reference()
  testing.assert_unbiased(est, params, key, target=target, num_replicates=4000, atol=1e-5, chunk_size=500)
  np.testing.assert_allclose(expectation, reference, rtol=1e-6)


def test_smoothed_accuracy_closed_form_binary(key):
  params, data = _binary_params_and_data(key)
  sigma = 0.4

  @jax.jit
  def closed_and_monte_carlo(params, data, k):
    vec, unravel = ravel_pytree(params)
    u = jax.random.normal(k, (40000, vec.shape[0]))
    accs = jax.vmap(lambda v: pa.argmax_accuracy(unravel(vec + sigma * v), data))(u)
    return (pa.smoothed_argmax_accuracy(params, data, sigma), jnp.mean(accs), jnp.std(accs) / np.sqrt(u.shape[0]),
            pa.argmax_accuracy(params, data))

  closed, mc, se, unsmoothed = (float(v) for v in closed_and_monte_carlo(params, data, key))
  assert abs(mc - closed) <= 5 * se, (mc, closed, se)
  # power control: the unsmoothed accuracy is far from the smoothed one at this sigma
  assert abs(mc - unsmoothed) > 5 * se


def test_zeroth_order_of_argmax_accuracy_is_unbiased_for_the_smoothed_gradient(key):
  params, data = _binary_params_and_data(key)
  sigma = 0.4
  target = jax.jit(jax.grad(pa.smoothed_argmax_accuracy))(params, data, sigma)
  est = pgjax.zeroth_order(functools.partial(pa.argmax_accuracy, data=data), num_directions=8, sigma=sigma,
                           scheme="antithetic")
  ok, report, stats = testing.check_unbiased(est, params, key, target=target, num_replicates=4000,
                                             atol=1e-5, chunk_size=500)
  assert ok, report
  ok_wrong, _, _ = testing.check_unbiased(est, params, key,
                                          target=jax.tree_util.tree_map(lambda t: 0.8 * np.asarray(t), target),
                                          num_replicates=4000, atol=1e-5, chunk_size=500)
  assert not ok_wrong  # power control


def test_bad_input(key):
  # A three-class linear classifier and data set (the checks fire before any computation).
  params = {"w": np.zeros((4, 3), np.float32), "b": np.zeros((3,), np.float32)}
  data = pa.ClassificationData(features=np.zeros((8, 4), np.float32), labels=np.zeros((8,), np.int32))
  with pytest.raises(ValueError, match="num_classes"):
    pa.smoothed_argmax_accuracy(params, data, 0.1)
  with pytest.raises(ValueError, match="temperature"):
    pa.argmax_classifier(key, temperature=0.0)
  with pytest.raises(ValueError, match="temperature"):
    pa.softmax_expected_reward(params, data, -1.0)
  with pytest.raises(ValueError, match="num_classes"):
    pa.argmax_classifier(key, num_classes=1)
