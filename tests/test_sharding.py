"""Sharding of gradient_stats over the seed axis: bit-identical results on 1, 2 and 8 (forced CPU)
devices, padding dropped from the statistics, and the seed layout's invariants."""

import os

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import eight_device_script
import pgjax
from pgjax._src.sweep import seed_layout



@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
  """The script's results, computed once per test session.

  Under pytest-xdist the controller starts the script when the session starts (``conftest.py``), so that it
  runs beside the workers' tests; a worker only waits for its file. Otherwise the first user runs it.
  """
  started = os.environ.get(eight_device_script.ENV)
  if started:
    return eight_device_script.wait(started)
  out = tmp_path_factory.getbasetemp() / "eight_devices"
  eight_device_script.start(out)
  return eight_device_script.wait(out)


@pytest.mark.parametrize("num_seeds, device_counts", [(777, (2, 8)), (5, (8,))])
def test_bit_identical_on_1_2_and_8_devices(eight_devices, num_seeds, device_counts):
  bits = eight_devices["bits"]
  for d in device_counts:
    assert bits[f"S={num_seeds} D={d}"] == bits[f"S={num_seeds} D=1"], d


def test_bit_identical_under_jit_vmap_and_actually_sharded(eight_devices):
  # Under an enclosing vmap every field but the jackknife SEs is bit-identical; those may differ in the last
  # bit (XLA fuses, hence FMA-contracts, the pooling differently; see gradient_stats' docstring).
  assert eight_devices["bits"]["vmap D=1"] == eight_devices["bits"]["vmap D=8"]
  np.testing.assert_allclose(eight_devices["vmap se D=1"], eight_devices["vmap se D=8"], rtol=1e-6)
  assert eight_devices["hlo_all_gather"]  # the 8-device program gathers per-device group moments


def test_map_seeds_bit_identical_and_equal_to_vmap(eight_devices):
  bits = eight_devices["bits"]
  assert bits["map_seeds D=1"] == bits["map_seeds D=8"]
  assert eight_devices["map_seeds_shapes"] == [[37, 4], [37, 20]]
  assert eight_devices["map_seeds_vs_vmap"] <= 1e-5


def test_map_seeds_default_chunk_is_bit_identical_on_1_and_4_devices(eight_devices):
  bits = eight_devices["bits"]
  assert bits["map_seeds default D=1"] == bits["map_seeds default D=4"]
  assert bits["map_seeds C=20 D=1"] != bits["map_seeds C=5 D=4"]  # the check can fail


@pytest.mark.parametrize("num_seeds", [777, 5])
def test_padding_is_dropped_from_the_statistics(eight_devices, num_seeds):
  c = eight_devices["checks"][f"S={num_seeds}"]
  assert c["num_seeds"] == num_seeds
  assert c["mean_err"] <= 1e-5 * max(1.0, c["mean_scale"])
  np.testing.assert_allclose(c["var"], c["var_ref"], rtol=1e-4)
  np.testing.assert_allclose(c["mse"], c["mse_ref"], rtol=1e-4)


@settings(max_examples=200, deadline=None)
@given(num_seeds=st.integers(2, 10 ** 7), chunk=st.integers(1, 4096), groups=st.integers(2, 64),
       devices=st.sampled_from([1, 2, 3, 4, 8, 16]))
def test_seed_layout_invariants(num_seeds, chunk, groups, devices):
  lay = seed_layout(num_seeds, chunk, groups, devices)
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
  # The layout (hence every bit of the result) does not depend on a device count up to 8 dividing the
  # groups.
  if min(groups, num_seeds) % devices == 0 and devices <= 8:
    assert lay == seed_layout(num_seeds, chunk, groups, 1)


def test_bad_devices_raise():
  problem = pgjax.problems.gaussian_quadratic()
  est = pgjax.score_function(problem.f, problem.dist_fn, num_samples=2)
  for bad in ([], ["cpu:0"]):
    with pytest.raises(TypeError, match="devices"):
      pgjax.sweep.gradient_stats(est, problem.params, jax.random.key(0), num_seeds=4, devices=bad)


def test_shifted_sums_survive_a_large_mean(eight_devices):
  r"""g = offset + 0.01 z (z ~ N(0, I_3)): tr Cov = 3e-4 whatever the offset, in float32."""
  (near, near_se), (far, _) = eight_devices["shifted"]["near"], eight_devices["shifted"]["far"]
  assert abs(near - 3e-4) <= 5 * near_se
  np.testing.assert_allclose(far, near, rtol=1e-4)
