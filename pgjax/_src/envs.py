r"""Small JAX environments in gymnax's protocol, with closed-form objectives for testing.

The protocol (gymnax >= 1.0, ``gymnax/environments/environment.py``):

* ``env.reset(key, params) -> (obs, state)``;
* ``env.step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)``,
  six values, with automatic reset: when ``terminated | truncated`` the returned ``obs``/``state``
  already belong to a fresh episode and ``info["final_observation"]`` holds the last observation of
  the finished one;
* ``env.default_params`` is a ``flax.struct.dataclass`` whose fields are traced, so an environment
  can be vmapped over its parameters; ``env.action_space(params)`` has ``.shape`` (and ``.n`` when
  discrete).

Any gymnax environment (``gymnax.make("CartPole-v1")``) satisfies this protocol and works with
:func:`pgjax.rollout` and :mod:`pgjax.algos` unchanged. The environments here are plain Python
objects holding only *static* configuration (sizes); their methods are pure and not jitted
internally (jit the caller), so they avoid the stale-trace problem of methods jitted with
``static_argnames=("self",)``. They are written here rather than taken from gymnax because gymnax has
no linear-quadratic system, contextual bandit or tabular MDP with exact objectives, and pgjax's
tests need exact objectives.

Environments:

* :class:`LinearSystem`: the 1-D linear-quadratic example used to contrast vanilla and natural
  policy gradients (Peters and Schaal, 2008), with the dynamics stated:
  :math:`s_{t+1} = A s_t + B a_t`, reward :math:`-(q s_t^2 + \rho a_t^2)`; defaults
  :math:`A = B = q = \rho = 1`. :func:`linear_system_expected_return` gives :math:`J(k, \sigma)` for
  the Gaussian linear policy :math:`a \sim N(k s, \sigma^2)` exactly and
  :func:`linear_system_optimal_gain` the optimal gain (Riccati): :math:`k^* = -(\sqrt5 - 1)/2` for
  the defaults over an infinite undiscounted horizon (the often quoted -1 belongs to other
  dynamics).
* :class:`ClassificationBandit`: a classification task as a one-step contextual bandit:
  observe features of a random example, answer a class, reward 1 if it equals the label.
* :class:`TabularMDP`: a finite MDP with observation = state index, whose expected discounted return
  :func:`tabular_expected_return` is computed exactly from :math:`(I - \gamma P_\pi)^{-1} r_\pi`.

References:
  J. Peters and S. Schaal, "Reinforcement learning of motor skills with policy gradients", Neural
  Networks 21(4), 2008.
  R. S. Sutton and A. G. Barto, *Reinforcement Learning: An Introduction*, 2nd ed., 2018, ch. 3-4.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax.typing import ArrayLike

from pgjax._src.validation import check_positive_int

__all__ = [
    "Box",
    "ClassificationBandit",
    "ClassificationBanditParams",
    "ClassificationBanditState",
    "Discrete",
    "LinearSystem",
    "LinearSystemParams",
    "LinearSystemState",
    "TabularMDP",
    "TabularMDPParams",
    "TabularMDPState",
    "linear_system_expected_return",
    "linear_system_optimal_gain",
    "random_tabular_mdp",
    "tabular_expected_return",
]


class Discrete:
  """A discrete action space ``{0, ..., n - 1}`` (same attributes as ``gymnax.environments.spaces.Discrete``)."""

  def __init__(self, n: int):
    self.n = check_positive_int(n, "n")
    self.shape: tuple[int, ...] = ()
    self.dtype = jnp.int32

  def sample(self, key: jax.Array) -> jax.Array:
    return jax.random.randint(key, (), 0, self.n, dtype=self.dtype)

  def contains(self, x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    return jnp.logical_and(x >= 0, x < self.n)

  def __repr__(self) -> str:
    return f"Discrete({self.n})"


class Box:
  """A box ``[low, high]^shape`` (same attributes as ``gymnax.environments.spaces.Box``)."""

  def __init__(self, low: float, high: float, shape: tuple[int, ...], dtype: Any = jnp.float32):
    self.low, self.high, self.shape, self.dtype = low, high, tuple(shape), dtype

  def sample(self, key: jax.Array) -> jax.Array:
    low = jnp.maximum(jnp.asarray(self.low, self.dtype), -1e6)
    high = jnp.minimum(jnp.asarray(self.high, self.dtype), 1e6)
    return jax.random.uniform(key, self.shape, self.dtype, low, high)

  def contains(self, x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    return jnp.all(jnp.logical_and(x >= self.low, x <= self.high))

  def __repr__(self) -> str:
    return f"Box({self.low}, {self.high}, {self.shape})"


def _check_action_shape(action: ArrayLike, expected: tuple[int, ...], env_name: str) -> jax.Array:
  action = jnp.asarray(action)
  if action.shape != tuple(expected):
    raise ValueError(f"`action` for {env_name} must have shape {tuple(expected)}, got {action.shape}.")
  return action


class _AutoReset:
  """Shared ``reset``/``step`` with gymnax's auto-reset semantics (internal)."""

  def reset(self, key: jax.Array, params: Any = None) -> tuple[jax.Array, Any]:
    params = self.default_params if params is None else params
    return self.reset_env(key, params)

  def step(self, key: jax.Array, state: Any, action: ArrayLike, params: Any = None):
    params = self.default_params if params is None else params
    key_step, key_reset = jax.random.split(key)
    obs_st, state_st, reward, terminated = self.step_env(key_step, state, action, params)
    truncated = state_st.time >= params.max_steps_in_episode
    done = jnp.logical_or(terminated, truncated)
    obs_re, state_re = self.reset_env(key_reset, params)
    state = jax.tree.map(lambda a, b: jnp.where(done, a, b), state_re, state_st)
    obs = jnp.where(done, obs_re, obs_st)
    info = {"terminated": terminated, "truncated": truncated, "final_observation": obs_st}
    return obs, state, reward, terminated, truncated, info

  @property
  def name(self) -> str:
    return type(self).__name__


