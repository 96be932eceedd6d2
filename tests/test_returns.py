"""pgjax.returns against hand-computed arrays with episode boundaries."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax import returns
from tests.helpers import device_array, jit_numpy


R_NP = np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32)
D_NP = np.array([False, True, False, False, False])  # episode 0 = steps 0,1; episode 1 = steps 2..4 (cut)
V_NP = np.array([0.5, 1.0, 2.0, 1.0, 0.0], np.float32)
R, D, V = device_array(R_NP), device_array(D_NP, bool), device_array(V_NP)


def test_discounted_returns_hand_computed():
  g, g_boot, rtg = jit_numpy(lambda r, d: (returns.discounted_returns(r, d, discount=0.5),
                                      returns.discounted_returns(r, d, discount=0.5, bootstrap_value=10.0),
                                      returns.reward_to_go(r, d)), R, D)
  # G4 = 5, G3 = 4 + .5*5, G2 = 3 + .5*6.5, G1 = 2 (done), G0 = 1 + .5*2
  np.testing.assert_allclose(g, [2.0, 2.0, 6.25, 6.5, 5.0])
  # bootstrap 10 enters only the cut episode
  np.testing.assert_allclose(g_boot, [2.0, 2.0, 7.5, 9.0, 10.0])
  np.testing.assert_allclose(rtg, [3.0, 2.0, 12.0, 9.0, 5.0])


def test_done_at_last_step_ignores_bootstrap():
  d = D_NP.copy()
  d[-1] = True
  np.testing.assert_allclose(jit_numpy(lambda r, d: returns.discounted_returns(r, d, discount=0.5, bootstrap_value=10.0),
                                  R, device_array(d, bool)),
                             [2.0, 2.0, 6.25, 6.5, 5.0])


def test_per_step_discount_array():
  gam = device_array([0.5, 0.5, 0.0, 1.0, 1.0])  # zero discount at t=2 cuts the return there
  np.testing.assert_allclose(jit_numpy(lambda r, d, gam: returns.discounted_returns(r, d, discount=gam), R, D, gam),
                             [2.0, 2.0, 3.0, 9.0, 5.0])


def test_episode_bookkeeping_hand_computed():
  ret_discounted, ret, time, discounts, first, first_no_done = jit_numpy(lambda r, d, no_done: (
      returns.episode_returns(r, d, discount=0.5), returns.episode_returns(r, d), returns.episode_time(d),
      returns.episode_discounts(d, discount=0.5), returns.first_episode_mask(d),
      returns.first_episode_mask(no_done)), R, D, device_array(np.zeros(3), bool))
  np.testing.assert_allclose(ret_discounted, [2.0, 2.0, 6.25, 6.25, 6.25])
  np.testing.assert_allclose(ret, [3.0, 3.0, 12.0, 12.0, 12.0])
  np.testing.assert_array_equal(time, [0, 1, 0, 1, 2])
  np.testing.assert_allclose(discounts, [1.0, 0.5, 1.0, 0.5, 0.25])
  np.testing.assert_array_equal(first, [True, True, False, False, False])
  np.testing.assert_array_equal(first_no_done, [True] * 3)


def test_gae_hand_computed():
  adv, adv0 = jit_numpy(lambda r, v, d: (returns.gae(r, v, d, discount=0.5, lambda_=0.5, bootstrap_value=4.0),
                                    returns.gae(r, v, d, discount=0.5, lambda_=0.0, bootstrap_value=4.0)), R, V, D)
  # deltas = [1, 1, 1.5, 3, 7]; A = delta + .25 * (1 - d) * A_next
  np.testing.assert_allclose(adv, [1.25, 1.0, 2.6875, 4.75, 7.0])
  # lambda = 0: one-step TD errors
  np.testing.assert_allclose(adv0, [1.0, 1.0, 1.5, 3.0, 7.0])


def test_gae_lambda_one_is_return_minus_value():
  adv = jit_numpy(lambda r, v, d: returns.gae(r, v, d, discount=0.5, lambda_=1.0, bootstrap_value=4.0), R, V, D)
  np.testing.assert_allclose(adv, [1.5, 1.0, 4.75, 6.5, 7.0])  # [2, 2, 6.75, 7.5, 7] - V


def test_batch_dims_jit_vmap_and_traces():
  r2 = device_array(np.stack([R_NP, R_NP[::-1]], axis=1))
  d2 = device_array(np.stack([D_NP, np.zeros(5, bool)], axis=1), bool)
  # The batched returns and a sweep over a traced, vmapped discount, in one compiled program.
  out, sweep = jit_numpy(lambda r2, d2, r, d, gammas: (
      returns.discounted_returns(r2, d2, discount=0.5),
      jax.vmap(lambda g: returns.discounted_returns(r, d, discount=g))(gammas)), r2, d2, R, D, device_array([0.5, 1.0]))
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
  np.testing.assert_allclose(sweep[1], [3.0, 2.0, 12.0, 9.0, 5.0])


def test_gradient_through_returns():
  g = jit_numpy(lambda r, d: jax.grad(lambda r: returns.discounted_returns(r, d, discount=0.5)[0])(r), R, D)
  np.testing.assert_allclose(g, [1.0, 0.5, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_discount_and_lambda(bad):
  with pytest.raises(ValueError, match="discount"):
    returns.discounted_returns(R, D, discount=bad)
  with pytest.raises(ValueError, match="lambda_"):
    returns.gae(R, V, D, discount=0.9, lambda_=bad)


def test_bad_shapes():
  with pytest.raises(ValueError, match="dones"):
    returns.reward_to_go(R, device_array(D_NP[:4], bool))
  with pytest.raises(ValueError, match="rewards"):
    returns.reward_to_go(device_array(1.0), device_array(True, bool))
  with pytest.raises(ValueError, match="T >= 1"):
    returns.reward_to_go(device_array(np.zeros((0,))), device_array(np.zeros((0,)), bool))
  with pytest.raises(ValueError, match="values"):
    returns.gae(R, device_array(V_NP[:3]), D, discount=0.9, lambda_=0.9)
  with pytest.raises(ValueError, match="bootstrap_value"):
    returns.discounted_returns(R, D, discount=0.9, bootstrap_value=device_array(np.zeros(2)))
  with pytest.raises(ValueError, match="discount"):
    returns.discounted_returns(R, D, discount=device_array(np.full((3,), 0.5)))


# --------------------------------------------------------------------------------------------------
# Multistep returns against rlax's published test values (rlax/_src/multistep_test.py, vtrace_test.py).
#
# Conversion of conventions (rlax -> pgjax), used by every test below:
#   * rlax is batch-major [B, T]; pgjax is time-major [T, B]: transpose.
#   * rlax encodes an episode end as discount_t = 0; pgjax takes an explicit done mask. We pass
#     dones = (discount_t == 0) and replace those zero discounts by an arbitrary 0.5, so the test
#     fails unless the done mask itself stops the bootstrap.
#   * rlax's v_t are the values of the NEXT states V(s_{t+1}); rlax's `values` / v_tm1 are V(s_t).
#     pgjax takes values[t] = V(s_t) and bootstrap_value = V(s_T). For lambda_returns and n-step
#     returns (which use only next-state values) values[0] is unused; we set it to 99 to show it.
#   * rlax's lambda_[t] and pgjax's lambda_[t] carry the same index (step t's mixing of V(s_{t+1})).
# --------------------------------------------------------------------------------------------------

RLAX_R = np.array([[1.0, 0.0, -1.0, 0.0, 1.0], [0.5, 0.8, -0.7, 0.0, 2.1]])
RLAX_DISCOUNT = np.array([[0.5, 0.9, 1.0, 0.5, 0.8], [0.9, 0.5, 0.3, 0.8, 0.7]])
RLAX_V_NEXT = np.array([[3.0, 1.0, 5.0, -5.0, 3.0], [-1.7, 1.2, 2.3, 2.2, 2.7]])


def _from_rlax(r_t, discount_t, v_next=None, v_tm1=None, bootstrap=None):
  """rlax arrays -> (rewards, values, dones, discount, bootstrap_value) in pgjax's conventions."""
  dones = (discount_t == 0).T
  discount = np.where(discount_t == 0, 0.5, discount_t).T
  if v_next is not None:  # next-state values only: values[1:] = v_next[:, :-1], bootstrap = v_next[:, -1]
    values = np.concatenate([np.full((1, r_t.shape[0]), 99.0), v_next[:, :-1].T], axis=0)
    bootstrap = v_next[:, -1]
  else:
    values = v_tm1.T
  return r_t.T, values, dones, discount, bootstrap


