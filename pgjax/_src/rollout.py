r"""Fixed-horizon rollouts of a stochastic policy in a gymnax-protocol environment, by ``lax.scan``.

A policy is a pure function ``policy_apply(params, obs) -> distribution`` returning an object with
distrax's interface (``sample_and_log_prob(seed=)`` or ``sample(seed=)`` + ``log_prob``). Any network
library fits: flax linen (``lambda p, o: distrax.Categorical(logits=model.apply(p, o))``), flax nnx
after ``graphdef, state = nnx.split(model)`` (``lambda s, o: distrax.Categorical(
logits=nnx.merge(graphdef, s)(o))``), or a plain function of a parameter pytree.

The rollout relies on the environment's automatic reset (gymnax's ``step`` resets on
``terminated | truncated``), so a window of ``num_steps`` steps may hold several episodes; the done
mask marks their ends and :mod:`pgjax.returns` never sums across them.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from pgjax._src.validation import as_key, check_callable, check_positive_int

__all__ = ["RolloutState", "Trajectory", "rollout", "sample_action"]


class RolloutState(NamedTuple):
  """Where a rollout stopped: the next observation and environment state (pass as ``init`` to continue)."""

  obs: Any
  env_state: Any


class Trajectory(NamedTuple):
  r"""A time-major rollout. Leading axis ``T`` (then ``num_envs`` when batched) on every field but ``final``.

  Attributes:
    obs: ``[T, ...]`` observation at which each action was taken (:math:`s_t`).
    actions: ``[T, ...]`` actions :math:`a_t`.
    rewards: ``[T]`` rewards :math:`r_t` (float32).
    dones: ``[T]`` bool, ``terminations | truncations``: the episode ended at step ``t``.
    terminations: ``[T]`` bool, true terminal transitions.
    truncations: ``[T]`` bool, time-limit ends.
    log_probs: ``[T]`` :math:`\log\pi_{\theta}(a_t|s_t)` under the sampling (behaviour) policy, with
      gradients stopped (the rollout is data, not a differentiable function of the parameters).
    final: :class:`RolloutState` after the last step (no time axis): the observation to bootstrap
      from and the state to continue from.
    next_obs: ``[T, ...]`` observation :math:`s_{t+1}` reached by step ``t`` *before* any automatic
      reset (the environment's ``info["final_observation"]``; gymnax >= 1.0 and :mod:`pgjax.envs`
      provide it, otherwise the returned observation). Where no episode ended it equals ``obs[t + 1]``
      (``final.obs`` at the last step); at a time-limit truncation it is the state to bootstrap from:
      add ``discount * V(next_obs[t])`` to ``rewards[t]`` where ``truncations[t]`` (see
      :mod:`pgjax.returns`). Unused, it costs nothing under ``jit`` (dead outputs are removed).
  """

  obs: Any
  actions: jax.Array
  rewards: jax.Array
  dones: jax.Array
  terminations: jax.Array
  truncations: jax.Array
  log_probs: jax.Array
  final: RolloutState
  next_obs: Any = None


def sample_action(dist: Any, key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Samples one action and its log-probability from a distrax-like distribution.

  A non-scalar log-probability (e.g. ``distrax.Normal`` over an action vector) is summed over its
  dimensions, i.e. the action dimensions are treated as independent (as ``distrax.Independent`` would).
  """
  # distrax broadcasts implicitly inside sample/log_prob; allow it there whatever the user's setting.
  with jax.numpy_rank_promotion("allow"):
    if hasattr(dist, "sample_and_log_prob"):
      action, log_prob = dist.sample_and_log_prob(seed=key)
    else:
      action = dist.sample(seed=key)
      log_prob = dist.log_prob(action)
  log_prob = jnp.asarray(log_prob)
  if log_prob.ndim:
    log_prob = jnp.sum(log_prob)
  return action, log_prob


def _expected_action_shape(env: Any, env_params: Any) -> tuple[int, ...] | None:
  try:
    return tuple(env.action_space(env_params).shape)
  except Exception:  # pylint: disable=broad-except  # an env without spaces: no check
    return None


