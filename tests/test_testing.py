"""pgjax.testing: the checks pass on correct estimators and fail on wrong ones."""

import re
from typing import NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax


def noisy(bias=0.0, scale=1.0):
  def est(key, params):
    return params * (1.0 + bias) + scale * jax.random.normal(key, params.shape), ()
  return est


def test_assert_unbiased_passes_and_reports_failures(key):
  p = jnp.array([1.0, -2.0, 0.5])
  stats = pgjax.testing.assert_unbiased(noisy(), p, key, target=p, num_replicates=1000)
  assert stats.mean.shape == p.shape
  with pytest.raises(AssertionError, match="coord 1"):  # the largest coordinate shows the 10% bias first
    pgjax.testing.assert_unbiased(noisy(bias=0.1), p, key, target=p, num_replicates=4000)


def test_check_unbiased_returns_flag(key):
  p = jnp.array([1.0])
  ok, report, _ = pgjax.testing.check_unbiased(noisy(bias=1.0), p, key, target=p, num_replicates=100)
  assert not ok and "outside" in report


def test_assert_variance_less_with_margin(key):
  p = jnp.zeros(4)
  pgjax.testing.assert_variance_less(noisy(scale=0.5), noisy(scale=1.0), p, key, num_replicates=2000,
                                     ratio=0.4)  # 0.25 < 0.4
  with pytest.raises(AssertionError, match="variance claim failed"):
    pgjax.testing.assert_variance_less(noisy(scale=0.5), noisy(scale=1.0), p, key, num_replicates=2000,
                                       ratio=0.2)


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


def make_toy(f=lambda x: -jnp.sum(x ** 2), scale=1.0, n=4):
  """Zeroth-order-like toy estimator on a pytree: mean of f(theta + u) u over n Gaussian directions.

  ``f`` takes the raveled parameters.
  """
  def est(key, params):
    key = as_key(key)
    for leaf in jax.tree_util.tree_leaves(params):
      if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
        raise TypeError("`params` leaves must be floating")
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    u = jax.random.normal(key, (n,) + flat.shape, flat.dtype)
    vals = jax.vmap(lambda v: f(flat + v))(u)
    g = jnp.mean(vals[:, None].astype(flat.dtype) * u, axis=0) * jnp.asarray(scale, flat.dtype)
    return unravel(g), Aux(vals, n)
  return est


TOY_PARAMS = {"a": jnp.ones(2), "b": jnp.array([0.5])}
CORE = ("structure", "aux", "finite", "keys", "jit", "deterministic", "vmap_keys", "vmap_params", "grad")


def statuses(report):
  return {r.name: r.status for r in report.results}


def test_check_estimator_passes_a_correct_estimator_and_reports_each_property():
  est = make_toy()
  nan_est = make_toy(f=lambda x: jnp.where(x[0] > 1.0, jnp.nan, -jnp.sum(x ** 2)))
  report = pgjax.testing.check_estimator(
      est, TOY_PARAMS, compiler_options=FAST, dtypes=(jnp.bfloat16,),
      variants={"same": make_toy()},
      hyperparameters={"scale": (lambda s: make_toy(scale=s), 2.0)},
      nan_estimator=nan_est, nan_policy="propagate",
      bad_arguments=[(lambda: check_num_samples(0), "num_samples")])
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


def _fails(est, prop, match, params=TOY_PARAMS, **kw):
  report = pgjax.testing.check_estimator(est, params, compiler_options=FAST, raise_on_failure=False,
                                         bad_keys=False, bad_params=False, **kw)
  r = report[prop]
  assert r.status == "failed", report
  assert re.search(match, r.message), r.message
  return report


def test_dtype_and_finite_failures():
  good = make_toy()
  def as_f32(key, params):  # ignores the params' dtype
    g, aux = good(key, params)
    return jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), g), aux
  _fails(as_f32, "dtype[bfloat16]", "dtype float32, params has bfloat16", dtypes=(jnp.bfloat16,))
  _fails(make_toy(f=lambda x: jnp.log(-jnp.sum(x))), "finite", "non-finite")


def test_float64_runs_under_x64_and_rebuild():
  report = pgjax.testing.check_estimator(make_toy(), TOY_PARAMS, compiler_options=FAST, dtypes=(jnp.float64,),
                                         rebuild=make_toy, skip=CORE, bad_keys=False, bad_params=False)
  assert report["dtype[float64]"].status == "passed"
  assert not jax.config.jax_enable_x64


def test_legacy_key_failure():
  good = make_toy()
  def est(key, params):  # treats legacy keys differently
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
      key = jax.random.fold_in(jax.random.wrap_key_data(key), 1)
    return good(key, params)
  _fails(est, "keys", "not bit-identical")


def test_determinism_failure():
  good = make_toy()
  def est(key, params):  # host randomness: different on every call
    g, aux = good(key, params)
    noise = jax.pure_callback(lambda: np.float32(np.random.rand()), jax.ShapeDtypeStruct((), jnp.float32),
                              vmap_method="broadcast_all")
    return jax.tree_util.tree_map(lambda x: x + noise, g), aux
  _fails(est, "deterministic", "not bit-identical", skip=("grad",))


def test_vmap_failures():
  good = make_toy()
  def est(key, params):  # a host callback that sees the batch: results change under vmap
    g, aux = good(key, params)
    size = jax.pure_callback(lambda a: np.full(a.shape[:-1], a.size, np.float32),
                             jax.ShapeDtypeStruct((), jnp.float32),
                             g["a"], vmap_method="expand_dims")
    return jax.tree_util.tree_map(lambda x: x * size, g), aux
  report = _fails(est, "vmap_keys", r"vmap\(keys\)\[0\].* and result\(keys\[0\]\).* differ by", skip=("grad",))
  assert report["vmap_params"].status == "failed"


