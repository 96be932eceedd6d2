"""Fisher-vector products against closed-form and dense Fisher matrices.

References used here, none of them the code under test: the softmax Fisher diag(p) - p p^T, the Gaussian
(mu, log sigma) Fisher diag(1/sigma^2, 2), and the dense Fisher sum_a pi(a) g_a g_a^T from per-action scores
obtained by jax.jacrev of log_softmax (enumerating the finite action set).
"""

import functools

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from pgjax.natural import empirical_fisher_vector_product
from pgjax.natural import fisher_vector_product
from pgjax.natural import kl_hessian_vector_product
from tests.helpers import flat


def _dense(fvp, params):
  """Materialises a matrix-free product column by column (jax.jacfwd of the matvec)."""
  vec, unravel = ravel_pytree(params)
  return jax.jit(jax.jacfwd(lambda v: ravel_pytree(fvp(unravel(v)))[0]))(jnp.zeros_like(vec))


def _jac(fvp, params):
  vec, unravel = ravel_pytree(params)
  return jax.jacfwd(lambda v: ravel_pytree(fvp(unravel(v)))[0])(jnp.zeros_like(vec))


def _dense_of(make_fvp, params):
  """Builds the product from ``params`` and materialises it, in ONE jitted call."""
  return jax.jit(lambda p: _jac(make_fvp(p), p))(params)


def _np_softmax(logits):
  e = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _np_softmax_fisher(p):
  return np.diag(p) - np.outer(p, p)


def _all_dense(dist_fn, params, **kw):
  """Every exact product, materialised in ONE jitted call (one compilation per test)."""

  @jax.jit
  def dense(p):
    products = {
        "ggn": fisher_vector_product(dist_fn, p, **kw),
        "ggn_kl_output": fisher_vector_product(dist_fn, p, output_fisher="kl", **kw),
        "kl_forward_over_reverse": kl_hessian_vector_product(dist_fn, p, **kw),
        "kl_reverse_over_reverse": kl_hessian_vector_product(dist_fn, p, mode="reverse_over_reverse", **kw),
    }
    return {name: _jac(fvp, p) for name, fvp in products.items()}

  return dense(params)


def test_softmax_logits_fisher_is_diag_p_minus_ppT():
  logits = np.array([0.3, -1.0, 2.0, 0.0], np.float32)
  p = _np_softmax(logits)
  expected = _np_softmax_fisher(p)
  dist_fn = lambda t: distrax.Categorical(logits=t)
  for name, mat in _all_dense(dist_fn, logits).items():
    np.testing.assert_allclose(mat, expected, atol=1e-6, err_msg=name)

  @jax.jit
  def empirical_and_ones(t):
    # Empirical Fisher over all actions weighted by their probabilities is exact.
    emp = empirical_fisher_vector_product(jax.nn.log_softmax, t, weights=jax.nn.softmax(t))
    return _jac(emp, t), fisher_vector_product(dist_fn, t)(jnp.ones(4))

  emp_dense, ones_product = empirical_and_ones(logits)
  np.testing.assert_allclose(emp_dense, expected, atol=1e-6)
  # Singular along the all-ones direction (a constant logit shift leaves the policy unchanged).
  np.testing.assert_allclose(ones_product, 0.0, atol=1e-7)


@pytest.mark.parametrize("make", ["normal", "mvn_diag"])
def test_gaussian_mu_log_sigma_fisher_is_diag_inv_var_and_two(make):
  params = {"mu": np.array([0.5, -1.0], np.float32), "log_sigma": np.array([-0.7, 0.4], np.float32)}
  sigma = np.exp(params["log_sigma"].astype(np.float64))
  if make == "normal":
    dist_fn = lambda t: distrax.Normal(t["mu"], jnp.exp(t["log_sigma"]))
  else:
    dist_fn = lambda t: distrax.MultivariateNormalDiag(t["mu"], jnp.exp(t["log_sigma"]))
  # ravel order: log_sigma (2), mu (2). A Normal with batch shape [2] averages the two coordinates'
  # Fisher matrices (factor 1/2); the MVN's event holds both coordinates (no averaging).
  factor = 0.5 if make == "normal" else 1.0
  expected = factor * np.diag(np.concatenate([[2.0, 2.0], 1.0 / sigma**2]))
  for name, mat in _all_dense(dist_fn, params).items():
    np.testing.assert_allclose(mat, expected, rtol=1e-5, atol=1e-6, err_msg=name)


@functools.cache
def _linear_softmax_data(num_states=5, obs_dim=3, num_actions=4, seed=0):
  """States and weights drawn once (one jitted program), as numpy arrays."""

  @jax.jit
  def draw(key):
    k1, k2 = jax.random.split(key)
    return jax.random.normal(k1, (num_states, obs_dim)), 0.5 * jax.random.normal(k2, (obs_dim, num_actions))

  states, w = draw(jax.random.key(seed))
  return np.asarray(states), np.asarray(w), num_actions


