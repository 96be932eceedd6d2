"""Small shared helpers: pytree arithmetic and powers of two (validators live in :mod:`pgjax._src.validation`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def floor_power_of_two(n: int) -> int:
  """The largest power of two ``<= max(n, 1)`` (exact for any int: no float logarithm)."""
  return 1 << (max(int(n), 1).bit_length() - 1)


def ceil_power_of_two(n: int) -> int:
  """The smallest power of two ``>= n`` (1 for ``n <= 1``)."""
  return 1 << max(int(n) - 1, 0).bit_length()


def tree_size(tree: Any) -> int:
  """Total number of scalar entries in a pytree."""
  return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


def tree_vdot(a: Any, b: Any) -> jax.Array:
  """:math:`\\sum_\\text{leaves} \\langle a, b \\rangle` (real), accumulated in float32 or wider."""
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  if not la:
    return jnp.zeros(())
  dtype = jnp.result_type(*[jnp.asarray(x).dtype for x in la + lb], jnp.float32)
  parts = [jnp.vdot(jnp.asarray(x, dtype), jnp.asarray(y, dtype)) for x, y in zip(la, lb)]
  return sum(parts[1:], parts[0])