def test_lambda_returns_rlax_published_values():
  rewards, values, dones, discount, boot = _from_rlax(RLAX_R, RLAX_DISCOUNT, v_next=RLAX_V_NEXT)
  expected = np.array([[1.6460547, 0.72281253, 0.7375001, 0.6500001, 3.4],
                       [0.7866317, 0.9913063, 0.1101501, 2.834, 3.99]])
  out, out_mc, discounted = jit_numpy(lambda *a: (
      returns.lambda_returns(*a[:3], discount=a[3], lambda_=0.75, bootstrap_value=a[4]),
      returns.lambda_returns(*a[:3], discount=a[3], lambda_=1.0, bootstrap_value=a[4]),
      returns.discounted_returns(a[0], a[2], discount=a[3], bootstrap_value=a[4])),
      rewards, values, dones, discount, boot)
  np.testing.assert_allclose(out.T, expected, rtol=1e-5)
  # lambda = 1 is rlax's discounted_returns with bootstrap V(s_T) (published values)
  expected_mc = np.array([[1.315, 0.63000005, 0.70000005, 1.7, 3.4],
                          [1.33592, 0.9288, 0.2576, 3.192, 3.9899998]])
  np.testing.assert_allclose(out_mc.T, expected_mc, rtol=1e-5)
  np.testing.assert_allclose(discounted.T, expected_mc, rtol=1e-5)


