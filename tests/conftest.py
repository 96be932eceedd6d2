"""Shared test configuration: XLA flags set before JAX starts, deterministic keys."""

import os

# Set before jax is imported. `--xla_cpu_enable_concurrency_optimized_scheduler=false` avoids an XLA:CPU
# deadlock seen with jaxlib 0.10.2 on jitted vmaps of training loops over >= 128 seeds (see pgjax.algos);
# single-threaded Eigen keeps the two pytest-xdist workers from oversubscribing the 2 CI cores.
_FLAGS = "--xla_cpu_multi_thread_eigen=false --xla_cpu_enable_concurrency_optimized_scheduler=false"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAGS).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

# Implicit rank promotion hides shape bugs (a [N] array meeting an [N, 1] one); make it an error.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
  return jax.random.key(20261122)
