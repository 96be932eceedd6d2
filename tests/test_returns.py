"""pgjax.returns against hand-computed arrays with episode boundaries."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax import returns

R = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])
D = jnp.array([False, True, False, False, False])  # episode 0 = steps 0,1; episode 1 = steps 2..4 (cut)
V = jnp.array([0.5, 1.0, 2.0, 1.0, 0.0])


def test_discounted_returns_hand_computed():
  # G4 = 5, G3 = 4 + .5*5, G2 = 3 + .5*6.5, G1 = 2 (done), G0 = 1 + .5*2
  np.testing.assert_allclose(returns.discounted_returns(R, D, discount=0.5),
                             [2.0, 2.0, 6.25, 6.5, 5.0])
  # bootstrap 10 enters only the cut episode
  np.testing.assert_allclose(returns.discounted_returns(R, D, discount=0.5, bootstrap_value=10.0),
                             [2.0, 2.0, 7.5, 9.0, 10.0])
  np.testing.assert_allclose(returns.reward_to_go(R, D), [3.0, 2.0, 12.0, 9.0, 5.0])


def test_done_at_last_step_ignores_bootstrap():
  d = D.at[-1].set(True)
  np.testing.assert_allclose(returns.discounted_returns(R, d, discount=0.5, bootstrap_value=10.0),
                             [2.0, 2.0, 6.25, 6.5, 5.0])


def test_per_step_discount_array():
  gam = jnp.array([0.5, 0.5, 0.0, 1.0, 1.0])  # zero discount at t=2 cuts the return there
  np.testing.assert_allclose(returns.discounted_returns(R, D, discount=gam), [2.0, 2.0, 3.0, 9.0, 5.0])


def test_episode_bookkeeping_hand_computed():
  np.testing.assert_allclose(returns.episode_returns(R, D, discount=0.5), [2.0, 2.0, 6.25, 6.25, 6.25])
  np.testing.assert_allclose(returns.episode_returns(R, D), [3.0, 3.0, 12.0, 12.0, 12.0])
  np.testing.assert_array_equal(returns.episode_time(D), [0, 1, 0, 1, 2])
  np.testing.assert_allclose(returns.episode_discounts(D, discount=0.5), [1.0, 0.5, 1.0, 0.5, 0.25])
  np.testing.assert_array_equal(returns.first_episode_mask(D), [True, True, False, False, False])
  np.testing.assert_array_equal(returns.first_episode_mask(jnp.zeros(3, bool)), [True] * 3)


def test_gae_hand_computed():
  # deltas = [1, 1, 1.5, 3, 7]; A = delta + .25 * (1 - d) * A_next
  adv = returns.gae(R, V, D, discount=0.5, lambda_=0.5, bootstrap_value=4.0)
  np.testing.assert_allclose(adv, [1.25, 1.0, 2.6875, 4.75, 7.0])
  # lambda = 0: one-step TD errors
  np.testing.assert_allclose(returns.gae(R, V, D, discount=0.5, lambda_=0.0, bootstrap_value=4.0),
                             [1.0, 1.0, 1.5, 3.0, 7.0])


def test_gae_lambda_one_is_return_minus_value():
  adv = returns.gae(R, V, D, discount=0.5, lambda_=1.0, bootstrap_value=4.0)
  np.testing.assert_allclose(adv, [1.5, 1.0, 4.75, 6.5, 7.0])  # [2, 2, 6.75, 7.5, 7] - V


def test_batch_dims_jit_vmap_and_traces():
  r2 = jnp.stack([R, R[::-1]], axis=1)
  d2 = jnp.stack([D, jnp.zeros(5, bool)], axis=1)
  out = returns.discounted_returns(r2, d2, discount=0.5)
  np.testing.assert_allclose(out[:, 0], [2.0, 2.0, 6.25, 6.5, 5.0])
  # reversed rewards [5,4,3,2,1], no done: G4 = 1, G3 = 2.5, G2 = 4.25, G1 = 6.125, G0 = 8.0625
  np.testing.assert_allclose(out[:, 1], [8.0625, 6.125, 4.25, 2.5, 1.0])

  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(r, d, gamma, lam):
    return returns.gae(r, jnp.zeros_like(r), d, discount=gamma, lambda_=lam)

  vm = jax.vmap(f, in_axes=(1, 1, None, None), out_axes=1)
  np.testing.assert_allclose(vm(r2, d2, 0.5, 1.0), out, rtol=1e-6)
  np.testing.assert_allclose(vm(r2, d2, 0.5, 1.0), out, rtol=1e-6)  # no retrace
  # discount traced and vmapped over (a sweep)
  sweep = jax.vmap(lambda g: returns.discounted_returns(R, D, discount=g))(jnp.array([0.5, 1.0]))
  np.testing.assert_allclose(sweep[1], [3.0, 2.0, 12.0, 9.0, 5.0])


def test_gradient_through_returns():
  g = jax.grad(lambda r: returns.discounted_returns(r, D, discount=0.5)[0])(R)
  np.testing.assert_allclose(g, [1.0, 0.5, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_discount_and_lambda(bad):
  with pytest.raises(ValueError, match="discount"):
    returns.discounted_returns(R, D, discount=bad)
  with pytest.raises(ValueError, match="lambda_"):
    returns.gae(R, V, D, discount=0.9, lambda_=bad)


def test_bad_shapes():
  with pytest.raises(ValueError, match="dones"):
    returns.reward_to_go(R, D[:4])
  with pytest.raises(ValueError, match="rewards"):
    returns.reward_to_go(jnp.array(1.0), jnp.array(True))
  with pytest.raises(ValueError, match="T >= 1"):
    returns.reward_to_go(jnp.zeros((0,)), jnp.zeros((0,), bool))
  with pytest.raises(ValueError, match="values"):
    returns.gae(R, V[:3], D, discount=0.9, lambda_=0.9)
  with pytest.raises(ValueError, match="bootstrap_value"):
    returns.discounted_returns(R, D, discount=0.9, bootstrap_value=jnp.zeros(2))
  with pytest.raises(ValueError, match="discount"):
    returns.discounted_returns(R, D, discount=jnp.full((3,), 0.5))
