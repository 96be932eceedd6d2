"""Discounted returns, reward-to-go, episode returns and GAE over time-major trajectories.

All functions take ``[T, ...]`` arrays and a done mask (``dones[t]`` True when the episode ends at
step ``t``) and never sum across an episode boundary. See :mod:`pgjax._src.returns`.
"""

from pgjax._src.returns import discounted_returns
from pgjax._src.returns import episode_discounts
from pgjax._src.returns import episode_returns
from pgjax._src.returns import episode_time
from pgjax._src.returns import first_episode_mask
from pgjax._src.returns import gae
from pgjax._src.returns import reward_to_go

__all__ = (
    "discounted_returns",
    "episode_discounts",
    "episode_returns",
    "episode_time",
    "first_episode_mask",
    "gae",
    "reward_to_go",
)
