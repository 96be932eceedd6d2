"""Shared test configuration: deterministic keys, small problem fixtures."""

import os

# Tests run on the CPU; keep XLA from grabbing every core for one test when pytest-xdist runs two workers.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def key():
  return jax.random.key(20261122)
