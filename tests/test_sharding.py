"""Sharding of gradient_stats over the seed axis: bit-identical results on 1, 2 and 8 (forced CPU)
devices, padding dropped from the statistics, and the seed layout's invariants."""

import fcntl
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import pgjax
from pgjax._src.sweep import seed_layout

# Runs in a subprocess: the device count is fixed when JAX starts.
_SCRIPT = textwrap.dedent("""
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
    tg = jax.jit(problem.true_grad)(problem.params)
    key = jax.random.key(11)

    def bits(stats, fields=None):
      fields = fields or stats._fields
      flat = [np.asarray(x, np.float32).ravel() for f in fields
              for x in jax.tree_util.tree_leaves(getattr(stats, f))]
      return np.concatenate(flat).tobytes().hex()

    JACKKNIFE = ("total_variance_se", "bias_norm_se", "snr_se")

    def bits_tree(tree):
      return np.concatenate([np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(tree)]).tobytes().hex()

    # Three parts, each its own process (one test's setup each, so no test waits for all of it).
    part = sys.argv[1]
    out = {"bits": {}, "checks": {}}
    if part in ("777", "5"):
      num_seeds, device_counts = (777, (1, 2, 8)) if part == "777" else (5, (1, 8))
      for d in device_counts:
        # chunk_size 64: each group (25 seeds, 800 with padding) is one chunk and two groups share a
        # vectorised step (groups_per_step = 2); with 5 seeds, one seed per group.
        s = pgjax.sweep.gradient_stats(est, problem.params, key, num_seeds=num_seeds, true_grad=tg,
                                       chunk_size=64, devices=devs[:d])
        out["bits"][f"S={num_seeds} D={d}"] = bits(s)
        if d == 8:
          # Reference from every seed's gradient, computed directly: padding must not leak in.
          g = jax.jit(jax.vmap(lambda i: ravel_pytree(est(jax.random.fold_in(key, i), problem.params)[0])[0]))(
              jnp.arange(num_seeds))
          g = np.asarray(g, np.float64)
          out["checks"][f"S={num_seeds}"] = dict(
              num_seeds=int(s.num_seeds),
              mean_err=float(np.abs(np.asarray(ravel_pytree(s.mean)[0]) - g.mean(0)).max()),
              mean_scale=float(np.abs(g.mean(0)).max()),
              var=float(s.total_variance), var_ref=float(g.var(0, ddof=1).sum()),
              mse=float(s.mse),
              mse_ref=float(np.mean(np.sum((g - np.asarray(ravel_pytree(tg)[0])) ** 2, 1))))

    if part == "5":
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
    if part == "map_seeds":
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
      ref = jax.jit(jax.vmap(train))(jax.random.split(key, 37))
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


def eight_devices(tmp_path_factory, part):
  """The script's results for ``part`` ("777", "5" or "map_seeds"), computed once per test session:
  pytest-xdist workers share them through a file."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # the directory the workers share
  out = root / f"eight_devices_{part}.json"
  with open(root / f"eight_devices_{part}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not out.exists():
      out.write_text(json.dumps(_run_script(part)))
  return json.loads(out.read_text())


def _run_script(part):
  # Bit patterns and float32 accuracy are checked as users compile: XLA's default optimisations (the rest of
  # the suite compiles unoptimised for speed; see conftest.py), conftest's other flags kept.
  flags = os.environ.get("XLA_FLAGS", "").replace("--xla_cpu_use_fusion_emitters=false", "")
  env = dict(os.environ, XLA_FLAGS=(flags + " --xla_force_host_platform_device_count=8").strip(),
             JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="0")
  proc = subprocess.run([sys.executable, "-c", _SCRIPT, part], env=env, capture_output=True, timeout=600)
  assert proc.returncode == 0, proc.stderr.decode()[-3000:]
  line = [l for l in proc.stdout.decode().splitlines() if l.startswith("RESULT")][-1]
  return json.loads(line[len("RESULT"):])


@pytest.mark.parametrize("num_seeds, device_counts", [(777, (2, 8)), (5, (8,))])
def test_bit_identical_on_1_2_and_8_devices(tmp_path_factory, num_seeds, device_counts):
  bits = eight_devices(tmp_path_factory, str(num_seeds))["bits"]
  for d in device_counts:
    assert bits[f"S={num_seeds} D={d}"] == bits[f"S={num_seeds} D=1"], d


def test_bit_identical_under_jit_vmap_and_actually_sharded(tmp_path_factory):
  results = eight_devices(tmp_path_factory, "5")
  # Under an enclosing vmap every field but the jackknife SEs is bit-identical; those may differ in the last
  # bit (XLA fuses, hence FMA-contracts, the pooling differently; see gradient_stats' docstring).
  assert results["bits"]["vmap D=1"] == results["bits"]["vmap D=8"]
  np.testing.assert_allclose(results["vmap se D=1"], results["vmap se D=8"], rtol=1e-6)
  assert results["hlo_all_gather"]  # the 8-device program gathers per-device group moments


def test_map_seeds_bit_identical_and_equal_to_vmap(tmp_path_factory):
  results = eight_devices(tmp_path_factory, "map_seeds")
  assert results["bits"]["map_seeds D=1"] == results["bits"]["map_seeds D=8"]
  assert results["map_seeds_shapes"] == [[37, 4], [37, 20]]
  assert results["map_seeds_vs_vmap"] <= 1e-5


def test_map_seeds_default_chunk_is_bit_identical_on_1_and_4_devices(tmp_path_factory):
  bits = eight_devices(tmp_path_factory, "map_seeds")["bits"]
  assert bits["map_seeds default D=1"] == bits["map_seeds default D=4"]
  assert bits["map_seeds C=20 D=1"] != bits["map_seeds C=5 D=4"]  # the check can fail


@pytest.mark.parametrize("num_seeds", [777, 5])
def test_padding_is_dropped_from_the_statistics(tmp_path_factory, num_seeds):
  c = eight_devices(tmp_path_factory, str(num_seeds))["checks"][f"S={num_seeds}"]
  assert c["num_seeds"] == num_seeds
  assert c["mean_err"] <= 1e-5 * max(1.0, c["mean_scale"])
  np.testing.assert_allclose(c["var"], c["var_ref"], rtol=1e-4)
  np.testing.assert_allclose(c["mse"], c["mse_ref"], rtol=1e-4)


@settings(max_examples=200, deadline=None)
@given(num_seeds=st.integers(2, 10 ** 7), chunk=st.integers(1, 4096), groups=st.integers(2, 64),
       devices=st.sampled_from([1, 2, 3, 4, 8, 16]), machine=st.sampled_from([1, 2, 4, 8, 16]))
def test_seed_layout_invariants(num_seeds, chunk, groups, devices, machine):
  lay = seed_layout(num_seeds, chunk, groups, devices, max_devices=machine)
  assert lay.num_groups % devices == 0
  assert lay.chunk_size <= chunk
  num_chunks = lay.num_groups * lay.chunks_per_group
  assert num_seeds <= lay.padded_seeds
  # Padding stays below one seed per chunk, or is whole empty groups when seeds < groups.
  assert lay.padded_seeds - num_seeds < max(num_chunks, lay.num_groups * lay.chunk_size)
  if num_seeds >= lay.num_groups:
    assert lay.padded_seeds - num_seeds < num_chunks
  # Several one-chunk groups per vectorised step: whole steps per device, within the chunk size.
  assert lay.groups_per_step == 1 or lay.chunks_per_group == 1
  assert lay.groups_per_step * lay.chunk_size <= chunk
  assert lay.num_groups % (lay.groups_per_step * devices) == 0
  # The layout (hence every bit of the result) does not depend on how many of the machine's devices are
  # used, for every count dividing the groups.
  if min(groups, num_seeds) % devices == 0 and devices <= machine:
    assert lay == seed_layout(num_seeds, chunk, groups, 1, max_devices=machine)


def test_seed_layout_steps_widen_with_fewer_devices_on_the_machine():
  # 131072 seeds in 32 one-chunk groups of 4096: a vectorised step holds at most the groups of one device of
  # the machine (32 / 8 on eight devices), so a machine with one device takes 16 groups (65536 seeds) per step.
  assert seed_layout(131072, 65536, 32, 1, max_devices=8).groups_per_step == 4
  assert seed_layout(131072, 65536, 32, 8, max_devices=8).groups_per_step == 4
  assert seed_layout(131072, 65536, 32, 1, max_devices=1).groups_per_step == 16
  assert seed_layout(131072, 8192, 32, 1, max_devices=1).groups_per_step == 2  # the chunk bounds it too


def test_bad_devices_raise():
  problem = pgjax.problems.gaussian_quadratic()
  est = pgjax.score_function(problem.f, problem.dist_fn, num_samples=2)
  for bad in ([], ["cpu:0"]):
    with pytest.raises(TypeError, match="devices"):
      pgjax.sweep.gradient_stats(est, problem.params, jax.random.key(0), num_seeds=4, devices=bad)


def test_shifted_sums_survive_a_large_mean(tmp_path_factory):
  r"""g = offset + 0.01 z (z ~ N(0, I_3)): tr Cov = 3e-4 whatever the offset, in float32."""
  shifted = eight_devices(tmp_path_factory, "map_seeds")["shifted"]
  (near, near_se), (far, _) = shifted["near"], shifted["far"]
  assert abs(near - 3e-4) <= 5 * near_se
  np.testing.assert_allclose(far, near, rtol=1e-4)
