r"""Baselines (control variates) for score-function and zeroth-order estimators: one interface.

A baseline :math:`b_i` is subtracted from the sample value :math:`f(x_i)` in

.. math::

   \hat g = \frac{1}{N} \sum_{i=1}^N (f(x_i) - b_i)\, s_i, \qquad s_i = \nabla_\theta \log p_\theta(x_i)

(for zeroth-order estimators :math:`s_i = u_i / \sigma`). Since :math:`\mathbb{E}[s_i] = 0`, any
:math:`b_i` that is independent of :math:`x_i` leaves :math:`\hat g` unbiased; a :math:`b_i` computed from a
batch *containing* :math:`x_i` generally biases it. Every baseline says which case it is in.

**The interface.** A baseline is a pure function of one batch's values, with the sample axis *last* and
any leading axes broadcast over (like rlax and optax functions):

* ``rewards`` ``[..., N]``: :math:`f(x_i)` (one batch per leading index: e.g. ``[T, B]`` trajectories
  give a baseline per time step across the ``B`` trajectories);
* the variance-optimal baselines also take ``sq_norms`` ``[..., N]`` (:math:`\|s_i\|^2`) or ``sq_scores``
  ``[..., N, D]`` (:math:`s_{ik}^2`);
* the result has the shape of ``rewards`` (``[..., N, D]`` for the per-coordinate forms), so the weights are
  ``rewards - baselines``.

:func:`get` resolves whatever a user passes as ``baseline=`` (a name, a number, a callable ``[N] -> [N]``, or
a :class:`Baseline`) into a :class:`Baseline`: the function, the inputs it needs, the smallest ``N`` it works
with and whether it is unbiased. ``score_function``, ``zeroth_order``, :func:`pgjax.losses.subtract_baseline`
and the trainers in :mod:`pgjax.algos` all resolve their ``baseline`` argument through it, so a name means
the same thing everywhere and a user's callable plugs in the same way everywhere.

**NaN policy.** A non-finite value :math:`f(x_i)` propagates into the estimate: every baseline here (and
:func:`group_normalize`) returns weights that are NaN wherever the batch's NaN enters, never a silently
finite number, so the estimate is NaN and the failure is visible (use ``check_finite=True`` in
:func:`pgjax.score_function` to raise instead). Nothing here ranks, drops or zeroes a NaN.

**Gradients.** Every function here is differentiable in all its inputs (``rewards``, ``sq_norms``,
``sq_scores``, a constant's value), so an estimate built from them can be differentiated with respect to
a baseline's parameters (RELAX-style tuning of a control variate).

References:
  Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement learning",
  Machine Learning, 1992.
  Weaver & Tao, "The optimal reward baseline for gradient-based reinforcement learning", UAI 2001.
  Greensmith, Bartlett, Baxter, "Variance reduction techniques for gradient estimates in reinforcement
  learning", JMLR 2004 (variance-optimal baselines).
  Kool, van Hoof, Welling, "Buy 4 REINFORCE samples, get a baseline for free!", ICLR workshop 2019.
  Shao et al., "DeepSeekMath: pushing the limits of mathematical reasoning in open language models", 2024
  (GRPO group normalisation).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from pgjax._src import validation

__all__ = [
    "Baseline",
    "EmaState",
    "batch_mean",
    "constant",
    "ema_fold",
    "ema_init",
    "ema_update",
    "ema_value",
    "get",
    "group_normalize",
    "leave_one_out",
    "names",
    "none",
    "optimal",
    "optimal_leave_one_out",
    "optimal_per_coordinate",
    "optimal_per_coordinate_leave_one_out",
]

# Smallest denominator treated as non-zero when dividing by sums of squared scores.
_TINY = 1e-30


# ---------------------------------------------------------------------------------------------------
# Shape checks.


def _check_rewards(rewards: ArrayLike, *, min_samples: int = 1) -> jax.Array:
  rewards = jnp.asarray(rewards)
  if rewards.ndim < 1:
    raise ValueError(f"`rewards` must have shape [..., N] (samples last), got a scalar.")
  if rewards.shape[-1] < min_samples:
    raise ValueError(f"this baseline needs at least {min_samples} samples (N = rewards.shape[-1]), "
                     f"got N = {rewards.shape[-1]} (shape {rewards.shape}).")
  if not jnp.issubdtype(rewards.dtype, jnp.floating):
    rewards = rewards.astype(jnp.result_type(float))
  return rewards


def _check_paired(rewards: jax.Array, other: ArrayLike, name: str, extra: int) -> jax.Array:
  other = jnp.asarray(other)
  if not jnp.issubdtype(other.dtype, jnp.floating):
    other = other.astype(rewards.dtype)
  if other.ndim != rewards.ndim + extra or other.shape[:rewards.ndim] != rewards.shape:
    want = "[..., N]" if extra == 0 else "[..., N, D]"
    raise ValueError(f"`{name}` must have shape {want} matching `rewards` {rewards.shape}, got {other.shape}.")
  return other


def _wide(x: jax.Array) -> jax.Array:
  """``x`` in at least float32 (sums of low-precision values lose too much in bfloat16/float16)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


