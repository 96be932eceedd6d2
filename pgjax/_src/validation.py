"""Argument validation shared by every pgjax module (the only place validators live).

Conventions:
  * every error names the offending argument with backticks (```sigma```) and says what is accepted;
  * ``TypeError`` for a value of the wrong kind, ``ValueError`` for a value of the right kind out of range;
  * checks run at construction or trace time on *concrete* values only: a traced value (a hyperparameter
    swept with ``vmap``) passes unchecked, because it cannot be inspected without a host round trip.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "as_key",
    "check_callable",
    "check_distribution",
    "check_float_tree",
    "check_nonnegative",
    "check_positive",
    "check_positive_int",
    "check_range",
    "check_same_structure",
    "check_scalar",
    "check_unit_interval",
    "is_concrete",
    "is_traced",
]


def is_traced(x: Any) -> bool:
  """True when ``x`` is a JAX tracer (inside ``jit``, ``vmap``, ``grad``...)."""
  return isinstance(x, jax.core.Tracer)


def is_concrete(x: Any) -> bool:
  """True when ``x`` is a Python/NumPy number or a concrete (non-traced) array."""
  if isinstance(x, (numbers.Number, np.ndarray, np.generic)):
    return True
  return isinstance(x, jax.Array) and not is_traced(x)


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
  """Returns ``value`` as an int, raising a clear error unless it is an integer >= minimum."""
  if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
    raise TypeError(f"`{name}` must be an integer, got {value!r} of type {type(value).__name__}.")
  if value < minimum:
    raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
  return int(value)


def _concrete_real_array(value: Any, name: str) -> np.ndarray:
  """``value`` as a NumPy array of real numbers, or ``TypeError`` naming ``name``."""
  try:
    arr = np.asarray(value)
  except Exception as e:  # pylint: disable=broad-except
    raise TypeError(f"`{name}` must be a real number or array, got {type(value).__name__}.") from e
  if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
    raise TypeError(f"`{name}` must be a real number or array, got {value!r} of type "
                    f"{type(value).__name__}.")
  return arr


def check_nonnegative(value: Any, name: str, *, strict: bool = False) -> None:
  """``ValueError`` if a concrete ``value`` is negative (or <= 0 when ``strict``) or not finite.

  ``None`` and traced values pass unchecked; anything that is not a real number or array (a dict, a
  string) raises ``TypeError`` naming ``name``.
  """
  if value is None or is_traced(value):
    return
  arr = _concrete_real_array(value, name)
  bad = np.any(arr <= 0) if strict else np.any(arr < 0)
  if bad or not np.all(np.isfinite(arr)):
    rel = "> 0" if strict else ">= 0"
    raise ValueError(f"`{name}` must be finite and {rel}, got {value!r}.")


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> None:
  """``ValueError`` if a concrete ``value`` is not (strictly) positive and finite; traced values pass."""
  check_nonnegative(value, name, strict=not allow_zero)


def check_scalar(value: Any, name: str) -> None:
  """``ValueError`` unless ``value`` is 0-d; ``TypeError`` unless it is a real number (traced ones pass)."""
  if is_traced(value):
    if value.ndim != 0:
      raise ValueError(f"`{name}` must be a scalar, got shape {value.shape}.")
    return
  arr = _concrete_real_array(value, name)
  if arr.ndim != 0:
    raise ValueError(f"`{name}` must be a scalar, got shape {arr.shape}.")


def check_positive_scalar(value: Any, name: str) -> None:
  """``check_scalar`` and ``check_positive``: a 0-d real value, finite and > 0 when concrete."""
  check_scalar(value, name)
  check_positive(value, name)


def check_range(value: Any, name: str, lo: float, hi: float, *, lo_open: bool = False,
                hi_open: bool = False) -> None:
  """``ValueError`` unless a concrete scalar ``value`` lies in the interval from ``lo`` to ``hi``."""
  check_scalar(value, name)
  if is_traced(value):
    return
  v = float(np.asarray(value))
  ok = np.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
  if not ok:
    lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
    raise ValueError(f"`{name}` must be in {lb}{lo}, {hi}{rb}, got {value!r}.")


def check_unit_interval(value: Any, name: str) -> None:
  """``ValueError`` if a concrete value (scalar or array) lies outside ``[0, 1]`` or is NaN."""
  if value is None or is_traced(value):
    return
  arr = _concrete_real_array(value, name).astype(np.float64)
  if arr.size and (np.any(~np.isfinite(arr)) or np.any(arr < 0.0) or np.any(arr > 1.0)):
    raise ValueError(f"`{name}` must lie in [0, 1], got {value!r}.")


def check_float_tree(tree: Any, name: str) -> Any:
  """Converts leaves to arrays; ``TypeError`` unless every leaf is a real floating array."""
  leaves = jax.tree_util.tree_leaves(tree)
  if not leaves:
    raise ValueError(f"`{name}` must be a non-empty pytree of arrays.")
  for leaf in leaves:
    dtype = leaf.dtype if hasattr(leaf, "dtype") else jnp.asarray(leaf).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(f"`{name}` leaves must be real floating arrays, got dtype {dtype}.")
  return jax.tree_util.tree_map(jnp.asarray, tree)


def check_callable(fn: Any, name: str) -> None:
  """``TypeError`` naming ``name`` unless ``fn`` is callable."""
  if not callable(fn):
    raise TypeError(f"`{name}` must be callable, got {type(fn).__name__}.")


def check_same_structure(a: Any, b: Any, name_a: str, name_b: str) -> None:
  """``ValueError`` if two pytrees differ in structure or leaf shapes."""
  ta, tb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
  if ta != tb:
    raise ValueError(f"`{name_a}` and `{name_b}` must have the same tree structure, got {ta} and {tb}.")
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    if np.shape(x) != np.shape(y):
      raise ValueError(f"`{name_a}` and `{name_b}` leaves must have the same shapes, got "
                       f"{np.shape(x)} and {np.shape(y)}.")


def check_distribution(dist: Any, name: str = "dist_fn") -> Any:
  """``TypeError`` naming ``name`` unless ``dist`` has distrax's ``sample`` and ``log_prob`` methods.

  Duck-typed (no import of any distribution library's private classes): anything with callable
  ``sample(seed=, sample_shape=)`` and ``log_prob(x)`` is accepted.
  """
  missing = [m for m in ("sample", "log_prob") if not callable(getattr(dist, m, None))]
  if missing:
    raise TypeError(f"`{name}` must return a distribution with `sample(seed=, sample_shape=)` and "
                    f"`log_prob(x)` methods (e.g. a distrax distribution); got {type(dist).__name__} "
                    f"without {' and '.join(f'`{m}`' for m in missing)}.")
  return dist


@functools.lru_cache(maxsize=None)
def _raw_key_shape(impl_name: str) -> tuple[int, ...]:
  del impl_name  # the cache key: the default implementation may be changed by the user's config
  return tuple(jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape)


def as_key(key: Any, name: str = "key") -> jax.Array:
  """Validates one PRNG key and returns it as a JAX array.

  Accepted: a typed key of any implementation (``jax.random.key(seed)``, ``jax.random.key(seed,
  impl="rbg")``), or a legacy raw key (``jax.random.PRNGKey(seed)``, also as a NumPy ``uint32`` array) of
  the shape of the default implementation's key data (``uint32[2]`` for threefry). A typed key and the
  legacy key of the same seed give the same random stream.

  Raises:
    TypeError: naming ``name`` for anything else (an integer seed, a float array, a batch of keys).
  """
  if isinstance(key, (jax.Array, np.ndarray)) or is_traced(key):
    dtype = key.dtype
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
      if key.shape == ():
        return key
      raise TypeError(f"`{name}` must be a single PRNG key, got a batch of keys of shape {key.shape} "
                      "(use vmap over keys instead).")
    want = _raw_key_shape(str(jax.config.jax_default_prng_impl))
    if dtype == np.uint32 and tuple(key.shape) == want:
      return jnp.asarray(key)
    raise TypeError(f"`{name}` must be a PRNG key: jax.random.key(seed) (typed) or a legacy "
                    f"jax.random.PRNGKey(seed) of shape uint32{list(want)}; got an array of dtype "
                    f"{dtype} and shape {tuple(key.shape)}.")
  hint = f" Use jax.random.key({key})." if isinstance(key, numbers.Integral) else ""
  raise TypeError(f"`{name}` must be a PRNG key from jax.random.key(seed), got {key!r} of type "
                  f"{type(key).__name__}.{hint}")
