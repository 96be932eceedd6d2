r"""Checkpoints of a trainer's :class:`pgjax.algos.TrainState` (msgpack, via ``flax.serialization``).

A checkpoint holds every leaf of the state (the scan's carry and the key stream, with any leading seed axes
of a ``vmap``), the number of iterations done, and a description of the config that produced it. Loading
rebuilds the state against the structure that ``make_train(config).init`` gives, so a run resumed from a
checkpoint continues as the run in one go from the same state would have (the final state and the
per-iteration metrics bit for bit on CPU; see :class:`pgjax.algos.Trainer`)::

    train = make_train(config)
    states = jax.vmap(train.init)(jax.random.split(key, 8))
    states, m1 = jax.jit(jax.vmap(lambda s: train.run(s, 100)))(states)
    save_checkpoint("run.ckpt", states, config)
    ...
    states = load_checkpoint("run.ckpt", config)      # ValueError if config differs from the saved one
    states, m2 = jax.jit(jax.vmap(train.run))(states)  # the remaining iterations

The config must equal the one of the saved run in every field (the whole schedule -- key stream, evaluation
times, learning-rate annealing -- depends on it, ``num_iterations`` included). Fields holding functions or
objects (a custom ``policy``, an optax optimiser, an environment object) are compared by their type and
name only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from pgjax._src.algos.loop import TrainState
from pgjax._src.algos.make_train import make_train

__all__ = ["load_checkpoint", "save_checkpoint"]

_FORMAT = "pgjax.algos.TrainState"
_VERSION = 1


def _describe(value: Any) -> Any:
  """A JSON-able description of a config value (numbers as float32-rounded floats; functions by name)."""
  if value is None or isinstance(value, (bool, str)):
    return value
  if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(np.float32(value))
  if isinstance(value, (np.ndarray, jax.Array, np.bool_)):
    a = np.asarray(value)
    if np.issubdtype(a.dtype, np.floating):
      a = a.astype(np.float32).astype(np.float64)
    return {"array": a.tolist(), "shape": list(a.shape)}
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return {"type": type(value).__qualname__,
            **{f.name: _describe(getattr(value, f.name)) for f in dataclasses.fields(value)}}
  if isinstance(value, tuple) and hasattr(value, "_fields"):
    return {"type": type(value).__qualname__, **{k: _describe(v) for k, v in zip(value._fields, value)}}
  if isinstance(value, (tuple, list)):
    return [_describe(v) for v in value]
  if isinstance(value, dict):
    return {str(k): _describe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
  name = getattr(value, "__qualname__", None) or type(value).__qualname__
  module = getattr(value, "__module__", None) or type(value).__module__
  return f"<{module}.{name}>"


def _show(desc: Any) -> str:
  """A description for an error message (floats as their shortest float32 form)."""
  if isinstance(desc, float):
    return repr(float(np.format_float_positional(np.float32(desc), unique=True, trim="-")))
  if isinstance(desc, list):
    return "[" + ", ".join(_show(d) for d in desc) + "]"
  if isinstance(desc, dict):
    return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in desc.items()) + "}"
  return json.dumps(desc)


def _describe_config(config: Any) -> dict:
  desc = {f.name: _describe(getattr(config, f.name)) for f in dataclasses.fields(config)}
  return json.loads(json.dumps(desc))  # tuples -> lists, as they come back from the file


def _batch_shape(key: Any) -> tuple[int, ...]:
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    return tuple(key.shape)
  return tuple(key.shape[:-1])  # raw uint32 key data: one trailing axis per key


def _template(config: Any, key_dtype: Any, key_shape: tuple[int, ...]) -> TrainState:
  return jax.eval_shape(make_train(config).init, jax.ShapeDtypeStruct(key_shape, key_dtype))


def _is_key(leaf: Any) -> bool:
  return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def save_checkpoint(path: str | os.PathLike, state: TrainState, config: Any) -> None:
  r"""Writes ``state`` (a :class:`pgjax.algos.TrainState` of ``make_train(config)``, with any leading seed
  axes) to ``path`` (msgpack; written to a temporary file first, then renamed).

  Raises:
    TypeError: ``state`` is not a ``TrainState``.
    ValueError: ``state`` does not have the structure and shapes of ``config``'s trainer (naming the
      first mismatching leaf).
  """
  if not isinstance(state, TrainState):
    raise TypeError(f"`state` must be a TrainState (from Trainer.init or Trainer.run), got "
                    f"{type(state).__name__}.")
  key = state.key
  batch = _batch_shape(key)
  typed = _is_key(key)
  key_shape = () if typed else tuple(key.shape[len(batch):])
  template = _template(config, key.dtype, key_shape)
  t_leaves, t_def = jax.tree_util.tree_flatten_with_path(template)
  s_leaves, s_def = jax.tree_util.tree_flatten_with_path(state)
  if len(t_leaves) != len(s_leaves):
    raise ValueError(f"`state` does not come from the trainer of `config` ({type(config).__name__}): "
                     f"{len(s_leaves)} leaves, the trainer's state has {len(t_leaves)}.")
  leaves = {}
  for (path_t, t), (path_s, s) in zip(t_leaves, s_leaves):
    name = jax.tree_util.keystr(path_t)
    if jax.tree_util.keystr(path_s) != name or tuple(s.shape) != batch + tuple(t.shape) or s.dtype != t.dtype:
      raise ValueError(f"`state` does not come from the trainer of `config` ({type(config).__name__}): leaf "
                       f"{jax.tree_util.keystr(path_s)} is {s.dtype}{list(s.shape)}, expected {name} "
                       f"{t.dtype}{list(batch + tuple(t.shape))}.")
    leaves[name] = np.asarray(jax.random.key_data(s) if _is_key(s) else s)
  meta = {
      "format": _FORMAT,
      "version": _VERSION,
      "trainer": type(config).__name__,
      "config": json.dumps(_describe_config(config), sort_keys=True),
      "step": int(state.step),
      "batch_shape": list(batch),
      "key_impl": str(jax.random.key_impl(key)) if typed else "",
      "raw_key_shape": list(key_shape),
  }
  data = serialization.msgpack_serialize({"meta": meta, "leaves": leaves})
  path = os.fspath(path)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, config: Any) -> TrainState:
  r"""Reads a :func:`save_checkpoint` file back as a :class:`pgjax.algos.TrainState` of
  ``make_train(config)`` (with the saved leading seed axes), ready for ``Trainer.run``.

  Raises:
    ValueError: the file is not a pgjax checkpoint, or ``config`` differs from the saved run's config
      (the message names every differing field), or a saved leaf has the wrong shape.
  """
  with open(os.fspath(path), "rb") as f:
    blob = serialization.msgpack_restore(f.read())
  meta = blob.get("meta") if isinstance(blob, dict) else None
  if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
    raise ValueError(f"`path` {os.fspath(path)!r} is not a pgjax.algos checkpoint.")
  if meta["version"] != _VERSION:
    raise ValueError(f"`path`: checkpoint format version {meta['version']}, this pgjax reads {_VERSION}.")
  if meta["trainer"] != type(config).__name__:
    raise ValueError(f"`config` is a {type(config).__name__}, the checkpoint was written by a "
                     f"{meta['trainer']} run.")
  saved = json.loads(meta["config"])
  now = _describe_config(config)
  diff = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
  if diff:
    details = "; ".join(f"`{k}` is {_show(now.get(k))}, the checkpoint's run had {_show(saved.get(k))}"
                        for k in diff)
    raise ValueError(f"`config` differs from the checkpoint's config: {details}.")
  batch = tuple(meta["batch_shape"])
  if meta["key_impl"]:
    key_dtype, key_shape = jax.random.key(0, impl=meta["key_impl"]).dtype, ()
  else:
    key_dtype, key_shape = jnp.uint32, tuple(meta["raw_key_shape"])
  template = _template(config, key_dtype, key_shape)
  t_leaves, t_def = jax.tree_util.tree_flatten_with_path(template)
  stored = blob["leaves"]
  leaves = []
  for path_t, t in t_leaves:
    name = jax.tree_util.keystr(path_t)
    if name not in stored:
      raise ValueError(f"`path`: the checkpoint has no leaf {name} of the trainer's state.")
    a = np.asarray(stored[name])
    if _is_key(t):
      impl = meta["key_impl"]
      want = batch + tuple(t.shape) + tuple(jax.random.key_data(jax.random.key(0, impl=impl)).shape)
      ok = a.shape == want and a.dtype == np.uint32
      value = jax.random.wrap_key_data(jnp.asarray(a), impl=impl) if ok else None
    else:
      want = batch + tuple(t.shape)
      ok = a.shape == want and a.dtype == t.dtype
      value = jnp.asarray(a)
    if not ok:
      raise ValueError(f"`path`: leaf {name} is {a.dtype}{list(a.shape)}, the trainer's state needs "
                       f"{list(want)}.")
    leaves.append(value)
  state = jax.tree_util.tree_unflatten(t_def, leaves)
  return state.replace(step=int(meta["step"]))
