r"""Problems with a known true gradient, for tests, sweeps and figures, grouped by kind.

Each constructor returns a :class:`Problem`: initial ``params``, ``dist_fn(params)`` (a distrax
distribution), the per-sample objective ``f(x)``, the closed-form ``expectation(params)`` =
:math:`J(\theta)=\mathbb{E}_{p_\theta}[f]` and ``true_grad(params)`` = :math:`\nabla_\theta J`, both written
out by hand or by exact enumeration of a finite support (not by autodiff of an estimator), so tests compare
estimators against independent formulas.

* :mod:`~pgjax._src.problems.gaussian`: Gaussian quadratic and step rewards;
* :mod:`~pgjax._src.problems.discrete`: Bernoulli and categorical toys with exact enumeration;
* :mod:`~pgjax._src.problems.classification`: the classification robot and the argmax classifier;
* :mod:`~pgjax._src.problems.latent`: a binary variational autoencoder (sigmoid belief network) whose ELBO
  and its gradient are exact by enumerating the :math:`2^K` latent states.
"""

from pgjax._src.problems.base import Problem
from pgjax._src.problems.classification import argmax_accuracy
from pgjax._src.problems.classification import argmax_classifier
from pgjax._src.problems.classification import classification_robot
from pgjax._src.problems.classification import ClassificationData
from pgjax._src.problems.classification import cross_entropy_gradient
from pgjax._src.problems.classification import expected_reward_gradient
from pgjax._src.problems.classification import label_scored_gradient
from pgjax._src.problems.classification import linear_policy_logits
from pgjax._src.problems.classification import make_classification_data
from pgjax._src.problems.classification import policy_gradient_by_enumeration
from pgjax._src.problems.classification import score_weighted_gradient
from pgjax._src.problems.classification import smoothed_argmax_accuracy
from pgjax._src.problems.classification import softmax_expected_reward
from pgjax._src.problems.classification import softmax_expected_reward_gradient
from pgjax._src.problems.discrete import bernoulli_quadratic
from pgjax._src.problems.discrete import categorical_bandit
from pgjax._src.problems.discrete import categorical_quadratic
from pgjax._src.problems.gaussian import gaussian_quadratic
from pgjax._src.problems.gaussian import gaussian_step
from pgjax._src.problems.latent import binary_vae
from pgjax._src.problems.latent import binary_vae_elbo
from pgjax._src.problems.latent import binary_vae_encoder_gradient
from pgjax._src.problems.latent import binary_vae_log_weight
from pgjax._src.problems.latent import binary_vae_posterior
from pgjax._src.problems.latent import BinaryVAE
