"""Natural gradient, trust-region scaling and the vectorised line search.

References: dense solves with the closed-form Fisher, the exact KL of the policies after the step, and
hand-computed line-search outcomes on a one-dimensional quadratic.
"""

import functools

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from pgjax.natural import backtracking_line_search
from pgjax.natural import fisher_vector_product
from pgjax.natural import natural_gradient
from pgjax.natural import trust_region_step
from tests.helpers import flat

NUM_STATES = 32


@functools.cache
def _policies():
  """Two policies on fixed random states, with random gradients; the draws run in one jitted program and
  the arrays are numpy (the policies close over constants, nothing is computed eagerly)."""

  @jax.jit
  def draw(key):
    k1, k2, k3 = jax.random.split(key, 3)
    states = jax.random.normal(k1, (NUM_STATES, 4))
    cat_params = {"w": 0.5 * jax.random.normal(k2, (4, 5)), "b": jnp.zeros(5)}
    gau_params = {"w": 0.5 * jax.random.normal(k2, (4, 2)), "log_std": jnp.array([-0.5, 0.3])}
    rand = lambda p: jax.tree_util.tree_map(lambda x: jax.random.normal(k3, x.shape), p)
    return states, cat_params, rand(cat_params), gau_params, rand(gau_params)

  states, cat_params, cat_grads, gau_params, gau_grads = jax.tree_util.tree_map(np.asarray,
                                                                                draw(jax.random.key(0)))
  cat = lambda p: distrax.Categorical(logits=states @ p["w"] + p["b"][None, :])
  gau = lambda p: distrax.MultivariateNormalDiag(states @ p["w"],
                                                 jnp.exp(p["log_std"])[None, :] * jnp.ones((NUM_STATES, 2)))
  return {"categorical": (cat, cat_params, cat_grads),
          "gaussian": (gau, gau_params, gau_grads)}


def _mean_kl(dist_fn, p, q):
  return jnp.mean(dist_fn(p).kl_divergence(dist_fn(q)))


def _add(a, b):
  return jax.tree_util.tree_map(jnp.add, a, b)


def test_gaussian_natural_gradient_is_sigma2_g_mu_and_half_g_log_sigma():
  """F = diag(1/sigma^2, 2) in (mu, log sigma): F^-1 g = (sigma^2 g_mu, g_log_sigma / 2), exactly."""
  params = {"mu": np.float32(0.3), "log_sigma": np.float32(-0.8)}
  grads = {"mu": np.float32(1.5), "log_sigma": np.float32(-0.4)}

  @jax.jit
  def solve(p, g):
    fvp = fisher_vector_product(lambda q: distrax.Normal(q["mu"], jnp.exp(q["log_sigma"])), p)
    return natural_gradient(g, fvp, damping=0.0, iters=2, tol=0.0)

  d, info = solve(params, grads)
  np.testing.assert_allclose(d["mu"], np.exp(-1.6) * 1.5, rtol=1e-5)
  np.testing.assert_allclose(d["log_sigma"], -0.2, rtol=1e-5)
  assert int(info.iterations) == 2


