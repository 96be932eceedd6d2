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
from helpers import assert_unbiased_with_power, scale_tree

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


def _replicates(combined, params, key, num_replicates):
  """Per estimate name: ``[R, D]`` flat estimates over R independent keys (one compiled vmap)."""
  gs, _ = jax.jit(jax.vmap(combined, in_axes=(0, None)))(jax.random.split(key, num_replicates), params)
  return {name: np.concatenate([np.asarray(x, np.float64).reshape(num_replicates, -1)
                                for x in jax.tree_util.tree_leaves(g)], axis=1) for name, g in gs.items()}


def _within(reps, target, num_se=5.0):
  """pgjax.testing's criterion: every coordinate's mean within 5 SE (+1e-6) of the target."""
  mean, se = reps.mean(0), reps.std(0, ddof=1) / np.sqrt(reps.shape[0])
  t = np.asarray(jax.flatten_util.ravel_pytree(target)[0], np.float64)
  return bool(np.all(np.abs(mean - t) <= num_se * se + 1e-6)), float(np.max(np.abs(mean - t) / se))


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_unbiased_baselines_and_the_shrunk_batch_mean(problem, key):
  """Every unbiased baseline is within 5 SE of the true gradient in every coordinate; the batch mean is
  within 5 SE of (N-1)/N times it. Power control: a 20% error in the target (for the batch mean: the
  unshrunk gradient) fails the same check on the same replicates."""
  prob = PROBLEMS[problem]()
  names = [str(b) for b in UNBIASED] + ["mean"]
  reps = _replicates(_combined(prob, UNBIASED + ["mean"]), prob.params, key, 2000)
  truth = prob.true_grad(prob.params)
  for name in names:
    target, wrong = (scale_tree(truth, (N - 1) / N), truth) if name == "mean" else (truth, scale_tree(truth, 0.8))
    ok, z = _within(reps[name], target)
    assert ok, f"{name}: max |z| = {z:.2f}"
    assert not _within(reps[name], wrong)[0], f"{name}: power control passed"


def test_constant_baseline_value_at_call_time_is_traced(key):
  prob = PROBLEMS["categorical_bandit"]()
  est = pgjax.score_function(prob.f, prob.dist_fn, num_samples=N, baseline="constant")
  g1, aux1 = est(key, prob.params, baseline_value=0.3)
  np.testing.assert_allclose(aux1.baselines, 0.3)
  vmapped = jax.jit(jax.vmap(lambda b: est(key, prob.params, baseline_value=b)[0]))
  gs = vmapped(jnp.array([0.0, 0.3]))
  np.testing.assert_allclose(gs[1], g1, rtol=1e-6)
  # Same samples, different constant: the difference is -c * mean score.
  scores = jax.vmap(jax.grad(lambda p, a: prob.dist_fn(p).log_prob(a)), in_axes=(None, 0))(prob.params,
                                                                                            aux1.samples)
  np.testing.assert_allclose(gs[0] - gs[1], 0.3 * jnp.mean(scores, 0), atol=1e-6)


def test_noisy_objective_with_key_is_unbiased(key):
  prob = PROBLEMS["categorical_bandit"]()
  noisy = lambda k, a: prob.f(a) + jax.random.normal(k)  # E[noise] = 0
  est = pgjax.score_function(noisy, prob.dist_fn, num_samples=N, baseline="leave_one_out", f_takes_key=True)
  truth = prob.true_grad(prob.params)
  assert_unbiased_with_power(est, prob.params, key, target=truth, wrong_target=scale_tree(truth, 0.7))
  # Each sample gets its own noise draw.
  _, aux = est(key, prob.params)
  assert len(np.unique(np.asarray(aux.values - jax.vmap(prob.f)(aux.samples)))) == N


def test_pathwise_is_unbiased_for_differentiable_f(key):
  prob = PROBLEMS["gaussian_quadratic"]()
  est = pgjax.pathwise(prob.f, prob.dist_fn, num_samples=N)
  truth = prob.true_grad(prob.params)
  assert_unbiased_with_power(est, prob.params, key, target=truth, wrong_target=scale_tree(truth, 0.95))


