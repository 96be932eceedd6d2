"""Score-function, pathwise and exact estimators against closed-form gradients."""

import functools

import chex
import distrax
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax import problems as P
from helpers import assert_unbiased_with_power, flat, numpy_tree, scale_tree

N = 8
PROBLEMS = {
    "gaussian_quadratic": lambda: P.gaussian_quadratic(2, mean=[0.5, -0.3], log_std=[-0.5, 0.2]),
    "gaussian_step": lambda: P.gaussian_step(2, mean=[0.0, 0.5], log_std=[0.0, -0.3], threshold=0.3),
    "bernoulli_quadratic": lambda: P.bernoulli_quadratic(3, logits=[0.5, -1.0, 0.0], target=[0.1, 0.9, 0.3]),
    "categorical_bandit": lambda: P.categorical_bandit(),
}
UNBIASED = ["none", 0.7, "leave_one_out", "optimal_leave_one_out", "optimal_per_coordinate_leave_one_out"]


def _combined(prob, names, num_samples=N):
  """One estimator returning every baseline's estimate on the SAME samples: one compiled sweep per problem."""
  ests = {str(b): pgjax.score_function(prob.f, prob.dist_fn, num_samples=num_samples, baseline=b) for b in names}
  return lambda key, params: ({b: e(key, params)[0] for b, e in ests.items()}, None)


def _flat64(tree):
  return flat(tree, np.float64)


def _replicates(combined, params, key, num_replicates, extra=None):
  """Per estimate name: ``[R, D]`` flat estimates over R independent keys, and ``extra(key, params)`` (e.g. the
  true gradient) in NumPy; one compiled program for both."""
  def run(key, params):
    gs, _ = jax.vmap(combined, in_axes=(0, None))(jax.random.split(key, num_replicates), params)
    return gs, (None if extra is None else extra(key, params))

  gs, out = numpy_tree(jax.jit(run)(key, params))
  reps = {name: np.concatenate([np.asarray(x, np.float64).reshape(num_replicates, -1)
                                for x in jax.tree_util.tree_leaves(g)], axis=1) for name, g in gs.items()}
  return reps, out


def _hashable(key):
  """A PRNG key as a tuple of ints, to key a ``functools.cache`` that shares one program across test cases."""
  return tuple(np.asarray(jax.random.key_data(key)).tolist())


def _unhash(key_data):
  return jax.random.wrap_key_data(np.asarray(key_data, np.uint32))


def _true_grad(prob):
  """``prob.true_grad`` at ``prob.params``, jit-compiled, as NumPy float32 leaves."""
  return numpy_tree(jax.jit(prob.true_grad)(prob.params))


def _within(reps, target, num_se=5.0):
  """pgjax.testing's criterion: every coordinate's mean within 5 SE (+1e-6) of the target."""
  mean, se = reps.mean(0), reps.std(0, ddof=1) / np.sqrt(reps.shape[0])
  t = _flat64(target)
  with np.errstate(divide="ignore", invalid="ignore"):  # a zero-SE coordinate reports an inf/nan ratio
    ratio = float(np.max(np.abs(mean - t) / se))
  return bool(np.all(np.abs(mean - t) <= num_se * se + 1e-6)), ratio


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_unbiased_baselines_and_the_shrunk_batch_mean(problem, key):
  """Every unbiased baseline is within 5 SE of the true gradient in every coordinate; the batch mean is
  within 5 SE of (N-1)/N times it. Power control: a 20% error in the target (for the batch mean: the
  unshrunk gradient) fails the same check on the same replicates."""
  prob = PROBLEMS[problem]()
  names = [str(b) for b in UNBIASED] + ["mean"]
  reps, truth = _replicates(_combined(prob, UNBIASED + ["mean"]), prob.params, key, 2000,
                            extra=lambda k, p: prob.true_grad(p))
  for name in names:
    target, wrong = (scale_tree(truth, (N - 1) / N), truth) if name == "mean" else (truth, scale_tree(truth, 0.8))
    ok, z = _within(reps[name], target)
    assert ok, f"{name}: max |z| = {z:.2f}"
    assert not _within(reps[name], wrong)[0], f"{name}: power control passed"


