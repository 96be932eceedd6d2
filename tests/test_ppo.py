"""Actor-critic trainers (PPO, A2C) and their shared pieces, against hand-computed values and short training runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax import algos


def test_value_loss_matches_hand_computed_values():
  v = jnp.array([1.0, 2.0, -1.0])
  old = jnp.array([0.5, 2.5, -1.0])
  g = jnp.array([2.0, 1.0, 0.0])
  np.testing.assert_allclose(algos.value_loss(v, g), 0.5 * np.mean([1.0, 1.0, 1.0]), rtol=1e-6)
  # clip 0.2: clipped values 0.7, 2.3, -1.0 -> squared errors 1.69, 1.69, 1.0; max with unclipped 1, 1, 1.
  np.testing.assert_allclose(algos.value_loss(v, g, old_values=old, clip_epsilon=0.2),
                             0.5 * np.mean([1.69, 1.69, 1.0]), rtol=1e-6)
  grad = jax.grad(lambda t: algos.value_loss(v, t))(g)                 # targets are held constant
  np.testing.assert_array_equal(grad, 0.0)
  with pytest.raises(ValueError, match="old_values"):
    algos.value_loss(v, g, clip_epsilon=0.2)


def test_running_episode_returns_count_steps_from_earlier_windows():
  rewards = jnp.ones((4, 2))
  dones = jnp.array([[False, False], [True, False], [False, False], [False, True]])
  mean, n, running = algos.running_episode_returns(rewards, dones, jnp.array([10.0, 0.0]))
  # env 0: episode ends at t=1 with 10 + 2 = 12, then 2 more steps carried; env 1: ends at t=3 with 4.
  np.testing.assert_allclose(mean, (12.0 + 4.0) / 2)
  assert int(n) == 2
  np.testing.assert_allclose(running, [2.0, 0.0])
  mean, n, _ = algos.running_episode_returns(rewards, jnp.zeros((4, 2), bool), jnp.zeros(2))
  assert int(n) == 0 and bool(jnp.isnan(mean))


@pytest.mark.parametrize("num_updates,every", [(10, 3), (9, 3), (2, 5)])
def test_scan_with_evaluation_evaluates_after_every_block_and_at_the_end(num_updates, every):
  update = lambda c, k: (c + 1, c)
  evaluate = lambda k, c: c.astype(jnp.float32)
  carry, metrics, evals = algos.scan_with_evaluation(update, evaluate, jnp.zeros((), jnp.int32),
                                                     jax.random.key(0), num_updates=num_updates,
                                                     eval_every=every)
  assert int(carry) == num_updates
  np.testing.assert_array_equal(metrics, np.arange(num_updates))
  expected = list(range(every, num_updates + 1, every))
  if num_updates % every:
    expected.append(num_updates)
  np.testing.assert_array_equal(evals, expected)


@pytest.fixture(scope="module")
def ppo_run():
  cfg = algos.PPOConfig(num_updates=50, eval_every=25, eval_episodes=4)
  params, metrics = jax.jit(jax.vmap(algos.make_train(cfg)))(jax.random.split(jax.random.key(1), 2))
  return cfg, params, metrics


def test_ppo_learns_cartpole_within_fifty_updates(ppo_run):
  """50 updates x 512 steps: the greedy policy of an untrained net returns ~10; PPO reaches >= 200."""
  _, _, metrics = ppo_run
  evals = np.asarray(metrics.eval_return)
  assert evals.shape == (2, 2)
  assert np.all(evals[:, -1] >= 200.0), evals
  assert np.all(np.isfinite(np.asarray(metrics.approx_kl)))
  assert np.all(np.asarray(metrics.clip_fraction) <= 1.0)
  kl = np.asarray(metrics.approx_kl)
  assert np.max(np.abs(kl)) < 0.1                                  # the clipped surrogate keeps steps small


def test_a2c_and_shared_torso_train_and_keep_structure():
  env, env_params = algos.make_env("CartPole-v1")
  ac = algos.mlp_actor_critic(env, env_params, (32,), shared_torso=True)
  params = ac.init(jax.random.key(0))
  assert "critic_torso" not in params["net"]["params"]
  dist, value = ac.apply(params, jnp.zeros((5, 4)))
  assert value.shape == (5,) and dist.batch_shape == (5,)
  cfg = algos.A2CConfig(actor_critic=ac, num_updates=150, eval_every=150, eval_episodes=4)
  _, metrics = jax.jit(jax.vmap(algos.make_train(cfg)))(jax.random.split(jax.random.key(2), 2))
  assert np.all(np.asarray(metrics.eval_return)[:, -1] >= 40.0), metrics.eval_return   # untrained: ~10
  with pytest.raises(ValueError, match="num_minibatches"):
    algos.make_train(algos.PPOConfig(num_envs=3, num_steps=5, num_minibatches=4))
