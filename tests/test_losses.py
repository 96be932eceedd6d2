"""Losses against hand-computed gradients and weights; on-policy equalities; entropies against distrax."""

import functools

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax import baselines
from pgjax import losses
from tests.helpers import device_array, jit_numpy


def test_surrogate_gradient_hand_computed():
  # Categorical with logits z, samples a = [0, 2, 2], weights w = [1, -2, 0.5].
  # d/dz log softmax(z)[a] = e_a - p, so d/dz L = -(1/3) sum_i w_i (e_{a_i} - p).
  z = device_array([0.0, np.log(2.0), np.log(3.0)])              # p = [1, 2, 3] / 6
  a = device_array([0, 2, 2], np.int32)
  w = device_array([1.0, -2.0, 0.5])

  def loss(z, a, w):
    return pgjax.score_function_surrogate(jax.nn.log_softmax(z)[a], w)

  grad, value = jit_numpy(lambda z, a, w: (jax.grad(loss)(z, a, w), loss(z, a, w)), z, a, w)
  p = np.array([1.0, 2.0, 3.0]) / 6
  e = np.eye(3)[np.array([0, 2, 2])]
  want = -np.mean(np.array([1.0, -2.0, 0.5])[:, None] * (e - p), axis=0)
  np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-7)
  # Value: -mean(w * log p_a).
  np.testing.assert_allclose(value, -np.mean(np.array([1.0, -2.0, 0.5]) * np.log(p[[0, 2, 2]])), rtol=1e-6)


def test_weights_are_held_constant():
  g = jit_numpy(lambda lp, w: jax.grad(lambda w: pgjax.score_function_surrogate(lp, w))(w),
           device_array([-1.0, -2.0]), device_array([1.0, 1.0]))
  np.testing.assert_array_equal(g, [0.0, 0.0])


def test_minus_surrogate_gradient_equals_score_function_estimate(key):
  """The estimator's gradient is -grad(surrogate) evaluated on its own samples and weights."""
  from pgjax import problems as P
  prob = P.categorical_bandit()
  est = pgjax.score_function(prob.f, prob.dist_fn, num_samples=6, baseline="leave_one_out")

  def run(key, params):                                   # one compiled program
    g, aux = est(key, params)
    with jax.numpy_rank_promotion("allow"):  # distrax's log_prob broadcasts implicitly
      surrogate_grad = jax.grad(lambda z: pgjax.score_function_surrogate(
          prob.dist_fn(z).log_prob(aux.samples), aux.values - aux.baselines))(params)
    return g, surrogate_grad

  g, surrogate_grad = jit_numpy(run, key, prob.params)
  np.testing.assert_allclose(g, -surrogate_grad, rtol=1e-5, atol=1e-7)


def test_shape_mismatch_raises():
  with pytest.raises(ValueError, match="log_probs"):
    pgjax.score_function_surrogate(device_array(np.zeros(3)), device_array(np.zeros(4)))


R = device_array([1.0, 2.0, 3.0, 4.0, 5.0])
D = device_array([False, True, False, False, False], bool)


def neg_grad(loss_fn, log_probs):
  """-dL/dlog_probs: the weights each log-probability receives (times 1/B). Traceable: call it under jit."""
  return -jax.grad(loss_fn)(log_probs)


def test_policy_gradient_loss_sums_time_means_batch():
  w = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
  lp2 = np.arange(6.0, dtype=np.float32).reshape(3, 2)
  g, pg, surrogate = jit_numpy(lambda w, lp, lp2: (neg_grad(lambda l: losses.policy_gradient_loss(l, w), lp),
                                              losses.policy_gradient_loss(lp2, w),
                                              losses.score_function_surrogate(lp2, w)),
                          device_array(w), device_array(np.zeros((3, 2))), device_array(lp2))
  np.testing.assert_allclose(g, w / 2)
  # T * score_function_surrogate (the lead's pseudo-loss) on the same inputs
  np.testing.assert_allclose(pg, 3 * surrogate, rtol=1e-6)


def test_reinforce_weights_hand_computed():
  rtg, total, discounted = jit_numpy(lambda r, d: (
      losses.reinforce_weights(r, d), losses.reinforce_weights(r, d, reward_to_go=False),
      losses.reinforce_weights(r, d, discount=0.5, time_discount=True)), R, D)
  np.testing.assert_allclose(rtg, [3.0, 2.0, 12.0, 9.0, 5.0])
  np.testing.assert_allclose(total, [3, 3, 12, 12, 12])
  np.testing.assert_allclose(discounted, [2.0, 1.0, 6.25, 3.25, 1.25])
  with pytest.raises(ValueError, match="time_discount"):
    losses.reinforce_weights(R, D, reward_to_go=False, time_discount=True)


