"""Every public estimator meets the estimator contract (:func:`pgjax.testing.check_estimator`).

One case per estimator configuration (every score-function baseline, every zeroth-order scheme x directions,
every shaping with Gaussian and sphere directions, each baseline, the new estimator families). Each case runs ``check_estimator`` once
(cached); each property group of it is one test, so a known defect can be marked on exactly the property it
breaks. Problems are tiny: the cost is compilation, one fused program per case plus one per extra dtype,
tree, variant, hyperparameter and NaN case.
"""

from __future__ import annotations

import functools
import inspect

import distrax
import jax
import jax.numpy as jnp
import pytest

import pgjax
from pgjax.testing import check_estimators

# The checks are about the contract (structure, transformations, determinism, NaN policy), not about speed:
# the backend's unoptimised code generation halves compilation time and keeps IEEE semantics.
FAST_COMPILE = {"xla_backend_optimization_level": 0}

BF16_F64 = (jnp.bfloat16, jnp.float64)


# --- problems ------------------------------------------------------------------------------------------------

GAUSS = pgjax.problems.gaussian_quadratic(2)
GAUSS_PARAMS = GAUSS.params


def gauss_f(x):
  return GAUSS.f(x)


def gauss_nan_f(x):  # NaN on about half of the draws of N(0, I)
  return jnp.where(x[0] > 0.0, jnp.nan, GAUSS.f(x))


def gauss_edge_dist(p):
  """The Gaussian of ``GAUSS`` on a tree with a ``None`` leaf, a scalar and a zero-size leaf on the path."""
  q = p["params"]
  shift = p["scalar"] + jnp.sum(p["empty"])
  return distrax.MultivariateNormalDiag(q["mean"] + shift, jnp.exp(q["log_std"]))


GAUSS_EDGE_PARAMS = pgjax.testing.edge_case_params(GAUSS_PARAMS)


def bern_dist(logits):
  return distrax.Independent(distrax.Bernoulli(logits=logits), 1)


BERN = pgjax.problems.bernoulli_quadratic(3)


def bern_nan_f(x):
  return jnp.where(x[0] > 0.5, jnp.nan, BERN.f(x))


BANDIT = pgjax.problems.categorical_bandit()

# Zeroth order: f takes the parameters themselves, a tree of two leaves.
ZO_PARAMS = {"w": jnp.zeros((2,), jnp.float32), "b": jnp.zeros((1,), jnp.float32)}
ZO_TARGET = jnp.array([0.5, -1.0], jnp.float32)


def zo_f(p):
  return -jnp.sum((p["w"] - ZO_TARGET) ** 2) - jnp.sum(p["b"] ** 2)


def zo_nan_f(p):  # NaN for about half of the perturbations of w = 0
  return jnp.where(p["w"][0] > 0.0, jnp.nan, zo_f(p))


def zo_edge_f(p):
  q = p["params"]
  return zo_f(q) - p["scalar"] ** 2 - jnp.sum(p["empty"] ** 2)


ZO_EDGE_PARAMS = pgjax.testing.edge_case_params(ZO_PARAMS)


# --- cases ---------------------------------------------------------------------------------------------------

CASES: dict[str, dict] = {}


def case(name, **kwargs):
  assert name not in CASES, name
  CASES[name] = kwargs


# Score function: every baseline. The surrogate path and the per-sample-score path each get the full set of
# extras (dtypes, edge trees, argument errors); every baseline gets the core checks and the NaN policy.
SF_BASELINES = ("none", "constant", 0.5, "mean", "leave_one_out", "optimal", "optimal_leave_one_out",
                "optimal_per_coordinate", "optimal_per_coordinate_leave_one_out", "group_normalize",
                lambda v: jnp.full_like(v, 0.25))
SF_FULL = ("none", "optimal_per_coordinate_leave_one_out", "group_normalize")


def _sf_name(b):
  return "callable" if callable(b) else ("number" if not isinstance(b, str) else b)