@functools.cache
def _n_step_returns_rlax():
  """n-step returns on rlax's inputs for every n below: one compiled program shared by the cases."""
  rewards, values, dones, discount, boot = _from_rlax(RLAX_R, RLAX_DISCOUNT, v_next=RLAX_V_NEXT)
  return jit_numpy(lambda *a: {n: returns.n_step_returns(*a[:3], n=n, discount=a[3], bootstrap_value=a[4])
                          for n in (3, 5, 7)}, rewards, values, dones, discount, boot)


@pytest.mark.parametrize("n,expected", [
    (3, [[2.8, -3.15, 0.7, 1.7, 3.4], [1.2155, 0.714, 0.2576, 3.192, 3.99]]),
    (5, [[1.315, 0.63, 0.7, 1.7, 3.4], [1.33592, 0.9288, 0.2576, 3.192, 3.99]]),
    (7, [[1.315, 0.63, 0.7, 1.7, 3.4], [1.33592, 0.9288, 0.2576, 3.192, 3.99]]),
])
def test_n_step_returns_rlax_published_values(n, expected):
  out = _n_step_returns_rlax()[n]
  np.testing.assert_allclose(out.T, np.array(expected), rtol=1e-5)


def test_n_step_returns_hand_computed_with_done_and_lambda():
  lam = device_array([0.2, 0.9, 0.5, 1.0, 0.3])
  n2, n1, n5, lambda_returns = jit_numpy(lambda r, v, d, lam: (
      returns.n_step_returns(r, v, d, n=2, discount=0.5, bootstrap_value=4.0),
      returns.n_step_returns(r, v, d, n=1, discount=0.5, bootstrap_value=4.0),
      returns.n_step_returns(r, v, d, n=5, discount=0.5, lambda_=lam, bootstrap_value=4.0),
      returns.lambda_returns(r, v, d, discount=0.5, lambda_=lam, bootstrap_value=4.0)), R, V, D, lam)
  # R = [1..5], D: episode ends at t=1; V = [.5, 1, 2, 1, 0], V(s_T) = 4, gamma = 0.5
  # n = 2: G0 = 1 + .5*2 (done at 1: no bootstrap) = 2; G1 = 2; G2 = 3 + .5*4 + .25*V(s4)=0 -> 5;
  #        G3 = 4 + .5*5 + .25*4 = 7.5; G4 = 5 + .5*4 = 7
  np.testing.assert_allclose(n2, [2.0, 2.0, 5.0, 7.5, 7.0])
  # n = 1 is the one-step target r + gamma (1 - d) V(s_{t+1})
  np.testing.assert_allclose(n1, [1.5, 2.0, 3.5, 4.0, 7.0])
  # n >= T equals the lambda-return (rlax's test_reduces_to_lambda_returns), per-step lambda
  np.testing.assert_allclose(n5, lambda_returns, rtol=1e-6)
  with pytest.raises(ValueError, match="`n`"):
    returns.n_step_returns(R, V, D, n=0, discount=0.5)
  with pytest.raises(TypeError, match="`n`"):
    returns.n_step_returns(R, V, D, n=2.0, discount=0.5)


