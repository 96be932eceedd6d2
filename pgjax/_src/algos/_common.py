"""Former home of the training loops' shared pieces (kept importable): see ``policies`` and ``training``."""

from pgjax._src.algos.policies import Policy  # noqa: F401
from pgjax._src.algos.policies import linear_gaussian_policy  # noqa: F401
from pgjax._src.algos.policies import mlp_policy  # noqa: F401
from pgjax._src.algos.policies import policy_log_prob_entropy  # noqa: F401
from pgjax._src.algos.training import EpisodeStats  # noqa: F401
from pgjax._src.algos.training import episode_statistics  # noqa: F401
from pgjax._src.algos.training import make_env  # noqa: F401
from pgjax._src.algos.training import make_optimizer  # noqa: F401
