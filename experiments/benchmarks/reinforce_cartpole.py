r"""Env-steps/s of ``jax.vmap(train)`` over many seeds: pgjax.algos REINFORCE vs a plain PureJaxRL-style one.

The reference is a single-file REINFORCE written plainly with gymnax + flax + optax in the PureJaxRL
style (``make_train(config) -> train(key)``, ``lax.scan`` over steps and iterations, ``vmap`` over
environments): same MLP (64-64 tanh, orthogonal init), same batch (``num_envs`` environments x
``num_steps`` steps from a fresh reset each iteration), same loss (reward-to-go with a per-step
leave-one-out baseline, normalised, sum over time / T), same Adam + global-norm clipping. The pgjax
side is ``pgjax.algos.make_train(pgjax.algos.ReinforceConfig(...))``.

Both are run as ``jax.jit(jax.vmap(train))(keys)`` over S seeds (``--chunk-size C`` instead runs
``lax.map(train, keys, batch_size=C)``: C seeds at a time, memory bounded by one chunk). Timings: each
variant compiled first, then timed interleaved (every repeat runs every variant once), median over
repeats; the machine is shared, so only the ratio measured in one run means anything. Peak memory is
XLA's compiled temporary-buffer size (``compiled.memory_analysis()``), deterministic for a given build.

Run: ``python -m experiments.benchmarks.reinforce_cartpole [--quick] [--seeds S] [--chunk-size C]``;
writes ``results/benchmarks/reinforce_cartpole.json``.
"""

from __future__ import annotations

import math
import os
import time

# XLA CPU pitfall measured here (jax/jaxlib 0.10.2): with its concurrency-optimised scheduler, the jitted vmap
# of either REINFORCE over >= 128 seeds (>= 512 environments) never finishes -- every thread idles on a futex
# after compilation (64 seeds run fine); the reference alone hangs too, and dropping optax.clip_by_global_norm
# from it avoids the hang, so it is a scheduling deadlock, not the model. The ``experiments`` package turns
# that scheduler off before jax is imported (experiments/__init__.py); both variants run under the same flags.
import distrax
import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments._common import Claim, ge, le, parse_args, save_results
from pgjax import algos


# ---------------------------------------------------------------------------------------------------
# The plain reference, PureJaxRL style (written without pgjax).

class ActorMLP(nn.Module):
  action_dim: int

  @nn.compact
  def __call__(self, x):
    for _ in range(2):
      x = nn.tanh(nn.Dense(64, kernel_init=nn.initializers.orthogonal(math.sqrt(2)))(x))
    return nn.Dense(self.action_dim, kernel_init=nn.initializers.orthogonal(0.01))(x)


def make_train_reference(config):
  env, env_params = gymnax.make("CartPole-v1")
  network = ActorMLP(env.action_space(env_params).n)
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(config["LR"]))
  n, t_len = config["NUM_ENVS"], config["NUM_STEPS"]

  def train(rng):
    rng, init_rng = jax.random.split(rng)
    params = network.init(init_rng, jnp.zeros(env.observation_space(env_params).shape))
    opt_state = tx.init(params)

    def update(runner, rng):
      params, opt_state = runner
      rng, reset_rng = jax.random.split(rng)
      obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(reset_rng, n), env_params)

      def env_step(carry, rng):
        obs, env_state = carry
        rng_act, rng_step = jax.random.split(rng)
        pi = distrax.Categorical(logits=network.apply(params, obs))
        action = pi.sample(seed=rng_act)
        obs2, env_state, reward, term, trunc, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(rng_step, n), env_state, action, env_params)
        return (obs2, env_state), (obs, action, reward, jnp.logical_or(term, trunc))

      _, (obs_b, act_b, rew_b, done_b) = jax.lax.scan(env_step, (obs, env_state), jax.random.split(rng, t_len))

      def rtg(g, x):
        r, d = x
        g = r + (1.0 - d) * g
        return g, g

      _, ret = jax.lax.scan(rtg, jnp.zeros(n), (rew_b, done_b.astype(jnp.float32)), reverse=True)
      adv = ret - (ret.sum(1, keepdims=True) - ret) / (n - 1)
      adv = adv / (adv.std() + 1e-8)

      def loss_fn(p):
        logp = distrax.Categorical(logits=network.apply(p, obs_b)).log_prob(act_b)
        return -(logp * adv).sum(0).mean() / t_len

      grads = jax.grad(loss_fn)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      first = (jnp.cumsum(done_b, 0) - done_b) == 0
      return (params, opt_state), jnp.mean(jnp.sum(jnp.where(first, rew_b, 0.0), 0))

    (params, _), returns = jax.lax.scan(update, (params, opt_state), jax.random.split(rng, config["NUM_UPDATES"]))
    return params, returns

  return train


