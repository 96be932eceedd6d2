"""NPG's default step rule: the step is scaled so that its quadratic-model KL equals ``max_kl``.

Closed form: for a Gaussian policy with a mean linear in the params and a fixed variance,
:math:`a \\sim N(\\theta^\\top \\phi(s), \\sigma^2)`, the KL between two policies is exactly quadratic,
:math:`KL = \\tfrac12 \\Delta^\\top F \\Delta` with :math:`F = E[\\phi\\phi^\\top]/\\sigma^2`
(the mean Fisher over the visited states), so the exact mean KL of a normalised step, which the trainer
reports as ``metrics.kl``, must equal the target to float precision, whatever the damping of the direction.

That the default moves a neural policy on Acrobot-v1 (mean exact KL per iteration within a factor of 2 of the
target) is a claim of ``experiments/rl_trainers.py`` (a trainer on a gymnax environment takes too long to
compile for a unit test).
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax import algos, envs

_SIGMA = 0.5
_TARGETS = jnp.array([1e-3, 1e-2, 5e-2])


def _init(key):
  del key
  return {"gain": jnp.zeros((), jnp.float32), "bias": jnp.zeros((), jnp.float32)}


def _apply(params, obs):
  obs = jnp.asarray(obs, jnp.float32)
  return distrax.MultivariateNormalDiag(params["gain"] * obs + params["bias"], jnp.full(obs.shape, _SIGMA))


_AFFINE = algos.Policy(_init, _apply)  # a ~ N(k s + b, sigma^2): mean linear in (k, b), variance fixed
_LINEAR = dict(env="LinearSystem", policy=_AFFINE, method="npg", num_envs=8, num_steps=20, num_iterations=3,
               cg_iters=3, discount=0.9, normalize_advantages=False,
               env_params=envs.LinearSystemParams(init_mean=1.0, init_std=1.0, max_steps_in_episode=20))


def _kl_per_target(config, keys):
  def run(args):
    max_kl, key = args
    return algos.make_train(config.replace(max_kl=max_kl))(key)[1].kl
  # lax.map compiles faster than vmap here
  return np.asarray(jax.jit(lambda m, k: jax.lax.map(run, (m, k)))(_TARGETS, keys))


@pytest.fixture(scope="module")
def linear_kls():
  keys = jax.random.split(jax.random.key(3), _TARGETS.shape[0])
  # damping 1.0 is comparable to F's eigenvalues here: a step normalised with the damped curvature
  # d^T (F + lambda I) d would fall well short of the target
  return _kl_per_target(algos.NaturalPGConfig(damping=1.0, **_LINEAR), keys)


def test_linear_mean_gaussian_kl_equals_target(linear_kls):
  kl = linear_kls  # [targets, iterations]
  target = np.asarray(_TARGETS)[:, None]
  np.testing.assert_allclose(kl, np.broadcast_to(target, kl.shape), rtol=2e-4)
  # power: the same check fails for a target off by 5%
  assert np.max(np.abs(kl / (1.05 * target) - 1.0)) > 2e-4


def test_step_size_validation():
  with pytest.raises(ValueError, match="step_size"):
    algos.make_train(algos.NaturalPGConfig(step_size=-0.1, **_LINEAR))
  with pytest.raises(ValueError, match="max_kl"):
    algos.make_train(algos.NaturalPGConfig(max_kl=0.0, **_LINEAR))