def test_constant_baseline_value_at_call_time_is_traced(key):
  prob = PROBLEMS["categorical_bandit"]()
  est = pgjax.score_function(prob.f, prob.dist_fn, num_samples=N, baseline="constant")

  @jax.jit
  def run(key, params):
    g1, aux1 = est(key, params, baseline_value=0.3)                  # a Python constant
    gs = jax.vmap(lambda b: est(key, params, baseline_value=b)[0])(jnp.array([0.0, 0.3]))   # traced values
    scores = jax.vmap(jax.grad(lambda p, a: prob.dist_fn(p).log_prob(a)), in_axes=(None, 0))(params,
                                                                                              aux1.samples)
    return g1, aux1.baselines, gs, scores

  g1, baselines, gs, scores = numpy_tree(run(key, prob.params))
  np.testing.assert_allclose(baselines, 0.3)
  np.testing.assert_allclose(gs[1], g1, rtol=1e-6)
  # Same samples, different constant: the difference is -c * mean score.
  np.testing.assert_allclose(gs[0] - gs[1], 0.3 * np.mean(scores, 0), atol=1e-6)


def test_noisy_objective_with_key_is_unbiased(key):
  prob = PROBLEMS["categorical_bandit"]()
  noisy = lambda k, a: prob.f(a) + jax.random.normal(k)  # E[noise] = 0
  est = pgjax.score_function(noisy, prob.dist_fn, num_samples=N, baseline="leave_one_out", f_takes_key=True)
  truth = _true_grad(prob)
  assert_unbiased_with_power(est, prob.params, key, target=truth, wrong_target=scale_tree(truth, 0.7))
  # Each sample gets its own noise draw.
  noise = jax.jit(lambda k, p: (lambda aux: aux.values - jax.vmap(prob.f)(aux.samples))(est(k, p)[1]))
  assert len(np.unique(np.asarray(noise(key, prob.params)))) == N


def test_pathwise_is_unbiased_for_differentiable_f(key):
  prob = PROBLEMS["gaussian_quadratic"]()
  est = pgjax.pathwise(prob.f, prob.dist_fn, num_samples=N)
  truth = _true_grad(prob)
  assert_unbiased_with_power(est, prob.params, key, target=truth, wrong_target=scale_tree(truth, 0.95))


def test_pathwise_is_visibly_wrong_on_step_where_score_function_is_right(key):
  prob = PROBLEMS["gaussian_step"]()
  pw = pgjax.pathwise(prob.f, prob.dist_fn, num_samples=N)
  sf = pgjax.score_function(prob.f, prob.dist_fn, num_samples=N, baseline="leave_one_out")
  both = lambda k, p: ({"pathwise": pw(k, p)[0], "score_function": sf(k, p)[0]}, None)
  reps, (truth, g) = _replicates(both, prob.params, key, 2000, extra=lambda k, p: (prob.true_grad(p), pw(k, p)[0]))
  chex.assert_trees_all_equal(g, jax.tree_util.tree_map(np.zeros_like, truth))  # zero a.s.
  assert not _within(reps["pathwise"], truth)[0]
  assert _within(reps["score_function"], truth)[0]
  assert not _within(reps["score_function"], scale_tree(truth, 0.8))[0]   # power control


def _total_variances(combined, params, key, num_replicates):
  """Per estimate: tr Cov over replicates and its standard error (from the per-replicate squared deviations)."""
  out = {}
  for name, reps in _replicates(combined, params, key, num_replicates)[0].items():
    dev = np.sum((reps - reps.mean(0)) ** 2, axis=1) * num_replicates / (num_replicates - 1)
    out[name] = (dev.mean(), dev.std(ddof=1) / np.sqrt(num_replicates))
  return out


def _variance_less(a, b, ratio, num_se=5.0):
  """The one-sided check of pgjax.testing.assert_variance_less: tr Cov[a] + 5 SE < ratio (tr Cov[b] - 5 SE)."""
  return a[0] + num_se * a[1] < ratio * (b[0] - num_se * b[1])