def _linear_softmax_policy():
  states, w, num_actions = _linear_softmax_data()
  params = {"w": w, "b": np.zeros(num_actions, np.float32)}
  dist_fn = lambda p: distrax.Categorical(logits=states @ p["w"] + p["b"][None, :])
  return states, params, dist_fn


def _enumerated_fisher(logits_fn, params, weights):
  """Dense reference: sum_b w_b sum_a pi(a|s_b) g_{b,a} g_{b,a}^T from per-action scores (jacrev)."""

  @jax.jit
  def dense(p):
    x, unravel = ravel_pytree(p)
    logp = lambda y: jax.nn.log_softmax(logits_fn(unravel(y)), axis=-1)  # [B, A]
    scores = jax.jacrev(logp)(x)  # [B, A, P]
    probs = jnp.exp(logp(x))
    w = weights / weights.sum()
    return jnp.einsum("b,ba,bap,baq->pq", w, probs, scores, scores)

  return dense(params)


def test_weighted_batch_fisher_of_linear_softmax_policy_matches_kronecker_closed_form():
  states, params, dist_fn = _linear_softmax_policy()
  weights = np.array([1.0, 0.0, 2.0, 0.5, 1.5], np.float32)
  logits = states.astype(np.float64) @ params["w"] + params["b"][None, :]
  p = _np_softmax(logits)
  # Closed form: F = sum_b w_b [s_b; 1][s_b; 1]^T kron (diag p_b - p_b p_b^T) / sum w, in ravel order (b, w).
  feats = np.concatenate([np.ones((5, 1)), states], axis=1)  # bias row first ("b" < "w")
  m = np.stack([_np_softmax_fisher(q) for q in p])
  expected = np.einsum("b,bi,bj,bkl->ikjl", weights / weights.sum(), feats, feats, m).reshape(16, 16)
  for name, mat in _all_dense(dist_fn, params, weights=weights).items():
    np.testing.assert_allclose(mat, expected, atol=2e-6, err_msg=name)


class _MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.tanh(nn.Dense(8)(x))
    return nn.Dense(3)(x)


def test_flax_mlp_policy_products_agree_with_enumerated_dense_fisher():
  """GGN and KL-Hessian products agree with each other and with sum_a pi g g^T at the current params."""
  model = _MLP()

  @jax.jit
  def setup():
    states = jax.random.normal(jax.random.key(1), (6, 4))
    return states, model.init(jax.random.key(2), states)

  states, params = setup()
  dist_fn = lambda p: distrax.Categorical(logits=model.apply(p, states))
  expected = _enumerated_fisher(lambda p: model.apply(p, states), params, np.ones(6, np.float32))
  for name, mat in _all_dense(dist_fn, params).items():
    np.testing.assert_allclose(mat, expected, atol=3e-6, err_msg=name)

  @jax.jit
  def empirical_and_product(p):
    # Per-action empirical products weighted by pi(a|s) / B are the exact Fisher too.
    probs = jax.nn.softmax(model.apply(p, states))
    emp = empirical_fisher_vector_product(lambda q: jax.nn.log_softmax(model.apply(q, states)), p,
                                          weights=probs)
    v = jax.tree_util.tree_map(jnp.ones_like, p)
    return _jac(emp, p), fisher_vector_product(dist_fn, p)(v)

  emp_dense, product = empirical_and_product(params)
  np.testing.assert_allclose(emp_dense, expected, atol=3e-6)
  chex.assert_trees_all_equal_shapes_and_dtypes(product, params)


def test_fallback_output_kl_hessian_for_a_distribution_without_closed_form():
  """Laplace(mu, b) has Fisher diag(1/b^2, 1/b^2); in (mu, log b): diag(1/b^2, 1)."""
  params = {"mu": np.float32(0.3), "log_b": np.float32(-0.4)}
  b = np.exp(-0.4)
  dense = _dense_of(
      lambda p: fisher_vector_product(lambda t: distrax.Laplace(t["mu"], jnp.exp(t["log_b"])), p), params)
  np.testing.assert_allclose(dense, np.diag([1.0, 1.0 / b**2]), rtol=1e-5, atol=1e-6)


def test_bernoulli_logit_fisher():
  logits = np.array([0.2, -1.5], np.float32)
  p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
  dense = _dense_of(lambda t: fisher_vector_product(lambda q: distrax.Bernoulli(logits=q), t), logits)
  np.testing.assert_allclose(dense, np.diag(p * (1 - p)) / 2, rtol=1e-5)