def rollout(key: jax.Array, policy_apply: Callable[[Any, Any], Any], policy_params: Any, env: Any,
            env_params: Any = None, *, num_steps: int, num_envs: int | None = None,
            init: RolloutState | None = None) -> Trajectory:
  r"""Runs ``policy_apply(policy_params, .)`` for ``num_steps`` steps in ``env`` with auto-reset.

  Per step: :math:`a_t \sim \pi(\cdot|s_t)`, then ``env.step`` (gymnax >= 1.0: six return values).
  One ``lax.scan`` over time; with ``num_envs`` the single-environment rollout is vmapped over
  ``num_envs`` independent keys and the outputs are ``[T, num_envs, ...]`` (time-major).

  Keys: ``key`` is split into a reset key and a scan key; the scan key is split once, before the
  loop, into ``[num_steps, 2]`` independent keys, a policy key and an environment key for each step
  (no key is split inside the loop: a split per step costs one more threefry evaluation per
  environment and step). With ``num_envs``, environment ``i`` uses ``jax.random.split(key,
  num_envs)[i]``, which equals ``jax.random.fold_in(key, i)``, so environment ``i``'s stream does
  not depend on ``num_envs``.

  Args:
    key: PRNG key.
    policy_apply: ``(params, obs) -> distribution`` for a *single* observation.
    policy_params: any pytree.
    env: a gymnax-protocol environment (``reset``, ``step``; e.g. ``gymnax.make("CartPole-v1")[0]``
      or :class:`pgjax.envs.LinearSystem`).
    env_params: its params (``None``: ``env.default_params``).
    num_steps: horizon :math:`T \ge 1` (static).
    num_envs: optional number of parallel environments (static).
    init: optional :class:`RolloutState` to continue from (batched ``[num_envs, ...]`` when
      ``num_envs`` is given); by default every environment is reset first.

  Returns:
    A :class:`Trajectory`.

  Raises:
    ValueError: ``num_steps < 1`` / ``num_envs < 1``, or the policy's action shape differs from
      ``env.action_space(env_params).shape`` (checked at trace time).
    TypeError: ``policy_apply`` not callable, ``env`` without ``reset``/``step``, bad ``key``.
  """
  key = as_key(key)
  num_steps = check_positive_int(num_steps, "num_steps")
  check_callable(policy_apply, "policy_apply")
  if not (hasattr(env, "reset") and hasattr(env, "step")):
    raise TypeError(f"`env` must follow gymnax's protocol (reset/step), got {type(env).__name__}.")
  if env_params is None:
    env_params = env.default_params
  expected_shape = _expected_action_shape(env, env_params)

  def single(key, init):
    k_reset, k_scan = jax.random.split(key)
    if init is None:
      obs0, state0 = env.reset(k_reset, env_params)
    else:
      obs0, state0 = init

    def step(carry, k):
      obs, state = carry
      k_pol, k_env = k[0], k[1]
      dist = policy_apply(policy_params, obs)
      action, log_prob = sample_action(dist, k_pol)
      if expected_shape is not None and tuple(jnp.shape(action)) != expected_shape:
        raise ValueError(f"`policy_apply` produced actions of shape {jnp.shape(action)}, but the "
                         f"environment's action space has shape {expected_shape}.")
      obs_next, state_next, reward, term, trunc, info = env.step(k_env, state, action, env_params)
      term = jnp.asarray(term, bool)
      trunc = jnp.asarray(trunc, bool)
      pre_reset = info.get("final_observation", obs_next) if isinstance(info, dict) else obs_next
      out = (obs, action, jnp.asarray(reward, jnp.float32), jnp.logical_or(term, trunc), term, trunc,
             jax.lax.stop_gradient(log_prob), pre_reset)
      return (obs_next, state_next), out

    (obs_f, state_f), ys = jax.lax.scan(step, (obs0, state0), jax.random.split(k_scan, (num_steps, 2)))
    *fields, next_obs = ys
    return Trajectory(*fields, final=RolloutState(obs_f, state_f), next_obs=next_obs)

  if num_envs is None:
    return single(key, init)
  num_envs = check_positive_int(num_envs, "num_envs")
  keys = jax.random.split(key, num_envs)
  axes = Trajectory(1, 1, 1, 1, 1, 1, 1, final=0, next_obs=1)
  if init is None:
    return jax.vmap(lambda k: single(k, None), out_axes=axes)(keys)
  return jax.vmap(single, out_axes=axes)(keys, init)
