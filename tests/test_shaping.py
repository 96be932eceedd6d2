"""Tests of pgjax.shaping against hand-computed arrays and the NaN policy (NaN ranks last, counted)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax import shaping

NAN, INF = float("nan"), float("inf")
# jitted once per shape (op-by-op dispatch compiles every primitive separately, which is slow)
centered_ranks = jax.jit(shaping.centered_ranks)
nes_utilities = jax.jit(shaping.nes_utilities)
zscore = jax.jit(shaping.zscore)
elite_indices = jax.jit(shaping.elite_indices, static_argnums=1)


def test_centered_ranks_hand_computed():
  np.testing.assert_allclose(centered_ranks(jnp.array([3.0, -1.0, 10.0, 0.0, 5.0])),
                             [0.0, -0.5, 0.5, -0.25, 0.25])
  # ties share their average rank exactly; all-equal values and N = 1 give zeros
  np.testing.assert_allclose(centered_ranks(jnp.array([1.0, 2.0, 2.0, 4.0])), [-0.5, 0.0, 0.0, 0.5], rtol=1e-6)
  assert float(centered_ranks(jnp.array([1.0, 2.0, 2.0, 4.0]))[1]) == 0.0
  np.testing.assert_array_equal(centered_ranks(jnp.full((4,), 7.0)), np.zeros(4))
  np.testing.assert_array_equal(centered_ranks(jnp.array([3.0])), [0.0])


def test_nes_utilities_match_the_paper_formula():
  # Wierstra et al. (2014), Section 3.1: u_k = max(0, log(N/2+1) - log k) / sum_j (...) - 1/N, k = 1 best.
  x = np.array([3.0, -1.0, 10.0, 0.0, 5.0])
  n = x.size
  raw = np.maximum(0.0, np.log(n / 2 + 1) - np.log(np.arange(1, n + 1)))
  util_by_rank = raw / raw.sum() - 1 / n
  rank = np.argsort(np.argsort(-x)) + 1  # 1 = best
  want = util_by_rank[rank - 1]
  got = nes_utilities(jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(float(jnp.sum(got)), 0.0, atol=1e-6)
  # ties share the average of their utilities
  tied = nes_utilities(jnp.array([1.0, 2.0, 2.0, 4.0]))
  raw4 = np.maximum(0.0, np.log(3.0) - np.log(np.arange(1, 5)))
  u4 = raw4 / raw4.sum() - 0.25
  np.testing.assert_allclose(tied, [u4[3], (u4[1] + u4[2]) / 2, (u4[1] + u4[2]) / 2, u4[0]], rtol=1e-6)


def test_zscore_hand_computed_and_nan_propagates():
  np.testing.assert_allclose(zscore(jnp.array([1.0, 3.0])), [-1.0, 1.0])
  np.testing.assert_array_equal(zscore(jnp.full((3,), 2.0)), np.zeros(3))
  # values used as numbers: a NaN makes the whole row NaN (never a silent zero)
  assert np.all(np.isnan(zscore(jnp.array([1.0, NAN, 3.0]))))


def test_nan_ranks_last_below_minus_infinity_and_is_counted():
  x = jnp.array([NAN, 2.0, -INF, NAN, INF])
  # ascending order: NaN, NaN (tied: positions 0, 1), -inf (2), 2.0 (3), +inf (4); ranks / (N-1) - 1/2
  np.testing.assert_allclose(centered_ranks(x), [-0.375, 0.25, 0.0, -0.375, 0.5], rtol=1e-6)
  np.testing.assert_array_equal(elite_indices(x, 4), [4, 1, 2, 0])
  assert int(shaping.num_nonfinite(x)) == 4
  u = nes_utilities(x)
  assert np.all(np.isfinite(u))
  assert float(u[0]) == float(u[3]) == float(jnp.min(u))  # the NaNs get the worst utility
  # power control: treating NaN as a number (the naive sort) would put it on top
  assert int(jnp.argmax(jnp.sort(jnp.array([NAN, 1.0])))) == 1


def test_last_axis_batches_rows_independently():
  x = jnp.array([[1.0, 2.0, 3.0], [3.0, NAN, 1.0]])
  np.testing.assert_allclose(centered_ranks(x), [[-0.5, 0.0, 0.5], [0.5, -0.5, 0.0]], rtol=1e-6)
  np.testing.assert_array_equal(elite_indices(x, 2), [[2, 1], [0, 2]])
  np.testing.assert_array_equal(shaping.num_nonfinite(x), [0, 1])
  z = zscore(x)
  np.testing.assert_allclose(z[0], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)], rtol=1e-6)
  assert np.all(np.isnan(z[1]))
  # under jit and vmap the rows give the same
  np.testing.assert_allclose(jax.jit(jax.vmap(shaping.centered_ranks))(x), centered_ranks(x), rtol=1e-6)


def test_ranks_are_invariant_to_increasing_transforms():
  x = jnp.array([0.3, -2.0, 1.5, 0.0, 0.7, 4.0])
  for fn in (shaping.centered_ranks, shaping.nes_utilities):
    np.testing.assert_allclose(fn(x), fn(jnp.exp(3.0 * x)), rtol=1e-6, atol=1e-7)
  # power control: z-scores are not
  assert not np.allclose(zscore(x), zscore(jnp.exp(3.0 * x)), rtol=1e-3)


def test_masked_members_are_left_out_exactly():
  # where=mask gives, on the active members, exactly the shaping of the active values alone; 0 elsewhere.
  x = jnp.array([0.3, NAN, -2.0, 1.5, 0.0, 0.7, 4.0, 0.3])
  mask = jnp.array([True, True, False, True, True, False, True, True])
  active = np.asarray(mask)
  fns = (shaping.centered_ranks, shaping.nes_utilities, shaping.zscore)
  masked, alone = jax.jit(lambda v, m, va: ([fn(v, m) for fn in fns], [fn(va) for fn in fns]))(
      x, mask, x[active])
  for fn, got, want in zip(fns, masked, alone):
    np.testing.assert_allclose(np.asarray(got)[active], want, rtol=1e-6, atol=1e-7, err_msg=fn.__name__)
    np.testing.assert_array_equal(np.asarray(got)[~active], 0.0)
  # the mask may be traced (a number of active members decided at run time): one compilation for all
  ranks = jax.jit(lambda v, k: shaping.centered_ranks(v, jnp.arange(8) < k))
  np.testing.assert_allclose(ranks(x, 3)[:3], centered_ranks(x[:3]), rtol=1e-6)
  np.testing.assert_allclose(ranks(x, 6)[:6], centered_ranks(x[:6]), rtol=1e-6)
  # elite: inactive members rank below NaN; the count of non-finite values ignores them
  np.testing.assert_array_equal(elite_indices(jnp.array([5.0, NAN, 9.0, 1.0]), 3),  [2, 0, 3])
  np.testing.assert_array_equal(shaping.elite_indices(jnp.array([5.0, NAN, 9.0, 1.0]), 3,
                                                      jnp.array([True, True, False, True])), [0, 3, 1])
  assert int(shaping.num_nonfinite(x, mask)) == 1 and int(shaping.num_nonfinite(x, ~mask)) == 0
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
