"""Natural gradients: Fisher-vector products, conjugate gradient, trust region, optax transform.

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
