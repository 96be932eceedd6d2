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
(a median of about 470 in a 32-seed probe), so its 3000-generation values are close to independent draws.
Time per generation: TIMING_SEEDS seeds (the issue's 32) in one compiled ``jit(vmap)`` per library, calls
interleaved, wall-clock median and minimum and process CPU time over the repeats.

Variant. The same table for ``pgjax.nes.snes(mirrored=True, adaptation_sampling=True)`` against evosax's
default SNES: mirrored pairs s, -s (Brockhoff et al. 2010) and the step-size learning rate adapted by
adaptation sampling (Wierstra et al. 2014, Algorithm 6), same start, population, problem and generations.
It was chosen among mirrored sampling alone, adaptation sampling alone and both on other keys (1000 + d is
reported here; the choice was made on 5555 + d and 7777 + d, 64-256 seeds), with the papers' constants (no
tuning). Its noise differs from evosax's (ceil(lambda/2) draws per generation), so its seeds are paired by
key only: the bootstrap still resamples seeds jointly, but the pairs are close to independent. Its claims ask
for a real improvement (the upper end of the 95% interval below 1), not a tie. Rastrigin d = 10 (1000
generations, median best loss) is a side problem outside the issue's claims: measured for all three, judged
for none.

    python -m experiments.benchmarks.nes_vs_evosax [--quick] [--out results]   # writes results/benchmarks/
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import pgjax
from experiments._common import Claim, Measurement, between, le, lt, parse_args, save_results

SEEDS = 1024           # paired runs for the generation counts and the Rosenbrock values
TIMING_SEEDS = 32      # seeds of the timed call
EQUIVALENCE = (0.97, 1.03)
VARIANT = dict(mirrored=True, adaptation_sampling=True)   # pgjax.nes.snes options of the variant
VARIANT_NAME = "pgjax mirrored+AS"


def sphere(x):
  return jnp.sum(x ** 2)


def rosenbrock(x):
  return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rastrigin(x):
  return 10.0 * x.shape[0] + jnp.sum(x ** 2 - 10.0 * jnp.cos(2 * jnp.pi * x))


def pgjax_runner(loss, dim, generations, **options):
  es = pgjax.nes.snes(**options)
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


def _ci_claim(tag, ci, equivalence):
  """The claim on a ratio's paired CI: inside the equivalence band (a tie) or its upper end below 1 (better)."""
  if equivalence:
    return Claim(f"{tag}: paired 95% bootstrap CI of that ratio inside {list(EQUIVALENCE)}", ci,
                 between(*EQUIVALENCE))
  return Claim(f"{tag}: upper end of the 95% bootstrap CI of that ratio (better, not a tie)", ci[1], lt(1.0))


def _sphere_rows(tag, g_a, g_b, a_name, claims, measurements, equivalence):
  ratio = float(np.median(g_a) / np.median(g_b))
  ci = paired_ratio_ci(g_a, g_b)
  claims.append(Claim(f"{tag}: median generations to reach 1e-6, {a_name} / evosax", round(ratio, 4), le(1.0)))
  claims.append(_ci_claim(tag, ci, equivalence))
  finite = np.isfinite(g_a) & np.isfinite(g_b)
  diff = g_a[finite] - g_b[finite]
  same = int(np.sum(g_a == g_b))
  capped = lambda g: np.where(np.isfinite(g), g, np.iinfo(np.int32).max)
  measurements.append(Measurement(
      f"{tag}: fraction of seeds where {a_name} is faster; 90th and 99th percentiles of the generations "
      f"({a_name}, evosax; 2147483647 = not reached)",
      [round(float(np.mean(g_a < g_b)), 4), [float(np.percentile(capped(g), q)) for g in (g_a, g_b)
                                             for q in (90, 99)]], ""))
  measurements.append(Measurement(
      f"{tag}: median generations to 1e-6 ({a_name}, evosax); seeds with identical counts; "
      "mean paired difference; 95% CI of the ratio", [float(np.median(g_a)), float(np.median(g_b)), same,
                                                      round(float(diff.mean()), 3), ci],
      f"reached 1e-6: {int(np.isfinite(g_a).sum())} and {int(np.isfinite(g_b).sum())} of {g_a.size} seeds"))
  return dict(median_generations=float(np.median(g_a)), ratio=ratio, ratio_ci=ci, identical_counts=same,
              reached=int(np.isfinite(g_a).sum()))


def _best_rows(tag, b_a, b_b, a_name, gens, claims, measurements, equivalence, side=False):
  ratio = float(np.median(b_a) / np.median(b_b))
  ci = paired_ratio_ci(b_a, b_b)
  if side:                                  # a problem outside the claims: measured, not judged
    claims = []
  claims.append(Claim(f"{tag}: median best loss after {gens} generations, {a_name} / evosax", round(ratio, 3),
                      le(1.0)))
  claims.append(_ci_claim(tag, ci, equivalence))
  for c in claims if side else []:
    measurements.append(Measurement(f"(side problem, no claim) {c.claim}", c.value))
  lower = float(np.mean(b_a < b_b))
  measurements.append(Measurement(
      f"{tag}: median best loss after {gens} generations ({a_name}, evosax); 95% CI of the ratio; "
      f"fraction of seeds where {a_name} is lower; quartiles ({a_name}, evosax)",
      [float(np.median(b_a)), float(np.median(b_b)), ci, round(lower, 3),
       [round(float(x), 4) for x in np.percentile(b_a, [25, 75])],
       [round(float(x), 4) for x in np.percentile(b_b, [25, 75])]], ""))
  return dict(median_best=float(np.median(b_a)), ratio=ratio, ratio_ci=ci, lower_fraction=lower)


