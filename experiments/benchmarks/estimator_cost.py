r"""Time per estimate of each gradient estimator relative to the score-function one at equal f-evaluations.

For each problem, every estimator that applies is configured to spend the same number of evaluations
of ``f`` per estimate (``aux.num_evaluations``, checked) as the reference, ``pgjax.score_function``
with the leave-one-out baseline, and each is timed as ``jax.jit(jax.vmap(estimator))`` over a batch of
256 keys (32 with ``--quick``; a batch of independent estimates, the way gradient_stats and vmapped
training use them), compiled once. The variants run interleaved within each repeat; the ratio
time(estimator) / time(score_function at the same number of evaluations) is reported as the ratio of
medians over repeats (and of minima).

Problems and evaluation budgets ``E`` (evaluations of ``f`` per estimate):

* ``bernoulli``: ``bernoulli_quadratic(4)``, ``E = 24``: ARM / DisARM with 12 pairs, Gumbel-softmax and
  straight-through with 24 samples, REBAR with 8, RELAX with a 16-unit MLP control variate (24 samples,
  ``control_evaluations=0``) and with ``f(sigma(z)) + MLP`` (8 samples, ``control_evaluations=1``),
  measure-valued with 3 samples (2 * 3 * 4 = 24).
* ``categorical``: one one-hot categorical variable with K = 8 (``categorical_quadratic(1, 8)``), ``E = 6``:
  Gumbel-softmax / straight-through 6, REBAR 2, RELAX 6 (MLP) and 2 (f + MLP), unordered set with k = 6;
  ``E = 3``: unordered set with k = 3 (its cost grows like k!); and ``E = 8``: measure-valued with 1
  sample (K = 8 evaluations; it needs a ``distrax.Categorical``, so the same problem is written on
  indices).
* ``binary_vae``: the encoder problem of ``binary_vae(num_latents=8)`` (16 examples x 8 latents), ``E = 12``
  for the discrete estimators as above; and ``E = 256``: measure-valued with 1 sample (2 * 128 logits).
* ``gaussian``: ``gaussian_quadratic(3)``, ``E = 12``: measure-valued with 1 sample (4 * 3 = 12), control
  variates (delta method with 11 samples + 1 evaluation at the mean; constant control with 12), pathwise
  with 12 (which also differentiates ``f``), and antithetic zeroth-order with 12 directions on the mean at
  sigma = 1 (it estimates the gradient of the smoothed ``f`` with respect to the mean only).

``--quick`` times each problem's first budget only (the extra unordered-set and measure-valued budgets
need their own compilations), with 32 keys and 7 repeats; the full run uses 256 keys and 15 repeats.

The machine's load average is recorded at the start and the end: on a shared machine the ratios are noisy.

Run: ``python -m experiments.benchmarks.estimator_cost [--quick] [--out DIR]``; writes
``DIR/benchmarks/estimator_cost.json``.
"""

from __future__ import annotations

import math
import os
import time

import distrax
import jax
import jax.numpy as jnp
import numpy as np

import pgjax
from experiments._common import Measurement, parse_args, save_results

NUM_KEYS = 256          # estimates per timed call (--quick: 32)
HIDDEN = 16


# ------------------------------------------------------------------------------------------ control nets

def mlp_init(key, size):
  """Parameters of a 1-hidden-layer tanh MLP ``R^size -> R`` (the RELAX control-variate net)."""
  k1, k2 = jax.random.split(key)
  return {"w1": 0.1 * jax.random.normal(k1, (size, HIDDEN)), "b1": jnp.zeros(HIDDEN),
          "w2": 0.1 * jax.random.normal(k2, (HIDDEN,)), "b2": jnp.zeros(())}


def mlp(phi, z):
  h = jnp.tanh(jnp.ravel(z) @ phi["w1"] + phi["b1"])
  return h @ phi["w2"] + phi["b2"]


def relaxed(kind, z, temperature=0.5):
  """The Concrete relaxation of the continuous variable ``z`` (logistic for Bernoulli, Gumbel for one-hot)."""
  if kind == "bernoulli":
    return jax.nn.sigmoid(z / temperature)
  return jax.nn.softmax(z / temperature, axis=-1)


