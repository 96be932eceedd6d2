"""pgjax.algos: short training runs that must reach stated levels; vmap over seeds; config validation.

Full-length runs are experiments (experiments/cem_cartpole.py, experiments/benchmarks/reinforce_cartpole.py).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax import algos
from pgjax import envs

pytest.importorskip("gymnax")


def test_reinforce_cartpole_learns_and_vmaps_over_seeds():
  config = algos.ReinforceConfig(env="CartPole-v1", num_envs=8, num_steps=500, num_iterations=20,
                                 learning_rate=0.01)
  train = jax.jit(jax.vmap(algos.make_train(config)))
  params, metrics = train(jax.random.split(jax.random.key(0), 2))
  ret = np.asarray(metrics.episode_return)
  assert ret.shape == (2, 20)
  assert not np.array_equal(ret[0], ret[1])  # seeds differ
  # A random policy survives ~22 steps; REINFORCE with a leave-one-out baseline reaches >= 150 (measured
  # 230-410 at iteration 12 and 500 by iterations 20-30 over 4 seeds with 8 environments).
  assert ret[:, 0].max() < 40
  assert np.all(ret[:, -3:].mean(axis=1) >= 150), ret[:, -5:]
  assert np.all(np.isfinite(np.asarray(metrics.grad_norm)))
  assert jax.tree.leaves(params)[0].shape[0] == 2


def test_episode_cem_cartpole_learns():
  config = algos.EpisodeCEMConfig(env="CartPole-v1", num_episodes=16, elite_fraction=0.3,
                                  num_iterations=25, num_epochs=4)
  _, metrics = jax.jit(jax.vmap(algos.make_train(config)))(jax.random.split(jax.random.key(1), 2))
  ret = np.asarray(metrics.episode_return)
  assert ret[:, 0].max() < 40
  assert np.all(ret[:, -3:].mean(axis=1) >= 150), ret[:, -5:]
  assert np.all(np.asarray(metrics.elite_return) >= np.asarray(metrics.episode_return) - 1e-3)


def test_config_is_a_frozen_pytree_and_numeric_fields_can_be_vmapped():
  config = algos.ReinforceConfig(env="LinearSystem", policy=algos.linear_gaussian_policy(),
                                 num_envs=4, num_steps=5, num_iterations=3)
  with pytest.raises(Exception):
    config.learning_rate = 1.0  # frozen
  leaves = jax.tree.leaves(config)
  assert len(leaves) == 4  # learning_rate, discount, entropy_coef, max_grad_norm (env_params None)
  lrs = jnp.array([0.0, 0.05])

  @chex.assert_max_traces(n=1)
  def run(lr, key):
    return algos.make_train(config.replace(learning_rate=lr))(key)

  params, _ = jax.jit(jax.vmap(run, in_axes=(0, None)))(lrs, jax.random.key(0))
  np.testing.assert_allclose(params["gain"][0], 0.0)  # lr = 0: unchanged
  assert float(params["gain"][1]) != 0.0


def test_bad_configs():
  with pytest.raises(ValueError, match="num_steps"):
    algos.make_train(algos.ReinforceConfig(num_steps=0))
  with pytest.raises(ValueError, match="discount"):
    algos.make_train(algos.ReinforceConfig(discount=1.5))
  with pytest.raises(ValueError, match="baseline"):
    algos.make_train(algos.ReinforceConfig(baseline="median"))
  with pytest.raises(ValueError, match="elite_fraction"):
    algos.make_train(algos.EpisodeCEMConfig(elite_fraction=0.0))
  with pytest.raises(TypeError, match="config"):
    algos.make_train({"lr": 1})
  with pytest.raises(ValueError, match="optimizer"):
    algos.make_train(algos.ReinforceConfig(optimizer="rmsprop"))


def test_trpo_cartpole_learns():
  config = algos.NaturalPGConfig(env="CartPole-v1", method="trpo", num_envs=8, num_steps=500,
                                 num_iterations=20, max_kl=0.02)
  _, metrics = jax.jit(jax.vmap(algos.make_train(config)))(jax.random.split(jax.random.key(2), 2))
  ret = np.asarray(metrics.episode_return)
  assert ret[:, 0].max() < 40
  assert np.all(ret[:, -3:].mean(axis=1) >= 150), ret[:, -5:]
  # The line search keeps the exact KL within the radius whenever it accepts a step.
  assert np.all(np.asarray(metrics.kl) <= 0.02 * (1 + 1e-4))
  assert np.mean(np.asarray(metrics.step_fraction) > 0) > 0.5


def test_natural_pg_reaches_the_riccati_gain_faster_than_vanilla_pg():
  """Seed 001's 1-D system (s' = s + a, r = -s^2 - a^2), gamma = 0.9, 30-step episodes.

  k* = -0.588 from the discounted Riccati equation (pgjax.envs.linear_system_optimal_gain; the
  30-step finite-horizon optimum of the exact J(k, 0) is the same to 1e-3). Each method gets its best
  step size from a small grid (a vmap over the traced step-size field); after 25 iterations of 32
  episodes, measured mean |k - k*| over 4 seeds: natural PG 0.027-0.039 (step 0.15-0.2), vanilla
  (SGD) PG >= 0.119 at its best learning rate (larger rates are worse: the k-gradient explodes as
  sigma shrinks and as k approaches instability).
  """
  params = envs.LinearSystemParams(init_mean=0.0, init_std=1.0, max_steps_in_episode=30)
  k_star = float(envs.linear_system_optimal_gain(params, discount=0.9))
  common = dict(env="LinearSystem", env_params=params, policy=algos.linear_gaussian_policy(0.0, 0.0),
                num_envs=32, num_steps=30, num_iterations=25, discount=0.9, time_discount=True,
                normalize_advantages=False)
  vanilla = algos.ReinforceConfig(optimizer="sgd", max_grad_norm=jnp.inf, **common)
  natural = algos.NaturalPGConfig(method="npg", damping=1e-3, **common)
  keys = jax.random.split(jax.random.key(0), 4)

  def final_gain_error(config, field, values):
    run = lambda v, k: algos.make_train(config.replace(**{field: v}))(k)[0]["gain"]
    gains = jax.jit(jax.vmap(jax.vmap(run, in_axes=(None, 0)), in_axes=(0, None)))(jnp.array(values), keys)
    return np.abs(np.asarray(gains) - k_star).mean(axis=1)  # [grid]

  err_vanilla = final_gain_error(vanilla, "learning_rate", [0.005, 0.01, 0.02])
  err_natural = final_gain_error(natural, "step_size", [0.15, 0.2])
  assert err_natural.min() < 0.07, err_natural
  assert err_vanilla.min() > 0.1, err_vanilla
  assert err_natural.min() < 0.5 * err_vanilla.min()


def test_natural_pg_bad_config():
  with pytest.raises(ValueError, match="method"):
    algos.make_train(algos.NaturalPGConfig(method="ppo"))
  with pytest.raises(ValueError, match="cg_iters"):
    algos.make_train(algos.NaturalPGConfig(cg_iters=0))


def test_es_cartpole_improves():
  # OpenAI-ES (antithetic, centred ranks, Adam) with 32 perturbations of a 16-unit MLP. Measured over
  # 4 seeds: population mean 82-269 after 18 iterations, 424-500 after 39 (experiments for longer runs).
  config = algos.ESConfig(env="CartPole-v1", num_iterations=20, num_directions=32, sigma=0.1,
                          learning_rate=0.03)
  _, metrics = jax.jit(jax.vmap(algos.make_train(config)))(jax.random.split(jax.random.key(0), 2))
  ret = np.asarray(metrics.episode_return)
  assert np.all(ret[:, -3:].mean(axis=1) >= 60), ret[:, -5:]  # a random MLP scores ~20-40
  assert np.all(ret[:, -3:].mean(axis=1) > ret[:, :3].mean(axis=1) + 30)


def test_parameter_cem_cartpole_learns():
  # Measured over 4 seeds: population mean 270-447 after 9 generations of 32.
  config = algos.ParamCEMConfig(env="CartPole-v1", num_iterations=10, population_size=32)
  params, metrics = jax.jit(jax.vmap(algos.make_train(config)))(jax.random.split(jax.random.key(0), 2))
  ret = np.asarray(metrics.episode_return)
  assert np.all(ret[:, -2:].mean(axis=1) >= 150), ret
  assert np.all(np.asarray(metrics.max_return)[:, -1] == 500.0)
