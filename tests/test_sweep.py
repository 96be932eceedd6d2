"""gradient_stats against a NumPy reference computed from the same per-seed gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import pgjax
from pgjax._src.sweep import seed_layout

D = 3
MU = jnp.array([0.5, -1.0, 2.0])
SCALE = jnp.array([1.0, 0.5, 2.0])


def gaussian_estimator(key, params):
  """A synthetic 'estimator' whose per-seed output is a known function of the key."""
  g = params["w"] * MU + SCALE * jax.random.normal(key, (D,))
  return {"w": g}, ()


def reference_samples(key, n):
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
  return np.asarray(jax.vmap(lambda k: gaussian_estimator(k, {"w": jnp.ones(D)})[0]["w"])(keys), np.float64)


def numpy_stats(g, t, ids):
  """Reference statistics; ``ids [S]`` assigns each seed to its jackknife group."""
  s = g.shape[0]
  groups = np.unique(ids)
  mean = g.mean(0)
  var = g.var(0, ddof=1)
  err2 = ((g - t) ** 2).sum(1)
  cos = g @ t / (np.linalg.norm(g, axis=1) * np.linalg.norm(t))
  # Delete-one-group jackknife, written directly.
  m = len(groups)
  tv_l = np.array([g[ids != b].var(0, ddof=1).sum() for b in groups])
  tv_se = np.sqrt((m - 1) / m * ((tv_l - tv_l.mean()) ** 2).sum())
  bn_l = np.array([np.linalg.norm(g[ids != b].mean(0) - t) for b in groups])
  bn_se = np.sqrt((m - 1) / m * ((bn_l - bn_l.mean()) ** 2).sum())
  # Bias test: largest per-coordinate t statistic, Bonferroni over the D coordinates (scipy's Student t).
  max_z = np.max(np.abs(mean - t) / np.sqrt(var / s))
  p_value = min(1.0, len(t) * 2 * scipy.stats.t.sf(max_z, s - 1))
  return dict(max_z=max_z, p_value=p_value,
              mean=mean, mean_se=np.sqrt(var / s), tv=var.sum(), tv_se=tv_se, bias=np.linalg.norm(mean - t),
              bias_se=bn_se, mse=err2.mean(), mse_se=err2.std(ddof=1) / np.sqrt(s), cos=cos.mean(),
              cos_se=cos.std(ddof=1) / np.sqrt(s), snr=np.linalg.norm(mean) / np.sqrt(var.sum()))


@pytest.mark.parametrize("num_seeds, chunk_size", [(1000, 64), (1000, 7), (999, 1000), (37, 4)])
def test_matches_numpy_reference(num_seeds, chunk_size, key):
  t = np.array([0.4, -1.0, 2.2])
  stats = pgjax.sweep.gradient_stats(gaussian_estimator, {"w": jnp.ones(D)}, key, num_seeds=num_seeds,
                                     true_grad={"w": jnp.asarray(t, jnp.float32)}, chunk_size=chunk_size)
  g = reference_samples(key, num_seeds)
  # Jackknife groups are contiguous blocks of seeds, as laid out by gradient_stats (see seed_layout).
  layout = seed_layout(num_seeds, chunk_size, 32, len(jax.devices()))
  ref = numpy_stats(g, t, np.arange(num_seeds) // (layout.chunks_per_group * layout.chunk_size))
  assert int(stats.num_seeds) == num_seeds
  np.testing.assert_allclose(stats.mean["w"], ref["mean"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats.mean_se["w"], ref["mean_se"], rtol=1e-4)
  for name, field in [("tv", "total_variance"), ("tv_se", "total_variance_se"), ("bias", "bias_norm"),
                      ("bias_se", "bias_norm_se"), ("mse", "mse"), ("mse_se", "mse_se"), ("cos", "cosine"),
                      ("cos_se", "cosine_se"), ("snr", "snr"), ("max_z", "max_abs_z")]:
    np.testing.assert_allclose(float(getattr(stats, field)), ref[name], rtol=2e-4, err_msg=field)
  # float32 regularised incomplete beta far in the tail: a few 1e-4 relative.
  np.testing.assert_allclose(float(stats.bias_p_value), ref["p_value"], rtol=2e-3)
  np.testing.assert_allclose(float(stats.bias_sq), ref["bias"] ** 2 - ref["tv"] / num_seeds, rtol=1e-3,
                             atol=1e-5)


def test_chunk_size_does_not_change_results(key):
  kw = dict(num_seeds=500, true_grad={"w": MU})
  a = pgjax.sweep.gradient_stats(gaussian_estimator, {"w": jnp.ones(D)}, key, chunk_size=1, **kw)
  b = pgjax.sweep.gradient_stats(gaussian_estimator, {"w": jnp.ones(D)}, key, chunk_size=128, **kw)
  chex.assert_trees_all_close(a, b, rtol=1e-5)


def test_standard_errors_are_calibrated(key):
  # Var of the sample variance of a Gaussian: 2 sigma^4 / (S - 1) per coordinate; the jackknife SE of the
  # total variance must be within 35% of the exact value (32 groups give a ~13% relative error of an SE).
  s = 4000
  stats = pgjax.sweep.gradient_stats(gaussian_estimator, {"w": jnp.ones(D)}, key, num_seeds=s)
  exact = np.sqrt(np.sum(2 * np.asarray(SCALE) ** 4) / (s - 1))
  assert 0.65 * exact < float(stats.total_variance_se) < 1.35 * exact
  np.testing.assert_allclose(float(stats.total_variance), float(jnp.sum(SCALE ** 2)),
                             atol=5 * float(stats.total_variance_se))


def test_traced_hyperparameter_sweep_compiles_once(key):
  counter = {"traces": 0}

  def make(scale):
    def est(k, params):
      counter["traces"] += 1
      return {"w": params["w"] * MU + scale * jax.random.normal(k, (D,))}, ()
    return est

  sweep = jax.jit(jax.vmap(lambda sc: pgjax.sweep.gradient_stats(make(sc), {"w": jnp.ones(D)}, key,
                                                                 num_seeds=256, chunk_size=32)))
  out = sweep(jnp.array([0.5, 1.0, 2.0]))
  np.testing.assert_allclose(out.total_variance / out.total_variance[0], [1.0, 4.0, 16.0], rtol=1e-5)
  traces = counter["traces"]
  sweep(jnp.array([0.1, 0.2, 0.3]))
  assert counter["traces"] == traces  # second call: cached, no retrace


def test_exact_oracle_has_zero_variance(key):
  from pgjax import problems as P
  prob = P.categorical_bandit()
  oracle = pgjax.exact_gradient(prob.f, prob.dist_fn)
  stats = pgjax.sweep.gradient_stats(oracle, prob.params, key, num_seeds=16,
                                     true_grad=prob.true_grad(prob.params))
  assert float(stats.total_variance) < 1e-12
  assert float(stats.bias_norm) < 1e-6
  np.testing.assert_allclose(float(stats.cosine), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(num_seeds=1), ValueError, "num_seeds"),
    (dict(num_seeds=10, chunk_size=0), ValueError, "chunk_size"),
    (dict(num_seeds=10, true_grad={"v": jnp.zeros(3)}), ValueError, "true_grad"),
    (dict(num_seeds=10, num_groups=1), ValueError, "num_groups"),
])
def test_bad_input(kwargs, exc, match, key):
  with pytest.raises(exc, match=match):
    pgjax.sweep.gradient_stats(gaussian_estimator, {"w": jnp.ones(D)}, key, **kwargs)


def test_estimator_with_wrong_grad_structure_is_rejected(key):
  bad = lambda k, p: ({"w": jnp.zeros(5)}, ())
  with pytest.raises(ValueError, match="estimator"):
    pgjax.sweep.gradient_stats(bad, {"w": jnp.ones(D)}, key, num_seeds=4)


def test_two_seeds_give_nan_jackknife_errors_not_zero(key):
  stats = pgjax.sweep.gradient_stats(gaussian_estimator, {"w": jnp.ones(D)}, key, num_seeds=2)
  assert np.isnan(float(stats.total_variance_se)) and np.isnan(float(stats.snr_se))
  assert np.all(np.isfinite(np.asarray(stats.mean_se["w"])))


def test_chunk_size_sees_inside_inner_jit(key):
  def body(k, p):
    x = jax.random.normal(k, (500, 400))
    return {"w": p["w"] + jnp.sum(x)}, ()
  inner = lambda k, p: jax.jit(body)(k, p)
  params = {"w": jnp.ones(D)}
  assert (pgjax.sweep.choose_chunk_size(inner, params, key, 10_000)
          == pgjax.sweep.choose_chunk_size(body, params, key, 10_000))


@pytest.fixture(scope="module")
def baseline_stats():
  """Score-function estimates at N = 4 on a Gaussian quadratic: the leave-one-out baseline is unbiased;
  the batch-mean baseline is biased (it includes the sample's own reward: the estimate is (N-1)/N times
  the leave-one-out one, so its bias is -grad J / N)."""
  problem = pgjax.problems.gaussian_quadratic()
  tg = problem.true_grad(problem.params)
  out = {}
  for baseline in ("leave_one_out", "mean"):
    est = pgjax.score_function(problem.f, problem.dist_fn, num_samples=4, baseline=baseline)
    out[baseline] = pgjax.sweep.gradient_stats(est, problem.params, jax.random.key(7), num_seeds=1000,
                                               true_grad=tg)
  return out


def test_bias_test_separates_unbiased_from_biased(baseline_stats):
  unbiased, biased = baseline_stats["leave_one_out"], baseline_stats["mean"]
  # The unbiased estimator's bias_norm is several of its own SEs from 0 (it is the norm of noise), yet the
  # test reads "no bias".
  assert float(unbiased.bias_norm) > 2 * float(unbiased.bias_norm_se)
  assert float(unbiased.bias_p_value) > 0.05 and float(unbiased.max_abs_z) < 3.5
  # Power: the known bias (-grad J / 4) is detected.
  assert float(biased.bias_p_value) < 1e-6 and float(biased.max_abs_z) > 6
  assert "bias            consistent with 0" in str(unbiased)
  assert "bias            DETECTED" in str(biased)
  assert "over 1000 seeds" in biased.summary()


def test_bias_test_of_exact_and_constant_estimators(key):
  """Zero variance: an exact gradient reads as unbiased (rounding is not bias), an offset as biased."""
  prob = pgjax.problems.categorical_bandit()
  tg = prob.true_grad(prob.params)
  exact = pgjax.exact_gradient(prob.f, prob.dist_fn)
  off = lambda k, p: (jax.tree_util.tree_map(lambda g: g + 1e-3, exact(k, p)[0]), ())
  s_exact = pgjax.sweep.gradient_stats(exact, prob.params, key, num_seeds=8, true_grad=tg)
  s_off = pgjax.sweep.gradient_stats(off, prob.params, key, num_seeds=8, true_grad=tg)
  assert float(s_exact.bias_p_value) > 0.5
  assert float(s_off.bias_p_value) < 1e-20 and float(s_off.max_abs_z) > 1e3
  no_target = pgjax.sweep.gradient_stats(exact, prob.params, key, num_seeds=8)
  assert np.isnan(float(no_target.max_abs_z)) and np.isnan(float(no_target.bias_p_value))
  assert "not available (no true_grad)" in str(no_target)
