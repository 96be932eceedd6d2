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


def test_policy_gradient_closed_form_matches_autodiff_and_foundation(key):
  problem, data = pa.argmax_classifier(key, num_examples=16, num_classes=3)
  params = problem.params
  taus = jnp.array([0.3, 1.0, 3.0])
  # one jit, vmapped over the (traced) temperature
  by_hand, auto = jax.jit(jax.vmap(lambda t: (
      pa.softmax_expected_reward_gradient(params, data, t),
      jax.grad(pa.softmax_expected_reward)(params, data, t))))(taus)
  for name in ("w", "b"):
    np.testing.assert_allclose(by_hand[name], auto[name], rtol=1e-5, atol=1e-7)
  # tau = 1 is the seed-000 classification robot's expected reward (an independent hand formula)
  ref = ravel_pytree(jax.jit(base_problems.expected_reward_gradient)(params, data))[0]
  ours = ravel_pytree(jax.tree_util.tree_map(lambda v: v[1], by_hand))[0]
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)
  # power control: the temperature matters
  hot = ravel_pytree(jax.tree_util.tree_map(lambda v: v[0], by_hand))[0]
  assert not np.allclose(hot, ref, rtol=1e-2)


def test_zero_temperature_limit_is_argmax_accuracy(key):
  problem, data = pa.argmax_classifier(key, num_examples=64, num_classes=4, init_scale=1.0)
  acc = float(pa.argmax_accuracy(problem.params, data))
  assert 0.0 < acc < 1.0
  logits = base_problems.linear_policy_logits(problem.params, data.features)
  top2 = jnp.sort(logits, axis=-1)[:, -2:]
  min_gap = float(jnp.min(top2[:, 1] - top2[:, 0]))
  tau = min_gap / 30.0  # every softmax is within exp(-30) of one-hot
  np.testing.assert_allclose(pa.softmax_expected_reward(problem.params, data, tau), acc, atol=1e-6)
  assert abs(float(pa.softmax_expected_reward(problem.params, data, 1.0)) - acc) > 1e-2


def test_score_function_is_unbiased_for_the_softmax_policy_gradient(key):
  problem, _ = pa.argmax_classifier(key, num_examples=8, num_classes=3, temperature=0.5)
  est = pgjax.score_function(problem.f, problem.dist_fn, num_samples=4, baseline="leave_one_out")
  target = problem.true_grad(problem.params)
  testing.assert_unbiased(est, problem.params, key, target=target, num_replicates=4000, atol=1e-5,
                          chunk_size=500)
  np.testing.assert_allclose(problem.expectation(problem.params),
                             pa.softmax_expected_reward(problem.params, _, 0.5), rtol=1e-6)


def test_smoothed_accuracy_closed_form_binary(key):
  problem, data = pa.argmax_classifier(key, num_examples=12, num_classes=2, num_features=3, init_scale=0.5)
  params, sigma = problem.params, 0.4
  closed = float(pa.smoothed_argmax_accuracy(params, data, sigma))
  flat, unravel = ravel_pytree(params)

  @jax.jit
  def monte_carlo(k):
    u = jax.random.normal(k, (40000, flat.shape[0]))
    accs = jax.vmap(lambda v: pa.argmax_accuracy(unravel(flat + sigma * v), data))(u)
    return jnp.mean(accs), jnp.std(accs) / np.sqrt(u.shape[0])

  mc, se = (float(v) for v in monte_carlo(key))
  assert abs(mc - closed) <= 5 * se, (mc, closed, se)
  # power control: the unsmoothed accuracy is far from the smoothed one at this sigma
  assert abs(mc - float(pa.argmax_accuracy(params, data))) > 5 * se


def test_zeroth_order_of_argmax_accuracy_is_unbiased_for_the_smoothed_gradient(key):
  problem, data = pa.argmax_classifier(key, num_examples=12, num_classes=2, num_features=3, init_scale=0.5)
  sigma = 0.4
  target = jax.grad(pa.smoothed_argmax_accuracy)(problem.params, data, sigma)
  est = pgjax.zeroth_order(functools.partial(pa.argmax_accuracy, data=data), num_directions=8, sigma=sigma,
                           scheme="antithetic")
  ok, report, stats = testing.check_unbiased(est, problem.params, key, target=target, num_replicates=4000,
                                             atol=1e-5, chunk_size=500)
  assert ok, report
  ok_wrong, _, _ = testing.check_unbiased(est, problem.params, key,
                                          target=jax.tree_util.tree_map(lambda t: 0.8 * t, target),
                                          num_replicates=4000, atol=1e-5, chunk_size=500)
  assert not ok_wrong  # power control


def test_bad_input(key):
  problem, data = pa.argmax_classifier(key, num_classes=3)
  with pytest.raises(ValueError, match="num_classes"):
    pa.smoothed_argmax_accuracy(problem.params, data, 0.1)
  with pytest.raises(ValueError, match="temperature"):
    pa.argmax_classifier(key, temperature=0.0)
  with pytest.raises(ValueError, match="temperature"):
    pa.softmax_expected_reward(problem.params, data, -1.0)
  with pytest.raises(ValueError, match="num_classes"):
    pa.argmax_classifier(key, num_classes=1)