def test_empirical_fisher_from_sampled_actions_is_unbiased(key):
  """Per-sample scores of actions drawn from N(mu, sigma^2): mean over replicates within 5 SE of the exact
  Fisher diag(1/sigma^2, 2) in (mu, log sigma); a 10%-scaled target must fail the same check (power)."""
  params = {"mu": jnp.array(0.5), "log_sigma": jnp.array(-0.3)}
  sigma = float(np.exp(-0.3))

  def one(k):
    x = params["mu"] + sigma * jax.random.normal(k, (64,))
    log_prob = lambda p: distrax.Normal(p["mu"], jnp.exp(p["log_sigma"])).log_prob(x)
    return _dense(empirical_fisher_vector_product(log_prob, params), params)

  mats = np.asarray(jax.jit(lambda k: jax.vmap(one)(jax.random.split(k, 2000)))(key))
  mean = mats.mean(0)
  se = mats.std(0, ddof=1) / np.sqrt(mats.shape[0])
  target = np.diag([2.0, 1.0 / sigma**2])  # ravel order: log_sigma, mu

  def within(t):
    return bool(np.all(np.abs(mean - t) <= 5 * se + 1e-7))

  assert within(target), (mean, target, se)
  assert not within(1.1 * target)


def test_linearises_once_products_reuse_it():
  """Counts the Python calls of ``dist_fn`` while building a product and applying it five times (traced
  once under ``jit``: the calls are the same as in eager mode, and one program is compiled)."""
  calls = []
  states, params, _ = _linear_softmax_policy()

  def dist_fn(p):
    calls.append(1)
    return distrax.Categorical(logits=states @ p["w"] + p["b"][None, :])

  counts = []

  @jax.jit
  def five_products(p):
    v = jax.tree_util.tree_map(jnp.ones_like, p)
    fvp = fisher_vector_product(dist_fn, p)
    out = [fvp(v) for _ in range(5)]
    counts.append(len(calls))
    calls.clear()
    hvp = kl_hessian_vector_product(dist_fn, p)
    out += [hvp(v) for _ in range(5)]
    counts.append(len(calls))
    return out

  jax.block_until_ready(five_products(params))
  assert counts[0] == 1
  assert counts[1] == 2  # the fixed reference distribution, and the linearised KL gradient


def test_jit_vmap_and_single_trace():
  states, params, dist_fn = _linear_softmax_policy()
  vs = jax.jit(lambda p: jax.tree_util.tree_map(
      lambda x: jax.random.normal(jax.random.key(3), (7,) + x.shape), p))(params)
  vs = jax.tree_util.tree_map(np.asarray, vs)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def products(p, v):
    fvp = fisher_vector_product(lambda q: distrax.Categorical(logits=states @ q["w"] + q["b"][None, :]), p)
    return jax.vmap(fvp)(v)

  out = jax.tree_util.tree_map(np.asarray, products(params, vs))
  # Reference: the seven products one at a time (no vmap), in one jitted program.
  rows = [jax.tree_util.tree_map(lambda x: x[i], vs) for i in range(7)]
  refs = jax.jit(lambda p, rs: [fisher_vector_product(dist_fn, p)(r) for r in rs])(params, rows)
  for i in range(7):
    np.testing.assert_allclose(flat(jax.tree_util.tree_map(lambda x: x[i], out)),
                               flat(refs[i]), rtol=1e-5, atol=1e-6)
  products(jax.tree_util.tree_map(lambda x: x + 1.0, params), vs)  # same shapes: no retrace


def test_dtypes_kept_and_tangents_cast():
  params = {"a": jnp.array([0.1, 0.2], jnp.float32), "h": jnp.array([0.3], jnp.bfloat16)}
  dist_fn = lambda p: distrax.Categorical(logits=jnp.concatenate([p["a"], p["h"].astype(jnp.float32)]))
  fvp = fisher_vector_product(dist_fn, params)
  out = fvp({"a": np.ones(2, np.float64), "h": np.ones(1, np.float64)})  # cast to the params' dtypes
  chex.assert_trees_all_equal_shapes_and_dtypes(out, params)


def test_all_zero_weights_give_zero_not_nan():
  states, params, dist_fn = _linear_softmax_policy()
  out = jax.jit(lambda p: fisher_vector_product(dist_fn, p, weights=jnp.zeros(5))(
      jax.tree_util.tree_map(jnp.ones_like, p)))(params)
  for leaf in jax.tree_util.tree_leaves(out):
    np.testing.assert_array_equal(leaf, 0.0)