def test_variance_ordering_optimal_mean_none_on_gaussian_quadratic(key):
  prob = P.gaussian_quadratic(3)
  tv = _total_variances(_combined(prob, ["optimal", "mean", "none"], num_samples=10), prob.params, key, 4000)
  # Measured: tr Cov ~ 15 (optimal), 29 (mean), 81 (none); margins of 0.8x on top of 5 SE.
  assert _variance_less(tv["optimal"], tv["mean"], 0.8), tv
  assert _variance_less(tv["mean"], tv["none"], 0.8), tv
  # Power control: the reverse claims fail on the same measurements.
  assert not _variance_less(tv["none"], tv["mean"], 1.0)
  assert not _variance_less(tv["mean"], tv["optimal"], 1.0)


def test_rloo_far_below_none_on_bernoulli(key):
  prob = P.bernoulli_quadratic(5)
  tv = _total_variances(_combined(prob, ["leave_one_out", "none"]), prob.params, key, 2000)
  # Measured ratio ~0.007; claim < 5%; power control: a claim of < 0.5% fails.
  assert _variance_less(tv["leave_one_out"], tv["none"], 0.05), tv
  assert not _variance_less(tv["leave_one_out"], tv["none"], 0.005), tv


def test_grads_keep_tree_structure_and_dtypes(key):
  params = {"a": {"loc": jnp.array([0.1, -0.2])}, "b": (jnp.array(0.3),)}

  def dist_fn(p):
    return distrax.Normal(loc=p["a"]["loc"], scale=jnp.exp(p["b"][0]))

  f = lambda x: jnp.sum(x ** 2)
  ests = [pgjax.score_function(f, dist_fn, num_samples=4, baseline=baseline)
          for baseline in ["none", "leave_one_out", "optimal", "optimal_per_coordinate"]]
  pw = pgjax.pathwise(f, dist_fn, num_samples=4)
  outs, (g_pw, _) = jax.jit(lambda k, p: ([est(k, p) for est in ests], pw(k, p)))(key, params)  # one program
  for g, aux in outs:
    chex.assert_trees_all_equal_shapes_and_dtypes(g, params)
    assert aux.values.shape == (4,) and aux.log_probs.shape == (4,)
  chex.assert_trees_all_equal_shapes_and_dtypes(g_pw, params)


def test_jit_vmap_and_single_trace(key):
  prob = PROBLEMS["gaussian_quadratic"]()
  est = pgjax.score_function(prob.f, prob.dist_fn, num_samples=N, baseline="leave_one_out")
  traced = jax.jit(chex.assert_max_traces(est, n=1))
  g_jit, _ = traced(key, prob.params)
  g_eager, _ = est(key, prob.params)
  chex.assert_trees_all_close(g_eager, g_jit, rtol=1e-5)
  # New keys and new params values: no retrace.
  keys = jax.random.split(key, 5)
  key_data = np.asarray(jax.random.key_data(keys))                  # index the keys in NumPy
  other = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x) + np.float32(0.1)), prob.params)
  traced(jax.random.wrap_key_data(key_data[0]), other)
  traced(jax.random.wrap_key_data(key_data[1]), prob.params)
  gs, _ = jax.jit(jax.vmap(est, in_axes=(0, None)))(keys, prob.params)
  g2, _ = traced(jax.random.wrap_key_data(key_data[2]), prob.params)
  chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: np.asarray(x)[2], gs), g2, rtol=1e-5)
  # vmap over params too (a batch of problems).
  batched = jax.tree_util.tree_map(lambda x: jnp.asarray(np.stack([x, np.asarray(x) + 1])), prob.params)
  gp, _ = jax.jit(jax.vmap(est))(jax.random.wrap_key_data(key_data[:2]), batched)
  chex.assert_shape(gp["mean"], (2, 2))


def test_accepts_raw_uint32_keys():
  prob = PROBLEMS["categorical_bandit"]()
  est = pgjax.score_function(prob.f, prob.dist_fn, num_samples=N)
  g, _ = jax.jit(est)(jax.random.PRNGKey(0), prob.params)
  assert g.shape == prob.params.shape