def discrete_estimators(prob, kind, budget):
  """{name: estimator} for the Bernoulli / one-hot problem ``prob``, each at ``budget`` evaluations of f."""
  f, dist_fn = prob.f, prob.dist_fn
  dist = dist_fn(prob.params)
  size = int(np.prod(tuple(dist.batch_shape) + tuple(dist.event_shape)))   # the sample's size
  phi = mlp_init(jax.random.key(1), size)

  def cv_f_plus_net(phi_, z):
    return f(relaxed(kind, z)) + mlp(phi_, z)

  ests = {
      "score_function": pgjax.score_function(f, dist_fn, num_samples=budget, baseline="leave_one_out"),
      "gumbel_softmax": pgjax.gumbel_softmax(f, dist_fn, num_samples=budget, temperature=0.5),
      "gumbel_straight_through": pgjax.gumbel_softmax(f, dist_fn, num_samples=budget, temperature=0.5,
                                                      straight_through=True),
      "rebar": pgjax.rebar(f, dist_fn, num_samples=budget // 3),
      "relax_mlp": pgjax.relax(f, dist_fn, control_variate=mlp, control_params=phi, num_samples=budget),
      "relax_f_plus_mlp": pgjax.relax(f, dist_fn, control_variate=cv_f_plus_net, control_params=phi,
                                      num_samples=budget // 3, control_evaluations=1),
  }
  if kind == "bernoulli":
    ests["arm"] = pgjax.arm(f, dist_fn, num_pairs=budget // 2)
    ests["disarm"] = pgjax.disarm(f, dist_fn, num_pairs=budget // 2)
  return ests


# ------------------------------------------------------------------------------------------ problems

def build_problems():
  """[(problem name, params, {budget: {estimator name: estimator}})]; every budget has its score_function."""
  out = []

  bern = pgjax.problems.bernoulli_quadratic(4, logits=jnp.array([-1.0, 0.0, 0.5, 1.5]),
                                            target=jnp.array([0.1, 0.3, 0.6, 0.9]))
  groups = {24: discrete_estimators(bern, "bernoulli", 24)}
  groups[24]["measure_valued"] = pgjax.measure_valued(bern.f, bern.dist_fn, num_samples=3)
  out.append(("bernoulli (d=4)", bern.params, groups))

  k = 8
  cat = pgjax.problems.categorical_quadratic(1, k, target=jnp.linspace(0.0, 1.0, k))
  groups = {6: discrete_estimators(cat, "categorical", 6)}
  groups[6]["unordered_set"] = pgjax.unordered_set(cat.f, cat.dist_fn, num_samples=6)
  groups[3] = {   # the unordered set estimator's cost grows with k! (set probabilities sum over orderings)
      "score_function": pgjax.score_function(cat.f, cat.dist_fn, num_samples=3, baseline="leave_one_out"),
      "unordered_set": pgjax.unordered_set(cat.f, cat.dist_fn, num_samples=3),
  }

  def cat_index_dist(logits):
    return distrax.Independent(distrax.Categorical(logits=logits), 1)

  def cat_index_f(i):
    return cat.f(jax.nn.one_hot(i, k, dtype=jnp.float32))

  groups[k] = {
      "score_function": pgjax.score_function(cat.f, cat.dist_fn, num_samples=k, baseline="leave_one_out"),
      "measure_valued": pgjax.measure_valued(cat_index_f, cat_index_dist, num_samples=1),
  }
  out.append((f"categorical (1 x K={k})", cat.params, groups))

  vae = pgjax.problems.binary_vae(num_latents=8).problem
  groups = {12: discrete_estimators(vae, "bernoulli", 12)}
  num_logits = int(np.prod(vae.dist_fn(vae.params).batch_shape + vae.dist_fn(vae.params).event_shape))
  groups[2 * num_logits] = {
      "score_function": pgjax.score_function(vae.f, vae.dist_fn, num_samples=2 * num_logits,
                                             baseline="leave_one_out"),
      "measure_valued": pgjax.measure_valued(vae.f, vae.dist_fn, num_samples=1),
  }
  out.append(("binary_vae encoder (16 x 8 latents)", vae.params, groups))

  d = 3
  gauss = pgjax.problems.gaussian_quadratic(d)
  budget = 4 * d
  zo = pgjax.zeroth_order(gauss.f, num_directions=budget, sigma=1.0, scheme="antithetic")

  def zeroth_order_on_mean(key, params):
    g, aux = zo(key, params["mean"])
    return {"mean": g, "log_std": jnp.zeros_like(params["log_std"])}, aux

  groups = {budget: {
      "score_function": pgjax.score_function(gauss.f, gauss.dist_fn, num_samples=budget,
                                             baseline="leave_one_out"),
      "measure_valued": pgjax.measure_valued(gauss.f, gauss.dist_fn, num_samples=1),
      "control_variate_delta": pgjax.control_variate(gauss.f, gauss.dist_fn, num_samples=budget - 1,
                                                     control="delta_method", coefficient="leave_one_out"),
      "control_variate_constant": pgjax.control_variate(gauss.f, gauss.dist_fn, num_samples=budget,
                                                        control="constant", coefficient="leave_one_out"),
      "pathwise": pgjax.pathwise(gauss.f, gauss.dist_fn, num_samples=budget),
      "zeroth_order_mean": zeroth_order_on_mean,
  }}
  out.append((f"gaussian (d={d})", gauss.params, groups))
  return out


# ------------------------------------------------------------------------------------------ timing

def batched(estimator, evaluations):
  """``jit(vmap(estimator))`` over keys returning the gradients only; records ``aux.num_evaluations``."""

  def one(key, params):
    grads, aux = estimator(key, params)
    try:
      evaluations.append(int(aux.num_evaluations))
    except (TypeError, jax.errors.ConcretizationTypeError):
      evaluations.append(None)
    return grads

  return jax.jit(jax.vmap(one, in_axes=(0, None)))


def time_group(fns, params, *, repeats, key, num_keys):
  """Seconds per batched call of each function, interleaved within every repeat; per-function inner loops."""
  keys = jax.random.split(key, num_keys)
  inner, compile_s = {}, {}
  for name, fn in fns.items():
    t0 = time.perf_counter()
    jax.block_until_ready(fn(keys, params))
    compile_s[name] = time.perf_counter() - t0
    one = []
    for _ in range(3):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(keys, params))
      one.append(time.perf_counter() - t0)
    one = max(min(one), 1e-6)
    inner[name] = max(1, min(50, math.ceil(0.02 / one)))   # about 20 ms of work per timed block
  times = {name: [] for name in fns}
  for r in range(repeats):
    keys = jax.block_until_ready(jax.random.split(jax.random.fold_in(key, r + 1), num_keys))
    for name, fn in fns.items():
      t0 = time.perf_counter()
      for _ in range(inner[name]):
        out = fn(keys, params)
      jax.block_until_ready(out)
      times[name].append((time.perf_counter() - t0) / inner[name])
  return times, inner, compile_s


def main(argv=None):
  started = time.time()
  args = parse_args(__doc__.splitlines()[0], argv)
  args.out = os.path.join(args.out, "benchmarks")
  repeats = 7 if args.quick else 15
  num_keys = 32 if args.quick else NUM_KEYS
  load_start = os.getloadavg()
  rows = []
  key = jax.random.key(args.seed)
  for p_idx, (pname, params, groups) in enumerate(build_problems()):
    for g_idx, (budget, ests) in enumerate(groups.items()):
      if args.quick and g_idx > 0:   # --quick: only each problem's main budget (fewer compilations)
        continue
      evaluations = {name: [] for name in ests}
      fns = {name: batched(est, evaluations[name]) for name, est in ests.items()}
      times, inner, compile_s = time_group(fns, params, repeats=repeats, key=jax.random.fold_in(key, p_idx),
                                             num_keys=num_keys)
      for name, counted in evaluations.items():
        if counted and counted[0] is None:   # a traced count (zeroth_order): read it from one run
          count_fn = jax.jit(lambda k, p, est=ests[name]: est(k, p)[1].num_evaluations)
          counted = [int(count_fn(jax.random.key(0), params))]
        assert counted and counted[0] == budget, (pname, name, counted, budget)
      ref_med, ref_min = float(np.median(times["score_function"])), float(np.min(times["score_function"]))
      for name, t in times.items():
        med, mn = float(np.median(t)), float(np.min(t))
        rows.append({"problem": pname, "evaluations": budget, "estimator": name,
                     "median_ms": 1e3 * med, "min_ms": 1e3 * mn,
                     "ratio_median": med / ref_med, "ratio_min": mn / ref_min,
                     "inner_calls": inner[name], "compile_s": compile_s[name],
                     "raw_ms": [1e3 * x for x in t]})
        print(f"{pname:<36} E={budget:<4} {name:<26} {1e3 * med:9.3f} ms (min {1e3 * mn:8.3f})"
              f"  x{med / ref_med:6.2f} (min-ratio x{mn / ref_min:6.2f})", flush=True)
  load_end = os.getloadavg()
  print(f"load average (1, 5, 15 min): start {load_start}, end {load_end}")
  measurements = [
      Measurement(f"time / score_function(LOO) at {r['evaluations']} evaluations: {r['estimator']}, "
                  f"{r['problem']}",
                  round(r["ratio_median"], 3), f"ratio of medians over {repeats} interleaved repeats")
      for r in rows if r["estimator"] != "score_function"]
  save_results("estimator_cost", args, claims=[], measurements=measurements,
               data={"num_keys": num_keys, "repeats": repeats, "load_start": list(load_start),
                     "load_end": list(load_end), "cpu_count": os.cpu_count(), "rows": rows},
               started=started)


if __name__ == "__main__":
  main()
