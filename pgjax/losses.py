"""Surrogate losses (to minimise) for policy-gradient training."""

from pgjax._src.losses import score_function_surrogate

__all__ = (
    "score_function_surrogate",
)