EXTREME_BASELINES = ["none", "mean", "leave_one_out", "optimal", "optimal_leave_one_out", "optimal_per_coordinate",
                     "optimal_per_coordinate_leave_one_out", "group_normalize"]


@functools.cache
def _extreme_logits_results(key_data):
  """Every baseline's (grads, aux) and the exact gradient at extreme logits: one compiled program for all cases."""
  logits = jnp.array([1e4, -1e4, 0.0, 3.0])
  prob = P.categorical_bandit((1.0, 0.0, 0.5, 0.2), logits=logits)
  ests = {b: pgjax.score_function(prob.f, prob.dist_fn, num_samples=16, baseline=b) for b in EXTREME_BASELINES}
  exact = pgjax.exact_gradient(prob.f, prob.dist_fn)
  run = lambda k, l: ({b: est(k, l) for b, est in ests.items()}, exact(None, l)[0])
  return numpy_tree(jax.jit(run)(_unhash(key_data), logits))


@pytest.mark.parametrize("baseline", EXTREME_BASELINES)
def test_extreme_logits_give_finite_gradients(baseline, key):
  results, g_exact = _extreme_logits_results(_hashable(key))
  g, aux = results[baseline]
  assert np.all(np.isfinite(g)), g
  assert np.all(np.isfinite(aux.baselines)), aux.baselines
  # Every sample is the dominant arm (probability 1 - e^-9997): the sampled gradient is ~0, like the true one.
  assert np.all(np.asarray(aux.samples) == 0)
  assert np.all(np.isfinite(g_exact)), g_exact


def test_group_normalize_zero_variance_gives_zero_gradient(key):
  prob = P.categorical_bandit((1.0, 1.0, 1.0))  # every reward equal
  g, _ = jax.jit(pgjax.score_function(prob.f, prob.dist_fn, num_samples=8, baseline="group_normalize"))(
      key, prob.params)
  np.testing.assert_array_equal(g, np.zeros(3))


# ---------------------------------------------------------------------------------------------- exact oracle

def test_exact_gradient_categorical_bandit_closed_form():
  r = np.array([1.0, 0.0, 0.5, 0.2], np.float32)
  logits = np.array([0.3, -1.0, 2.0, 0.1], np.float32)
  prob = P.categorical_bandit(r, logits=logits)
  g, aux = jax.jit(pgjax.exact_gradient(prob.f, prob.dist_fn))(None, prob.params)
  p = np.exp(logits) / np.sum(np.exp(logits))
  np.testing.assert_allclose(g, p * (r - p @ r), atol=1e-7)          # hand formula, in numpy
  np.testing.assert_allclose(aux.value, p @ r, rtol=1e-6)


def test_exact_gradient_on_products_of_bernoulli_and_categorical():
  prob = P.bernoulli_quadratic(4, logits=[0.3, -0.7, 1.2, 0.0], target=[0.2, 0.8, 0.5, 0.0])
  # A 2 x 3 grid of independent categoricals, f = product of the first entries' indicator and a sum.
  logits = np.array([[0.1, 0.5, -0.2], [1.0, 0.0, -1.0]], np.float32)
  dist_fn = lambda l: distrax.Independent(distrax.Categorical(logits=l), 1)
  f = lambda x: (x[0] == 1) * 1.0 + x[1].astype(jnp.float32)

  @jax.jit
  def run(bernoulli_logits, logits):
    (g, aux), (g2, aux2) = (pgjax.exact_gradient(prob.f, prob.dist_fn)(None, bernoulli_logits),
                            pgjax.exact_gradient(f, dist_fn)(None, logits))
    return g, aux.value, prob.true_grad(bernoulli_logits), prob.expectation(bernoulli_logits), g2

  g, value, true_grad, expectation, g2 = numpy_tree(run(prob.params, logits))
  np.testing.assert_allclose(g, true_grad, atol=1e-6)
  np.testing.assert_allclose(value, expectation, rtol=1e-6)
  p = np.exp(logits) / np.sum(np.exp(logits), axis=1, keepdims=True)
  want = np.stack([p[0] * (np.array([0.0, 1.0, 0.0]) - p[0, 1]),
                   p[1] * (np.arange(3.0) - p[1] @ np.arange(3.0))])
  np.testing.assert_allclose(g2, want, atol=1e-6)


