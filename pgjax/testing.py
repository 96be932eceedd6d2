"""Statistical checks for gradient estimators (see :mod:`pgjax._src.testing`)."""

from pgjax._src.testing import assert_tree_all_finite
from pgjax._src.testing import assert_unbiased
from pgjax._src.testing import assert_variance_less
from pgjax._src.testing import check_unbiased

__all__ = (
    "assert_tree_all_finite",
    "assert_unbiased",
    "assert_variance_less",
    "check_unbiased",
)
