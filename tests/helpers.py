"""Test helpers shared across test files."""

import jax
import pytest

import pgjax


def scale_tree(tree, c):
  return jax.tree_util.tree_map(lambda x: c * x, tree)


def assert_unbiased_with_power(estimator, params, key, *, target, wrong_target, num_replicates=2000, **kw):
  """The estimator passes the 5-SE check for ``target`` and the *same* check fails for ``wrong_target``.

  The second call reuses the compiled sweep (same estimator object), so the power control is nearly free.
  """
  stats = pgjax.testing.assert_unbiased(estimator, params, key, target=target,
                                        num_replicates=num_replicates, **kw)
  with pytest.raises(AssertionError, match="biased"):
    pgjax.testing.assert_unbiased(estimator, params, key, target=wrong_target,
                                  num_replicates=num_replicates, **kw)
  return stats
