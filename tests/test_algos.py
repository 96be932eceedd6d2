"""pgjax.algos: short training runs that must improve by stated margins; vmap over seeds; config validation.

Each trainer runs a few iterations on the 1-D linear system :math:`s' = s + a`, :math:`r = -s^2 - a^2`
(20-step episodes, :math:`s_0 \\sim N(0, 1)`) from the gain :math:`k = 0`, and must bring :math:`k` toward
the Riccati gain :math:`k^* = -(\\sqrt5 - 1)/2 \\approx -0.618` (:func:`pgjax.envs.linear_system_optimal_gain`)
for every one of 8 seeds. Long training curves (CartPole to 500, natural vs vanilla policy gradient) are
claims of the experiments (``experiments/``), not tests.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax import algos
from pgjax import envs

pytest.importorskip("gymnax")

LINEAR = envs.LinearSystemParams(init_mean=0.0, init_std=1.0, max_steps_in_episode=20)
K_STAR = -(np.sqrt(5.0) - 1.0) / 2.0
_COMMON = dict(env="LinearSystem", env_params=LINEAR, policy=algos.linear_gaussian_policy(0.0, 0.0), num_steps=20,
               num_iterations=10)

# name: (config, bound on max over 8 seeds of |k - k*| after 10 iterations; the start is |0 - k*| = 0.618).
# Measured maxima over the 8 seeds of key 0: REINFORCE 0.20, NPG 0.36, TRPO 0.31, ES 0.14, parameter CEM
# 0.25, episode CEM 0.31, SNES 0.48; with the learned critic (lambda = 1, no truncation bootstrap: the
# 20-step return is the objective): REINFORCE 0.31, TRPO 0.35.
# Every config also evaluates the greedy policy after iterations 5 and 10 (eval_return), which must match the
# exact return of the final gain.
_EVAL = dict(eval_every=5, eval_episodes=4096, eval_max_steps=20)
_CRITIC = dict(critic=True, gae_lambda=1.0, bootstrap_truncation=False, critic_learning_rate=0.01,
               critic_steps=10, critic_hidden_sizes=(16,))
# The exact return of each seed's final gain, in one compiled call (one program for every trainer).
_EXACT_RETURNS = jax.jit(jax.vmap(lambda k: envs.linear_system_expected_return(LINEAR, k, 0.0, horizon=20)))
TRAINERS = {
    "reinforce": (algos.ReinforceConfig(num_envs=16, learning_rate=0.05, **_COMMON, **_EVAL), 0.3),
    "reinforce_critic": (
        algos.ReinforceConfig(num_envs=16, learning_rate=0.05, **_COMMON, **_EVAL, **_CRITIC), 0.45),
    "npg": (algos.NaturalPGConfig(method="npg", num_envs=16, step_size=0.3, **_COMMON, **_EVAL), 0.45),
    "trpo": (algos.NaturalPGConfig(method="trpo", num_envs=16, max_kl=0.02, **_COMMON, **_EVAL), 0.45),
    "trpo_critic": (
        algos.NaturalPGConfig(method="trpo", num_envs=16, max_kl=0.02, **_COMMON, **_EVAL, **_CRITIC), 0.45),
    "es": (algos.ESConfig(num_directions=16, sigma=0.1, learning_rate=0.05, **_COMMON, **_EVAL), 0.3),
    "param_cem": (algos.ParamCEMConfig(population_size=16, **_COMMON, **_EVAL), 0.4),
    "episode_cem": (
        algos.EpisodeCEMConfig(num_episodes=16, elite_fraction=0.25, num_epochs=4, **_COMMON, **_EVAL), 0.45),
    "nes": (algos.NESConfig(population_size=16, **_COMMON, **_EVAL), 0.6),
}


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_trainer_moves_the_gain_toward_the_riccati_gain(name):
  config, bound = TRAINERS[name]
  params, metrics = jax.jit(jax.vmap(algos.make_train(config)))(jax.random.split(jax.random.key(0), 8))
  gain = np.asarray(params["gain"])
  err = np.abs(gain - K_STAR)
  assert err.shape == (8,)
  assert np.all(err < bound), err                       # from 0.618 at the start
  assert len(np.unique(gain)) == 8   # seeds differ
  assert np.all(np.isfinite(np.asarray(jax.tree.leaves(metrics)[0])))
  if name == "nes":   # best-so-far never decreases
    assert np.all(np.diff(np.asarray(metrics.best_return), axis=1) >= 0), metrics.best_return
  # eval_return: [seeds, ceil(10 / 5)], the last after the final update. The greedy return of gain k is
  # -c s_0^2 with s_0 ~ N(0, 1): the mean of 4096 episodes has relative standard error sqrt(2 / 4096).
  evals = np.asarray(metrics.eval_return)
  assert evals.shape == (8, 2)
  exact = np.asarray(_EXACT_RETURNS(gain))
  tol = 5 * np.sqrt(2.0 / 4096)
  assert np.all(np.abs(evals[:, -1] / exact - 1.0) < tol), (evals[:, -1], exact)
  assert not np.any(np.abs(evals[:, -1] / (1.2 * exact) - 1.0) < tol)   # power: a 20% error would fail


def test_reinforce_cartpole_improves_in_a_few_iterations():
  """Discrete actions and the MLP policy: a random policy survives ~22 steps; after 7 iterations of 8
  environments the first-episode return has at least doubled (measured: 24 -> 61-95 over 4 seeds)."""
  config = algos.ReinforceConfig(env="CartPole-v1", num_envs=8, num_steps=200, num_iterations=7,
                                 learning_rate=0.01)
  _, metrics = jax.jit(jax.vmap(algos.make_train(config)))(jax.random.split(jax.random.key(0), 2))
  ret = np.asarray(metrics.episode_return)
  assert ret.shape == (2, 7)
  assert ret[:, 0].max() < 40
  assert np.all(ret[:, -2:].mean(axis=1) >= 2 * ret[:, :2].mean(axis=1)), ret
  assert np.all(np.isfinite(np.asarray(metrics.grad_norm)))


def test_config_is_a_frozen_pytree_and_numeric_fields_can_be_vmapped():
  config = algos.ReinforceConfig(env="LinearSystem", policy=algos.linear_gaussian_policy(),
                                 num_envs=4, num_steps=5, num_iterations=3)
  with pytest.raises(Exception):
    config.learning_rate = 1.0  # frozen
  leaves = jax.tree.leaves(config)
  # learning_rate, discount, entropy_coef, max_grad_norm, critic_learning_rate, gae_lambda (env_params None)
  assert len(leaves) == 6
  lrs = jnp.array([0.0, 0.05])

  @chex.assert_max_traces(n=1)
  def run(lr, key):
    return algos.make_train(config.replace(learning_rate=lr))(key)

  params, _ = jax.jit(jax.vmap(run, in_axes=(0, None)))(lrs, jax.random.key(0))
  np.testing.assert_allclose(params["gain"][0], 0.0)  # lr = 0: unchanged
  assert float(params["gain"][1]) != 0.0


def test_trainers_take_any_shared_baseline():
  """The trainers resolve `baseline` through pgjax.baselines.get: a number or group_normalize works, a
  baseline that needs per-sample scores is rejected naming what is missing."""
  config = algos.ReinforceConfig(env="LinearSystem", policy=algos.linear_gaussian_policy(), num_envs=4,
                                 num_steps=5, num_iterations=2, baseline="group_normalize")
  params, _ = algos.make_train(config)(jax.random.key(0))
  assert float(params["gain"]) != 0.0 and np.isfinite(float(params["gain"]))
  with pytest.raises(ValueError, match="`sq_norms`"):
    algos.make_train(algos.ReinforceConfig(baseline="optimal"))
  with pytest.raises(ValueError, match="`num_envs` >= 2"):
    algos.make_train(algos.NaturalPGConfig(baseline="leave_one_out", num_envs=1))


def test_es_trainer_takes_the_shared_baselines():
  # Plain Gaussian smoothing: g = (1/N) sum_i (f_i - b_i) u_i / sigma. A zero baseline given as a number is the
  # same estimator as "none" (identical bits); a large constant one changes every finite-N step (power
  # control); a user's callable and the leave-one-out mean plug in the same way.
  base = algos.ESConfig(num_directions=8, sigma=0.1, learning_rate=0.05, scheme="plain", shaping=None,
                        **{**_COMMON, "num_iterations": 3})

  def gain(baseline):
    return np.asarray(algos.make_train(base.replace(baseline=baseline))(jax.random.key(0))[0]["gain"])

  none, zero, big = gain("none"), gain(0.0), gain(1e3)
  assert none == zero and np.isfinite(none) and none != 0.0
  assert abs(float(big - none)) > 1e-3
  mean_of_others = lambda r: (jnp.sum(r, -1, keepdims=True) - r) / (r.shape[-1] - 1)
  assert gain(mean_of_others) == pytest.approx(float(gain("leave_one_out")), rel=1e-5, abs=1e-6)
  with pytest.raises(ValueError, match="baseline"):
    algos.make_train(base.replace(baseline="median"))
  with pytest.raises(ValueError, match="baseline"):
    algos.make_train(base.replace(scheme="antithetic", baseline="mean"))


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
  with pytest.raises(ValueError, match="method"):
    algos.make_train(algos.NaturalPGConfig(method="ppo"))
  with pytest.raises(ValueError, match="cg_iters"):
    algos.make_train(algos.NaturalPGConfig(cg_iters=0))
  with pytest.raises(ValueError, match="critic_steps"):
    algos.make_train(algos.ReinforceConfig(critic=True, critic_steps=0))
  with pytest.raises(ValueError, match="gae_lambda"):
    algos.make_train(algos.NaturalPGConfig(critic=True, gae_lambda=1.5))
  with pytest.raises(ValueError, match="eval_episodes"):
    algos.make_train(algos.ESConfig(eval_every=1, eval_episodes=0))


def test_evaluation_leaves_training_unchanged_and_is_empty_when_off():
  config = algos.ReinforceConfig(num_envs=4, learning_rate=0.05, **_COMMON)
  p0, m0 = jax.jit(algos.make_train(config))(jax.random.key(3))
  p1, m1 = jax.jit(algos.make_train(config.replace(eval_every=3, eval_episodes=2, eval_max_steps=20)))(
      jax.random.key(3))
  np.testing.assert_array_equal(p0["gain"], p1["gain"])
  np.testing.assert_array_equal(m0.episode_return, m1.episode_return)
  assert m0.eval_return.shape == (0,) and m1.eval_return.shape == (4,)   # ceil(10 / 3)
  with pytest.raises(ValueError, match="eval_every"):
    algos.make_train(config.replace(eval_every=0))


# Acrobot cut at 50 steps: a random policy never swings up that fast, so every episode is truncated with the
# same return -50 and the per-time-step batch baseline makes every advantage 0 up to rounding (the gradient
# norm is ~1e-7, which advantage normalisation or TRPO's step scaling would blow up into a random step; so
# unnormalised advantages here). Measured gradient norms: 0.8e-7 to 1.7e-7 without the critic, 1.5 to 2.4
# with it.
_ACROBOT = dict(env="Acrobot-v1", num_envs=4, num_steps=50, num_iterations=2, hidden_sizes=(16,),
                critic_hidden_sizes=(16,), normalize_advantages=False)


@pytest.fixture(scope="module")
def acrobot_params():
  env, env_params = algos.make_env("Acrobot-v1")
  return env_params.replace(max_steps_in_episode=50)


@pytest.mark.parametrize("trainer", ["reinforce", "trpo"])
def test_learned_critic_moves_the_policy_when_every_episode_is_truncated(trainer, acrobot_params):
  make = (algos.ReinforceConfig if trainer == "reinforce"
          else lambda **kw: algos.NaturalPGConfig(method="trpo", **kw))
  keys = jax.random.split(jax.random.key(0), 2)
  run = lambda critic: jax.jit(jax.vmap(algos.make_train(make(env_params=acrobot_params, critic=critic,
                                                               **_ACROBOT))))(keys)[1]
  on = run(True)
  np.testing.assert_array_equal(on.episode_return, -50.0)    # every episode truncated, every iteration
  if trainer == "reinforce":   # TRPO without a critic uses the same batch-baseline advantages
    off = run(False)
    np.testing.assert_array_equal(off.episode_return, -50.0)
    assert np.all(np.asarray(off.grad_norm) < 1e-5), off.grad_norm    # the batch baseline's failure
  assert np.all(np.asarray(on.grad_norm) > 0.1), on.grad_norm       # the critic's advantages are not 0
  assert np.all(np.asarray(on.value_loss) > 0.0) and np.all(np.isfinite(np.asarray(on.value_loss)))
  if trainer == "trpo":
    assert np.all(np.asarray(on.kl) > 0.0) and np.all(np.asarray(on.kl) <= 1.5 * 0.01), on.kl
