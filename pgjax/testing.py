"""Checks for gradient estimators: statistical (unbiasedness, variance) and the estimator contract.

See :mod:`pgjax._src.testing`. :func:`check_estimator` runs the contract checks (structure and dtypes, keys,
``jit``/``vmap``/``grad``, determinism, NaN policy, argument errors) on any ``(key, params) -> (grads, aux)``.
:func:`quadratic_trace_covariance` is the closed-form total variance of :func:`pgjax.zeroth_order` on a quadratic,
the reference its tests and experiments compare against.
"""

from pgjax._src.testing import assert_raises_naming
from pgjax._src.testing import assert_same_structure_and_dtypes
from pgjax._src.testing import assert_tree_all_finite
from pgjax._src.testing import assert_trees_close
from pgjax._src.testing import assert_trees_equal
from pgjax._src.testing import assert_unbiased
from pgjax._src.testing import assert_variance_less
from pgjax._src.testing import cast_floating
from pgjax._src.testing import check_estimator
from pgjax._src.testing import check_estimators
from pgjax._src.testing import check_unbiased
from pgjax._src.testing import ConformanceReport
from pgjax._src.testing import edge_case_params
from pgjax._src.testing import PropertyResult
from pgjax._src.testing import TraceCounter
from pgjax._src.zeroth_order import quadratic_trace_covariance

__all__ = (
    "ConformanceReport",
    "PropertyResult",
    "TraceCounter",
    "assert_raises_naming",
    "assert_same_structure_and_dtypes",
    "assert_tree_all_finite",
    "assert_trees_close",
    "assert_trees_equal",
    "assert_unbiased",
    "assert_variance_less",
    "cast_floating",
    "check_estimator",
    "check_estimators",
    "check_unbiased",
    "edge_case_params",
    "quadratic_trace_covariance",
)