def test_bad_input_raises_naming_the_argument():
  states, params, dist_fn = _linear_softmax_policy()
  with pytest.raises(ValueError, match="weights"):
    fisher_vector_product(dist_fn, params, weights=jnp.ones(4))
  with pytest.raises(ValueError, match="weights"):
    fisher_vector_product(dist_fn, params, weights=-jnp.ones(5))
  with pytest.raises(ValueError, match="output_fisher"):
    fisher_vector_product(dist_fn, params, output_fisher="dense")
  with pytest.raises(ValueError, match="mode"):
    kl_hessian_vector_product(dist_fn, params, mode="forward")
  with pytest.raises(TypeError, match="dist_fn"):
    fisher_vector_product(lambda p: p["w"], params)
  with pytest.raises(TypeError, match="dist_fn"):
    fisher_vector_product(None, params)
  with pytest.raises(TypeError, match="params"):
    fisher_vector_product(lambda p: distrax.Categorical(logits=jnp.zeros(3)), jnp.arange(3))
  fvp = fisher_vector_product(dist_fn, params)
  with pytest.raises(ValueError, match="`v`"):
    fvp({"w": jnp.ones((3, 4))})
  with pytest.raises(ValueError, match="`v`"):
    fvp({"w": jnp.ones((3, 5)), "b": jnp.ones(4)})
  with pytest.raises(ValueError, match="weights"):
    empirical_fisher_vector_product(lambda p: jnp.zeros(3) + p["b"][0], params, weights=jnp.ones(2))


@functools.cache
def _low_precision_data():
  draw = jax.jit(lambda: (jax.random.normal(jax.random.key(0), (8, 3)),
                          0.5 * jax.random.normal(jax.random.key(1), (3, 4)),
                          jax.random.normal(jax.random.key(2), (3, 4))))
  return tuple(np.asarray(x) for x in draw())


_LOW_PRECISION_PRODUCTS = ("ggn", "ggn_kl_output", "kl_hessian", "empirical")


@functools.cache
def _low_precision_products():
  """Every product at (p, t): one jitted function shared by the dtypes (the float32 reference compiles
  once)."""
  states = _low_precision_data()[0]
  dist_fn = lambda p: distrax.Categorical(logits=states.astype(p.dtype) @ p)
  log_prob_fn = lambda p: jax.nn.log_softmax(states.astype(p.dtype) @ p)[jnp.arange(8), jnp.arange(8) % 4]
  makers = {
      "ggn": lambda p: fisher_vector_product(dist_fn, p),
      "ggn_kl_output": lambda p: fisher_vector_product(dist_fn, p, output_fisher="kl"),
      "kl_hessian": lambda p: kl_hessian_vector_product(dist_fn, p),
      "empirical": lambda p: empirical_fisher_vector_product(log_prob_fn, p),
  }
  assert tuple(makers) == _LOW_PRECISION_PRODUCTS
  return jax.jit(lambda p, t: {name: make(p)(t) for name, make in makers.items()})  # one compile per dtype


@pytest.mark.parametrize("dtype,tol", [(jnp.bfloat16, 3e-2), (jnp.float16, 4e-3)])
def test_low_precision_params_give_the_float32_products_in_their_own_dtype(dtype, tol):
  """bfloat16 / float16 parameters: every product runs (no cotangent dtype mismatch), is finite, keeps
  the parameters' dtype, and equals the float32 product at the same (rounded) parameters and tangent
  within the low-precision tolerance."""
  _, w, v = _low_precision_data()
  w, v = w.astype(dtype), v.astype(dtype)
  products = _low_precision_products()
  refs, outs = products(w.astype(np.float32), v.astype(np.float32)), products(w, v)
  for name in _LOW_PRECISION_PRODUCTS:
    ref, out = np.asarray(refs[name]), outs[name]
    assert out.dtype == dtype, name
    out = np.asarray(out, np.float32)
    assert np.all(np.isfinite(out)), name
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.max(np.abs(ref)), err_msg=name)


def test_duck_typed_distribution_outside_distrax_uses_the_kl_hessian():
  """A distribution that is not a distrax class (no pytree, only batch_shape and kl_divergence) gets the
  exact softmax Fisher diag(p) - p p^T through the KL fallback."""

  class Softmax:  # not a pytree: the product must fall back to the parameter-space KL Hessian

    def __init__(self, logits):
      self.logits = logits
      self.batch_shape = ()

    def kl_divergence(self, other):
      p = jax.nn.softmax(self.logits)
      return jnp.sum(p * (jax.nn.log_softmax(self.logits) - jax.nn.log_softmax(other.logits)))

  logits = np.array([0.3, -1.0, 2.0], np.float32)
  expected = _np_softmax_fisher(_np_softmax(logits))
  np.testing.assert_allclose(_dense_of(lambda t: fisher_vector_product(Softmax, t), logits), expected,
                             atol=1e-6)
  with pytest.raises(TypeError, match="dist_fn"):
    kl_hessian_vector_product(lambda t: object(), logits)