# ---------------------------------------------------------------------------------------------------
# The baselines.


def none(rewards: ArrayLike) -> jax.Array:
  """No baseline: zeros of the shape of ``rewards`` ``[..., N]``. Unbiased."""
  rewards = _check_rewards(rewards)
  return jnp.zeros_like(rewards)


def constant(rewards: ArrayLike, value: ArrayLike) -> jax.Array:
  """A constant baseline ``value`` broadcast to ``rewards`` ``[..., N]``. Unbiased.

  ``value`` is a scalar or has shape ``[...]`` (one value per batch, e.g. an EMA per row); it may be traced
  and is differentiable.
  """
  rewards = _check_rewards(rewards)
  value = jnp.asarray(value)
  if value.ndim == 0:
    return jnp.broadcast_to(value.astype(rewards.dtype), rewards.shape)
  if value.shape != rewards.shape[:-1]:
    raise ValueError(f"`value` must be a scalar or have the leading shape of `rewards` "
                     f"{rewards.shape[:-1]}, got {value.shape}.")
  return jnp.broadcast_to(value.astype(rewards.dtype)[..., None], rewards.shape)


def batch_mean(rewards: ArrayLike) -> jax.Array:
  r"""The batch mean :math:`\bar f = \frac1N\sum_j f(x_j)`, including :math:`x_i` itself.

  Bias: :math:`b_i` contains :math:`f(x_i)/N`, so :math:`\mathbb{E}[\hat g] = \frac{N-1}{N}\nabla J`
  exactly (the estimator is shrunk by :math:`(N-1)/N`). With :math:`N = 1` the weight is
  :math:`f - f = 0`, so the estimate is zero. :func:`leave_one_out` is the unbiased version (equal to
  this one times :math:`N/(N-1)` in exact arithmetic).
  """
  rewards = _check_rewards(rewards)
  mean = jnp.mean(_wide(rewards), axis=-1, keepdims=True).astype(rewards.dtype)
  return jnp.broadcast_to(mean, rewards.shape)


def leave_one_out(rewards: ArrayLike) -> jax.Array:
  r"""Leave-one-out ("RLOO") baseline :math:`b_i = \frac{1}{N-1}\sum_{j\ne i} f(x_j)`. Unbiased; needs N >= 2.

  Kool, van Hoof, Welling, "Buy 4 REINFORCE samples, get a baseline for free!", ICLR workshop 2019.
  """
  rewards = _check_rewards(rewards, min_samples=2)
  n = rewards.shape[-1]
  r = _wide(rewards)
  return ((jnp.sum(r, axis=-1, keepdims=True) - r) / (n - 1)).astype(rewards.dtype)


def _weighted_mean(rewards: jax.Array, weights: jax.Array, axis: int) -> jax.Array:
  """``sum(r w) / sum(w)`` along ``axis`` (kept), the plain mean where ``sum(w)`` is ~0."""
  num = jnp.sum(rewards * weights, axis=axis, keepdims=True)
  den = jnp.sum(weights, axis=axis, keepdims=True)
  fallback = jnp.mean(rewards, axis=axis, keepdims=True)
  safe = den > _TINY
  return jnp.where(safe, num / jnp.where(safe, den, 1.0), fallback)


