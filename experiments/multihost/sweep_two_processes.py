r"""Multi-host variance sweep with ``jax.distributed.initialize``, demonstrated on one machine.

On a real cluster every host runs the *same* script; the only multi-host line is the first one::

  import jax
  jax.distributed.initialize()      # SLURM, Open MPI, Cloud TPU, GKE: arguments detected automatically;
                                    # otherwise coordinator_address="host0:1234", num_processes=P, process_id=p
  import pgjax
  problem = pgjax.problems.gaussian_quadratic()
  est = pgjax.score_function(problem.f, problem.dist_fn, num_samples=16, baseline="leave_one_out")
  stats = pgjax.sweep.gradient_stats(est, problem.params, jax.random.key(0), num_seeds=10**7)
  if jax.process_index() == 0:
    print(stats.total_variance, stats.total_variance_se)

``gradient_stats`` (and ``map_seeds``) shard the seeds over ``jax.devices()``, which after
``jax.distributed.initialize()`` lists the devices of every process: each device runs its own contiguous
seed groups, the per-group moments are all-gathered, and every process receives the same, complete
statistics (bit-identical to a one-process run on as many devices). Nothing else is needed: this is JAX's
own multi-controller runtime, with no extra launcher or communication layer.

This script shows it without a cluster: it starts ``--processes`` local processes, each with
``--devices-per-process`` CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count``), connected through
``jax.distributed.initialize(coordinator_address="localhost:PORT", ...)`` with the gloo CPU collectives,
and compares what each process gets with a single process holding all the devices. It exits 0 when every
process's statistics are bit-identical to the single-process ones.

Run: ``python experiments/multihost/sweep_two_processes.py [--processes 2] [--devices-per-process 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys

_WORKER = r"""
import json, sys
import jax
process_id, num_processes, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if num_processes > 1:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=num_processes,
                             process_id=process_id)
import numpy as np
import pgjax
problem = pgjax.problems.gaussian_quadratic()
est = pgjax.score_function(problem.f, problem.dist_fn, num_samples=8, baseline="leave_one_out")
stats = pgjax.sweep.gradient_stats(est, problem.params, jax.random.key(0), num_seeds=100_003,
                                   true_grad=problem.true_grad(problem.params))
leaves = [np.asarray(x, np.float32).ravel() for x in jax.tree_util.tree_leaves(stats)]
print("RESULT" + json.dumps(dict(process=jax.process_index(), devices=jax.device_count(),
                                 local_devices=jax.local_device_count(),
                                 total_variance=float(stats.total_variance),
                                 total_variance_se=float(stats.total_variance_se),
                                 bits=np.concatenate(leaves).tobytes().hex())))
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _parse(out: str) -> dict:
  return json.loads([l for l in out.splitlines() if l.startswith("RESULT")][-1][len("RESULT"):])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--processes", type=int, default=2)
  parser.add_argument("--devices-per-process", type=int, default=2)
  parser.add_argument("--timeout", type=float, default=300)
  args = parser.parse_args(argv)
  port = _free_port()

  def env(devices):
    flags = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags.strip())

  procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(i), str(args.processes), str(port)],
                            env=env(args.devices_per_process), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(args.processes)]
  results = []
  for p in procs:
    out, err = p.communicate(timeout=args.timeout)
    if p.returncode != 0:
      print(err[-3000:], file=sys.stderr)
      return 1
    results.append(_parse(out))
  total = args.processes * args.devices_per_process
  single = subprocess.run([sys.executable, "-c", _WORKER, "0", "1", "0"], env=env(total),
                          capture_output=True, text=True, timeout=args.timeout)
  if single.returncode != 0:
    print(single.stderr[-3000:], file=sys.stderr)
    return 1
  ref = _parse(single.stdout)
  ok = True
  for r in results:
    same = r["bits"] == ref["bits"]
    ok &= same
    print(f"process {r['process']} ({r['local_devices']} of {r['devices']} devices): total variance "
          f"{r['total_variance']:.6f} +- {r['total_variance_se']:.6f}; bit-identical to one process with "
          f"{total} devices: {same}")
  print(f"one process, {ref['devices']} devices: total variance {ref['total_variance']:.6f} +- "
        f"{ref['total_variance_se']:.6f}")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
