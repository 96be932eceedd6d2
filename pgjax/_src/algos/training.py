r"""The non-policy pieces of the training loops: environment resolution, episode metrics, optimisers."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from pgjax._src import envs as _envs
from pgjax._src.rollout import Trajectory

__all__ = ["EpisodeStats", "episode_statistics", "make_env", "make_optimizer"]


_PGJAX_ENVS = {"LinearSystem": _envs.LinearSystem}


def make_env(env: Any, env_params: Any = None) -> tuple[Any, Any]:
  """Resolves ``env`` (a gymnax-protocol object, a gymnax id such as ``"CartPole-v1"``, or
  ``"LinearSystem"``) and its params (``None``: the environment's defaults)."""
  if isinstance(env, str):
    if env in _PGJAX_ENVS:
      env = _PGJAX_ENVS[env]()
    else:
      try:
        import gymnax  # pylint: disable=import-outside-toplevel
      except ImportError as e:  # pragma: no cover
        raise ImportError(f"environment {env!r} needs gymnax (pip install 'pgjax[rl]').") from e
      env, default = gymnax.make(env)
      if env_params is None:
        env_params = default
  if not (hasattr(env, "reset") and hasattr(env, "step")):
    raise TypeError(f"`env` must be a gymnax-protocol environment or an id, got {type(env).__name__}.")
  if env_params is None:
    env_params = env.default_params
  return env, env_params


class EpisodeStats(NamedTuple):
  """Per-iteration episode statistics (scalars)."""

  first_episode_return: jax.Array  # mean undiscounted return of each env's first episode in the window
  completed_episode_return: jax.Array  # mean return of the episodes that ended in the window (NaN-free: 0 if none)
  num_completed: jax.Array


def episode_statistics(traj: Trajectory) -> EpisodeStats:
  """Undiscounted episode returns from a ``[T, B]`` trajectory (first episode; completed episodes)."""
  dones = traj.dones.astype(jnp.int32)
  first = (jnp.cumsum(dones, axis=0) - dones) == 0  # no done strictly before t
  first_ret = jnp.mean(jnp.sum(jnp.where(first, traj.rewards, 0.0), axis=0))
  # a step belongs to a completed episode iff some done happens at or after it
  in_completed = jnp.flip(jnp.cumsum(jnp.flip(dones, 0), axis=0), 0) > 0
  n = jnp.sum(dones)
  completed = jnp.sum(jnp.where(in_completed, traj.rewards, 0.0)) / jnp.maximum(n, 1)
  return EpisodeStats(first_ret, completed, n)


def make_optimizer(optimizer: Any, learning_rate: Any) -> Any:
  """``"adam"`` / ``"sgd"`` with ``learning_rate`` (traced allowed), or any ``optax.GradientTransformation``
  as given (then ``learning_rate`` is not used)."""
  if isinstance(optimizer, optax.GradientTransformation):
    return optimizer
  if optimizer == "adam":
    return optax.adam(learning_rate)
  if optimizer == "sgd":
    return optax.sgd(learning_rate)
  raise ValueError(f"`optimizer` must be 'adam', 'sgd' or an optax.GradientTransformation, got {optimizer!r}.")