def _exclusive_sum(x: jax.Array, axis: int) -> jax.Array:
  """``sum_{j != i} x_j`` along ``axis`` from exclusive prefix and suffix sums (no ``total - x_i`` cancellation)."""
  axis = axis % x.ndim
  zero = jnp.zeros_like(jax.lax.slice_in_dim(x, 0, 1, axis=axis))
  head = jax.lax.slice_in_dim(x, 0, x.shape[axis] - 1, axis=axis)       # x_0 .. x_{N-2}
  tail = jax.lax.slice_in_dim(x, 1, x.shape[axis], axis=axis)           # x_1 .. x_{N-1}
  prefix = jnp.concatenate([zero, jnp.cumsum(head, axis=axis)], axis=axis)                  # sum_{j < i}
  suffix = jnp.concatenate([jnp.flip(jnp.cumsum(jnp.flip(tail, axis), axis=axis), axis), zero], axis=axis)
  return prefix + suffix


def optimal(rewards: ArrayLike, sq_norms: ArrayLike) -> jax.Array:
  r"""In-batch variance-optimal scalar baseline, broadcast to ``[..., N]``.

  .. math::

     b^* = \frac{\mathbb{E}[f(x)\,\|s(x)\|^2]}{\mathbb{E}[\|s(x)\|^2]}
     \approx \frac{\sum_i f(x_i)\, \|s_i\|^2}{\sum_i \|s_i\|^2}

  minimises the total variance :math:`\mathbb{E}\|\hat g\|^2 - \|\nabla J\|^2` among constant baselines
  (Weaver & Tao, 2001; Greensmith et al., 2004). Bias: estimated from the batch that contains :math:`x_i`,
  so the estimator is biased by :math:`O(1/N)`; :func:`optimal_leave_one_out` is unbiased. Where every
  score in a batch is zero the gradient is zero whatever the baseline; the batch mean is returned then.
  With :math:`N = 1`, :math:`b = f s^2 / s^2`, which equals :math:`f` only up to rounding, so the estimate
  is zero only up to rounding error. At small N with heavy-tailed scores the estimated coefficient can
  cost more variance than it saves (measured in :func:`optimal_leave_one_out`).
  """
  rewards = _check_rewards(rewards)
  sq_norms = _check_paired(rewards, sq_norms, "sq_norms", 0)
  b = _weighted_mean(_wide(rewards), _wide(sq_norms), axis=-1)
  return jnp.broadcast_to(b, rewards.shape).astype(rewards.dtype)


def optimal_leave_one_out(rewards: ArrayLike, sq_norms: ArrayLike) -> jax.Array:
  r"""Leave-one-out variance-optimal scalar baseline :math:`b_i = \sum_{j\ne i} f_j\|s_j\|^2 / \sum_{j\ne i}\|s_j\|^2`.

  Unbiased (:math:`b_i` is a function of the other samples only); needs N >= 2. Where the other samples'
  scores are all zero it falls back to their plain mean (:func:`leave_one_out`).

  When it loses: the coefficient is a ratio of two noisy sums. At small N, and when the squared score
  norms are heavy-tailed (a few samples carry most of :math:`\sum_j\|s_j\|^2`; for a Gaussian's
  :math:`\log\sigma` the score is :math:`z^2 - 1`, whose square has tails like :math:`z^4`), its noise can
  cost more than the optimal coefficient saves. Measured on the Gaussian step problem
  (:func:`pgjax.problems.gaussian_step` with its defaults: :math:`f(x) = \sum_{k=1}^3 \mathbb 1[x_k > 0.5]`,
  :math:`x \sim N(0, I_3)`, gradient in the mean and log standard deviation) with 20000 replicates: the
  total variance is 1.13 times that of :func:`leave_one_out` at N = 4 and at N = 8 (0.937 vs 0.825,
  standard errors 0.009 and 0.006), and still 1.01 times at N = 64. Prefer :func:`leave_one_out` unless a
  measurement on the problem at hand says otherwise.
  """
  rewards = _check_rewards(rewards, min_samples=2)
  sq_norms = _check_paired(rewards, sq_norms, "sq_norms", 0)
  r, w = _wide(rewards), _wide(sq_norms)
  num = _exclusive_sum(r * w, axis=-1)
  den = _exclusive_sum(w, axis=-1)
  fallback = leave_one_out(r)
  # The threshold depends on the other samples only, so b_i stays independent of x_i (unbiased).
  safe = den > _TINY
  return jnp.where(safe, num / jnp.where(safe, den, 1.0), fallback).astype(rewards.dtype)


