r"""Tests of pgjax.zeroth_order against closed forms.

Closed forms used (derivations in the comments; :math:`u` one direction, :math:`M` distinct directions):

* Smoothed target: for :math:`f(x) = \sum_k \sin x_k`,
  :math:`\mathbb{E}_u[\sin(x + \sigma u)] = \sin(x) e^{-\sigma^2/2}`, so the estimand is
  :math:`\cos(x) e^{-\sigma^2/2}` (not :math:`\cos x`).
* Quadratic :math:`f(x) = \frac12 x^\top A x + c^\top x + e`, :math:`g = Ax + c`,
  :math:`f(x + \sigma u) = f(x) + \sigma g^\top u + \frac{\sigma^2}{2} u^\top A u`, and with
  :math:`c_0 = f(x) - b` for a constant baseline :math:`b`, one direction gives
  :math:`\hat g_1 = (c_0/\sigma + g^\top u + \frac\sigma2 u^\top A u)\, u` with mean :math:`g`.
  Gaussian moments :math:`\mathbb{E}\|u\|^2 = d`, :math:`\mathbb{E}[(g^\top u)^2\|u\|^2] = (d+2)\|g\|^2`,
  :math:`\mathbb{E}[u^\top A u\|u\|^2] = (d+2)\operatorname{tr}A`,
  :math:`\mathbb{E}[(u^\top A u)^2 \|u\|^2] = (d+4)(T^2 + 2\operatorname{tr}A^2)` with :math:`T = \operatorname{tr}A`
  (Isserlis), and odd moments vanish, so
  :math:`V_1 = c_0^2 d/\sigma^2 + (d+1)\|g\|^2 + c_0(d+2)T + \frac{\sigma^2}{4}(d+4)(T^2 + 2\operatorname{tr}A^2)`.
  On the sphere of radius :math:`\sqrt d` (:math:`\|u\|^2 = d`, :math:`\mathbb{E}[(u^\top A u)^2] =
  d(T^2 + 2\operatorname{tr}A^2)/(d+2)`):
  :math:`V_1 = d c_0^2/\sigma^2 + (d-1)\|g\|^2 + d c_0 T + \frac{\sigma^2}{4}\frac{d^2}{d+2}(T^2 + 2\operatorname{tr}A^2)`.
  An antithetic pair gives exactly :math:`(g^\top u) u`: :math:`V_1 = (d+1)\|g\|^2` (sphere :math:`(d-1)\|g\|^2`).
  iid: :math:`\operatorname{tr}\operatorname{Cov} = V_1/M`. Orthogonal blocks of sizes :math:`k_b`: cross terms
  :math:`\mathbb{E}[h_i h_j u_i^\top u_j] - \|g\|^2 = -\|g\|^2`, so
  :math:`\operatorname{tr}\operatorname{Cov} = V_1/M - \|g\|^2\sum_b k_b(k_b - 1)/M^2`.
"""

import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import pgjax
from pgjax import sweep
from pgjax import testing
from pgjax._src import noise as noise_lib
from pgjax._src.shaping import centered_ranks
from pgjax.testing import quadratic_trace_covariance
from pgjax._src.zeroth_order import zeroth_order
from tests.helpers import assert_unbiased_with_power

X_SIN = {"a": jnp.array([0.3, -1.0, 2.2], jnp.float32), "b": jnp.array(0.7, jnp.float32)}


def f_sin(p):
  return jnp.sum(jnp.sin(p["a"])) + jnp.sin(p["b"])


def smoothed_sin_grad(x, sigma):
  return jax.tree_util.tree_map(lambda v: jnp.cos(v) * np.exp(-sigma ** 2 / 2), x)


# ---------------------------------------------------------------- unbiasedness (smoothed objective)

def stack(*estimators):
  """One estimator over a tuple of params running several estimators (one compilation in the tests)."""
  def est(key, params):
    keys = jax.random.split(key, len(estimators))
    return tuple(e(k, p)[0] for e, k, p in zip(estimators, keys, params)), None
  return est


