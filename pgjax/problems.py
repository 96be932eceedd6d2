"""Problems with closed-form expectations and gradients (see :mod:`pgjax._src.problems`, one module per kind of problem)."""

from pgjax._src.problems import bernoulli_quadratic
from pgjax._src.problems import binary_vae
from pgjax._src.problems import binary_vae_elbo
from pgjax._src.problems import binary_vae_encoder_gradient
from pgjax._src.problems import binary_vae_log_weight
from pgjax._src.problems import binary_vae_posterior
from pgjax._src.problems import BinaryVAE
from pgjax._src.problems import categorical_bandit
from pgjax._src.problems import categorical_quadratic
from pgjax._src.problems import classification_robot
from pgjax._src.problems import ClassificationData
from pgjax._src.problems import cross_entropy_gradient
from pgjax._src.problems import expected_reward_gradient
from pgjax._src.problems import gaussian_quadratic
from pgjax._src.problems import gaussian_step
from pgjax._src.problems import label_scored_gradient
from pgjax._src.problems import linear_policy_logits
from pgjax._src.problems import make_classification_data
from pgjax._src.problems import policy_gradient_by_enumeration
from pgjax._src.problems import Problem
from pgjax._src.problems import score_weighted_gradient
from pgjax._src.problems import argmax_accuracy
from pgjax._src.problems import argmax_classifier
from pgjax._src.problems import smoothed_argmax_accuracy
from pgjax._src.problems import softmax_expected_reward
from pgjax._src.problems import softmax_expected_reward_gradient

__all__ = (
    "BinaryVAE",
    "ClassificationData",
    "Problem",
    "argmax_accuracy",
    "argmax_classifier",
    "bernoulli_quadratic",
    "binary_vae",
    "binary_vae_elbo",
    "binary_vae_encoder_gradient",
    "binary_vae_log_weight",
    "binary_vae_posterior",
    "categorical_bandit",
    "categorical_quadratic",
    "classification_robot",
    "cross_entropy_gradient",
    "expected_reward_gradient",
    "gaussian_quadratic",
    "gaussian_step",
    "label_scored_gradient",
    "linear_policy_logits",
    "make_classification_data",
    "policy_gradient_by_enumeration",
    "score_weighted_gradient",
    "smoothed_argmax_accuracy",
    "softmax_expected_reward",
    "softmax_expected_reward_gradient",
)
