"""The shared training loop: runs split into pieces (and through a checkpoint file) reproduce the run in one
go bit for bit; the host logging callback is called once per logged iteration under ``jit(vmap)`` with the
batched metrics and leaves the training unchanged.

Exact identities, no statistics: a resumed run must give the same params and metrics as the uninterrupted
one, to the last bit.
"""

import io

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax import algos
from pgjax import envs

pytest.importorskip("gymnax")

LINEAR = envs.LinearSystemParams(init_mean=0.0, init_std=1.0, max_steps_in_episode=10)
_COMMON = dict(env="LinearSystem", env_params=LINEAR, policy=algos.linear_gaussian_policy(0.0, 0.0), num_steps=10,
               num_iterations=5)
# 5 iterations split 3 + 2. Without evaluations (each XLA compilation of a trainer costs seconds); the
# evaluation schedule of split runs is checked exactly on a toy trainer below.
CONFIGS = {
    "reinforce": algos.ReinforceConfig(num_envs=4, learning_rate=0.05, **_COMMON),
    "es": algos.ESConfig(num_directions=4, learning_rate=0.05, **_COMMON),
    "param_cem": algos.ParamCEMConfig(population_size=8, **_COMMON),
    "ppo": algos.PPOConfig(env="LinearSystem", env_params=LINEAR, hidden_sizes=(4,), num_updates=5, num_envs=2,
                           num_steps=4, num_epochs=1, num_minibatches=2),
}
FIRST = 3
NUM_SEEDS = 2


def _assert_identical(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(la, lb):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == y.shape and x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)  # bit for bit (NaN == NaN)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def compiled(request):
  """One trainer's initial states (2 seeds), its run in one go from them, and its two pieces, each jitted
  and vmapped once."""
  config = CONFIGS[request.param]
  train = algos.make_train(config)
  keys = jax.random.split(jax.random.key(3), NUM_SEEDS)
  init = jax.vmap(train.init)(keys)
  whole = jax.jit(jax.vmap(train.run))(init)
  first = jax.jit(jax.vmap(lambda s: train.run(s, FIRST)))
  rest = jax.jit(jax.vmap(train.run))
  return dict(name=request.param, config=config, train=train, keys=keys, init=init, whole=whole, first=first,
              rest=rest)


def test_run_split_through_a_checkpoint_file_is_bit_identical(compiled, tmp_path):
  c = compiled
  train, config = c["train"], c["config"]
  assert c["init"].step == 0
  state, m1 = c["first"](c["init"])
  assert state.step == FIRST
  path = tmp_path / "run.ckpt"
  algos.save_checkpoint(path, state, config)
  loaded = algos.load_checkpoint(path, config)
  assert loaded.step == FIRST
  _assert_identical(loaded, state)
  final, m2 = c["rest"](loaded)
  whole, metrics = c["whole"]
  assert final.step == whole.step == train.num_iterations
  _assert_identical(final, whole)  # params, optimiser and search states, critic, environments, keys
  _assert_identical(algos.concatenate_metrics([m1, m2], batch_dims=1), metrics)
  chex.assert_shape(jax.tree.leaves(metrics)[0], (NUM_SEEDS, train.num_iterations))
  params = train.params(whole)
  first_leaf = np.asarray(jax.tree.leaves(params)[0])
  assert not np.array_equal(first_leaf[0], first_leaf[1])  # the seeds differ
  assert not np.array_equal(first_leaf, np.asarray(jax.tree.leaves(train.params(c["init"]))[0]))  # it trained


def test_checkpoint_from_another_config_names_the_argument(compiled, tmp_path):
  c = compiled
  config = c["config"]
  path = tmp_path / "run.ckpt"
  algos.save_checkpoint(path, c["init"], config)
  lr = config.learning_rate if c["name"] != "param_cem" else config.init_std
  field = "learning_rate" if c["name"] != "param_cem" else "init_std"
  with pytest.raises(ValueError, match=f"`{field}` is {lr * 2}, the checkpoint's run had {lr}\\."):
    algos.load_checkpoint(path, config.replace(**{field: lr * 2}))
  steps = "num_updates" if c["name"] == "ppo" else "num_iterations"
  with pytest.raises(ValueError, match=f"`{steps}`"):
    algos.load_checkpoint(path, config.replace(**{steps: 6}))
  with pytest.raises(ValueError, match="`config` is a NESConfig"):
    algos.load_checkpoint(path, algos.NESConfig())


def test_bad_pieces_and_checkpoint_inputs_raise(tmp_path):
  config = CONFIGS["es"]
  train = algos.make_train(config)
  state = train.init(jax.random.key(0))
  with pytest.raises(ValueError, match="`num_iterations` must be an integer in \\[1, 5\\]"):
    train.run(state, 6)
  with pytest.raises(ValueError, match="`num_iterations`"):
    train.run(state, 0)
  with pytest.raises(TypeError, match="`state`"):
    train.run(state.carry, 1)
  with pytest.raises(ValueError, match="`state` does not come from the trainer of `config`"):
    algos.save_checkpoint(tmp_path / "x", state, CONFIGS["reinforce"])
  (tmp_path / "junk").write_bytes(b"\x80")
  with pytest.raises(ValueError, match="not a pgjax.algos checkpoint"):
    algos.load_checkpoint(tmp_path / "junk", config)
  with pytest.raises(ValueError, match="`log_every`"):
    algos.make_train(config, callback=print, log_every=0)
  with pytest.raises(TypeError, match="`callback`"):
    algos.make_train(config, callback=3)


