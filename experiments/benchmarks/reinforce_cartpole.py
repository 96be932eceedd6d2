r"""Env-steps/s of ``jax.vmap(train)`` over many seeds: pgjax.algos REINFORCE vs a plain PureJaxRL-style one.

The reference is a single-file REINFORCE written plainly with gymnax + flax + optax in the PureJaxRL
style (``make_train(config) -> train(key)``, ``lax.scan`` over steps and iterations, ``vmap`` over
environments): same MLP (64-64 tanh, orthogonal init), same batch (``num_envs`` environments x
``num_steps`` steps from a fresh reset each iteration), same loss (reward-to-go with a per-step
leave-one-out baseline, normalised, sum over time / T), same Adam + global-norm clipping. The pgjax
side is ``pgjax.algos.make_train(pgjax.algos.ReinforceConfig(...))``.

Both are run as ``jax.jit(jax.vmap(train))(keys)`` over S seeds (``--chunk-size C`` instead runs
``lax.map(train, keys, batch_size=C)``: C seeds at a time, memory bounded by one chunk). Timings: each
variant compiled first, then timed interleaved (every repeat runs every variant once, in an order that
rotates between repeats), median over repeats; the machine is shared, so only the ratio measured in one
run means anything. Peak memory is XLA's compiled temporary-buffer size (``compiled.memory_analysis()``),
deterministic for a given build.

**Noise floor.** A second copy of the reference (built and compiled separately, the same program) is timed
in the same interleaved loop; ``reference copy / reference`` is what the ratio reads when there is no
difference at all, so a pgjax ratio inside that band is noise, one outside it a real gap. Ratios are
reported from the medians of wall-clock time and of process CPU time (all threads; less sensitive to other
processes on a loaded machine), and as the median of per-repeat paired ratios.

**Random-number work.** Both programs spend a large share of their time in threefry (JAX's default PRNG;
on CPU each call is a small rolled loop of its own). The benchmark counts, from the jaxprs, the threefry
2x32 blocks evaluated per environment step inside the rollout loop and per seed outside it
(``random_split`` / ``random_fold_in``: one block per new key; ``random_bits``: one per 64 bits). A split
inside the loop runs once per step on a handful of keys, where its fixed cost dominates; the same keys
split before the loop are one large vectorised call (cheaper in all, though at many seeds it is bound by
memory traffic: its cost per block grows with the number of keys).

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
import jax.extend.core  # noqa: F401  (jaxprs_in_params)
import jax.numpy as jnp
import numpy as np
import optax
from jax._src.interpreters import partial_eval as pe  # dce_jaxpr: no public equivalent

from experiments._common import Claim, Measurement, ge, le, parse_args, save_results
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

_RNG_PRIMITIVES = ("random_bits", "random_split", "random_fold_in")


def rng_blocks(train, num_steps, num_envs):
  """Threefry 2x32 blocks of one seed's ``train``: (per environment step inside the rollout loop, outside).

  The rollout loop is any ``scan`` of length ``num_steps`` (the reward-to-go scan has no random numbers);
  blocks outside it are multiplied by the lengths of the scans around them (the iterations).
  """
  inner = outer = 0.0

  def walk(jaxpr, in_loop, mult):
    nonlocal inner, outer
    for eqn in jaxpr.eqns:
      name = eqn.primitive.name
      if name in _RNG_PRIMITIVES:
        aval = eqn.outvars[0].aval
        n = float(np.prod(aval.shape))
        if name == "random_bits":
          n *= np.dtype(aval.dtype).itemsize / 8  # two 32-bit words per block
        if in_loop:
          inner += n
        else:
          outer += n * mult
      loop = name == "scan" and eqn.params["length"] == num_steps
      inner_mult = mult * (eqn.params["length"] if name == "scan" and not loop else 1)
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub, in_loop or loop, inner_mult)

  jaxpr = jax.make_jaxpr(train)(jax.random.key(0)).jaxpr
  jaxpr, _ = pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars))  # what XLA also removes: unused values
  walk(jaxpr, False, 1.0)
  return inner / num_envs, outer


def build(train, keys, chunk_size):
  if chunk_size:
    fn = jax.jit(lambda k: jax.lax.map(train, k, batch_size=chunk_size))
  else:
    fn = jax.jit(jax.vmap(train))
  compiled = fn.lower(keys).compile()
  mem = compiled.memory_analysis()
  temp = None if mem is None else int(mem.temp_size_in_bytes)
  return compiled, temp


def time_interleaved(compiled, keys, repeats):
  """Wall-clock and process-CPU seconds of every variant per repeat; the order rotates between repeats."""
  names = list(compiled)
  wall = {name: [] for name in names}
  cpu = {name: [] for name in names}
  for r in range(repeats):
    for name in names[r % len(names):] + names[:r % len(names)]:
      c0, t0 = time.process_time(), time.perf_counter()
      jax.block_until_ready(compiled[name](keys))
      wall[name].append(time.perf_counter() - t0)
      cpu[name].append(time.process_time() - c0)
  return wall, cpu


def paired_ratios(wall, cpu, name):
  """``name``'s env-steps/s relative to the reference: from medians, and per repeat (same repeat paired)."""
  paired = np.asarray(wall["reference"]) / np.asarray(wall[name])
  return {"wall_median": float(np.median(wall["reference"]) / np.median(wall[name])),
          "cpu_median": float(np.median(cpu["reference"]) / np.median(cpu[name])),
          "paired_wall": float(np.median(paired)), "paired_wall_min": float(paired.min()),
          "paired_wall_max": float(paired.max())}


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
  ref_copy = make_train_reference({"NUM_ENVS": num_envs, "NUM_STEPS": num_steps, "NUM_UPDATES": num_updates,
                                   "LR": lr})
  variants = {"reference": ref, "reference_copy": ref_copy, "pgjax": algos.make_train(cfg)}
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

  rng = {name: rng_blocks(variants[name], num_steps, num_envs) for name in ("reference", "pgjax")}
  for name, (per_step, outside) in rng.items():
    print(f"{name:14s} threefry blocks: {per_step:.1f} per environment step inside the rollout loop, "
          f"{outside:.0f} per seed outside it", flush=True)
  curves = {name: returns_of(jax.block_until_ready(compiled[name](keys))) for name in variants}
  wall, cpu = time_interleaved(compiled, keys, repeats)
  steps = seeds * num_updates * num_envs * num_steps
  med = {name: float(np.median(v)) for name, v in wall.items()}
  sps = {name: steps / med[name] for name in variants}
  ratios = {name: paired_ratios(wall, cpu, name) for name in ("pgjax", "reference_copy")}
  for name in variants:
    print(f"{name:14s} median {med[name]:.3f}s (CPU {np.median(cpu[name]):.3f}s)  {sps[name] / 1e6:.3f} M "
          f"env-steps/s  temp {temp[name] and temp[name] / 2**20:.1f} MiB  returns/iter "
          f"{curves[name].mean(0).round(1)}")
  print(f"seeds {seeds}, chunk {chunk or 'none'}, {repeats} repeats; env-steps/s relative to the reference:")
  for name, r in ratios.items():
    print(f"  {name:14s} wall {r['wall_median']:.3f}  CPU {r['cpu_median']:.3f}  "
          f"paired wall {r['paired_wall']:.3f} (range {r['paired_wall_min']:.3f}-{r['paired_wall_max']:.3f})")
  ratio = ratios["pgjax"]["wall_median"]
  mem_ratio = None if not (temp["pgjax"] and temp["reference"]) else temp["pgjax"] / temp["reference"]
  setting = f"{seeds} seeds, chunk {chunk or 'none'}"
  claims = [Claim(f"pgjax REINFORCE env-steps/s / plain PureJaxRL-style ({setting}, wall-clock medians)",
                  round(ratio, 3), ge(0.97)),
            Claim("pgjax temp memory / reference temp memory (XLA memory_analysis)", mem_ratio, le(1.1))]
  measurements = [Measurement(f"{name}: env-steps/s relative to the reference ({setting}), {kind}",
                              round(r[kind], 3), note)
                  for name, r in ratios.items()
                  for kind, note in (("cpu_median", "process CPU-time medians"),
                                     ("paired_wall", "median of per-repeat paired wall-clock ratios"))]
  for name, (per_step, outside) in rng.items():
    measurements.append(Measurement(f"{name}: threefry blocks per environment step inside the rollout loop",
                                    per_step, f"{outside:.0f} per seed outside the loop (from the jaxpr)"))
  measurements.append(Measurement(f"noise floor: reference copy / reference env-steps/s ({setting}, "
                                  "wall-clock medians)", round(ratios["reference_copy"]["wall_median"], 3),
                                  "two separately compiled copies of the same program"))
  args.out = os.path.join(args.out, "benchmarks")
  save_results("reinforce_cartpole", args, claims=claims, measurements=measurements,
               data={"xla_flags": os.environ.get("XLA_FLAGS", ""), "seeds": seeds, "chunk_size": chunk,
                     "num_envs": num_envs, "num_steps": num_steps, "num_updates": num_updates,
                     "env_steps_per_call": steps, "median_seconds": med, "raw_seconds": wall,
                     "raw_cpu_seconds": cpu, "env_steps_per_second": sps, "ratios": ratios, "threefry_blocks": rng,
                     "load_average": os.getloadavg(), "temp_bytes": temp,
                     "mean_return_per_iteration": {k: v.mean(0) for k, v in curves.items()}},
               started=started)


if __name__ == "__main__":
  main()
