"""Natural gradients: Fisher-vector products, conjugate gradient, trust region, optax transform.

One TRPO-style step (everything pure; ``jax.jit(jax.vmap(step))`` runs it over seeds)::

    dist_fn = lambda p: distrax.Categorical(logits=policy.apply(p, states))
    grads = jax.grad(surrogate)(params)                      # surrogate objective, to maximise
    fvp = pgjax.natural.fisher_vector_product(dist_fn, params)  # exact Fisher, Gauss-Newton form
    direction, cg_info = pgjax.natural.natural_gradient(grads, fvp, damping=1e-2, iters=10)
    step, tr_info = pgjax.natural.trust_region_step(direction, grads, fvp, max_kl=0.01)
    params, ls_info = pgjax.natural.backtracking_line_search(
        surrogate, kl_fn, params, step, max_kl=0.01,
        expected_improvement=tr_info.expected_improvement)

or, inside any optax chain, ``tx = pgjax.natural.natural_sgd(lr)`` and
``tx.update(loss_grads, state, params, fvp=fvp)``.

See :mod:`pgjax._src.fisher`, :mod:`pgjax._src.linalg`, :mod:`pgjax._src.natural_gradient` and
:mod:`pgjax._src.transforms`.
"""

from pgjax._src.fisher import empirical_fisher_vector_product
from pgjax._src.fisher import fisher_vector_product
from pgjax._src.fisher import kl_hessian_vector_product
from pgjax._src.linalg import CGInfo
from pgjax._src.linalg import conjugate_gradient
from pgjax._src.natural_gradient import backtracking_line_search
from pgjax._src.natural_gradient import LineSearchInfo
from pgjax._src.natural_gradient import natural_gradient
from pgjax._src.natural_gradient import trust_region_step
from pgjax._src.natural_gradient import TrustRegionInfo
from pgjax._src.transforms import natural_sgd
from pgjax._src.transforms import NaturalGradientState
from pgjax._src.transforms import scale_by_natural_gradient

__all__ = (
    "CGInfo",
    "LineSearchInfo",
    "NaturalGradientState",
    "TrustRegionInfo",
    "backtracking_line_search",
    "conjugate_gradient",
    "empirical_fisher_vector_product",
    "fisher_vector_product",
    "kl_hessian_vector_product",
    "natural_gradient",
    "natural_sgd",
    "scale_by_natural_gradient",
    "trust_region_step",
)
