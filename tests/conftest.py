"""Shared test configuration: XLA flags set before JAX starts, deterministic keys."""

import os

# Set before jax is imported. `--xla_cpu_enable_concurrency_optimized_scheduler=false` avoids an XLA:CPU
# deadlock seen with jaxlib 0.10.2 on jitted vmaps of training loops over >= 128 seeds (see pgjax.algos);
# single-threaded Eigen keeps the two pytest-xdist workers from oversubscribing the 2 CI cores, and so does
# generating each program's machine code in one piece (`--xla_cpu_parallel_codegen_split_count=1`: splitting
# it for parallel code generation costs more CPU than it saves while both cores are busy; the whole suite,
# back to back on a quiet machine: 351 s -> 316 s of CPU, 188 s -> 170 s wall). The split changes the
# generated code's rounding in the last bits, as any compiler setting may; no test may depend on those bits.
_FLAGS = ("--xla_cpu_multi_thread_eigen=false --xla_cpu_enable_concurrency_optimized_scheduler=false"
          " --xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAGS).strip()
# The tests check mathematics and contracts on tiny problems, so compilation dominates their cost: XLA:CPU's
# unoptimised code generation (no fusion emitters, backend optimisation level 0) compiles several times faster
# and keeps IEEE semantics. Users' code, the experiments and the benchmarks run with XLA's defaults. Set in the
# environment so that the tests' subprocesses (forced device counts, the command line) inherit it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import gc  # noqa: E402

# Tracing and compiling allocate millions of short-lived container objects (jaxprs, tracers, MLIR handles)
# while the process holds a large long-lived heap (compiled programs, cached reports); CPython's default
# collection thresholds (700, 10, 10) then spend a large share of the suite's CPU time in the cyclic collector
# (the whole suite, back to back under the same load: 622 s of CPU with them, 457 s with these; a single file
# run alone gains little: the long-lived heap is what grows). Collecting less often keeps memory bounded
# (cycles are still collected; peak memory unchanged) at a fraction of the cost.
gc.set_threshold(100_000, 50, 100)

import jax  # noqa: E402
import pytest  # noqa: E402

# Implicit rank promotion hides shape bugs (a [N] array meeting an [N, 1] one); make it an error.
jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_configure(config):
  # pytest-xdist's default distribution ("load") hands a module's tests to both workers, so each computes the
  # module's shared fixtures and cached compiled programs (measured: conformance families compiled twice).
  # Whole modules per worker ("loadscope") computes each once: back to back on a quiet machine, 358 s ->
  # 341 s of CPU. Applies with `-n` whenever the distribution is "load" (xdist's default; an explicit
  # `--dist load` is indistinguishable from it); other `--dist` modes are left as given.
  if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", None) == "load":
    config.option.dist = "loadscope"


@pytest.fixture
def key():
  return jax.random.key(20261122)
