r"""The :class:`Problem` container shared by every problem constructor."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

__all__ = ("Problem",)


class Problem(NamedTuple):
  """A gradient-estimation problem with its closed-form answer.

  Attributes:
    name: short identifier.
    params: the parameters at which to estimate (a pytree).
    dist_fn: ``params -> distribution`` (distrax interface).
    f: objective of one sample (not differentiable in general).
    expectation: ``params -> J(params)`` in closed form.
    true_grad: ``params -> grad J(params)`` in closed form (same pytree as ``params``).
    differentiable: whether ``f`` is differentiable (so :func:`pgjax.pathwise` applies).
  """
  name: str
  params: Any
  dist_fn: Callable[[Any], Any]
  f: Callable[[Any], jax.Array]
  expectation: Callable[[Any], jax.Array]
  true_grad: Callable[[Any], Any]
  differentiable: bool