# --------------------------------------------------------------------------------------------------
# The seed-001 1-D linear system.


@struct.dataclass
class LinearSystemParams:
  r"""Parameters of :class:`LinearSystem` (all traced).

  Attributes:
    a: state coefficient :math:`A` in :math:`s' = A s + B a`.
    b: action coefficient :math:`B`.
    state_cost: :math:`q` in the reward :math:`-(q s^2 + \rho a^2)`.
    action_cost: :math:`\rho`.
    init_mean: mean of the initial state :math:`s_0 \sim N(\mu_0, \sigma_0^2)`.
    init_std: standard deviation :math:`\sigma_0 \ge 0` of the initial state.
    max_steps_in_episode: episode length (the episode is truncated, never terminated).
  """

  a: float = 1.0
  b: float = 1.0
  state_cost: float = 1.0
  action_cost: float = 1.0
  init_mean: float = 0.0
  init_std: float = 1.0
  max_steps_in_episode: int = 20


@struct.dataclass
class LinearSystemState:
  s: jax.Array
  time: jax.Array


class LinearSystem(_AutoReset):
  r"""A 1-D linear-quadratic system (Peters and Schaal, 2008), dynamics stated.

  .. math::
     s_0 \sim N(\mu_0, \sigma_0^2), \qquad r_t = -(q s_t^2 + \rho a_t^2), \qquad
     s_{t+1} = A s_t + B a_t,

  deterministic dynamics, fixed-length episodes of ``max_steps_in_episode`` steps. Observation
  ``[s]`` (shape ``(1,)``), action shape ``(1,)`` (unbounded). The Gaussian linear policy is
  :math:`a \sim N(k s, \sigma^2)`; its exact return is :func:`linear_system_expected_return`.
  """

  obs_shape = (1,)

  @property
  def default_params(self) -> LinearSystemParams:
    return LinearSystemParams()

  def reset_env(self, key, params):
    s = params.init_mean + params.init_std * jax.random.normal(key, (), jnp.float32)
    s = jnp.asarray(s, jnp.float32)
    return s[None], LinearSystemState(s=s, time=jnp.zeros((), jnp.int32))

  def step_env(self, key, state, action, params):
    del key
    a = _check_action_shape(action, (1,), self.name)[0].astype(jnp.float32)
    reward = -(params.state_cost * state.s**2 + params.action_cost * a**2)
    s_next = params.a * state.s + params.b * a
    new = LinearSystemState(s=jnp.asarray(s_next, jnp.float32), time=state.time + 1)
    return new.s[None], new, reward.astype(jnp.float32), jnp.zeros((), bool)

  def action_space(self, params: Any = None) -> Box:
    return Box(-math.inf, math.inf, (1,))

  def observation_space(self, params: Any = None) -> Box:
    return Box(-math.inf, math.inf, (1,))