def test_exact_gradient_from_closed_form_expectation():
  prob = P.gaussian_step(3)
  g, true_grad = jax.jit(lambda p: (pgjax.exact_gradient(expectation=prob.expectation)(None, p)[0],
                                    prob.true_grad(p)))(prob.params)
  chex.assert_trees_all_close(g, true_grad, atol=1e-6)


def test_problem_expectations_match_monte_carlo(key):
  """The closed-form expectations are checked against plain sample averages (5 SE)."""
  probs = {name: make() for name, make in PROBLEMS.items()}

  def values_and_expectation(prob, key):
    with jax.numpy_rank_promotion("allow"):  # distrax broadcasts implicitly inside `sample`
      x = prob.dist_fn(prob.params).sample(seed=key, sample_shape=(200_000,))
    return jax.vmap(prob.f)(x), prob.expectation(prob.params)

  # One compiled program for all problems.
  out = jax.jit(lambda k: {name: values_and_expectation(prob, k) for name, prob in probs.items()})(key)
  for name, (v, expectation) in out.items():
    v = np.asarray(v, np.float64)
    se = v.std() / np.sqrt(v.size)
    assert abs(v.mean() - float(expectation)) < 5 * se + 1e-6, name


# ---------------------------------------------------------------------------------------------- bad input

def _bandit():
  return P.categorical_bandit()


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(num_samples=0), ValueError, "num_samples"),
    (dict(num_samples=2.5), TypeError, "num_samples"),
    (dict(num_samples=True), TypeError, "num_samples"),
    (dict(num_samples=1, baseline="leave_one_out"), ValueError, "num_samples"),
    (dict(num_samples=1, baseline="optimal_leave_one_out"), ValueError, "num_samples"),
    (dict(num_samples=1, baseline="optimal_per_coordinate_leave_one_out"), ValueError, "num_samples"),
    (dict(num_samples=4, baseline="median"), ValueError, "baseline"),
    (dict(num_samples=4, f="not callable"), TypeError, "`f`"),
    (dict(num_samples=4, dist_fn=3), TypeError, "dist_fn"),
])
def test_bad_configuration_raises_naming_the_argument(kwargs, exc, match):
  prob = _bandit()
  args = dict(f=prob.f, dist_fn=prob.dist_fn)
  args.update(kwargs)
  with pytest.raises(exc, match=match):
    pgjax.score_function(args.pop("f"), args.pop("dist_fn"), **args)


def test_bad_runtime_input_raises_at_trace_time(key):
  prob = _bandit()
  vector_f = lambda a: jnp.stack([prob.f(a), prob.f(a)])
  with pytest.raises(ValueError, match="`f` must return a scalar"):
    jax.jit(pgjax.score_function(vector_f, prob.dist_fn, num_samples=4))(key, prob.params)
  with pytest.raises(ValueError, match="`f` must return a scalar"):
    pgjax.pathwise(lambda x: x, P.gaussian_quadratic(2).dist_fn, num_samples=4)(
        key, P.gaussian_quadratic(2).params)
  bad_baseline = lambda v: jnp.zeros(3)
  with pytest.raises(ValueError, match="callable `baseline`"):
    pgjax.score_function(prob.f, prob.dist_fn, num_samples=4, baseline=bad_baseline)(key, prob.params)
  with pytest.raises(TypeError, match="`key`"):
    pgjax.score_function(prob.f, prob.dist_fn, num_samples=4)(0, prob.params)
  with pytest.raises(ValueError, match="enumerate"):
    g = P.gaussian_quadratic(2)
    pgjax.exact_gradient(g.f, g.dist_fn)(None, g.params)
  with pytest.raises(ValueError, match="expectation"):
    pgjax.exact_gradient(prob.f, prob.dist_fn, expectation=prob.expectation)


