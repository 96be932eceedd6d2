"""pgjax.rollout: time-major outputs, done masks, auto-reset, log-probs, jit/vmap, bad input."""

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax import envs

ENV = envs.LinearSystem()
PARAMS = envs.LinearSystemParams(init_mean=1.0, init_std=0.0, max_steps_in_episode=3)


def gaussian_policy(theta, obs):
  return distrax.Normal(theta["k"] * obs, jnp.exp(theta["log_std"]))


THETA = {"k": np.asarray(-0.5, np.float32), "log_std": np.asarray(-1.0, np.float32)}


def test_time_major_shapes_dones_and_auto_reset():

  @jax.jit
  def roll(key, theta):
    traj = pgjax.rollout(key, gaussian_policy, theta, ENV, PARAMS, num_steps=7)
    # Behaviour log-probs are the policy's log-density of the recorded actions.
    lp = jax.vmap(lambda o, a: gaussian_policy(theta, o).log_prob(a).sum())(traj.obs, traj.actions)
    return traj, lp

  traj, lp = jax.device_get(roll(jax.random.key(0), THETA))
  assert traj.obs.shape == (7, 1) and traj.actions.shape == (7, 1)
  for x in (traj.rewards, traj.dones, traj.log_probs, traj.terminations, traj.truncations):
    assert x.shape == (7,)
  np.testing.assert_array_equal(traj.dones, [0, 0, 1, 0, 0, 1, 0])
  np.testing.assert_array_equal(traj.truncations, traj.dones)
  assert not bool(np.any(traj.terminations))
  # Each episode starts at s0 = 1; within an episode s' = s + a.
  np.testing.assert_allclose(traj.obs[[0, 3, 6], 0], 1.0)
  np.testing.assert_allclose(traj.obs[1:3, 0], traj.obs[:2, 0] + traj.actions[:2, 0], rtol=1e-6)
  np.testing.assert_allclose(traj.rewards, -(traj.obs[:, 0] ** 2 + traj.actions[:, 0] ** 2), rtol=1e-6)
  # Behaviour log-probs are the policy's log-density of the recorded actions (lp, computed above).
  np.testing.assert_allclose(traj.log_probs, lp, rtol=1e-5)
  np.testing.assert_allclose(traj.final.obs, traj.obs[6] + traj.actions[6], rtol=1e-6)
  # next_obs: s_{t+1} before the automatic reset (s + a, also at the truncated steps 2 and 5), which
  # is obs[t + 1] wherever no episode ended.
  np.testing.assert_allclose(traj.next_obs, traj.obs + traj.actions, rtol=1e-6)
  nxt, obs = np.asarray(traj.next_obs), np.asarray(traj.obs)
  np.testing.assert_allclose(nxt[[0, 1, 3, 4]], obs[[1, 2, 4, 5]], rtol=1e-6)
  assert not np.allclose(nxt[[2, 5]], obs[[3, 6]])


def test_log_probs_carry_no_gradient():
  def f(theta):
    return jnp.sum(pgjax.rollout(jax.random.key(0), gaussian_policy, theta, ENV, PARAMS,
                                 num_steps=4).log_probs)
  g = jax.jit(jax.grad(f))(THETA)
  assert float(g["k"]) == 0.0 and float(g["log_std"]) == 0.0


