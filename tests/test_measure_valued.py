"""Measure-valued gradients: the E[x^2] closed forms (mean and variance, coupled and not), unbiasedness on
Gaussian, Bernoulli and categorical toys against closed forms / exact enumeration, exactness for one variable."""

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax._src.testing import check_estimator
from tests.helpers import assert_unbiased_with_power, scale_tree

MU, SIGMA = 0.7, 1.3


def _closed_form_variances(mu, sigma):
  """Single-sample variances of (g_mu, g_sigma) for f(x) = x^2 under N(mu, sigma^2) (derived in the docstring)."""
  pi = math.pi
  return {
      True: (4 * (4 - pi) / pi * mu ** 2, 4 * mu ** 2 + 4 * sigma ** 2),
      False: ((2 * (4 - pi) * mu ** 2 + 4 * sigma ** 2) / pi, 16 * mu ** 2 + 8 * sigma ** 2),
  }


@pytest.mark.parametrize("coupling", [True, False])
def test_x_squared_closed_form_mean_and_variance(coupling):
  est = pgjax.measure_valued(lambda x: x ** 2, lambda p: distrax.Normal(p["mu"], p["sigma"]), num_samples=1,
                             coupling=coupling)
  params = {"mu": jnp.float32(MU), "sigma": jnp.float32(SIGMA)}
  num = 40000
  g = jax.jit(jax.vmap(lambda k: est(k, params)[0]))(jax.random.split(jax.random.key(7), num))
  variances = _closed_form_variances(MU, SIGMA)
  for i, (name, mean) in enumerate((("mu", 2 * MU), ("sigma", 2 * SIGMA))):
    x = np.asarray(g[name], np.float64)
    se_mean = x.std() / math.sqrt(num)
    assert abs(x.mean() - mean) <= 5 * se_mean, (name, x.mean(), mean)
    assert abs(x.mean() - 1.1 * mean) > 5 * se_mean                 # power: a 10% scaled mean fails
    v = x.var(ddof=1)
    se_v = math.sqrt(np.mean((x - x.mean()) ** 4) - v ** 2) / math.sqrt(num)
    target = variances[coupling][i]
    assert abs(v - target) <= 5 * se_v, (name, coupling, v, target, se_v)
    # power: the other coupling's closed form and a 15% scaled one both fail the same check
    assert abs(v - variances[not coupling][i]) > 5 * se_v
    assert abs(v - 1.15 * target) > 5 * se_v and abs(v - 0.85 * target) > 5 * se_v


def _bernoulli_toy():
  w = jnp.array([1.0, -2.0, 0.5, 1.5])

  def f(b):
    b = b.astype(jnp.float32)
    return jnp.sin(jnp.dot(w, b)) + b[0] * b[3]

  def dist_fn(p):
    return distrax.Bernoulli(logits=jnp.concatenate([p["a"], 2.0 * p["b"]]))

  return f, dist_fn, {"a": jnp.array([0.3, -1.0]), "b": jnp.array([0.5, -0.25])}


def _categorical_toy():
  table = jnp.array([[1.0, 0.0, 0.5], [0.2, 0.3, -1.0]])

  def f(x):
    return jnp.sin(table[0, x[0]] + 2.0 * table[1, x[1]]) + 0.5 * (x[0] == x[1])

  def dist_fn(logits):
    return distrax.Categorical(logits=logits)

  return f, dist_fn, jnp.array([[0.1, 0.5, -0.3], [1.0, 0.0, -1.0]])


def _toys():
  q = pgjax.problems.gaussian_quadratic(3, mean=jnp.array([0.3, -0.2, 0.5]), log_std=jnp.array([0.1, -0.3, 0.2]))
  toys = {"gaussian_quadratic": (q.f, q.dist_fn, q.params, jax.jit(q.true_grad)(q.params), 4)}
  f, dist_fn, params = _bernoulli_toy()
  exact = jax.jit(pgjax.exact_gradient(f, lambda p: distrax.Independent(dist_fn(p), 1)))(None, params)[0]
  toys["bernoulli"] = (f, dist_fn, params, exact, 2)
  f, dist_fn, params = _categorical_toy()
  exact = jax.jit(pgjax.exact_gradient(f, lambda p: distrax.Independent(dist_fn(p), 1)))(None, params)[0]
  toys["categorical"] = (f, dist_fn, params, exact, 2)
  return toys


TOYS = _toys()
CASES = [(toy, coupling) for toy in TOYS for coupling in (True, False)]


