r"""Seeds per second of ``pgjax.sweep.gradient_stats`` against the obvious alternatives.

Every strategy computes the same thing: the per-coordinate mean and variance of ``S`` independent calls of
one estimator (seed ``i`` uses ``fold_in(key, i)``):

* ``gradient_stats``: ``pgjax.sweep.gradient_stats`` with its automatic chunk size (printed);
* ``python_loop``: a Python loop calling the jitted single-seed estimator, moments on the host
  (measured on fewer seeds: it is slow);
* ``vmap``: one ``jit(vmap(estimator))`` over all seeds, then mean and variance;
* ``lax_map_C``: ``jax.lax.map(estimator, seeds, batch_size=C)`` for several chunk sizes ``C``.

``gradient_stats`` computes more than the others (per-group moments for its jackknife standard errors), so
it is slower than the best hand-tuned strategy by that much at least. ``lax.map`` with ``gradient_stats``'s
own vectorised step (printed; always among the strategies) isolates that price from the choice of chunk.

Two per-seed problems: *small* (score-function estimator with a leave-one-out baseline, N = 4 samples of a
3-d Gaussian with a quadratic cost) and *large* (N = 256 samples of a 256-d Gaussian, the variance-optimal
baseline, which needs per-sample score norms). All strategies are compiled first, then timed interleaved
(every repeat runs every strategy once; the order rotates between repeats). Three rates are reported per
strategy: seeds per wall-clock second (median and best repeat) and seeds per CPU second of the process
(median; all threads).

**Metric.** What a sweep costs a researcher is the time they wait for it on their machine: wall-clock time,
all cores included. The claims therefore compare wall-clock rates, from each strategy's *best* repeat:
other processes on a shared machine only ever add time, so the fastest repeat is the least disturbed
estimate of the time on an idle machine (the convention of Python's ``timeit``), while medians move with
the load. CPU time is reported but is not the claim: it counts the work of every thread, so it penalises
a strategy that spreads one step over both cores (``vmap`` and ``gradient_stats`` on large chunks) against
one that runs single-threaded (``lax.map`` with small chunks) for the same wall-clock time, and it ignores
a single-threaded strategy's waiting. The Python loop is reported apart (it is never competitive).

Claims: ``gradient_stats`` at >= 0.95 of the best compiled strategy's wall-clock rate (best repeat), on
both problems.

Run: ``python -m experiments.benchmarks.sweep_strategies [--quick] [--out results]`` (writes
``<out>/benchmarks/sweep_strategies.json``).
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import pgjax
from pgjax._src import sweep as sweep_impl
from experiments._common import Claim, Measurement, parse_args, save_results


def problems(quick: bool):
  small = pgjax.problems.gaussian_quadratic(dim=3)
  large = pgjax.problems.gaussian_quadratic(dim=256)
  return {
      "small": dict(problem=small, estimator=pgjax.score_function(
          small.f, small.dist_fn, num_samples=4, baseline="leave_one_out"),
                    num_seeds=131072, loop_seeds=256 if quick else 1024),
      "large": dict(problem=large, estimator=pgjax.score_function(
          large.f, large.dist_fn, num_samples=256, baseline="optimal"),
                    num_seeds=512 if quick else 2048, loop_seeds=64 if quick else 256),
  }


def strategies(estimator, params, key, num_seeds, loop_seeds, map_chunks):
  """name -> (callable returning (mean, var) as device arrays, seeds it covers)."""

  def flat_grad(i):
    return ravel_pytree(estimator(jax.random.fold_in(key, i), params)[0])[0]

  def moments(g):
    return jnp.mean(g, axis=0), jnp.var(g, axis=0, ddof=1)

  out = {}
  gs = jax.jit(lambda k: pgjax.sweep.gradient_stats(estimator, params, k, num_seeds=num_seeds))
  out["gradient_stats"] = (lambda: gs(key), num_seeds)

  single = jax.jit(lambda i: flat_grad(i))

  def python_loop():
    g = np.stack([np.asarray(single(i)) for i in range(loop_seeds)])
    return g.mean(0), g.var(0, ddof=1)
  out["python_loop"] = (python_loop, loop_seeds)

  full = jax.jit(lambda: moments(jax.vmap(flat_grad)(jnp.arange(num_seeds))))
  out["vmap"] = (full, num_seeds)
  for c in map_chunks:
    if c >= num_seeds:
      continue
    fn = jax.jit(lambda c=c: moments(jax.lax.map(flat_grad, jnp.arange(num_seeds), batch_size=c)))
    out[f"lax_map_{c}"] = (fn, num_seeds)
  return out


def measure(strats, repeats):
  """name -> {"wall_median", "wall_best", "cpu_median"}: seeds per second of each kind."""
  for fn, _ in strats.values():  # compile + warm up
    jax.block_until_ready(fn())
  wall = {name: [] for name in strats}
  cpu = {name: [] for name in strats}
  names = list(strats)
  for r in range(repeats):
    for name in names[r % len(names):] + names[:r % len(names)]:  # rotate: no strategy always goes first
      fn = strats[name][0]
      c0, t0 = time.process_time(), time.perf_counter()
      jax.block_until_ready(fn())
      wall[name].append(time.perf_counter() - t0)
      cpu[name].append(time.process_time() - c0)
  return {name: {"wall_median": strats[name][1] / float(np.median(wall[name])),
                 "wall_best": strats[name][1] / float(np.min(wall[name])),
                 "cpu_median": strats[name][1] / float(np.median(cpu[name]))} for name in strats}


def main(argv=None):
  args = parse_args(__doc__.splitlines()[0], argv)
  started = time.time()
  key = jax.random.key(args.seed)
  repeats = 7 if args.quick else 15
  data, claims, measurements = {}, [], []
  load_before = os.getloadavg()
  for name, spec in problems(args.quick).items():
    problem, est, num_seeds = spec["problem"], spec["estimator"], spec["num_seeds"]
    chosen = sweep_impl.choose_chunk_size(est, problem.params, key, num_seeds)
    layout = sweep_impl.seed_layout(num_seeds, chosen, 32, jax.device_count())
    step = layout.chunk_size * layout.groups_per_step  # seeds per vectorised step of gradient_stats
    strats = strategies(est, problem.params, key, num_seeds, spec["loop_seeds"],
                        map_chunks=sorted({8, 64, 256, 1024, 4096, 8192, 16384, step}))
    rates = measure(strats, repeats)
    print(f"\n[{name}] S={num_seeds}, params={problem.params['mean'].size * 2}, "
          f"gradient_stats chose chunk_size={chosen} (layout: {layout.num_groups} groups x "
          f"{layout.chunks_per_group} chunks x {layout.chunk_size} seeds, {layout.groups_per_step} "
          f"groups per vectorised step); load average {os.getloadavg()[0]:.1f}")
    compiled = [s for s in rates if s not in ("gradient_stats", "python_loop")]
    best_name = max(compiled, key=lambda s: rates[s]["wall_best"])
    ratios = {kind: rates["gradient_stats"][kind] / max(rates[s][kind] for s in compiled)
              for kind in ("cpu_median", "wall_median", "wall_best")}
    ratios["cpu_median_vs_python_loop"] = (rates["gradient_stats"]["cpu_median"]
                                           / rates["python_loop"]["cpu_median"])
    same = f"lax_map_{step}"
    if same in rates:  # the same vectorised step without the per-group moments: their price alone
      ratios["wall_best_vs_same_chunk"] = rates["gradient_stats"]["wall_best"] / rates[same]["wall_best"]
    print(f"  seeds per second  {'wall (best repeat)':>22s} {'wall (median)':>22s} {'CPU (median)':>22s}")
    for s, r in sorted(rates.items(), key=lambda kv: -kv[1]["wall_best"]):
      print(f"  {s:>16s}: " + " ".join(
          f"{r[k]:12.0f} ({r[k] / max(x[k] for x in rates.values()):.2f}x)" for k in
          ("wall_best", "wall_median", "cpu_median")))
    data[name] = dict(num_seeds=num_seeds, chosen_chunk_size=chosen, layout=layout._asdict(),
                      seeds_per_second=rates, best=best_name, ratio_to_best=ratios)
    claims.append(Claim(f"{name}: gradient_stats seeds per wall-clock second (best repeat) relative to the "
                        f"best compiled strategy ({best_name})", round(ratios["wall_best"], 3), ">= 0.95"))
    for kind, what in (("wall_median", "seeds per wall-clock second (median)"),
                       ("cpu_median", "seeds per CPU second (median; counts both cores' work)")):
      best_kind = max(compiled, key=lambda s, kind=kind: rates[s][kind])
      measurements.append(Measurement(f"{name}: gradient_stats {what} relative to the best compiled "
                                      f"strategy by that measure ({best_kind})", round(ratios[kind], 3)))
    measurements.append(Measurement(f"{name}: gradient_stats seeds per CPU second relative to the Python "
                                    "loop", round(ratios["cpu_median_vs_python_loop"], 3)))
    if "wall_best_vs_same_chunk" in ratios:
      measurements.append(Measurement(
          f"{name}: gradient_stats wall-clock rate (best repeat) relative to lax.map with its own step of "
          f"{step} seeds", round(ratios["wall_best_vs_same_chunk"], 3),
          "the price of the per-group moments (jackknife) alone; the rest of a gap is the chunk size"))
  data["load_average"] = dict(before=load_before, after=os.getloadavg())
  print(f"load average (1, 5, 15 min): before {load_before}, after {os.getloadavg()}")
  args.out = os.path.join(args.out, "benchmarks")
  save_results("sweep_strategies", args, claims=claims, data=data, started=started,
               measurements=measurements)


if __name__ == "__main__":
  main()
