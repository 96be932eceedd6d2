"""pgjax.nes.snes against evosax's SNES, side by side in one run.

Same start (mean 3 * ones(d), sigma 1), same population (4 + floor(3 ln d)), same problem, 32 seeds each (one
``jit(vmap)`` per implementation; the seeds differ between the two libraries since their random streams
do). Reports, per problem: the median number of generations to reach a loss <= 1e-6 (sphere), the median best
loss after a fixed number of generations (Rosenbrock), and the wall time per generation (median of
interleaved repeats, compiled once).

    python -m experiments.benchmarks.nes_vs_evosax [--quick] [--out results]   # writes results/benchmarks/
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import pgjax
from experiments._common import Claim, Measurement, le, parse_args, save_results

SEEDS = 32


def sphere(x):
  return jnp.sum(x ** 2)


def rosenbrock(x):
  return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def pgjax_runner(loss, dim, generations):
  es = pgjax.nes.snes()
  state = es.init(jnp.full((dim,), 3.0), init_sigma=1.0)

  def one(key):
    _, infos = pgjax.nes.run(es, key, state, lambda x: -loss(x), num_steps=generations)
    return -infos.best_fitness                                   # best-so-far loss per generation

  return jax.jit(jax.vmap(one)), es.population_size(state.mean)


def evosax_runner(loss, dim, generations):
  from evosax.algorithms import SNES  # benchmarks extra only

  pop = pgjax.nes.default_population_size(dim)
  es = SNES(population_size=pop, solution=jnp.zeros(dim))
  params = es.default_params.replace(std_init=jnp.asarray(1.0))

  def one(key):
    k_init, k_run = jax.random.split(key)
    state = es.init(k_init, jnp.full((dim,), 3.0), params)

    def body(state, k):
      k_ask, k_tell = jax.random.split(k)
      population, state = es.ask(k_ask, state, params)
      fitness = jax.vmap(loss)(population)
      state, _ = es.tell(k_tell, population, fitness, state, params)
      return state, state.best_fitness

    _, best = jax.lax.scan(body, state, jax.random.split(k_run, generations))
    return best

  return jax.jit(jax.vmap(one)), pop


def generations_to(curves, target):
  hit = curves <= target
  first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, np.inf)
  return first


def timed(fn, keys, repeats):
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(keys))
    times.append(time.perf_counter() - t)
  return times


def _bootstrap_ratio_ci(a, b, key=0, reps=2000):
  """95% bootstrap interval of median(a) / median(b) (seeds resampled independently in each library)."""
  rng = np.random.default_rng(key)
  a, b = np.asarray(a, float), np.asarray(b, float)
  ra = np.median(rng.choice(a, (reps, a.size)), axis=1)
  rb = np.median(rng.choice(b, (reps, b.size)), axis=1)
  return [float(x) for x in np.percentile(ra / rb, [2.5, 97.5])]


def main(argv=None):
  started = time.time()
  args = parse_args(__doc__.splitlines()[0], argv)
  args.out = os.path.join(args.out, "benchmarks")
  cases = [("sphere", sphere, 10, 400), ("sphere", sphere, 100, 1500), ("rosenbrock", rosenbrock, 10, 3000)]
  if args.quick:
    cases = [("sphere", sphere, 10, 300), ("rosenbrock", rosenbrock, 10, 500)]
  repeats = 3 if args.quick else 7
  rows, claims, measurements = [], [], []
  for name, loss, dim, gens in cases:
    ours, pop = pgjax_runner(loss, dim, gens)
    theirs, pop2 = evosax_runner(loss, dim, gens)
    assert pop == pop2
    k_ours, k_theirs = jax.random.split(jax.random.key(dim))
    keys_ours, keys_theirs = jax.random.split(k_ours, SEEDS), jax.random.split(k_theirs, SEEDS)
    c_ours, c_theirs = np.asarray(ours(keys_ours)), np.asarray(theirs(keys_theirs))   # compile + results
    t_ours, t_theirs = [], []
    for _ in range(repeats):                                      # interleaved
      t_ours += timed(ours, keys_ours, 1)
      t_theirs += timed(theirs, keys_theirs, 1)
    ratio = float(np.median(t_ours) / np.median(t_theirs))
    row = {"problem": name, "dim": dim, "population": pop, "generations": gens, "seeds": SEEDS,
           "time_per_generation_ratio": ratio,
           "ms_per_generation_pgjax": 1e3 * float(np.median(t_ours)) / gens,
           "ms_per_generation_evosax": 1e3 * float(np.median(t_theirs)) / gens}
    tag = f"{name} d={dim}, population {pop}, {SEEDS} seeds"
    claims.append(Claim(f"{tag}: time per generation, pgjax SNES / evosax SNES", round(ratio, 3), le(1.0)))
    if name == "sphere":
      g_ours, g_theirs = generations_to(c_ours, 1e-6), generations_to(c_theirs, 1e-6)
      row.update(median_generations_pgjax=float(np.median(g_ours)), median_generations_evosax=float(np.median(g_theirs)))
      claims.append(Claim(f"{tag}: median generations to reach 1e-6, pgjax / evosax",
                          round(float(np.median(g_ours) / np.median(g_theirs)), 3), le(1.0)))
      measurements.append(Measurement(f"{tag}: median generations to 1e-6 (pgjax, evosax)",
                                      [float(np.median(g_ours)), float(np.median(g_theirs))],
                                      f"95% bootstrap CI of the ratio {_bootstrap_ratio_ci(g_ours, g_theirs)}"))
    else:
      b_ours, b_theirs = c_ours[:, -1], c_theirs[:, -1]
      row.update(median_best_pgjax=float(np.median(b_ours)), median_best_evosax=float(np.median(b_theirs)))
      claims.append(Claim(f"{tag}: median best loss after {gens} generations, pgjax / evosax",
                          round(float(np.median(b_ours) / np.median(b_theirs)), 3), le(1.0)))
      measurements.append(Measurement(f"{tag}: median best loss after {gens} generations (pgjax, evosax)",
                                      [float(np.median(b_ours)), float(np.median(b_theirs))],
                                      f"95% bootstrap CI of the ratio {_bootstrap_ratio_ci(b_ours, b_theirs)}"))
    rows.append(row)
    print(row, flush=True)
  save_results("nes_vs_evosax", args, claims=claims, measurements=measurements,
               data={"rows": rows, "repeats": repeats}, started=started)


if __name__ == "__main__":
  main()