# ---------------------------------------------------------------------------------------------------

def build(train, keys, chunk_size):
  if chunk_size:
    fn = jax.jit(lambda k: jax.lax.map(train, k, batch_size=chunk_size))
  else:
    fn = jax.jit(jax.vmap(train))
  compiled = fn.lower(keys).compile()
  mem = compiled.memory_analysis()
  temp = None if mem is None else int(mem.temp_size_in_bytes)
  return compiled, temp


def main(argv=None):
  def extra(p):
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--chunk-size", type=int, default=0, help="seeds per lax.map chunk (0: one vmap)")
    p.add_argument("--repeats", type=int, default=None)
  args = parse_args(__doc__.splitlines()[0], argv, extra=extra)
  started = time.time()
  seeds = args.seeds or (64 if args.quick else 1024)
  repeats = args.repeats or (3 if args.quick else 5)
  num_envs, num_steps, num_updates, lr = 4, 500, 2, 0.01
  keys = jax.random.split(jax.random.key(args.seed), seeds)

  ref = make_train_reference({"NUM_ENVS": num_envs, "NUM_STEPS": num_steps, "NUM_UPDATES": num_updates, "LR": lr})
  cfg = algos.ReinforceConfig(env="CartPole-v1", num_envs=num_envs, num_steps=num_steps,
                              num_iterations=num_updates, learning_rate=lr, hidden_sizes=(64, 64),
                              baseline="leave_one_out", normalize_advantages=True, max_grad_norm=1.0)
  variants = {"reference": ref, "pgjax": algos.make_train(cfg)}
  chunk = args.chunk_size if args.chunk_size and args.chunk_size < seeds else 0
  compiled, temp = {}, {}
  for name, train in variants.items():
    t = time.time()
    compiled[name], temp[name] = build(train, keys, chunk)
    print(f"compiled {name} in {time.time() - t:.1f}s; temp buffers {temp[name]} bytes", flush=True)

  # sanity: both learn the same problem (mean first-episode return per iteration, averaged over seeds)
  def returns_of(out):
    metrics = out[1]
    return np.asarray(getattr(metrics, "episode_return", metrics))

  curves = {name: returns_of(jax.block_until_ready(compiled[name](keys))) for name in variants}
  times = {name: [] for name in variants}
  for _ in range(repeats):
    for name in variants:  # interleaved
      t = time.perf_counter()
      jax.block_until_ready(compiled[name](keys))
      times[name].append(time.perf_counter() - t)
  steps = seeds * num_updates * num_envs * num_steps
  med = {name: float(np.median(v)) for name, v in times.items()}
  sps = {name: steps / med[name] for name in variants}
  ratio = sps["pgjax"] / sps["reference"]
  for name in variants:
    print(f"{name:10s} median {med[name]:.3f}s  {sps[name] / 1e6:.3f} M env-steps/s  "
          f"temp {temp[name] and temp[name] / 2**20:.1f} MiB  returns/iter {curves[name].mean(0).round(1)}")
  print(f"ratio pgjax / reference env-steps/s = {ratio:.3f} (seeds {seeds}, chunk {chunk or 'none'})")
  mem_ratio = None if not (temp["pgjax"] and temp["reference"]) else temp["pgjax"] / temp["reference"]
  claims = [Claim(f"pgjax REINFORCE env-steps/s / plain PureJaxRL-style ({seeds} seeds, chunk {chunk or 'none'})",
                  ratio, ge(0.95)),
            Claim("pgjax temp memory / reference temp memory (XLA memory_analysis)", mem_ratio, le(1.1))]
  args.out = os.path.join(args.out, "benchmarks")
  save_results("reinforce_cartpole", args, claims=claims,
               data={"xla_flags": os.environ.get("XLA_FLAGS", ""), "seeds": seeds, "chunk_size": chunk, "num_envs": num_envs, "num_steps": num_steps,
                     "num_updates": num_updates, "env_steps_per_call": steps, "median_seconds": med,
                     "raw_seconds": times, "env_steps_per_second": sps, "ratio": ratio,
                     "temp_bytes": temp, "mean_return_per_iteration": {k: v.mean(0) for k, v in curves.items()}},
               started=started)


if __name__ == "__main__":
  main()