GAE_R = np.array([[0., 0., 1., 0., -0.5], [0., 0., 0., 0., 1.]])
GAE_V = np.array([[1., 4., -3., -2., -1., -1.], [-3., -2., -1., 0.0, 5., -1.]])  # V(s_0..s_T)
GAE_DISCOUNT = np.array([[0.99, 0.99, 0.99, 0.99, 0.99], [0.9, 0.9, 0.9, 0.0, 0.9]])
GAE_EXPECTED = {
    1.0: [[-1.45118, -4.4557, 2.5396, 0.5249, -0.49], [3., 2., 1., 0., -4.9]],
    0.7: [[-0.676979, -5.248167, 2.4846, 0.6704, -0.49], [2.2899, 1.73, 1., 0., -4.9]],
    0.4: [[0.56731, -6.042, 2.3431, 0.815, -0.49], [1.725, 1.46, 1., 0., -4.9]],
}


@functools.cache
def _gae_rlax():
  """Per lambda: GAE with a scalar, a per-step and a per-step-and-env lambda, and the importance-corrected
  TD errors with all ratios 1, on rlax's inputs; one compiled program shared by the cases below."""
  rewards, values, dones, discount, _ = _from_rlax(GAE_R, GAE_DISCOUNT, v_tm1=GAE_V[:, :-1])
  boot = GAE_V[:, -1]

  def run(rewards, values, dones, discount, boot):
    out = {}
    for lam in GAE_EXPECTED:
      gaes = [returns.gae(rewards, values, dones, discount=discount, lambda_=lambda_, bootstrap_value=boot)
              for lambda_ in (lam, np.full((5,), lam), np.full((5, 2), lam))]  # scalar, per step, per step and env
      ictd = returns.importance_corrected_td_errors(rewards, values, dones, np.ones((5, 2)), discount=discount,
                                                    lambda_=lam, bootstrap_value=boot)
      out[lam] = (gaes, ictd)
    return out

  return jit_numpy(run, rewards, values, dones, discount, boot)


@pytest.mark.parametrize("lam", [1.0, 0.7, 0.4])
def test_gae_rlax_published_values_scalar_and_per_step_lambda(lam):
  expected = np.array(GAE_EXPECTED[lam])
  gaes, ictd = _gae_rlax()[lam]
  for out in gaes:  # scalar, per step, per step and env lambda
    np.testing.assert_allclose(out.T, expected, atol=1e-3)  # rlax's published precision
  # rlax's test_gae_as_special_case_of_importance_corrected_td_errors: all ratios 1
  np.testing.assert_allclose(ictd.T, expected, atol=1e-3)


def test_gae_per_step_lambda_hand_computed():
  # deltas = [1, 1, 1.5, 3, 7] (test_gae_hand_computed); A_t = delta_t + .5 * lam_t * (1 - d_t) A_{t+1}
  lam_np = np.array([1.0, 0.3, 0.0, 0.5, 0.9], np.float32)
  lam = device_array(lam_np)
  # A4 = 7; A3 = 3 + .25*7 = 4.75; A2 = 1.5 (lambda 0); A1 = 1 (done); A0 = 1 + .5*1 = 1.5
  np.testing.assert_allclose(
      jit_numpy(lambda r, v, d, lam: returns.gae(r, v, d, discount=0.5, lambda_=lam, bootstrap_value=4.0), R, V, D, lam),
      [1.5, 1.0, 1.5, 4.75, 7.0])
  with pytest.raises(ValueError, match="lambda_"):
    returns.gae(R, V, D, discount=0.5, lambda_=device_array(np.full((3,), 0.5)))
  lam_bad = lam_np.copy()
  lam_bad[2] = 1.5
  with pytest.raises(ValueError, match="lambda_"):
    returns.gae(R, V, D, discount=0.5, lambda_=device_array(lam_bad))


