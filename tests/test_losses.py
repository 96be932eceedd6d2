"""Losses against hand-computed gradients and weights; on-policy equalities; entropies against distrax."""

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax import baselines
from pgjax import losses


def test_surrogate_gradient_hand_computed():
  # Categorical with logits z, samples a = [0, 2, 2], weights w = [1, -2, 0.5].
  # d/dz log softmax(z)[a] = e_a - p, so d/dz L = -(1/3) sum_i w_i (e_{a_i} - p).
  z = jnp.array([0.0, jnp.log(2.0), jnp.log(3.0)])       # p = [1, 2, 3] / 6
  a = jnp.array([0, 2, 2])
  w = jnp.array([1.0, -2.0, 0.5])

  def loss(z):
    return pgjax.score_function_surrogate(jax.nn.log_softmax(z)[a], w)

  p = np.array([1.0, 2.0, 3.0]) / 6
  e = np.eye(3)[np.array([0, 2, 2])]
  want = -np.mean(np.array([1.0, -2.0, 0.5])[:, None] * (e - p), axis=0)
  np.testing.assert_allclose(jax.grad(loss)(z), want, rtol=1e-6, atol=1e-7)
  # Value: -mean(w * log p_a).
  np.testing.assert_allclose(loss(z), -np.mean(np.array([1.0, -2.0, 0.5]) * np.log(p[[0, 2, 2]])), rtol=1e-6)


def test_weights_are_held_constant():
  lp = jnp.array([-1.0, -2.0])
  g = jax.grad(lambda w: pgjax.score_function_surrogate(lp, w))(jnp.array([1.0, 1.0]))
  np.testing.assert_array_equal(g, [0.0, 0.0])


def test_minus_surrogate_gradient_equals_score_function_estimate(key):
  """The estimator's gradient is -grad(surrogate) evaluated on its own samples and weights."""
  from pgjax import problems as P
  prob = P.categorical_bandit()
  est = pgjax.score_function(prob.f, prob.dist_fn, num_samples=6, baseline="leave_one_out")
  g, aux = est(key, prob.params)
  with jax.numpy_rank_promotion("allow"):  # distrax's log_prob broadcasts implicitly
    surrogate_grad = jax.grad(lambda z: pgjax.score_function_surrogate(
        prob.dist_fn(z).log_prob(aux.samples), aux.values - aux.baselines))(prob.params)
  np.testing.assert_allclose(g, -surrogate_grad, rtol=1e-5, atol=1e-7)


def test_shape_mismatch_raises():
  with pytest.raises(ValueError, match="log_probs"):
    pgjax.score_function_surrogate(jnp.zeros(3), jnp.zeros(4))


R = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])
D = jnp.array([False, True, False, False, False])


def neg_grad(loss_fn, log_probs):
  """-dL/dlog_probs: the weights each log-probability receives (times 1/B)."""
  return -jax.grad(loss_fn)(log_probs)


def test_policy_gradient_loss_sums_time_means_batch():
  w = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
  lp = jnp.zeros((3, 2))
  np.testing.assert_allclose(neg_grad(lambda l: losses.policy_gradient_loss(l, w), lp), w / 2)
  # T * score_function_surrogate (the lead's pseudo-loss) on the same inputs
  lp2 = jnp.arange(6.0).reshape(3, 2)
  np.testing.assert_allclose(losses.policy_gradient_loss(lp2, w),
                             3 * losses.score_function_surrogate(lp2, w), rtol=1e-6)


def test_reinforce_weights_hand_computed():
  np.testing.assert_allclose(losses.reinforce_weights(R, D), [3.0, 2.0, 12.0, 9.0, 5.0])
  np.testing.assert_allclose(losses.reinforce_weights(R, D, reward_to_go=False), [3, 3, 12, 12, 12])
  np.testing.assert_allclose(losses.reinforce_weights(R, D, discount=0.5, time_discount=True),
                             [2.0, 1.0, 6.25, 3.25, 1.25])
  with pytest.raises(ValueError, match="time_discount"):
    losses.reinforce_weights(R, D, reward_to_go=False, time_discount=True)


def test_baselines_per_time_step():
  w = jnp.array([[1.0, 3.0], [2.0, 6.0]])
  np.testing.assert_allclose(losses.subtract_baseline(w, "mean"), [[-1, 1], [-2, 2]])
  np.testing.assert_allclose(losses.subtract_baseline(w, "leave_one_out"), [[-2, 2], [-4, 4]])
  np.testing.assert_allclose(losses.subtract_baseline(w, baselines.leave_one_out), [[-2, 2], [-4, 4]])
  np.testing.assert_allclose(losses.subtract_baseline(w, jnp.ones((2, 2))), w - 1)
  with pytest.raises(ValueError, match="baseline"):
    losses.subtract_baseline(w, "median")
  with pytest.raises(ValueError, match="baseline"):
    losses.subtract_baseline(w, jnp.ones(3))
  with pytest.raises(ValueError, match=r"\[T, B\]"):
    losses.subtract_baseline(R, "mean")
  # The loss uses them: weights (Q - b) / B on each log-prob.
  r2 = jnp.stack([R, 2 * R], 1)
  d2 = jnp.stack([D, D], 1)
  q = jnp.stack([jnp.array([3.0, 2, 12, 9, 5]), jnp.array([6.0, 4, 24, 18, 10])], 1)
  g = neg_grad(lambda l: losses.reinforce_loss(l, r2, d2, baseline="leave_one_out"), jnp.zeros((5, 2)))
  np.testing.assert_allclose(g, (q - q[:, ::-1]) / 2)