for _b in SF_BASELINES:
  _name = _sf_name(_b)
  _kw = dict(
      estimator=pgjax.score_function(gauss_f, GAUSS.dist_fn, num_samples=4, baseline=_b),
      params=GAUSS_PARAMS,
      nan_estimator=pgjax.score_function(gauss_nan_f, GAUSS.dist_fn, num_samples=4, baseline=_b),
      nan_policy="propagate",
  )
  if _name in SF_FULL:
    _kw.update(
        dtypes=BF16_F64,
        structures={"edge": (pgjax.score_function(gauss_f, gauss_edge_dist, num_samples=4, baseline=_b),
                             GAUSS_EDGE_PARAMS)},
        bad_arguments=[
            (lambda b=_b: pgjax.score_function(gauss_f, GAUSS.dist_fn, num_samples=0, baseline=b), "num_samples"),
            (lambda: pgjax.score_function(gauss_f, GAUSS.dist_fn, num_samples=4, baseline="bogus"), "baseline"),
            (lambda b=_b: pgjax.score_function(gauss_f, 3.0, num_samples=4, baseline=b), "dist_fn"),
            (lambda b=_b: pgjax.score_function(gauss_f, lambda p: p["mean"], num_samples=4, baseline=b)(
                jax.random.key(0), GAUSS_PARAMS), "dist_fn"),
        ])
  if _name == "constant":
    _est = _kw["estimator"]
    _kw["hyperparameters"] = {
        "baseline_value": (lambda c, e=_est: (lambda k, p: e(k, p, baseline_value=c)), 0.5)}
  if _name == "number":
    _kw["hyperparameters"] = {
        "baseline": (lambda c: pgjax.score_function(gauss_f, GAUSS.dist_fn, num_samples=4, baseline=c), 0.5)}
  case(f"score_function[{_name}]", **_kw)

case("score_function[bernoulli,leave_one_out]",
     estimator=pgjax.score_function(BERN.f, bern_dist, num_samples=4, baseline="leave_one_out"),
     params=BERN.params,
     nan_estimator=pgjax.score_function(bern_nan_f, bern_dist, num_samples=4, baseline="leave_one_out"),
     nan_policy="propagate", dtypes=BF16_F64)

case("pathwise",
     estimator=pgjax.pathwise(gauss_f, GAUSS.dist_fn, num_samples=4), params=GAUSS_PARAMS,
     nan_estimator=pgjax.pathwise(gauss_nan_f, GAUSS.dist_fn, num_samples=4), nan_policy="propagate",
     dtypes=BF16_F64,
     structures={"edge": (pgjax.pathwise(gauss_f, gauss_edge_dist, num_samples=4), GAUSS_EDGE_PARAMS)},
     bad_arguments=[(lambda: pgjax.pathwise(gauss_f, GAUSS.dist_fn, num_samples=0), "num_samples"),
                    (lambda: pgjax.pathwise(gauss_f, None, num_samples=2), "dist_fn")])

# The oracle ignores its key by design (``key=None`` is allowed), so bad keys are not errors for it.
case("exact_gradient[enumeration]",
     estimator=pgjax.exact_gradient(BANDIT.f, BANDIT.dist_fn), params=BANDIT.params, bad_keys=False,
     dtypes=BF16_F64,
     bad_arguments=[(lambda: pgjax.exact_gradient(BANDIT.f, None), "dist_fn")])
case("exact_gradient[expectation]",
     estimator=pgjax.exact_gradient(expectation=GAUSS.expectation), params=GAUSS_PARAMS, bad_keys=False,
     dtypes=BF16_F64,
     structures={"edge": (pgjax.exact_gradient(expectation=lambda p: GAUSS.expectation(p["params"])
                                               + p["scalar"] ** 2 + jnp.sum(p["empty"])), GAUSS_EDGE_PARAMS)},
     bad_arguments=[(lambda: pgjax.exact_gradient(expectation=3.0), "expectation")])


