"""Gumbel-softmax / straight-through (biased, bias measured), REBAR and RELAX (unbiased) against exact gradients."""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import pgjax
from pgjax import problems as P
from pgjax._src import relaxations as R
from pgjax.testing import check_estimators
from tests.helpers import assert_unbiased_with_power
from tests.helpers import scale_tree

FAST_COMPILE = {"xla_backend_optimization_level": 0}

# The Bernoulli and categorical toys, with targets spread out so the gradient is not tiny next to the noise.
BERN = P.bernoulli_quadratic(4, logits=np.array([-1.0, 0.0, 0.5, 1.5], np.float32),
                             target=np.array([0.1, 0.3, 0.6, 0.9], np.float32))


@functools.cache
def _cat():
  """Built on first use (its default logits are computed by JAX), not at collection."""
  return P.categorical_quadratic(2, 4, target=np.linspace(0.0, 1.0, 4, dtype=np.float32))


def _toy(name):
  return _cat() if name == "categorical" else BERN


@functools.cache
def _truth(name):
  """The toy's exact gradient (closed form) in one jitted program, as numpy."""
  prob = _toy(name)
  return np.asarray(jax.jit(prob.true_grad)(prob.params))


def _moments(grads):
  """Per-coordinate mean and SE, total variance and its SE, from ``[S, D]`` replicates."""
  g = np.asarray(grads, np.float64)
  s = g.shape[0]
  mean, se = g.mean(0), g.std(0, ddof=1) / np.sqrt(s)
  dev2 = np.sum((g - mean) ** 2, axis=1)
  return mean, se, dev2.mean() * s / (s - 1), dev2.std(ddof=1) / np.sqrt(s)


# ------------------------------------------------------------------------------------------------ Gumbel-softmax

@pytest.mark.parametrize("toy, tau_low", [("bernoulli", 0.1), ("categorical", 0.5)])
def test_gumbel_softmax_bias_shrinks_and_variance_grows_as_temperature_falls(toy, tau_low):
  """Bias against the exact gradient at tau = 1 is visible; at a lower tau it is smaller and the variance larger."""
  prob = _toy(toy)
  truth = np.ravel(_truth(toy))
  est = R.gumbel_softmax(prob.f, prob.dist_fn, num_samples=1)
  num_seeds = 4000
  taus = np.array([1.0, tau_low], np.float32)

  @jax.jit
  def run(taus):
    keys = jax.random.split(jax.random.key(7), num_seeds)
    one = lambda tau, k: jnp.ravel(est(k, prob.params, temperature=tau)[0])
    return jax.vmap(lambda tau: jax.vmap(lambda k: one(tau, k))(keys))(taus)

  g = run(taus)
  (m_hi, se_hi, v_hi, vse_hi), (m_lo, se_lo, v_lo, vse_lo) = _moments(g[0]), _moments(g[1])
  # Biased at tau = 1: some coordinate more than 5 SE from the exact gradient.
  assert np.max(np.abs(m_hi - truth) / se_hi) > 5.0
  # The bias norm shrinks: ||mean - truth|| is the bias plus noise of size sqrt(tr Cov / S); 3 noise margins.
  b_hi, b_lo = np.linalg.norm(m_hi - truth), np.linalg.norm(m_lo - truth)
  n_hi, n_lo = np.sqrt(v_hi / num_seeds), np.sqrt(v_lo / num_seeds)
  assert b_lo + 3 * n_lo < b_hi - 3 * n_hi, (b_lo, n_lo, b_hi, n_hi)
  # The variance grows (at least 2x, with 5 SE margins on both sides).
  assert v_lo - 5 * vse_lo > 2 * (v_hi + 5 * vse_hi), (v_lo, vse_lo, v_hi, vse_hi)


