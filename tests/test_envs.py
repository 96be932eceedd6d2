"""pgjax.envs: stated dynamics, exact objectives (closed forms and Monte Carlo at 5 SE), gymnax protocol."""

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax import envs


def _mc_check(samples, target, wrong_target):
  """|mean - target| <= 5 SE, and the wrong target must fail the same check (power control)."""
  samples = np.asarray(samples, np.float64)
  mean, se = samples.mean(), samples.std(ddof=1) / math.sqrt(samples.size)
  assert abs(mean - target) <= 5 * se, (mean, target, se)
  assert abs(mean - wrong_target) > 5 * se, (mean, wrong_target, se)


def test_linear_system_dynamics_and_reward():
  env = envs.LinearSystem()
  params = envs.LinearSystemParams(init_mean=2.0, init_std=0.0, max_steps_in_episode=2)
  obs, state = env.reset(jax.random.key(0), params)
  np.testing.assert_allclose(obs, [2.0])
  obs, state, r, term, trunc, info = env.step(jax.random.key(1), state, jnp.array([-0.5]), params)
  np.testing.assert_allclose(obs, [1.5])  # s' = s + a
  np.testing.assert_allclose(r, -(4.0 + 0.25))  # -s^2 - a^2
  assert not term and not trunc
  obs, state, r, term, trunc, info = env.step(jax.random.key(2), state, jnp.array([-1.5]), params)
  np.testing.assert_allclose(r, -(2.25 + 2.25))
  assert trunc and not term
  np.testing.assert_allclose(info["final_observation"], [0.0])
  np.testing.assert_allclose(obs, [2.0])  # auto-reset
  assert int(state.time) == 0


def test_linear_system_action_shape_checked():
  env = envs.LinearSystem()
  _, state = env.reset(jax.random.key(0))
  with pytest.raises(ValueError, match="action"):
    env.step(jax.random.key(1), state, jnp.zeros((2,)))


def test_optimal_gain_closed_form_and_numerical_optimum():
  p = envs.LinearSystemParams()
  np.testing.assert_allclose(envs.linear_system_optimal_gain(p), -(math.sqrt(5) - 1) / 2, rtol=1e-5)
  # Independent check: minimise the exact long-horizon return over a grid of gains (sigma = 0).
  for gamma in (1.0, 0.7):
    ks = jnp.linspace(-1.5, 0.0, 3001)
    js = jax.vmap(lambda k: envs.linear_system_expected_return(p, k, 0.0, horizon=300,
                                                              discount=gamma))(ks)
    k_grid = float(ks[jnp.argmax(js)])
    assert abs(k_grid - float(envs.linear_system_optimal_gain(p, discount=gamma))) < 2e-3


def test_linear_system_expected_return_matches_rollouts():
  env = envs.LinearSystem()
  params = envs.LinearSystemParams(init_mean=1.0, init_std=0.5, max_steps_in_episode=8)
  k, sigma = -0.4, 0.3

  def policy(theta, obs):
    return distrax.Normal(theta[0] * obs, theta[1])

  def ret(key):
    traj = envs.rollout(key, policy, jnp.array([k, sigma]), env, params, num_steps=8)
    return jnp.sum(0.9 ** jnp.arange(8) * traj.rewards)

  samples = jax.jit(jax.vmap(ret))(jax.random.split(jax.random.key(0), 4000))
  exact = envs.linear_system_expected_return(params, k, sigma, horizon=8, discount=0.9)
  wrong = envs.linear_system_expected_return(params, k + 0.1, sigma, horizon=8, discount=0.9)
  _mc_check(samples, float(exact), float(wrong))


def test_env_params_are_vmappable():
  env = envs.LinearSystem()
  params = jax.vmap(lambda m: envs.LinearSystemParams(init_mean=m, init_std=0.0))(jnp.arange(3.0))
  obs, _ = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 3), params)
  np.testing.assert_allclose(obs[:, 0], [0.0, 1.0, 2.0])