def linear_system_expected_return(params: LinearSystemParams, gain: ArrayLike, std: ArrayLike, *,
                                  horizon: int, discount: ArrayLike = 1.0) -> jax.Array:
  r"""Exact expected return of the policy :math:`a_t = k s_t + \sigma\epsilon_t` on :class:`LinearSystem`.

  With :math:`m_t = E[s_t^2]`: :math:`m_0 = \mu_0^2 + \sigma_0^2`,
  :math:`m_{t+1} = (A + Bk)^2 m_t + B^2\sigma^2`, and
  :math:`E[r_t] = -(q + \rho k^2) m_t - \rho\sigma^2`, so

  .. math::
     J(k, \sigma) = -\sum_{t=0}^{H-1} \gamma^t\left[(q + \rho k^2)\,m_t + \rho\sigma^2\right].

  Differentiable in ``gain``, ``std`` and the params (``jax.grad`` gives the true policy gradient).

  Args:
    params: the system.
    gain: :math:`k` (scalar).
    std: :math:`\sigma` (scalar; the sign is irrelevant, only :math:`\sigma^2` enters).
    horizon: :math:`H \ge 1` steps (static).
    discount: :math:`\gamma`.
  """
  horizon = check_positive_int(horizon, "horizon")
  k = jnp.asarray(gain, jnp.float32)
  var = jnp.asarray(std, jnp.float32) ** 2
  q, rho, a, b = params.state_cost, params.action_cost, params.a, params.b
  m0 = params.init_mean**2 + params.init_std**2

  def body(carry, _):
    m, g = carry
    cost = (q + rho * k**2) * m + rho * var
    return ((a + b * k) ** 2 * m + b**2 * var, g * discount), g * cost

  _, costs = jax.lax.scan(body, (jnp.asarray(m0, jnp.float32), jnp.ones((), jnp.float32)),
                          None, length=horizon)
  return -jnp.sum(costs)


def linear_system_optimal_gain(params: LinearSystemParams, *, discount: ArrayLike = 1.0,
                               num_iterations: int = 2000) -> jax.Array:
  r"""Optimal stationary gain :math:`k^*` over an infinite horizon, from the discounted Riccati equation.

  .. math::
     P = q + \gamma A^2 P - \frac{\gamma^2 A^2 B^2 P^2}{\rho + \gamma B^2 P}, \qquad
     k^* = -\frac{\gamma A B P}{\rho + \gamma B^2 P},

  iterated from :math:`P = q` (value iteration on the quadratic value function; converges for a
  stabilisable system). For :math:`A = B = q = \rho = \gamma = 1`:
  :math:`P = (1 + \sqrt5)/2`, :math:`k^* = -(\sqrt5 - 1)/2 \approx -0.618`. Gaussian exploration
  noise does not change :math:`k^*` (certainty equivalence), so the optimum of
  :math:`J(k, \sigma)` is :math:`(k^*, \sigma \to 0)`.
  """
  num_iterations = check_positive_int(num_iterations, "num_iterations")
  q, rho, a, b, g = params.state_cost, params.action_cost, params.a, params.b, discount

  def body(_, p):
    return q + g * a**2 * p - (g * a * b * p) ** 2 / (rho + g * b**2 * p)

  p = jax.lax.fori_loop(0, num_iterations, body, jnp.asarray(q, jnp.float32))
  return -g * a * b * p / (rho + g * b**2 * p)


