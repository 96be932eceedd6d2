r"""Policy-gradient losses (to minimise): the score-function surrogate, REINFORCE, importance-weighted, PPO, entropy.

:func:`score_function_surrogate` is the pseudo-loss of one batch of samples. The trajectory losses take
time-major arrays ``[T]`` (one trajectory) or ``[T, B]`` (``B`` trajectories / environments, as
:func:`pgjax.rollout` returns with ``num_envs``) and return a scalar **loss to minimise**. The
score-function losses are pseudo-losses: their *gradient* is minus the policy-gradient estimate

.. math::
   -\nabla_\theta L = \frac1B \sum_{b=1}^{B} \sum_{t=0}^{T-1} w_{t,b}\,\nabla_\theta\log\pi_\theta(a_{t,b}|s_{t,b}),

with weights :math:`w` held constant (``stop_gradient``): a sum over time and a mean over
trajectories, so that the estimate is of :math:`\nabla J` for :math:`J = E[\sum_t r_t]` (not of
:math:`\nabla J / T`). Their values (not their gradients) carry no meaning. ``log_probs`` must be
recomputed from the policy parameters being differentiated (e.g. ``policy_apply(params,
traj.obs).log_prob(traj.actions)``); the rollout's own ``log_probs`` are the behaviour log-probabilities and
carry no gradient. Baselines come from :func:`pgjax.baselines.get`, the interface every estimator shares:
with ``[T, B]`` weights the sample axis is ``B``, so a batch baseline is taken per time step.

Episode boundaries come from the done mask (``dones[t]`` True: the episode ended at step ``t``);
weights never cross them (:mod:`pgjax.returns`).

References:
  R. J. Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement
  learning", Machine Learning 8, 1992. D. Precup, R. S. Sutton, S. Singh, "Eligibility Traces for
  Off-Policy Policy Evaluation", ICML 2000 (per-decision importance sampling). S. Levine, CS285
  lecture 5, 2023 (off-policy policy gradient, the per-step form). J. Schulman et al., "Trust Region
  Policy Optimization", ICML 2015, https://arxiv.org/abs/1502.05477; "Proximal Policy Optimization
  Algorithms", 2017, https://arxiv.org/abs/1707.06347. D. Ye et al., "Mastering Complex Control in
  MOBA Games with Deep Reinforcement Learning", AAAI 2020 (dual-clip PPO).
"""

from __future__ import annotations

import math
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from pgjax._src import baselines as _baselines
from pgjax._src import returns as _returns
from pgjax._src.validation import is_concrete

__all__ = [
    "categorical_entropy",
    "cumulative_importance_weights",
    "entropy_loss",
    "gaussian_entropy",
    "importance_ratios",
    "importance_weighted_loss",
    "policy_gradient_loss",
    "ppo_clip_loss",
    "reinforce_loss",
    "reinforce_weights",
    "score_function_surrogate",
    "subtract_baseline",
    "trajectory_importance_weights",
]

# Largest log importance weight kept before exponentiation: exp(80) ~ 5.5e34 is finite in float32.
_MAX_LOG_WEIGHT = 80.0