def multi_stats(estimators, params, key, num_seeds, groups=40):
  """Per estimator: mean [D], SE of the mean [D], tr Cov and its SE (batch means), in one jit."""
  @jax.jit
  def run(key):
    keys = jax.random.split(key, num_seeds)
    return [jax.vmap(lambda k, e=e: ravel_pytree(e(k, params)[0])[0])(keys) for e in estimators]

  out = []
  for g in run(key):
    g = np.asarray(g, np.float64)
    tr_groups = g.reshape(groups, num_seeds // groups, -1).var(axis=1, ddof=1).sum(-1)
    out.append((g.mean(0), g.std(0, ddof=1) / np.sqrt(num_seeds), g.var(0, ddof=1).sum(),
                tr_groups.std(ddof=1) / np.sqrt(groups)))
  return out


UNBIASED_CASES = [
    ("plain", "gaussian", None),
    ("forward", "gaussian", None),
    ("antithetic", "gaussian", None),
    ("central", "orthogonal", None),
    ("plain", "orthogonal", "leave_one_out"),
    ("plain", "gaussian", "optimal_leave_one_out"),
]


def test_unbiased_for_smoothed_sin(key):
  sigma, n = 1.0, 6
  ests = [zeroth_order(f_sin, num_directions=n, sigma=sigma, scheme=s, directions=dr, baseline=b)
          for s, dr, b in UNBIASED_CASES]
  params = (X_SIN,) * len(ests)
  target = (smoothed_sin_grad(X_SIN, sigma),) * len(ests)
  ok, report, stats = testing.check_unbiased(stack(*ests), params, key, target=target, num_replicates=2000,
                                             atol=1e-4, chunk_size=500)
  assert ok, report
  # Power control, per configuration: the unsmoothed gradient cos(x) (a factor e^{1/2} away) is rejected.
  mean = np.asarray(ravel_pytree(stats.mean)[0]).reshape(len(ests), -1)
  se = np.asarray(ravel_pytree(stats.mean_se)[0]).reshape(len(ests), -1)
  wrong = np.asarray(ravel_pytree(jax.tree_util.tree_map(jnp.cos, X_SIN))[0])
  for case, m_i, se_i in zip(UNBIASED_CASES, mean, se):
    assert np.any(np.abs(m_i - wrong) > 5 * se_i + 1e-4), case


def test_mean_baseline_is_exactly_scaled_leave_one_out(key):
  # f_i - mean(f) = (N-1)/N (f_i - mean_{j != i} f_j): the batch-mean estimate is biased by the factor (N-1)/N.
  n = 5
  loo = zeroth_order(f_sin, num_directions=n, sigma=0.4, scheme="plain", baseline="leave_one_out")
  mean = zeroth_order(f_sin, num_directions=n, sigma=0.4, scheme="plain", baseline="mean")
  g_loo, g_mean = jax.jit(lambda k: (loo(k, X_SIN)[0], mean(k, X_SIN)[0]))(key)
  chex.assert_trees_all_close(g_mean, jax.tree_util.tree_map(lambda v: v * (n - 1) / n, g_loo),
                              rtol=1e-5, atol=1e-6)


def test_sphere_directions_unbiased_on_quadratic_but_not_smoothed_sin(key):
  # Sphere directions estimate the ball-smoothed gradient: exact on a quadratic, different from
  # cos(x) e^{-sigma^2/2} on sin (the "power control": the same check must reject it).
  a_mat, c_vec, x = _quadratic(4)
  est_quad = zeroth_order(_quad_fn(a_mat, c_vec), num_directions=4, sigma=0.7, scheme="antithetic",
                          directions="sphere")
  est_sin = zeroth_order(f_sin, num_directions=4, sigma=1.5, scheme="antithetic", directions="sphere")
  stats = sweep.gradient_stats(stack(est_quad, est_sin), (x, X_SIN), key, num_seeds=4000, chunk_size=500,
                               true_grad=(a_mat @ x + c_vec, smoothed_sin_grad(X_SIN, 1.5)))
  err = np.abs(ravel_pytree(stats.mean)[0] - ravel_pytree((a_mat @ x + c_vec, smoothed_sin_grad(X_SIN, 1.5)))[0])
  bound = 5 * np.asarray(ravel_pytree(stats.mean_se)[0]) + 1e-4
  assert np.all(err[:4] <= bound[:4]), (err[:4], bound[:4])
  assert np.any(err[4:] > bound[4:]), (err[4:], bound[4:])


# ---------------------------------------------------------------- trace covariance on a quadratic

def _quadratic(d):
  rng = np.random.default_rng(0)
  b = rng.normal(size=(d, d))
  a_mat = (b @ b.T / d + np.eye(d)).astype(np.float32)
  a_mat[0, 1] = a_mat[1, 0] = -0.6  # indefinite-ish off-diagonal, still symmetric
  c_vec = rng.normal(size=d).astype(np.float32)
  x = np.linspace(-1.0, 1.0, d).astype(np.float32)
  return jnp.asarray(a_mat), jnp.asarray(c_vec), jnp.asarray(x)


def _quad_fn(a_mat, c_vec, e=0.0):
  return lambda x: 0.5 * x @ a_mat @ x + c_vec @ x + e


def closed_form_trace_cov(scheme, directions, a_mat, c_vec, x, e, sigma, n, b=None):
  return quadratic_trace_covariance(a_mat, c_vec, x, sigma=sigma, num_directions=n, scheme=scheme,
                                    directions=directions, offset=e, baseline=b)


SCHEMES = ("plain", "forward", "antithetic")
COV_CASES = [(s, dr) for s in SCHEMES
             for dr in ("gaussian", "sphere", "orthogonal", "orthogonal_sphere")]
# The closed form of the "neighbouring" choice, which the same check must reject (power control).
WRONG = {"gaussian": "sphere", "sphere": "gaussian", "orthogonal": "gaussian", "orthogonal_sphere": "sphere"}


def test_trace_covariance_matches_closed_form(key):
  d, sigma, e, seeds = 4, 0.5, 1.5, 8000
  a_mat, c_vec, x = _quadratic(d)
  f = _quad_fn(a_mat, c_vec, e)
  n_of = lambda scheme: 12 if scheme == "antithetic" else 6
  # the 12 choices (chunking does not change the directions: test_same_key_same_estimate_whatever_the_chunking)
  cases = [(s, dr, None) for s, dr in COV_CASES]
  ests = [zeroth_order(f, num_directions=n_of(s), sigma=sigma, scheme=s, directions=dr, batch_size=bs)
          for s, dr, bs in cases]
  results = multi_stats(ests, x, key, seeds)
  g = np.asarray(a_mat @ x + c_vec)
  for (scheme, directions, _), (mean, mean_se, v, se) in zip(cases, results):
    want = closed_form_trace_cov(scheme, directions, a_mat, c_vec, x, e, sigma, n_of(scheme))
    assert abs(v - want) <= 5 * se + 1e-3 * want, (scheme, directions, v, se, want)
    # power control: the closed form of the neighbouring choice is rejected by the same check
    wrong = closed_form_trace_cov(scheme, WRONG[directions], a_mat, c_vec, x, e, sigma, n_of(scheme))
    assert abs(v - wrong) > 5 * se + 1e-3 * want, (scheme, directions, v, se, wrong)
    # every scheme/direction choice is unbiased for the gradient of a quadratic
    assert np.all(np.abs(mean - g) <= 5 * mean_se + 1e-4), (scheme, directions, mean, g)


def test_antithetic_full_orthogonal_sphere_block_is_exact(key):
  # d pairs along an orthonormal basis scaled by sqrt(d): (1/d) sum_p (g.u_p) u_p = g exactly.
  a_mat, c_vec, x = _quadratic(4)
  est = zeroth_order(_quad_fn(a_mat, c_vec), num_directions=8, sigma=0.3, scheme="antithetic",
                     directions="orthogonal_sphere")
  g, _ = jax.jit(est)(key, x)
  np.testing.assert_allclose(g, a_mat @ x + c_vec, rtol=1e-4, atol=1e-5)


def test_constant_baseline_at_optimum_matches_closed_form_minimum(key):
  # V_1(c0) is a parabola in c0 minimised at c0* = -sigma^2 (d+2) tr A / (2d), i.e.
  # b* = E[f(x + s u)||u||^2] / E||u||^2 = f(x) + sigma^2 (d+2) tr A / (2d) (seed 003).
  d, sigma, e, n = 4, 0.8, 3.0, 4
  a_mat, c_vec, x = _quadratic(d)
  f = _quad_fn(a_mat, c_vec, e)
  f0 = float(f(x))
  b_star = f0 + sigma ** 2 * (d + 2) * float(jnp.trace(a_mat)) / (2 * d)
  est = zeroth_order(f, num_directions=n, sigma=sigma, scheme="plain", baseline=b_star)
  [(_, _, v, se)] = multi_stats([est], x, key, 8000)
  want = closed_form_trace_cov("plain", "gaussian", a_mat, c_vec, x, e, sigma, n, b=b_star)
  assert abs(v - want) <= 5 * se + 1e-3 * want
  # b* beats b = f(x) (forward differences), by the closed-form amount.
  fwd = closed_form_trace_cov("forward", "gaussian", a_mat, c_vec, x, e, sigma, n)
  assert want < fwd
  assert v + 5 * se < fwd


# ---------------------------------------------------------------- variance reduction by baselines

def test_optimal_baseline_reduces_variance_against_zero(key):
  f = lambda p: f_sin(p) + 5.0  # a large offset makes b = 0 costly
  none = zeroth_order(f, num_directions=8, sigma=0.5, scheme="plain", baseline="none")
  opt = zeroth_order(f, num_directions=8, sigma=0.5, scheme="plain", baseline="optimal_leave_one_out")
  opt_in = zeroth_order(f, num_directions=8, sigma=0.5, scheme="plain", baseline="optimal")
  (_, _, v_none, se_none), (_, _, v_opt, se_opt), (_, _, v_in, se_in) = multi_stats(
      [none, opt, opt_in], X_SIN, key, 4000)
  assert v_opt + 5 * se_opt < 0.2 * (v_none - 5 * se_none), (v_opt, v_none)
  assert v_in + 5 * se_in < 0.2 * (v_none - 5 * se_none), (v_in, v_none)
  # power control: the reverse claim fails the same check
  assert not v_none + 5 * se_none < v_opt - 5 * se_opt


def test_common_random_numbers_cancel_additive_noise_exactly(key):
  def f_noisy(k, p):
    return f_sin(p) + 3.0 * jax.random.normal(k)

  crn = zeroth_order(f_noisy, num_directions=6, sigma=0.5, scheme="antithetic", f_takes_key=True)
  clean = zeroth_order(f_sin, num_directions=6, sigma=0.5, scheme="antithetic")
  g_crn, g_clean = jax.jit(lambda k: (crn(k, X_SIN)[0], clean(k, X_SIN)[0]))(key)
  chex.assert_trees_all_close(g_crn, g_clean, rtol=1e-5, atol=1e-5)
  indep = zeroth_order(f_noisy, num_directions=6, sigma=0.5, scheme="antithetic", f_takes_key=True,
                       common_random_numbers=False)
  (_, _, v_crn, se_crn), (mean, mean_se, v_ind, se_ind) = multi_stats([crn, indep], X_SIN, key, 4000)
  target = np.asarray(ravel_pytree(smoothed_sin_grad(X_SIN, 0.5))[0])
  assert np.all(np.abs(mean - target) <= 5 * mean_se + 1e-4)  # independent keys: still unbiased
  assert np.any(np.abs(mean - 0.5 * target) > 5 * mean_se + 1e-4)  # power control
  assert v_crn + 5 * se_crn < 0.5 * (v_ind - 5 * se_ind), (v_crn, v_ind)


# ---------------------------------------------------------------- fitness shaping

def test_rank_shaping_is_invariant_to_monotone_transforms_and_flags_the_estimand(key):
  shaped = zeroth_order(f_sin, num_directions=8, sigma=0.5, scheme="antithetic", shaping="centered_ranks")
  shaped_exp = zeroth_order(lambda p: jnp.exp(3.0 * f_sin(p)), num_directions=8, sigma=0.5,
                            scheme="antithetic", shaping="centered_ranks")
  # z-scores are not invariant to exp (power control for the check above).
  zs = zeroth_order(f_sin, num_directions=8, sigma=0.5, scheme="plain", shaping="zscore")
  zs_exp = zeroth_order(lambda p: jnp.exp(3.0 * f_sin(p)), num_directions=8, sigma=0.5, scheme="plain",
                        shaping="zscore")
  plain = zeroth_order(f_sin, num_directions=8, sigma=0.5)
  (g1, aux1), (g2, _), (z1, _), (z2, _), (_, aux) = jax.jit(
      lambda k: [e(k, X_SIN) for e in (shaped, shaped_exp, zs, zs_exp, plain)])(key)
  chex.assert_trees_all_close(g1, g2, rtol=1e-6, atol=1e-7)
  assert bool(aux1.estimand_changed)
  assert not np.allclose(z1["a"], z2["a"], rtol=1e-3)
  assert not bool(aux.estimand_changed)


# ---------------------------------------------------------------- traced sigma, jit, vmap, pytrees

def test_sigma_sweep_is_one_compilation_and_uses_each_sigma(key):
  sigmas = jnp.array([0.2, 0.8, 1.5], jnp.float32)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def sweep_means(sig):
    def one(s):
      est = zeroth_order(f_sin, num_directions=8, sigma=s, scheme="antithetic")
      st = sweep.gradient_stats(est, X_SIN, key, num_seeds=4000, chunk_size=500)
      return st.mean, st.mean_se
    return jax.vmap(one)(sig)

  means, ses = sweep_means(sigmas)
  means2, _ = sweep_means(sigmas * 1.0)  # same shapes: no retrace (assert_max_traces would raise)
  chex.assert_trees_all_close(means, means2)
  for i, s in enumerate(np.asarray(sigmas)):
    target = smoothed_sin_grad(X_SIN, float(s))
    for leaf in ("a", "b"):
      err = np.abs(np.asarray(means[leaf][i]) - np.asarray(target[leaf]))
      assert np.all(err <= 5 * np.asarray(ses[leaf][i]) + 1e-4), (s, leaf, err)
  # power control: sigma 0.2's smoothed target is far from sigma 1.5's mean
  err = np.abs(np.asarray(means["a"][2]) - np.asarray(smoothed_sin_grad(X_SIN, 0.2)["a"]))
  assert np.any(err > 5 * np.asarray(ses["a"][2]) + 1e-4)


def test_pytree_structure_dtypes_jit_and_vmap(key):
  params = {"w": jnp.ones((2, 3), jnp.bfloat16), "b": (jnp.zeros((3,), jnp.float32), jnp.array(1.0))}
  f = lambda p: jnp.sum(p["w"].astype(jnp.float32)) + jnp.sum(p["b"][0] ** 2) + p["b"][1]
  est = zeroth_order(f, num_directions=4, sigma=0.1, scheme="antithetic")
  # jit of vmap over raw (uint32) keys; typed keys are used everywhere else in this file.
  gs, auxs = jax.jit(jax.vmap(est, in_axes=(0, None)))(jax.random.split(jax.random.PRNGKey(0), 3), params)
  g = jax.tree_util.tree_map(lambda v: v[0], gs)
  chex.assert_trees_all_equal_structs(g, params)
  chex.assert_trees_all_equal_dtypes(g, params)
  chex.assert_trees_all_equal_shapes(g, params)
  chex.assert_shape(gs["w"], (3, 2, 3))
  chex.assert_shape(auxs.values, (3, 4))
  assert np.all(np.asarray(auxs.num_evaluations) == 4)


def test_num_evals_reports_the_budget(key):
  ests = (zeroth_order(f_sin, num_directions=7, sigma=0.1, scheme="forward"),
          zeroth_order(f_sin, num_directions=7, sigma=0.1, scheme="plain", baseline="mean"),
          zeroth_order(f_sin, num_directions=8, sigma=0.1, scheme="antithetic"))
  aux_f, aux_p, aux_a = jax.jit(lambda k: [e(k, X_SIN)[1] for e in ests])(key)
  assert int(aux_f.num_evaluations) == 8 and int(aux_p.num_evaluations) == 7 and int(aux_a.num_evaluations) == 8
  np.testing.assert_allclose(aux_f.baselines, np.full(7, f_sin(X_SIN)), rtol=1e-6)


# ---------------------------------------------------------------- noise table

def test_weighted_slice_sum_equals_dense_matvec(key):
  table = noise_lib.noise_table(key, size=1000)
  offsets = jnp.array([0, 3, 991, 500, 3], jnp.int32)
  w = jnp.array([1.0, -2.0, 0.5, 3.0, 0.25])
  dense = w @ noise_lib.gather_slices(table, offsets, 9)
  np.testing.assert_allclose(noise_lib.weighted_slice_sum(table, offsets, w, 9), dense, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dense[0], w @ np.asarray(table.table)[[0, 3, 991, 500, 3]], rtol=1e-5)


def test_noise_table_approximates_gaussian_directions_for_a_linear_function(key):
  c_vec = jnp.array([1.0, -2.0, 0.5, 0.0, 3.0])
  table = noise_lib.noise_table(jax.random.key(7), size=2 ** 20)
  est = zeroth_order(lambda x: c_vec @ x, num_directions=8, sigma=0.3, scheme="antithetic", noise=table)
  # Approximate: conditional on the table, E[u u^T] = I + O(1/sqrt(S)); atol covers that.
  testing.assert_unbiased(est, jnp.zeros(5), key, target=c_vec, num_replicates=4000, atol=0.02, chunk_size=500)
  with pytest.raises(AssertionError):
    testing.assert_unbiased(est, jnp.zeros(5), key, target=0.8 * c_vec, num_replicates=4000, atol=0.02,
                            chunk_size=500)


def test_noise_table_with_low_precision_params_keeps_dtypes(key):
  table = noise_lib.noise_table(key, size=4096)  # float32 table, bfloat16 params: slices are cast, not the table
  params = {"w": jnp.ones((3, 4), jnp.bfloat16)}
  est = zeroth_order(lambda p: jnp.sum(p["w"].astype(jnp.float32) ** 2), num_directions=8, sigma=0.1,
                     scheme="antithetic", noise=table)
  g, _ = jax.jit(est)(key, params)
  chex.assert_trees_all_equal_dtypes(g, params)
  assert np.all(np.isfinite(np.asarray(g["w"], np.float32)))


def _all_shapes(jaxpr):
  shapes = []
  for eqn in jaxpr.eqns:
    shapes += [getattr(v.aval, "shape", None) for v in eqn.outvars]
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      shapes += _all_shapes(sub)
  return shapes


def test_noise_table_never_materialises_the_population(key):
  d, n = 300, 16
  table = noise_lib.noise_table(key, size=5000)
  # fused single pass (per-direction weights) and chunks + slice-by-slice matvec (batch-dependent weights)
  for kw in (dict(scheme="plain"), dict(scheme="antithetic"), dict(scheme="plain", baseline="mean"),
             dict(scheme="antithetic", shaping="centered_ranks")):
    est = zeroth_order(lambda x: jnp.sum(x ** 2), num_directions=n, sigma=0.1, noise=table, batch_size=2, **kw)
    shapes = _all_shapes(jax.make_jaxpr(est)(key, jnp.zeros(d)).jaxpr)
    big = [s for s in shapes if s is not None and len(s) >= 2 and np.prod(s) >= 4 * d]
    assert not big, big
  # the iid path does materialise [n, d] (sanity check that the inspection sees it)
  shapes = _all_shapes(jax.make_jaxpr(zeroth_order(lambda x: jnp.sum(x ** 2), num_directions=n,
                                                   sigma=0.1))(key, jnp.zeros(d)).jaxpr)
  assert (n, d) in shapes


# ---------------------------------------------------------------- chunking does not change the random stream

def f_big(x):
  return jnp.sum(jnp.sin(x)) + 0.1 * jnp.sum(x ** 2)


CHUNK_CASES = [
    dict(scheme="forward"),                                            # streamed, fresh Gaussian directions
    dict(scheme="plain", shaping="centered_ranks"),                    # batch-dependent weights
    dict(scheme="antithetic", directions="orthogonal"),                # orthogonal blocks
    dict(scheme="plain", directions="sphere", baseline="optimal_leave_one_out"),
]


@pytest.mark.parametrize("kw", CHUNK_CASES, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_same_key_same_estimate_whatever_the_chunking(key, kw):
  # d = 2**15, 32 directions: the same key gives the same directions, hence the same estimate up to the
  # reassociation of float sums, for every batch_size (None = the default chunking: 16 float32 directions
  # of this size fill its 2 MiB, so the default takes two chunks here).
  x = jnp.linspace(-1.0, 1.0, 2 ** 15)
  ests = [zeroth_order(f_big, num_directions=32, sigma=0.1, batch_size=bs, **kw) for bs in (None, 1, 4, 32)]
  outs = jax.jit(lambda k: [e(k, x) for e in ests] + [ests[0](jax.random.fold_in(k, 1), x)])(key)
  g0, aux0 = outs[0]
  scale = float(jnp.max(jnp.abs(g0)))
  for g, aux in outs[1:-1]:
    np.testing.assert_allclose(g, g0, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(aux.values, aux0.values, rtol=1e-5)  # f reduces over d: reassociated too
  # power control: another key gives another estimate, far outside that tolerance
  assert float(jnp.max(jnp.abs(outs[-1][0] - g0))) > 1e-2 * scale


def test_same_key_same_estimate_with_a_noise_table(key):
  table = noise_lib.noise_table(jax.random.key(3), size=5000)
  x = jnp.linspace(-1.0, 1.0, 300)
  for kw in (dict(scheme="antithetic"), dict(scheme="plain", baseline="mean")):
    ests = [zeroth_order(f_big, num_directions=12, sigma=0.1, noise=table, batch_size=bs, **kw) for bs in (None, 1, 5)]
    gs = jax.jit(lambda k: [e(k, x)[0] for e in ests])(key)
    for g in gs[1:]:
      np.testing.assert_allclose(g, gs[0], rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(gs[0]))))


# ---------------------------------------------------------------- non-finite values (one policy)

def _f_nan(x):
  return jnp.where(x[0] > 0.5, jnp.nan, -jnp.sum(x ** 2))


def test_nan_ranks_last_with_rank_shaping_and_propagates_otherwise(key):
  # f is NaN for x_0 > 0.5. Ranked, a NaN member is the worst: the estimate points away from the NaN region
  # (negative first component) and stays finite; used as numbers (no shaping, z-scores), NaN propagates.
  def run(k):
    out = {}
    for name, sh in (("ranks", "centered_ranks"), ("nes", "nes_utilities"), ("zscore", "zscore"), ("none", None),
                     ("nan_best", lambda v: centered_ranks(jnp.where(jnp.isnan(v), 0.0, v)))):
      out[name] = zeroth_order(_f_nan, num_directions=64, sigma=1.0, scheme="plain", shaping=sh)(k, jnp.zeros(2))
    return out

  out = jax.jit(jax.vmap(run))(jax.random.split(key, 64))
  for name in ("ranks", "nes"):
    g, aux = out[name]
    assert np.all(np.isfinite(g)), name
    np.testing.assert_array_equal(aux.num_nonfinite, np.isnan(aux.values).sum(-1))
    assert np.all(aux.num_nonfinite > 0)
    g0 = np.asarray(g[:, 0], np.float64)
    assert g0.mean() + 5 * g0.std(ddof=1) / np.sqrt(g0.size) < 0, (name, g0.mean())
  # power control: ranking NaN as the best value makes the same check fail (the estimate points into it)
  g0 = np.asarray(out["nan_best"][0][:, 0], np.float64)
  assert not g0.mean() + 5 * g0.std(ddof=1) / np.sqrt(g0.size) < 0
  for name in ("zscore", "none"):
    g, aux = out[name]
    assert np.all(np.isnan(g)), name  # never a silent zero
    assert np.all(aux.num_nonfinite > 0)


def test_nonfinite_center_value_is_counted(key):
  f = lambda x: jnp.where(jnp.all(x == 0.0), jnp.inf, jnp.sum(x))
  g, aux = jax.jit(zeroth_order(f, num_directions=4, sigma=0.1))(key, jnp.zeros(3))
  assert int(aux.num_nonfinite) == 1 and int(aux.num_evaluations) == 5
  assert not np.any(np.isfinite(g))  # b = f(x) = inf propagates


# ---------------------------------------------------------------- per-parameter sigma

SIG_TREE = {"a": jnp.array([0.3, 1.0, 1.6]), "b": jnp.asarray(0.5)}


def test_per_parameter_sigma_is_unbiased_for_its_smoothed_gradient(key):
  # E_u f(x + sigma * u) with per-coordinate sigma: for sin the smoothed gradient is cos(x) e^{-sigma_k^2/2}
  # coordinate by coordinate; for a quadratic it is A x + c for every sigma (so any mis-scaling shows).
  a_mat, c_vec, x = _quadratic(4)
  sig_quad = jnp.array([0.2, 0.5, 1.0, 2.0])
  est_sin = zeroth_order(f_sin, num_directions=6, sigma=SIG_TREE, scheme="antithetic")
  est_quad = zeroth_order(_quad_fn(a_mat, c_vec, 1.0), num_directions=6, sigma=sig_quad, scheme="plain",
                          baseline="optimal_leave_one_out")
  target_sin = {"a": jnp.cos(X_SIN["a"]) * jnp.exp(-SIG_TREE["a"] ** 2 / 2),
                "b": jnp.cos(X_SIN["b"]) * jnp.exp(-SIG_TREE["b"] ** 2 / 2)}
  target_quad = a_mat @ x + c_vec
  assert_unbiased_with_power(stack(est_sin, est_quad), (X_SIN, x), key, target=(target_sin, target_quad),
                             wrong_target=(smoothed_sin_grad(X_SIN, 1.0), 0.9 * target_quad),
                             num_replicates=2000, atol=1e-4, chunk_size=500)


def test_per_parameter_sigma_is_traced_vmappable_and_differentiable(key):
  @jax.jit
  def estimate(s_a):
    return zeroth_order(f_sin, num_directions=8, sigma={"a": s_a, "b": 0.5}, scheme="antithetic")(key, X_SIN)[0]

  s = jnp.array([0.2, 0.8])
  batched = jax.vmap(estimate)(s)
  for i in range(2):
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda v: v[i], batched), estimate(s[i]), rtol=1e-5,
                                atol=1e-6)
  assert not np.allclose(batched["a"][0], batched["a"][1], rtol=1e-2)
  # d/dsigma of the estimate (fixed key) against central finite differences
  fn = lambda v: jnp.sum(estimate(v)["a"])
  h = 1e-2
  fd = (fn(jnp.float32(0.8 + h)) - fn(jnp.float32(0.8 - h))) / (2 * h)
  np.testing.assert_allclose(jax.jit(jax.grad(fn))(jnp.float32(0.8)), fd, rtol=2e-2)
  assert abs(float(fd)) > 1e-3


