"""pgjax's PPO against a single-file PureJaxRL-style PPO on CartPole-v1, side by side in one run.

Both use the same hyperparameters (PureJaxRL's CartPole settings: 4 envs x 128 steps, 4 epochs x 4
minibatches, Adam 2.5e-4 annealed, clip 0.2, GAE 0.95, gamma 0.99, entropy 0.01, value 0.5, grad norm 0.5,
separate 64-64 tanh actor and critic), the same number of seeds (``jit(vmap)`` over seeds), compiled once and
timed after a warm-up. Reported: the final training return (mean return of the episodes that ended in the last
10 updates, per seed) with a 95% CI over seeds for each implementation and for their difference, and the
environment-steps-per-second ratio pgjax / reference (median of interleaved repeats).

The reference is written from PureJaxRL's ``ppo.py`` structure (Lu et al. 2022), not imported: rollout with
``env.step`` vmapped over environments inside ``lax.scan``, values computed during the rollout, GAE by a reverse
scan, the update epochs and minibatches in nested scans.

    python -m experiments.benchmarks.ppo_cartpole [--quick] [--seeds 64] [--out results]
"""

from __future__ import annotations

import os
import math
import time

import distrax
import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pgjax
from experiments._common import Claim, Measurement, ci_contains, ge, parse_args, save_results

CFG = dict(num_envs=4, num_steps=128, num_epochs=4, num_minibatches=4, lr=2.5e-4, gamma=0.99, lam=0.95,
           clip=0.2, ent=0.01, vf=0.5, max_grad_norm=0.5)


class _Net(nn.Module):
  num_actions: int

  @nn.compact
  def __call__(self, x):
    ortho = nn.initializers.orthogonal
    a = nn.tanh(nn.Dense(64, kernel_init=ortho(math.sqrt(2)))(x))
    a = nn.tanh(nn.Dense(64, kernel_init=ortho(math.sqrt(2)))(a))
    logits = nn.Dense(self.num_actions, kernel_init=ortho(0.01))(a)
    c = nn.tanh(nn.Dense(64, kernel_init=ortho(math.sqrt(2)))(x))
    c = nn.tanh(nn.Dense(64, kernel_init=ortho(math.sqrt(2)))(c))
    return logits, nn.Dense(1, kernel_init=ortho(1.0))(c)[..., 0]


def make_reference_train(num_updates):
  env, env_params = gymnax.make("CartPole-v1")
  net = _Net(env.action_space(env_params).n)
  n_env, n_step, n_mb, n_ep = CFG["num_envs"], CFG["num_steps"], CFG["num_minibatches"], CFG["num_epochs"]
  batch = n_env * n_step
  sched = lambda count: CFG["lr"] * (1.0 - (count // (n_mb * n_ep)) / num_updates)
  tx = optax.chain(optax.clip_by_global_norm(CFG["max_grad_norm"]), optax.adam(sched, eps=1e-5))

  def train(key):
    key, k_init, k_reset = jax.random.split(key, 3)
    params = net.init(k_init, jnp.zeros((4,)))
    opt_state = tx.init(params)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, n_env), env_params)

    def update(carry, _):
      params, opt_state, env_state, obs, ep_ret, key = carry

      def env_step(c, _):
        env_state, obs, ep_ret, key = c
        key, k_act, k_step = jax.random.split(key, 3)
        logits, value = net.apply(params, obs)
        pi = distrax.Categorical(logits=logits)
        action = pi.sample(seed=k_act)
        logp = pi.log_prob(action)
        obs2, env_state, reward, term, trunc, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(k_step, n_env), env_state, action, env_params)
        done = jnp.logical_or(term, trunc)
        ep_ret = ep_ret + reward
        finished = jnp.where(done, ep_ret, 0.0)
        ep_ret = jnp.where(done, 0.0, ep_ret)
        return (env_state, obs2, ep_ret, key), (obs, action, reward, done, logp, value, finished)

      (env_state, obs, ep_ret, key), traj = jax.lax.scan(env_step, (env_state, obs, ep_ret, key), None, n_step)
      t_obs, t_act, t_rew, t_done, t_logp, t_val, t_fin = traj
      _, last_val = net.apply(params, obs)

      def gae_step(c, x):
        adv, next_val = c
        done, value, reward = x
        delta = reward + CFG["gamma"] * next_val * (1 - done) - value
        adv = delta + CFG["gamma"] * CFG["lam"] * (1 - done) * adv
        return (adv, value), adv

      _, advs = jax.lax.scan(gae_step, (jnp.zeros_like(last_val), last_val), (t_done, t_val, t_rew),
                             reverse=True)
      targets = advs + t_val

      def epoch(c, _):
        params, opt_state, key = c
        key, k_perm = jax.random.split(key)
        data = jax.tree.map(lambda x: x.reshape((batch,) + x.shape[2:]),
                            (t_obs, t_act, t_logp, t_val, advs, targets))
        perm = jax.random.permutation(k_perm, batch)
        data = jax.tree.map(lambda x: x[perm].reshape((n_mb, -1) + x.shape[1:]), data)

        def minibatch(c, mb):
          params, opt_state = c
          obs_b, act_b, logp_b, val_b, adv_b, tgt_b = mb

          def loss_fn(p):
            logits, value = net.apply(p, obs_b)
            pi = distrax.Categorical(logits=logits)
            logp = pi.log_prob(act_b)
            v_clip = val_b + jnp.clip(value - val_b, -CFG["clip"], CFG["clip"])
            v_loss = 0.5 * jnp.maximum(jnp.square(value - tgt_b), jnp.square(v_clip - tgt_b)).mean()
            ratio = jnp.exp(logp - logp_b)
            a = (adv_b - adv_b.mean()) / (adv_b.std() + 1e-8)
            actor = -jnp.minimum(ratio * a, jnp.clip(ratio, 1 - CFG["clip"], 1 + CFG["clip"]) * a).mean()
            return actor + CFG["vf"] * v_loss - CFG["ent"] * pi.entropy().mean()

          grads = jax.grad(loss_fn)(params)
          updates, opt_state = tx.update(grads, opt_state, params)
          return (optax.apply_updates(params, updates), opt_state), None

        (params, opt_state), _ = jax.lax.scan(minibatch, (params, opt_state), data)
        return (params, opt_state, key), None

      (params, opt_state, key), _ = jax.lax.scan(epoch, (params, opt_state, key), None, n_ep)
      n_done = jnp.sum(t_done)
      ret = jnp.where(n_done > 0, jnp.sum(t_fin) / jnp.maximum(n_done, 1), jnp.nan)
      return (params, opt_state, env_state, obs, ep_ret, key), ret

    carry = (params, opt_state, env_state, obs, jnp.zeros((n_env,)), key)
    _, returns = jax.lax.scan(update, carry, None, num_updates)
    return returns

  return train


