"""Tests of pgjax.shaping against hand-computed arrays and the NaN policy (NaN ranks last, counted)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax import shaping

NAN, INF = float("nan"), float("inf")
# jitted (op-by-op dispatch compiles every primitive separately, which is slow)
elite_indices = jax.jit(shaping.elite_indices, static_argnums=1)


@functools.partial(jax.jit, static_argnums=0)
def _each_jit(fn, *xs):
  return [fn(x) for x in xs]


def _each(fn, *xs):
  """``[fn(x) for x in xs]`` in one program (one compilation instead of one per shape), as numpy arrays."""
  return [np.asarray(v) for v in _each_jit(fn, *xs)]


def _f32(*values):
  return np.array(values, np.float32)


def test_centered_ranks_hand_computed():
  five, tied, equal, one = _each(shaping.centered_ranks, _f32(3.0, -1.0, 10.0, 0.0, 5.0), _f32(1.0, 2.0, 2.0, 4.0),
                                 np.full((4,), 7.0, np.float32), _f32(3.0))
  np.testing.assert_allclose(five, [0.0, -0.5, 0.5, -0.25, 0.25])
  # ties share their average rank exactly; all-equal values and N = 1 give zeros
  np.testing.assert_allclose(tied, [-0.5, 0.0, 0.0, 0.5], rtol=1e-6)
  assert float(tied[1]) == 0.0
  np.testing.assert_array_equal(equal, np.zeros(4))
  np.testing.assert_array_equal(one, [0.0])


def test_nes_utilities_match_the_paper_formula():
  # Wierstra et al. (2014), Section 3.1: u_k = max(0, log(N/2+1) - log k) / sum_j (...) - 1/N, k = 1 best.
  x = np.array([3.0, -1.0, 10.0, 0.0, 5.0])
  n = x.size
  raw = np.maximum(0.0, np.log(n / 2 + 1) - np.log(np.arange(1, n + 1)))
  util_by_rank = raw / raw.sum() - 1 / n
  rank = np.argsort(np.argsort(-x)) + 1  # 1 = best
  want = util_by_rank[rank - 1]
  got, tied = _each(shaping.nes_utilities, x.astype(np.float32), _f32(1.0, 2.0, 2.0, 4.0))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(float(np.sum(got)), 0.0, atol=1e-6)
  # ties share the average of their utilities
  raw4 = np.maximum(0.0, np.log(3.0) - np.log(np.arange(1, 5)))
  u4 = raw4 / raw4.sum() - 0.25
  np.testing.assert_allclose(tied, [u4[3], (u4[1] + u4[2]) / 2, (u4[1] + u4[2]) / 2, u4[0]], rtol=1e-6)


def test_zscore_hand_computed_and_nan_propagates():
  two, equal, with_nan = _each(shaping.zscore, _f32(1.0, 3.0), np.full((3,), 2.0, np.float32), _f32(1.0, NAN, 3.0))
  np.testing.assert_allclose(two, [-1.0, 1.0])
  np.testing.assert_array_equal(equal, np.zeros(3))
  # values used as numbers: a NaN makes the whole row NaN (never a silent zero)
  assert np.all(np.isnan(with_nan))


def test_nan_ranks_last_below_minus_infinity_and_is_counted():
  x = _f32(NAN, 2.0, -INF, NAN, INF)
  ranks, elite, count, u, naive = jax.jit(lambda x, pair: (
      shaping.centered_ranks(x), shaping.elite_indices(x, 4), shaping.num_nonfinite(x), shaping.nes_utilities(x),
      jnp.argmax(jnp.sort(pair))))(x, _f32(NAN, 1.0))
  # ascending order: NaN, NaN (tied: positions 0, 1), -inf (2), 2.0 (3), +inf (4); ranks / (N-1) - 1/2
  np.testing.assert_allclose(ranks, [-0.375, 0.25, 0.0, -0.375, 0.5], rtol=1e-6)
  np.testing.assert_array_equal(elite, [4, 1, 2, 0])
  assert int(count) == 4
  u = np.asarray(u)
  assert np.all(np.isfinite(u))
  assert float(u[0]) == float(u[3]) == float(np.min(u))  # the NaNs get the worst utility
  # power control: treating NaN as a number (the naive sort) would put it on top
  assert int(naive) == 1


def test_last_axis_batches_rows_independently():
  x = np.array([[1.0, 2.0, 3.0], [3.0, NAN, 1.0]], np.float32)
  ranks, elite, count, z, vmapped = jax.jit(lambda x: (
      shaping.centered_ranks(x), shaping.elite_indices(x, 2), shaping.num_nonfinite(x), shaping.zscore(x),
      jax.vmap(shaping.centered_ranks)(x)))(x)
  np.testing.assert_allclose(ranks, [[-0.5, 0.0, 0.5], [0.5, -0.5, 0.0]], rtol=1e-6)
  np.testing.assert_array_equal(elite, [[2, 1], [0, 2]])
  np.testing.assert_array_equal(count, [0, 1])
  z = np.asarray(z)
  np.testing.assert_allclose(z[0], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)], rtol=1e-6)
  assert np.all(np.isnan(z[1]))
  # under jit and vmap the rows give the same
  np.testing.assert_allclose(vmapped, ranks, rtol=1e-6)


def test_ranks_are_invariant_to_increasing_transforms():
  fns = (shaping.centered_ranks, shaping.nes_utilities, shaping.zscore)
  out = jax.jit(lambda x: [(fn(x), fn(jnp.exp(3.0 * x))) for fn in fns])(_f32(0.3, -2.0, 1.5, 0.0, 0.7, 4.0))
  for plain, transformed in out[:2]:
    np.testing.assert_allclose(plain, transformed, rtol=1e-6, atol=1e-7)
  # power control: z-scores are not
  assert not np.allclose(*out[2], rtol=1e-3)


def test_masked_members_are_left_out_exactly():
  # where=mask gives, on the active members, exactly the shaping of the active values alone; 0 elsewhere.
  x = _f32(0.3, NAN, -2.0, 1.5, 0.0, 0.7, 4.0, 0.3)
  mask = np.array([True, True, False, True, True, False, True, True])
  active = mask
  fns = (shaping.centered_ranks, shaping.nes_utilities, shaping.zscore)
  masked, alone = jax.jit(lambda v, m, va: ([fn(v, m) for fn in fns], [fn(va) for fn in fns]))(
      x, mask, x[active])
  for fn, got, want in zip(fns, masked, alone):
    np.testing.assert_allclose(np.asarray(got)[active], want, rtol=1e-6, atol=1e-7, err_msg=fn.__name__)
    np.testing.assert_array_equal(np.asarray(got)[~active], 0.0)
  # the mask may be traced (a number of active members decided at run time): one compilation for all
  ranks = jax.jit(lambda v, k: shaping.centered_ranks(v, jnp.arange(8) < k))
  first3, first6 = _each(shaping.centered_ranks, x[:3], x[:6])
  np.testing.assert_allclose(np.asarray(ranks(x, 3))[:3], first3, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(ranks(x, 6))[:6], first6, rtol=1e-6)
  # elite: inactive members rank below NaN; the count of non-finite values ignores them
  elite, elite_masked, count, count_inactive = jax.jit(lambda v, m, x, mask: (
      shaping.elite_indices(v, 3), shaping.elite_indices(v, 3, m), shaping.num_nonfinite(x, mask),
      shaping.num_nonfinite(x, ~mask)))(_f32(5.0, NAN, 9.0, 1.0), np.array([True, True, False, True]), x, mask)
  np.testing.assert_array_equal(elite, [2, 0, 3])
  np.testing.assert_array_equal(elite_masked, [0, 3, 1])
  assert int(count) == 1 and int(count_inactive) == 0
  with pytest.raises(TypeError, match="where"):
    shaping.centered_ranks(x, jnp.ones(8))


def test_elite_ties_break_by_index():
  np.testing.assert_array_equal(elite_indices(jnp.array([1.0, 5.0, 5.0, 0.0, 5.0]), 3), [1, 2, 4])


def test_get_shaping_and_bad_input():
  assert shaping.get_shaping(None) is None
  assert shaping.get_shaping("centered_ranks") is shaping.centered_ranks
  custom = lambda v: v - jnp.median(v)
  assert shaping.get_shaping(custom) is custom
  assert shaping.changes_estimand("zscore") and not shaping.changes_estimand(None)
  with pytest.raises(ValueError, match="shaping"):
    shaping.get_shaping("ranks")
  with pytest.raises(TypeError, match="shaping"):
    shaping.get_shaping(3)
  with pytest.raises(ValueError, match="num_elite"):
    shaping.elite_indices(jnp.zeros(3), 4)
  with pytest.raises(ValueError, match="x"):
    shaping.centered_ranks(jnp.asarray(1.0))


def test_old_import_paths_still_work():
  from pgjax._src import zeroth_order as zo
  assert zo.centered_ranks is shaping.centered_ranks and zo.zscore is shaping.zscore
  assert pgjax.shaping is shaping