def test_jit_and_grad_failures():
  good = make_toy()
  def not_jittable(key, params):
    if float(params["b"][0]) > 0:  # Python control flow on a traced value
      return good(key, params)
    return good(key, params)
  report = _fails(not_jittable, "jit", "raised|failed")
  assert report["structure"].status == "failed"
  def not_differentiable(key, params):
    g, aux = good(key, params)
    return jax.tree_util.tree_map(lambda x: x.at[0].set(jnp.floor(x[0]) * 0 + jnp.round(x[0])), g), aux
  report = pgjax.testing.check_estimator(not_differentiable, TOY_PARAMS, compiler_options=FAST,
                                         raise_on_failure=False, bad_keys=False, bad_params=False)
  assert report["grad"].status == "passed"  # round has a zero derivative: still differentiable
  def callback(key, params):
    g, aux = good(key, params)
    h = jax.pure_callback(lambda a: a, jax.ShapeDtypeStruct((2,), jnp.float32), params["a"],
                          vmap_method="sequential")
    return {"a": g["a"] + h, "b": g["b"]}, aux
  _fails(callback, "grad", "grad raised")


def test_hyperparameter_derivative_blocked_by_stop_gradient_fails():
  def build(s):
    return make_toy(scale=jax.lax.stop_gradient(s))
  _fails(make_toy(), "hyperparameter[scale]", "finite difference", skip=CORE,
         hyperparameters={"scale": (build, 2.0)})


def test_variant_failure():
  _fails(make_toy(), "variant[scaled]", "differ by", skip=CORE[1:], variants={"scaled": make_toy(scale=1.01)})


def test_nan_policies():
  nan_f = lambda x: jnp.where(x[0] > 1.0, jnp.nan, -jnp.sum(x ** 2))
  def hide_nans(key, params):  # sees the NaN values but returns a finite gradient: silently wrong
    g, aux = make_toy(f=nan_f)(key, params)
    return jax.tree_util.tree_map(jnp.nan_to_num, g), aux
  _fails(make_toy(), "nan_policy", "without NaN", skip=CORE, nan_estimator=hide_nans, nan_policy="propagate")

  class CountAux(NamedTuple):
    values: jax.Array
    num_nonfinite: jax.Array
    num_evaluations: int

  def ranking(count_offset):
    toy = make_toy(f=nan_f)
    def est(key, params):
      g, aux = toy(key, params)
      bad = ~jnp.isfinite(aux.values)
      return (jax.tree_util.tree_map(lambda x: jnp.nan_to_num(x), g),
              CountAux(aux.values, jnp.sum(bad).astype(jnp.int32) + count_offset, aux.num_evaluations))
    return est
  ok = pgjax.testing.check_estimator(make_toy(), TOY_PARAMS, compiler_options=FAST, skip=CORE, bad_keys=False,
                                     bad_params=False, nan_estimator=ranking(0), nan_policy="rank_last")
  assert ok["nan_policy"].status == "passed"
  _fails(make_toy(), "nan_policy", "num_nonfinite is", skip=CORE, nan_estimator=ranking(1),
         nan_policy="rank_last")
  _fails(make_toy(), "nan_policy", "shows no NaN on 8 keys", skip=CORE, nan_estimator=make_toy(),
         nan_policy="propagate")
  with pytest.raises(ValueError, match="nan_policy"):
    pgjax.testing.check_estimator(make_toy(), TOY_PARAMS, nan_policy="ignore")


def test_bad_inputs_must_raise_naming_the_argument():
  def unchecked(key, params):  # no key or params validation: JAX's own errors do not name the argument
    return jax.tree_util.tree_map(lambda p: p + jax.random.normal(key, jnp.shape(p)), params), Aux(
        jnp.zeros(1), 1)
  report = pgjax.testing.check_estimator(unchecked, TOY_PARAMS, compiler_options=FAST, skip=CORE,
                                         raise_on_failure=False)
  assert report["bad_key[int]"].status == "failed"
  assert report["bad_key[float]"].status == "failed"
  pgjax.testing.assert_raises_naming(lambda: check_num_samples(0),
                                     "num_samples")
  with pytest.raises(AssertionError, match="accepted"):
    pgjax.testing.assert_raises_naming(lambda: 1, "x")
  with pytest.raises(AssertionError, match="does not name `sigma`"):
    pgjax.testing.assert_raises_naming(lambda: float("x"), "sigma")


def test_edge_trees_with_none_scalar_and_empty_leaves():
  params = pgjax.testing.edge_case_params(TOY_PARAMS)
  assert params["none"] is None and params["empty"].shape == (0,) and params["scalar"].shape == ()
  good = make_toy()
  report = pgjax.testing.check_estimator(make_toy(), TOY_PARAMS, compiler_options=FAST, skip=CORE,
                                         bad_keys=False, bad_params=False,
                                         structures={"edge": (good, params)})
  assert report["tree[edge]"].status == "passed"
  def drops_none(key, params_):
    g, aux = good(key, params_)
    return {k: v for k, v in g.items() if k != "empty"}, aux
  _fails(make_toy(), "tree[edge]", "tree structure", skip=CORE, structures={"edge": (drops_none, params)})


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