def optimal_per_coordinate(rewards: ArrayLike, sq_scores: ArrayLike) -> jax.Array:
  r"""In-batch per-coordinate optimal baseline :math:`b^*_k = \sum_i f_i s_{ik}^2 / \sum_i s_{ik}^2`, shape ``[..., N, D]``.

  Minimises the variance of each coordinate separately. Biased by :math:`O(1/N)` (in-batch); see
  :func:`optimal_per_coordinate_leave_one_out`. Coordinates whose scores are all zero get the batch mean.
  Loses to the plain mean at small N with heavy-tailed scores, like :func:`optimal_leave_one_out`.
  """
  rewards = _check_rewards(rewards)
  sq_scores = _check_paired(rewards, sq_scores, "sq_scores", 1)
  b = _weighted_mean(_wide(rewards)[..., None], _wide(sq_scores), axis=-2)
  return jnp.broadcast_to(b, sq_scores.shape).astype(rewards.dtype)


def optimal_per_coordinate_leave_one_out(rewards: ArrayLike, sq_scores: ArrayLike) -> jax.Array:
  r"""Leave-one-out per-coordinate optimal baseline, shape ``[..., N, D]``. Unbiased; needs N >= 2.

  :math:`b_{ik} = \sum_{j\ne i} f_j s_{jk}^2 / \sum_{j\ne i} s_{jk}^2` (the other samples' plain mean where
  their scores in coordinate :math:`k` are all zero). Loses to :func:`leave_one_out` at small N with
  heavy-tailed scores, like :func:`optimal_leave_one_out`.
  """
  rewards = _check_rewards(rewards, min_samples=2)
  sq_scores = _check_paired(rewards, sq_scores, "sq_scores", 1)
  r, w = _wide(rewards)[..., None], _wide(sq_scores)
  num = _exclusive_sum(r * w, axis=-2)
  den = _exclusive_sum(w, axis=-2)
  fallback = leave_one_out(_wide(rewards))[..., None]
  safe = den > _TINY
  return jnp.where(safe, num / jnp.where(safe, den, 1.0), fallback).astype(rewards.dtype)


def group_normalize(rewards: ArrayLike, *, eps: float = 1e-6, ddof: int = 0) -> jax.Array:
  r"""Group-normalised advantages (GRPO): :math:`A_i = (f_i - \bar f) / \mathrm{std}(f)` over the last axis.

  ``rewards`` is ``[..., G]``: each row along the last axis is one group (responses to one prompt, say).
  This returns *advantages* (the weights), not a baseline. Bias: both the mean (includes :math:`x_i`) and the
  division by the in-group standard deviation bias the estimator; the division also rescales the gradient
  per group. A group whose standard deviation is <= ``eps`` (e.g. all rewards equal) gets advantage 0, never
  :math:`\pm 1/\epsilon`. A group containing a NaN gets NaN advantages (the NaN policy of this module).

  References: Shao et al., "DeepSeekMath: pushing the limits of mathematical reasoning", 2024.
  """
  rewards = jnp.asarray(rewards)
  if rewards.ndim < 1 or rewards.shape[-1] < 1:
    raise ValueError(f"`rewards` must have shape [..., G] with G >= 1, got {rewards.shape}.")
  if rewards.shape[-1] - ddof < 1:
    raise ValueError(f"`ddof`={ddof} needs groups of size > {ddof}, got G = {rewards.shape[-1]}.")
  if not jnp.issubdtype(rewards.dtype, jnp.floating):
    rewards = rewards.astype(jnp.result_type(float))
  r = _wide(rewards)
  centred = r - jnp.mean(r, axis=-1, keepdims=True)
  std = jnp.sqrt(jnp.sum(centred ** 2, axis=-1, keepdims=True) / (rewards.shape[-1] - ddof))
  ok = std > eps
  # `centred * 0` (not a literal 0) keeps a NaN of the group in the zero-variance branch: NaN > eps is False.
  return jnp.where(ok, centred / jnp.where(ok, std, 1.0), centred * 0).astype(rewards.dtype)