def test_baselines_per_time_step():
  w_np = np.array([[1.0, 3.0], [2.0, 6.0]], np.float32)
  w = device_array(w_np)

  def values(w, ones, r2, d2):
    return (losses.subtract_baseline(w, "mean"), losses.subtract_baseline(w, "leave_one_out"),
            losses.subtract_baseline(w, baselines.leave_one_out), losses.subtract_baseline(w, ones),
            neg_grad(lambda l: losses.reinforce_loss(l, r2, d2, baseline="leave_one_out"), jnp.zeros((5, 2))))

  r_np, d_np = np.asarray(R), np.asarray(D)
  mean, loo, loo_fn, ones, g = jit_numpy(values, w, device_array(np.ones((2, 2))), device_array(np.stack([r_np, 2 * r_np], 1)),
                                    device_array(np.stack([d_np, d_np], 1), bool))
  np.testing.assert_allclose(mean, [[-1, 1], [-2, 2]])
  np.testing.assert_allclose(loo, [[-2, 2], [-4, 4]])
  np.testing.assert_allclose(loo_fn, [[-2, 2], [-4, 4]])
  np.testing.assert_allclose(ones, w_np - 1)
  with pytest.raises(ValueError, match="baseline"):
    losses.subtract_baseline(w, "median")
  with pytest.raises(ValueError, match="baseline"):
    losses.subtract_baseline(w, device_array(np.ones(3)))
  with pytest.raises(ValueError, match=r"\[T, B\]"):
    losses.subtract_baseline(R, "mean")
  # The loss uses them: weights (Q - b) / B on each log-prob.
  q = np.stack([np.array([3.0, 2, 12, 9, 5]), np.array([6.0, 4, 24, 18, 10])], 1)
  np.testing.assert_allclose(g, (q - q[:, ::-1]) / 2)


LP_NP = np.log(np.array([0.5, 0.2, 0.9])).astype(np.float32)
LPB_NP = np.log(np.array([0.25, 0.4, 0.3])).astype(np.float32)  # rho = [2, 0.5, 3]
LP = device_array(LP_NP)
LPB = device_array(LPB_NP)
D3 = device_array([False, True, False], bool)
R3 = device_array(np.ones(3))


def test_importance_weights_hand_computed():
  ratios, truncated, cumulative, trajectory = jit_numpy(lambda lp, lpb, d: (
      losses.importance_ratios(lp, lpb), losses.importance_ratios(lp, lpb, truncation=2.5),
      losses.cumulative_importance_weights(lp, lpb, d), losses.trajectory_importance_weights(lp, lpb, d)),
      LP, LPB, D3)
  np.testing.assert_allclose(ratios, [2.0, 0.5, 3.0], rtol=1e-6)
  np.testing.assert_allclose(truncated, [2.0, 0.5, 2.5], rtol=1e-6)
  np.testing.assert_allclose(cumulative, [2.0, 1.0, 3.0], rtol=1e-6)
  np.testing.assert_allclose(trajectory, [1.0, 1.0, 3.0], rtol=1e-6)


FORMS = ["trajectory", "per_decision", "per_step"]


@functools.cache
def _importance_weighted_loss_weights():
  """-dL/dlogpi for every form: one compiled program shared by the parametrised cases below."""
  return jit_numpy(lambda lp, lpb, r, d: {
      form: neg_grad(lambda l: losses.importance_weighted_loss(l, lpb, r, d, form=form), lp) for form in FORMS},
      LP, LPB, R3, D3)


@pytest.mark.parametrize("form,expected", [("trajectory", [2.0, 1.0, 3.0]),  # W(tau) * Q = [1,1,3]*[2,1,1]
                                           ("per_decision", [3.0, 1.0, 3.0]),  # RTG of r*cum = RTG([2,1,3])
                                           ("per_step", [4.0, 0.5, 3.0])])  # rho * Q
def test_importance_weighted_loss_weights(form, expected):
  g = _importance_weighted_loss_weights()[form]
  # -dL/dlogpi_t = w_t (B = 1)
  np.testing.assert_allclose(g, expected, rtol=1e-5)


