r"""Seed 004: the cross-entropy method on CartPole — episode-CEM (elite episodes, cross-entropy fit) and
parameter-CEM, return curves over seeds and iterations to solve.

Episode-CEM in the book's setting (M. Lapan, *Deep RL Hands-On*, ch. 4): 16 episodes per iteration,
keep the top 30% (the 70th percentile), one hidden layer of 128 units, Adam 0.01, one gradient step on
the elite's (observation, action) pairs per iteration. The book solves the 200-step CartPole-v0 (mean
return > 199) in about 40 iterations; here it is run on gymnax's CartPole with max_steps_in_episode=200
("v0") and on CartPole-v1 (500 steps, solved at mean >= 475). Parameter-CEM (pgjax.cem on the weights
of a 16-unit MLP, deterministic policy, population 32, top 20%, decaying noise floor) for comparison.

Everything is one jitted vmap over seeds per configuration (pgjax.algos.make_train).

Run: python experiments/cem_cartpole.py [--quick] [--out results]
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

# jaxlib 0.10.2 CPU: large jitted vmaps of training loops can deadlock under XLA's concurrency-optimised
# scheduler (see pgjax.algos); turn it off before jax is imported.
if "xla_cpu_enable_concurrency_optimized_scheduler" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()

import gymnax  # noqa: E402
import jax  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _common import Claim, parse_args, save_results  # noqa: E402
from pgjax import algos  # noqa: E402


def iterations_to(curve, threshold):
  """First iteration (1-based count of iterations done) whose mean return reaches ``threshold``; nan if never."""
  hit = curve >= threshold
  return np.where(hit.any(1), hit.argmax(1) + 1, np.nan)


def main():
  args = parse_args(__doc__.splitlines()[0])
  started = time.time()
  num_seeds = 16 if args.quick else 64
  iters = 60 if args.quick else 150
  env, v1_params = gymnax.make("CartPole-v1")
  v0_params = v1_params.replace(max_steps_in_episode=200)
  keys = jax.random.split(jax.random.key(args.seed), num_seeds)

  runs = {
      "episode_cem_v0": (algos.EpisodeCEMConfig(env=env, env_params=v0_params, num_steps=200,
                                                num_iterations=iters, num_episodes=16, elite_fraction=0.3,
                                                hidden_sizes=(128,), learning_rate=0.01, num_epochs=1), 199.0),
      "episode_cem_v1": (algos.EpisodeCEMConfig(env=env, env_params=v1_params, num_steps=500,
                                                num_iterations=iters, num_episodes=16, elite_fraction=0.3,
                                                hidden_sizes=(128,), learning_rate=0.01, num_epochs=1), 475.0),
      "param_cem_v1": (algos.ParamCEMConfig(env=env, env_params=v1_params, num_steps=500,
                                            num_iterations=min(iters, 40), population_size=32,
                                            elite_fraction=0.2), 475.0),
  }
  curves, summary = {}, {}
  for name, (config, threshold) in runs.items():
    t = time.time()
    _, metrics = jax.jit(jax.vmap(algos.make_train(config)))(keys)
    curve = np.asarray(metrics.episode_return)
    curves[name] = curve
    its = iterations_to(curve, threshold)
    solved = np.isfinite(its)
    summary[name] = dict(threshold=threshold, fraction_solved=float(solved.mean()),
                         median_iterations=float(np.nanmedian(its)) if solved.any() else None,
                         iterations_q25_q75=[float(np.nanpercentile(its, 25)), float(np.nanpercentile(its, 75))]
                         if solved.any() else None,
                         final_mean_return=float(curve[:, -5:].mean()), seconds=round(time.time() - t, 1))
    print(name, summary[name], flush=True)

  fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4))
  for ax, (name, (_, threshold)) in zip(axes, runs.items()):
    c = curves[name]
    x = np.arange(1, c.shape[1] + 1)
    for row in c:
      ax.plot(x, row, color="0.8", lw=0.5)
    ax.plot(x, c.mean(0), color="C0", label="mean over seeds")
    ax.plot(x, np.median(c, 0), color="C1", label="median")
    ax.axhline(threshold, color="k", ls="--", lw=0.8, label=f"solved ({threshold:g})")
    ax.set_title(name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean episode return of the batch")
  axes[0].legend()
  fig.suptitle(f"Cross-entropy method on CartPole ({num_seeds} seeds)")
  fig.tight_layout()
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "cem_cartpole.png")
  fig.savefig(path, dpi=120)

  s0, s1, sp = summary["episode_cem_v0"], summary["episode_cem_v1"], summary["param_cem_v1"]
  claims = [
      Claim("episode-CEM, 200-step CartPole (book setting): median iterations to mean return > 199",
            s0["median_iterations"], "reported; book: about 40", s0["median_iterations"] is not None),
      Claim("episode-CEM, 200-step CartPole: fraction of seeds solved within the budget", s0["fraction_solved"],
            ">= 0.9", s0["fraction_solved"] >= 0.9),
      Claim("episode-CEM, CartPole-v1: median iterations to mean return >= 475", s1["median_iterations"],
            "reported", s1["median_iterations"] is not None),
      Claim("parameter-CEM, CartPole-v1: median generations to population mean >= 475", sp["median_iterations"],
            "reported", sp["median_iterations"] is not None),
  ]
  save_results("cem_cartpole", args, claims=claims,
               data={"summary": summary, "curves_mean": {k: v.mean(0) for k, v in curves.items()},
                     "curves_median": {k: np.median(v, 0) for k, v in curves.items()}, "num_seeds": num_seeds},
               figures=[path], started=started)


if __name__ == "__main__":
  main()