# --------------------------------------------------------------------------------------------------
# The seed-000 classification robot as a contextual bandit.


@struct.dataclass
class ClassificationBanditParams:
  """A labelled data set: ``features [M, F]`` float, ``labels [M]`` int in ``[0, num_classes)``."""

  features: jax.Array
  labels: jax.Array
  max_steps_in_episode: int = 1


@struct.dataclass
class ClassificationBanditState:
  index: jax.Array
  time: jax.Array


class ClassificationBandit(_AutoReset):
  r"""A classification task as a one-step contextual bandit.

  Each episode: an example :math:`m` is drawn uniformly, the observation is its features
  :math:`s = x_m`, the agent answers :math:`a \in \{0..C-1\}` and gets :math:`r = \mathbb 1[a = y_m]`;
  the episode then terminates. The expected reward of a policy is its expected accuracy
  :math:`\frac1M\sum_m \pi(y_m|x_m)`, whose score-function gradient is the policy gradient (see
  :func:`pgjax.problems.classification_robot` for the exact identities).

  Args:
    num_classes: number of actions :math:`C` (static).
  """

  def __init__(self, num_classes: int):
    self.num_classes = check_positive_int(num_classes, "num_classes", minimum=2)

  @property
  def default_params(self) -> ClassificationBanditParams:
    raise ValueError("ClassificationBandit has no default data set: pass "
                     "ClassificationBanditParams(features=..., labels=...).")

  @property
  def num_actions(self) -> int:
    return self.num_classes

  def reset_env(self, key, params):
    m = params.labels.shape[0]
    index = jax.random.randint(key, (), 0, m, dtype=jnp.int32)
    return params.features[index].astype(jnp.float32), ClassificationBanditState(
        index=index, time=jnp.zeros((), jnp.int32))

  def step_env(self, key, state, action, params):
    del key
    action = _check_action_shape(action, (), self.name)
    reward = (action == params.labels[state.index]).astype(jnp.float32)
    new = ClassificationBanditState(index=state.index, time=state.time + 1)
    return params.features[state.index].astype(jnp.float32), new, reward, jnp.ones((), bool)

  def action_space(self, params: Any = None) -> Discrete:
    return Discrete(self.num_classes)

  def observation_space(self, params: ClassificationBanditParams) -> Box:
    return Box(-math.inf, math.inf, (params.features.shape[-1],))


# --------------------------------------------------------------------------------------------------
# Tabular MDPs with exact returns.


@struct.dataclass
class TabularMDPParams:
  """``transitions [S, A, S]`` (rows sum to 1), ``rewards [S, A]``, ``initial [S]`` (sums to 1)."""

  transitions: jax.Array
  rewards: jax.Array
  initial: jax.Array
  max_steps_in_episode: int = 10


@struct.dataclass
class TabularMDPState:
  s: jax.Array
  time: jax.Array


class TabularMDP(_AutoReset):
  r"""A finite MDP: observation = current state index (int32 scalar), reward :math:`r(s, a)`.

  Episodes never terminate; they are truncated after ``max_steps_in_episode`` steps.

  Args:
    num_states: :math:`S` (static).
    num_actions: :math:`A` (static).
  """

  def __init__(self, num_states: int, num_actions: int):
    self.num_states = check_positive_int(num_states, "num_states")
    self._num_actions = check_positive_int(num_actions, "num_actions")

  @property
  def num_actions(self) -> int:
    return self._num_actions

  @property
  def default_params(self) -> TabularMDPParams:
    return random_tabular_mdp(jax.random.key(0), self.num_states, self._num_actions)

  def reset_env(self, key, params):
    s = jax.random.categorical(key, jnp.log(params.initial)).astype(jnp.int32)
    return s, TabularMDPState(s=s, time=jnp.zeros((), jnp.int32))

  def step_env(self, key, state, action, params):
    action = _check_action_shape(action, (), self.name)
    reward = params.rewards[state.s, action].astype(jnp.float32)
    s_next = jax.random.categorical(key, jnp.log(params.transitions[state.s, action])).astype(jnp.int32)
    return s_next, TabularMDPState(s=s_next, time=state.time + 1), reward, jnp.zeros((), bool)

  def action_space(self, params: Any = None) -> Discrete:
    return Discrete(self._num_actions)

  def observation_space(self, params: Any = None) -> Discrete:
    return Discrete(self.num_states)


