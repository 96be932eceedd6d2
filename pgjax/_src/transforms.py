r"""The natural-gradient preconditioner as an optax gradient transformation.

:func:`scale_by_natural_gradient` turns incoming updates :math:`g` (optax
convention: gradients of a loss) into :math:`(F + \lambda I)^{-1} g`, optionally
rescaled to a KL trust region, with the Fisher-vector product supplied **at
update time** as the keyword argument ``fvp`` (it depends on the current
parameters and batch, so it cannot be bound at construction). It is an
``optax.GradientTransformationExtraArgs``, so it chains with any optax
transformation (``optax.chain`` forwards ``fvp`` to it and drops it for the
others)::

    tx = pgjax.natural.natural_sgd(learning_rate=0.1, damping=1e-3)
    fvp = pgjax.natural.fisher_vector_product(dist_fn, params)
    updates, opt_state = tx.update(grads, opt_state, params, fvp=fvp)
    params = optax.apply_updates(params, updates)

Hyperparameters ``damping``, ``max_kl`` and ``tol`` may be JAX values (traced):
build the transformation inside the function you ``vmap`` over them, or wrap
the constructor in ``optax.inject_hyperparams``::

    tx = optax.inject_hyperparams(pgjax.natural.natural_sgd)(learning_rate=0.1, damping=0.3)

``iters`` (the number of conjugate-gradient iterations) is static: its default
``None`` (10 iterations) is not a number, so ``inject_hyperparams`` leaves it
alone; to set it through ``inject_hyperparams`` name it static,
``optax.inject_hyperparams(natural_sgd, static_args=("iters",))(..., iters=20)``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from pgjax._src import linalg
from pgjax._src import natural_gradient as ng
from pgjax._src import validation
from pgjax._src.base import PyTree
from pgjax._src.linalg import CGInfo

__all__ = ["NaturalGradientState", "natural_sgd", "scale_by_natural_gradient"]


class NaturalGradientState(NamedTuple):
  """State of :func:`scale_by_natural_gradient`: a step counter and the last solve's diagnostics.

  Attributes:
    count: int32 number of updates so far.
    cg_info: :class:`~pgjax._src.linalg.CGInfo` of the last update (zeros before the first).
    trust_region: :class:`~pgjax._src.natural_gradient.TrustRegionInfo` of the last update
      (all zeros when ``max_kl`` is None or before the first update).
  """

  count: jax.Array
  cg_info: CGInfo
  trust_region: ng.TrustRegionInfo


_DEFAULT_ITERS = 10


def _static_iters(iters) -> int:
  """``iters`` as a Python int (None -> the default); a traced value gets a message that says why."""
  if iters is None:
    return _DEFAULT_ITERS
  if validation.is_traced(iters):
    raise TypeError("`iters` must be a static Python int (it is the length of the conjugate-gradient "
                    "loop), got a traced value; with optax.inject_hyperparams pass "
                    "static_args=('iters',).")
  if isinstance(iters, jax.Array) and iters.ndim == 0 and jnp.issubdtype(iters.dtype, jnp.integer):
    iters = int(iters)
  return validation.check_positive_int(iters, "iters", minimum=1)


def scale_by_natural_gradient(
    *,
    damping: jax.typing.ArrayLike = 1e-3,
    iters: int | None = None,
    tol: jax.typing.ArrayLike = 1e-10,
    max_kl: jax.typing.ArrayLike | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Preconditions updates by the inverse damped Fisher; optionally scales to a KL radius.

  .. math::

     u \;\mapsto\; d = (F + \lambda I)^{-1} u \quad\text{or, with max\_kl }\delta,\quad
     u \;\mapsto\; \sqrt{\frac{2\delta}{d^\top F d}}\; d,

  where :math:`F v` is ``fvp(v)`` passed to ``update``. Sign is preserved (the
  output points like the input, so chain with ``optax.scale_by_learning_rate``
  or use :func:`natural_sgd` for descent on a loss). With ``max_kl`` the output
  has quadratic-model KL exactly :math:`\delta`; a following learning rate
  :math:`\eta` gives :math:`\eta^2 \delta` (so ``learning_rate=1`` is TRPO's
  step without the line search). The KL scaling uses the undamped ``fvp``
  (see :func:`~pgjax._src.natural_gradient.trust_region_step` for why).

  Args:
    damping: :math:`\lambda \ge 0` (may be traced).
    iters: conjugate-gradient iterations (static int >= 1); None means 10.
    tol: CG relative tolerance (may be traced).
    max_kl: None (no trust-region scaling) or :math:`\delta > 0` (may be
      traced; whether it is None is static).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update(updates, state,
    params=None, *, fvp, **extra_args)`` requires ``fvp``: a callable
    ``v -> F v`` on pytrees shaped like ``updates``.

  Raises:
    TypeError / ValueError: at construction for a bad ``iters``, a concrete
    negative ``damping`` / ``tol`` or non-positive ``max_kl``; at update for a
    missing or non-callable ``fvp`` or one whose output does not match
    ``updates``.
  """
  iters = _static_iters(iters)
  validation.check_nonnegative(damping, "damping")
  validation.check_nonnegative(tol, "tol")
  if max_kl is not None:
    validation.check_nonnegative(max_kl, "max_kl", strict=True)

  def init_fn(params):
    dtype = linalg.tree_scalar_dtype(params) if jax.tree_util.tree_leaves(params) else jnp.float32
    zero = jnp.zeros((), dtype)
    return NaturalGradientState(
        count=jnp.zeros((), jnp.int32),
        cg_info=CGInfo(jnp.zeros((), jnp.int32), zero, jnp.zeros((), bool)),
        trust_region=ng.TrustRegionInfo(zero, zero, zero, zero),
    )

  def update_fn(updates, state, params=None, *, fvp: Callable[[PyTree], PyTree] | None = None,
                **extra_args):
    del params, extra_args
    if fvp is None:
      raise TypeError("scale_by_natural_gradient.update needs the Fisher-vector product as the "
                      "keyword argument `fvp` (e.g. pgjax.natural.fisher_vector_product(...)).")
    direction, cg_info = ng.natural_gradient(updates, fvp, damping=damping, iters=iters, tol=tol)
    dtype = state.trust_region.scale.dtype
    if max_kl is None:
      zero = jnp.zeros((), dtype)
      tr_info = ng.TrustRegionInfo(zero, zero, zero, zero)
      out = direction
    else:
      out, tr_info = ng.trust_region_step(direction, updates, fvp, max_kl=max_kl)
      tr_info = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), tr_info)
    cg_info = CGInfo(cg_info.iterations, cg_info.residual_norm.astype(dtype), cg_info.converged)
    new_state = NaturalGradientState(count=optax.safe_increment(state.count), cg_info=cg_info,
                                     trust_region=tr_info)
    return out, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def natural_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    damping: jax.typing.ArrayLike = 1e-3,
    iters: int | None = None,
    tol: jax.typing.ArrayLike = 1e-10,
    max_kl: jax.typing.ArrayLike | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Natural gradient descent on a loss: :math:`\theta \leftarrow \theta - \eta\,(F + \lambda I)^{-1} g`.

  ``optax.chain(scale_by_natural_gradient(...), optax.scale_by_learning_rate(learning_rate))``.
  With ``max_kl`` the step before the learning rate has quadratic-model KL
  :math:`\delta`, so the full step has :math:`\eta^2 \delta`. For the policy
  gradient of a reward (an ascent direction) feed the negated gradient, or the
  gradient of a surrogate loss such as
  ``pgjax.losses.score_function_surrogate``.

  Args:
    learning_rate: a float or an optax schedule.
    damping, iters, tol, max_kl: see :func:`scale_by_natural_gradient`. Wrapped in
      ``optax.inject_hyperparams``, ``learning_rate``, ``damping``, ``tol`` and a numeric
      ``max_kl`` become injected (traced) hyperparameters; ``iters`` must be left at its
      default or named in ``static_args``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; pass ``fvp=...`` to ``update``.

  References:
    S. Amari, "Natural gradient works efficiently in learning", 1998.
    S. Kakade, "A natural policy gradient", NeurIPS 2001.
  """
  return optax.chain(
      scale_by_natural_gradient(damping=damping, iters=iters, tol=tol, max_kl=max_kl),
      optax.scale_by_learning_rate(learning_rate),
  )