# Zeroth order: every valid scheme x directions x shaping (shaping cannot follow the f(x) baseline of
# "forward"), then every baseline of "plain".
ZO_DIRECTIONS = ("gaussian", "sphere", "orthogonal", "orthogonal_sphere")
ZO_SHAPINGS = (None, "centered_ranks", "nes_utilities", "zscore")
RANKING = ("centered_ranks", "nes_utilities")


def zo(f, scheme, directions, shaping, baseline=None, **kw):
  return pgjax.zeroth_order(f, num_directions=4, sigma=0.1, scheme=scheme, directions=directions,
                            shaping=shaping, baseline=baseline, **kw)


def zo_case(scheme, directions, shaping, baseline=None):
  """The core checks for every combination; the NaN policy where values are used (every shaping and baseline,
  Gaussian directions), chunking, sigma derivative, dtypes and edge trees where the code paths differ."""
  name = f"zeroth_order[{scheme},{directions},{shaping or 'no_shaping'}" + (
      f",{baseline}]" if baseline is not None else "]")
  kw = dict(estimator=zo(zo_f, scheme, directions, shaping, baseline), params=ZO_PARAMS)
  if directions == "gaussian":
    kw.update(nan_estimator=zo(zo_nan_f, scheme, directions, shaping, baseline),
              nan_policy="rank_last" if shaping in RANKING else "propagate")
  if shaping in (None, "centered_ranks") and baseline is None:
    kw["variants"] = {"batch_size=1": zo(zo_f, scheme, directions, shaping, baseline, batch_size=1)}
  if (directions == "gaussian" and shaping in (None, "zscore")) or (directions != "gaussian" and shaping is None
                                                                     and scheme == "plain"):
    kw["hyperparameters"] = {"sigma": (lambda s: pgjax.zeroth_order(
        zo_f, num_directions=4, sigma=s, scheme=scheme, directions=directions, shaping=shaping,
        baseline=baseline), 0.1)}
  if shaping is None and baseline is None and (scheme == "plain" or directions == "gaussian"):
    kw.update(dtypes=BF16_F64,
              structures={"edge": (zo(zo_edge_f, scheme, directions, shaping, baseline), ZO_EDGE_PARAMS)})
  case(name, **kw)


# Directions and shaping are separate stages of one code path: every scheme x directions without shaping, and
# every shaping on Gaussian and sphere directions (the two kinds whose samples shaping sees differently
# normalised) with the two schemes that allow it.
for _scheme in ("plain", "forward", "antithetic"):
  for _dirs in ZO_DIRECTIONS:
    for _shaping in ZO_SHAPINGS:
      if _shaping is not None and (_scheme == "forward" or _dirs not in ("gaussian", "sphere")):
        continue
      zo_case(_scheme, _dirs, _shaping)

for _baseline in ("center", "mean", "leave_one_out", "optimal", "optimal_leave_one_out", 0.5):
  zo_case("plain", "gaussian", None, _baseline)

case("zeroth_order[f_takes_key,independent_noise]",
     estimator=pgjax.zeroth_order(lambda k, p: zo_f(p) + 0.1 * jax.random.normal(k), num_directions=4,
                                  sigma=0.1, f_takes_key=True, common_random_numbers=False),
     params=ZO_PARAMS)
_TABLE = pgjax.noise_table(jax.random.key(1), size=256)
case("zeroth_order[noise_table]",
     estimator=pgjax.zeroth_order(zo_f, num_directions=4, sigma=0.1, scheme="antithetic", noise=_TABLE),
     params=ZO_PARAMS,
     variants={"batch_size=1": pgjax.zeroth_order(zo_f, num_directions=4, sigma=0.1, scheme="antithetic",
                                                  noise=_TABLE, batch_size=1)})
