"""The unordered set estimator: exact expectation over every set, unbiased with power, variance below RLOO."""

import functools
import itertools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax import problems as P
from pgjax._src import without_replacement as W
from pgjax.testing import check_estimator
from tests.helpers import assert_unbiased_with_power
from tests.helpers import scale_tree

FAST_COMPILE = {"xla_backend_optimization_level": 0}
K = 6
PROB = P.categorical_quadratic(1, K, logits=np.array([[2.0, 1.0, 0.5, 0.0, -1.0, -2.0]], np.float32),
                               target=np.linspace(0.0, 1.0, K, dtype=np.float32))


@functools.cache
def _truth():
  """The exact gradient (closed form), computed once in one jitted program, as numpy."""
  return np.asarray(jax.jit(PROB.true_grad)(PROB.params))


@functools.cache
def _values():
  """f at each of the K one-hot categories, [K], in one jitted program."""
  return np.asarray(jax.jit(jax.vmap(PROB.f))(np.eye(K, dtype=np.float32)[:, None, :]))


def _np_set_probability(p, s):
  """P(unordered set s) by summing over the orderings, in NumPy float64."""
  total = 0.0
  for order in itertools.permutations(s):
    prob, used = 1.0, 0.0
    for c in order:
      prob *= p[c] / (1.0 - used)
      used += p[c]
    total += prob
  return total


def test_set_probability_matches_brute_force():
  logits = np.asarray(PROB.params[0], np.float64)
  p = np.exp(logits - logits.max())
  p = p / p.sum()
  log_p = np.log(p.astype(np.float32))
  set_weights = jax.jit(W._set_weights, static_argnums=3)
  for s in [(0, 1), (5, 2), (2, 5, 3), (1, 4, 0)]:
    chosen = np.array(s, np.int32)
    _, _, log_ps = set_weights(log_p, chosen, np.zeros(len(s), np.float32), False)
    np.testing.assert_allclose(np.exp(float(log_ps)), _np_set_probability(p, s), rtol=1e-5)


@pytest.mark.parametrize("k, baseline", [(2, False), (2, True), (3, True), (4, True)])
def test_expectation_over_every_set_is_the_exact_gradient(k, baseline):
  """Sum over all C(K, k) sets of p(S) * estimate(S) equals the gradient to float precision (unbiasedness)."""
  sets = np.array(list(itertools.combinations(range(K), k)), np.int32)

  @jax.jit  # every set in one program
  def every_set(logits, sets):
    log_p = jax.nn.log_softmax(logits)
    values = jax.vmap(PROB.f)(jax.nn.one_hot(jnp.arange(K), K)[:, None, :])

    def one(chosen):
      w, _, log_ps = W._set_weights(log_p, chosen, values[chosen], baseline)
      # grad_logits log p(s) = e_s - p.
      g = jnp.sum(w[:, None] * (jax.nn.one_hot(chosen, K) - jnp.exp(log_p)[None, :]), axis=0)
      return jnp.exp(log_ps), g

    probs, grads = jax.vmap(one)(sets)
    return jnp.sum(probs), jnp.sum(probs[:, None] * grads, axis=0)

  total, expectation = every_set(PROB.params[0], sets)
  np.testing.assert_allclose(total, 1.0, rtol=1e-5)
  np.testing.assert_allclose(expectation, _truth()[0], atol=2e-6)


@pytest.mark.parametrize("baseline", [False, True])
def test_every_category_gives_the_exact_gradient(baseline):
  est = W.unordered_set(PROB.f, PROB.dist_fn, num_samples=K if K <= 7 else 7, baseline=baseline)
  g, aux = jax.jit(est)(jax.random.key(0), PROB.params)
  np.testing.assert_allclose(g, _truth(), atol=1e-6)
  np.testing.assert_allclose(aux.log_set_probability, 0.0, atol=1e-6)
  assert sorted(np.argmax(np.asarray(aux.samples)[:, 0], -1).tolist()) == list(range(K))


def test_unbiased_with_power():
  est = W.unordered_set(PROB.f, PROB.dist_fn, num_samples=3)
  assert_unbiased_with_power(est, PROB.params, jax.random.key(1), target=_truth(),
                             wrong_target=scale_tree(_truth(), 1.1), num_replicates=2000)