def test_sigma_that_does_not_match_params_is_rejected_naming_sigma(key):
  with pytest.raises(ValueError, match="`sigma`"):
    zeroth_order(f_sin, num_directions=4, sigma={"a": 0.1})(key, X_SIN)
  with pytest.raises(ValueError, match="`sigma`"):
    zeroth_order(f_sin, num_directions=4, sigma={"a": jnp.ones(2), "b": 0.1})(key, X_SIN)
  with pytest.raises(ValueError, match="`sigma`"):
    zeroth_order(f_sin, num_directions=4, sigma={"a": jnp.array([0.1, 0.0, 0.1]), "b": 0.1})


# ---------------------------------------------------------------- low precision, keys

@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_orthogonal_directions_in_low_precision(key, dtype):
  # d antithetic pairs along a scaled orthonormal basis recover the gradient of a linear function exactly
  # (QR computed in float32, directions cast to the params' dtype).
  c_vec = jnp.array([1.0, -2.0, 0.5, 3.0])
  f = lambda x: jnp.dot(c_vec, x.astype(jnp.float32))
  est = zeroth_order(f, num_directions=8, sigma=0.25, scheme="antithetic", directions="orthogonal_sphere")
  g, _ = jax.jit(est)(key, jnp.zeros(4, dtype))
  assert g.dtype == dtype
  np.testing.assert_allclose(np.asarray(g, np.float32), c_vec, rtol=3e-2, atol=3e-2)
  g2, _ = jax.jit(zeroth_order(f, num_directions=8, sigma=0.25, scheme="antithetic", directions="orthogonal"))(
      key, jnp.zeros(4, dtype))
  assert g2.dtype == dtype and np.all(np.isfinite(np.asarray(g2, np.float32)))