# ---------------------------------------------------------------------------------------------------
# Exponential moving average across batches.


class EmaState(NamedTuple):
  """State of the EMA baseline: the running average :math:`m_t`, the number of batches folded in
  :math:`t` and the initial value :math:`m_0` (scalars, or one per leading index of the rewards)."""
  value: jax.Array
  count: jax.Array
  initial: jax.Array


def ema_init(value: ArrayLike = 0.0, *, dtype: Any = jnp.float32) -> EmaState:
  """Initial state of the EMA baseline; ``value`` (scalar or ``[...]``) is the baseline before any data."""
  value = jnp.asarray(value, dtype)
  return EmaState(value=value, count=jnp.zeros((), jnp.int32), initial=value)


def ema_value(state: EmaState, *, decay: ArrayLike = 0.9, debias: bool = True) -> jax.Array:
  r"""The EMA baseline to use for the *next* batch, computed before sampling it (unbiased).

  With ``debias=True`` the weight left on :math:`m_0` is removed, as in Adam:
  :math:`\hat m_t = (m_t - \text{decay}^t m_0) / (1 - \text{decay}^t)`, the exactly weighted average of the
  batch means seen so far (for :math:`m_0 = 0` this is Adam's :math:`m_t / (1-\text{decay}^t)`); before
  any batch it is :math:`m_0`. ``decay`` must be the one given to :func:`ema_fold`. Pass the result as
  ``baseline_value=`` with ``baseline="constant"``:

  .. code-block:: python

     b = baselines.ema_value(state, decay=0.9)
     grads, aux = estimator(key, params, baseline_value=b)
     state = baselines.ema_fold(state, aux.values, decay=0.9)
  """
  if not debias:
    return state.value
  _check_decay(decay)
  decay = jnp.asarray(decay, state.value.dtype)
  weight0 = decay ** state.count.astype(state.value.dtype)
  seen = state.count > 0
  return jnp.where(seen, (state.value - weight0 * state.initial) / jnp.where(seen, 1.0 - weight0, 1.0),
                   state.initial)


def _check_decay(decay: Any) -> None:
  validation.check_range(decay, "decay", 0.0, 1.0, hi_open=True)


def ema_fold(state: EmaState, rewards: ArrayLike, *, decay: ArrayLike = 0.9) -> EmaState:
  r"""Folds one batch ``rewards`` ``[..., N]`` into the EMA: :math:`m_t = \text{decay}\, m_{t-1} + (1 - \text{decay})\, \bar f_t`.

  ``decay`` is in [0, 1) and may be traced (a concrete value outside raises ``ValueError``). A NaN reward
  makes the state NaN (the module's NaN policy).
  """
  rewards = _check_rewards(rewards)
  _check_decay(decay)
  decay = jnp.asarray(decay, state.value.dtype)
  mean = jnp.mean(_wide(rewards), axis=-1).astype(state.value.dtype)
  if state.value.shape != mean.shape and state.value.ndim != 0:
    raise ValueError(f"`state.value` must be a scalar or have the leading shape of `rewards` "
                     f"{mean.shape}, got {state.value.shape}.")
  new_value = decay * state.value + (1.0 - decay) * mean
  initial = jnp.broadcast_to(state.initial, new_value.shape)
  return EmaState(value=new_value, count=state.count + 1, initial=initial)


def ema_update(state: EmaState, rewards: ArrayLike, *, decay: ArrayLike = 0.9,
               debias: bool = True) -> tuple[jax.Array, EmaState]:
  r"""``(state, rewards) -> (baselines [..., N], new_state)``: :func:`ema_value` then :func:`ema_fold`.

  The returned baseline is the average of *previous* batches (before ``rewards`` are folded in), so it is
  independent of the current samples and the estimator stays unbiased. Prefer :func:`ema_value` before
  sampling and :func:`ema_fold` after: the same numbers, without needing the batch to read the baseline.

  Args:
    state: from :func:`ema_init` or a previous call.
    rewards: ``[..., N]`` values of the current batch.
    decay: in [0, 1); may be traced (a concrete value outside [0, 1) raises ``ValueError``).
    debias: remove the initial value's weight (see :func:`ema_value`).
  """
  rewards = _check_rewards(rewards)
  current = ema_value(state, decay=decay, debias=debias)
  new_state = ema_fold(state, rewards, decay=decay)
  return constant(rewards, current), new_state