@functools.cache
def _on_and_off_policy():
  """Per form: the on-policy loss and gradient and the off-policy ones with behaviour = target, from one
  compiled program shared by the parametrised cases below."""
  def run():
    lp = jnp.log(jax.random.uniform(jax.random.key(0), (6, 3), minval=0.1, maxval=1.0))
    r = jax.random.normal(jax.random.key(1), (6, 3))
    d = jnp.zeros((6, 3), bool).at[2, 0].set(True).at[4, 2].set(True)
    on = losses.reinforce_loss(lp, r, d, discount=0.9, time_discount=True)
    g_on = jax.grad(lambda l: losses.reinforce_loss(l, r, d, discount=0.9, time_discount=True))(lp)
    out = {}
    for form in FORMS:
      off = losses.importance_weighted_loss(lp, lp, r, d, form=form, discount=0.9, time_discount=True)
      g_off = jax.grad(lambda l: losses.importance_weighted_loss(l, lp, r, d, form=form, discount=0.9,
                                                                  time_discount=True))(lp)
      out[form] = (on, off, g_on, g_off)
    return out
  return jit_numpy(run)


@pytest.mark.parametrize("form", FORMS)
def test_off_policy_forms_equal_on_policy_when_behaviour_is_target(form):
  on, off, g_on, g_off = _on_and_off_policy()[form]
  np.testing.assert_allclose(off, on, rtol=1e-6)
  np.testing.assert_allclose(g_off, g_on, rtol=1e-6)


def test_extreme_ratios_stay_finite():
  lp = device_array(np.zeros(50))
  lpb = device_array(np.full(50, -10.0))  # rho = e^10 each: the product overflows float32 without the cap
  w, loss = jit_numpy(lambda lp, lpb, ones, d: (
      losses.trajectory_importance_weights(lp, lpb, d),
      losses.importance_weighted_loss(lp, lpb, ones, d, form="trajectory")),
      lp, lpb, device_array(np.ones(50)), device_array(np.zeros(50), bool))
  assert bool(np.all(np.isfinite(w)))
  assert bool(np.isfinite(loss))


def test_ppo_clip_hand_computed_and_gradient():
  rho = np.array([0.5, 1.0, 1.5, 2.0], np.float32)
  adv = device_array([1.0, -1.0, 1.0, -1.0])
  lpb = device_array(np.zeros(4))

  def run(rho, lpb, adv, lp0):
    lp = jnp.log(rho)
    return (losses.ppo_clip_loss(lp, lpb, adv), losses.ppo_clip_loss(lp, lpb, adv, dual_clip=1.5),
            neg_grad(lambda l: losses.ppo_clip_loss(l, lpb, adv), lp),
            neg_grad(lambda l: losses.ppo_clip_loss(l, lpb, adv, dual_clip=1.5), lp),
            jax.grad(lambda l: losses.ppo_clip_loss(l, lp0, adv))(lp0),
            jax.grad(lambda l: losses.policy_gradient_loss(l, adv))(lp0))

  lp0 = device_array(np.log(np.array([0.3, 0.6, 0.2, 0.9], np.float32)))
  loss, loss_dual, g, g_dual, g_ppo, g_pg = jit_numpy(run, device_array(rho), lpb, adv, lp0)
  # terms: min(.5,.8)=.5, -1, min(1.5,1.2)=1.2, min(-2,-1.2)=-2 -> mean -0.325
  np.testing.assert_allclose(loss, 0.325, rtol=1e-6)
  # dual clip c=1.5 lifts the A<0 term -2 to -1.5
  np.testing.assert_allclose(loss_dual, 0.2, rtol=1e-6)
  np.testing.assert_allclose(g, np.array([0.5, -1.0, 0.0, -2.0]) / 4, rtol=1e-6)  # clipped term: 0
  np.testing.assert_allclose(g_dual, np.array([0.5, -1.0, 0.0, 0.0]) / 4, rtol=1e-6)
  # At rho = 1 the gradient is the per-step (= on-policy) surrogate's, divided by T.
  np.testing.assert_allclose(g_ppo, g_pg / 4, rtol=1e-6)


def test_entropies_match_distrax():
  def run(logits, log_std, pair, z):
    p = jax.nn.softmax(jnp.array([0.0, 1.0]))
    return (losses.categorical_entropy(logits), distrax.Categorical(logits=logits[0]).entropy(),
            -jnp.sum(p * jnp.log(p)), losses.gaussian_entropy(log_std),
            distrax.MultivariateNormalDiag(jnp.zeros(3), jnp.exp(log_std)).entropy(), losses.entropy_loss(pair),
            jax.grad(lambda z: losses.entropy_loss(losses.categorical_entropy(z)))(z))

  ent, ent_distrax, ent_finite, gauss, gauss_distrax, loss, g = jit_numpy(
      run, device_array([[0.3, -1.0, 2.0], [0.0, -np.inf, 1.0]]), device_array([0.1, -2.0, 0.5]), device_array([1.0, 3.0]),
      device_array([1.0, 0.0]))
  np.testing.assert_allclose(ent[0], ent_distrax, rtol=1e-6)
  np.testing.assert_allclose(ent[1], ent_finite, rtol=1e-6)
  np.testing.assert_allclose(gauss, gauss_distrax, rtol=1e-6)
  np.testing.assert_allclose(loss, -2.0)
  assert float(g[0]) > 0 > float(g[1])  # descending the loss flattens the policy


