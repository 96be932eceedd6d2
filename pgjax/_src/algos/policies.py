r"""Policies for the training loops: a :class:`Policy` is a pair of pure functions.

``init(key) -> params`` and ``apply(params, obs) -> distribution``, where ``obs`` may carry any leading
batch dimensions (one observation during a rollout, ``[T, B, ...]`` in a loss) and the distribution's batch
shape equals them. Any network library fits (flax linen or nnx split/merge, plain pytrees).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Policy", "linear_gaussian_policy", "mlp_policy", "policy_log_prob_entropy"]


class Policy(NamedTuple):
  """``init(key) -> params`` and ``apply(params, obs) -> distribution`` (batched over leading obs dims)."""

  init: Callable[[jax.Array], Any]
  apply: Callable[[Any, Any], Any]


class _MLP(nn.Module):
  hidden_sizes: Sequence[int]
  out: int
  activation: Callable = nn.tanh

  @nn.compact
  def __call__(self, x):
    for h in self.hidden_sizes:
      x = self.activation(nn.Dense(h, kernel_init=nn.initializers.orthogonal(math.sqrt(2)))(x))
    return nn.Dense(self.out, kernel_init=nn.initializers.orthogonal(0.01))(x)


def mlp_policy(env: Any, env_params: Any, hidden_sizes: Sequence[int] = (64, 64), *,
               activation: Callable = nn.tanh, init_log_std: float = 0.0) -> Policy:
  r"""A flax MLP policy for ``env``: categorical logits for a discrete action space, else a diagonal
  Gaussian with a state-independent learned :math:`\log\sigma` (``init_log_std``).

  Orthogonal initialisation (gain :math:`\sqrt2` hidden, 0.01 output), as in PureJaxRL.
  """
  space = env.action_space(env_params)
  obs0, _ = env.reset(jax.random.key(0), env_params)
  obs_shape = jnp.shape(obs0)
  if hasattr(space, "n"):
    model = _MLP(tuple(hidden_sizes), int(space.n), activation)

    def init(key):
      return model.init(key, jnp.zeros(obs_shape, jnp.float32))

    def apply(params, obs):
      return distrax.Categorical(logits=model.apply(params, jnp.asarray(obs, jnp.float32)))

    return Policy(init, apply)
  act_shape = tuple(space.shape)
  dim = int(np.prod(act_shape)) if act_shape else 1
  model = _MLP(tuple(hidden_sizes), dim, activation)

  def init_c(key):
    return {"net": model.init(key, jnp.zeros(obs_shape, jnp.float32)),
            "log_std": jnp.full((dim,), init_log_std, jnp.float32)}

  def apply_c(params, obs):
    obs = jnp.asarray(obs, jnp.float32)
    mean = model.apply(params["net"], obs)
    std = jnp.broadcast_to(jnp.exp(params["log_std"]), mean.shape)
    if not act_shape:
      return distrax.Normal(mean[..., 0], std[..., 0])
    return distrax.MultivariateNormalDiag(mean.reshape(mean.shape[:-1] + act_shape), std)

  return Policy(init_c, apply_c)


def linear_gaussian_policy(init_gain: float = 0.0, init_log_std: float = 0.0) -> Policy:
  r"""The linear Gaussian policy :math:`a \sim N(k s, \sigma^2)` for :class:`pgjax.envs.LinearSystem`.

  Params ``{"gain": k, "log_std": log sigma}`` (scalars); observations ``[..., 1]``; actions ``[..., 1]``.
  """

  def init(key):
    del key
    return {"gain": jnp.asarray(init_gain, jnp.float32), "log_std": jnp.asarray(init_log_std, jnp.float32)}

  def apply(params, obs):
    obs = jnp.asarray(obs, jnp.float32)
    return distrax.MultivariateNormalDiag(params["gain"] * obs,
                                          jnp.broadcast_to(jnp.exp(params["log_std"]), obs.shape))

  return Policy(init, apply)


def policy_log_prob_entropy(policy: Policy, params: Any, obs: Any, actions: jax.Array, *,
                            entropy: bool = True) -> tuple[jax.Array, jax.Array | None]:
  """Log-probabilities and entropies of ``actions`` under ``policy`` for batched ``obs`` ``[T, B, ...]``.

  Non-scalar per-step log-probabilities (independent action dimensions) are summed. With
  ``entropy=False`` the entropy is not computed (``None``).
  """
  dist = policy.apply(params, obs)
  lead = jnp.shape(actions)[:2]
  with jax.numpy_rank_promotion("allow"):  # distrax broadcasts implicitly inside log_prob
    lp = jnp.sum(dist.log_prob(actions).reshape(lead + (-1,)), axis=-1)
  if not entropy:
    return lp, None
  with jax.numpy_rank_promotion("allow"):
    ent = jnp.sum(dist.entropy().reshape(lead + (-1,)), axis=-1)
  return lp, ent