# ---------------------------------------------------------------------------------------------------
# The resolver.


class Baseline(NamedTuple):
  r"""A resolved baseline: what :func:`get` returns, and what a user builds for a custom one.

  Attributes:
    name: for messages.
    fn: ``fn(rewards [..., N], **inputs) -> [..., N]`` (``[..., N, D]`` with ``sq_scores``); baselines,
      or the weights themselves when ``gives_weights`` (as :func:`group_normalize`).
    inputs: keyword inputs ``fn`` needs besides the rewards: ``()``, ``("sq_norms",)`` (:math:`\|s_i\|^2`
      ``[..., N]``), ``("sq_scores",)`` (:math:`s_{ik}^2` ``[..., N, D]``) or ``("value",)`` (a constant
      given at call time, e.g. an EMA).
    min_samples: the smallest N it works with.
    unbiased: True when :math:`b_i` never depends on :math:`x_i` (the estimator stays unbiased); False for
      in-batch baselines; None when unknown (a user's callable).
    gives_weights: ``fn`` returns the weights :math:`w_i` rather than :math:`b_i`.
  """
  name: str
  fn: Callable[..., jax.Array]
  inputs: tuple[str, ...] = ()
  min_samples: int = 1
  unbiased: bool | None = None
  gives_weights: bool = False

  def _call(self, rewards, inputs):
    missing = [k for k in self.inputs if inputs.get(k) is None]
    if missing:
      raise TypeError(f"`baseline`={self.name!r} needs {', '.join(f'`{k}`' for k in missing)}.")
    return self.fn(rewards, **{k: inputs[k] for k in self.inputs})

  def __call__(self, rewards: ArrayLike, **inputs: Any) -> jax.Array:
    """The baselines :math:`b` for ``rewards`` ``[..., N]`` (inputs not in ``self.inputs`` are ignored)."""
    rewards = _check_rewards(rewards)
    out = self._call(rewards, inputs)
    return rewards - out if self.gives_weights else out

  def weights(self, rewards: ArrayLike, **inputs: Any) -> jax.Array:
    """The weights :math:`f(x_i) - b_i`, ``[..., N]`` (``[..., N, D]`` for per-coordinate baselines)."""
    rewards = _check_rewards(rewards)
    out = self._call(rewards, inputs)
    if self.gives_weights:
      return out
    return rewards[..., None] - out if out.ndim == rewards.ndim + 1 else rewards - out


def _constant_value(rewards, value):
  return constant(rewards, value)


_REGISTRY: dict[str, Baseline] = {
    b.name: b for b in (
        Baseline("none", none, (), 1, True),
        Baseline("constant", _constant_value, ("value",), 1, True),
        Baseline("mean", batch_mean, (), 1, False),
        Baseline("leave_one_out", leave_one_out, (), 2, True),
        Baseline("optimal", optimal, ("sq_norms",), 1, False),
        Baseline("optimal_leave_one_out", optimal_leave_one_out, ("sq_norms",), 2, True),
        Baseline("optimal_per_coordinate", optimal_per_coordinate, ("sq_scores",), 1, False),
        Baseline("optimal_per_coordinate_leave_one_out", optimal_per_coordinate_leave_one_out,
                 ("sq_scores",), 2, True),
        Baseline("group_normalize", group_normalize, (), 1, False, gives_weights=True),
    )
}
_ALIASES = {"batch_mean": "mean"}


def names() -> tuple[str, ...]:
  """The registered baseline names (what ``baseline=`` accepts as a string)."""
  return tuple(_REGISTRY)


def _rowwise(fn: Callable[[jax.Array], jax.Array], name: str) -> Callable[[jax.Array], jax.Array]:
  """Applies a user's ``[N] -> [N]`` callable to every row of ``[..., N]`` (vmap over leading axes)."""

  @functools.wraps(fn)
  def apply(rewards):
    flat = rewards.reshape((-1, rewards.shape[-1]))
    out = jax.vmap(lambda r: jnp.asarray(fn(r)))(flat)
    if out.shape != flat.shape:
      raise ValueError(f"callable `baseline` {name} must map rewards [N] to baselines [N]; for "
                       f"N = {flat.shape[1]} it returned shape {out.shape[1:]}.")
    return out.reshape(rewards.shape).astype(rewards.dtype)

  return apply