def test_pathwise_is_visibly_wrong_on_step_where_score_function_is_right(key):
  prob = PROBLEMS["gaussian_step"]()
  truth = prob.true_grad(prob.params)
  pw = pgjax.pathwise(prob.f, prob.dist_fn, num_samples=N)
  g, _ = pw(key, prob.params)
  chex.assert_trees_all_equal(g, jax.tree_util.tree_map(jnp.zeros_like, truth))  # zero a.s.
  sf = pgjax.score_function(prob.f, prob.dist_fn, num_samples=N, baseline="leave_one_out")
  both = lambda k, p: ({"pathwise": pw(k, p)[0], "score_function": sf(k, p)[0]}, None)
  reps = _replicates(both, prob.params, key, 2000)
  assert not _within(reps["pathwise"], truth)[0]
  assert _within(reps["score_function"], truth)[0]
  assert not _within(reps["score_function"], scale_tree(truth, 0.8))[0]   # power control


def _total_variances(combined, params, key, num_replicates):
  """Per estimate: tr Cov over replicates and its standard error (from the per-replicate squared deviations)."""
  out = {}
  for name, flat in _replicates(combined, params, key, num_replicates).items():
    dev = np.sum((flat - flat.mean(0)) ** 2, axis=1) * num_replicates / (num_replicates - 1)
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
  for baseline in ["none", "leave_one_out", "optimal", "optimal_per_coordinate"]:
    g, aux = jax.jit(pgjax.score_function(f, dist_fn, num_samples=4, baseline=baseline))(key, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(g, params)
    assert aux.values.shape == (4,) and aux.log_probs.shape == (4,)
  g, _ = jax.jit(pgjax.pathwise(f, dist_fn, num_samples=4))(key, params)
  chex.assert_trees_all_equal_shapes_and_dtypes(g, params)


def test_jit_vmap_and_single_trace(key):
  prob = PROBLEMS["gaussian_quadratic"]()
  est = pgjax.score_function(prob.f, prob.dist_fn, num_samples=N, baseline="leave_one_out")
  traced = jax.jit(chex.assert_max_traces(est, n=1))
  g_jit, _ = traced(key, prob.params)
  g_eager, _ = est(key, prob.params)
  chex.assert_trees_all_close(g_eager, g_jit, rtol=1e-5)
  # New keys and new params values: no retrace.
  other = jax.tree_util.tree_map(lambda x: x + 0.1, prob.params)
  traced(jax.random.fold_in(key, 1), other)
  traced(jax.random.fold_in(key, 2), prob.params)
  keys = jax.random.split(key, 5)
  gs, _ = jax.jit(jax.vmap(est, in_axes=(0, None)))(keys, prob.params)
  g2, _ = traced(keys[2], prob.params)
  chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[2], gs), g2, rtol=1e-5)
  # vmap over params too (a batch of problems).
  batched = jax.tree_util.tree_map(lambda x: jnp.stack([x, x + 1]), prob.params)
  gp, _ = jax.jit(jax.vmap(est))(keys[:2], batched)
  chex.assert_shape(gp["mean"], (2, 2))


def test_accepts_raw_uint32_keys():
  prob = PROBLEMS["categorical_bandit"]()
  est = pgjax.score_function(prob.f, prob.dist_fn, num_samples=N)
  g, _ = est(jax.random.PRNGKey(0), prob.params)
  assert g.shape == prob.params.shape


@pytest.mark.parametrize("baseline", ["none", "mean", "leave_one_out", "optimal", "optimal_leave_one_out",
                                      "optimal_per_coordinate", "optimal_per_coordinate_leave_one_out",
                                      "group_normalize"])