case("zeroth_order[errors]",
     estimator=zo(zo_f, "plain", "gaussian", None), params=ZO_PARAMS,
     skip=("keys", "jit", "deterministic", "vmap_keys", "vmap_params", "grad"),
     bad_arguments=[
         (lambda: pgjax.zeroth_order(zo_f, num_directions=0, sigma=0.1), "num_directions"),
         (lambda: pgjax.zeroth_order(zo_f, num_directions=4, sigma=-1.0), "sigma"),
         (lambda: pgjax.zeroth_order(zo_f, num_directions=4, sigma={"w": 0.1})(jax.random.key(0), ZO_PARAMS),
          "sigma"),
         (lambda: pgjax.zeroth_order(zo_f, num_directions=4, sigma=0.1, scheme="bogus"), "scheme"),
         (lambda: pgjax.zeroth_order(zo_f, num_directions=4, sigma=0.1, directions="bogus"), "directions"),
         (lambda: pgjax.zeroth_order(zo_f, num_directions=4, sigma=0.1, shaping="bogus"), "shaping"),
         (lambda: pgjax.zeroth_order(zo_f, num_directions=3, sigma=0.1, scheme="antithetic"), "num_directions"),
         (lambda: pgjax.zeroth_order(zo_f, num_directions=4, sigma=0.1, batch_size=0), "batch_size"),
         (lambda: pgjax.zeroth_order(3.0, num_directions=4, sigma=0.1), "f"),
     ])


# Estimators for discrete variables and with control variates (each public factory, each option).
def new_case(name, factory, f, nan_f, dist_fn, params, *, full=False, bad_arguments=(), **options):
  kw = dict(estimator=factory(f, dist_fn, **options), params=params,
            nan_estimator=factory(nan_f, dist_fn, **options), nan_policy="propagate")
  if full:
    kw.update(dtypes=BF16_F64, bad_arguments=list(bad_arguments))
  case(name, **kw)


def bandit_nan_f(a):
  return jnp.where(a == 0, jnp.nan, BANDIT.f(a))


def bandit_dist(logits):
  return distrax.Categorical(logits=logits)


if hasattr(pgjax, "arm"):
  for _name in ("arm", "disarm"):
    _factory = getattr(pgjax, _name)
    new_case(_name, _factory, BERN.f, bern_nan_f, bern_dist, BERN.params, num_pairs=3, full=True,
             bad_arguments=[(lambda fa=_factory: fa(BERN.f, bern_dist, num_pairs=0), "num_pairs"),
                            (lambda fa=_factory: fa(BERN.f, GAUSS.dist_fn, num_pairs=2)(
                                jax.random.key(0), GAUSS_PARAMS), "dist_fn")])

if hasattr(pgjax, "measure_valued"):
  for _coupling in (True, False):
    new_case(f"measure_valued[gaussian,coupling={_coupling}]", pgjax.measure_valued, gauss_f, gauss_nan_f,
             GAUSS.dist_fn, GAUSS_PARAMS, num_samples=2, coupling=_coupling, full=_coupling,
             bad_arguments=[(lambda: pgjax.measure_valued(gauss_f, GAUSS.dist_fn, num_samples=0), "num_samples"),
                            (lambda: pgjax.measure_valued(gauss_f, GAUSS.dist_fn, num_samples=2,
                                                          coupling="yes"), "coupling")])
  new_case("measure_valued[bernoulli]", pgjax.measure_valued, BERN.f, bern_nan_f, bern_dist, BERN.params,
           num_samples=2)
  new_case("measure_valued[categorical]", pgjax.measure_valued, BANDIT.f, bandit_nan_f, bandit_dist,
           BANDIT.params, num_samples=2)

