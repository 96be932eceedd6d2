"""ARM and DisARM: unbiased against exact enumeration, single-bit closed forms, DisARM variance <= ARM."""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax._src.testing import check_estimator
from tests.helpers import assert_unbiased_with_power, scale_tree

NUM_PAIRS = 4


def _nonseparable():
  """A non-quadratic, non-separable f on 5 bits with pytree params (the logits are a[3] and 2*b[2])."""
  w = np.array([1.0, -2.0, 0.5, 1.5, -1.0], np.float32)

  def f(b):
    b = b.astype(jnp.float32)
    return jnp.sin(jnp.dot(w, b)) + b[0] * b[3] - 0.3 * b[1] * b[2] * b[4]

  def dist_fn(p):
    return distrax.Independent(distrax.Bernoulli(logits=jnp.concatenate([p["a"], 2.0 * p["b"]])), 1)

  params = {"a": jnp.asarray(np.array([0.3, -1.0, 2.0], np.float32)),
            "b": jnp.asarray(np.array([0.0, -0.25], np.float32))}
  return f, dist_fn, params


TOY_NAMES = ("quadratic_t0499", "nonseparable")


@functools.cache
def _toys():
  """Built on first use (not at collection), from numpy constants."""
  toys = {}
  # The toy of the ARM/REBAR/RELAX/DisARM papers: f(b) = sum_k (b_k - 0.499)^2 (a tiny signal, 1 - 2t = 0.002).
  q = pgjax.problems.bernoulli_quadratic(5, logits=np.array([0.3, -1.0, 2.0, 0.0, -0.5], np.float32),
                                         target=np.full((5,), 0.499, np.float32))
  toys["quadratic_t0499"] = (q.f, q.dist_fn, q.params)
  toys["nonseparable"] = _nonseparable()
  assert tuple(toys) == TOY_NAMES
  return toys


@pytest.fixture(scope="module")
def built():
  """Estimators built once per (method, toy), so their compiled sweeps are shared by the tests."""
  out = {}
  for name, (f, dist_fn, params) in _toys().items():
    exact = jax.jit(pgjax.exact_gradient(f, dist_fn))(None, params)[0]  # enumeration in one program
    exact = jax.tree_util.tree_map(np.asarray, exact)
    out[name] = dict(params=params, exact=exact,
                     arm=pgjax.arm(f, dist_fn, num_pairs=NUM_PAIRS),
                     disarm=pgjax.disarm(f, dist_fn, num_pairs=NUM_PAIRS))
  return out


@pytest.mark.parametrize("method", ["arm", "disarm"])
@pytest.mark.parametrize("toy", TOY_NAMES)
def test_unbiased_against_enumeration(built, method, toy):
  b = built[toy]
  stats = assert_unbiased_with_power(b[method], b["params"], jax.random.key(11), target=b["exact"],
                                     wrong_target=scale_tree(b["exact"], 1.15), num_replicates=3000)
  assert int(np.asarray(stats.num_seeds)) == 3000


@pytest.mark.parametrize("toy", TOY_NAMES)
def test_disarm_variance_below_arm(built, toy):
  # DisARM = E[ARM | b, b~] (Dong et al. 2020): its variance is at most ARM's, for every f. Same sweep as the
  # unbiasedness test (same estimator, seeds and true_grad), so the compiled statistics are reused.
  b = built[toy]
  sd, sa = (pgjax.sweep.gradient_stats(b[m], b["params"], jax.random.key(12), num_seeds=3000, true_grad=b["exact"])
            for m in ("disarm", "arm"))
  vd, sed = float(sd.total_variance), float(sd.total_variance_se)
  va, sea = float(sa.total_variance), float(sa.total_variance_se)
  print(f"{toy}: tr Var DisARM / ARM = {vd / va:.3f} (DisARM {vd:.4g} +- {sed:.2g}, ARM {va:.4g} +- {sea:.2g})")
  assert vd + 5 * sed < 0.95 * (va - 5 * sea)


def _single_bit_variances(logit, f0, f1):
  """Closed-form one-pair variances of ARM and DisARM for one bit (derived in tests, see below)."""
  p = 1.0 / (1.0 + np.exp(-logit))
  q = min(p, 1.0 - p)
  mean = (f1 - f0) * q * (1.0 - q)
  # ARM: nonzero only when the pair differs (prob 2q); |value| = |f1 - f0| |u - 1/2| with u within q of an end.
  arm_sq = (f1 - f0) ** 2 * (2.0 / 3.0) * (1.0 / 8.0 - (0.5 - q) ** 3)
  # DisARM: value (f1 - f0) sigma(|phi|) / 2 = (f1 - f0)(1 - q) / 2 with probability 2q.
  disarm_sq = (f1 - f0) ** 2 * (1.0 - q) ** 2 * q / 2.0
  return mean, arm_sq - mean ** 2, disarm_sq - mean ** 2