def test_classification_bandit_reward_is_correctness():
  env = envs.ClassificationBandit(num_classes=3)
  feats = jnp.arange(12.0).reshape(4, 3)
  labels = jnp.array([2, 0, 1, 1])
  params = envs.ClassificationBanditParams(features=feats, labels=labels)
  obs, state = env.reset(jax.random.key(0), params)
  np.testing.assert_allclose(obs, feats[state.index])
  y = labels[state.index]
  _, _, r, term, trunc, _ = env.step(jax.random.key(1), state, y, params)
  assert float(r) == 1.0 and bool(term)
  _, _, r, _, _, _ = env.step(jax.random.key(1), state, (y + 1) % 3, params)
  assert float(r) == 0.0
  with pytest.raises(ValueError, match="action"):
    env.step(jax.random.key(1), state, jnp.zeros((1,), jnp.int32), params)
  # Uniform policy: expected reward 1/3 exactly; rollouts agree at 5 SE.
  uniform = lambda _, obs: distrax.Categorical(logits=jnp.zeros(3))
  traj = envs.rollout(jax.random.key(2), uniform, None, env, params, num_steps=3000)
  assert bool(jnp.all(traj.terminations))
  _mc_check(traj.rewards, 1 / 3, 0.25)


def test_tabular_expected_return_solve_equals_sum_and_rollouts():
  env = envs.TabularMDP(3, 2)
  params = envs.random_tabular_mdp(jax.random.key(1), 3, 2, max_steps_in_episode=6)
  pi = jax.nn.softmax(jax.random.normal(jax.random.key(2), (3, 2)))
  j_inf = envs.tabular_expected_return(params, pi, discount=0.8)
  j_long = envs.tabular_expected_return(params, pi, discount=0.8, horizon=200)
  np.testing.assert_allclose(j_long, j_inf, rtol=1e-5)
  # Hand-checkable horizon 1: mu^T r_pi
  np.testing.assert_allclose(envs.tabular_expected_return(params, pi, discount=0.8, horizon=1),
                             params.initial @ jnp.sum(pi * params.rewards, -1), rtol=1e-6)
  policy = lambda logp, s: distrax.Categorical(logits=logp[s])

  def ret(key):
    traj = envs.rollout(key, policy, jnp.log(pi), env, params, num_steps=6)
    return jnp.sum(0.8 ** jnp.arange(6) * traj.rewards)

  samples = jax.jit(jax.vmap(ret))(jax.random.split(jax.random.key(3), 4000))
  j6 = envs.tabular_expected_return(params, pi, discount=0.8, horizon=6)
  _mc_check(samples, float(j6), float(j6) + 0.1)
  with pytest.raises(ValueError, match="policy_probs"):
    envs.tabular_expected_return(params, pi[:2], discount=0.8)


def test_gymnax_cartpole_plugs_in_unchanged():
  gymnax = pytest.importorskip("gymnax")
  env, env_params = gymnax.make("CartPole-v1")
  obs, state = env.reset(jax.random.key(0), env_params)
  out = env.step(jax.random.key(1), state, 1, env_params)
  assert len(out) == 6  # gymnax 1.0: obs, state, reward, terminated, truncated, info
  policy = lambda w, o: distrax.Categorical(logits=o @ w)
  traj = envs.rollout(jax.random.key(2), policy, jnp.zeros((4, 2)), env, env_params, num_steps=100)
  assert traj.obs.shape == (100, 4) and traj.actions.shape == (100,)
  assert bool(jnp.any(traj.dones))  # a random policy falls within 100 steps
  np.testing.assert_allclose(traj.rewards, 1.0)
  np.testing.assert_allclose(traj.log_probs, math.log(0.5), rtol=1e-6)
  # The step after a done starts a fresh episode: |state| <= 0.05.
  after = jnp.roll(traj.dones, 1).at[0].set(False)
  assert bool(jnp.all(jnp.where(after[:, None], jnp.abs(traj.obs) <= 0.05, True)))