def test_extreme_logits_give_finite_gradients(baseline, key):
  logits = jnp.array([1e4, -1e4, 0.0, 3.0])
  prob = P.categorical_bandit((1.0, 0.0, 0.5, 0.2), logits=logits)
  g, aux = jax.jit(pgjax.score_function(prob.f, prob.dist_fn, num_samples=16, baseline=baseline))(key, logits)
  pgjax.testing.assert_tree_all_finite(g, "grads")
  pgjax.testing.assert_tree_all_finite(aux.baselines, "baselines")
  # Every sample is the dominant arm (probability 1 - e^-9997): the sampled gradient is ~0, like the true one.
  assert np.all(np.asarray(aux.samples) == 0)
  g_exact, _ = pgjax.exact_gradient(prob.f, prob.dist_fn)(None, logits)
  pgjax.testing.assert_tree_all_finite(g_exact, "exact grads")


def test_group_normalize_zero_variance_gives_zero_gradient(key):
  prob = P.categorical_bandit((1.0, 1.0, 1.0))  # every reward equal
  g, _ = pgjax.score_function(prob.f, prob.dist_fn, num_samples=8, baseline="group_normalize")(
      key, prob.params)
  np.testing.assert_array_equal(g, jnp.zeros(3))


# ---------------------------------------------------------------------------------------------- exact oracle

def test_exact_gradient_categorical_bandit_closed_form():
  r = jnp.array([1.0, 0.0, 0.5, 0.2])
  logits = jnp.array([0.3, -1.0, 2.0, 0.1])
  prob = P.categorical_bandit(r, logits=logits)
  g, aux = pgjax.exact_gradient(prob.f, prob.dist_fn)(None, logits)
  p = np.exp(logits) / np.sum(np.exp(logits))
  np.testing.assert_allclose(g, p * (r - p @ r), atol=1e-7)          # hand formula, in numpy
  np.testing.assert_allclose(aux.value, p @ r, rtol=1e-6)


def test_exact_gradient_on_products_of_bernoulli_and_categorical():
  prob = P.bernoulli_quadratic(4, logits=[0.3, -0.7, 1.2, 0.0], target=[0.2, 0.8, 0.5, 0.0])
  g, aux = pgjax.exact_gradient(prob.f, prob.dist_fn)(None, prob.params)
  np.testing.assert_allclose(g, prob.true_grad(prob.params), atol=1e-6)
  np.testing.assert_allclose(aux.value, prob.expectation(prob.params), rtol=1e-6)
  # A 2 x 3 grid of independent categoricals, f = product of the first entries' indicator and a sum.
  logits = jnp.array([[0.1, 0.5, -0.2], [1.0, 0.0, -1.0]])
  dist_fn = lambda l: distrax.Independent(distrax.Categorical(logits=l), 1)
  f = lambda x: (x[0] == 1) * 1.0 + x[1].astype(jnp.float32)
  g, aux = pgjax.exact_gradient(f, dist_fn)(None, logits)
  p = jax.nn.softmax(logits)
  want = jnp.stack([p[0] * (jnp.array([0.0, 1.0, 0.0]) - p[0, 1]),
                    p[1] * (jnp.arange(3.0) - p[1] @ jnp.arange(3.0))])
  np.testing.assert_allclose(g, want, atol=1e-6)


def test_exact_gradient_from_closed_form_expectation():
  prob = P.gaussian_step(3)
  g, aux = pgjax.exact_gradient(expectation=prob.expectation)(None, prob.params)
  chex.assert_trees_all_close(g, prob.true_grad(prob.params), atol=1e-6)


def test_problem_expectations_match_monte_carlo(key):
  """The closed-form expectations are checked against plain sample averages (5 SE)."""
  for name, make in PROBLEMS.items():
    prob = make()
    with jax.numpy_rank_promotion("allow"):  # distrax broadcasts implicitly inside `sample`
      x = prob.dist_fn(prob.params).sample(seed=key, sample_shape=(200_000,))
    v = np.asarray(jax.vmap(prob.f)(x), np.float64)
    se = v.std() / np.sqrt(v.size)
    assert abs(v.mean() - float(prob.expectation(prob.params))) < 5 * se + 1e-6, name


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
  for baseline in ["leave_one_out", "optimal_per_coordinate"]:
    g1, a1 = jax.jit(pgjax.score_function(f, batched, num_samples=8, baseline=baseline))(key, params)
    g2, a2 = jax.jit(pgjax.score_function(f, joint, num_samples=8, baseline=baseline))(key, params)
    np.testing.assert_allclose(a1.log_probs, a2.log_probs, rtol=1e-5)
    chex.assert_trees_all_close(g1, g2, rtol=1e-4, atol=1e-6)


