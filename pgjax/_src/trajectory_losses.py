"""Former home of the trajectory losses; they now live in :mod:`pgjax._src.losses` (kept importable)."""

from pgjax._src.losses import _MAX_LOG_WEIGHT  # noqa: F401
from pgjax._src.losses import categorical_entropy  # noqa: F401
from pgjax._src.losses import cumulative_importance_weights  # noqa: F401
from pgjax._src.losses import entropy_loss  # noqa: F401
from pgjax._src.losses import gaussian_entropy  # noqa: F401
from pgjax._src.losses import importance_ratios  # noqa: F401
from pgjax._src.losses import importance_weighted_loss  # noqa: F401
from pgjax._src.losses import policy_gradient_loss  # noqa: F401
from pgjax._src.losses import ppo_clip_loss  # noqa: F401
from pgjax._src.losses import reinforce_loss  # noqa: F401
from pgjax._src.losses import reinforce_weights  # noqa: F401
from pgjax._src.losses import score_function_surrogate  # noqa: F401
from pgjax._src.losses import subtract_baseline  # noqa: F401
from pgjax._src.losses import trajectory_importance_weights  # noqa: F401
