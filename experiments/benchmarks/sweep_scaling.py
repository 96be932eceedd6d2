r"""``gradient_stats`` from 10 thousand to 1 million seeds: time linear in the seed count, memory bounded.

A small estimator (score function with a leave-one-out baseline, N = 4 samples of a 3-d Gaussian with a
quadratic cost). Each seed count runs in a fresh subprocess, which compiles (timed apart), runs once to
warm up, then runs ``repeats`` times; the subprocess reports the median run time and its peak resident
set size (``ru_maxrss``). A subprocess with 1,000 seeds gives the baseline RSS of the JAX runtime, so
``rss - baseline`` is what the sweep itself costs; with chunking it must not grow with the seed count.

Claims: the time grows at most linearly with the seed count (time per seed at 1M at most 1.1x that at 100k;
``t(1M) / t(100k)`` is printed, below 10 when the fixed cost per call still shows at 100k), and the peak
RSS at 1M seeds is at most 64 MiB above the 10k run's (memory bounded by the chunk, not the seed count).

Run: ``python -m experiments.benchmarks.sweep_scaling [--quick] [--out results]`` (writes
``<out>/benchmarks/sweep_scaling.json``). ``--quick`` stops at 1M seeds too (that is the point) but
repeats once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from experiments._common import Claim, parse_args, save_results

_CHILD = r"""
import json, resource, sys, time
import jax, numpy as np
import pgjax
from pgjax._src import sweep
num_seeds, repeats = int(sys.argv[1]), int(sys.argv[2])
problem = pgjax.problems.gaussian_quadratic(dim=3)
est = pgjax.score_function(problem.f, problem.dist_fn, num_samples=4, baseline="leave_one_out")
key = jax.random.key(0)
tg = problem.true_grad(problem.params)
chunk = sweep.choose_chunk_size(est, problem.params, key, num_seeds)
fn = jax.jit(lambda k: pgjax.sweep.gradient_stats(est, problem.params, k, num_seeds=num_seeds,
                                                  true_grad=tg))
t0 = time.perf_counter(); compiled = fn.lower(key).compile(); t_compile = time.perf_counter() - t0
jax.block_until_ready(compiled(key))
times = []
for _ in range(repeats):
  t0 = time.perf_counter(); out = jax.block_until_ready(compiled(key)); times.append(time.perf_counter() - t0)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
print("RESULT" + json.dumps(dict(num_seeds=num_seeds, seconds=float(np.median(times)), compile=t_compile,
                                 peak_rss=rss, chunk=chunk, layout=sweep.seed_layout(num_seeds, chunk, 32,
                                 jax.device_count())._asdict(),
                                 total_variance=float(out.total_variance),
                                 total_variance_se=float(out.total_variance_se))))
"""


def run_child(num_seeds: int, repeats: int) -> dict:
  proc = subprocess.run([sys.executable, "-c", _CHILD, str(num_seeds), str(repeats)],
                        capture_output=True, text=True, timeout=900)
  if proc.returncode != 0:
    raise RuntimeError(proc.stderr[-3000:])
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
  return json.loads(line[len("RESULT"):])


def main(argv=None):
  args = parse_args(__doc__.splitlines()[0], argv)
  started = time.time()
  repeats = 1 if args.quick else 3
  runs = {}
  for num_seeds in (1_000, 10_000, 100_000, 1_000_000):
    r = run_child(num_seeds, repeats)
    runs[num_seeds] = r
    print(f"S={num_seeds:>9,d}: {r['seconds']:8.3f} s ({r['num_seeds'] / r['seconds']:,.0f} seeds/s), "
          f"compile {r['compile']:.2f} s, peak RSS {r['peak_rss'] / 2**20:7.1f} MiB, chunk {r['chunk']}, "
          f"total variance {r['total_variance']:.3f} +- {r['total_variance_se']:.3f}")
  base = runs[1_000]["peak_rss"]
  t_ratio = runs[1_000_000]["seconds"] / runs[100_000]["seconds"]
  t_ratio_10k = runs[100_000]["seconds"] / runs[10_000]["seconds"]
  rss_growth = (runs[1_000_000]["peak_rss"] - runs[10_000]["peak_rss"]) / 2 ** 20
  print(f"time ratio 1M/100k = {t_ratio:.2f}, 100k/10k = {t_ratio_10k:.2f}; peak RSS 1M - 10k = "
        f"{rss_growth:+.1f} MiB (runtime baseline at 1k seeds: {base / 2**20:.0f} MiB)")
  per_seed_ratio = t_ratio / 10.0
  claims = [
      Claim("time at most linear: (time per seed at 1M) / (time per seed at 100k)",
            round(per_seed_ratio, 3), "<= 1.1", bool(per_seed_ratio <= 1.1)),
      Claim("memory bounded: peak RSS(1M seeds) - peak RSS(10k seeds), MiB", round(rss_growth, 1),
            "<= 64", bool(rss_growth <= 64)),
  ]
  args.out = os.path.join(args.out, "benchmarks")
  save_results("sweep_scaling", args, claims=claims, started=started,
               data={"runs": {str(k): v for k, v in runs.items()}, "time_ratio_1M_100k": t_ratio,
                     "time_ratio_100k_10k": t_ratio_10k, "rss_growth_mib": rss_growth})


if __name__ == "__main__":
  main()
