"""Type aliases shared across pgjax (one place, so modules do not redefine them)."""

from __future__ import annotations

from typing import Any, Callable

import jax
from jax.typing import ArrayLike

__all__ = ["ArrayLike", "Estimator", "Key", "Params", "PyTree", "Scalar"]

# Any nested structure of arrays that jax.tree_util understands (dicts, lists, tuples, NamedTuples, None).
PyTree = Any

# Parameters of a distribution / policy: any pytree of floating arrays.
Params = PyTree

# A PRNG key: typed (``jax.random.key(seed)``, any implementation) or legacy raw ``uint32[2]``
# (``jax.random.PRNGKey(seed)``). See :func:`pgjax._src.validation.as_key`.
Key = jax.Array

# A scalar hyperparameter that may be a Python number or a traced 0-d array (so it can be vmapped).
Scalar = ArrayLike

# A gradient estimator: ``(key, params, **runtime_kwargs) -> (grads, aux)`` with ``grads`` of params'
# structure and dtypes and ``aux`` a NamedTuple with fixed fields (including ``num_evaluations``).
Estimator = Callable[..., tuple[PyTree, Any]]
