"""JAX environments in gymnax's protocol, with exact objectives, and fixed-horizon rollouts.

gymnax environments (``gymnax.make("CartPole-v1")``) work with :func:`rollout` and :mod:`pgjax.algos`
unchanged. See :mod:`pgjax._src.envs` and :mod:`pgjax._src.rollout`.
"""

from pgjax._src.envs import Box
from pgjax._src.envs import ClassificationBandit
from pgjax._src.envs import ClassificationBanditParams
from pgjax._src.envs import ClassificationBanditState
from pgjax._src.envs import Discrete
from pgjax._src.envs import LinearSystem
from pgjax._src.envs import LinearSystemParams
from pgjax._src.envs import LinearSystemState
from pgjax._src.envs import TabularMDP
from pgjax._src.envs import TabularMDPParams
from pgjax._src.envs import TabularMDPState
from pgjax._src.envs import linear_system_expected_return
from pgjax._src.envs import linear_system_optimal_gain
from pgjax._src.envs import random_tabular_mdp
from pgjax._src.envs import tabular_expected_return
from pgjax._src.rollout import RolloutState
from pgjax._src.rollout import Trajectory
from pgjax._src.rollout import rollout
from pgjax._src.rollout import sample_action

__all__ = (
    "Box",
    "ClassificationBandit",
    "ClassificationBanditParams",
    "ClassificationBanditState",
    "Discrete",
    "LinearSystem",
    "LinearSystemParams",
    "LinearSystemState",
    "RolloutState",
    "TabularMDP",
    "TabularMDPParams",
    "TabularMDPState",
    "Trajectory",
    "linear_system_expected_return",
    "linear_system_optimal_gain",
    "random_tabular_mdp",
    "rollout",
    "sample_action",
    "tabular_expected_return",
)