def test_nan_rewards_raise_when_checking_is_requested(key):
  prob = _bandit()
  nan_f = lambda a: jnp.where(a == 0, jnp.nan, prob.f(a))
  est = pgjax.score_function(nan_f, prob.dist_fn, num_samples=32, check_finite=True)
  with pytest.raises(Exception, match="`f` returned non-finite values"):
    jax.block_until_ready(jax.jit(est)(key, prob.params))
  # Without checking, the NaN propagates (documented), it is not silently dropped.
  g, _ = jax.jit(pgjax.score_function(nan_f, prob.dist_fn, num_samples=32))(key, prob.params)
  assert np.any(np.isnan(g))


def test_batched_normal_equals_multivariate_normal_diag(key):
  """A distribution's batch entries form one joint sample: Normal(loc=[3]) == MultivariateNormalDiag."""
  params = {"loc": jnp.array([0.3, -0.2, 1.0]), "log_scale": jnp.array([0.1, -0.4, 0.0])}
  f = lambda x: jnp.sum(jnp.sin(3 * x))
  batched = lambda p: distrax.Normal(p["loc"], jnp.exp(p["log_scale"]))
  joint = lambda p: distrax.MultivariateNormalDiag(p["loc"], jnp.exp(p["log_scale"]))
  baselines = ["leave_one_out", "optimal_per_coordinate"]
  ests = [(pgjax.score_function(f, batched, num_samples=8, baseline=baseline),
           pgjax.score_function(f, joint, num_samples=8, baseline=baseline)) for baseline in baselines]
  outs = jax.jit(lambda k, p: [(e1(k, p), e2(k, p)) for e1, e2 in ests])(key, params)   # one program
  for (g1, a1), (g2, a2) in outs:
    np.testing.assert_allclose(a1.log_probs, a2.log_probs, rtol=1e-5)
    chex.assert_trees_all_close(g1, g2, rtol=1e-4, atol=1e-6)


def test_in_batch_optimal_matches_numpy_and_is_biased_at_small_n(key):
  prob = PROBLEMS["gaussian_quadratic"]()
  est = pgjax.score_function(prob.f, prob.dist_fn, num_samples=4, baseline="optimal")
  reps, (g, aux, truth) = _replicates(_combined(prob, ["optimal", "optimal_leave_one_out"], num_samples=4),
                                      prob.params, key, 2000, extra=lambda k, p: (*est(k, p), prob.true_grad(p)))
  # NumPy reference from the per-sample scores of the Gaussian: d/dmu = (x-mu)/s^2, d/dlog s = z^2 - 1.
  x = np.asarray(aux.samples, np.float64)
  mu, s = np.asarray(prob.params["mean"], np.float64), np.exp(np.asarray(prob.params["log_std"], np.float64))
  z = (x - mu) / s
  scores = np.concatenate([z ** 2 - 1, z / s], axis=1)          # ravel order: log_std, mean
  v = np.asarray(aux.values, np.float64)
  sq = np.sum(scores ** 2, axis=1)
  b = np.sum(v * sq) / np.sum(sq)
  want = np.mean((v - b)[:, None] * scores, axis=0)
  np.testing.assert_allclose(np.concatenate([g["log_std"], g["mean"]]), want, rtol=2e-4, atol=1e-5)
  # In-batch b* is biased at N = 4 (detected), its leave-one-out version is not.
  assert not _within(reps["optimal"], truth)[0]
  assert _within(reps["optimal_leave_one_out"], truth)[0]


def test_numpy_scalar_constant_baseline_is_accepted(key):
  prob = PROBLEMS["categorical_bandit"]()
  est = pgjax.score_function(prob.f, prob.dist_fn, num_samples=4, baseline=np.float32(0.5))
  g1, aux = jax.jit(est)(key, prob.params)
  np.testing.assert_allclose(aux.baselines, 0.5)


def test_traced_constant_baseline_can_be_swept_by_vmap(key):
  prob = PROBLEMS["categorical_bandit"]()
  sweep = jax.jit(jax.vmap(lambda c: pgjax.score_function(prob.f, prob.dist_fn, num_samples=4, baseline=c)(
      key, prob.params)[1].baselines))
  np.testing.assert_allclose(sweep(jnp.array([0.0, 0.25])), [[0.0] * 4, [0.25] * 4])