LP = jnp.log(jnp.array([0.5, 0.2, 0.9]))
LPB = jnp.log(jnp.array([0.25, 0.4, 0.3]))  # rho = [2, 0.5, 3]
D3 = jnp.array([False, True, False])
R3 = jnp.ones(3)


def test_importance_weights_hand_computed():
  np.testing.assert_allclose(losses.importance_ratios(LP, LPB), [2.0, 0.5, 3.0], rtol=1e-6)
  np.testing.assert_allclose(losses.importance_ratios(LP, LPB, truncation=2.5), [2.0, 0.5, 2.5], rtol=1e-6)
  np.testing.assert_allclose(losses.cumulative_importance_weights(LP, LPB, D3), [2.0, 1.0, 3.0], rtol=1e-6)
  np.testing.assert_allclose(losses.trajectory_importance_weights(LP, LPB, D3), [1.0, 1.0, 3.0], rtol=1e-6)


@pytest.mark.parametrize("form,expected", [("trajectory", [2.0, 1.0, 3.0]),  # W(tau) * Q = [1,1,3]*[2,1,1]
                                           ("per_decision", [3.0, 1.0, 3.0]),  # RTG of r*cum = RTG([2,1,3])
                                           ("per_step", [4.0, 0.5, 3.0])])  # rho * Q
def test_importance_weighted_loss_weights(form, expected):
  g = neg_grad(lambda l: losses.importance_weighted_loss(l, LPB, R3, D3, form=form), LP)
  # -dL/dlogpi_t = w_t (B = 1)
  np.testing.assert_allclose(g, expected, rtol=1e-5)


@pytest.mark.parametrize("form", ["trajectory", "per_decision", "per_step"])
def test_off_policy_forms_equal_on_policy_when_behaviour_is_target(form):
  key = jax.random.key(0)
  lp = jnp.log(jax.random.uniform(key, (6, 3), minval=0.1, maxval=1.0))
  r = jax.random.normal(jax.random.key(1), (6, 3))
  d = jnp.zeros((6, 3), bool).at[2, 0].set(True).at[4, 2].set(True)
  on = losses.reinforce_loss(lp, r, d, discount=0.9, time_discount=True)
  off = losses.importance_weighted_loss(lp, lp, r, d, form=form, discount=0.9, time_discount=True)
  np.testing.assert_allclose(off, on, rtol=1e-6)
  g_on = jax.grad(lambda l: losses.reinforce_loss(l, r, d, discount=0.9, time_discount=True))(lp)
  g_off = jax.grad(lambda l: losses.importance_weighted_loss(l, lp, r, d, form=form, discount=0.9,
                                                              time_discount=True))(lp)
  np.testing.assert_allclose(g_off, g_on, rtol=1e-6)


def test_extreme_ratios_stay_finite():
  lp = jnp.zeros(50)
  lpb = jnp.full(50, -10.0)  # rho = e^10 each: the product overflows float32 without the cap
  w = losses.trajectory_importance_weights(lp, lpb, jnp.zeros(50, bool))
  assert bool(jnp.all(jnp.isfinite(w)))
  assert bool(jnp.isfinite(losses.importance_weighted_loss(lp, lpb, jnp.ones(50), jnp.zeros(50, bool),
                                                           form="trajectory")))


def test_ppo_clip_hand_computed_and_gradient():
  rho = jnp.array([0.5, 1.0, 1.5, 2.0])
  adv = jnp.array([1.0, -1.0, 1.0, -1.0])
  lpb = jnp.zeros(4)
  lp = jnp.log(rho)
  # terms: min(.5,.8)=.5, -1, min(1.5,1.2)=1.2, min(-2,-1.2)=-2 -> mean -0.325
  np.testing.assert_allclose(losses.ppo_clip_loss(lp, lpb, adv), 0.325, rtol=1e-6)
  # dual clip c=1.5 lifts the A<0 term -2 to -1.5
  np.testing.assert_allclose(losses.ppo_clip_loss(lp, lpb, adv, dual_clip=1.5), 0.2, rtol=1e-6)
  g = neg_grad(lambda l: losses.ppo_clip_loss(l, lpb, adv), lp)
  np.testing.assert_allclose(g, jnp.array([0.5, -1.0, 0.0, -2.0]) / 4, rtol=1e-6)  # clipped term: 0
  g_dual = neg_grad(lambda l: losses.ppo_clip_loss(l, lpb, adv, dual_clip=1.5), lp)
  np.testing.assert_allclose(g_dual, jnp.array([0.5, -1.0, 0.0, 0.0]) / 4, rtol=1e-6)
  # At rho = 1 the gradient is the per-step (= on-policy) surrogate's, divided by T.
  lp0 = jnp.log(jnp.array([0.3, 0.6, 0.2, 0.9]))
  g_ppo = jax.grad(lambda l: losses.ppo_clip_loss(l, lp0, adv))(lp0)
  g_pg = jax.grad(lambda l: losses.policy_gradient_loss(l, adv))(lp0)
  np.testing.assert_allclose(g_ppo, g_pg / 4, rtol=1e-6)