def test_importance_corrected_td_errors_rlax_identity():
  """rlax's test_importance_corrected_td_errors_batch: rho_t (G_t - V_t) with lambda_t = rho_{t+1}."""
  rho = np.array([[0.5, 0.9, 1.3, 0.2, 0.8], [2., 0.1, 1., 0.4, 1.7]])
  vals = np.array([[3.0, 1.0, 5.0, -5.0, 3.0, 1.], [-1.7, 1.2, 2.3, 2.2, 2.7, 2.]])  # V(s_0..s_T)
  rewards, values, dones, discount, _ = _from_rlax(RLAX_R, RLAX_DISCOUNT, v_tm1=vals[:, :-1])
  boot = vals[:, -1]
  next_rho = np.concatenate([rho[:, 1:], np.ones((2, 1))], axis=1).T
  direct, lambda_returns = jit_numpy(lambda *a: (
      returns.importance_corrected_td_errors(*a[:4], discount=a[5], bootstrap_value=a[6]),
      returns.lambda_returns(*a[:3], discount=a[5], lambda_=a[4], bootstrap_value=a[6])),
      rewards, values, dones, rho.T, next_rho, discount, boot)
  from_returns = rho.T * (lambda_returns - values)
  np.testing.assert_allclose(direct, from_returns, rtol=1e-5)
  # First entry by hand: delta_0 = 1 + .5*1 - 3 = -1.5, delta_1 = 0 + .9*5 - 1 = 3.5, ...; the error
  # of the last step is rho_4 (r_4 + gamma_4 V_T - V_4) = .8 * (1 + .8*1 - 3) = -0.96.
  np.testing.assert_allclose(direct[-1, 0], -0.96, rtol=1e-6)


# V-trace (rlax vtrace_test.py): ratios from the published behaviour / target logits and actions.
_BEHAVIOUR_LOGITS = np.array([[[8.9, 0.7], [5.0, 1.0], [0.6, 0.1], [-0.9, -0.1]],
                              [[0.3, -5.0], [1.0, -8.0], [0.3, 1.7], [4.7, 3.3]]], np.float32)
_TARGET_LOGITS = np.array([[[0.4, 0.5], [9.2, 8.8], [0.7, 4.4], [7.9, 1.4]],
                           [[1.0, 0.9], [1.0, -1.0], [-4.3, 8.7], [0.8, 0.3]]], np.float32)
_ACTIONS = np.array([[0, 1, 0, 0], [1, 0, 0, 1]])
VT_R = np.array([[-1.3, -1.3, 2.3, 42.0], [1.3, 5.3, -3.3, -5.0]], np.float32)
VT_DISCOUNT = np.array([[0., 0.89, 0.85, 0.99], [0.88, 1., 0.83, 0.95]], np.float32)
VT_V = np.array([[2.1, 1.1, -3.1, 0.0], [3.1, 0.1, -1.1, 7.4]], np.float32)
VT_BOOTSTRAP = np.array([8.4, -1.2], np.float32)


@functools.cache
def _log_softmax_both():
  """jax.nn.log_softmax of the target and behaviour logits: one compiled program, computed once."""
  return jit_numpy(lambda t, b: (jax.nn.log_softmax(t), jax.nn.log_softmax(b)), _TARGET_LOGITS, _BEHAVIOUR_LOGITS)


def _vtrace_rhos():
  logp = lambda log_softmax: np.take_along_axis(log_softmax, _ACTIONS[..., None], -1)[..., 0]
  target, behaviour = _log_softmax_both()
  return np.exp(logp(target) - logp(behaviour))


def test_vtrace_rlax_published_values():
  rewards, values, dones, discount, _ = _from_rlax(VT_R, VT_DISCOUNT, v_tm1=VT_V)
  out = jit_numpy(lambda *a: returns.vtrace(*a[:4], discount=a[4], bootstrap_value=a[5]),
             rewards, values, dones, _vtrace_rhos().T, discount, VT_BOOTSTRAP)
  expected_td = np.array([[-1.6155143, -3.4973226, 1.8670533, 5.0316002e1],
                          [1.4662437, 3.6116405, -8.3327293e-5, -1.3540000e1]])
  expected_pg = np.array([[-1.6155143, -3.4973226, 1.8670534, 5.0316002e1],
                          [1.4662433, 3.6116405, -8.3369283e-05, -1.3540000e+1]])
  np.testing.assert_allclose(out.errors.T, expected_td, rtol=1e-3)
  np.testing.assert_allclose(out.pg_advantages.T, expected_pg, rtol=1e-3)
  np.testing.assert_allclose(out.targets, out.errors + values, rtol=1e-6)