def main(argv=None):
  started = time.time()
  args = parse_args(__doc__.splitlines()[0], argv)
  args.out = os.path.join(args.out, "benchmarks")
  cases = [("sphere", sphere, 10, 400), ("sphere", sphere, 100, 2000), ("rosenbrock", rosenbrock, 10, 3000),
           ("rastrigin", rastrigin, 10, 1000)]
  seeds, repeats = SEEDS, 9
  if args.quick:
    cases, seeds, repeats = [("sphere", sphere, 10, 300), ("rosenbrock", rosenbrock, 10, 500),
                             ("rastrigin", rastrigin, 10, 200)], 64, 3
  rows, claims, measurements = [], [], []
  for name, loss, dim, gens in cases:
    ours, pop = pgjax_runner(loss, dim, gens)
    variant, pop3 = pgjax_runner(loss, dim, gens, **VARIANT)
    theirs, pop2 = evosax_runner(loss, dim, gens)
    assert pop == pop2 == pop3
    keys = jax.random.split(jax.random.key(1000 + dim), seeds)          # the same keys for every run
    curves = {k: np.asarray(fn(keys)) for k, fn in (("pgjax", ours), ("evosax", theirs), ("variant", variant))}
    tkeys = keys[:TIMING_SEEDS]
    fns = {"pgjax": ours, "evosax": theirs, "variant": variant}
    for fn in fns.values():
      jax.block_until_ready(fn(tkeys))                                   # compile the timed shape
    times = {k: [] for k in fns}
    for _ in range(repeats):                                             # interleaved
      for k, fn in fns.items():
        times[k].append(timed(fn, tkeys))
    times = {k: np.array(v) for k, v in times.items()}
    row = {"problem": name, "dim": dim, "population": pop, "generations": gens, "seeds": seeds,
           "timing_seeds": TIMING_SEEDS, "load_average": os.getloadavg()[0],
           "ms_per_generation": {k: 1e3 * float(np.median(t[:, 0])) / gens for k, t in times.items()}}
    for who, a_name in (("pgjax", "pgjax"), ("variant", VARIANT_NAME)):
      t_a, t_b = times[who], times["evosax"]
      wall_med = float(np.median(t_a[:, 0]) / np.median(t_b[:, 0]))
      wall_min = float(t_a[:, 0].min() / t_b[:, 0].min())
      cpu_med = float(np.median(t_a[:, 1]) / np.median(t_b[:, 1]))
      tag = f"{name} d={dim}, population {pop}"
      if name != "rastrigin":
        claims.append(Claim(f"{tag}, {TIMING_SEEDS} seeds: time per generation, {a_name} / evosax (median wall)",
                            round(wall_med, 3), le(1.0)))
      measurements.append(Measurement(f"{tag}: time per generation {a_name} / evosax (min wall, median CPU)",
                                      [round(wall_min, 3), round(cpu_med, 3)],
                                      f"{repeats} interleaved repeats, load {row['load_average']:.1f}"))
      tag = f"{tag}, {seeds} paired seeds"
      equivalence = who == "pgjax"              # the defaults are the same algorithm: a tie within +-3%
      if name == "sphere":
        out = _sphere_rows(tag, generations_to(curves[who], 1e-6), generations_to(curves["evosax"], 1e-6),
                           a_name, claims, measurements, equivalence)
      else:
        out = _best_rows(tag, curves[who][:, -1], curves["evosax"][:, -1], a_name, gens, claims, measurements,
                         equivalence, side=name == "rastrigin")
      row[who] = dict(out, time_ratio_wall_median=wall_med, time_ratio_wall_min=wall_min,
                      time_ratio_cpu_median=cpu_med)
    if name == "sphere":
      row["median_generations_evosax"] = float(np.median(generations_to(curves["evosax"], 1e-6)))
    else:
      row["median_best_evosax"] = float(np.median(curves["evosax"][:, -1]))
    rows.append(row)
    print(row, flush=True)
  save_results("nes_vs_evosax", args, claims=claims, measurements=measurements,
               data={"rows": rows, "repeats": repeats, "variant": VARIANT}, started=started)


def ellipsoid(x):
  return jnp.sum(10.0 ** (6 * jnp.arange(x.shape[0]) / (x.shape[0] - 1)) * x ** 2)


def variant_side_check(seeds=128):
  """The variant against pgjax's default (= evosax's) SNES on problems outside the issue's claims (keys
  3000 + d, no claims; printed): the separable ellipsoid (generations to 1e-6) and Rastrigin d = 100 (median
  best loss). ``python -c "from experiments.benchmarks.nes_vs_evosax import variant_side_check as f; f()"``"""
  for name, loss, dim, gens in [("ellipsoid", ellipsoid, 10, 1500), ("ellipsoid", ellipsoid, 100, 6000),
                                ("rastrigin", rastrigin, 100, 3000)]:
    keys = jax.random.split(jax.random.key(3000 + dim), seeds)
    a = np.asarray(pgjax_runner(loss, dim, gens)[0](keys))
    b = np.asarray(pgjax_runner(loss, dim, gens, **VARIANT)[0](keys))
    if name == "ellipsoid":
      ga, gb = generations_to(a, 1e-6), generations_to(b, 1e-6)
      print(f"{name} d={dim}: median generations to 1e-6, default {np.median(ga)}, variant {np.median(gb)}; "
            f"reached in {gens}: {int(np.isfinite(ga).sum())} and {int(np.isfinite(gb).sum())} of {seeds}")
    else:
      print(f"{name} d={dim}: median best loss after {gens} generations, default {np.median(a[:, -1]):.2f}, "
            f"variant {np.median(b[:, -1]):.2f}; quartiles {np.percentile(a[:, -1], [25, 75]).round(2)} and "
            f"{np.percentile(b[:, -1], [25, 75]).round(2)}")


if __name__ == "__main__":
  main()
