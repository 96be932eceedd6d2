"""pgjax.testing: the checks pass on correct estimators and fail on wrong ones."""

import re
from typing import NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax


def noisy(scale=1.0):
  """Unbiased for ``params``, covariance ``scale^2 I``."""
  def est(key, params):
    return params + scale * jax.random.normal(key, params.shape), ()
  return est


# One estimator object per variance, shared by the tests below: each (estimator, shapes, number of
# replicates) compiles `gradient_stats` once.
UNIT, HALF = noisy(), noisy(scale=0.5)
P3 = jnp.array([1.0, -2.0, 0.5])


def test_assert_unbiased_passes_and_reports_failures(key):
  stats = pgjax.testing.assert_unbiased(UNIT, P3, key, target=P3, num_replicates=2000)
  assert stats.mean.shape == P3.shape
  # Power control: a target off by 10% (0.2 on coordinate 1, about 9 standard errors) fails.
  with pytest.raises(AssertionError, match=r"1 of 3 coordinates outside.*\n  coord 1:"):
    pgjax.testing.assert_unbiased(UNIT, P3, key, target=P3 * jnp.array([1.0, 1.1, 1.0]), num_replicates=2000)


def test_check_unbiased_returns_flag(key):
  ok, report, _ = pgjax.testing.check_unbiased(UNIT, P3, key, target=2 * P3, num_replicates=2000)
  assert not ok and "3 of 3 coordinates outside" in report


def test_assert_variance_less_with_margin(key):
  p = jnp.zeros(4)
  pgjax.testing.assert_variance_less(HALF, UNIT, p, key, num_replicates=2000, ratio=0.4)  # 0.25 < 0.4
  with pytest.raises(AssertionError, match="variance claim failed"):
    pgjax.testing.assert_variance_less(HALF, UNIT, p, key, num_replicates=2000, ratio=0.2)


def test_assert_tree_all_finite_names_the_leaf():
  with pytest.raises(AssertionError, match=r"grads\['b'\]"):
    pgjax.testing.assert_tree_all_finite({"a": jnp.ones(2), "b": jnp.array([jnp.nan])}, "grads")


# --- check_estimator: passes a correct estimator, and each property fails on an estimator that breaks it ---

FAST = {"xla_backend_optimization_level": 0}


class Aux(NamedTuple):
  values: jax.Array
  num_evaluations: int


def as_key(key):
  if isinstance(key, jax.Array) and (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
                                     or (key.dtype == jnp.uint32 and key.shape == (2,))):
    return key
  raise TypeError(f"`key` must be a PRNG key, got {key!r}")


def check_num_samples(n):
  if n < 1:
    raise ValueError(f"`num_samples` must be >= 1, got {n}")


def key_directions(key, n, dim, dtype):
  """``[n, dim]`` directions in [-1, 1] that depend on every bit of the key's data.

  A cheap stand-in for ``jax.random.normal`` (the contract checks need directions that change with the key,
  not Gaussian ones; the PRNG would triple the compile time of every check).
  """
  data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  phase = ((data[0] % 65521) ^ (data[1] % 65519)).astype(jnp.float32) * 1e-3
  return jnp.sin(phase + 1.7 * jnp.arange(n * dim, dtype=jnp.float32).reshape(n, dim)).astype(dtype)


def make_toy(f=lambda x: -jnp.sum(x ** 2), scale=1.0, n=4):
  """Zeroth-order-like toy estimator on a pytree: mean of f(theta + u) u over n directions u.

  ``f`` takes the raveled parameters.
  """
  def est(key, params):
    key = as_key(key)
    for leaf in jax.tree_util.tree_leaves(params):
      if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
        raise TypeError("`params` leaves must be floating")
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    u = key_directions(key, n, flat.size, flat.dtype)
    vals = jax.vmap(lambda v: f(flat + v))(u)
    g = jnp.mean(vals[:, None].astype(flat.dtype) * u, axis=0) * jnp.asarray(scale, flat.dtype)
    return unravel(g), Aux(vals, n)
  return est


TOY_PARAMS = {"a": jnp.ones(2), "b": jnp.array([0.5])}
CORE = ("structure", "aux", "finite", "keys", "jit", "deterministic", "vmap_keys", "vmap_params", "grad")


def statuses(report):
  return {r.name: r.status for r in report.results}