def make_pgjax_train(num_updates):
  cfg = pgjax.algos.PPOConfig(num_updates=num_updates, num_envs=CFG["num_envs"], num_steps=CFG["num_steps"],
                              num_epochs=CFG["num_epochs"], num_minibatches=CFG["num_minibatches"],
                              learning_rate=CFG["lr"], bootstrap_truncation=False)   # as the reference
  train = pgjax.algos.make_train(cfg)
  return lambda key: train(key)[1].episode_return


def final_return(curves, last=10):
  return np.nanmean(np.asarray(curves)[:, -last:], axis=1)


def ci95(x):
  x = np.asarray(x, np.float64)
  return float(x.mean()), float(1.96 * x.std(ddof=1) / np.sqrt(len(x)))


def main(argv=None):
  started = time.time()
  args = parse_args(__doc__.splitlines()[0], argv, extra=lambda p: p.add_argument(
      "--seeds", type=int, default=None, help="seeds per implementation (default 64; 16 with --quick)"))
  args.out = os.path.join(args.out, "benchmarks")
  seeds = args.seeds or (16 if args.quick else 64)
  num_updates = 200 if args.quick else 976
  repeats = 2 if args.quick else 3
  keys = jax.random.split(jax.random.key(0), seeds)
  fns = {"pgjax": jax.jit(jax.vmap(make_pgjax_train(num_updates))),
         "reference": jax.jit(jax.vmap(make_reference_train(num_updates)))}
  curves = {name: np.asarray(fn(keys)) for name, fn in fns.items()}          # compile + results
  times = {name: [] for name in fns}
  for _ in range(repeats):                                                    # interleaved
    for name, fn in fns.items():
      t = time.perf_counter()
      jax.block_until_ready(fn(keys))
      times[name].append(time.perf_counter() - t)
  steps = seeds * num_updates * CFG["num_envs"] * CFG["num_steps"]
  finals = {name: final_return(c) for name, c in curves.items()}
  rate = {name: steps / float(np.median(t)) for name, t in times.items()}
  diff = finals["pgjax"] - finals["reference"]
  half = float(1.96 * np.sqrt(finals["pgjax"].var(ddof=1) / seeds + finals["reference"].var(ddof=1) / seeds))
  tag = f"CartPole-v1, {num_updates} updates x {CFG['num_envs'] * CFG['num_steps']} steps, {seeds} seeds"
  claims = [
      Claim(f"{tag}: final training return, pgjax PPO - reference PPO (mean of the last 10 updates per seed)",
            [round(float(diff.mean()), 2), round(half, 2)], ci_contains(0.0)),
      Claim(f"{tag}: env steps per second, pgjax / reference (median of {repeats} interleaved runs)",
            round(rate["pgjax"] / rate["reference"], 3), ge(0.95)),
  ]
  measurements = [
      Measurement(f"{tag}: final training return (mean, 95% CI half-width)", {n: ci95(v) for n, v in finals.items()}),
      Measurement(f"{tag}: fraction of seeds with final return >= 475",
                  {n: float(np.mean(v >= 475)) for n, v in finals.items()}),
      Measurement(f"{tag}: env steps per second", {n: round(v) for n, v in rate.items()}),
  ]
  print({"finals": {n: ci95(v) for n, v in finals.items()}, "rate": rate}, flush=True)
  save_results("ppo_cartpole", args, claims=claims, measurements=measurements,
               data={"config": CFG, "seeds": seeds, "num_updates": num_updates, "times": times,
                     "final_returns": {n: v.tolist() for n, v in finals.items()}}, started=started)


if __name__ == "__main__":
  main()
