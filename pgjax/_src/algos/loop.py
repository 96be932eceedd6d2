r"""The iteration loop shared by every trainer: resumable runs and a host callback for logging.

Every trainer of :mod:`pgjax.algos` is a :class:`Trainer`: calling it, ``trainer(key) -> (params, metrics)``,
runs all its iterations in one ``lax.scan``. The same object also runs in pieces::

    state = trainer.init(key)                          # TrainState: the scan's carry at iteration 0
    state, m1 = trainer.run(state, 10)                 # iterations 0..9
    state, m2 = trainer.run(state)                     # the rest
    params = trainer.params(state)
    metrics = concatenate_metrics([m1, m2])            # the metrics of trainer.run(trainer.init(key))

and the pieces compose with ``jit`` and ``vmap`` (``jax.vmap(lambda s: trainer.run(s, 10))(states)`` with a
leading seed axis). Iteration :math:`i` always uses the same key (iteration :math:`i` of the key stream of
``TrainState.key``) and the evaluations happen after the same iterations (every ``eval_every`` and after the
last), so a run split anywhere reproduces the run in one go from the same state: on CPU the final state
and the per-iteration metrics agree bit for bit; an evaluation return can differ in its last float bit (XLA
rounds the same evaluation differently in different programs). ``trainer(key)`` is ``trainer.init`` then
``trainer.run`` compiled as one program, which can likewise differ from the pieces in the last bits.
:func:`pgjax.algos.save_checkpoint` and :func:`pgjax.algos.load_checkpoint` write and read a
:class:`TrainState`.

A host callback (:meth:`Trainer.with_callback`, or ``make_train(config, callback=...)``) receives
``(iteration, metrics)`` after every ``log_every`` iterations and after the last, through
:func:`jax.debug.callback`, so it works under ``jit``. Under ``vmap`` it is called once per iteration with
the whole batch (each metric with the batch axes leading), not once per seed.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.custom_batching import custom_vmap

from pgjax._src import validation

__all__ = ["ProgressBar", "TrainState", "Trainer", "concatenate_metrics"]

_KEY_STREAMS = ("joint", "separate")


@struct.dataclass
class TrainState:
  r"""A trainer's state between iterations (a pytree; vmappable, with a leading seed axis under ``vmap``).

  Attributes:
    carry: the trainer's ``lax.scan`` carry (params, optimiser state, critic, environment states, ...).
    key: the key of the whole run's iteration and evaluation key stream.
    step: iterations done. Static (not a leaf): the pieces of a run are traced for their position.
  """

  carry: Any
  key: jax.Array
  step: int = struct.field(pytree_node=False, default=0)


def _num_evaluations(num_iterations: int, eval_every: int | None) -> int:
  return 0 if eval_every is None else -(-num_iterations // eval_every)


def _log_fn(callback: Callable):
  """``log(iteration, metrics)``: ``jax.debug.callback`` once, whatever ``vmap`` wraps it (a ``custom_vmap``
  whose batching rule broadcasts every argument to the batch and calls the next level)."""

  def host(iteration, metrics):
    callback(int(np.asarray(iteration).reshape(-1)[0]), jax.tree.map(np.asarray, metrics))

  @custom_vmap
  def log(iteration, metrics):
    jax.debug.callback(host, iteration, metrics)
    return jnp.zeros((), jnp.int32)

  @log.def_vmap
  def log_vmap(axis_size, in_batched, iteration, metrics):
    _, metrics_batched = in_batched
    metrics = jax.tree.map(lambda x, b: x if b else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x)),
                           metrics, metrics_batched)
    return _log_fn(callback)(iteration, metrics), False

  return log


class Trainer:
  r"""A training loop: ``trainer(key) -> (params, metrics)``, also runnable in pieces and resumable.

  Built by each trainer's factory (e.g. :func:`pgjax.algos.make_ppo_train`) from a ``setup(key) -> (carry,
  loop_key, update)`` function: ``carry`` is the initial ``lax.scan`` carry, ``loop_key`` the key of the
  iteration key stream and ``update(carry, key) -> (carry, raw_metrics)`` one iteration (which must not
  depend on ``key``'s initialisation values, only on ``carry``).

  Args:
    setup: as above.
    num_iterations: :math:`N`, iterations of a whole run.
    metrics: ``metrics(raw, evaluations) -> Metrics``: the trainer's metrics from the stacked per-iteration
      ``raw_metrics`` and the ``[E]`` evaluations.
    params: ``params(carry) -> params``: the policy params the run returns.
    evaluate: ``evaluate(key, carry) -> scalar`` or ``None``.
    eval_every: evaluate after every this many iterations and after the last (``None``: never).
    key_stream: ``"joint"``: iteration :math:`i` gets ``split(loop_key, N + E)[i]``, evaluation :math:`j`
      ``split(loop_key, N + E)[N + j]``; ``"separate"``: ``k_it, k_ev = split(loop_key)``, iteration
      :math:`i` gets ``split(k_it, N)[i]`` and evaluation :math:`j` ``split(k_ev, E)[j]``.
    callback: ``callback(iteration, metrics)`` on the host (see :meth:`with_callback`), or ``None``.
    log_every: call ``callback`` after every this many iterations and after the last.
  """

  def __init__(self, setup: Callable, *, num_iterations: int, metrics: Callable, params: Callable,
               evaluate: Callable | None = None, eval_every: int | None = None, key_stream: str = "joint",
               callback: Callable | None = None, log_every: int = 1):
    if key_stream not in _KEY_STREAMS:
      raise ValueError(f"`key_stream` must be one of {_KEY_STREAMS}, got {key_stream!r}.")
    if callback is not None and not callable(callback):
      raise TypeError(f"`callback` must be callable or None, got {type(callback).__name__}.")
    log_every = validation.check_positive_int(log_every, "log_every")
    self._setup = setup
    self.num_iterations = int(num_iterations)
    self._metrics = metrics
    self._params = params
    self._evaluate = evaluate
    self.eval_every = None if evaluate is None else eval_every
    self._key_stream = key_stream
    self.callback = callback
    self.log_every = int(log_every)
    self.num_evaluations = _num_evaluations(self.num_iterations, self.eval_every)

  def with_callback(self, callback: Callable | None, log_every: int = 1) -> "Trainer":
    r"""The same trainer calling ``callback(iteration, metrics)`` on the host after iteration ``iteration``
    (0-based) when ``iteration + 1`` is a multiple of ``log_every``, and after the last iteration.

    ``metrics`` is a dict of the iteration's metrics (the trainer's metrics fields without
    ``eval_return``) as numpy arrays: scalars, or ``[S]`` (``[S1, S2, ...]``) under (nested) ``vmap``,
    where the callback is still called once per iteration. The calls go through
    :func:`jax.debug.callback` (they may run after the jitted call returns: ``jax.effects_barrier()``
    waits for them) and do not change the trained params. ``callback=None`` removes it.
    """
    return Trainer(self._setup, num_iterations=self.num_iterations, metrics=self._metrics,
                   params=self._params, evaluate=self._evaluate, eval_every=self.eval_every,
                   key_stream=self._key_stream, callback=callback, log_every=log_every)

  def __call__(self, key: jax.Array):
    """Runs all ``num_iterations`` iterations: ``(params, metrics)``."""
    carry, loop_key, update = self._setup(key)
    state, metrics = self._run(TrainState(carry, loop_key, 0), self.num_iterations, update)
    return self.params(state), metrics

  def init(self, key: jax.Array) -> TrainState:
    """The :class:`TrainState` at iteration 0 for ``key`` (the same ``key`` as ``trainer(key)``)."""
    carry, loop_key, _ = self._setup(key)
    return TrainState(carry, loop_key, 0)

  def params(self, state: TrainState) -> Any:
    """The policy params of ``state`` (what ``trainer(key)`` returns after the last iteration)."""
    return self._params(state.carry)

  def _keys(self, loop_key):
    n, e = self.num_iterations, self.num_evaluations
    if self._key_stream == "joint":
      if e == 0:
        return jax.random.split(loop_key, n), None
      keys = jax.random.split(loop_key, n + e)
      return keys[:n], keys[n:]
    k_it, k_ev = jax.random.split(loop_key)
    return jax.random.split(k_it, n), (jax.random.split(k_ev, e) if e else None)

  def run(self, state: TrainState, num_iterations: int | None = None):
    r"""Runs iterations ``state.step, ..., state.step + num_iterations - 1`` (``None``: to the end).

    Returns:
      ``(state, metrics)``: the new state and the metrics of these iterations (per-iteration fields
      ``[num_iterations]``, ``eval_return`` the evaluations that fell in them). Concatenating the metrics of
      consecutive pieces (:func:`concatenate_metrics`) gives those of the run in one go.

    Raises:
      ValueError: ``num_iterations`` is not positive or runs past the trainer's ``num_iterations``.
    """
    if not isinstance(state, TrainState):
      raise TypeError(f"`state` must be a TrainState (from Trainer.init), got {type(state).__name__}.")
    start = int(state.step)
    remaining = self.num_iterations - start
    if num_iterations is None:
      num_iterations = remaining
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, (int, np.integer)) or not (
        1 <= num_iterations <= remaining):
      raise ValueError(f"`num_iterations` must be an integer in [1, {remaining}] (the state is at iteration "
                       f"{start} of {self.num_iterations}), got {num_iterations!r}.")
    return self._run(state, start + int(num_iterations), self._update(state.key))

  def _update(self, key):
    """``setup``'s ``update`` without computing (or staging) the initial carry: ``setup`` is only traced
    abstractly. ``update`` closes over no value derived from ``key`` (the contract above); one that did
    would raise JAX's leaked-tracer error here instead of silently using the initial values."""
    found = []

    def initial_carry(k):
      carry, _, update = self._setup(k)
      found.append(update)
      return carry

    jax.eval_shape(initial_carry, key)
    return found[0]

  def _run(self, state: TrainState, stop: int, update: Callable):
    start = int(state.step)
    keys, eval_keys = self._keys(state.key)
    ev, last = self.eval_every, self.num_iterations - 1
    if ev is None and self.callback is None:
      carry, raw = jax.lax.scan(update, state.carry, keys[start:stop])
      return TrainState(carry, state.key, stop), self._metrics(raw, jnp.zeros((0,), jnp.float32))
    log = None if self.callback is None else _log_fn(self.callback)
    every = self.log_every
    no_eval = None
    if ev is not None:
      no_eval = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                             jax.eval_shape(self._evaluate, eval_keys[0], state.carry))

    # One scan body for every iteration, the evaluation (and the logging) in a `lax.cond` on the iteration
    # index: the index is a scan input that no `vmap` batches, so the cond stays a branch (it is not turned
    # into computing both sides), and every piece of a run compiles the same body.
    def body(carry, inp):
      i, k = inp
      carry, raw = update(carry, k)
      out = ()
      if ev is not None:
        ek = eval_keys[i // ev]
        out = jax.lax.cond(jnp.logical_or((i + 1) % ev == 0, i == last),
                           lambda: self._evaluate(ek, carry), lambda: no_eval)
      if log is not None:
        named = {name: v for name, v in self._metrics(raw, None)._asdict().items() if v is not None}
        jax.lax.cond(jnp.logical_or((i + 1) % every == 0, i == last), lambda: log(i, named),
                     lambda: jnp.zeros((), jnp.int32))
      return carry, (raw, out)

    xs = (jnp.arange(start, stop, dtype=jnp.int32), keys[start:stop])
    carry, (raw, evals) = jax.lax.scan(body, state.carry, xs)
    if ev is None:
      evals = jnp.zeros((0,), jnp.float32)
    else:
      at = [i - start for i in range(start, stop) if (i + 1) % ev == 0 or i == last]
      evals = evals[np.asarray(at, np.int32)] if at else jnp.zeros((0,), evals.dtype)
    return TrainState(carry, state.key, stop), self._metrics(raw, evals)


def concatenate_metrics(metrics: Any, *, batch_dims: int = 0) -> Any:
  """Concatenates the metrics of consecutive :meth:`Trainer.run` pieces along the iteration axis.

  Args:
    metrics: a sequence of metrics (same NamedTuple type).
    batch_dims: leading batch axes (1 for metrics of a ``vmap`` over seeds).
  """
  metrics = list(metrics)
  if not metrics:
    raise ValueError("`metrics` must not be empty.")
  return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=batch_dims), *metrics)