def test_num_envs_and_continuation():

  @jax.jit
  def rollouts(theta):
    traj = pgjax.rollout(jax.random.key(1), gaussian_policy, theta, ENV, PARAMS, num_steps=5, num_envs=4)
    # Env i's stream equals a single rollout with key split(key, 4)[i].
    single = pgjax.rollout(jax.random.split(jax.random.key(1), 4)[2], gaussian_policy, theta, ENV,
                           PARAMS, num_steps=5)
    more = pgjax.rollout(jax.random.key(2), gaussian_policy, theta, ENV, PARAMS, num_steps=2,
                         num_envs=4, init=traj.final)
    return traj, single, more

  traj, single, more = jax.device_get(rollouts(THETA))
  assert traj.obs.shape == (5, 4, 1) and traj.rewards.shape == (5, 4) and traj.next_obs.shape == (5, 4, 1)
  assert traj.final.obs.shape == (4, 1)
  np.testing.assert_allclose(traj.actions[:, 2], single.actions, rtol=1e-6)
  np.testing.assert_allclose(more.obs[0], traj.final.obs)
  # 5 steps then 2: the episode that started at t=3 ends at the 6th step overall (index 0 here).
  np.testing.assert_array_equal(more.dones[:, 0], [True, False])


def test_jit_vmap_and_no_retrace():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(key, theta):
    return pgjax.rollout(key, gaussian_policy, theta, ENV, PARAMS, num_steps=6).rewards.sum()

  keys = jax.random.split(jax.random.key(0), 8)
  a = jax.vmap(run, in_axes=(0, None))(keys, THETA)
  b = jax.vmap(run, in_axes=(0, None))(keys, THETA)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (8,)


def test_flax_linen_policy_on_cartpole():
  gymnax = pytest.importorskip("gymnax")
  env, env_params = gymnax.make("CartPole-v1")

  class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(2)(nn.tanh(nn.Dense(16)(x)))

  model = MLP()
  apply = lambda p, o: distrax.Categorical(logits=model.apply(p, o))

  @jax.jit
  def init_and_roll(env_params):
    params = model.init(jax.random.key(0), jnp.zeros(4))
    return pgjax.rollout(jax.random.key(1), apply, params, env, env_params, num_steps=50, num_envs=3)

  traj = init_and_roll(env_params)
  assert traj.obs.shape == (50, 3, 4) and traj.actions.dtype == jnp.int32


def test_bad_input():
  with pytest.raises(ValueError, match="num_steps"):
    pgjax.rollout(jax.random.key(0), gaussian_policy, THETA, ENV, PARAMS, num_steps=0)
  with pytest.raises(ValueError, match="num_envs"):
    pgjax.rollout(jax.random.key(0), gaussian_policy, THETA, ENV, PARAMS, num_steps=2, num_envs=0)
  scalar_policy = lambda th, o: distrax.Normal(th["k"] * o[0], 1.0)  # action shape () != (1,)
  with pytest.raises(ValueError, match="action"):
    pgjax.rollout(jax.random.key(0), scalar_policy, THETA, ENV, PARAMS, num_steps=2)
  with pytest.raises(TypeError, match="policy_apply"):
    pgjax.rollout(jax.random.key(0), None, THETA, ENV, PARAMS, num_steps=2)
  with pytest.raises(TypeError, match="env"):
    pgjax.rollout(jax.random.key(0), gaussian_policy, THETA, object(), PARAMS, num_steps=2)
  with pytest.raises(TypeError, match="key"):
    pgjax.rollout(0, gaussian_policy, THETA, ENV, PARAMS, num_steps=2)


def test_flax_nnx_policy_via_split_merge():
  from flax import nnx

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.linear = nnx.Linear(1, 1, rngs=rngs)

    def __call__(self, x):
      return self.linear(x)

  graphdef, state = nnx.split(Net(nnx.Rngs(0)))
  apply = lambda s, o: distrax.MultivariateNormalDiag(nnx.merge(graphdef, s)(o), jnp.ones(1))

  @jax.jit
  def roll_and_grad(state):
    traj = pgjax.rollout(jax.random.key(0), apply, state, ENV, PARAMS, num_steps=4)
    # the loss is differentiable with respect to the nnx state (a pytree)
    loss = lambda s: jnp.sum(jax.vmap(lambda o, a: apply(s, o).log_prob(a))(traj.obs, traj.actions))
    return traj, jax.grad(loss)(state)

  traj, g = roll_and_grad(state)
  assert traj.actions.shape == (4, 1)
  assert all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(g))