if hasattr(pgjax, "control_variate"):
  for _control, _coef in (("delta_method", "optimal"), ("delta_method", "leave_one_out"),
                          ("delta_method", 0.5), ("constant", "optimal")):
    new_case(f"control_variate[{_control},{_coef}]", pgjax.control_variate, gauss_f, gauss_nan_f,
             GAUSS.dist_fn, GAUSS_PARAMS, num_samples=4, control=_control, coefficient=_coef,
             full=_coef == "optimal" and _control == "delta_method",
             bad_arguments=[(lambda: pgjax.control_variate(gauss_f, GAUSS.dist_fn, num_samples=4,
                                                           control="bogus"), "control"),
                            (lambda: pgjax.control_variate(gauss_f, GAUSS.dist_fn, num_samples=4,
                                                           coefficient="bogus"), "coefficient"),
                            (lambda: pgjax.control_variate(gauss_f, GAUSS.dist_fn, num_samples=1), "num_samples")])
  CASES["control_variate[delta_method,0.5]"]["hyperparameters"] = {
      "coefficient": (lambda c: pgjax.control_variate(gauss_f, GAUSS.dist_fn, num_samples=4,
                                                      control="delta_method", coefficient=c), 0.5)}
  new_case("control_variate[callable,leave_one_out]", pgjax.control_variate, gauss_f, gauss_nan_f,
           GAUSS.dist_fn, GAUSS_PARAMS, num_samples=4, control=lambda x: jnp.sum(x),
           expectation=lambda p: jnp.sum(p["mean"]), coefficient="leave_one_out")


def bern_relaxed_f(x):  # differentiable on [0, 1]^3, as the relaxations need
  return jnp.sum((x - 0.45) ** 2)


def bern_relaxed_nan_f(x):
  return jnp.where(x[0] > 0.5, jnp.nan, bern_relaxed_f(x))


if hasattr(pgjax, "gumbel_softmax"):
  for _st in (False, True):
    _gs = functools.partial(pgjax.gumbel_softmax, straight_through=_st)
    new_case(f"gumbel_softmax[straight_through={_st}]", _gs, bern_relaxed_f, bern_relaxed_nan_f, bern_dist,
             BERN.params, num_samples=3, full=not _st,
             bad_arguments=[(lambda: pgjax.gumbel_softmax(bern_relaxed_f, bern_dist, num_samples=2,
                                                          temperature=-1.0), "temperature"),
                            (lambda: pgjax.gumbel_softmax(bern_relaxed_f, bern_dist, num_samples=0),
                             "num_samples")])
    CASES[f"gumbel_softmax[straight_through={_st}]"]["hyperparameters"] = {
        "temperature": (lambda t, st=_st: pgjax.gumbel_softmax(bern_relaxed_f, bern_dist, num_samples=3,
                                                               temperature=t, straight_through=st), 0.5)}
  new_case("rebar", pgjax.rebar, bern_relaxed_f, bern_relaxed_nan_f, bern_dist, BERN.params, num_samples=3,
           full=True, bad_arguments=[(lambda: pgjax.rebar(bern_relaxed_f, bern_dist, num_samples=0), "num_samples")])
  CASES["rebar"]["hyperparameters"] = {
      "temperature": (lambda t: pgjax.rebar(bern_relaxed_f, bern_dist, num_samples=3, temperature=t), 0.5),
      "eta": (lambda e: pgjax.rebar(bern_relaxed_f, bern_dist, num_samples=3, eta=e), 0.7)}

  def relax_control(phi, z):
    return phi["scale"] * bern_relaxed_f(jax.nn.sigmoid(z)) + jnp.sum(phi["w"] * z)

  _PHI = {"scale": jnp.asarray(0.8, jnp.float32), "w": jnp.full((3,), 0.1, jnp.float32)}
  new_case("relax", functools.partial(pgjax.relax, control_variate=relax_control, control_params=_PHI),
           BERN.f, bern_nan_f, bern_dist, BERN.params, num_samples=3, full=True,
           bad_arguments=[(lambda: pgjax.relax(BERN.f, bern_dist, control_variate=3.0, control_params=_PHI),
                           "control_variate")])
  CASES["relax"]["hyperparameters"] = {
      "control_params.scale": (lambda c: pgjax.relax(BERN.f, bern_dist, control_variate=relax_control,
                                                     control_params={"scale": c, "w": _PHI["w"]},
                                                     num_samples=3), 0.8)}


