"""Shared test configuration: XLA flags set before JAX starts, deterministic keys."""

import os

# Set before jax is imported. `--xla_cpu_enable_concurrency_optimized_scheduler=false` avoids an XLA:CPU
# deadlock seen with jaxlib 0.10.2 on jitted vmaps of training loops over >= 128 seeds (see pgjax.algos);
# single-threaded Eigen keeps the two pytest-xdist workers from oversubscribing the 2 CI cores.
_FLAGS = ("--xla_cpu_multi_thread_eigen=false --xla_cpu_enable_concurrency_optimized_scheduler=false"
          " --xla_cpu_use_fusion_emitters=false")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAGS).strip()
# The tests check mathematics and contracts on tiny problems, so compilation dominates their cost: XLA:CPU's
# unoptimised code generation (no fusion emitters, backend optimisation level 0) compiles several times faster
# and keeps IEEE semantics. Users' code, the experiments and the benchmarks run with XLA's defaults. Set in the
# environment so that the tests' subprocesses (forced device counts, the command line) inherit it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import gc  # noqa: E402

# Tracing and compiling allocate millions of short-lived container objects (jaxprs, tracers, MLIR handles)
# while the process holds a large long-lived heap (compiled programs, cached reports); CPython's default
# collection thresholds (700, 10, 10) then spend about a quarter of the suite's CPU time in the cyclic
# collector. Collecting less often keeps memory bounded (cycles are still collected) at a fraction of the cost.
gc.set_threshold(100_000, 50, 100)

import jax  # noqa: E402
import pytest  # noqa: E402

# Implicit rank promotion hides shape bugs (a [N] array meeting an [N, 1] one); make it an error.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
  return jax.random.key(20261122)


def _selects_sharding_tests(config) -> bool:
  target = os.path.join(str(config.rootpath), "tests", "test_sharding.py")
  args = [a.split("::")[0] for a in config.args] or [str(config.rootpath)]
  return any(os.path.commonpath([os.path.abspath(a), target]) == os.path.abspath(a) for a in args)


def pytest_configure(config):
  """Under pytest-xdist, start the eight-device sharding script (``tests/eight_device_script.py``; about 20 s
  of XLA compilation in its own process) as the session starts, so that it runs beside the workers' tests
  instead of holding one worker while it runs. The workers inherit where its result will be."""
  numprocesses = getattr(config.option, "numprocesses", None)
  if os.environ.get("PYTEST_XDIST_WORKER") or not numprocesses or not _selects_sharding_tests(config):
    return
  import tempfile
  import eight_device_script
  directory = tempfile.mkdtemp(prefix="pgjax-eight-devices-")
  config._pgjax_eight_devices = eight_device_script.start(directory)
  os.environ[eight_device_script.ENV] = directory


def eight_device_script_env() -> str:
  import eight_device_script
  return eight_device_script.ENV


def pytest_unconfigure(config):
  proc = getattr(config, "_pgjax_eight_devices", None)
  if proc is not None:
    import shutil
    import signal
    if proc.poll() is None:  # a session that ended before its sharding tests (-x, interrupted)
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
    shutil.rmtree(os.environ.pop(eight_device_script_env(), ""), ignore_errors=True)