def test_variance_below_rloo_at_equal_evaluations():
  """k = 3 distinct categories against RLOO with 3 samples with replacement: less than half the variance."""
  us = W.unordered_set(PROB.f, PROB.dist_fn, num_samples=3)
  rloo = pgjax.score_function(PROB.f, PROB.dist_fn, num_samples=3, baseline="leave_one_out")
  _, aux = jax.jit(us)(jax.random.key(0), PROB.params)
  assert int(aux.num_evaluations) == 3
  pgjax.testing.assert_variance_less(us, rloo, PROB.params, jax.random.key(2), num_replicates=2000, ratio=0.5)


def test_index_and_one_hot_representations_agree():
  """The same key gives the same estimate whether the variable is a Categorical index or a one-hot vector."""
  logits = PROB.params
  values = jnp.asarray(_values())
  est_index = W.unordered_set(lambda i: values[i], lambda p: distrax.Categorical(logits=p[0]), num_samples=3)
  est_onehot = W.unordered_set(PROB.f, PROB.dist_fn, num_samples=3)
  g1, a1 = jax.jit(est_index)(jax.random.key(3), logits)
  g2, a2 = jax.jit(est_onehot)(jax.random.key(3), logits)
  np.testing.assert_allclose(g1, g2, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(a1.samples, np.argmax(np.asarray(a2.samples)[:, 0], -1))
  assert a1.samples.dtype == jnp.int32 and a2.samples.dtype == jnp.float32


def test_conformance():
  w = np.array([1.0, -0.5, 0.25, 2.0], np.float32)
  r = jnp.asarray(np.array([0.3, -1.0, 0.7, 0.1], np.float32))

  def dist_fn(p):
    return distrax.Categorical(logits=p["a"] * w + p["c"])

  def f(i):
    return r[i]

  params = {"a": jnp.asarray(0.8), "c": jnp.array([0.1, -0.3, 0.5, 0.0])}
  check_estimator(W.unordered_set(f, dist_fn, num_samples=2), params, compiler_options=FAST_COMPILE,
                  bad_arguments=[(lambda: W.unordered_set(f, dist_fn, num_samples=0), "num_samples")])


@pytest.mark.parametrize("call, exc, match", [
    (lambda: W.unordered_set(PROB.f, PROB.dist_fn, num_samples=1), ValueError, "num_samples"),
    (lambda: W.unordered_set(PROB.f, PROB.dist_fn, num_samples=8), ValueError, "num_samples"),
    (lambda: W.unordered_set(PROB.f, PROB.dist_fn, num_samples=2, baseline="yes"), TypeError, "baseline"),
    (lambda: W.unordered_set(PROB.f, PROB.dist_fn, num_samples=7)(jax.random.key(0), PROB.params), ValueError,
     "num_samples"),
    (lambda: W.unordered_set(PROB.f, lambda p: distrax.Bernoulli(logits=p), num_samples=2)(
        jax.random.key(0), PROB.params), TypeError, "dist_fn"),
    (lambda: W.unordered_set(PROB.f, P.categorical_quadratic(2, 3).dist_fn, num_samples=2)(
        jax.random.key(0), P.categorical_quadratic(2, 3).params), ValueError, "one categorical"),
    (lambda: W.unordered_set(PROB.f, PROB.dist_fn, num_samples=2)(jax.random.key(0), PROB.params.astype(int)),
     TypeError, "params"),
])
def test_bad_input(call, exc, match):
  with pytest.raises(exc, match=match):
    call()


def test_extreme_logits_give_finite_estimates():
  prob = P.categorical_quadratic(1, 5, logits=np.array([[-60.0, 60.0, 0.0, 5.0, -5.0]], np.float32))
  est = W.unordered_set(prob.f, prob.dist_fn, num_samples=4)
  g, aux = jax.jit(lambda key: jax.vmap(lambda k: est(k, prob.params))(jax.random.split(key, 32)))(
      jax.random.key(0))
  assert np.all(np.isfinite(np.asarray(g))) and np.all(np.isfinite(np.asarray(aux.weights)))
