"""Surrogate losses (to minimise) for policy-gradient training."""

from pgjax._src.losses import categorical_entropy
from pgjax._src.losses import cumulative_importance_weights
from pgjax._src.losses import entropy_loss
from pgjax._src.losses import gaussian_entropy
from pgjax._src.losses import importance_ratios
from pgjax._src.losses import importance_weighted_loss
from pgjax._src.losses import policy_gradient_loss
from pgjax._src.losses import ppo_clip_loss
from pgjax._src.losses import reinforce_loss
from pgjax._src.losses import reinforce_weights
from pgjax._src.losses import score_function_surrogate
from pgjax._src.losses import subtract_baseline
from pgjax._src.losses import trajectory_importance_weights

__all__ = (
    "categorical_entropy",
    "cumulative_importance_weights",
    "entropy_loss",
    "gaussian_entropy",
    "importance_ratios",
    "importance_weighted_loss",
    "policy_gradient_loss",
    "ppo_clip_loss",
    "reinforce_loss",
    "reinforce_weights",
    "score_function_surrogate",
    "subtract_baseline",
    "trajectory_importance_weights",
)