F0, F1 = 0.3, 1.5
NUM_SINGLE_BIT = 20000


@pytest.fixture(scope="module")
def single_bit():
  """Jitted one-pair ARM and DisARM draws for one bit, compiled once for every logit."""

  def f(b):
    return jnp.where(b[0] == 1, F1, F0)

  def dist_fn(phi):
    return distrax.Independent(distrax.Bernoulli(logits=phi), 1)

  def draws(est):
    return jax.jit(lambda key, phi: jax.vmap(lambda k: est(k, phi)[0][0])(jax.random.split(key, NUM_SINGLE_BIT)))

  return {m: draws(getattr(pgjax, m)(f, dist_fn, num_pairs=1)) for m in ("arm", "disarm")}


@pytest.mark.parametrize("logit", [0.8, -1.7])
def test_single_bit_closed_form_variance(single_bit, logit):
  params = np.array([logit], np.float32)
  mean, var_arm, var_disarm = _single_bit_variances(logit, F0, F1)
  assert var_disarm < var_arm
  num = NUM_SINGLE_BIT
  for method, var in (("arm", var_arm), ("disarm", var_disarm)):
    g = np.asarray(single_bit[method](jax.random.key(3), params), np.float64)
    assert abs(g.mean() - mean) <= 5 * g.std() / np.sqrt(num)
    v = g.var(ddof=1)
    se_v = np.sqrt(np.mean((g - g.mean()) ** 4) - v ** 2) / np.sqrt(num)
    assert abs(v - var) <= 5 * se_v, (method, v, var, se_v)
    # power: a 20% error in the variance formula fails the same check
    assert abs(v - 1.2 * var) > 5 * se_v and abs(v - 0.8 * var) > 5 * se_v


def test_disarm_zero_where_pair_agrees_and_matches_formula():
  f, dist_fn, params = _nonseparable()
  est = pgjax.disarm(f, dist_fn, num_pairs=1)
  g, aux = jax.tree_util.tree_map(np.asarray, jax.jit(est)(jax.random.key(5), params))
  b, bt = aux.samples[0], aux.antithetic_samples[0]
  phi = np.concatenate([np.asarray(params["a"]), 2.0 * np.asarray(params["b"])])
  diff = float(aux.values[0]) - float(aux.antithetic_values[0])
  g_phi = 0.5 * diff * (b != bt) * (-1.0) ** bt / (1.0 + np.exp(-np.abs(phi)))
  expected = {"a": g_phi[:3], "b": 2.0 * g_phi[3:]}
  np.testing.assert_allclose(g["a"], expected["a"], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g["b"], expected["b"], rtol=1e-5, atol=1e-7)
  # the antithetic pair: b = 1[u < sigma(phi)], b~ = 1[u > sigma(-phi)] never both 1 where p < 1/2
  p = 1.0 / (1.0 + np.exp(-phi))
  assert not np.any((b == 1) & (bt == 1) & (p < 0.5))
  assert int(aux.num_evaluations) == 2 and not bool(aux.biased)


@pytest.mark.parametrize("method", ["arm", "disarm"])
def test_conformance(method):
  f, dist_fn, params = _nonseparable()
  factory = getattr(pgjax, method)
  check_estimator(
      factory(f, dist_fn, num_pairs=3), params,
      bad_arguments=[(lambda: factory(f, dist_fn, num_pairs=0), "num_pairs"),
                     (lambda: factory(f, lambda p: distrax.Normal(p["a"], 1.0), num_pairs=2)(
                         jax.random.key(0), params), "dist_fn")])


def test_extreme_logits_are_finite():
  f, dist_fn, _ = _nonseparable()
  params = {"a": np.array([60.0, -60.0, 0.0], np.float32), "b": np.array([40.0, -45.0], np.float32)}
  for method in ("arm", "disarm"):
    g, _ = jax.jit(getattr(pgjax, method)(f, dist_fn, num_pairs=2))(jax.random.key(0), params)
    pgjax.testing.assert_tree_all_finite(g, method)
    if method == "disarm":   # the pair always agrees where sigma(phi) rounds to 0 or 1
      np.testing.assert_array_equal(np.asarray(g["a"])[:2], 0.0)
      np.testing.assert_array_equal(np.asarray(g["b"]), 0.0)