def test_in_batch_optimal_matches_numpy_and_is_biased_at_small_n(key):
  prob = PROBLEMS["gaussian_quadratic"]()
  est = pgjax.score_function(prob.f, prob.dist_fn, num_samples=4, baseline="optimal")
  g, aux = est(key, prob.params)
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
  truth = prob.true_grad(prob.params)
  reps = _replicates(_combined(prob, ["optimal", "optimal_leave_one_out"], num_samples=4), prob.params, key, 2000)
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
  _, aux = est(key, logits, baseline_value=c)
  p = np.exp(np.asarray(logits, np.float64)) / np.sum(np.exp(np.asarray(logits, np.float64)))
  s = np.eye(4)[np.asarray(aux.samples)] - p                         # categorical scores onehot - p
  f = np.asarray(aux.values, np.float64)
  g = np.mean((f - c)[:, None] * s, axis=0)
  want = -2 * g @ np.mean(s, axis=0)
  got = float(jax.grad(loss)(c))
  eps = 1e-2                                                         # loss is quadratic in c: exact FD
  fd = (float(loss(c + eps)) - float(loss(c - eps))) / (2 * eps)
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
  np.testing.assert_allclose(jax.grad(total)(1.5), 2 * 1.5 * total(1.0), rtol=1e-5)


@pytest.mark.parametrize("baseline", ["optimal", "optimal_leave_one_out", "optimal_per_coordinate"])
def test_optimal_baselines_differentiable_in_params_with_samples_fixed(baseline, key):
  """Categorical samples do not move under a small change of the logits, so central finite differences in
  the logits measure the estimate's derivative with the samples fixed, which jax.grad must reproduce."""
  est = pgjax.score_function(_bandit_f, _bandit_dist, num_samples=16, baseline=baseline)
  loss = lambda l: jnp.sum(est(key, l)[0] ** 2)
  logits = _bandit_logits()
  x0 = est(key, logits)[1].samples
  direction = jnp.array([0.3, -0.5, 0.2, 0.1])
  eps = 1e-3
  for sign in (1, -1):
    np.testing.assert_array_equal(est(key, logits + sign * eps * direction)[1].samples, x0)
  fd = (float(loss(logits + eps * direction)) - float(loss(logits - eps * direction))) / (2 * eps)
  got = float(jnp.vdot(jax.grad(loss)(logits), direction))
  np.testing.assert_allclose(got, fd, rtol=2e-2, atol=1e-4)


@pytest.mark.parametrize("baseline", ["none", 0.3, "constant", "mean", "leave_one_out", "optimal",
                                      "optimal_leave_one_out", "optimal_per_coordinate",
                                      "optimal_per_coordinate_leave_one_out", "group_normalize"])
def test_nan_value_propagates_into_the_estimate(baseline, key):
  """NaN policy: one NaN f(x_i) makes the estimate NaN with every baseline (never a finite number)."""
  logits = jnp.array([2.0, 0.0, 0.0, 0.0])
  nan_f = lambda a: jnp.where(a == 0, jnp.nan, _bandit_f(a))
  g, aux = jax.jit(pgjax.score_function(nan_f, _bandit_dist, num_samples=8, baseline=baseline))(key, logits)
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
  ints = jax.tree_util.tree_map(lambda x: x.astype(jnp.int32), prob.params)
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
  _, aux = pgjax.exact_gradient(_bandit_f, _bandit_dist)(None, _bandit_logits())
  assert aux.num_evaluations == 4
  _, aux = pgjax.exact_gradient(expectation=lambda l: jnp.sum(jax.nn.softmax(l)))(None, _bandit_logits())
  assert aux.num_evaluations == 0