# ---------------------------------------------------------------------------------------------- reliability

def _bandit_logits():
  return jnp.array([0.4, -0.3, 0.1, 0.0])


def _bandit_f(a):
  return jnp.array([1.0, 0.0, 0.5, 0.2])[a]


def _bandit_dist(logits):
  return distrax.Categorical(logits=logits)


def test_estimate_is_differentiable_in_baseline_value_closed_form(key):
  """d/dc ||g(c)||^2 with g(c) = mean_i (f_i - c) s_i is -2 g . mean_i s_i (closed form, NumPy) and central
  finite differences agree; a stop_gradient on the weights would give 0."""
  logits = _bandit_logits()
  est = pgjax.score_function(_bandit_f, _bandit_dist, num_samples=16, baseline="constant")
  loss = lambda c: jnp.sum(est(key, logits, baseline_value=c)[0] ** 2)
  c = 0.3
  eps = 1e-2                                                         # loss is quadratic in c: exact FD
  # One compiled program: the samples and values, the gradient, and the two finite-difference evaluations.
  run = jax.jit(lambda c, c_plus, c_minus: (est(key, logits, baseline_value=c)[1], jax.grad(loss)(c),
                                            loss(c_plus), loss(c_minus)))
  aux, got, loss_plus, loss_minus = run(c, c + eps, c - eps)
  p = np.exp(np.asarray(logits, np.float64)) / np.sum(np.exp(np.asarray(logits, np.float64)))
  s = np.eye(4)[np.asarray(aux.samples)] - p                         # categorical scores onehot - p
  f = np.asarray(aux.values, np.float64)
  g = np.mean((f - c)[:, None] * s, axis=0)
  want = -2 * g @ np.mean(s, axis=0)
  got = float(got)
  fd = (float(loss_plus) - float(loss_minus)) / (2 * eps)
  assert abs(want) > 1e-3
  np.testing.assert_allclose(got, want, rtol=1e-4)
  np.testing.assert_allclose(fd, want, rtol=1e-3)


def test_estimate_is_differentiable_in_a_hyperparameter_f_closes_over(key):
  logits = _bandit_logits()

  def total(scale):
    f = lambda a: scale * _bandit_f(a) ** 2
    g, _ = jax.jit(pgjax.score_function(f, _bandit_dist, num_samples=16, baseline="leave_one_out"))(key, logits)
    return jnp.sum(g ** 2)

  # The estimate is linear in `scale`, so ||g||^2 = scale^2 * ||g(1)||^2 and the derivative is 2 scale ||g(1)||^2.
  got, total_1 = numpy_tree(jax.jit(lambda: (jax.grad(total)(1.5), total(1.0)))())   # one program around both
  np.testing.assert_allclose(got, 2 * 1.5 * total_1, rtol=1e-5)


OPTIMAL_BASELINES = ["optimal", "optimal_leave_one_out", "optimal_per_coordinate"]


@functools.cache
def _optimal_baselines_derivatives(key_data, eps):
  """Per baseline: the samples at logits - eps d, logits, logits + eps d, the loss at logits -/+ eps d and the
  directional derivative of the loss by jax.grad; one compiled program for every parametrised case."""
  key = _unhash(key_data)
  direction = jnp.array([0.3, -0.5, 0.2, 0.1])

  def one(baseline, logits):
    est = pgjax.score_function(_bandit_f, _bandit_dist, num_samples=16, baseline=baseline)
    loss_and_samples = lambda l: (lambda g, aux: (jnp.sum(g ** 2), aux.samples))(*est(key, l))
    (loss_minus, x_minus), (loss_plus, x_plus) = [loss_and_samples(logits + sign * eps * direction)
                                                  for sign in (-1, 1)]
    (_, x0), grad = jax.value_and_grad(loss_and_samples, has_aux=True)(logits)
    return (x_minus, x0, x_plus), (loss_minus, loss_plus), jnp.vdot(grad, direction)

  return numpy_tree(jax.jit(lambda l: {b: one(b, l) for b in OPTIMAL_BASELINES})(_bandit_logits()))