def _is_number(x: Any) -> bool:
  if isinstance(x, bool):
    return False
  if validation.is_traced(x):
    return x.ndim == 0
  return validation.is_concrete(x) and np.ndim(x) == 0 and np.issubdtype(np.asarray(x).dtype, np.number)


def get(baseline: Any, *, num_samples: int | None = None, samples_name: str = "num_samples",
        supports: tuple[str, ...] | None = None) -> Baseline:
  r"""Resolves a ``baseline=`` argument into a :class:`Baseline` (the one resolver every consumer uses).

  ==============================================  =====================================================
  ``None`` / ``"none"``                           :math:`b_i = 0`; unbiased
  a number ``c`` (may be traced)                  :math:`b_i = c`; unbiased
  ``"constant"``                                  :math:`b_i = ` the ``value`` input given at call time; unbiased
  ``"mean"`` (``"batch_mean"``)                   :func:`batch_mean`; :math:`\mathbb{E}\hat g = \frac{N-1}{N}\nabla J`
  ``"leave_one_out"``                             :func:`leave_one_out`; unbiased, N >= 2
  ``"optimal"``                                   :func:`optimal` (needs ``sq_norms``); :math:`O(1/N)` bias
  ``"optimal_leave_one_out"``                     :func:`optimal_leave_one_out` (``sq_norms``); unbiased, N >= 2
  ``"optimal_per_coordinate"``                    :func:`optimal_per_coordinate` (``sq_scores``); :math:`O(1/N)` bias
  ``"optimal_per_coordinate_leave_one_out"``      its leave-one-out form (``sq_scores``); unbiased, N >= 2
  ``"group_normalize"``                           :func:`group_normalize` weights; biased and rescaled
  a callable ``b(rewards [N]) -> [N]``            applied to each batch (vmapped over leading axes);
                                                  unbiased iff :math:`b_i` ignores :math:`x_i`
  a :class:`Baseline`                             used as given (for custom inputs such as ``sq_norms``)
  ==============================================  =====================================================

  Args:
    baseline: see the table.
    num_samples: if given, ``ValueError`` when it is below the baseline's ``min_samples``.
    samples_name: the caller's name for ``num_samples`` in that message (``"num_envs"``, ...).
    supports: if given, the inputs the caller can provide; ``ValueError`` if the baseline needs others.

  Returns:
    The :class:`Baseline`.

  Raises:
    ValueError: unknown name, too few samples, or an input the caller cannot provide.
    TypeError: anything that is not one of the above.
  """
  if isinstance(baseline, Baseline):
    spec = baseline
  elif baseline is None:
    spec = _REGISTRY["none"]
  elif isinstance(baseline, str):
    key = _ALIASES.get(baseline, baseline)
    if key not in _REGISTRY:
      raise ValueError(f"`baseline` must be one of {names()}, a number, a callable or a "
                       f"pgjax.baselines.Baseline, got {baseline!r}.")
    spec = _REGISTRY[key]
  elif _is_number(baseline):
    value = baseline
    spec = Baseline("constant", lambda rewards: constant(rewards, value), (), 1, True)
  elif callable(baseline):
    name = getattr(baseline, "__name__", type(baseline).__name__)
    spec = Baseline(name, _rowwise(baseline, name), (), 1, None)
  else:
    raise TypeError(f"`baseline` must be a name from {names()}, a number, a callable or a "
                    f"pgjax.baselines.Baseline, got {type(baseline).__name__}.")
  if num_samples is not None and num_samples < spec.min_samples:
    raise ValueError(f"`baseline`={spec.name!r} needs `{samples_name}` >= {spec.min_samples}, "
                     f"got {samples_name}={num_samples}.")
  if supports is not None:
    missing = [k for k in spec.inputs if k not in supports]
    if missing:
      raise ValueError(f"`baseline`={spec.name!r} needs {', '.join(f'`{k}`' for k in missing)}, which "
                       f"this estimator does not provide; it provides {supports or 'only the rewards'}.")
  return spec
