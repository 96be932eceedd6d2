"""Baselines against hand-computed arrays, plus their edge cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax import baselines

R = jnp.array([1.0, 2.0, 4.0, 7.0])
SQ = jnp.array([1.0, 0.0, 2.0, 1.0])


def test_none_constant_mean():
  np.testing.assert_array_equal(baselines.none(R), [0, 0, 0, 0])
  np.testing.assert_array_equal(baselines.constant(R, 2.5), [2.5] * 4)
  np.testing.assert_allclose(baselines.batch_mean(R), [3.5] * 4)


def test_leave_one_out_hand_computed():
  # (14 - r_i) / 3
  np.testing.assert_allclose(baselines.leave_one_out(R), [13 / 3, 12 / 3, 10 / 3, 7 / 3], rtol=1e-6)


def test_optimal_hand_computed():
  # sum f s^2 / sum s^2 = (1 + 0 + 8 + 7) / 4 = 4
  np.testing.assert_allclose(baselines.optimal(R, SQ), [4.0] * 4, rtol=1e-6)
  # leave-one-out: (16 - f_i s_i^2) / (4 - s_i^2)
  want = [(16 - 1) / 3, 16 / 4, (16 - 8) / 2, (16 - 7) / 3]
  np.testing.assert_allclose(baselines.optimal_leave_one_out(R, SQ), want, rtol=1e-6)


def test_optimal_zero_scores_falls_back_to_mean():
  np.testing.assert_allclose(baselines.optimal(R, jnp.zeros(4)), [3.5] * 4)
  np.testing.assert_allclose(baselines.optimal_leave_one_out(R, jnp.zeros(4)), baselines.leave_one_out(R),
                             rtol=1e-6)


def test_optimal_per_coordinate_hand_computed():
  sq = jnp.stack([SQ, jnp.ones(4)], axis=1)  # column 2: plain mean
  b = baselines.optimal_per_coordinate(R, sq)
  np.testing.assert_allclose(b, np.tile([4.0, 3.5], (4, 1)), rtol=1e-6)
  b_loo = baselines.optimal_per_coordinate_leave_one_out(R, sq)
  want0 = [(16 - 1) / 3, 16 / 4, (16 - 8) / 2, (16 - 7) / 3]
  np.testing.assert_allclose(b_loo[:, 0], want0, rtol=1e-6)
  np.testing.assert_allclose(b_loo[:, 1], baselines.leave_one_out(R), rtol=1e-6)


def test_ema_sequence_hand_computed():
  state = baselines.ema_init()
  b1, state = baselines.ema_update(state, jnp.array([2.0, 4.0]), decay=0.5)
  np.testing.assert_allclose(b1, [0.0, 0.0])            # nothing seen yet
  b2, state = baselines.ema_update(state, jnp.array([6.0, 6.0]), decay=0.5)
  np.testing.assert_allclose(b2, [3.0, 3.0])            # debiased: 0.5*3 / (1 - 0.5)
  b3, _ = baselines.ema_update(state, jnp.array([0.0]), decay=0.5)
  # m2 = 0.5*1.5 + 0.5*6 = 3.75; debias 1 - 0.25 = 0.75 -> 5
  np.testing.assert_allclose(b3, [5.0], rtol=1e-6)
  b_raw, _ = baselines.ema_update(state, jnp.array([0.0]), decay=0.5, debias=False)
  np.testing.assert_allclose(b_raw, [3.75], rtol=1e-6)


def test_ema_is_jittable_and_scannable():
  def step(state, r):
    b, state = baselines.ema_update(state, r, decay=0.9)
    return state, b[0]
  _, bs = jax.jit(lambda rs: jax.lax.scan(step, baselines.ema_init(), rs))(jnp.ones((20, 3)))
  np.testing.assert_allclose(bs[1:], 1.0, rtol=1e-6)    # debiased EMA of a constant is the constant


def test_group_normalize():
  r = jnp.array([[1.0, 3.0], [5.0, 5.0]])
  adv = baselines.group_normalize(r)
  np.testing.assert_allclose(adv, [[-1.0, 1.0], [0.0, 0.0]], atol=1e-6)  # zero-variance group -> 0
  tiny = baselines.group_normalize(jnp.array([1.0, 1.0 + 1e-9, 1.0]))
  assert np.all(np.isfinite(tiny)) and np.max(np.abs(tiny)) == 0.0
  np.testing.assert_allclose(baselines.group_normalize(jnp.array([0.0, 2.0]), ddof=1),
                             [-1 / np.sqrt(2), 1 / np.sqrt(2)], rtol=1e-6)


@pytest.mark.parametrize("fn, args, match", [
    (baselines.leave_one_out, (jnp.array([1.0]),), "at least 2 samples"),
    (baselines.optimal_leave_one_out, (jnp.array([1.0]), jnp.array([1.0])), "at least 2 samples"),
    (baselines.batch_mean, (jnp.ones((2, 2)),), "rewards"),
    (baselines.optimal, (R, jnp.ones(3)), "sq_norms"),
    (baselines.optimal_per_coordinate, (R, jnp.ones(4)), "sq_scores"),
    (baselines.group_normalize, (jnp.ones(1),), None),
])
def test_bad_input(fn, args, match):
  if match is None:
    np.testing.assert_array_equal(fn(*args), [0.0])  # a group of one has zero variance: advantage 0
    with pytest.raises(ValueError, match="ddof"):
      baselines.group_normalize(jnp.ones(1), ddof=1)
  else:
    with pytest.raises(ValueError, match=match):
      fn(*args)


def test_ema_with_nonzero_initial_value():
  state = baselines.ema_init(5.0)
  outs = []
  for _ in range(3):
    b, state = baselines.ema_update(state, jnp.full((4,), 5.0), decay=0.9)
    outs.append(float(b[0]))
  np.testing.assert_allclose(outs, [5.0, 5.0, 5.0], rtol=1e-6)
  # Debiasing removes the initial value's weight: after one batch of 1.0 the baseline is exactly 1.0.
  state = baselines.ema_init(5.0)
  _, state = baselines.ema_update(state, jnp.ones(2), decay=0.9)
  b, _ = baselines.ema_update(state, jnp.ones(2), decay=0.9)
  np.testing.assert_allclose(b, [1.0, 1.0], rtol=1e-4)  # float32 cancellation in m_t - decay^t m_0
  with pytest.raises(ValueError, match="decay"):
    baselines.ema_update(state, jnp.ones(2), decay=1.0)


def test_leave_one_out_optimal_ignores_own_sample():
  """b_i must not depend on x_i at all: changing sample i's score norm leaves b_i unchanged."""
  r = jnp.array([1.0, 10.0, 20.0])
  for s0 in [1.0, 1e5, 1e7]:
    b = baselines.optimal_leave_one_out(r, jnp.array([s0, 1.0, 3.0]))
    np.testing.assert_allclose(b[0], (10.0 * 1 + 20.0 * 3) / 4, rtol=1e-6)
    bk = baselines.optimal_per_coordinate_leave_one_out(r, jnp.array([[s0], [1.0], [3.0]]))
    np.testing.assert_allclose(bk[0, 0], (10.0 * 1 + 20.0 * 3) / 4, rtol=1e-6)