NAN_F = lambda x: jnp.where(x[0] > 1.0, jnp.nan, -jnp.sum(x ** 2))  # noqa: E731  (NaN for some directions)
QUIET = dict(bad_keys=False, bad_params=False)  # cases about one property skip the bad-input checks


def only(*props):
  """``skip`` for a case that checks only ``props`` (fewer transformations to compile)."""
  return tuple(p for p in CORE if p not in props)


def as_f32(key, params):  # ignores the params' dtype
  g, aux = make_toy()(key, params)
  return jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), g), aux


def legacy_differs(key, params):  # treats legacy keys differently
  if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.fold_in(jax.random.wrap_key_data(key), 1)
  return make_toy()(key, params)


def host_random(key, params):  # host randomness: different on every call
  g, aux = make_toy()(key, params)
  noise = jax.pure_callback(lambda: np.float32(np.random.rand()), jax.ShapeDtypeStruct((), jnp.float32),
                            vmap_method="broadcast_all")
  return jax.tree_util.tree_map(lambda x: x + noise, g), aux


def sees_batch(key, params):  # a host callback that sees the batch: results change under vmap
  g, aux = make_toy()(key, params)
  size = jax.pure_callback(lambda a: np.full(a.shape[:-1], a.size, np.float32),
                           jax.ShapeDtypeStruct((), jnp.float32), g["a"], vmap_method="expand_dims")
  return jax.tree_util.tree_map(lambda x: x * size, g), aux


def hides_nans(key, params):  # sees the NaN values but returns a finite gradient: silently wrong
  g, aux = make_toy(f=NAN_F)(key, params)
  return jax.tree_util.tree_map(jnp.nan_to_num, g), aux


class CountAux(NamedTuple):
  values: jax.Array
  num_nonfinite: jax.Array
  num_evaluations: int


def ranks_nans_last(count_offset):  # finite gradient, NaN count in aux (off by `count_offset`)
  toy = make_toy(f=NAN_F)
  def est(key, params):
    g, aux = toy(key, params)
    bad = ~jnp.isfinite(aux.values)
    return (jax.tree_util.tree_map(jnp.nan_to_num, g),
            CountAux(aux.values, jnp.sum(bad).astype(jnp.int32) + count_offset, aux.num_evaluations))
  return est


def unchecked(key, params):  # no key or params validation: JAX's own errors do not name the argument
  def move(p):
    return p + key_directions(key, 1, p.size, p.dtype).reshape(p.shape)
  return jax.tree_util.tree_map(move, params), Aux(jnp.zeros(1), 1)


def drops_empty(key, params):
  g, aux = make_toy()(key, params)
  return {k: v for k, v in g.items() if k != "empty"}, aux


EDGE_PARAMS = pgjax.testing.edge_case_params(TOY_PARAMS)

# Every case below is checked by one `check_estimators` call (one compilation per kind of program); each
# test reads its cases' reports.
CASES = {
    "correct": dict(estimator=make_toy(), params=TOY_PARAMS, dtypes=(jnp.bfloat16,),
                    variants={"same": make_toy()},
                    hyperparameters={"scale": (lambda s: make_toy(scale=s), 2.0)},
                    nan_estimator=make_toy(f=NAN_F), nan_policy="propagate",
                    bad_arguments=[(lambda: check_num_samples(0), "num_samples")]),
    "as_f32": dict(estimator=as_f32, params=TOY_PARAMS, dtypes=(jnp.bfloat16,), skip=CORE, **QUIET),
    "log_of_negative": dict(estimator=make_toy(f=lambda x: jnp.log(-jnp.sum(x))), params=TOY_PARAMS,
                            skip=only("finite"), **QUIET),
    "float64": dict(estimator=make_toy(), params=TOY_PARAMS, dtypes=(jnp.float64,), rebuild=make_toy,
                    skip=CORE, **QUIET),
    "legacy_differs": dict(estimator=legacy_differs, params=TOY_PARAMS, skip=only("keys"), **QUIET),
    "host_random": dict(estimator=host_random, params=TOY_PARAMS, skip=only("deterministic"), **QUIET),
    "sees_batch": dict(estimator=sees_batch, params=TOY_PARAMS, skip=only("vmap_keys", "vmap_params"),
                       **QUIET),
    "stop_gradient": dict(estimator=make_toy(), params=TOY_PARAMS, skip=CORE, **QUIET, hyperparameters={
        "scale": (lambda s: make_toy(scale=jax.lax.stop_gradient(s)), 2.0)}),
    "scaled_variant": dict(estimator=make_toy(), params=TOY_PARAMS, skip=CORE[1:],
                           variants={"scaled": make_toy(scale=1.01)}, **QUIET),
    "hides_nans": dict(estimator=make_toy(), params=TOY_PARAMS, skip=CORE, nan_estimator=hides_nans,
                       nan_policy="propagate", **QUIET),
    "ranks_nans": dict(estimator=make_toy(), params=TOY_PARAMS, skip=CORE, nan_estimator=ranks_nans_last(0),
                       nan_policy="rank_last", **QUIET),
    "miscounts_nans": dict(estimator=make_toy(), params=TOY_PARAMS, skip=CORE,
                           nan_estimator=ranks_nans_last(1), nan_policy="rank_last", **QUIET),
    "no_nans": dict(estimator=make_toy(), params=TOY_PARAMS, skip=CORE, nan_estimator=make_toy(),
                    nan_policy="propagate", **QUIET),
    "unchecked": dict(estimator=unchecked, params=TOY_PARAMS, skip=CORE),
    "edge_trees": dict(estimator=make_toy(), params=TOY_PARAMS, skip=CORE, structures={
        "edge": (make_toy(), EDGE_PARAMS)}, **QUIET),
    "drops_empty": dict(estimator=make_toy(), params=TOY_PARAMS, skip=CORE, structures={
        "edge": (drops_empty, EDGE_PARAMS)}, **QUIET),
}