@pytest.mark.parametrize("toy, tau", [("bernoulli", 1.0), ("categorical", 2.0)])
def test_straight_through_is_biased_and_evaluates_f_at_hard_samples(toy, tau):
  prob = _toy(toy)
  est = R.gumbel_softmax(prob.f, prob.dist_fn, num_samples=3, temperature=tau, straight_through=True)

  @jax.jit  # the estimate and f at its hard samples, in one program
  def run(key, params):
    _, aux = est(key, params)
    return aux, jax.vmap(prob.f)(aux.samples)

  aux, f_at_samples = run(jax.random.key(0), prob.params)
  # Forward values are f at the hard samples, which are the thresholded / argmax relaxed samples.
  np.testing.assert_allclose(aux.values, f_at_samples, rtol=1e-6)
  if toy == "bernoulli":
    np.testing.assert_array_equal(aux.samples, (aux.relaxed > 0.5).astype(aux.samples.dtype))
  else:
    np.testing.assert_array_equal(np.argmax(aux.samples, -1), np.argmax(aux.relaxed, -1))
    np.testing.assert_allclose(np.sum(aux.relaxed, -1), 1.0, rtol=1e-6)
  assert bool(aux.biased) and int(aux.num_evaluations) == 3
  np.testing.assert_allclose(aux.temperature, tau)
  # The bias is measured, not assumed: more than 5 SE away from the exact gradient on the toy.
  ok, report, _ = pgjax.testing.check_unbiased(est, prob.params, jax.random.key(1),
                                               target=_truth(toy), num_replicates=2000)
  assert not ok, report


def test_gumbel_softmax_temperature_is_traced():
  """One compiled function serves every temperature (vmap over it); aux reports the value used."""
  est = R.gumbel_softmax(BERN.f, BERN.dist_fn, num_samples=2)
  taus = np.array([0.2, 0.7, 3.0], np.float32)
  g, aux = jax.jit(jax.vmap(lambda t: est(jax.random.key(0), BERN.params, temperature=t)))(taus)
  np.testing.assert_allclose(aux.temperature, taus)
  # Same noise, different temperatures: the relaxed samples differ but the hard ones do not.
  assert np.all(aux.samples == aux.samples[0:1])
  assert not np.allclose(aux.relaxed[0], aux.relaxed[2])
  # Larger temperature: relaxed samples nearer 1/2.
  assert np.mean(np.abs(aux.relaxed[2] - 0.5)) < np.mean(np.abs(aux.relaxed[0] - 0.5))


# ------------------------------------------------------------------------------------------------ REBAR

@pytest.mark.parametrize("toy", ["bernoulli", "categorical"])
def test_conditional_relaxed_sample_is_consistent_and_has_the_right_marginal(toy):
  """z~ ~ p(z | b): H(z~) = b exactly, and over b ~ p the marginal of z~ is that of z (logistic / Gumbel)."""
  prob = _toy(toy)
  n = 20000

  @jax.jit  # the draws and their hard values in one program
  def draws(params):
    kind, logits, _ = R._kind_and_logits(prob.dist_fn(params))
    k1, k2 = jax.random.split(jax.random.key(3))
    z = R._location(kind, logits)[None] + R._noise(kind, k1, (n,) + logits.shape, jnp.float32)
    b = R._hard(kind, z)
    zt = R._conditional(kind, R._uniform(k2, z.shape, jnp.float32), logits[None], b)
    return b, zt, R._hard(kind, zt), R._location(kind, logits)

  kind = R._kind_and_logits(prob.dist_fn(prob.params))[0]
  b, zt, hard_zt, loc = map(np.asarray, draws(prob.params))
  np.testing.assert_array_equal(hard_zt, b)
  # Marginal CDF at a few points against the closed form, within 5 binomial SEs.
  for x in (-1.0, 0.0, 0.7, 2.0):
    emp = np.mean(np.asarray(zt) <= x, axis=0)
    cdf = 1 / (1 + np.exp(-(x - loc))) if kind == "bernoulli" else np.exp(-np.exp(-(x - loc)))
    se = np.sqrt(cdf * (1 - cdf) / n) + 1e-4
    assert np.all(np.abs(emp - cdf) < 5 * se), (x, emp, cdf)


