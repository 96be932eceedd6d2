r"""Seeds per second of ``pgjax.sweep.gradient_stats`` against the obvious alternatives.

Every strategy computes the same thing: the per-coordinate mean and variance of ``S`` independent calls of
one estimator (seed ``i`` uses ``fold_in(key, i)``):

* ``gradient_stats``: ``pgjax.sweep.gradient_stats`` with its automatic chunk size (printed);
* ``python_loop``: a Python loop calling the jitted single-seed estimator, moments on the host
  (measured on fewer seeds: it is slow);
* ``vmap``: one ``jit(vmap(estimator))`` over all seeds, then mean and variance;
* ``lax_map_C``: ``jax.lax.map(estimator, seeds, batch_size=C)`` for several chunk sizes ``C``.

Two per-seed problems: *small* (score-function estimator with a leave-one-out baseline, N = 4 samples of a
3-d Gaussian with a quadratic cost) and *large* (N = 256 samples of a 256-d Gaussian, the variance-optimal
baseline, which needs per-sample score norms). All strategies are compiled first, then timed interleaved
(every repeat runs every strategy once) and the median is reported; the machine is shared, so only the
ratios measured side by side mean anything (the order rotates between repeats).

Target (issue 2): ``gradient_stats`` within 10% of the best strategy.

Run: ``python experiments/benchmarks/sweep_strategies.py [--quick] [--out results]`` (writes
``<out>/benchmarks/sweep_strategies.json``).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import pgjax  # noqa: E402
from pgjax._src import sweep as sweep_impl  # noqa: E402
from _common import Claim, parse_args, save_results  # noqa: E402


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
  for fn, _ in strats.values():  # compile + warm up
    jax.block_until_ready(fn())
  times = {name: [] for name in strats}
  names = list(strats)
  for r in range(repeats):
    for name in names[r % len(names):] + names[:r % len(names)]:  # rotate: no strategy always goes first
      fn = strats[name][0]
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - t0)
  return {name: strats[name][1] / float(np.median(ts)) for name, ts in times.items()}


def main(argv=None):
  args = parse_args(__doc__.splitlines()[0], argv)
  started = time.time()
  key = jax.random.key(args.seed)
  repeats = 5 if args.quick else 11
  data, claims = {}, []
  for name, spec in problems(args.quick).items():
    problem, est, num_seeds = spec["problem"], spec["estimator"], spec["num_seeds"]
    chosen = sweep_impl.choose_chunk_size(est, problem.params, key, num_seeds)
    layout = sweep_impl.seed_layout(num_seeds, chosen, 32, jax.device_count())
    strats = strategies(est, problem.params, key, num_seeds, spec["loop_seeds"],
                        map_chunks=(8, 64, 256, 1024, 4096))
    rates = measure(strats, repeats)
    best_name = max(rates, key=rates.get)
    ratio = rates["gradient_stats"] / rates[best_name]
    print(f"\n[{name}] S={num_seeds}, params={problem.params['mean'].size * 2}, "
          f"gradient_stats chose chunk_size={chosen} (layout: {layout.num_groups} groups x "
          f"{layout.chunks_per_group} chunks x {layout.chunk_size} seeds)")
    for s, r in sorted(rates.items(), key=lambda kv: -kv[1]):
      print(f"  {s:>16s}: {r:12.0f} seeds/s   ({r / rates[best_name]:.2f} x best)")
    data[name] = dict(num_seeds=num_seeds, chosen_chunk_size=chosen, layout=layout._asdict(),
                      seeds_per_second=rates, best=best_name, ratio_to_best=ratio)
    claims.append(Claim(f"{name}: gradient_stats seeds/s relative to the best strategy ({best_name})",
                        round(ratio, 3), ">= 0.90", bool(ratio >= 0.90)))
  args.out = os.path.join(args.out, "benchmarks")
  save_results("sweep_strategies", args, claims=claims, data=data, started=started)


if __name__ == "__main__":
  main()