def random_tabular_mdp(key: jax.Array, num_states: int, num_actions: int, *,
                       max_steps_in_episode: int = 10, concentration: float = 1.0) -> TabularMDPParams:
  """A random MDP: Dirichlet(``concentration``) transitions and initial state, rewards ~ N(0, 1)."""
  num_states = check_positive_int(num_states, "num_states")
  num_actions = check_positive_int(num_actions, "num_actions")
  transitions, rewards, initial = _sample_tabular_mdp(key, num_states, num_actions, concentration)
  return TabularMDPParams(transitions, rewards, initial, max_steps_in_episode)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _sample_tabular_mdp(key, num_states, num_actions, concentration):
  # One compiled function (the Dirichlet draws' gamma samplers compile once, not once per shape).
  k1, k2, k3 = jax.random.split(key, 3)
  alpha = jnp.full((num_states,), concentration, jnp.float32)
  transitions = jax.random.dirichlet(k1, alpha, (num_states, num_actions))
  initial = jax.random.dirichlet(k2, alpha)
  rewards = jax.random.normal(k3, (num_states, num_actions), jnp.float32)
  return transitions, rewards, initial


def tabular_expected_return(params: TabularMDPParams, policy_probs: ArrayLike, *,
                            discount: ArrayLike, horizon: int | None = None) -> jax.Array:
  r"""Exact expected discounted return of a stationary policy on a :class:`TabularMDP`.

  With :math:`P_\pi[s, s'] = \sum_a \pi(a|s) P[s, a, s']` and :math:`r_\pi[s] = \sum_a \pi(a|s) r(s, a)`:

  .. math::
     J_\infty = \mu^\top (I - \gamma P_\pi)^{-1} r_\pi, \qquad
     J_H = \sum_{t=0}^{H-1} \gamma^t \mu^\top P_\pi^t r_\pi
         = \mu^\top (I - \gamma P_\pi)^{-1} (I - (\gamma P_\pi)^H) r_\pi .

  ``horizon=None`` gives :math:`J_\infty` (needs :math:`\gamma < 1`) by a linear solve;
  an integer ``horizon`` gives :math:`J_H` by ``H`` matrix-vector steps (any :math:`\gamma`), the
  objective of episodes truncated at ``H`` steps. Differentiate with ``jax.grad`` through
  ``policy_probs`` (e.g. ``softmax(logits)``) for the exact policy gradient.

  Args:
    params: the MDP.
    policy_probs: ``[S, A]`` action probabilities per state.
    discount: :math:`\gamma \in [0, 1]`.
    horizon: ``None`` or :math:`H \ge 1` (static).
  """
  pi = jnp.asarray(policy_probs)
  s, a = params.rewards.shape
  if pi.shape != (s, a):
    raise ValueError(f"`policy_probs` must have shape {(s, a)}, got {pi.shape}.")
  p_pi = jnp.einsum("sa,sat->st", pi, params.transitions)
  r_pi = jnp.sum(pi * params.rewards, axis=-1)
  if horizon is None:
    v = jnp.linalg.solve(jnp.eye(s, dtype=p_pi.dtype) - discount * p_pi, r_pi)
    return params.initial @ v
  horizon = check_positive_int(horizon, "horizon")

  def body(d, _):  # d_t = gamma^t mu^T P^t
    return discount * (d @ p_pi), d @ r_pi

  _, per_step = jax.lax.scan(body, params.initial.astype(r_pi.dtype), None, length=horizon)
  return jnp.sum(per_step)