def _time_major(x: ArrayLike, name: str) -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim not in (1, 2):
    raise ValueError(f"`{name}` must be time-major with shape [T] or [T, B], got shape {x.shape}.")
  if x.shape[0] < 1:
    raise ValueError(f"`{name}` must have at least one time step, got shape {x.shape}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  return x


def _same_shape(x: ArrayLike, like: jax.Array, name: str, like_name: str) -> jax.Array:
  x = jnp.asarray(x)
  if x.shape != like.shape:
    raise ValueError(f"`{name}` must have the shape of `{like_name}` {like.shape}, got {x.shape}.")
  return x


def score_function_surrogate(log_probs: ArrayLike, weights: ArrayLike) -> jax.Array:
  r"""Pseudo-loss whose gradient is minus the score-function gradient estimate.

  .. math::

     L(\theta) = -\frac{1}{N} \sum_{i=1}^N \operatorname{sg}(w_i)\, \log p_\theta(x_i),
     \qquad -\nabla_\theta L = \frac1N \sum_i w_i \nabla_\theta \log p_\theta(x_i)

  where :math:`w_i = f(x_i) - b_i` and sg is ``stop_gradient``. Minimising ``L`` ascends
  :math:`\mathbb{E}[f]`; to descend a cost, pass ``weights = -(cost - baseline)``. The samples :math:`x_i` must
  enter ``log_probs`` without a gradient path (draw them outside the differentiated function or wrap them in
  ``stop_gradient``): the estimator is correct only when autodiff does not see how the samples depend on
  :math:`\theta` (S. Levine, CS285 lecture 5, 2023).

  Args:
    log_probs: ``[N, ...]`` log-probabilities :math:`\log p_\theta(x_i)` (any shape; all entries averaged).
    weights: same shape as ``log_probs``; held constant.

  Returns:
    The scalar loss (to minimise).
  """
  log_probs = jnp.asarray(log_probs)
  weights = jnp.asarray(weights)
  if log_probs.shape != weights.shape:
    raise ValueError(f"`log_probs` and `weights` must have the same shape, got {log_probs.shape} and "
                     f"{weights.shape}.")
  chex.assert_type([log_probs, weights], float)
  return -jnp.mean(jax.lax.stop_gradient(weights) * log_probs)


def policy_gradient_loss(log_probs: ArrayLike, weights: ArrayLike) -> jax.Array:
  r"""Score-function pseudo-loss over trajectories: :math:`-\frac1B\sum_b\sum_t \mathrm{sg}(w_{t,b})\log\pi_{t,b}`.

  Equals ``T * pgjax.losses.score_function_surrogate(log_probs, weights)`` (which averages over all
  entries): a sum over time, a mean over trajectories.

  Args:
    log_probs: ``[T]`` or ``[T, B]`` :math:`\log\pi_\theta(a_t|s_t)`, differentiable in :math:`\theta`.
    weights: same shape; e.g. reward-to-go minus a baseline, or advantages. Held constant.

  Returns:
    Scalar loss to minimise.
  """
  log_probs = _time_major(log_probs, "log_probs")
  weights = _same_shape(weights, log_probs, "weights", "log_probs").astype(log_probs.dtype)
  return log_probs.shape[0] * score_function_surrogate(log_probs, weights)


def reinforce_weights(rewards: ArrayLike, dones: ArrayLike, *, discount: ArrayLike = 1.0,
                      reward_to_go: bool = True, time_discount: bool = False) -> jax.Array:
  r"""REINFORCE weights per step: the reward-to-go :math:`Q_t` or the full episode return :math:`R`.

  * ``reward_to_go=True``: :math:`w_t = Q_t = \sum_{t' \ge t} \gamma^{t'-t} r_{t'}` (causality: a reward cannot be caused by later actions; Williams, 1992).
  * ``reward_to_go=False``: :math:`w_t = R = \sum_{t'} \gamma^{t' - t_0} r_{t'}` over the whole
    episode containing ``t`` (Williams' original estimator).
  * ``time_discount=True`` multiplies the reward-to-go by :math:`\gamma^{t - t_0}`. Only then is the
    reward-to-go estimator unbiased for the discounted objective :math:`J_\gamma = E[\sum_t \gamma^t
    r_t]` when :math:`\gamma < 1`; dropping the factor (the default, and common practice) gives a
    biased but often useful direction (Thomas, ICML 2014). Irrelevant when :math:`\gamma = 1`; the
    full-return weights are unbiased for :math:`J_\gamma` as they are.

  Args:
    rewards: ``[T]`` or ``[T, B]``.
    dones: same shape, episode-end mask.
    discount: :math:`\gamma \in [0, 1]`.
    reward_to_go: see above.
    time_discount: see above; requires ``reward_to_go=True``.

  Returns:
    Weights, shape of ``rewards``.
  """
  rewards = _time_major(rewards, "rewards")
  if reward_to_go:
    w = _returns.reward_to_go(rewards, dones, discount=discount)
    if time_discount:
      w = w * _returns.episode_discounts(dones, discount=discount)
    return w
  if time_discount:
    raise ValueError("`time_discount=True` applies to the reward-to-go only (`reward_to_go=True`); the "
                     "full-return weights are already unbiased for the discounted objective.")
  return _returns.episode_returns(rewards, dones, discount=discount)


def subtract_baseline(weights: ArrayLike, baseline: Any) -> jax.Array:
  r"""Subtracts a baseline from REINFORCE weights, per time step across the batch of trajectories.

  Args:
    weights: ``[T, B]`` (``[T]`` only for array baselines or ``None``).
    baseline: anything :func:`pgjax.baselines.get` accepts that needs only the weights, applied at each
      time step across the ``B`` trajectories (the samples axis is last):

      * ``None`` or ``"none"``: no baseline; a number: a constant.
      * ``"mean"``: :math:`b_{t} = \frac1B\sum_j w_{t,j}`; biased by the factor :math:`(B-1)/B`.
      * ``"leave_one_out"``: :math:`b_{t,i} = \frac1{B-1}\sum_{j\ne i} w_{t,j}`; unbiased, needs
        :math:`B \ge 2`.
      * ``"group_normalize"``: the weights are replaced by the per-step group-normalised advantages.
      * a callable ``[B] -> [B]`` (applied at each ``t``) or a :class:`pgjax.baselines.Baseline`.

      Or an array of the shape of ``weights`` (e.g. a learned value :math:`V(s_t)`), unbiased when it does
      not depend on :math:`a_t`.

  Returns:
    ``weights - b``. A NaN weight propagates (the NaN policy of :mod:`pgjax.baselines`).
  """
  weights = _time_major(weights, "weights")
  if baseline is None or (isinstance(baseline, str) and baseline == "none"):
    return weights
  if not isinstance(baseline, (str, _baselines.Baseline)) and not callable(baseline) and np.ndim(baseline) > 0:
    b = _same_shape(baseline, weights, "baseline", "weights").astype(weights.dtype)
    return weights - b
  spec = _baselines.get(baseline, supports=())
  if weights.ndim != 2 and spec.name != "constant":
    raise ValueError(f"a batch `baseline` needs weights of shape [T, B] (B trajectories), got "
                     f"{weights.shape}.")
  if weights.ndim == 2 and weights.shape[1] < spec.min_samples:
    raise ValueError(f"`baseline`={spec.name!r} needs at least {spec.min_samples} trajectories (B), got "
                     f"weights of shape {weights.shape}.")
  return spec.weights(weights)


def reinforce_loss(log_probs: ArrayLike, rewards: ArrayLike, dones: ArrayLike, *,
                   discount: ArrayLike = 1.0, reward_to_go: bool = True, time_discount: bool = False,
                   baseline: Any = None) -> jax.Array:
  r"""REINFORCE pseudo-loss over trajectories with an optional baseline.

  .. math::
     -\nabla_\theta L = \frac1B\sum_b\sum_t \nabla_\theta\log\pi_\theta(a_{t,b}|s_{t,b})\,
     \bigl(w_{t,b} - b_{t,b}\bigr),

  :math:`w` from :func:`reinforce_weights`, :math:`b` from :func:`subtract_baseline`. With
  ``discount=1`` (or ``time_discount=True``) and an unbiased baseline, :math:`-\nabla L` is an
  unbiased estimate of :math:`\nabla J` for the window's objective; the reward-to-go form has lower
  variance than the full return (tested on a tabular MDP against :math:`(I - \gamma P)^{-1} r`).

  Args:
    log_probs: ``[T]`` or ``[T, B]`` target log-probabilities (differentiable).
    rewards: same shape.
    dones: same shape.
    discount, reward_to_go, time_discount: see :func:`reinforce_weights`.
    baseline: see :func:`subtract_baseline`.

  Returns:
    Scalar loss to minimise.
  """
  log_probs = _time_major(log_probs, "log_probs")
  rewards = _same_shape(rewards, log_probs, "rewards", "log_probs")
  w = reinforce_weights(rewards, dones, discount=discount, reward_to_go=reward_to_go,
                        time_discount=time_discount)
  return policy_gradient_loss(log_probs, subtract_baseline(w, baseline))


# ---------------------------------------------------------------------------------------------------
# Importance sampling.


def _check_truncation(truncation: Any) -> None:
  if truncation is not None and is_concrete(truncation):
    c = np.asarray(truncation, np.float64)
    if np.any(~(c > 0)):
      raise ValueError(f"`truncation` must be > 0 (a cap on each per-step ratio), got {truncation!r}.")


def _log_ratios(log_probs: ArrayLike, behaviour_log_probs: ArrayLike, truncation: Any) -> jax.Array:
  log_probs = _time_major(log_probs, "log_probs")
  behaviour_log_probs = _same_shape(behaviour_log_probs, log_probs, "behaviour_log_probs", "log_probs")
  log_rho = log_probs - jax.lax.stop_gradient(behaviour_log_probs).astype(log_probs.dtype)
  _check_truncation(truncation)
  if truncation is not None:
    log_rho = jnp.minimum(log_rho, jnp.log(jnp.asarray(truncation, log_rho.dtype)))
  return log_rho


def importance_ratios(log_probs: ArrayLike, behaviour_log_probs: ArrayLike, *,
                      truncation: ArrayLike | None = None) -> jax.Array:
  r"""Per-step ratios :math:`\rho_t = \pi_\theta(a_t|s_t) / \pi_b(a_t|s_t)`, optionally truncated at :math:`c`.

  :math:`\rho_t = \exp(\log\pi_\theta - \log\pi_b)`; with ``truncation`` :math:`c`,
  :math:`\min(\rho_t, c)` (truncated importance sampling: bounded variance, biased). Differentiable in
  ``log_probs``; ``behaviour_log_probs`` is held constant.

  Args:
    log_probs: ``[T]`` or ``[T, B]`` target log-probabilities.
    behaviour_log_probs: same shape, the behaviour policy's log-probabilities of the same actions.
    truncation: optional cap :math:`c > 0`.
  """
  return jnp.exp(jnp.minimum(_log_ratios(log_probs, behaviour_log_probs, truncation), _MAX_LOG_WEIGHT))


def cumulative_importance_weights(log_probs: ArrayLike, behaviour_log_probs: ArrayLike, dones: ArrayLike,
                                  *, truncation: ArrayLike | None = None) -> jax.Array:
  r"""Per-decision weights :math:`W_t = \prod_{u = t_0(t)}^{t} \rho_u` (ratios from the episode start to ``t``).

  Computed in log space; log-weights above 80 are capped (``exp(80)`` is finite in float32), so
  extreme ratios give huge finite weights rather than ``inf``.
  """
  log_rho = _log_ratios(log_probs, behaviour_log_probs, truncation)
  dones = _same_shape(dones, log_rho, "dones", "log_probs").astype(bool)

  def body(carry, xs):
    prev_done, prev = carry
    lr, d = xs
    cur = jnp.where(prev_done, lr, prev + lr)
    return (d, cur), cur

  init = (jnp.ones(log_rho.shape[1:], bool), jnp.zeros(log_rho.shape[1:], log_rho.dtype))
  _, cum = jax.lax.scan(body, init, (log_rho, dones))
  return jnp.exp(jnp.minimum(cum, _MAX_LOG_WEIGHT))


def trajectory_importance_weights(log_probs: ArrayLike, behaviour_log_probs: ArrayLike, dones: ArrayLike,
                                  *, truncation: ArrayLike | None = None) -> jax.Array:
  r"""The whole-episode ratio :math:`W(\tau) = \prod_{u \in \text{episode}} \rho_u`, broadcast over its steps.

  Unbiased for on-policy expectations of trajectory functions; its variance grows exponentially with
  the episode length (CS285 lecture 5). Log-weights are capped at 80.
  """
  log_rho = _log_ratios(log_probs, behaviour_log_probs, truncation)
  dones = _same_shape(dones, log_rho, "dones", "log_probs")
  total = _returns.episode_returns(log_rho, dones, discount=1.0)
  return jnp.exp(jnp.minimum(total, _MAX_LOG_WEIGHT))


def importance_weighted_loss(log_probs: ArrayLike, behaviour_log_probs: ArrayLike, rewards: ArrayLike,
                             dones: ArrayLike, *, form: str = "per_decision", discount: ArrayLike = 1.0,
                             time_discount: bool = False, truncation: ArrayLike | None = None
                             ) -> jax.Array:
  r"""Off-policy policy-gradient pseudo-loss from trajectories of a behaviour policy :math:`\pi_b`.

  :math:`-\nabla L = \frac1B\sum_b\sum_t w_t \nabla\log\pi_\theta(a_t|s_t)` with, per ``form``
  (:math:`Q_t` the reward-to-go of the observed rewards, :math:`\rho_u = \pi_\theta(a_u|s_u) /
  \pi_b(a_u|s_u)`, products from the episode start :math:`t_0`):

  * ``"trajectory"``: :math:`w_t = W(\tau)\,Q_t`, :math:`W(\tau) = \prod_{u\in\tau}\rho_u`. Unbiased;
    variance exponential in the horizon.
  * ``"per_decision"``: :math:`w_t = \sum_{t' \ge t}\gamma^{t'-t} r_{t'} \prod_{u=t_0}^{t'}\rho_u`: the
    reward at :math:`t'` is weighted by the ratios up to :math:`t'` only (what happened after it cannot
    change it). Unbiased, lower variance than ``"trajectory"`` (Precup et al., 2000). Split as
    :math:`\prod_{u \le t}\rho_u \cdot \prod_{t < u \le t'}\rho_u` (the form in CS285's
    derivation); the second product starts after :math:`t`, so every ratio is used once.
  * ``"per_step"``: :math:`w_t = \rho_t Q_t`: the state-marginal ratio and all other steps' ratios are
    dropped. Biased, with an error bounded by the policies' divergence (TRPO's surrogate
    :math:`E[\rho_t A_t]` has this gradient); equal to the on-policy REINFORCE loss when
    :math:`\pi_b = \pi_\theta`.

  ``time_discount`` multiplies by :math:`\gamma^{t - t_0}` as in :func:`reinforce_weights` (needed for
  unbiasedness w.r.t. the discounted objective when :math:`\gamma < 1`). ``truncation`` caps every
  per-step ratio at :math:`c` before the products (biased, bounded variance). The weights are held
  constant; only :math:`\log\pi_\theta` is differentiated.

  Args:
    log_probs: ``[T]`` or ``[T, B]`` target log-probabilities :math:`\log\pi_\theta(a_t|s_t)`.
    behaviour_log_probs: same shape, :math:`\log\pi_b(a_t|s_t)` (e.g. ``traj.log_probs``).
    rewards: same shape.
    dones: same shape.
    form: ``"trajectory"``, ``"per_decision"`` or ``"per_step"``.
    discount: :math:`\gamma \in [0, 1]`.
    time_discount: see above.
    truncation: optional cap :math:`c > 0` on each ratio.

  Returns:
    Scalar loss to minimise.

  Raises:
    ValueError: unknown ``form``; ``behaviour_log_probs``/``rewards``/``dones`` of the wrong shape.
  """
  log_probs = _time_major(log_probs, "log_probs")
  _same_shape(behaviour_log_probs, log_probs, "behaviour_log_probs", "log_probs")
  rewards = _same_shape(rewards, log_probs, "rewards", "log_probs").astype(log_probs.dtype)
  dones = _same_shape(dones, log_probs, "dones", "log_probs")
  lp = jax.lax.stop_gradient(log_probs)
  if form == "trajectory":
    w = (trajectory_importance_weights(lp, behaviour_log_probs, dones, truncation=truncation)
         * _returns.reward_to_go(rewards, dones, discount=discount))
  elif form == "per_decision":
    cum = cumulative_importance_weights(lp, behaviour_log_probs, dones, truncation=truncation)
    w = _returns.reward_to_go(rewards * cum, dones, discount=discount)
  elif form == "per_step":
    w = (importance_ratios(lp, behaviour_log_probs, truncation=truncation)
         * _returns.reward_to_go(rewards, dones, discount=discount))
  else:
    raise ValueError(f"`form` must be 'trajectory', 'per_decision' or 'per_step', got {form!r}.")
  if time_discount:
    w = w * _returns.episode_discounts(dones, discount=discount)
  return policy_gradient_loss(log_probs, w)


# ---------------------------------------------------------------------------------------------------
# PPO and entropy.


def ppo_clip_loss(log_probs: ArrayLike, behaviour_log_probs: ArrayLike, advantages: ArrayLike, *,
                  clip_epsilon: ArrayLike = 0.2, dual_clip: ArrayLike | None = None) -> jax.Array:
  r"""PPO's clipped surrogate (Schulman et al., 2017), optionally dual-clipped (Ye et al., 2020), as a loss.

  .. math::
     \ell_t = \min\bigl(\rho_t A_t,\ \mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon) A_t\bigr), \qquad
     \ell_t^{\text{dual}} = \begin{cases} \max(\ell_t, c A_t) & A_t < 0 \\ \ell_t & A_t \ge 0\end{cases},
     \qquad L = -\operatorname{mean}_{t,b}\ \ell_{t,b},

  :math:`\rho_t = \exp(\log\pi_\theta - \log\pi_b)`. A mean over all steps (the PPO paper's empirical
  average), unlike the sum over time of the REINFORCE losses. ``advantages`` and
  ``behaviour_log_probs`` are held constant. At :math:`\pi_\theta = \pi_b` the gradient equals that of
  the per-step importance-weighted surrogate, i.e. the on-policy policy gradient (divided by ``T``).

  Args:
    log_probs: ``[T]`` or ``[T, B]`` (any shape works; all entries averaged) target log-probabilities.
    behaviour_log_probs: same shape.
    advantages: same shape.
    clip_epsilon: :math:`\epsilon > 0` (traced allowed).
    dual_clip: optional :math:`c > 1`; ``None`` disables the dual clip.

  Returns:
    Scalar loss to minimise.
  """
  log_probs = jnp.asarray(log_probs)
  _same_shape(behaviour_log_probs, log_probs, "behaviour_log_probs", "log_probs")
  adv = jax.lax.stop_gradient(_same_shape(advantages, log_probs, "advantages", "log_probs"))
  if is_concrete(clip_epsilon) and not np.all(np.asarray(clip_epsilon) > 0):
    raise ValueError(f"`clip_epsilon` must be > 0, got {clip_epsilon!r}.")
  if dual_clip is not None and is_concrete(dual_clip) and not np.all(np.asarray(dual_clip) > 1):
    raise ValueError(f"`dual_clip` must be > 1 (or None), got {dual_clip!r}.")
  log_rho = log_probs - jax.lax.stop_gradient(jnp.asarray(behaviour_log_probs, log_probs.dtype))
  rho = jnp.exp(jnp.minimum(log_rho, _MAX_LOG_WEIGHT))
  clipped = jnp.clip(rho, 1.0 - clip_epsilon, 1.0 + clip_epsilon)
  obj = jnp.minimum(rho * adv, clipped * adv)
  if dual_clip is not None:
    obj = jnp.where(adv < 0, jnp.maximum(obj, dual_clip * adv), obj)
  return -jnp.mean(obj)


def categorical_entropy(logits: ArrayLike) -> jax.Array:
  r"""Entropy :math:`H = -\sum_a p_a\log p_a` of ``softmax(logits)`` over the last axis; ``-inf`` logits allowed.

  An action with probability 0 (a ``-inf`` logit) contributes 0 to :math:`H` and receives gradient 0
  (:math:`\partial H/\partial z_a = -p_a(\log p_a + H)`); the masked log-probability is replaced before the
  product ("double where"), so no ``0 * inf`` reaches the backward pass.
  """
  logits = jnp.asarray(logits)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  p = jnp.exp(log_p)
  positive = p > 0
  safe_log_p = jnp.where(positive, log_p, 0.0)
  return -jnp.sum(jnp.where(positive, p * safe_log_p, 0.0), axis=-1)


def gaussian_entropy(log_std: ArrayLike) -> jax.Array:
  r"""Entropy of a diagonal Gaussian, summed over the last axis: :math:`\sum_k \tfrac12\log(2\pi e) + \log\sigma_k`."""
  log_std = jnp.asarray(log_std)
  return jnp.sum(0.5 * math.log(2 * math.pi * math.e) + log_std, axis=-1)


def entropy_loss(entropy: ArrayLike) -> jax.Array:
  r"""Entropy bonus as a loss: :math:`-\operatorname{mean}(H)`. Add ``coef * entropy_loss(H)`` to the policy loss.

  Minimising it raises the policy's entropy (exploration; Williams & Peng, 1991). Entropies from
  :func:`categorical_entropy`, :func:`gaussian_entropy` or ``dist.entropy()``.
  """
  return -jnp.mean(jnp.asarray(entropy))
