r"""Trajectory policy-gradient estimators on a tiny tabular MDP whose J(theta) is exact.

J_H(theta) = mu^T (I - gamma P_pi)^{-1} (I - (gamma P_pi)^H) r_pi (the H-step discounted return; H is
the rollout horizon, so the target has no truncation error) is differentiated by ``jax.grad``. Every
estimator is evaluated on the same R independent replicates (one trajectory each) in ONE compiled,
vmapped call, and checked with pgjax.testing's criterion: |mean_k - target_k| <= 5 SE_k for every
coordinate k, with a power control that must fail the same check.
"""

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax import envs
from pgjax import losses

S, A, H, GAMMA, REPLICATES = 3, 2, 6, 0.8, 10000
ENV = envs.TabularMDP(S, A)


@jax.jit
def _problem():  # one compiled program at import (both test workers import the module), not ~30 eager ones
  theta = 0.5 * jax.random.normal(jax.random.key(2), (S, A))
  return (envs.random_tabular_mdp(jax.random.key(1), S, A, max_steps_in_episode=H), theta,
          theta + 0.3 * jax.random.normal(jax.random.key(5), (S, A)),  # behaviour policies
          theta + 1.5 * jax.random.normal(jax.random.key(6), (S, A)))


MDP, THETA, CLOSE, FAR = _problem()


def exact_return(theta):
  pi = jax.nn.softmax(theta)
  p_pi = jnp.einsum("sa,sat->st", pi, MDP.transitions)
  r_pi = jnp.sum(pi * MDP.rewards, -1)
  eye = jnp.eye(S)
  return MDP.initial @ jnp.linalg.solve(eye - GAMMA * p_pi,
                                        (eye - jnp.linalg.matrix_power(GAMMA * p_pi, H)) @ r_pi)


TRUE_GRAD = jax.jit(jax.grad(exact_return))(THETA)


def policy(theta, s):
  return distrax.Categorical(logits=theta[s])


def _grad(loss_fn, traj):
  def loss(th):
    lp = jax.nn.log_softmax(th)[traj.obs, traj.actions]
    return loss_fn(lp, traj)
  return -jax.grad(loss)(THETA)  # minus the loss gradient = the estimate of grad J


ON_POLICY = {
    "full_return": lambda lp, t: losses.reinforce_loss(lp, t.rewards, t.dones, discount=GAMMA,
                                                       reward_to_go=False),
    "reward_to_go": lambda lp, t: losses.reinforce_loss(lp, t.rewards, t.dones, discount=GAMMA,
                                                        time_discount=True),
    # Power control: dropping gamma^t from the reward-to-go estimator is a known bias (Thomas 2014).
    "reward_to_go_no_time_discount": lambda lp, t: losses.reinforce_loss(lp, t.rewards, t.dones,
                                                                         discount=GAMMA),
}


def _off(form):
  return lambda lp, t: losses.importance_weighted_loss(lp, t.log_probs, t.rewards, t.dones, form=form,
                                                       discount=GAMMA, time_discount=True)


OFF_POLICY = {"trajectory": _off("trajectory"), "per_decision": _off("per_decision"),
              "per_step": _off("per_step"),
              # Power control: behaviour data used as if on-policy (no importance weights).
              "no_correction": ON_POLICY["reward_to_go"]}


@pytest.fixture(scope="module")
def samples():
  """{name: [R, S, A]} gradient estimates, all from one compiled vmapped function."""

  def one(key):
    k_on, k_close, k_far = jax.random.split(key, 3)
    out = {}
    t_on = pgjax.rollout(k_on, policy, THETA, ENV, MDP, num_steps=H)
    for name, fn in ON_POLICY.items():
      out[name] = _grad(fn, t_on)
    for tag, behaviour, k in (("close", CLOSE, k_close), ("far", FAR, k_far)):
      t_b = pgjax.rollout(k, policy, behaviour, ENV, MDP, num_steps=H)
      for name, fn in OFF_POLICY.items():
        out[f"{name}/{tag}"] = _grad(fn, t_b)
    return out

  keys = jax.random.split(jax.random.key(0), REPLICATES)
  return jax.tree.map(np.asarray, jax.jit(jax.vmap(one))(keys))


def _stats(g):
  g = g.reshape(g.shape[0], -1).astype(np.float64)
  n = g.shape[0]
  mean = g.mean(0)
  se = g.std(0, ddof=1) / math.sqrt(n)
  d = np.sum((g - mean) ** 2, axis=1)  # total variance and its SE
  return mean, se, d.mean() * n / (n - 1), d.std(ddof=1) / math.sqrt(n)


def _unbiased(g, target=TRUE_GRAD, num_se=5.0):
  mean, se, _, _ = _stats(g)
  return bool(np.all(np.abs(mean - np.asarray(target).ravel()) <= num_se * se + 1e-6))


def test_exact_objective_two_ways():
  # (I - gamma P)^-1 form against the step-by-step sum of pgjax.envs.tabular_expected_return
  f_sum = lambda th: envs.tabular_expected_return(MDP, jax.nn.softmax(th), discount=GAMMA, horizon=H)
  np.testing.assert_allclose(exact_return(THETA), f_sum(THETA), rtol=1e-5)
  np.testing.assert_allclose(TRUE_GRAD, jax.grad(f_sum)(THETA), rtol=1e-4, atol=1e-6)


def test_reinforce_full_return_and_reward_to_go_unbiased(samples):
  assert _unbiased(samples["full_return"])
  assert _unbiased(samples["reward_to_go"])
  # Power controls: a known-biased estimator and a wrong target fail the same check.
  assert not _unbiased(samples["reward_to_go_no_time_discount"])
  assert not _unbiased(samples["reward_to_go"], target=jax.grad(exact_return)(CLOSE))


def test_reward_to_go_has_lower_variance(samples):
  _, _, v_rtg, se_rtg = _stats(samples["reward_to_go"])
  _, _, v_full, se_full = _stats(samples["full_return"])
  # measured about 0.36x; claim < 0.6x with 5-SE margins on both sides
  assert v_rtg + 5 * se_rtg < 0.6 * (v_full - 5 * se_full), (v_rtg, se_rtg, v_full, se_full)


def test_trajectory_and_per_decision_importance_sampling_unbiased_off_policy(samples):
  for tag in ("close", "far"):
    assert _unbiased(samples[f"trajectory/{tag}"]), tag
    assert _unbiased(samples[f"per_decision/{tag}"]), tag
    assert not _unbiased(samples[f"no_correction/{tag}"]), tag  # power control
  # (The variance comparison of the three forms against the horizon is experiments/importance_sampling.py:
  # the trajectory ratio's variance is heavy-tailed, so its sample variance has a huge SE at this size.)


def test_per_step_bias_is_measured_and_small_when_close(samples):
  norm = float(np.linalg.norm(TRUE_GRAD))
  bias = {}
  for tag in ("close", "far"):
    mean, se, _, _ = _stats(samples[f"per_step/{tag}"])
    err = mean - np.asarray(TRUE_GRAD).ravel()
    bias[tag] = (float(np.linalg.norm(err)), float(np.linalg.norm(se)))
  b_close, se_close = bias["close"]
  # relative bias below 10% of |grad J| (plus 5 SE of the estimate) for nearby policies
  assert b_close < 0.1 * norm + 5 * se_close, (bias, norm)
  b_far, se_far = bias["far"]
  assert b_far < 0.25 * norm + 5 * se_far, (bias, norm)  # measured 0.06 |grad J| at this shift
  print(f"per-step bias |E g - grad J| / |grad J|: close {b_close / norm:.3f}, far {b_far / norm:.3f}")
