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

  @jax.jit
  def episode():
    obs, state = env.reset(jax.random.key(0), params)
    first = env.step(jax.random.key(1), state, jnp.array([-0.5]), params)
    return obs, first, env.step(jax.random.key(2), first[1], jnp.array([-1.5]), params)

  obs, first, second = episode()
  np.testing.assert_allclose(obs, [2.0])
  obs, state, r, term, trunc, info = first
  np.testing.assert_allclose(obs, [1.5])  # s' = s + a
  np.testing.assert_allclose(r, -(4.0 + 0.25))  # -s^2 - a^2
  assert not term and not trunc
  obs, state, r, term, trunc, info = second
  np.testing.assert_allclose(r, -(2.25 + 2.25))
  assert trunc and not term
  np.testing.assert_allclose(info["final_observation"], [0.0])
  np.testing.assert_allclose(obs, [2.0])  # auto-reset
  assert int(state.time) == 0


def test_linear_system_action_shape_checked():
  env = envs.LinearSystem()
  _, state = jax.jit(env.reset)(jax.random.key(0))
  with pytest.raises(ValueError, match="action"):
    env.step(jax.random.key(1), state, jnp.zeros((2,)))


def test_optimal_gain_closed_form_and_numerical_optimum():
  p = envs.LinearSystemParams()
  gammas = (1.0, 0.7)
  ks = np.linspace(-1.5, 0.0, 3001, dtype=np.float32)

  @jax.jit
  def gains_and_returns(ks):
    optimal = [envs.linear_system_optimal_gain(p, discount=gamma) for gamma in gammas]
    returns = [jax.vmap(lambda k: envs.linear_system_expected_return(p, k, 0.0, horizon=300, discount=gamma))(ks)
               for gamma in gammas]
    return envs.linear_system_optimal_gain(p), optimal, returns

  k_star, optimal, returns = gains_and_returns(ks)
  np.testing.assert_allclose(k_star, -(math.sqrt(5) - 1) / 2, rtol=1e-5)
  # Independent check: minimise the exact long-horizon return over a grid of gains (sigma = 0).
  for k_opt, js in zip(optimal, returns):
    k_grid = float(ks[np.argmax(np.asarray(js))])
    assert abs(k_grid - float(k_opt)) < 2e-3


def test_linear_system_expected_return_matches_rollouts():
  env = envs.LinearSystem()
  params = envs.LinearSystemParams(init_mean=1.0, init_std=0.5, max_steps_in_episode=8)
  k, sigma = -0.4, 0.3

  def policy(theta, obs):
    return distrax.Normal(theta[0] * obs, theta[1])

  def ret(key):
    traj = envs.rollout(key, policy, jnp.array([k, sigma]), env, params, num_steps=8)
    return jnp.sum(0.9 ** jnp.arange(8) * traj.rewards)

  samples, exact, wrong = jax.jit(lambda key: (
      jax.vmap(ret)(jax.random.split(key, 4000)),
      envs.linear_system_expected_return(params, k, sigma, horizon=8, discount=0.9),
      envs.linear_system_expected_return(params, k + 0.1, sigma, horizon=8, discount=0.9)))(jax.random.key(0))
  _mc_check(samples, float(exact), float(wrong))


def test_env_params_are_vmappable():
  env = envs.LinearSystem()


  @jax.jit
  def reset_each(key, means):
    params = jax.vmap(lambda m: envs.LinearSystemParams(init_mean=m, init_std=0.0))(means)
    return jax.vmap(env.reset)(jax.random.split(key, 3), params)[0]

  obs = reset_each(jax.random.key(0), np.arange(3.0, dtype=np.float32))
  np.testing.assert_allclose(np.asarray(obs)[:, 0], [0.0, 1.0, 2.0])


