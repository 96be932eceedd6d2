r"""Matrix-free linear algebra for natural gradients: conjugate gradient on pytrees.

The natural gradient needs the solution of :math:`(F + \lambda I)\, x = g` where
:math:`F` is available only through products :math:`v \mapsto F v` (see
:mod:`pgjax._src.fisher`). This module provides a conjugate-gradient (CG) solver
written for that use:

* pytree-valued (``b`` and ``x`` have the structure of a parameter pytree, e.g.
  flax ``params``), each leaf keeping its dtype;
* a *fixed* number of iterations (``iters`` is static), with a masked update
  once the residual is small enough, so a ``jax.vmap`` over seeds or damping
  values runs one compiled loop and never divides by zero;
* returns diagnostics (:class:`CGInfo`: iterations actually used, residual norm,
  whether the tolerance was reached).

Why pgjax has its own CG instead of :func:`jax.scipy.sparse.linalg.cg` or
lineax (observed with jax 0.10.2 on CPU): ``jax.scipy``'s ``cg`` returned NaN in 2 of 64 float32 systems at ``tol=0`` once the residual
underflowed (it divides by :math:`p^\top A p` even when that is 0), reports no
iteration count, and under ``vmap`` its ``while_loop`` runs every member for as
long as the slowest one anyway; lineax's CG raises an error by default when it
hits ``max_steps`` inside a vmapped sweep, and adds a dependency. The solver
below is a few lines of textbook CG (Hestenes & Stiefel, 1952) with guards.

Low precision: leaves in bfloat16 or float16 are solved in float32 (the
iterates, residuals and ``matvec``'s outputs are promoted; ``matvec`` receives
its inputs in the leaves' own dtypes) and the solution is returned in the
leaves' dtypes.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pgjax._src import validation
from pgjax._src.base import PyTree
from pgjax._src.utils import tree_vdot

__all__ = ["CGInfo", "conjugate_gradient"]


class CGInfo(NamedTuple):
  r"""Diagnostics returned by :func:`conjugate_gradient`.

  Attributes:
    iterations: int32 scalar, the number of CG updates actually applied (at
      most ``iters``; 0 when ``b`` is already solved by ``x0``).
    residual_norm: scalar, :math:`\|r_k\|_2` of the CG recurrence residual
      :math:`r_k = b - (A + \lambda I) x_k` at the returned solution (the
      recurrence value, which can drift from the true residual in finite
      precision by roughly machine epsilon times :math:`\|A\|\,\|x\|`).
    converged: bool scalar, ``residual_norm <= tol * ||b||``.
  """

  iterations: jax.Array
  residual_norm: jax.Array
  converged: jax.Array


def conjugate_gradient(
    matvec: Callable[[PyTree], PyTree],
    b: PyTree,
    *,
    iters: int = 10,
    damping: jax.typing.ArrayLike = 0.0,
    tol: jax.typing.ArrayLike = 1e-10,
    x0: PyTree | None = None,
) -> tuple[PyTree, CGInfo]:
  r"""Solves :math:`(A + \lambda I)\, x = b` by conjugate gradient, matrix-free.

  .. math::

     r_0 = b - (A + \lambda I) x_0,\quad p_0 = r_0,\qquad
     \alpha_k = \frac{r_k^\top r_k}{p_k^\top (A + \lambda I) p_k},\quad
     x_{k+1} = x_k + \alpha_k p_k,\quad r_{k+1} = r_k - \alpha_k (A + \lambda I) p_k,

  .. math::

     \beta_k = \frac{r_{k+1}^\top r_{k+1}}{r_k^\top r_k},\quad p_{k+1} = r_{k+1} + \beta_k p_k .

  Exactly ``iters`` iterations are traced (a ``lax.fori_loop`` with static
  bounds, so one matrix-vector product per iteration is always computed). An
  iteration *updates* the iterate only while it is active: the residual is
  above ``tol * ||b||``, no earlier iteration stopped, and the curvature
  :math:`p^\top (A + \lambda I) p` is positive, finite and above the smallest
  normal float (a zero or negative curvature means a singular or indefinite
  system, so the solver stops there instead of dividing by zero). Inactive
  iterations leave everything unchanged, so the result is finite whenever
  ``matvec`` is, and under ``vmap`` each member stops at its own iteration.

  Differentiable (the loop has static bounds, so ``jax.grad`` through the solution with respect to
  ``b``, ``damping`` or anything ``matvec`` closes over works); iterations masked after convergence
  contribute nothing. With ``tol=0`` and more iterations than needed, the derivative passes through
  iterations driven by round-off and can overflow: keep ``tol > 0`` when differentiating.

  For a symmetric positive-definite :math:`A + \lambda I` of size :math:`n`,
  ``iters >= n`` gives the exact solution up to rounding. On a singular
  :math:`A` (e.g. the softmax Fisher :math:`\mathrm{diag}(p) - p p^\top`) use
  ``damping > 0``: undamped, a ``b`` with a component in the null space has no
  solution and CG returns a finite but arbitrarily large iterate.

  Args:
    matvec: linear map :math:`v \mapsto A v` on pytrees with the structure of
      ``b`` (e.g. a Fisher-vector product). Must be symmetric positive
      semi-definite for the CG guarantees; it is called ``iters + 1`` times
      (``iters`` when ``x0`` is None), all inside one trace.
    b: right-hand side, any pytree of real floating arrays.
    iters: number of CG iterations (static Python int >= 1). Shape-changing
      hyperparameter: bind it before ``jit``.
    damping: :math:`\lambda \ge 0`, added as :math:`\lambda I` (Tikhonov /
      Levenberg-Marquardt damping). May be traced (``vmap`` over it).
    tol: relative tolerance; iteration stops updating once
      :math:`\|r\| \le \mathrm{tol}\,\|b\|`. ``tol=0`` runs all iterations
      (until an exact zero residual or a breakdown). May be traced.
    x0: optional initial guess with the structure of ``b`` (warm start);
      zeros when None.

  Returns:
    ``(x, info)``: ``x`` has the tree structure and leaf dtypes of ``b``;
    ``info`` is a :class:`CGInfo`.

  Raises:
    TypeError: ``iters`` is not an int, ``matvec`` is not callable, or a leaf of
      ``b`` is not a real floating array.
    ValueError: ``iters < 1``, a concrete negative ``damping`` or ``tol``, or
      ``matvec`` / ``x0`` with a tree structure or leaf shapes different from ``b``.

  References:
    M. R. Hestenes and E. Stiefel, "Methods of conjugate gradients for solving
    linear systems", J. Res. Nat. Bur. Standards 49(6), 1952.
    J. Nocedal and S. J. Wright, "Numerical Optimization", 2nd ed., Alg. 5.2.
  """
  iters = validation.check_positive_int(iters, "iters", minimum=1)
  validation.check_callable(matvec, "matvec")
  validation.check_nonnegative(damping, "damping")
  validation.check_nonnegative(tol, "tol")
  b_in = validation.check_float_tree(b, "b")
  out_shape = jax.eval_shape(matvec, b_in)
  validation.check_same_structure(b_in, out_shape, "b", "matvec(b)")
  # Work in float32 or wider; matvec sees (and returns) the caller's dtypes.
  b = jax.tree_util.tree_map(_promote, b_in)
  user_matvec = matvec

  def matvec(v):
    v_in = jax.tree_util.tree_map(lambda x, ref: x.astype(ref.dtype), v, b_in)
    return jax.tree_util.tree_map(lambda y, ref: jnp.asarray(y).astype(ref.dtype), user_matvec(v_in), b)

  if x0 is None:
    x0 = jax.tree_util.tree_map(jnp.zeros_like, b)
    x0_is_zero = True
  else:
    validation.check_same_structure(b, x0, "b", "x0")
    x0 = jax.tree_util.tree_map(lambda x, ref: jnp.asarray(x, ref.dtype), x0, b)
    x0_is_zero = False

  scalar_dtype = tree_scalar_dtype(b)
  damping = jnp.asarray(damping, scalar_dtype)
  tol = jnp.asarray(tol, scalar_dtype)
  tiny = jnp.asarray(np.finfo(scalar_dtype).tiny, scalar_dtype)

  def damped(v):
    av = matvec(v)
    return jax.tree_util.tree_map(
        lambda a, x: (a + damping.astype(x.dtype) * x).astype(x.dtype), av, v)

  if x0_is_zero:
    r0 = b
  else:
    r0 = tree_sub(b, damped(x0))
  rs0 = tree_vdot(r0, r0).astype(scalar_dtype)
  bnorm2 = tree_vdot(b, b).astype(scalar_dtype)
  threshold = tol * tol * bnorm2

  def body(_, carry):
    x, r, p, rs, used, stopped = carry
    ap = damped(p)
    pap = tree_vdot(p, ap).astype(scalar_dtype)
    active = jnp.logical_and(jnp.logical_not(stopped), rs > threshold)
    curvature_ok = jnp.logical_and(pap > tiny, jnp.isfinite(pap))
    # Denominators are replaced by 1 wherever the update is not applied ("double where"), so that
    # reverse-mode derivatives through the solve (e.g. with respect to the damping) stay finite after
    # convergence instead of 0 * inf = NaN from the discarded branch.
    use = active & curvature_ok
    alpha = rs / jnp.where(use, pap, 1.0)
    ok = use & jnp.isfinite(alpha)
    alpha = jnp.where(ok, alpha, 0.0)
    x_new = tree_axpy(alpha, p, x)
    r_new = tree_axpy(-alpha, ap, r)
    rs_new = tree_vdot(r_new, r_new).astype(scalar_dtype)
    beta = jnp.where(ok, rs_new / jnp.where(ok & (rs > 0), rs, 1.0), 0.0)
    p_new = tree_axpy(beta, p, r_new)
    select = lambda new, old: jax.tree_util.tree_map(
        lambda n, o: jnp.where(ok, n, o), new, old)
    x = select(x_new, x)
    r = select(r_new, r)
    p = select(p_new, p)
    rs = jnp.where(ok, rs_new, rs)
    used = used + ok.astype(jnp.int32)
    # Once an active iteration cannot update (breakdown), stop for good.
    stopped = stopped | (active & jnp.logical_not(ok))
    return x, r, p, rs, used, stopped

  init = (x0, r0, r0, rs0, jnp.zeros((), jnp.int32), jnp.zeros((), bool))
  x, _, _, rs, used, _ = jax.lax.fori_loop(0, iters, body, init)
  # A non-finite right-hand side (a NaN gradient, say) must not turn into a silent zero step: propagate it.
  finite_b = jnp.isfinite(bnorm2)
  x = jax.tree_util.tree_map(lambda v: jnp.where(finite_b, v, jnp.asarray(jnp.nan, v.dtype)), x)
  x = jax.tree_util.tree_map(lambda v, ref: v.astype(ref.dtype), x, b_in)
  info = CGInfo(iterations=used, residual_norm=jnp.sqrt(rs), converged=rs <= threshold)
  return x, info


def _promote(x: jax.Array) -> jax.Array:
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


# --------------------------------------------------------------------------
# Small pytree helpers (shared by fisher / natural_gradient / transforms).
# --------------------------------------------------------------------------


def tree_axpy(alpha: jax.Array, x: PyTree, y: PyTree) -> PyTree:
  """``alpha * x + y`` leafwise, keeping ``y``'s dtypes."""
  return jax.tree_util.tree_map(lambda a, b: (alpha.astype(b.dtype) * a + b).astype(b.dtype), x, y)


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
  return jax.tree_util.tree_map(lambda x, y: (x - y).astype(x.dtype), a, b)


def tree_scale(alpha: jax.Array, x: PyTree) -> PyTree:
  """``alpha * x`` leafwise, keeping ``x``'s dtypes."""
  alpha = jnp.asarray(alpha)
  return jax.tree_util.tree_map(lambda a: (alpha.astype(a.dtype) * a).astype(a.dtype), x)


def tree_scalar_dtype(tree: PyTree) -> jnp.dtype:
  """The dtype used for CG scalars: the widest leaf dtype, at least float32."""
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.result_type(*[jnp.asarray(x).dtype for x in leaves], jnp.float32)
