"""pgjax.nes.snes against evosax's SNES, side by side in one run.

Same start (mean 3 * ones(d), sigma 1), same population (4 + floor(3 ln d)), same problem, 32 seeds each (one
``jit(vmap)`` per implementation; the seeds differ between the two libraries since their random streams
do). Reports, per problem: the median number of generations to reach a loss <= 1e-6 (sphere), the median best
loss after a fixed number of generations (Rosenbrock), and the wall time per generation (median of
interleaved repeats, compiled once).

    python -m experiments.benchmarks.nes_vs_evosax [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import pgjax

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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--out", default="results")
  args = parser.parse_args(argv)
  cases = [("sphere", sphere, 10, 400), ("sphere", sphere, 100, 1500), ("rosenbrock", rosenbrock, 10, 3000)]
  if args.quick:
    cases = [("sphere", sphere, 10, 300), ("rosenbrock", rosenbrock, 10, 500)]
  repeats = 3 if args.quick else 7
  rows = []
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
    row = {"problem": name, "dim": dim, "population": pop, "generations": gens, "seeds": SEEDS,
           "time_per_generation_ratio": float(np.median(t_ours) / np.median(t_theirs)),
           "ms_per_generation_pgjax": 1e3 * float(np.median(t_ours)) / gens,
           "ms_per_generation_evosax": 1e3 * float(np.median(t_theirs)) / gens}
    if name == "sphere":
      g_ours, g_theirs = generations_to(c_ours, 1e-6), generations_to(c_theirs, 1e-6)
      row.update(median_generations_to_1e6_pgjax=float(np.median(g_ours)),
                 median_generations_to_1e6_evosax=float(np.median(g_theirs)))
    else:
      row.update(median_best_pgjax=float(np.median(c_ours[:, -1])),
                 median_best_evosax=float(np.median(c_theirs[:, -1])))
    rows.append(row)
    print(json.dumps(row))
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "nes_vs_evosax.json"), "w") as fh:
    json.dump({"rows": rows, "jax": jax.__version__, "device": jax.devices()[0].device_kind}, fh, indent=1)
  return rows


if __name__ == "__main__":
  main()