@pytest.mark.parametrize("baseline", OPTIMAL_BASELINES)
def test_optimal_baselines_differentiable_in_params_with_samples_fixed(baseline, key):
  """Categorical samples do not move under a small change of the logits, so central finite differences in
  the logits measure the estimate's derivative with the samples fixed, which jax.grad must reproduce."""
  eps = 1e-3
  (x_minus, x0, x_plus), (loss_minus, loss_plus), got = _optimal_baselines_derivatives(
      _hashable(key), eps)[baseline]
  for x in (x_plus, x_minus):
    np.testing.assert_array_equal(x, x0)
  fd = (float(loss_plus) - float(loss_minus)) / (2 * eps)
  np.testing.assert_allclose(float(got), fd, rtol=2e-2, atol=1e-4)


NAN_BASELINES = ["none", 0.3, "constant", "mean", "leave_one_out", "optimal", "optimal_leave_one_out",
                 "optimal_per_coordinate", "optimal_per_coordinate_leave_one_out", "group_normalize"]


@functools.cache
def _nan_value_results(key_data):
  """Per baseline (by index): the estimate and aux with f NaN on arm 0; one compiled program for all cases."""
  logits = jnp.array([2.0, 0.0, 0.0, 0.0])
  nan_f = lambda a: jnp.where(a == 0, jnp.nan, _bandit_f(a))
  ests = [pgjax.score_function(nan_f, _bandit_dist, num_samples=8, baseline=b) for b in NAN_BASELINES]
  return numpy_tree(jax.jit(lambda k, l: [est(k, l) for est in ests])(_unhash(key_data), logits))


@pytest.mark.parametrize("baseline", NAN_BASELINES)
def test_nan_value_propagates_into_the_estimate(baseline, key):
  """NaN policy: one NaN f(x_i) makes the estimate NaN with every baseline (never a finite number)."""
  g, aux = _nan_value_results(_hashable(key))[NAN_BASELINES.index(baseline)]
  assert np.isnan(np.asarray(aux.values)).any() and not np.isnan(np.asarray(aux.values)).all()
  assert np.isnan(np.asarray(g)).any()


def test_dist_fn_returning_an_array_raises_naming_dist_fn(key):
  est = pgjax.score_function(_bandit_f, lambda logits: jax.nn.softmax(logits), num_samples=4)
  with pytest.raises(TypeError, match="`dist_fn`.*`sample`"):
    est(key, _bandit_logits())
  with pytest.raises(TypeError, match="`dist_fn`"):
    pgjax.pathwise(lambda x: x, lambda p: p, num_samples=4)(key, jnp.zeros(2))


def test_integer_params_raise_naming_params(key):
  prob = P.gaussian_quadratic(2)
  ints = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x).astype(np.int32)), prob.params)
  for est in (pgjax.score_function(prob.f, prob.dist_fn, num_samples=4),
              pgjax.score_function(prob.f, prob.dist_fn, num_samples=4, baseline="optimal"),
              pgjax.pathwise(prob.f, prob.dist_fn, num_samples=4),
              pgjax.exact_gradient(expectation=prob.expectation)):
    with pytest.raises(TypeError, match="`params`"):
      est(key, ints)


def test_pathwise_nan_in_f_propagates(key):
  prob = P.gaussian_quadratic(2)
  f = lambda x: jnp.where(x[0] > 0, jnp.nan, prob.f(x))   # the NaN branch has a zero derivative
  g, aux = jax.jit(pgjax.pathwise(f, prob.dist_fn, num_samples=8))(key, prob.params)
  assert np.isnan(np.asarray(aux.values)).any()
  assert all(np.isnan(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(g))


def test_exact_gradient_counts_its_evaluations():
  enumerated = pgjax.exact_gradient(_bandit_f, _bandit_dist)
  closed_form = pgjax.exact_gradient(expectation=lambda l: jnp.sum(jax.nn.softmax(l)))
  both = jax.jit(lambda l: (enumerated(None, l), closed_form(None, l)))
  (_, aux), (_, aux_closed) = numpy_tree(both(_bandit_logits()))
  assert aux.num_evaluations == 4
  assert aux_closed.num_evaluations == 0