@pytest.fixture(scope="module")
def reports():
  return pgjax.testing.check_estimators(CASES, compiler_options=FAST, raise_on_failure=False)


def assert_fails(report, prop, match):
  r = report[prop]
  assert r.status == "failed", report
  assert re.search(match, r.message), r.message


def test_check_estimator_passes_a_correct_estimator_and_reports_each_property(reports):
  report = reports["correct"]
  got = statuses(report)
  for name in CORE + ("dtype[bfloat16]", "variant[same]", "hyperparameter[scale]", "nan_policy",
                      "bad_key[int]", "bad_key[float]", "bad_key[uint32[3]]", "bad_params",
                      "bad_argument[num_samples]"):
    assert got[name] == "passed", (name, report)
  assert report.ok and "0 failed" in str(report)


def test_check_estimator_raises_listing_failures():
  def est(key, params):  # a list instead of the params' dict, and a plain tuple for aux
    return [params["a"], params["b"]], ()
  with pytest.raises(AssertionError, match=r"(?s)structure: .*tree structure.*aux: aux must be a NamedTuple"):
    pgjax.testing.check_estimator(est, TOY_PARAMS, compiler_options=FAST, bad_keys=False, bad_params=False)


def test_dtype_and_finite_failures(reports):
  assert_fails(reports["as_f32"], "dtype[bfloat16]", "dtype float32, params has bfloat16")
  assert_fails(reports["log_of_negative"], "finite", "non-finite")


def test_float64_runs_under_x64_and_rebuild(reports):
  assert reports["float64"]["dtype[float64]"].status == "passed"
  assert not jax.config.jax_enable_x64


def test_legacy_key_failure(reports):
  assert_fails(reports["legacy_differs"], "keys", r"result\(PRNGKey\).* and result\(key\).* differ by")


def test_determinism_failure(reports):
  assert_fails(reports["host_random"], "deterministic", "not bit-identical")


def test_vmap_failures(reports):
  assert_fails(reports["sees_batch"], "vmap_keys", r"vmap\(keys\)\[0\].* and result\(keys\[0\]\).* differ by")
  assert reports["sees_batch"]["vmap_params"].status == "failed"


def test_jit_and_grad_failures():
  good = make_toy()
  def not_jittable(key, params):
    if float(params["b"][0]) > 0:  # Python control flow on a traced value
      return good(key, params)
    return good(key, params)
  def not_differentiable(key, params):
    g, aux = good(key, params)
    return jax.tree_util.tree_map(lambda x: x.at[0].set(jnp.floor(x[0]) * 0 + jnp.round(x[0])), g), aux
  def callback(key, params):
    g, aux = good(key, params)
    h = jax.pure_callback(lambda a: a, jax.ShapeDtypeStruct((2,), jnp.float32), params["a"],
                          vmap_method="sequential")
    return {"a": g["a"] + h, "b": g["b"]}, aux
  cases = {name: dict(estimator=est, params=TOY_PARAMS, skip=only(*props), **QUIET) for name, est, props in (
      ("not_jittable", not_jittable, ("structure", "jit")), ("round", not_differentiable, ("grad",)),
      ("callback", callback, ("grad",)))}
  got = pgjax.testing.check_estimators(cases, compiler_options=FAST, raise_on_failure=False)
  assert_fails(got["not_jittable"], "jit", "raised|failed")
  assert got["not_jittable"]["structure"].status == "failed"
  assert got["round"]["grad"].status == "passed"  # round has a zero derivative: still differentiable
  assert_fails(got["callback"], "grad", "grad raised")


