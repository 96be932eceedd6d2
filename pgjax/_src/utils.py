"""Small shared helpers: pytree arithmetic (validators live in :mod:`pgjax._src.validation`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Re-exported for modules that still import validators from here; new code imports `validation`.
from pgjax._src.validation import as_key  # noqa: F401
from pgjax._src.validation import check_callable  # noqa: F401
from pgjax._src.validation import check_distribution  # noqa: F401
from pgjax._src.validation import check_float_tree  # noqa: F401
from pgjax._src.validation import check_nonnegative  # noqa: F401
from pgjax._src.validation import check_positive  # noqa: F401
from pgjax._src.validation import check_positive_int  # noqa: F401
from pgjax._src.validation import check_range  # noqa: F401
from pgjax._src.validation import check_same_structure  # noqa: F401
from pgjax._src.validation import check_scalar  # noqa: F401
from pgjax._src.validation import check_unit_interval  # noqa: F401
from pgjax._src.validation import is_concrete  # noqa: F401
from pgjax._src.validation import is_traced  # noqa: F401

tree_check_same_structure = check_same_structure


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
