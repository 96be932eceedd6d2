"""pgjax.nes.snes against evosax's SNES, side by side in one run, on identical random draws.

Both sides use their defaults for everything the issue does not fix: population 4 + floor(3 ln d), eta_mu = 1
(evosax: optax.sgd(1.0)), eta_sigma = (3 + ln d) / (5 sqrt d), the NES utilities
max(0, ln(lambda/2 + 1) - ln k) / sum - 1/lambda, sigma <- sigma exp(eta_sigma/2 sum_k u_k (s_k^2 - 1)), the
mean updated with the old sigma; same start (mean 3 * ones(d), sigma 1) and problem. Both report the best
fitness of any evaluated member so far (not of the mean), and "generations to 1e-6" is the first generation
whose best-so-far loss is <= 1e-6 in both.

Paired design. A run of either library with PRNG key ``k`` draws generation t's standard-normal matrix from
the same key (``split(k, T)[t]``, split once more, first half, shape [lambda, d]): pgjax.nes.run and the
loop below use the same splits, so both libraries see the *same* noise, seed by seed. The two runs then differ
only by floating-point rounding (evosax recovers s_k as (x_k - mean)/sigma, pgjax keeps s_k), which
eventually flips a rank and lets the trajectories drift apart. Per problem: SEEDS paired runs; the ratio
pgjax/evosax of the median generation count (sphere) or of the median best loss (Rosenbrock) with a paired
bootstrap 95% interval (seeds resampled jointly), the issue's claim (ratio <= 1) and an equivalence claim
(the interval within [0.97, 1.03]). On Rosenbrock the paired runs drift apart after a few hundred generations
(a median of about 470 in a 32-seed probe), so its 3000-generation values are close to independent draws. Time per generation: TIMING_SEEDS seeds (the
issue's 32) in one compiled ``jit(vmap)`` per library, calls interleaved, wall-clock median and minimum and
process CPU time over the repeats.

    python -m experiments.benchmarks.nes_vs_evosax [--quick] [--out results]   # writes results/benchmarks/
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import pgjax
from experiments._common import Claim, Measurement, between, le, parse_args, save_results

SEEDS = 1024           # paired runs for the generation counts and the Rosenbrock values
TIMING_SEEDS = 32      # seeds of the timed call
EQUIVALENCE = (0.97, 1.03)


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
    state = es.init(key, jnp.full((dim,), 3.0), params)          # SNES's init draws nothing

    def body(state, k):
      k_ask, k_tell = jax.random.split(k)                        # as pgjax's step: the first half samples
      population, state = es.ask(k_ask, state, params)
      fitness = jax.vmap(loss)(population)
      state, _ = es.tell(k_tell, population, fitness, state, params)
      return state, state.best_fitness

    _, best = jax.lax.scan(body, state, jax.random.split(key, generations))
    return best

  return jax.jit(jax.vmap(one)), pop


def generations_to(curves, target):
  hit = curves <= target
  return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, np.inf)


def timed(fn, keys):
  wall, cpu = time.perf_counter(), time.process_time()
  jax.block_until_ready(fn(keys))
  return time.perf_counter() - wall, time.process_time() - cpu


def paired_ratio_ci(a, b, seed=0, reps=4000):
  """95% bootstrap interval of median(a) / median(b), the seeds resampled jointly (a[i] and b[i] paired)."""
  rng = np.random.default_rng(seed)
  a, b = np.asarray(a, float), np.asarray(b, float)
  idx = rng.integers(0, a.size, (reps, a.size))
  ratios = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
  return [round(float(x), 4) for x in np.percentile(ratios, [2.5, 97.5])]


def main(argv=None):
  started = time.time()
  args = parse_args(__doc__.splitlines()[0], argv)
  args.out = os.path.join(args.out, "benchmarks")
  cases = [("sphere", sphere, 10, 400), ("sphere", sphere, 100, 2000), ("rosenbrock", rosenbrock, 10, 3000)]
  seeds, repeats = SEEDS, 9
  if args.quick:
    cases, seeds, repeats = [("sphere", sphere, 10, 300), ("rosenbrock", rosenbrock, 10, 500)], 64, 3
  rows, claims, measurements = [], [], []
  for name, loss, dim, gens in cases:
    ours, pop = pgjax_runner(loss, dim, gens)
    theirs, pop2 = evosax_runner(loss, dim, gens)
    assert pop == pop2
    keys = jax.random.split(jax.random.key(1000 + dim), seeds)          # the same keys for both libraries
    c_ours, c_theirs = np.asarray(ours(keys)), np.asarray(theirs(keys))  # compiles too
    tkeys = keys[:TIMING_SEEDS]
    jax.block_until_ready(ours(tkeys)), jax.block_until_ready(theirs(tkeys))   # compile the timed shape
    t_ours, t_theirs = [], []
    for _ in range(repeats):                                      # interleaved
      t_ours.append(timed(ours, tkeys))
      t_theirs.append(timed(theirs, tkeys))
    t_ours, t_theirs = np.array(t_ours), np.array(t_theirs)
    wall_med = float(np.median(t_ours[:, 0]) / np.median(t_theirs[:, 0]))
    wall_min = float(t_ours[:, 0].min() / t_theirs[:, 0].min())
    cpu_med = float(np.median(t_ours[:, 1]) / np.median(t_theirs[:, 1]))
    row = {"problem": name, "dim": dim, "population": pop, "generations": gens, "seeds": seeds,
           "timing_seeds": TIMING_SEEDS, "time_ratio_wall_median": wall_med, "time_ratio_wall_min": wall_min,
           "time_ratio_cpu_median": cpu_med,
           "ms_per_generation_pgjax": 1e3 * float(np.median(t_ours[:, 0])) / gens,
           "ms_per_generation_evosax": 1e3 * float(np.median(t_theirs[:, 0])) / gens,
           "load_average": os.getloadavg()[0]}
    tag = f"{name} d={dim}, population {pop}"
    claims.append(Claim(f"{tag}, {TIMING_SEEDS} seeds: time per generation, pgjax / evosax (median wall)",
                        round(wall_med, 3), le(1.0)))
    measurements.append(Measurement(f"{tag}: time per generation pgjax / evosax (min wall, median CPU)",
                                    [round(wall_min, 3), round(cpu_med, 3)],
                                    f"{repeats} interleaved repeats, load {row['load_average']:.1f}"))
    tag = f"{tag}, {seeds} paired seeds"
    if name == "sphere":
      g_ours, g_theirs = generations_to(c_ours, 1e-6), generations_to(c_theirs, 1e-6)
      ratio = float(np.median(g_ours) / np.median(g_theirs))
      ci = paired_ratio_ci(g_ours, g_theirs)
      same = int(np.sum(g_ours == g_theirs))
      row.update(median_generations_pgjax=float(np.median(g_ours)),
                 median_generations_evosax=float(np.median(g_theirs)), ratio_ci=ci, identical_counts=same,
                 reached_pgjax=int(np.isfinite(g_ours).sum()), reached_evosax=int(np.isfinite(g_theirs).sum()))
      claims.append(Claim(f"{tag}: median generations to reach 1e-6, pgjax / evosax", round(ratio, 4), le(1.0)))
      claims.append(Claim(f"{tag}: paired 95% bootstrap CI of that ratio inside {list(EQUIVALENCE)}", ci,
                          between(*EQUIVALENCE)))
      finite = np.isfinite(g_ours) & np.isfinite(g_theirs)
      diff = g_ours[finite] - g_theirs[finite]
      measurements.append(Measurement(
          f"{tag}: median generations to 1e-6 (pgjax, evosax); seeds with identical counts; "
          "mean paired difference", [float(np.median(g_ours)), float(np.median(g_theirs)), same,
                                     round(float(diff.mean()), 3)],
          f"reached 1e-6: {row['reached_pgjax']} and {row['reached_evosax']} of {seeds} seeds"))
    else:
      b_ours, b_theirs = c_ours[:, -1], c_theirs[:, -1]
      ratio = float(np.median(b_ours) / np.median(b_theirs))
      ci = paired_ratio_ci(b_ours, b_theirs)
      row.update(median_best_pgjax=float(np.median(b_ours)), median_best_evosax=float(np.median(b_theirs)),
                 ratio_ci=ci, pgjax_better_fraction=float(np.mean(b_ours < b_theirs)))
      claims.append(Claim(f"{tag}: median best loss after {gens} generations, pgjax / evosax", round(ratio, 3),
                          le(1.0)))
      claims.append(Claim(f"{tag}: paired 95% bootstrap CI of that ratio inside {list(EQUIVALENCE)}", ci,
                          between(*EQUIVALENCE)))
      measurements.append(Measurement(
          f"{tag}: median best loss after {gens} generations (pgjax, evosax); paired 95% CI of the ratio",
          [float(np.median(b_ours)), float(np.median(b_theirs))], f"CI {ci}"))
    rows.append(row)
    print(row, flush=True)
  save_results("nes_vs_evosax", args, claims=claims, measurements=measurements,
               data={"rows": rows, "repeats": repeats}, started=started)


if __name__ == "__main__":
  main()