def test_hyperparameter_derivative_blocked_by_stop_gradient_fails(reports):
  assert_fails(reports["stop_gradient"], "hyperparameter[scale]", "finite difference")


def test_variant_failure(reports):
  assert_fails(reports["scaled_variant"], "variant[scaled]", "differ by")


def test_nan_policies(reports):
  assert_fails(reports["hides_nans"], "nan_policy", "without NaN")
  assert reports["ranks_nans"]["nan_policy"].status == "passed"
  assert_fails(reports["miscounts_nans"], "nan_policy", "num_nonfinite is")
  assert_fails(reports["no_nans"], "nan_policy", "shows no NaN on 8 keys")
  with pytest.raises(ValueError, match="nan_policy"):
    pgjax.testing.check_estimator(make_toy(), TOY_PARAMS, nan_policy="ignore")


def test_bad_inputs_must_raise_naming_the_argument(reports):
  assert reports["unchecked"]["bad_key[int]"].status == "failed"
  assert reports["unchecked"]["bad_key[float]"].status == "failed"
  pgjax.testing.assert_raises_naming(lambda: check_num_samples(0), "num_samples")
  with pytest.raises(AssertionError, match="accepted"):
    pgjax.testing.assert_raises_naming(lambda: 1, "x")
  with pytest.raises(AssertionError, match="does not name `sigma`"):
    pgjax.testing.assert_raises_naming(lambda: float("x"), "sigma")


def test_edge_trees_with_none_scalar_and_empty_leaves(reports):
  assert EDGE_PARAMS["none"] is None and EDGE_PARAMS["empty"].shape == (0,)
  assert EDGE_PARAMS["scalar"].shape == ()
  assert reports["edge_trees"]["tree[edge]"].status == "passed"
  assert_fails(reports["drops_empty"], "tree[edge]", "tree structure")


def test_tree_helpers():
  a = {"x": jnp.array([1.0, 2.0]), "y": None}
  pgjax.testing.assert_trees_equal(a, {"x": jnp.array([1.0, 2.0]), "y": None})
  with pytest.raises(AssertionError, match=r"\['x'\].*not bit-identical"):
    pgjax.testing.assert_trees_equal(a, {"x": jnp.array([1.0, 2.0 + 1e-6]), "y": None})
  pgjax.testing.assert_trees_close(a, {"x": jnp.array([1.0, 2.0 + 1e-6]), "y": None}, rtol=1e-5)
  with pytest.raises(AssertionError, match="differ by"):
    pgjax.testing.assert_trees_close(a, {"x": jnp.array([1.0, 2.1]), "y": None})
  with pytest.raises(AssertionError, match="dtype float32, params has bfloat16"):
    pgjax.testing.assert_same_structure_and_dtypes(a, pgjax.testing.cast_floating(a, jnp.bfloat16))
  counted = pgjax.testing.TraceCounter(lambda x: x + 1)
  jitted = jax.jit(counted)
  jitted(1.0)
  jitted(2.0)
  assert counted.count == 1


def test_check_estimators_attributes_a_failure_to_its_estimator():
  def broken(key, params):
    raise ValueError("broken estimator")
  common = dict(params=TOY_PARAMS, bad_keys=False, bad_params=False, skip=("vmap_params", "grad"))
  reports = pgjax.testing.check_estimators(
      {"good": dict(estimator=make_toy(), **common), "broken": dict(estimator=broken, **common)},
      compiler_options=FAST, raise_on_failure=False)
  assert reports["good"].ok, reports["good"]
  assert reports["broken"]["structure"].status == "failed"
  assert "broken estimator" in reports["broken"]["structure"].message
  with pytest.raises(AssertionError, match="broken: "):
    pgjax.testing.check_estimators({"broken": dict(estimator=broken, **common)}, compiler_options=FAST)
  with pytest.raises(TypeError, match="unknown options"):
    pgjax.testing.check_estimators({"x": dict(estimator=broken, params=TOY_PARAMS, bogus=1)})
