r"""Matrix-free Fisher-vector products for policies given as distrax distributions.

For a policy :math:`\pi_\theta(a \mid s)` evaluated on a batch of states
:math:`s_1, \dots, s_B` (with optional weights :math:`w_b \ge 0`), the Fisher
information matrix used by natural gradients and TRPO is the weighted mean of
the per-state Fisher matrices

.. math::

   F(\theta) = \frac{\sum_b w_b\, F_b(\theta)}{\sum_b w_b},\qquad
   F_b = \mathbb{E}_{a \sim \pi_\theta(\cdot \mid s_b)}
   \big[\nabla_\theta \log \pi_\theta(a \mid s_b)\,
        \nabla_\theta \log \pi_\theta(a \mid s_b)^\top\big]
   = \nabla^2_{\theta'} \mathrm{KL}\big(\pi_\theta(\cdot\mid s_b)\,\|\,\pi_{\theta'}(\cdot\mid s_b)\big)\Big|_{\theta'=\theta}.

(uniform weights :math:`1/B` by default, i.e. the mean over the batch, which is
what TRPO's mean-KL constraint differentiates). Three ways to multiply by it
without ever forming it:

* :func:`fisher_vector_product` -- the **Gauss-Newton form**
  :math:`F = J^\top M J`, with :math:`J = \partial z / \partial \theta` the
  Jacobian of the distribution's parameters :math:`z` (logits; loc and scale)
  and :math:`M` the Fisher of the distribution in those parameters: closed form
  for categorical logits (:math:`\mathrm{diag}(p) - p p^\top`), Bernoulli logits
  (:math:`p(1-p)`) and Normal / diagonal-Gaussian (loc, scale)
  (:math:`\mathrm{diag}(1/\sigma^2, 2/\sigma^2)`); for any other distrax
  distribution, the Hessian of the KL in the (small) output space, computed by
  autodiff. The network is linearised **once** (``jax.linearize``) and
  ``jax.linear_transpose`` gives :math:`J^\top`, so each product costs one
  linear forward and one linear backward pass through the stored Jacobian, no
  re-evaluation of the network's nonlinearities -- the cheap product that CG
  calls ten or more times per update.
* :func:`kl_hessian_vector_product` -- the Hessian of the mean KL in parameter
  space, forward-over-reverse (linearised once) or reverse-over-reverse. Equal
  to the Gauss-Newton product at :math:`\theta' = \theta` (the KL's gradient
  vanishes there, so its second-order term drops); kept as the reference and
  for distributions that are not pytrees.
* :func:`empirical_fisher_vector_product` -- the Fisher estimated from
  per-sample scores :math:`g_i = \nabla_\theta \log p_\theta(x_i)`,
  :math:`\hat F = \sum_i w_i g_i g_i^\top / \sum_i w_i`, again
  :math:`J^\top \mathrm{diag}(w) J` with :math:`J` the Jacobian of the vector of
  log-probabilities. Unbiased for :math:`F` when the :math:`x_i` are drawn from
  :math:`p_\theta` itself; with :math:`x_i` taken from data (the "empirical
  Fisher" of supervised learning) it is a different matrix (Kunstner et al.,
  2019).

All three accept any parameter pytree (flax ``params`` included), return
products with the tree structure and leaf dtypes of ``params`` (tangents are
cast to the parameters' dtypes, which ``jax.jvp`` requires), and are pure, so
they work under ``jit`` and ``vmap``. With low-precision parameters (bfloat16,
float16) the network runs in its own dtype, but the distribution's parameters,
the output-space Fisher and the weights are promoted to float32 before the
transposed product, which returns the parameters' dtype.

Distributions are duck-typed: the closed forms apply to the distrax classes
named below; anything else with ``batch_shape`` and ``kl_divergence`` (a pytree
of its parameters, or any object through the parameter-space KL Hessian) works
through the KL fallback.

Why hand-written: kfac-jax builds curvature blocks for layer-structured
networks and needs its own model registration; optax has no Fisher product. The
Gauss-Newton construction is a few lines on top of ``jax.linearize``.

References:
  S. Amari, "Natural gradient works efficiently in learning", Neural
  Computation 10(2), 1998.
  N. N. Schraudolph, "Fast curvature matrix-vector products for second-order
  gradient descent", Neural Computation 14(7), 2002.
  J. Martens, "New insights and perspectives on the natural gradient method",
  JMLR 21, 2020 (arXiv:1412.1193).
  J. Schulman et al., "Trust region policy optimization", ICML 2015 (Appendix C).
  F. Kunstner, L. Balles, P. Hennig, "Limitations of the empirical Fisher
  approximation for natural gradient descent", NeurIPS 2019.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from pgjax._src import linalg
from pgjax._src import utils
from pgjax._src import validation
from pgjax._src.base import PyTree

FisherProduct = Callable[[PyTree], PyTree]

__all__ = [
    "empirical_fisher_vector_product",
    "fisher_vector_product",
    "kl_hessian_vector_product",
]

_OUTPUT_FISHERS = ("auto", "kl")
_KL_MODES = ("forward_over_reverse", "reverse_over_reverse")


def fisher_vector_product(
    dist_fn: Callable[[PyTree], distrax.Distribution],
    params: PyTree,
    *,
    weights: jax.typing.ArrayLike | None = None,
    output_fisher: str = "auto",
) -> FisherProduct:
  r"""Exact Fisher of a policy's distribution, as a Gauss-Newton product :math:`v \mapsto J^\top M J v`.

  With :math:`z(\theta)` the parameters of ``dist_fn(params)`` (batch shape
  :math:`[B_1, \dots]`), :math:`J = \partial z / \partial \theta` and
  :math:`M_b` the Fisher of batch element :math:`b` in the coordinates
  :math:`z_b`,

  .. math::

     F v = J^\top \Big( \tfrac{w}{\sum_b w_b} \odot M\, (J v) \Big).

  :math:`M` by distribution type (``output_fisher="auto"``):

  * ``distrax.Categorical`` (and subclasses such as ``Softmax``), in the logits
    :math:`l`: :math:`M u = p \odot u - p\,(p^\top u)`, i.e.
    :math:`\mathrm{diag}(p) - p p^\top` (singular along :math:`\mathbf{1}`);
  * ``distrax.Bernoulli`` in its logits: :math:`p (1 - p)`;
  * ``distrax.Normal`` and ``distrax.MultivariateNormalDiag`` in
    :math:`(\mu, \sigma)`: :math:`\mathrm{diag}(1/\sigma^2,\ 2/\sigma^2)` per
    coordinate (so a policy parameterised by :math:`(\mu, \log\sigma)` gets
    :math:`\mathrm{diag}(1/\sigma^2, 2)` through the chain rule in :math:`J`);
  * anything else (or ``output_fisher="kl"``): the Hessian of
    :math:`\mathrm{KL}(p_{z_0} \,\|\, p_z)` with respect to the distribution's
    floating-point leaves :math:`z` at :math:`z_0`, by autodiff (distrax
    distributions are pytrees; the distribution must implement
    ``kl_divergence`` to itself).

  Batch convention: every batch entry of ``dist_fn(params)`` is a *state*, and
  the per-state Fisher matrices are *averaged* (weighted by ``weights``). This
  differs from :func:`pgjax.score_function`, where the batch entries of one
  distribution form one joint sample (log-probabilities summed). For a policy
  whose action is a vector, put the action dimensions in the *event* shape
  (``distrax.MultivariateNormalDiag`` or ``distrax.Independent``) so they are
  summed into one per-state Fisher; ``distrax.Normal(loc=[A])`` for a single
  state would be read as A states and give F / A.

  ``dist_fn`` is linearised once, when this function is called; the returned
  product reuses that linearisation (one linear forward and one transposed pass
  per call, no re-evaluation of ``dist_fn``).

  Args:
    dist_fn: ``params -> distrax.Distribution``; its batch shape indexes the
      states (closed over by ``dist_fn``) whose Fisher matrices are averaged.
    params: any pytree of real floating arrays.
    weights: optional non-negative array with the distribution's batch shape
      (e.g. discount factors or a padding mask); the Fisher is the weighted
      mean. Default: uniform (the plain mean). All-zero weights give the zero
      matrix (no division by zero).
    output_fisher: ``"auto"`` (closed forms above, else the output-space KL
      Hessian) or ``"kl"`` (always the output-space KL Hessian). Static.

  Returns:
    ``fvp(v)``: pytree with ``params``' structure and dtypes. Symmetric positive
    semi-definite in ``v``.

  Raises:
    TypeError: ``dist_fn`` is not callable or returns an object without
      ``batch_shape``; ``params`` has non-floating leaves; the distribution
      needs the KL fallback but has no ``kl_divergence``.
    ValueError: unknown ``output_fisher``; ``weights`` whose shape is not the
      distribution's batch shape, or concrete negative weights; ``v`` (at call
      time) with a different structure than ``params``.
  """
  validation.check_callable(dist_fn, "dist_fn")
  if output_fisher not in _OUTPUT_FISHERS:
    raise ValueError(f"`output_fisher` must be one of {_OUTPUT_FISHERS}, got {output_fisher!r}.")
  params = validation.check_float_tree(params, "params")
  captured = {}

  def outputs(p):
    dist = _check_distribution(dist_fn(p))
    kind, z, rebuild = _distribution_outputs(dist, output_fisher)
    captured.update(kind=kind, rebuild=rebuild, batch_shape=tuple(dist.batch_shape))
    # Low-precision outputs (bfloat16, float16) are promoted to float32: the output-space Fisher M
    # and the weights are applied in float32, and the transposed Jacobian casts back to the
    # parameters' dtypes.
    return tuple(_at_least_float32(x) for x in z)

  z0, jvp_fn = jax.linearize(outputs, params)
  kind, rebuild, batch_shape = captured["kind"], captured["rebuild"], captured["batch_shape"]
  if kind == "opaque":
    # The distribution keeps arrays outside its pytree leaves (e.g. closures in a bijector), so it
    # cannot be rebuilt from its leaves: use the parameter-space KL Hessian (equal at theta' = theta).
    return kl_hessian_vector_product(dist_fn, params, weights=weights)
  w = _normalised_weights(weights, batch_shape, linalg.tree_scalar_dtype(z0))
  output_product = _output_fisher(kind, z0, rebuild, w)
  transpose_fn = jax.linear_transpose(jvp_fn, params)

  def fvp(v: PyTree) -> PyTree:
    v = _as_tangent(v, params)
    (out,) = transpose_fn(output_product(jvp_fn(v)))
    return _cast_like(out, params)

  return fvp


def kl_hessian_vector_product(
    dist_fn: Callable[[PyTree], distrax.Distribution],
    params: PyTree,
    *,
    weights: jax.typing.ArrayLike | None = None,
    mode: str = "forward_over_reverse",
) -> FisherProduct:
  r"""Product with the Hessian of the mean KL, :math:`\nabla^2_{\theta'} \overline{\mathrm{KL}}(\pi_\theta \| \pi_{\theta'})|_{\theta'=\theta}`.

  .. math::

     \overline{\mathrm{KL}}(\theta') = \frac{\sum_b w_b\,
     \mathrm{KL}\big(\pi_\theta(\cdot\mid s_b) \,\|\, \pi_{\theta'}(\cdot\mid s_b)\big)}{\sum_b w_b},
     \qquad H v = \frac{\partial}{\partial \epsilon}
     \nabla \overline{\mathrm{KL}}(\theta + \epsilon v)\Big|_{\epsilon=0},

  with the first argument held fixed (``stop_gradient``). At
  :math:`\theta' = \theta` this equals the Fisher (and
  :func:`fisher_vector_product`), since the KL is minimal there.

  Args:
    dist_fn: ``params -> distrax.Distribution`` implementing ``kl_divergence``.
    params: any pytree of real floating arrays.
    weights: optional non-negative weights with the batch shape (see
      :func:`fisher_vector_product`).
    mode: static; ``"forward_over_reverse"`` linearises the KL gradient once
      (``jax.linearize(jax.grad(kl))``) and reuses it for every product;
      ``"reverse_over_reverse"`` recomputes
      :math:`\nabla_\theta \langle \nabla \overline{\mathrm{KL}}, v\rangle`
      for every product (the slowest; kept for comparison, see
      ``experiments/benchmarks/fvp_cost.py``).

  Returns:
    ``hvp(v)`` with ``params``' structure and dtypes.

  Raises:
    ValueError: unknown ``mode``, bad ``weights`` or mismatched ``v``.
    TypeError: ``dist_fn`` not callable, non-floating ``params``.
  """
  validation.check_callable(dist_fn, "dist_fn")
  if mode not in _KL_MODES:
    raise ValueError(f"`mode` must be one of {_KL_MODES}, got {mode!r}.")
  params = validation.check_float_tree(params, "params")
  dist0 = _check_distribution(dist_fn(params), need_kl=True)
  dist0 = jax.tree_util.tree_map(
      lambda x: jax.lax.stop_gradient(x) if isinstance(x, jax.Array) else x, dist0)
  w = _normalised_weights(weights, tuple(dist0.batch_shape), linalg.tree_scalar_dtype(params))

  def mean_kl(p):
    kl = _at_least_float32(dist0.kl_divergence(dist_fn(p)))
    return jnp.sum(w * kl)

  grad_kl = jax.grad(mean_kl)
  if mode == "forward_over_reverse":
    _, lin = jax.linearize(grad_kl, params)

    def hvp(v):
      return _cast_like(lin(_as_tangent(v, params)), params)
  else:

    def hvp(v):
      v = _as_tangent(v, params)
      return _cast_like(jax.grad(lambda p: utils.tree_vdot(grad_kl(p), v))(params), params)

  return hvp


def empirical_fisher_vector_product(
    log_prob_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    *,
    weights: jax.typing.ArrayLike | None = None,
) -> FisherProduct:
  r"""Fisher estimated from per-sample scores, :math:`v \mapsto \sum_i w_i g_i (g_i^\top v) / \sum_i w_i`.

  .. math::

     \hat F = \frac{1}{\sum_i w_i} \sum_{i=1}^N w_i\, g_i g_i^\top,\qquad
     g_i = \nabla_\theta \log p_\theta(x_i),\qquad
     \hat F v = J^\top \big(\tilde w \odot (J v)\big),

  where :math:`J` is the :math:`[N, P]` Jacobian of the vector of
  log-probabilities (never formed: ``log_prob_fn`` is linearised once, and
  :math:`J^\top` is its linear transpose). Uniform weights give the plain mean.

  Bias: with :math:`x_i \sim p_\theta` (e.g. actions sampled from the current
  policy, or trajectories with :math:`\log p_\theta(\tau_i) = \sum_t \log
  \pi_\theta(a_t \mid s_t)`), :math:`\mathbb{E}[\hat F] = F` (unbiased, rank at
  most :math:`N`). With weights :math:`w_a = \pi_\theta(a)` over *all* actions of
  a finite support it is exact. With :math:`x_i` taken from a data set it is the
  "empirical Fisher", a different matrix (Kunstner et al., 2019).

  Args:
    log_prob_fn: ``params -> [N]`` per-sample log-probabilities (the samples
      closed over). Any array shape is accepted; weights must match it.
    params: any pytree of real floating arrays.
    weights: optional non-negative array with the shape of
      ``log_prob_fn(params)``.

  Returns:
    ``fvp(v)`` with ``params``' structure and dtypes.

  Raises:
    TypeError: non-callable ``log_prob_fn``, non-floating ``params`` or
      log-probabilities.
    ValueError: bad ``weights`` shape or sign; mismatched ``v``.
  """
  validation.check_callable(log_prob_fn, "log_prob_fn")
  params = validation.check_float_tree(params, "params")
  out_shape = jax.eval_shape(log_prob_fn, params)
  if not hasattr(out_shape, "dtype") or not jnp.issubdtype(out_shape.dtype, jnp.floating):
    raise TypeError("`log_prob_fn` must return a floating array of per-sample log-probabilities, "
                    f"got {type(out_shape).__name__}.")
  # float32 at least, so that the weights and the transposed product do not round to bfloat16.
  log_probs, jvp_fn = jax.linearize(lambda p: _at_least_float32(log_prob_fn(p)), params)
  w = _normalised_weights(weights, tuple(log_probs.shape), log_probs.dtype)
  transpose_fn = jax.linear_transpose(jvp_fn, params)

  def fvp(v: PyTree) -> PyTree:
    v = _as_tangent(v, params)
    (out,) = transpose_fn(w * jvp_fn(v))
    return _cast_like(out, params)

  return fvp


# --------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------


def _at_least_float32(x):
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_distribution(dist, need_kl=False):
  """Duck-typed check of ``dist_fn``'s result: a ``batch_shape`` and, where needed, ``kl_divergence``."""
  if not hasattr(dist, "batch_shape") or (need_kl and not callable(getattr(dist, "kl_divergence", None))):
    what = "`batch_shape` and `kl_divergence`" if need_kl else "`batch_shape`"
    raise TypeError(f"`dist_fn` must return a distribution with {what} (e.g. a distrax "
                    f"distribution), got {type(dist).__name__}.")
  return dist


def _distribution_outputs(dist, output_fisher):
  """Returns (kind, z, rebuild): the distribution's coordinates z (a tuple of arrays)."""
  if output_fisher == "auto":
    if isinstance(dist, distrax.Categorical):
      return "categorical", (dist.logits,), None
    if isinstance(dist, distrax.Bernoulli):
      return "bernoulli", (dist.logits,), None
    if isinstance(dist, distrax.Normal):
      return "normal", (dist.loc, dist.scale), None
    if isinstance(dist, distrax.MultivariateNormalDiag):
      return "normal", (dist.loc, dist.scale_diag), None
  if not hasattr(dist, "kl_divergence"):
    raise TypeError(f"{type(dist).__name__} has no closed-form output Fisher and no kl_divergence.")
  leaves, treedef = jax.tree_util.tree_flatten(dist)
  is_float = [hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact) for x in leaves]
  if not any(is_float) or not _rebuildable(treedef):
    # Not a pytree of its parameters (an object that is a single leaf), or one that hides arrays
    # in static metadata: it cannot be rebuilt from its floating leaves.
    return "opaque", (), None
  fixed = []
  for leaf, f in zip(leaves, is_float):
    if not f and isinstance(leaf, jax.core.Tracer):
      raise TypeError(f"{type(dist).__name__} has a non-floating leaf that depends on the "
                      "parameters; the output-space KL Hessian cannot rebuild it.")
    fixed.append(None if f else leaf)
  z = tuple(leaf for leaf, f in zip(leaves, is_float) if f)

  def rebuild(zs):
    it = iter(zs)
    return jax.tree_util.tree_unflatten(treedef, [next(it) if f else c for f, c in zip(is_float, fixed)])

  return "kl", z, rebuild


# Public distrax classes whose pytree flattening keeps non-array attributes as static metadata.
_PYTREE_BASES = (distrax.Distribution, distrax.Bijector)
_SIMPLE_METADATA = (bool, int, float, str, type(None), type, np.dtype, tuple)


def _rebuildable(treedef) -> bool:
  """True when no node hides arrays in its static metadata (e.g. closures inside a distrax bijector).

  distrax distributions are pytrees whose ``tree_flatten`` keeps everything that is not a JAX array
  (shapes, dtypes, but also functions and other objects) as static metadata; a distribution that keeps
  parameter-dependent closures there cannot be rebuilt from its leaves.
  """
  node = treedef.node_data()
  if node is not None:
    node_type, aux = node
    if (isinstance(node_type, type) and issubclass(node_type, _PYTREE_BASES)
        and isinstance(aux, tuple) and len(aux) == 3):  # (metadata, switch, inner treedef)
      metadata, _, inner = aux
      if not all(isinstance(m, _SIMPLE_METADATA) for m in metadata):
        return False
      if isinstance(inner, jax.tree_util.PyTreeDef) and not _rebuildable(inner):
        return False
  return all(_rebuildable(c) for c in treedef.children())


def _output_fisher(kind, z0, rebuild, w):
  """The linear map u -> w * M(z0) u on output coordinates (a tuple of arrays)."""
  if kind == "categorical":
    (logits,) = z0
    p = jax.nn.softmax(logits, axis=-1)
    wk = _expand(w, logits.ndim)

    def prod(u):
      (u,) = u
      pu = p * u
      return (wk * (pu - p * jnp.sum(pu, axis=-1, keepdims=True)),)

    return prod
  if kind == "bernoulli":
    (logits,) = z0
    p = jax.nn.sigmoid(logits)
    m = _expand(w, logits.ndim) * p * (1.0 - p)
    return lambda u: (m * u[0],)
  if kind == "normal":
    loc, scale = z0
    inv_var = 1.0 / jnp.square(scale)
    wk = _expand(w, loc.ndim)
    return lambda u: (wk * inv_var * u[0], wk * 2.0 * inv_var * u[1])
  # Output-space Hessian of the weighted mean KL(p_{z0} || p_z), linearised once.
  dist0 = jax.tree_util.tree_map(jax.lax.stop_gradient, rebuild(z0))

  def mean_kl(z):
    return jnp.sum(w * dist0.kl_divergence(rebuild(z)))

  _, hvp = jax.linearize(jax.grad(mean_kl), z0)
  return hvp


def _expand(w, ndim):
  return jnp.reshape(w, w.shape + (1,) * (ndim - w.ndim))


def _normalised_weights(weights, shape, dtype):
  """Weights of the given shape normalised to sum to 1 (zeros if they sum to 0)."""
  n = math.prod(shape)
  if weights is None:
    return jnp.full(shape, 1.0 / max(n, 1), dtype)
  validation.check_nonnegative(weights, "weights")
  weights = jnp.asarray(weights, dtype)
  if weights.shape != tuple(shape):
    raise ValueError(f"`weights` must have the distribution's batch shape {tuple(shape)}, got "
                     f"{weights.shape}.")
  total = jnp.sum(weights)
  return weights / jnp.where(total > 0, total, 1.0)


def _as_tangent(v, params):
  validation.check_same_structure(params, v, "params", "v")
  return jax.tree_util.tree_map(lambda x, p: jnp.asarray(x, p.dtype), v, params)


def _cast_like(tree, params):
  return jax.tree_util.tree_map(lambda x, p: jnp.asarray(x, p.dtype), tree, params)