def test_bad_key_raises_naming_key():
  est = zeroth_order(f_sin, num_directions=4, sigma=0.1)
  for bad in (0, jnp.zeros(2, jnp.float32), jax.random.split(jax.random.key(0), 2)):
    with pytest.raises(TypeError, match="`key`"):
      est(bad, X_SIN)


def test_callable_baseline_and_shaping_plug_in_like_the_named_ones(key):
  # A callable baseline b(values) -> [N] and a callable shaping [N] -> [N] are used exactly like the
  # equivalent number / name (same key, same directions).
  ests = (zeroth_order(f_sin, num_directions=6, sigma=0.3, scheme="plain", baseline=2.0),
          zeroth_order(f_sin, num_directions=6, sigma=0.3, scheme="plain", baseline=lambda v: jnp.full_like(v, 2.0)),
          zeroth_order(f_sin, num_directions=6, sigma=0.3, scheme="plain", shaping="centered_ranks"),
          zeroth_order(f_sin, num_directions=6, sigma=0.3, scheme="plain", shaping=pgjax.shaping.centered_ranks),
          zeroth_order(f_sin, num_directions=6, sigma=0.3, scheme="plain", baseline=1.0))
  g = jax.jit(lambda k: [e(k, X_SIN)[0] for e in ests])(key)
  chex.assert_trees_all_close(g[1], g[0], rtol=1e-6, atol=1e-7)
  chex.assert_trees_all_close(g[3], g[2], rtol=1e-6, atol=1e-7)
  assert not np.allclose(g[4]["a"], g[0]["a"], rtol=1e-3)  # power control: another constant differs
  bad = zeroth_order(f_sin, num_directions=6, sigma=0.3, scheme="plain", shaping=lambda v: v[:3])
  with pytest.raises(ValueError, match="shaping"):
    bad(key, X_SIN)