@pytest.mark.parametrize("toy", ["bernoulli", "categorical"])
def test_rebar_unbiased_with_power(toy):
  """Within 5 SE of the exact gradient over 2000 replicates; the same check against 1.2x the truth fails."""
  prob = _toy(toy)
  truth = _truth(toy)
  est = R.rebar(prob.f, prob.dist_fn, num_samples=4, temperature=0.5, eta=1.0)
  assert_unbiased_with_power(est, prob.params, jax.random.key(5), target=truth,
                             wrong_target=scale_tree(truth, 1.2), num_replicates=2000)


def test_rebar_with_eta_zero_is_reinforce_exactly():
  """eta = 0 removes the control variate: the estimate is (1/N) sum f(b_i) (b_i - sigmoid(l)) exactly."""
  est = R.rebar(BERN.f, BERN.dist_fn, num_samples=5, eta=0.0)

  @jax.jit  # the estimate and f at its samples, in one program
  def run(key, params):
    g, aux = est(key, params)
    return g, aux, jax.vmap(BERN.f)(aux.samples)

  g, aux, f_at_samples = run(jax.random.key(2), BERN.params)
  b = np.asarray(aux.samples, np.float64)
  p = 1 / (1 + np.exp(-np.asarray(BERN.params, np.float64)))
  by_hand = np.mean(np.asarray(aux.values, np.float64)[:, None] * (b - p[None]), axis=0)
  np.testing.assert_allclose(g, by_hand, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(aux.values, f_at_samples, rtol=1e-6)
  assert int(aux.num_evaluations) == 15 and not bool(aux.biased)


def _sq_norm(tree):
  return sum(jnp.sum(x.astype(jnp.float32) ** 2) for x in jax.tree_util.tree_leaves(tree))


def test_rebar_variance_gradient_matches_finite_differences():
  """d/d(eta, tau) of the squared estimate (summed over 64 fixed keys) equals central finite differences."""
  est = R.rebar(BERN.f, BERN.dist_fn, num_samples=1)

  def loss(eta, tau):
    keys = jax.random.split(jax.random.key(4), 64)
    return jnp.mean(jax.vmap(lambda k: _sq_norm(est(k, BERN.params, eta=eta, temperature=tau)[0]))(keys))

  @jax.jit  # the gradient and the four finite-difference losses in one program
  def grads_and_differences(eta, tau, h):
    d_eta, d_tau = jax.grad(loss, argnums=(0, 1))(eta, tau)
    fd_eta = (loss(eta + h, tau) - loss(eta - h, tau)) / (2 * h)
    fd_tau = (loss(eta, tau + h) - loss(eta, tau - h)) / (2 * h)
    return d_eta, d_tau, fd_eta, fd_tau

  eta, tau = 0.7, 0.6
  h = 1e-2
  d_eta, d_tau, fd_eta, fd_tau = map(float, grads_and_differences(eta, tau, h))
  np.testing.assert_allclose([d_eta, d_tau], [fd_eta, fd_tau], rtol=2e-2)
  assert abs(float(d_eta)) > 1e-3 and abs(float(d_tau)) > 1e-3  # not trivially zero


# ------------------------------------------------------------------------------------------------ RELAX

def _mlp_control_variate(f):
  """c_phi(z) = eta f(sigmoid(z / tau)) + a small MLP of sigmoid(z) (Grathwohl et al., section 6)."""
  def c(phi, z):
    s = jax.nn.sigmoid(z)
    h = jnp.tanh(s @ phi["w1"] + phi["b1"])
    return phi["eta"] * f(jax.nn.sigmoid(z / jnp.exp(phi["log_tau"]))) + h @ phi["w2"] + phi["b2"]
  return c


@functools.partial(jax.jit, static_argnums=(1, 2))  # one program per shape
def _init_phi(key, dim, hidden=16):
  k1, k2 = jax.random.split(key)
  return {"w1": 0.1 * jax.random.normal(k1, (dim, hidden)), "b1": jnp.zeros(hidden),
          "w2": 0.1 * jax.random.normal(k2, (hidden,)), "b2": jnp.zeros(()),
          "eta": jnp.zeros(()), "log_tau": jnp.log(jnp.asarray(0.5))}


@pytest.fixture(scope="module")
def relax_setup():
  """RELAX on the Bernoulli toy; phi trained for 150 Adam steps on the squared estimate (16 keys per step)."""
  phi0 = _init_phi(jax.random.key(0), 4)
  est = R.relax(BERN.f, BERN.dist_fn, control_variate=_mlp_control_variate(BERN.f),
                control_params=phi0, num_samples=1, control_evaluations=1)
  opt = optax.adam(2e-2)

  def variance_loss(phi, key):
    keys = jax.random.split(key, 16)
    return jnp.mean(jax.vmap(lambda k: _sq_norm(est(k, BERN.params, control_params=phi)[0]))(keys))

  @jax.jit
  def train(phi, key):
    def step(carry, k):
      phi, state = carry
      grads = jax.grad(variance_loss)(phi, k)
      updates, state = opt.update(grads, state)
      return (optax.apply_updates(phi, updates), state), None
    (phi, _), _ = jax.lax.scan(step, (phi, opt.init(phi)), jax.random.split(key, 150))
    return phi

  return est, phi0, train(phi0, jax.random.key(1)), variance_loss


def test_relax_variance_falls_after_training_the_control_variate(relax_setup):
  est, phi0, phi1, _ = relax_setup
  num_seeds = 2000

  @jax.jit
  def replicates(phi0, phi1):
    phis = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), phi0, phi1)
    keys = jax.random.split(jax.random.key(9), num_seeds)
    return jax.vmap(lambda phi: jax.vmap(lambda k: est(k, BERN.params, control_params=phi)[0])(keys))(phis)

  g = replicates(phi0, phi1)
  _, _, v0, vse0 = _moments(g[0])
  _, _, v1, vse1 = _moments(g[1])
  # At least halved, with 5 SE margins.
  assert v1 + 5 * vse1 < 0.5 * (v0 - 5 * vse0), (v1, vse1, v0, vse0)