def test_jit_vmap_no_retrace():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(lp, lpb, r, d):
    return losses.importance_weighted_loss(lp, lpb, r, d, form="per_decision", discount=0.9,
                                           truncation=2.0)

  args = (device_array(np.zeros((4, 5, 2))), device_array(np.full((4, 5, 2), -0.1)), device_array(np.ones((4, 5, 2))),
          device_array(np.zeros((4, 5, 2)), bool))
  out = jax.vmap(f)(*args)
  out2 = jax.vmap(f)(*args)
  np.testing.assert_array_equal(out, out2)
  assert out.shape == (4,)


def test_bad_input():
  lpb2 = device_array(LPB_NP[:2])
  with pytest.raises(ValueError, match="behaviour_log_probs"):
    losses.importance_weighted_loss(LP, lpb2, R3, D3)
  with pytest.raises(ValueError, match="behaviour_log_probs"):
    losses.ppo_clip_loss(LP, lpb2, R3)
  with pytest.raises(ValueError, match="form"):
    losses.importance_weighted_loss(LP, LPB, R3, D3, form="weighted")
  with pytest.raises(ValueError, match="truncation"):
    losses.importance_ratios(LP, LPB, truncation=0.0)
  with pytest.raises(ValueError, match="clip_epsilon"):
    losses.ppo_clip_loss(LP, LPB, R3, clip_epsilon=0.0)
  with pytest.raises(ValueError, match="dual_clip"):
    losses.ppo_clip_loss(LP, LPB, R3, dual_clip=0.9)
  with pytest.raises(ValueError, match="discount"):
    losses.reinforce_loss(LP, R3, D3, discount=1.1)
  with pytest.raises(ValueError, match="rewards"):
    losses.reinforce_loss(LP, R, D)
  with pytest.raises(ValueError, match="log_probs"):
    losses.policy_gradient_loss(device_array(np.zeros((2, 2, 2))), device_array(np.zeros((2, 2, 2))))


def test_categorical_entropy_gradient_with_minus_inf_logit():
  """Closed form dH/dz_a = -p_a (log p_a + H) over the finite logits [0.5, 1.0] (NumPy, float64):
  p = [0.37754, 0.62246], H = 0.66285, gradient [0.11750, -0.11750]; the -inf logit gets exactly 0."""
  z = np.array([0.5, -np.inf, 1.0], np.float32)
  g, g2 = jit_numpy(lambda z, z2: (jax.grad(losses.categorical_entropy)(z),
                              jax.grad(lambda z: jnp.sum(losses.categorical_entropy(z)))(z2)),
               device_array(z), device_array(np.stack([z] * 2)))
  np.testing.assert_allclose(g, [0.11750186, 0.0, -0.11750186], rtol=1e-5, atol=1e-7)
  assert float(g[1]) == 0.0
  assert np.all(np.isfinite(np.asarray(g2)))


def test_subtract_baseline_uses_the_shared_resolver():
  w_np = np.array([[1.0, 3.0], [2.0, 6.0]], np.float32)
  w = device_array(w_np)
  const, group, loo, nan_out = jit_numpy(lambda w, w_nan: (
      losses.subtract_baseline(w, 0.5), losses.subtract_baseline(w, "group_normalize"),
      losses.subtract_baseline(w, baselines.get("leave_one_out")),
      losses.subtract_baseline(w_nan, "group_normalize")), w, device_array([[1.0, np.nan], [2.0, 6.0]]))
  np.testing.assert_allclose(const, w_np - 0.5)
  np.testing.assert_allclose(group, [[-1, 1], [-1, 1]], rtol=1e-6)
  np.testing.assert_allclose(loo, [[-2, 2], [-4, 4]])
  with pytest.raises(ValueError, match="`sq_norms`"):
    losses.subtract_baseline(w, "optimal")
  with pytest.raises(ValueError, match="trajectories"):
    losses.subtract_baseline(device_array(w_np[:, :1]), "leave_one_out")
  # NaN policy: a NaN return reaches the weights of its time step instead of being zeroed.
  assert np.isnan(nan_out[0]).all() and np.all(np.isfinite(nan_out[1]))