def test_typed_and_legacy_keys_give_the_same_estimate():
  est = jax.jit(zeroth_order(f_sin, num_directions=6, sigma=0.3, scheme="plain", baseline="leave_one_out"))
  chex.assert_trees_all_equal(est(jax.random.key(5), X_SIN)[0], est(jax.random.PRNGKey(5), X_SIN)[0])


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(sigma=0.0), ValueError, "sigma"),
    (dict(sigma=-1.0), ValueError, "sigma"),
    (dict(sigma=float("nan")), ValueError, "sigma"),
    (dict(sigma={}), ValueError, "sigma"),
    (dict(sigma="0.1"), TypeError, "sigma"),
    (dict(sigma={"a": 0.1, "b": -1.0}), ValueError, "sigma"),
    (dict(num_directions=0), ValueError, "num_directions"),
    (dict(num_directions=2.5), TypeError, "num_directions"),
    (dict(num_directions=5, scheme="antithetic"), ValueError, "num_directions"),
    (dict(num_directions=1, scheme="plain", baseline="leave_one_out"), ValueError, "num_directions"),
    (dict(scheme="backward"), ValueError, "scheme"),
    (dict(directions="cauchy"), ValueError, "directions"),
    (dict(shaping="ranks"), ValueError, "shaping"),
    (dict(baseline="median", scheme="plain"), ValueError, "baseline"),
    (dict(baseline="mean", scheme="forward"), ValueError, "baseline"),
    (dict(baseline="mean", scheme="antithetic"), ValueError, "baseline"),
    (dict(shaping="centered_ranks", scheme="forward"), ValueError, "shaping"),
    (dict(directions="sphere", noise=noise_lib.NoiseTable(jnp.zeros(100))), ValueError, "noise"),
])
def test_bad_configuration_raises_naming_the_argument(kwargs, exc, name):
  args = dict(num_directions=4, sigma=0.1)
  args.update(kwargs)
  with pytest.raises(exc, match=name):
    zeroth_order(f_sin, **args)


def test_bad_input_at_trace_time(key):
  with pytest.raises(TypeError, match="f"):
    zeroth_order(3.0, num_directions=4, sigma=0.1)
  est = zeroth_order(lambda x: x, num_directions=4, sigma=0.1)  # returns a vector
  with pytest.raises(ValueError, match="`f` must return a scalar"):
    jax.jit(est)(key, jnp.zeros(3))
  small = noise_lib.NoiseTable(jnp.zeros(10))
  est = zeroth_order(lambda x: jnp.sum(x), num_directions=4, sigma=0.1, scheme="antithetic", noise=small)
  with pytest.raises(ValueError, match="noise"):
    est(key, jnp.zeros(20))
  with pytest.raises(TypeError, match="params"):
    zeroth_order(lambda x: jnp.sum(x), num_directions=4, sigma=0.1)(key, jnp.zeros(3, jnp.int32))


def test_top_level_export():
  assert pgjax.zeroth_order is zeroth_order