def test_relax_unbiased_with_power_for_a_trained_control_variate(relax_setup):
  est, _, phi1, _ = relax_setup
  truth = _truth("bernoulli")
  trained = functools.partial(est, control_params=phi1)
  assert_unbiased_with_power(trained, BERN.params, jax.random.key(6), target=truth,
                             wrong_target=scale_tree(truth, 1.2), num_replicates=2000)


def test_relax_variance_gradient_matches_finite_differences(relax_setup):
  """jax.grad of the mean squared estimate in phi, along a random direction, equals a central difference."""
  _, phi0, _, variance_loss = relax_setup
  h = 1e-2

  @jax.jit  # the directional derivative and the central difference in one program
  def analytic_and_difference(phi):
    key = jax.random.key(12)
    flat, unravel = ravel_pytree(phi)
    direction = jax.random.normal(jax.random.key(13), flat.shape)
    direction = direction / jnp.linalg.norm(direction)
    loss = lambda x: variance_loss(unravel(x), key)
    return (jnp.dot(jax.grad(loss)(flat), direction),
            (loss(flat + h * direction) - loss(flat - h * direction)) / (2 * h))

  analytic, fd = map(float, analytic_and_difference(phi0))
  np.testing.assert_allclose(analytic, fd, rtol=3e-2)
  assert abs(analytic) > 1e-3


# ------------------------------------------------------------------------------------------------ contract