def test_entropies_match_distrax():
  logits = jnp.array([[0.3, -1.0, 2.0], [0.0, -jnp.inf, 1.0]])
  np.testing.assert_allclose(losses.categorical_entropy(logits)[0],
                             distrax.Categorical(logits=logits[0]).entropy(), rtol=1e-6)
  p = jax.nn.softmax(jnp.array([0.0, 1.0]))
  np.testing.assert_allclose(losses.categorical_entropy(logits)[1], -jnp.sum(p * jnp.log(p)), rtol=1e-6)
  log_std = jnp.array([0.1, -2.0, 0.5])
  np.testing.assert_allclose(losses.gaussian_entropy(log_std),
                             distrax.MultivariateNormalDiag(jnp.zeros(3), jnp.exp(log_std)).entropy(),
                             rtol=1e-6)
  np.testing.assert_allclose(losses.entropy_loss(jnp.array([1.0, 3.0])), -2.0)
  g = jax.grad(lambda z: losses.entropy_loss(losses.categorical_entropy(z)))(jnp.array([1.0, 0.0]))
  assert float(g[0]) > 0 > float(g[1])  # descending the loss flattens the policy


def test_jit_vmap_no_retrace():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(lp, lpb, r, d):
    return losses.importance_weighted_loss(lp, lpb, r, d, form="per_decision", discount=0.9,
                                           truncation=2.0)

  args = (jnp.zeros((4, 5, 2)), jnp.full((4, 5, 2), -0.1), jnp.ones((4, 5, 2)), jnp.zeros((4, 5, 2), bool))
  out = jax.vmap(f)(*args)
  out2 = jax.vmap(f)(*args)
  np.testing.assert_array_equal(out, out2)
  assert out.shape == (4,)


def test_bad_input():
  with pytest.raises(ValueError, match="behaviour_log_probs"):
    losses.importance_weighted_loss(LP, LPB[:2], R3, D3)
  with pytest.raises(ValueError, match="behaviour_log_probs"):
    losses.ppo_clip_loss(LP, LPB[:2], R3)
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
    losses.policy_gradient_loss(jnp.zeros((2, 2, 2)), jnp.zeros((2, 2, 2)))


def test_categorical_entropy_gradient_with_minus_inf_logit():
  """Closed form dH/dz_a = -p_a (log p_a + H) over the finite logits [0.5, 1.0] (NumPy, float64):
  p = [0.37754, 0.62246], H = 0.66285, gradient [0.11750, -0.11750]; the -inf logit gets exactly 0."""
  g = jax.grad(losses.categorical_entropy)(jnp.array([0.5, -jnp.inf, 1.0]))
  np.testing.assert_allclose(g, [0.11750186, 0.0, -0.11750186], rtol=1e-5, atol=1e-7)
  assert float(g[1]) == 0.0
  g2 = jax.grad(lambda z: jnp.sum(losses.categorical_entropy(z)))(jnp.array([[0.5, -jnp.inf, 1.0]] * 2))
  assert np.all(np.isfinite(np.asarray(g2)))


def test_subtract_baseline_uses_the_shared_resolver():
  w = jnp.array([[1.0, 3.0], [2.0, 6.0]])
  np.testing.assert_allclose(losses.subtract_baseline(w, 0.5), w - 0.5)
  np.testing.assert_allclose(losses.subtract_baseline(w, "group_normalize"), [[-1, 1], [-1, 1]], rtol=1e-6)
  np.testing.assert_allclose(losses.subtract_baseline(w, baselines.get("leave_one_out")), [[-2, 2], [-4, 4]])
  with pytest.raises(ValueError, match="`sq_norms`"):
    losses.subtract_baseline(w, "optimal")
  with pytest.raises(ValueError, match="trajectories"):
    losses.subtract_baseline(w[:, :1], "leave_one_out")
  # NaN policy: a NaN return reaches the weights of its time step instead of being zeroed.
  out = losses.subtract_baseline(jnp.array([[1.0, jnp.nan], [2.0, 6.0]]), "group_normalize")
  assert np.isnan(np.asarray(out[0])).all() and np.all(np.isfinite(np.asarray(out[1])))