def test_vtrace_lambda_q_estimate_identity_and_on_policy_reduction():
  """rlax's test_lambda_q_estimate: v_t = V_t + min(1, rho_t) (q_t - V_t) with lambda 0.8; with all
  ratios 1, the V-trace targets are the lambda-returns and the errors the GAE advantages."""
  rewards, values, dones, discount, _ = _from_rlax(VT_R, VT_DISCOUNT, v_tm1=VT_V)
  rhos = _vtrace_rhos().T

  def run(rewards, values, dones, rhos, discount, boot):
    kw = dict(discount=discount, lambda_=0.8, bootstrap_value=boot)
    return (returns.vtrace(rewards, values, dones, rhos, **kw),
            returns.vtrace(rewards, values, dones, jnp.ones_like(rhos), **kw),
            returns.lambda_returns(rewards, values, dones, **kw), returns.gae(rewards, values, dones, **kw))

  out, ones, lambda_returns, gae = jit_numpy(run, rewards, values, dones, rhos, discount, VT_BOOTSTRAP)
  np.testing.assert_allclose(out.targets, values + np.minimum(1.0, rhos) * (out.q_estimates - values),
                             rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(ones.targets, lambda_returns, rtol=1e-5)
  np.testing.assert_allclose(ones.errors, gae, rtol=1e-5, atol=1e-5)


def test_vtrace_episodes_in_one_trace_equal_separate_traces():
  """rlax's test_vtrace_lambda_multiple_episodes_per_trace: a done at t = 3 splits the trace."""
  def run(dones, lam):
    k = jax.random.split(jax.random.key(7), 3)
    r, rho, v = (jax.random.uniform(ki, (8,)) for ki in k)
    full = returns.vtrace(r, v, dones, rho, discount=0.9, lambda_=lam, bootstrap_value=10.0)
    first = returns.vtrace(r[:4], v[:4], dones[:4], rho[:4], discount=0.9, lambda_=lam[:4])
    second = returns.vtrace(r[4:], v[4:], dones[4:], rho[4:], discount=0.9, lambda_=lam[4:],
                            bootstrap_value=10.0)
    return full, first, second

  full, first, second = jit_numpy(run, device_array([False, False, False, True, False, False, False, False], bool),
                             device_array([1.0, 0.5, 1.0, 1.0, 0.9, 1.0, 0.7, 1.0]))
  for a, b1, b2 in zip(full, first, second):
    np.testing.assert_allclose(a, np.concatenate([b1, b2]), rtol=1e-6)


def test_truncation_convention_adds_the_discounted_final_value_to_the_reward():
  """Documented truncation handling: a time-limit cut at step 2 with V(s_final) = 6 equals the same
  episode computed alone with bootstrap_value = 6 and no done."""
  fns = (lambda *a, **k: returns.lambda_returns(*a, **k),
         lambda *a, **k: returns.gae(*a, **k),
         lambda *a, **k: returns.n_step_returns(*a, n=2, **k),
         lambda *a, **k: returns.vtrace(*a, jnp.full(a[0].shape, 0.7), **k).targets)

  def run(r, v, dones, lam):                               # every function, folded and alone: one program
    r_folded = r.at[2].add(0.9 * 6.0)
    return [(fn(r_folded, v, dones, discount=0.9, lambda_=lam, bootstrap_value=3.0)[:3],
             fn(r[:3], v[:3], jnp.zeros(3, bool), discount=0.9, lambda_=lam[:3], bootstrap_value=6.0))
            for fn in fns]

  for folded, alone in jit_numpy(run, device_array([1.0, 2.0, 3.0, 4.0, 5.0]), device_array([0.5, 1.0, 2.0, 1.0, 0.0]),
                            device_array([False, False, True, False, False], bool), device_array([0.9, 0.6, 0.8, 0.7, 0.5])):
    np.testing.assert_allclose(folded, alone, rtol=1e-6)


def test_multistep_batch_dims_vmap_single_trace_and_bad_input():
  rewards, values, dones, discount, _ = _from_rlax(VT_R, VT_DISCOUNT, v_tm1=VT_V)
  rhos = _vtrace_rhos().T

  @jax.jit
  @chex.assert_max_traces(n=1)
  def all_targets(lam):
    return (returns.lambda_returns(rewards, values, dones, discount=discount, lambda_=lam),
            returns.vtrace(rewards, values, dones, rhos, discount=discount, lambda_=lam).targets)

  swept = jax.vmap(all_targets)(device_array([0.3, 0.8]))  # lambda traced: a sweep is a vmap
  swept = jax.tree_util.tree_map(np.asarray, swept)
  gam = np.array([0.9, 0.5, 0.7, 0.3], np.float32)

  def references(gam, gam2):                               # the references, in one compiled program
    per_lambda = [(returns.lambda_returns(rewards, values, dones, discount=discount, lambda_=lam),
                   returns.vtrace(rewards[:, 1], values[:, 1], dones[:, 1], rhos[:, 1], discount=discount[:, 1],
                                  lambda_=lam).targets) for lam in (0.3, 0.8)]
    return per_lambda, (returns.lambda_returns(rewards, values, dones, discount=gam, lambda_=0.6),
                        returns.lambda_returns(rewards, values, dones, discount=gam2, lambda_=0.6))

  per_lambda, (per_step, per_step_and_env) = jit_numpy(references, device_array(gam), device_array(np.stack([gam, gam], axis=1)))
  for i, (lambda_returns, vtrace_column) in enumerate(per_lambda):
    np.testing.assert_allclose(swept[0][i], lambda_returns, rtol=1e-6)
    # batch column 1 alone (time-major batch dims are independent)
    np.testing.assert_allclose(swept[1][i][:, 1], vtrace_column, rtol=1e-6)
  # a per-step [T] discount is aligned with the time axis of [T, B] rewards (not broadcast over B)
  np.testing.assert_allclose(per_step, per_step_and_env)
  with pytest.raises(ValueError, match="rhos"):
    returns.vtrace(rewards, values, dones, -rhos, discount=0.9)
  with pytest.raises(ValueError, match="rhos"):
    returns.importance_corrected_td_errors(rewards, values, dones, rhos[:2], discount=0.9)
  with pytest.raises(ValueError, match="clip_rho_threshold"):
    returns.vtrace(rewards, values, dones, rhos, discount=0.9, clip_rho_threshold=0.0)
  with pytest.raises(ValueError, match="values"):
    returns.lambda_returns(rewards, values[:2], dones, discount=0.9, lambda_=0.5)


def test_against_rlax_itself_when_installed():
  rlax_multistep = pytest.importorskip("rlax._src.multistep")
  rlax_vtrace = pytest.importorskip("rlax._src.vtrace")
  rewards, values, dones, discount, _ = _from_rlax(VT_R, VT_DISCOUNT, v_tm1=VT_V)
  rhos = _vtrace_rhos()
  lam = np.array([[0.8, 0.3, 1., 0.5], [0.1, 0.9, 0.6, 1.0]], np.float32)
  v_next = np.concatenate([VT_V[:, 1:], VT_BOOTSTRAP[:, None]], axis=1)
  v_all = np.concatenate([VT_V, VT_BOOTSTRAP[:, None]], axis=1)
  kw = dict(discount=discount, lambda_=lam.T, bootstrap_value=VT_BOOTSTRAP)

  def run():                                               # pgjax and rlax side by side: one compiled program
    ref = jax.vmap(lambda *a: rlax_vtrace.vtrace_td_error_and_advantage(
        *a, clip_pg_rho_threshold=2.0, stop_target_gradients=False))(VT_V, v_next, VT_R, VT_DISCOUNT, rhos, lam)
    out = returns.vtrace(rewards, values, dones, rhos.T, clip_pg_rho_threshold=2.0, **kw)
    pairs = [(returns.lambda_returns(rewards, values, dones, **kw).T,
              jax.vmap(rlax_multistep.lambda_returns)(VT_R, VT_DISCOUNT, v_next, lam)),
             (returns.importance_corrected_td_errors(rewards, values, dones, rhos.T, **kw).T,
              jax.vmap(rlax_multistep.importance_corrected_td_errors)(VT_R, VT_DISCOUNT, rhos, lam, v_all)),
             (returns.n_step_returns(rewards, values, dones, n=2, **kw).T,
              jax.vmap(lambda *a: rlax_multistep.n_step_bootstrapped_returns(*a[:3], 2, a[3]))(
                  VT_R, VT_DISCOUNT, v_next, lam))]
    return ref, out, pairs

  ref, out, pairs = jit_numpy(run)
  np.testing.assert_allclose(out.errors.T, ref.errors, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.pg_advantages.T, ref.pg_advantage, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.q_estimates.T, ref.q_estimate, rtol=1e-5, atol=1e-5)
  for ours, theirs in pairs:
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