def _pytree_bernoulli():
  """Params a dict; logits = a * w + c, so gradients reach two leaves through the chain rule."""
  w = np.array([1.0, -0.5, 0.25], np.float32)
  t = np.array([0.2, 0.7, 0.4], np.float32)
  def dist_fn(p):
    return distrax.Independent(distrax.Bernoulli(logits=p["a"] * w + p["c"]), 1)
  def f(b):
    return jnp.sum((b.astype(jnp.float32) - t) ** 2)
  return f, dist_fn, {"a": jnp.asarray(np.float32(0.8)),
                      "c": jnp.asarray(np.array([0.1, -0.3, 0.5], np.float32))}


CONFORMANCE_NAMES = ("gumbel_softmax", "straight_through", "rebar", "relax")


@functools.cache
def _conformance_reports():
  """check_estimator's properties for the four estimators, compiled together (check_estimators: one program
  per kind of check for all four instead of one per estimator); each test asserts its own report."""
  f, dist_fn, params = _pytree_bernoulli()
  phi = _init_phi(jax.random.key(0), 3)
  cv = _mlp_control_variate(f)
  builds = {
      "gumbel_softmax": lambda h: R.gumbel_softmax(f, dist_fn, num_samples=3, temperature=h),
      "straight_through": lambda h: R.gumbel_softmax(f, dist_fn, num_samples=3, temperature=h,
                                                     straight_through=True),
      "rebar": lambda h: R.rebar(f, dist_fn, num_samples=2, temperature=h),
      "relax": lambda h: R.relax(f, dist_fn, control_variate=cv, control_params={**phi, "eta": h},
                                 num_samples=2, control_evaluations=1),
  }
  cases = {}
  for name in CONFORMANCE_NAMES:
    hyper = {"relax": ("eta", 0.5)}.get(name, ("temperature", 0.7))
    cases[name] = dict(estimator=builds[name](hyper[1]), params=params,
                       hyperparameters={hyper[0]: (builds[name], hyper[1])})
  return check_estimators(cases, compiler_options=FAST_COMPILE, raise_on_failure=False)


@pytest.mark.parametrize("name", CONFORMANCE_NAMES)
def test_conformance(name):
  _conformance_reports()[name].raise_if_failed()


@pytest.mark.parametrize("call, exc, match", [
    (lambda: R.gumbel_softmax(BERN.f, BERN.dist_fn, num_samples=0), ValueError, "num_samples"),
    (lambda: R.gumbel_softmax(BERN.f, BERN.dist_fn, num_samples=1, temperature=0.0), ValueError, "temperature"),
    (lambda: R.gumbel_softmax(BERN.f, BERN.dist_fn, num_samples=1, temperature=jnp.ones(2)), ValueError,
     "temperature"),
    (lambda: R.gumbel_softmax(BERN.f, BERN.dist_fn, num_samples=1, straight_through=1), TypeError,
     "straight_through"),
    (lambda: R.gumbel_softmax(BERN.f, BERN.dist_fn, num_samples=1)(jax.random.key(0), BERN.params,
                                                                     temperature=-1.0), ValueError, "temperature"),
    (lambda: R.gumbel_softmax(BERN.f, lambda p: distrax.Categorical(logits=p), num_samples=1)(
        jax.random.key(0), BERN.params), TypeError, "OneHotCategorical"),
    (lambda: R.rebar(BERN.f, lambda p: distrax.Normal(p, 1.0))(jax.random.key(0), BERN.params), TypeError,
     "dist_fn"),
    (lambda: R.rebar(BERN.f, BERN.dist_fn, eta=jnp.ones(3)), ValueError, "eta"),
    (lambda: R.rebar(BERN.f, BERN.dist_fn)(0, BERN.params), TypeError, "key"),
    (lambda: R.relax(BERN.f, BERN.dist_fn, control_variate=None, control_params={}), TypeError,
     "control_variate"),
    (lambda: R.relax(BERN.f, BERN.dist_fn, control_variate=lambda p, z: 0.0, control_params={},
                     control_evaluations=-1), ValueError, "control_evaluations"),
    (lambda: R.rebar(BERN.f, BERN.dist_fn)(jax.random.key(0), jnp.zeros(4, jnp.int32)), TypeError, "params"),
])
def test_bad_input(call, exc, match):
  with pytest.raises(exc, match=match):
    call()