def _toy_trainer(num_iterations=7, eval_every=3, key_stream="joint"):
  """A trainer whose iteration adds a uniform draw to a counter: every key and evaluation is visible."""

  def setup(key):
    k_init, k_loop = jax.random.split(key)
    return (jax.random.uniform(k_init), jnp.zeros((), jnp.int32)), k_loop, update

  def update(carry, k):
    total, count = carry
    u = jax.random.uniform(k)
    return (total + u, count + 1), (u, count)

  metrics = lambda m, evals: algos.PPOMetrics(*m, *(jnp.zeros_like(m[0]),) * 5, eval_return=evals)
  evaluate = lambda k, carry: carry[0] + 10.0 * carry[1] + jax.random.uniform(k)
  return algos.Trainer(setup, num_iterations=num_iterations, metrics=metrics, params=lambda c: c[0],
                       evaluate=evaluate, eval_every=eval_every, key_stream=key_stream)


@pytest.mark.parametrize("key_stream,splits", [("joint", [(1, 4, 7)]), ("separate", [(5, 6, 7)])])
def test_split_runs_reproduce_the_whole_run(key_stream, splits):
  """Splits of 7 iterations into 2 or 3 pieces (cutting evaluation blocks, pieces of 1), with evaluations
  every 3 (after iterations 3, 6, 7), reproduce the run in one go; its keys are the documented stream."""
  trainer = _toy_trainer(key_stream=key_stream)
  key = jax.random.key(1)
  params, whole = trainer(key)
  # the evaluation keys and times (iteration counts 3, 6, 7) are those of the documented key stream
  n, e = 7, 3
  if key_stream == "joint":
    keys = jax.random.split(jax.random.split(key)[1], n + e)
    it_keys, ev_keys = keys[:n], keys[n:]
  else:
    k_it, k_ev = jax.random.split(jax.random.split(key)[1])
    it_keys, ev_keys = jax.random.split(k_it, n), jax.random.split(k_ev, e)
  u = jax.vmap(jax.random.uniform)(it_keys)
  np.testing.assert_array_equal(whole.episode_return, u)
  u0 = jax.random.uniform(jax.random.split(key)[0])
  expected_evals = [u0 + np.sum(u[:c]) + 10.0 * c + jax.random.uniform(ev_keys[j]) for j, c in enumerate((3, 6, 7))]
  np.testing.assert_allclose(whole.eval_return, np.asarray(expected_evals, np.float32), rtol=1e-6)
  for cuts in splits:  # pieces 1+3+3 (each cutting an evaluation block) or 5+1+1
    state, parts, prev = trainer.init(key), [], 0
    for cut in cuts:
      state, m = trainer.run(state, cut - prev)
      parts.append(m)
      prev = cut
    _assert_identical(trainer.params(state), params)
    _assert_identical(algos.concatenate_metrics(parts), whole)


@pytest.mark.parametrize("compiled", ["reinforce"], indirect=True)  # the callback is the shared loop's
def test_callback_is_called_once_per_logged_iteration_under_jit_vmap(compiled):
  c = compiled
  calls = []
  train = algos.make_train(c["config"], callback=lambda i, m: calls.append((i, m)), log_every=2)
  final, metrics = jax.jit(jax.vmap(train.run))(c["init"])
  jax.effects_barrier()
  assert [i for i, _ in calls] == [1, 3, 4]  # every 2nd iteration and the last of 5
  for i, m in calls:
    assert set(m) == set(algos.ReinforceMetrics._fields) - {"eval_return"}
    for name, value in m.items():
      assert value.shape == (NUM_SEEDS,)
      np.testing.assert_array_equal(value, np.asarray(getattr(metrics, name))[:, i])
  _assert_identical((final, metrics), c["whole"])


def test_callback_under_nested_vmap_and_progress_bar():
  trainer = _toy_trainer(num_iterations=5, eval_every=None)
  calls = []
  logged = trainer.with_callback(lambda i, m: calls.append((i, m["episode_return"])), log_every=3)
  keys = jax.random.split(jax.random.key(0), (2, 3))
  _, metrics = jax.jit(jax.vmap(jax.vmap(logged)))(keys)
  jax.effects_barrier()
  assert [i for i, _ in calls] == [2, 4]
  for i, value in calls:
    np.testing.assert_array_equal(value, np.asarray(metrics.episode_return)[:, :, i])  # [2, 3]: both axes
  out = io.StringIO()
  bar = algos.ProgressBar(5, file=out, mininterval=0)
  jax.block_until_ready(jax.jit(trainer.with_callback(bar, log_every=2))(jax.random.key(0)))
  jax.effects_barrier()
  assert bar._bar.n == 5 and "5/5" in out.getvalue() and "episode_return=" in out.getvalue()


@pytest.mark.parametrize("make_keys", [
    lambda: jax.random.PRNGKey(5),
    lambda: jax.random.split(jax.random.PRNGKey(5), 3),
    lambda: jax.random.split(jax.random.key(5), (2, 2)),
], ids=["raw_key", "raw_keys_batch", "typed_keys_2d_batch"])
def test_checkpoint_round_trip_of_raw_and_typed_key_batches(make_keys, tmp_path):
  config = CONFIGS["es"]
  train = algos.make_train(config)
  keys = make_keys()
  init = train.init
  for _ in range(keys.ndim - (0 if jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key) else 1)):
    init = jax.vmap(init)
  state = init(keys)
  algos.save_checkpoint(tmp_path / "s.ckpt", state, config)
  loaded = algos.load_checkpoint(tmp_path / "s.ckpt", config)
  _assert_identical(loaded, state)
  assert loaded.key.dtype == state.key.dtype
