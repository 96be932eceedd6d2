r"""pgjax: gradients of expectations of functions that cannot be differentiated.

Score-function (REINFORCE) estimators with variance reduction, measure-valued gradients, control variates,
estimators for discrete variables (ARM/DisARM, Gumbel-softmax, REBAR/RELAX, unordered sets), zeroth-order
(Gaussian smoothing / ES) gradients, natural evolution strategies, the cross-entropy method, natural gradients
and reinforcement-learning trainers, as pure JAX functions. Every estimator is ``(key, params) -> (grads, aux)``.
"""

__version__ = "0.1.0"

# --- score-function family, baselines, problems, sweeps, testing
from pgjax import baselines
from pgjax import losses
from pgjax import problems
from pgjax import sweep
from pgjax import testing
from pgjax._src.score_function import exact_gradient
from pgjax._src.score_function import pathwise
from pgjax._src.score_function import score_function
from pgjax._src.losses import score_function_surrogate

# --- natural gradient
from pgjax import natural

# --- zeroth order, search distributions (NES, CEM), fitness shaping
from pgjax import cem
from pgjax import nes
from pgjax import shaping
from pgjax._src.noise import noise_table
from pgjax._src.zeroth_order import zeroth_order

# --- reinforcement learning
from pgjax import algos
from pgjax import envs
from pgjax import returns
from pgjax._src.rollout import rollout

# --- measure-valued gradients, control variates, estimators for discrete variables
from pgjax._src.arm import arm
from pgjax._src.arm import disarm
from pgjax._src.control_variates import control_variate
from pgjax._src.measure_valued import measure_valued
from pgjax._src.relaxations import gumbel_softmax
from pgjax._src.relaxations import rebar
from pgjax._src.relaxations import relax
from pgjax._src.without_replacement import unordered_set

__all__ = (
    "__version__",
    "algos",
    "arm",
    "baselines",
    "cem",
    "control_variate",
    "disarm",
    "envs",
    "exact_gradient",
    "gumbel_softmax",
    "losses",
    "measure_valued",
    "natural",
    "nes",
    "noise_table",
    "pathwise",
    "problems",
    "rebar",
    "relax",
    "returns",
    "rollout",
    "score_function",
    "score_function_surrogate",
    "shaping",
    "sweep",
    "testing",
    "unordered_set",
    "zeroth_order",
)