@pytest.mark.parametrize("toy", ["bernoulli", "categorical"])
def test_extreme_logits_give_finite_estimates(toy):
  """Logits of +-30 (probabilities within 1e-13 of 0 or 1): every estimator stays finite."""
  logits = np.array([-30.0, 30.0, 0.0, 5.0], np.float32)
  prob = (P.bernoulli_quadratic(4, logits=logits) if toy == "bernoulli"
          else P.categorical_quadratic(2, 4, logits=np.stack([logits, -logits])))
  ests = [R.gumbel_softmax(prob.f, prob.dist_fn, num_samples=4, temperature=0.1),
          R.gumbel_softmax(prob.f, prob.dist_fn, num_samples=4, temperature=0.1, straight_through=True),
          R.rebar(prob.f, prob.dist_fn, num_samples=4, temperature=0.1)]
  grads = jax.jit(lambda key: jax.vmap(lambda k: [e(k, prob.params)[0] for e in ests])(
      jax.random.split(key, 64)))(jax.random.key(0))
  for g in grads:
    assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("straight_through", [False, True])
def test_gumbel_softmax_nan_propagates_and_temperature_derivative_matches_finite_differences(straight_through):
  """A NaN value of f gives a NaN estimate; d/dtau of the mean squared estimate (64 fixed keys) equals a
  central difference (the straight-through forward value at the hard sample does not move with tau)."""
  f, dist_fn, params = _pytree_bernoulli()
  nan_f = lambda x: jnp.where(x[0] > 0.5, jnp.nan, f(x))
  nan_est = R.gumbel_softmax(nan_f, dist_fn, num_samples=4, straight_through=straight_through)

  def loss(tau):
    est = R.gumbel_softmax(f, dist_fn, num_samples=3, temperature=tau, straight_through=straight_through)
    keys = jax.random.split(jax.random.key(1), 64)
    return jnp.mean(jax.vmap(lambda k: _sq_norm(est(k, params)[0]))(keys))

  @jax.jit  # the NaN estimate, the derivative and the central difference in one program
  def run(tau, h):
    difference = (loss(tau + h) - loss(tau - h)) / (2 * h)
    return nan_est(jax.random.key(0), params)[0], jax.grad(loss)(tau), difference

  g, derivative, difference = run(0.5, 1e-2)
  assert all(np.all(np.isnan(np.asarray(x))) for x in jax.tree_util.tree_leaves(g))
  np.testing.assert_allclose(derivative, difference, rtol=2e-2)


def test_relax_unbiased_with_power_on_categorical_variables():
  """RELAX with a fixed (untrained) control variate on the one-hot categorical toy: unbiased, 1.2x fails."""
  cat = _cat()

  def control_variate(phi, z):
    return phi["eta"] * cat.f(jax.nn.softmax(z / phi["tau"], axis=-1)) + jnp.sum(phi["w"] * z)

  phi = {"eta": jnp.asarray(np.float32(0.9)), "tau": jnp.asarray(np.float32(0.6)),
         "w": jnp.asarray(np.full((2, 4), 0.05, np.float32))}
  est = R.relax(cat.f, cat.dist_fn, control_variate=control_variate, control_params=phi, num_samples=4,
                control_evaluations=1)
  truth = _truth("categorical")
  assert_unbiased_with_power(est, cat.params, jax.random.key(8), target=truth,
                             wrong_target=scale_tree(truth, 1.2), num_replicates=2000)
