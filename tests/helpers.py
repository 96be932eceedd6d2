"""Test helpers shared across test files."""

import jax
import numpy as np
import pytest

import pgjax


def device_array(x, dtype=np.float32):
  """A JAX array built from NumPy: ``jax.device_put`` is a transfer, where ``jnp.asarray`` would compile a small
  program per new shape."""
  return jax.device_put(np.asarray(x, dtype))


def numpy_tree(tree):
  """A pytree's leaves as NumPy arrays (tests post-process in NumPy: no eager JAX operations to compile)."""
  return jax.tree_util.tree_map(np.asarray, tree)


def jit_numpy(fn, *args):
  """``fn(*args)`` as one compiled program, its results as NumPy arrays."""
  return numpy_tree(jax.jit(fn)(*args))


def flat(tree, dtype=None):
  """A pytree's leaves raveled and concatenated in NumPy, in ``jax.flatten_util.ravel_pytree``'s order."""
  return np.concatenate([np.asarray(x, dtype).ravel() for x in jax.tree_util.tree_leaves(tree)])


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
