r"""Per-generation time: pgjax's antithetic zeroth-order estimator + an optax step vs evosax's OpenES.

One generation = draw a population of P = 256 (128 antithetic pairs), evaluate the sphere function
:math:`f(x) = \sum_k x_k^2` on every member, form the ES gradient and take an SGD step (``optax.sgd(1e-3)``
in both). evosax ``Open_ES`` uses identity fitness shaping (so both compute the same estimator up to its
normalisation), antithetic sampling and the same population and dimension. Variants timed side by side:

* ``evosax``: ``Open_ES.ask`` -> ``vmap(f)`` -> ``Open_ES.tell`` in one ``jax.jit``;
* ``pgjax_iid``: ``pgjax.zeroth_order(f, num_directions=256, sigma=0.1, scheme="antithetic")`` + optax
  (default chunking: the most directions whose values fit in 2 MiB: all 128 pairs up to d = 4096, 4 at
  d = 100000);
* ``pgjax_iid_one_vmap`` and ``pgjax_iid_chunks_16``: the same with ``batch_size=128`` (all 128 antithetic
  pairs in one ``vmap``) and ``batch_size=16`` (the previous default for d >= 512); the same key gives the
  same estimate up to float reassociation, so these measure only the chunking default;
* ``pgjax_table``: the same with ``noise=pgjax.noise_table(...)`` (slices of a shared table of 2**25
  normals at random offsets, an approximation of iid directions; the population is never materialised);
* ``read_population``: ``vmap(f)`` over an already materialised ``[P, d]`` population (an argument of the
  jitted function), i.e. the time to read the perturbed population once;
* ``read_table_slices``: the sum of each of P table slices at random offsets (the same bytes, read the way
  the noise-table estimator reads them).

Timings are medians over repeats; within each repeat the variants run interleaved (the machine is shared,
so only ratios measured in one run are meaningful). d in {10, 1000, 100000}.

Run: ``python -m experiments.benchmarks.zo_vs_evosax [--quick] [--dims D ...]``; writes
``results/benchmarks/zo_vs_evosax.json``.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pgjax
from experiments._common import Claim, Measurement, ge, le, parse_args, save_results

POP = 256
SIGMA = 0.1
LR = 1e-3


def sphere(x):
  return jnp.sum(x * x)


def pgjax_generation(estimator, opt):
  """One jitted generation ``(key, (x, opt_state)) -> (x, opt_state)``: the gradient estimate, then one step of
  the optax optimiser ``opt`` on it (evosax's ``tell`` hands its estimate to the same optimiser)."""
  @jax.jit
  def gen(key, carry):
    x, opt_state = carry
    upd, opt_state = opt.update(estimator(key, x)[0], opt_state, x)
    return optax.apply_updates(x, upd), opt_state
  return gen


def make_variants(d: int, table):
  from evosax.algorithms import Open_ES
  from evosax.core.fitness_shaping import identity_fitness_shaping_fn

  x0 = jnp.full((d,), 0.5, jnp.float32)
  opt = optax.sgd(LR)

  es = Open_ES(population_size=POP, solution=x0, use_antithetic_sampling=True, optimizer=opt,
               std_schedule=optax.constant_schedule(SIGMA), fitness_shaping_fn=identity_fitness_shaping_fn)
  es_params = es.default_params
  es_state = es.init(jax.random.key(0), x0, es_params)

  @jax.jit
  def evosax_gen(key, state):
    k1, k2 = jax.random.split(key)
    pop, state = es.ask(k1, state, es_params)
    fit = jax.vmap(sphere)(pop)
    state, _ = es.tell(k2, pop, fit, state, es_params)
    return state

  def pgjax_gen_fn(estimator):
    return pgjax_generation(estimator, opt)

  iid = pgjax_gen_fn(pgjax.zeroth_order(sphere, num_directions=POP, sigma=SIGMA, scheme="antithetic"))
  one_vmap = pgjax_gen_fn(pgjax.zeroth_order(sphere, num_directions=POP, sigma=SIGMA, scheme="antithetic",
                                             batch_size=POP // 2))
  chunks_16 = pgjax_gen_fn(pgjax.zeroth_order(sphere, num_directions=POP, sigma=SIGMA, scheme="antithetic",
                                              batch_size=16))
  tab = pgjax_gen_fn(pgjax.zeroth_order(sphere, num_directions=POP, sigma=SIGMA, scheme="antithetic",
                                        noise=table))
  population = x0 + SIGMA * jax.random.normal(jax.random.key(1), (POP, d))

  @jax.jit
  def read_population(key, carry):  # key unused: same call signature as the others
    return jax.vmap(sphere)(carry)

  offsets = jax.random.randint(jax.random.key(2), (POP,), 0, table.table.shape[0] - d + 1)

  @jax.jit
  def read_table_slices(key, carry):  # reads P slices of the table at random offsets (same bytes as the population)
    tab_, offs = carry
    return jax.lax.map(lambda o: jnp.sum(jax.lax.dynamic_slice(tab_, (o,), (d,))), offs, batch_size=16)

  return {
      "evosax": (evosax_gen, es_state),
      "pgjax_iid": (iid, (x0, opt.init(x0))),
      "pgjax_iid_one_vmap": (one_vmap, (x0, opt.init(x0))),
      "pgjax_iid_chunks_16": (chunks_16, (x0, opt.init(x0))),
      "pgjax_table": (tab, (x0, opt.init(x0))),
      "read_population": (read_population, population),
      "read_table_slices": (read_table_slices, (table.table, offsets)),
  }


def time_variants(variants, *, repeats: int, inner: int):
  """Median seconds per call for each variant; variants interleaved within every repeat."""
  states = {}
  for name, (fn, carry) in variants.items():  # compile + warm up
    out = fn(jax.random.key(0), carry)
    jax.block_until_ready(out)
    states[name] = carry if name.startswith("read") else out
  times = {name: [] for name in variants}
  key = jax.random.key(123)
  for r in range(repeats):
    for name, (fn, _) in variants.items():
      carry = states[name]
      t0 = time.perf_counter()
      for i in range(inner):
        out = fn(jax.random.fold_in(key, r * inner + i), carry)
        if not name.startswith("read"):
          carry = out
      jax.block_until_ready(out)
      times[name].append((time.perf_counter() - t0) / inner)
      states[name] = carry
  return {name: float(np.median(v)) for name, v in times.items()}, times


def chunk_sweep(dims=(512, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 100000),
                batch_sizes=(4, 8, 16, 32, 64, 128, 256), schemes=("antithetic", "plain")):
  """Time per generation of ``pgjax_iid`` at fixed ``batch_size`` values and with the default, per dimension
  and scheme (no claims; printed): the measurement behind ``zeroth_order``'s default chunk size. Each time is
  relative to the fastest of the row. ``python -c "from experiments.benchmarks.zo_vs_evosax import
  chunk_sweep as f; f()"``"""
  opt = optax.sgd(LR)
  for scheme in schemes:
    distinct = POP // 2 if scheme == "antithetic" else POP
    for d in dims:
      x0 = jnp.full((d,), 0.5, jnp.float32)
      variants = {}
      for bs in (None,) + tuple(b for b in batch_sizes if b <= distinct):
        est = pgjax.zeroth_order(sphere, num_directions=POP, sigma=SIGMA, scheme=scheme, batch_size=bs)
        variants["default" if bs is None else f"bs{bs}"] = (pgjax_generation(est, opt), (x0, opt.init(x0)))
      med, _ = time_variants(variants, repeats=7, inner=max(3, 200000 // d))
      best = min(med.values())
      print(f"{scheme} d={d:>6}: " + ", ".join(f"{k} {v / best:.2f}" for k, v in med.items()), flush=True)


def main(argv=None):
  started = time.time()
  args = parse_args(__doc__.splitlines()[0], argv, extra=lambda p: p.add_argument(
      "--dims", type=int, nargs="+", default=[10, 1000, 100000], help="dimensions to time"))
  args.out = os.path.join(args.out, "benchmarks")
  table = pgjax.noise_table(jax.random.key(42), size=2 ** 25)
  dims = tuple(args.dims)
  repeats = 5 if args.quick else 15
  rows = {}
  for d in dims:
    inner = 50 if d <= 100 else 20 if d <= 10000 else 2
    med, raw = time_variants(make_variants(d, table), repeats=repeats, inner=inner)
    ratios = {
        "pgjax_iid / evosax": med["pgjax_iid"] / med["evosax"],
        "pgjax_iid (default chunks) / pgjax_iid_one_vmap": med["pgjax_iid"] / med["pgjax_iid_one_vmap"],
        "pgjax_iid (default chunks) / pgjax_iid_chunks_16": med["pgjax_iid"] / med["pgjax_iid_chunks_16"],
        "pgjax_table / evosax": med["pgjax_table"] / med["evosax"],
        "evosax / pgjax_table (speed-up)": med["evosax"] / med["pgjax_table"],
        "pgjax_table / read_population": med["pgjax_table"] / med["read_population"],
        "pgjax_table / read_table_slices": med["pgjax_table"] / med["read_table_slices"],
    }
    rows[d] = {"median_seconds": med, "ratios": ratios, "raw_seconds": raw, "inner_calls": inner}
    print(f"d={d:>6}: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in med.items()))
    print("          " + ", ".join(f"{k} = {v:.2f}" for k, v in ratios.items()))
  big = rows[max(dims)]["ratios"]
  claims = [Claim(f"pgjax iid Gaussian / evosax OpenES time at d={d}", round(rows[d]["ratios"]["pgjax_iid / evosax"], 3),
                  le(1.0)) for d in dims]
  claims += [
      Claim(f"evosax / pgjax noise-table time at d={max(dims)}, P=256 (speed-up)",
            round(big["evosax / pgjax_table (speed-up)"], 2), ge(10)),
      Claim(f"pgjax noise-table time / time to read the perturbed population once, d={max(dims)}",
            round(big["pgjax_table / read_population"], 2), le(3)),
  ]
  measurements = [Measurement(f"pgjax iid time, default chunks / {other}, d={d}",
                              round(rows[d]["ratios"][f"pgjax_iid (default chunks) / pgjax_iid_{other}"], 3),
                              "same estimate for the same key; the basis of zeroth_order's batch_size default")
                  for d in dims for other in ("one_vmap", "chunks_16")]
  save_results("zo_vs_evosax", args, claims=claims, measurements=measurements,
               data={"population": POP, "sigma": SIGMA, "dims": list(dims), "repeats": repeats,
                     "table_size": 2 ** 25, "rows": {str(k): v for k, v in rows.items()}},
               started=started)


if __name__ == "__main__":
  main()