def test_damped_natural_gradient_on_softmax_policy_matches_dense_solve():
  dist_fn, params, grads = _policies()["categorical"]
  damping = 0.1

  @jax.jit
  def dense_and_solve(p, g):
    fvp = fisher_vector_product(dist_fn, p)
    vec, unravel = ravel_pytree(p)
    dense = jax.jacfwd(lambda v: ravel_pytree(fvp(unravel(v)))[0])(jnp.zeros_like(vec))
    return dense, natural_gradient(g, fvp, damping=damping, iters=30, tol=0.0)

  dense, (d, info) = dense_and_solve(params, grads)
  expected = np.linalg.solve(np.asarray(dense, np.float64) + damping * np.eye(dense.shape[0]),
                             flat(grads).astype(np.float64))
  np.testing.assert_allclose(flat(d), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
  chex.assert_trees_all_equal_shapes_and_dtypes(d, grads)
  assert np.all(np.isfinite(flat(d)))


@pytest.mark.parametrize("policy", ["categorical", "gaussian"])
def test_trust_region_step_achieves_max_kl_and_damped_normalisation_undershoots(policy):
  """Normalised with the undamped Fisher, the exact mean KL after the step is within 10% of max_kl = 0.01
  for damping 1e-3, 0.1 and 1 (measured: categorical 1.01-1.03 x, Gaussian 0.94 x). Normalised with the
  damped curvature d^T (F + lambda I) d, the KL falls to max_kl * d^T F d / d^T (F + lambda I) d: below 60%
  of the target at damping 1 for both policies (categorical: 5% already at damping 1e-3, because the
  gradient has a component in the softmax's null space that the damping term dominates)."""
  dist_fn, params, grads = _policies()[policy]
  max_kl = 0.01

  @jax.jit
  def run(damping):
    fvp = fisher_vector_product(dist_fn, params)
    d, _ = natural_gradient(grads, fvp, damping=damping, iters=40)
    step, info = trust_region_step(d, grads, fvp, max_kl=max_kl)
    damped = lambda v: jax.tree_util.tree_map(lambda a, b: a + damping * b, fvp(v), v)
    step_damped, info_damped = trust_region_step(d, grads, damped, max_kl=max_kl)
    return (_mean_kl(dist_fn, params, _add(params, step)), info,
            _mean_kl(dist_fn, params, _add(params, step_damped)), info_damped)

  for damping in [1e-3, 0.1, 1.0]:
    kl, info, kl_damped, info_damped = run(jnp.asarray(damping))
    np.testing.assert_allclose(info.predicted_kl, max_kl, rtol=1e-4)
    assert abs(float(kl) / max_kl - 1.0) < 0.1, (damping, float(kl))
    undershoot = float(info.curvature) / float(info_damped.curvature)  # d^T F d / d^T (F + lambda I) d
    assert undershoot < 1.0
    np.testing.assert_allclose(float(kl_damped) / max_kl, undershoot, rtol=0.1)
    if damping == 1.0:
      assert float(kl_damped) < 0.6 * max_kl


def test_max_kl_is_traced_and_step_kl_scales_linearly():
  dist_fn, params, grads = _policies()["categorical"]

  def step_kl(max_kl):
    fvp = fisher_vector_product(dist_fn, params)
    d, _ = natural_gradient(grads, fvp, damping=0.1, iters=20)
    step, info = trust_region_step(d, grads, fvp, max_kl=max_kl)
    return info.predicted_kl, _mean_kl(dist_fn, params, _add(params, step))

  radii = np.array([1e-4, 1e-3, 1e-2], np.float32)
  predicted, achieved = map(np.asarray, jax.jit(jax.vmap(step_kl))(radii))
  np.testing.assert_allclose(predicted, radii, rtol=1e-4)
  np.testing.assert_allclose(achieved / radii, 1.0, atol=0.1)


def test_trust_region_guard_zero_and_null_space_directions():
  p = np.array([0.2, -0.1, 0.5], np.float32)

  @jax.jit  # one program for both directions
  def step_along(d):
    fvp = fisher_vector_product(lambda t: distrax.Categorical(logits=t), p)
    return trust_region_step(d, jnp.ones(3), fvp, max_kl=0.01)

  for d in [np.zeros(3, np.float32), np.ones(3, np.float32)]:  # zero, and in the softmax Fisher's null space
    step, info = step_along(d)
    np.testing.assert_array_equal(step, np.zeros(3))
    assert float(info.scale) == 0.0 and np.isfinite(float(info.predicted_kl))


def test_line_search_hand_computed_quadratic():
  """objective(x) = -(x - 1)^2 from x = 0 with the full step 4: fractions 1, 1/2, 1/4, ..."""
  objective = lambda x: -jnp.sum((x - 1.0) ** 2)
  no_kl = lambda x: jnp.zeros(())
  x0, step = np.array([0.0], np.float32), np.array([4.0], np.float32)

  @jax.jit  # the four searches in one program
  def searches(x0, step):
    return (backtracking_line_search(objective, no_kl, x0, step, max_kl=1.0),
            backtracking_line_search(objective, lambda x: jnp.sum(x**2), x0, step, max_kl=0.5),
            backtracking_line_search(objective, no_kl, x0, step, max_kl=1.0, expected_improvement=8.0,
                                     accept_ratio=0.6),
            backtracking_line_search(objective, no_kl, x0, -step, max_kl=1.0, num_steps=6))

  plain, kl_binding, armijo, descent = searches(x0, step)
  # f=1: x=4, improvement -8; f=1/2: x=2, improvement 0 (not > 0); f=1/4: x=1, improvement 1. Accept 1/4.
  x, info = plain
  np.testing.assert_allclose(x, [1.0])
  assert float(info.step_fraction) == 0.25 and int(info.num_backtracks) == 2 and bool(info.accepted)
  np.testing.assert_allclose(info.improvement, 1.0)
  # KL binding: kl(x) = x^2 <= 0.5 rejects x = 1, accepts x = 0.5 (f = 1/8, improvement 0.75).
  x, info = kl_binding
  np.testing.assert_allclose(x, [0.5])
  assert int(info.num_backtracks) == 3
  np.testing.assert_allclose(info.kl, 0.25)
  # Armijo: expected improvement g * s = 2 * 4 = 8. With accept_ratio 0.6, f=1/4 needs 1.2 > 1: reject;
  # f=1/8 needs 0.6 <= 0.75: accept.
  x, info = armijo
  np.testing.assert_allclose(x, [0.5])
  # A descent step is never accepted: params unchanged.
  x, info = descent
  np.testing.assert_array_equal(x, x0)
  assert not bool(info.accepted) and int(info.num_backtracks) == 6 and float(info.step_fraction) == 0.0


def test_line_search_rejects_non_finite_candidates():
  objective = lambda x: jnp.sum(jnp.sqrt(3.0 - x) + x)  # NaN for x > 3, increasing up to x = 2.75
  x, info = jax.jit(lambda x0, step: backtracking_line_search(objective, lambda x: jnp.zeros(()), x0, step,
                                                              max_kl=1.0))(np.array([0.0], np.float32),
                                                                           np.array([8.0], np.float32))
  np.testing.assert_allclose(x, [2.0])  # x = 8 and x = 4 give NaN and are skipped; x = 2 improves
  assert int(info.num_backtracks) == 2 and np.isfinite(float(info.improvement))


def _trpo_step(key, params, states, labels, max_kl):
  """One TRPO step on a contextual classification bandit (reward 1 for the right class)."""
  dist_fn = lambda p: distrax.Categorical(logits=states @ p["w"] + p["b"][None, :])
  pi_old = dist_fn(params)
  actions = pi_old.sample(seed=key)
  rewards = (actions == labels).astype(jnp.float32)
  adv = rewards - rewards.mean()
  logp_old = jax.lax.stop_gradient(pi_old.log_prob(actions))
  surrogate = lambda p: jnp.mean(jnp.exp(dist_fn(p).log_prob(actions) - logp_old) * adv)
  kl_fn = lambda p: _mean_kl(dist_fn, params, p)
  grads = jax.grad(surrogate)(params)
  fvp = fisher_vector_product(dist_fn, params)
  d, _ = natural_gradient(grads, fvp, damping=0.1, iters=10)
  step, tr = trust_region_step(d, grads, fvp, max_kl=max_kl)
  new, ls = backtracking_line_search(surrogate, kl_fn, params, step, max_kl=max_kl,
                                     expected_improvement=tr.expected_improvement)
  return new, ls


def test_whole_trpo_step_under_jit_vmap_over_seeds(key):
  num_seeds = 64

  @jax.jit
  def setup(key):
    k1, k2 = jax.random.split(key)
    states = jax.random.normal(k1, (NUM_STATES, 4))
    true_w = jax.random.normal(k2, (4, 5))
    labels = jnp.argmax(states @ true_w, axis=-1)
    return states, labels, jax.random.split(key, num_seeds), jax.random.split(k1, num_seeds)

  states, labels, keys, other_keys = setup(key)
  states, labels = np.asarray(states), np.asarray(labels)
  params = {"w": np.zeros((4, 5), np.float32), "b": np.zeros(5, np.float32)}

  step = jax.jit(jax.vmap(chex.assert_max_traces(_trpo_step, n=1), in_axes=(0, None, None, None, None)))
  new, ls = step(keys, params, states, labels, 0.01)
  step(other_keys, params, states, labels, 0.02)  # new max_kl value: no retrace
  chex.assert_shape(new["w"], (num_seeds, 4, 5))
  new, ls = jax.tree_util.tree_map(np.asarray, (new, ls))
  assert np.all(ls.kl <= 0.01) and np.all(np.where(ls.accepted, ls.improvement > 0, True))
  assert float(ls.accepted.mean()) > 0.5
  # The expected reward (exact: mean over states of pi(label | s)) improves on average over seeds by
  # more than 5 standard errors (numpy, float64).

  def reward(w, b):  # [..., 4, 5], [..., 5] -> [...]
    logits = np.einsum("si,...ia->...sa", states.astype(np.float64), w) + b[..., None, :]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return probs[..., np.arange(NUM_STATES), labels].mean(-1)

  gains = reward(new["w"], new["b"]) - reward(params["w"], params["b"])
  assert float(gains.mean()) > 5 * float(gains.std(ddof=1)) / np.sqrt(num_seeds)


def test_bad_input_raises_naming_the_argument():
  dist_fn, params, grads = _policies()["categorical"]
  fvp = fisher_vector_product(dist_fn, params)
  with pytest.raises(ValueError, match="iters"):
    natural_gradient(grads, fvp, iters=0)
  with pytest.raises(ValueError, match="damping"):
    natural_gradient(grads, fvp, damping=-0.1)
  with pytest.raises(ValueError, match="fvp"):
    natural_gradient({"w": grads["w"]}, fvp)
  with pytest.raises(ValueError, match="fvp"):
    natural_gradient(grads, lambda v: {"w": v["w"]})
  with pytest.raises(TypeError, match="fvp"):
    natural_gradient(grads, None)
  with pytest.raises(ValueError, match="max_kl"):
    trust_region_step(grads, grads, fvp, max_kl=0.0)
  with pytest.raises(ValueError, match="max_kl"):
    trust_region_step(grads, grads, fvp, max_kl=-1.0)
  with pytest.raises(ValueError, match="grads"):
    trust_region_step(grads, {"w": grads["w"]}, fvp, max_kl=0.01)
  with pytest.raises(ValueError, match="num_steps"):
    backtracking_line_search(jnp.sum, jnp.sum, jnp.zeros(2), jnp.ones(2), max_kl=0.1, num_steps=0)
  with pytest.raises(ValueError, match="shrink"):
    backtracking_line_search(jnp.sum, jnp.sum, jnp.zeros(2), jnp.ones(2), max_kl=0.1, shrink=1.5)
  with pytest.raises(ValueError, match="step"):
    backtracking_line_search(jnp.sum, jnp.sum, jnp.zeros(2), jnp.ones(3), max_kl=0.1)


def test_linear_quadratic_natural_field_points_at_the_riccati_optimum():
  """The 1-D linear-quadratic example (Peters and Schaal, 2008) with the dynamics stated: s' = s + a, a ~ N(k s, sigma^2), r = -s^2 - a^2,
  s_0 ~ N(0, 1), discount 0.99, infinite horizon. Closed forms (derived in
  experiments/natural_gradient_field.py): J = -(1 + k^2) M - sigma^2 / (1 - g) with
  M = (1 + g sigma^2 / (1 - g)) / (1 - g (1 + k)^2); Fisher over the discounted visitation
  diag((1 - g) M / sigma^2, 2 / sigma^2); optimum (k*, 0) with the Riccati gain
  k* = -g P / (1 + g P), g P^2 + (1 - 2g) P - 1 = 0."""
  g = 0.99
  p = ((2 * g - 1) + np.sqrt(1 + 4 * g * g)) / (2 * g)
  k_star = -g * p / (1 + g * p)
  # k* against a numerical argmin of J(k, 0) (float64 NumPy grid), not the -1 quoted for other dynamics.
  ks = np.linspace(-1.5, 0.0, 1_500_001)
  assert abs(ks[np.argmax(-(1 + ks**2) / (1 - g * (1 + ks) ** 2))] - k_star) < 1e-5
  np.testing.assert_allclose(k_star, -0.61525, atol=1e-5)

  def second_moment(k, s):
    return (1 + g * s**2 / (1 - g)) / (1 - g * (1 + k) ** 2)

  def objective(theta):
    k, s = theta
    return -(1 + k**2) * second_moment(k, s) - s**2 / (1 - g)

  def cosines(theta):
    k, s = theta
    grad = jax.grad(objective)(theta)
    fisher = jnp.diag(jnp.stack([(1 - g) * second_moment(k, s) / s**2, 2 / s**2]))
    nat, _ = natural_gradient(grad, lambda v: fisher @ v, damping=0.0, iters=2, tol=0.0)
    to_opt = jnp.stack([k_star - k, -s])
    cos = lambda f: jnp.dot(f, to_opt) / (jnp.linalg.norm(f) * jnp.linalg.norm(to_opt))
    return cos(grad), cos(nat)

  thetas = np.stack([np.linspace(-2.0, 0.0, 201), np.full(201, 0.05)], axis=-1).astype(np.float32)
  cos_vanilla, cos_natural = map(np.asarray, jax.jit(jax.vmap(cosines))(thetas))
  assert float(cos_natural.mean()) > 0.99
  assert float(cos_vanilla.mean()) < 0.5


def test_linear_quadratic_policy_fisher_from_pgjax_matches_closed_form():
  """pgjax's Fisher of a ~ N(k s, sigma^2) over the discounted state distribution of s' = s + a.

  Closed form (parameters (k, sigma)): F_kk = E_w[s^2] / sigma^2, F_{sigma sigma} = 2 / sigma^2, F_k,sigma = 0,
  with E_w[s^2] the gamma^t-weighted mean of m_t = E[s_t^2], m_{t+1} = (1 + k)^2 m_t + sigma^2, m_0 = 1.
  """
  import distrax
  import pgjax
  k, sigma, gamma, steps = -0.4, 0.3, 0.9, 200
  m = [1.0]
  for _ in range(steps - 1):
    m.append((1 + k) ** 2 * m[-1] + sigma ** 2)
  m = np.array(m)
  w = gamma ** np.arange(steps)
  states = np.concatenate([np.sqrt(m), -np.sqrt(m)]).astype(np.float32)  # two points with E[s^2] = m_t
  weights = np.tile(w, 2).astype(np.float32)

  @jax.jit
  def dense(theta):
    fvp = pgjax.natural.fisher_vector_product(lambda p: distrax.Normal(p[0] * states, p[1]), theta,
                                              weights=weights)
    return jax.jacfwd(fvp)(jnp.zeros(2))

  dense = np.asarray(dense(np.array([k, sigma], np.float32)))
  want = np.diag([np.sum(w * m) / np.sum(w) / sigma ** 2, 2 / sigma ** 2])
  np.testing.assert_allclose(dense, want, rtol=1e-5, atol=1e-5)


@functools.cache
def _low_precision_solve():
  """Damped natural gradient and trust-region step; one jitted function shared by every dtype (the float32
  reference compiles once)."""
  cat = _policies()["categorical"][0]
  dist_fn = lambda p: cat(jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), p))

  @jax.jit
  def solve(p, g):
    fvp = fisher_vector_product(dist_fn, p)
    d, _ = natural_gradient(g, fvp, damping=0.1, iters=30)
    step, info = trust_region_step(d, g, fvp, max_kl=0.01)
    return d, step, info.predicted_kl

  return solve


@pytest.mark.parametrize("dtype,tol", [(jnp.bfloat16, 5e-2), (jnp.float16, 5e-3)])
def test_low_precision_params_natural_gradient_matches_float32(dtype, tol):
  """bfloat16 / float16 parameters: the damped natural gradient and the trust-region step run, are
  finite, keep the dtype, and equal the float32 computation at the same rounded inputs."""
  _, params, grads = _policies()["categorical"]
  low = lambda t: jax.tree_util.tree_map(lambda x: x.astype(dtype), t)
  f32 = lambda t: jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), t)
  params, grads = low(params), low(grads)
  solve = _low_precision_solve()
  d, step, kl = solve(params, grads)
  d_ref, step_ref, _ = solve(f32(params), f32(grads))
  chex.assert_trees_all_equal_shapes_and_dtypes(d, params)
  chex.assert_trees_all_equal_shapes_and_dtypes(step, params)
  for out, ref in ((d, d_ref), (step, step_ref)):
    out, ref = flat(f32(out)), flat(ref)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.max(np.abs(ref)))
  np.testing.assert_allclose(kl, 0.01, rtol=1e-3)