def test_classification_bandit_reward_is_correctness():
  env = envs.ClassificationBandit(num_classes=3)
  feats = np.arange(12.0, dtype=np.float32).reshape(4, 3)
  labels = np.array([2, 0, 1, 1], np.int32)
  params = envs.ClassificationBanditParams(features=feats, labels=labels)
  # Uniform policy: expected reward 1/3 exactly; rollouts agree at 5 SE.
  uniform = lambda _, obs: distrax.Categorical(logits=jnp.zeros(3))

  @jax.jit
  def play(params):
    obs, state = env.reset(jax.random.key(0), params)
    y = params.labels[state.index]
    r_right, term = env.step(jax.random.key(1), state, y, params)[2:4]
    r_wrong = env.step(jax.random.key(1), state, (y + 1) % 3, params)[2]
    traj = envs.rollout(jax.random.key(2), uniform, None, env, params, num_steps=3000)
    return obs, state, r_right, term, r_wrong, traj

  obs, state, r_right, term, r_wrong, traj = play(params)
  np.testing.assert_allclose(obs, feats[int(state.index)])
  assert float(r_right) == 1.0 and bool(term)
  assert float(r_wrong) == 0.0
  with pytest.raises(ValueError, match="action"):
    env.step(jax.random.key(1), state, jnp.zeros((1,), jnp.int32), params)
  assert bool(np.all(np.asarray(traj.terminations)))
  _mc_check(traj.rewards, 1 / 3, 0.25)


def test_tabular_expected_return_solve_equals_sum_and_rollouts():
  env = envs.TabularMDP(3, 2)
  params = envs.random_tabular_mdp(jax.random.key(1), 3, 2, max_steps_in_episode=6)
  policy = lambda logp, s: distrax.Categorical(logits=logp[s])

  @jax.jit
  def exact_and_sampled(params, key_pi, key_mc):
    pi = jax.nn.softmax(jax.random.normal(key_pi, (3, 2)))
    exact = [envs.tabular_expected_return(params, pi, discount=0.8, horizon=h) for h in (None, 200, 1, 6)]

    def ret(key):
      traj = envs.rollout(key, policy, jnp.log(pi), env, params, num_steps=6)
      return jnp.sum(0.8 ** jnp.arange(6) * traj.rewards)

    return pi, exact, jax.vmap(ret)(jax.random.split(key_mc, 4000))

  pi, (j_inf, j_long, j1, j6), samples = exact_and_sampled(params, jax.random.key(2), jax.random.key(3))
  pi = np.asarray(pi)
  np.testing.assert_allclose(j_long, j_inf, rtol=1e-5)
  # Hand-checkable horizon 1: mu^T r_pi
  np.testing.assert_allclose(j1, np.asarray(params.initial) @ np.sum(pi * np.asarray(params.rewards), -1),
                             rtol=1e-6)
  _mc_check(samples, float(j6), float(j6) + 0.1)
  with pytest.raises(ValueError, match="policy_probs"):
    envs.tabular_expected_return(params, pi[:2], discount=0.8)


def test_gymnax_cartpole_plugs_in_unchanged():
  gymnax = pytest.importorskip("gymnax")
  env, env_params = gymnax.make("CartPole-v1")
  policy = lambda w, o: distrax.Categorical(logits=o @ w)

  @jax.jit
  def step_and_roll(env_params):
    obs, state = env.reset(jax.random.key(0), env_params)
    out = env.step(jax.random.key(1), state, 1, env_params)
    return out, envs.rollout(jax.random.key(2), policy, jnp.zeros((4, 2)), env, env_params, num_steps=100)

  out, traj = step_and_roll(env_params)
  assert len(out) == 6  # gymnax 1.0: obs, state, reward, terminated, truncated, info
  assert traj.obs.shape == (100, 4) and traj.actions.shape == (100,)
  dones, obs = np.asarray(traj.dones), np.asarray(traj.obs)
  assert bool(np.any(dones))  # a random policy falls within 100 steps
  np.testing.assert_allclose(traj.rewards, 1.0)
  np.testing.assert_allclose(traj.log_probs, math.log(0.5), rtol=1e-6)
  # The step after a done starts a fresh episode: |state| <= 0.05.
  after = np.roll(dones, 1)
  after[0] = False
  assert bool(np.all(np.where(after[:, None], np.abs(obs) <= 0.05, True)))
