"""The eight-device sharding checks' script, run in a subprocess: the device count is fixed when JAX starts.

``start`` launches it in the background and returns at once; ``wait`` blocks until its result file exists.
Bit patterns and float32 accuracy are checked as users compile: XLA's default optimisations (the rest of the
suite compiles unoptimised for speed; see ``conftest.py``), conftest's other flags kept.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time

ENV = "PGJAX_TEST_EIGHT_DEVICES"  # the result directory, set by conftest.py for pytest-xdist workers

SCRIPT = textwrap.dedent("""
    import gc, json, sys
    gc.set_threshold(100_000, 50, 100)  # as conftest.py: the cyclic collector is costly while tracing
    import jax, jax.numpy as jnp, numpy as np
    from jax.flatten_util import ravel_pytree
    import pgjax
    from pgjax._src import sweep

    assert jax.device_count() == 8, jax.devices()
    devs = jax.devices()
    problem = pgjax.problems.gaussian_quadratic()
    est = pgjax.score_function(problem.f, problem.dist_fn, num_samples=4)
    tg = problem.true_grad(problem.params)
    key = jax.random.key(11)

    def bits(stats, fields=None):
      fields = fields or stats._fields
      flat = [np.asarray(x, np.float32).ravel() for f in fields
              for x in jax.tree_util.tree_leaves(getattr(stats, f))]
      return np.concatenate(flat).tobytes().hex()

    JACKKNIFE = ("total_variance_se", "bias_norm_se", "snr_se")

    def bits_tree(tree):
      return np.concatenate([np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(tree)]).tobytes().hex()

    out = {"bits": {}, "checks": {}}
    for num_seeds, device_counts in ((777, (1, 2, 8)), (5, (1, 8))):
      for d in device_counts:
        # chunk_size 64: each group (25 seeds, 800 with padding) is one chunk and two groups share a
        # vectorised step (groups_per_step = 2); with 5 seeds, one seed per group.
        s = pgjax.sweep.gradient_stats(est, problem.params, key, num_seeds=num_seeds, true_grad=tg,
                                       chunk_size=64, devices=devs[:d])
        out["bits"][f"S={num_seeds} D={d}"] = bits(s)
        if d == 8:
          # Reference from every seed's gradient, computed directly: padding must not leak in.
          g = jax.vmap(lambda i: ravel_pytree(est(jax.random.fold_in(key, i), problem.params)[0])[0])(
              jnp.arange(num_seeds))
          g = np.asarray(g, np.float64)
          out["checks"][f"S={num_seeds}"] = dict(
              num_seeds=int(s.num_seeds),
              mean_err=float(np.abs(np.asarray(ravel_pytree(s.mean)[0]) - g.mean(0)).max()),
              mean_scale=float(np.abs(g.mean(0)).max()),
              var=float(s.total_variance), var_ref=float(g.var(0, ddof=1).sum()),
              mse=float(s.mse),
              mse_ref=float(np.mean(np.sum((g - np.asarray(ravel_pytree(tg)[0])) ** 2, 1))))

    # jit(vmap) over a traced hyperparameter, as run_grid does: sharding inside vmap, same bits.
    def stats_at(scale, devices):
      def e(k, p):
        g, aux = est(k, p)
        return jax.tree_util.tree_map(lambda x: scale * x, g), aux
      return pgjax.sweep.gradient_stats(e, problem.params, key, num_seeds=300, chunk_size=8,
                                        devices=devices)
    scales = jnp.array([0.5, 1.0, 2.0])
    for d in (1, 8):
      fn = jax.jit(jax.vmap(lambda s: stats_at(s, devs[:d]))).lower(scales).compile()
      res = fn(scales)
      out["bits"][f"vmap D={d}"] = bits(res, [f for f in res._fields if f not in JACKKNIFE])
      out[f"vmap se D={d}"] = [np.asarray(getattr(res, f)).tolist() for f in JACKKNIFE[::2]]
      if d == 8:
        out["hlo_all_gather"] = "all-gather" in fn.as_text()
    # map_seeds (training loops): per-seed outputs, bit-identical across device counts, equal to vmap.
    def train(k):
      def step(w, kk):
        return w - 0.1 * (w - 1.0 + 0.3 * jax.random.normal(kk, w.shape)), jnp.sum(w ** 2)
      return jax.lax.scan(step, jnp.zeros(4), jax.random.split(k, 20))
    for d in (1, 8):
      out["bits"][f"map_seeds D={d}"] = bits_tree(pgjax.sweep.map_seeds(
          train, key, num_seeds=37, chunk_size=4, devices=devs[:d]))
    # The default chunk must not depend on the device count. The bits of a reduction depend on the vmap
    # width (control: chunks of 20 seeds on one device vs 5 on four devices, as a device-dependent default
    # would pick, differ), so only equal chunks give equal bits.
    spread = lambda k: jnp.var(jax.random.uniform(k, (777,)))
    for d in (1, 4):
      out["bits"][f"map_seeds default D={d}"] = bits_tree(pgjax.sweep.map_seeds(spread, key, num_seeds=40,
                                                                                devices=devs[:d]))
    out["bits"]["map_seeds C=20 D=1"] = bits_tree(pgjax.sweep.map_seeds(spread, key, num_seeds=40,
                                                                       chunk_size=20, devices=devs[:1]))
    out["bits"]["map_seeds C=5 D=4"] = bits_tree(pgjax.sweep.map_seeds(spread, key, num_seeds=40,
                                                                      chunk_size=5, devices=devs[:4]))
    ref = jax.vmap(train)(jax.random.split(key, 37))
    got = pgjax.sweep.map_seeds(train, key, num_seeds=37, chunk_size=4)
    out["map_seeds_shapes"] = [list(x.shape) for x in jax.tree_util.tree_leaves(got)]
    out["map_seeds_vs_vmap"] = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                                   for a, b in zip(jax.tree_util.tree_leaves(got),
                                                   jax.tree_util.tree_leaves(ref)))
    # Shifted sums: g = offset + 0.01 z (z ~ N(0, I_3)) has tr Cov = 3e-4 whatever the offset, in float32.
    def shifted(offset):
      def e(k, params):
        return {"w": params["w"] + offset + 0.01 * jax.random.normal(k, (3,))}, ()
      s = pgjax.sweep.gradient_stats(e, {"w": jnp.zeros(3)}, jax.random.key(2), num_seeds=5000, chunk_size=64)
      return [float(s.total_variance), float(s.total_variance_se)]
    out["shifted"] = {"near": shifted(0.0), "far": shifted(1000.0)}
    print("RESULT" + json.dumps(out))
    """)


def start(directory) -> subprocess.Popen:
  """Starts the script; its stdout, stderr and exit status land in ``directory`` (status file written last)."""
  d = pathlib.Path(directory)
  d.mkdir(parents=True, exist_ok=True)
  flags = os.environ.get("XLA_FLAGS", "").replace("--xla_cpu_use_fusion_emitters=false", "")
  env = dict(os.environ, XLA_FLAGS=(flags + " --xla_force_host_platform_device_count=8").strip(),
             JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="0", PGJAX_SCRIPT=SCRIPT)
  env.pop(ENV, None)
  cmd = f'"{sys.executable}" -c "$PGJAX_SCRIPT" > out 2> err; echo $? > status.tmp && mv status.tmp status'
  return subprocess.Popen(["/bin/sh", "-c", cmd], cwd=d, env=env, stdin=subprocess.DEVNULL,
                          start_new_session=True)  # its own process group: conftest can stop it whole


def wait(directory, timeout: float = 600.0) -> dict:
  """The script's result, once its status file exists; fails with its stderr if it failed."""
  d = pathlib.Path(directory)
  deadline = time.monotonic() + timeout
  while not (d / "status").exists():
    assert time.monotonic() < deadline, f"the eight-device script did not finish in {timeout} s"
    time.sleep(0.2)
  status = (d / "status").read_text().strip()
  assert status == "0", f"exit status {status}: " + (d / "err").read_text()[-3000:]
  line = [l for l in (d / "out").read_text().splitlines() if l.startswith("RESULT")][-1]
  return json.loads(line[len("RESULT"):])
