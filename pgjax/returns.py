"""Returns, advantages and multistep off-policy targets over time-major trajectories.

Discounted returns, reward-to-go, episode returns, GAE, lambda-returns, n-step returns,
importance-corrected TD errors and V-trace. All functions take ``[T, ...]`` arrays and a done mask
(``dones[t]`` True when the episode ends at step ``t``), never sum across an episode boundary, and
accept per-step ``discount`` and ``lambda_`` arrays. See :mod:`pgjax._src.returns` for the
conventions (values, bootstrap value, truncation).
"""

from pgjax._src.returns import discounted_returns
from pgjax._src.returns import episode_discounts
from pgjax._src.returns import episode_returns
from pgjax._src.returns import episode_time
from pgjax._src.returns import first_episode_mask
from pgjax._src.returns import gae
from pgjax._src.returns import importance_corrected_td_errors
from pgjax._src.returns import lambda_returns
from pgjax._src.returns import n_step_returns
from pgjax._src.returns import reward_to_go
from pgjax._src.returns import vtrace
from pgjax._src.returns import VTraceOutput

__all__ = (
    "VTraceOutput",
    "discounted_returns",
    "episode_discounts",
    "episode_returns",
    "episode_time",
    "first_episode_mask",
    "gae",
    "importance_corrected_td_errors",
    "lambda_returns",
    "n_step_returns",
    "reward_to_go",
    "vtrace",
)