@pytest.fixture(scope="module")
def estimators():
  return {(toy, c): pgjax.measure_valued(TOYS[toy][0], TOYS[toy][1], num_samples=TOYS[toy][4], coupling=c)
          for toy, c in CASES}


@pytest.mark.parametrize("toy,coupling", CASES)
def test_unbiased(estimators, toy, coupling):
  _, _, params, exact, _ = TOYS[toy]
  assert_unbiased_with_power(estimators[(toy, coupling)], params, jax.random.key(21), target=exact,
                             wrong_target=scale_tree(exact, 1.15), num_replicates=2000)


@pytest.mark.parametrize("toy", list(TOYS))
def test_coupling_reduces_variance(estimators, toy):
  # Same sweeps as test_unbiased (compiled statistics reused).
  _, _, params, exact, _ = TOYS[toy]
  sc, su = (pgjax.sweep.gradient_stats(estimators[(toy, c)], params, jax.random.key(21), num_seeds=2000,
                                       true_grad=exact) for c in (True, False))
  vc, sec = float(sc.total_variance), float(sc.total_variance_se)
  vu, seu = float(su.total_variance), float(su.total_variance_se)
  print(f"{toy}: tr Var coupled / uncoupled = {vc / vu:.3f} ({vc:.4g} +- {sec:.2g} vs {vu:.4g} +- {seu:.2g})")
  assert vc + 5 * sec < 0.8 * (vu - 5 * seu)


def test_exact_for_one_variable_and_separable_bits():
  key = jax.random.key(0)
  bandit = pgjax.problems.categorical_bandit()
  g, aux = jax.jit(pgjax.measure_valued(bandit.f, bandit.dist_fn, num_samples=3))(key, bandit.params)
  np.testing.assert_allclose(g, bandit.true_grad(bandit.params), rtol=1e-5, atol=1e-7)
  assert int(aux.num_evaluations) == 3 * 4
  # f(x) = ||x - t||^2 is separable: with coupling f(x_{k=1}) - f(x_{k=0}) = 1 - 2 t_k whatever the other bits.
  bq = pgjax.problems.bernoulli_quadratic(5, logits=jnp.array([0.3, -1.0, 2.0, 0.0, -0.5]))
  g, aux = jax.jit(pgjax.measure_valued(bq.f, bq.dist_fn, num_samples=2))(key, bq.params)
  np.testing.assert_allclose(g, bq.true_grad(bq.params), rtol=1e-5, atol=1e-7)
  assert int(aux.num_evaluations) == 2 * 2 * 5 and aux.values_positive.shape == (2, 5)


def _static_aux(est, params):
  """The aux of one call, traced but not compiled (its Python fields are static)."""
  box = {}

  def run(key, p):
    g, box["aux"] = est(key, p)
    return g

  jax.eval_shape(run, jax.random.key(0), params)
  return box["aux"]


def test_evaluation_counts_and_aux():
  q = pgjax.problems.gaussian_quadratic(3)
  aux = _static_aux(pgjax.measure_valued(q.f, q.dist_fn, num_samples=4), q.params)
  assert aux.num_evaluations == 2 * 4 * (2 * 3)               # 2 N D, D = 6 (3 means, 3 scales)
  assert aux.values_positive.shape == aux.values_negative.shape == (4, 6) and aux.biased is False
  f, dist_fn, params = _categorical_toy()
  aux = _static_aux(pgjax.measure_valued(f, dist_fn, num_samples=5, coupling=False), params)
  assert aux.num_evaluations == 5 * 2 * 3                     # N d K, no negative part
  assert aux.values_positive.shape == (5, 6)


def test_conformance_gaussian():
  q = pgjax.problems.gaussian_quadratic(3)
  check_estimator(
      pgjax.measure_valued(q.f, q.dist_fn, num_samples=2), q.params,
      bad_arguments=[
          (lambda: pgjax.measure_valued(q.f, q.dist_fn, num_samples=0), "num_samples"),
          (lambda: pgjax.measure_valued(q.f, q.dist_fn, num_samples=2, coupling="yes"), "coupling"),
          (lambda: pgjax.measure_valued(q.f, lambda p: distrax.Beta(2.0, jnp.exp(p["mean"])), num_samples=2)(
              jax.random.key(0), q.params), "dist_fn")])


def test_conformance_categorical():
  f, dist_fn, params = _categorical_toy()
  check_estimator(pgjax.measure_valued(f, dist_fn, num_samples=2, coupling=False), params)