class ProgressBar:
  r"""A :meth:`Trainer.with_callback` callback that drives a ``tqdm`` progress bar (``pip install tqdm``).

  The bar advances to ``iteration + 1`` of ``total`` on every call and shows the mean over the batch of
  ``metric`` (default: ``episode_return``, the training metric of every trainer) as its postfix; it closes
  after the last iteration.

  Args:
    total: iterations of the run (the trainer's ``num_iterations``).
    metric: the metric to show, or ``None`` for none.
    **tqdm_kwargs: passed to ``tqdm.tqdm`` (e.g. ``desc``, ``file``, ``disable``).

  Example::

    bar = ProgressBar(config.num_iterations, desc="PPO")
    train = make_train(config, callback=bar, log_every=10)
  """

  def __init__(self, total: int, *, metric: str | None = "episode_return", **tqdm_kwargs: Any):
    try:
      import tqdm  # pylint: disable=import-outside-toplevel
    except ImportError as e:  # pragma: no cover
      raise ImportError("ProgressBar needs tqdm (pip install tqdm).") from e
    self.total = int(total)
    self.metric = metric
    self._bar = tqdm.tqdm(total=self.total, **tqdm_kwargs)

  def __call__(self, iteration: int, metrics: dict) -> None:
    if iteration + 1 > self._bar.n:
      self._bar.update(iteration + 1 - self._bar.n)
    if self.metric is not None and self.metric in metrics:
      self._bar.set_postfix({self.metric: float(np.nanmean(metrics[self.metric]))}, refresh=False)
    if iteration + 1 >= self.total:
      self._bar.close()

  def close(self) -> None:
    """Closes the bar (for a run stopped early)."""
    self._bar.close()