if hasattr(pgjax, "unordered_set"):
  for _with_baseline in (True, False):
    new_case(f"unordered_set[baseline={_with_baseline}]", pgjax.unordered_set, BANDIT.f, bandit_nan_f,
             bandit_dist, BANDIT.params, num_samples=2, baseline=_with_baseline, full=_with_baseline,
             bad_arguments=[(lambda: pgjax.unordered_set(BANDIT.f, bandit_dist, num_samples=0), "num_samples")])


# --- the tests ---------------------------------------------------------------------------------------------

def _group(property_name: str) -> str:
  return property_name.split("[")[0]


def _groups(kw: dict) -> list[str]:
  groups = ["structure", "aux", "finite", "keys", "jit", "deterministic", "vmap_keys", "vmap_params", "grad"]
  groups = [g for g in groups if g not in kw.get("skip", ())]
  if kw.get("dtypes"):
    groups.append("dtype")
  if kw.get("structures"):
    groups.append("tree")
  if kw.get("variants"):
    groups.append("variant")
  if kw.get("hyperparameters"):
    groups.append("hyperparameter")
  if kw.get("nan_policy"):
    groups.append("nan_policy")
  if kw.get("bad_keys", True):
    groups.append("bad_key")
  if kw.get("bad_params", True):
    groups.append("bad_params")
  if kw.get("bad_arguments"):
    groups.append("bad_argument")
  return groups


def _family(name: str) -> str:
  """Cases compiled together (up to about 6 estimators per program: few programs, each test under 15 s)."""
  if name.startswith("zeroth_order["):
    fields = name[len("zeroth_order["):].rstrip("]").split(",")
    if fields[0] in ("plain", "antithetic"):
      return "zeroth_order:" + ",".join(fields[:2]) + (":baselines" if len(fields) == 4 else "")
    return "zeroth_order:" + ("forward" if fields[0] == "forward" else "other")
  if name.startswith("score_function["):
    if "optimal" in name:
      return "score_function:optimal"
    return "score_function:" + ("a" if name.split("[")[1].split("]")[0] in ("none", "constant", "number", "mean")
                                else "b")
  return {"disarm": "arm", "exact_gradient": "pathwise", "rebar": "relaxations", "relax": "relaxations",
          "gumbel_softmax": "relaxations"}.get(name.split("[")[0], name.split("[")[0])


@functools.lru_cache(maxsize=None)
def _family_reports(family: str) -> dict:
  cases = {n: kw for n, kw in CASES.items() if _family(n) == family}
  return check_estimators(cases, compiler_options=FAST_COMPILE, raise_on_failure=False)


def report(name: str) -> pgjax.testing.ConformanceReport:
  return _family_reports(_family(name))[name]


def _params():
  out = []
  for name, kw in CASES.items():
    for group in _groups(kw):
      out.append(pytest.param(name, group, id=f"{name}-{group}"))
  return out


@pytest.mark.parametrize("name,group", _params())
def test_conformance(name, group):
  results = [r for r in report(name).results if _group(r.name) == group]
  assert results, f"{name}: no property of group {group!r} ran"
  failed = [r for r in results if r.status == "failed"]
  assert not failed, f"{name}:\n" + "\n".join(f"  {r.name}: {r.message}" for r in failed)


NOT_ESTIMATOR_FACTORIES = {"noise_table", "rollout", "score_function_surrogate"}


def test_every_public_estimator_has_a_case():
  """A new public estimator factory (any public function of ``pgjax`` but the listed others) needs a case."""
  covered = {name.split("[")[0] for name in CASES}
  public = {n for n in pgjax.__all__ if callable(getattr(pgjax, n)) and not inspect.ismodule(getattr(pgjax, n))}
  missing = public - covered - NOT_ESTIMATOR_FACTORIES
  assert not missing, f"no conformance case for {sorted(missing)}"


def test_every_score_function_baseline_has_a_case():
  covered = {_sf_name(b) for b in SF_BASELINES}
  names = pgjax.baselines.names
  assert set(names()) <= covered, f"no conformance case for baselines {sorted(set(names()) - covered)}"
