"""Small shared helpers: argument validation and pytree arithmetic."""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
  """Returns ``value`` as an int, raising a clear error unless it is an integer >= minimum."""
  if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
    raise TypeError(f"`{name}` must be an integer, got {value!r} of type {type(value).__name__}.")
  if value < minimum:
    raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
  return int(value)


def is_concrete(x: Any) -> bool:
  """True when ``x`` is a Python/NumPy number or a concrete (non-traced) array."""
  if isinstance(x, (numbers.Number, np.ndarray, np.generic)):
    return True
  return isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> None:
  """Raises ValueError if a *concrete* ``value`` is not (strictly) positive; traced values pass."""
  check_nonnegative(value, name, strict=not allow_zero)


def check_nonnegative(value: Any, name: str, *, strict: bool = False) -> None:
  """ValueError if a *concrete* ``value`` is negative (or <= 0 when ``strict``) or not finite.

  ``None`` and traced values pass unchecked: numeric hyperparameters are meant to be swept with ``vmap``.
  """
  if value is None or not is_concrete(value):
    return
  arr = np.asarray(value)
  if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
    raise TypeError(f"`{name}` must be a real number, got {value!r}.")
  bad = np.any(arr <= 0) if strict else np.any(arr < 0)
  if bad or not np.all(np.isfinite(arr)):
    rel = "> 0" if strict else ">= 0"
    raise ValueError(f"`{name}` must be finite and {rel}, got {value!r}.")


def check_float_tree(tree: Any, name: str) -> Any:
  """Converts leaves to arrays; TypeError unless every leaf is a real floating array."""
  leaves = jax.tree_util.tree_leaves(tree)
  if not leaves:
    raise ValueError(f"`{name}` must be a non-empty pytree of arrays.")
  for leaf in leaves:
    dtype = leaf.dtype if hasattr(leaf, "dtype") else jnp.asarray(leaf).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(f"`{name}` leaves must be real floating arrays, got dtype {dtype}.")
  return jax.tree_util.tree_map(jnp.asarray, tree)


def check_callable(fn: Any, name: str) -> None:
  if not callable(fn):
    raise TypeError(f"`{name}` must be callable, got {type(fn).__name__}.")


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


def tree_check_same_structure(a: Any, b: Any, name_a: str, name_b: str) -> None:
  """Raises ValueError if two pytrees differ in structure or leaf shapes."""
  ta, tb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
  if ta != tb:
    raise ValueError(f"`{name_a}` and `{name_b}` must have the same tree structure, got {ta} and {tb}.")
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    if np.shape(x) != np.shape(y):
      raise ValueError(f"`{name_a}` and `{name_b}` leaves must have the same shapes, got "
                       f"{np.shape(x)} and {np.shape(y)}.")


def as_key(key: Any, name: str = "key") -> jax.Array:
  """Accepts a typed key (``jax.random.key``) or a raw uint32[2] key; rejects anything else."""
  if isinstance(key, jax.Array) or isinstance(key, jax.core.Tracer):
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
      return key
    if key.dtype == jnp.uint32 and key.shape[-1:] == (2,):
      return key
  raise TypeError(f"`{name}` must be a PRNG key from jax.random.key or jax.random.PRNGKey, got {key!r}.")
