r"""The cross-entropy method on CartPole: episode-CEM (elite episodes, cross-entropy fit) and parameter-CEM,
return curves over seeds and iterations to solve.

Episode-CEM in the book's setting (M. Lapan, *Deep Reinforcement Learning Hands-On*, 2018, ch. 4): 16
episodes per iteration, keep the top 30% (the 70th percentile), one hidden layer of 128 units, Adam 0.01,
one gradient step on the elite's (observation, action) pairs per iteration. The book solves the 200-step
CartPole-v0 (mean return > 199) in about 40 iterations; here it runs on gymnax's CartPole with
``max_steps_in_episode=200`` ("v0") and on CartPole-v1 (500 steps, solved at a mean >= 475). Parameter-CEM
(``pgjax.cem`` on the weights of a 16-unit MLP, deterministic policy, population 32, top 20%, decaying noise
floor) for comparison. An iteration is solved when the mean return of its batch (the 16 episodes, or the
32 members) reaches the threshold; a seed that never does counts as budget + 1 iterations (in the paired comparison, the larger budget + 1).

Everything is one jitted vmap over seeds per configuration (``pgjax.algos.make_train``).

Run: ``python -m experiments.cem_cartpole [--quick] [--out results]``.
"""

from __future__ import annotations

import time

import gymnax
import jax
import numpy as np

from experiments import _common as C
from pgjax import algos

NAME = "cem_cartpole"
EPISODES = {"episode_cem_v0": 16, "episode_cem_v1": 16, "param_cem_v1": 32}  # episodes per iteration

CLAIMS = {
    "v0_median": C.ClaimSpec("episode-CEM, 200-step CartPole (book setting): median iterations to a batch mean "
                             "return > 199 (book: about 40)", C.le(40)),
    "v0_solved": C.ClaimSpec("episode-CEM, 200-step CartPole: fraction of seeds solved within the budget "
                             "(60 iterations quick, 150 full)", C.ge(0.9)),
    "v1_median": C.ClaimSpec("episode-CEM, CartPole-v1: median iterations to a batch mean return >= 475",
                             C.le(50)),
    "p1_median": C.ClaimSpec("parameter-CEM, CartPole-v1: median generations to a population mean >= 475",
                             C.le(30)),
    "v1_solved": C.ClaimSpec("{which}, CartPole-v1: fraction of seeds solved within the budget", C.ge(0.9)),
    "paired": C.ClaimSpec("CartPole-v1: parameter-CEM minus episode-CEM iterations to solve, paired over seeds "
                          "(median difference, 95% bootstrap CI)", C.ci_below(0.0)),
}


def iterations_to(curve, threshold):
  """First iteration (1-based) whose mean return reaches ``threshold``; budget + 1 if never (censored)."""
  hit = curve >= threshold
  return np.where(hit.any(1), hit.argmax(1) + 1, curve.shape[1] + 1).astype(np.float64)


def compute(key, quick):
  num_seeds = 16 if quick else 64
  iters = 60 if quick else 150      # 200-step episodes: 1.5x the book's ~40 iterations
  iters_v1 = 50 if quick else 150   # 500-step episodes cost more; quick median is ~35
  env, v1_params = gymnax.make("CartPole-v1")
  v0_params = v1_params.replace(max_steps_in_episode=200)
  keys = jax.random.split(key, num_seeds)  # the same keys for every configuration (paired comparison)
  episode = dict(env=env, num_episodes=16, elite_fraction=0.3, hidden_sizes=(128,), learning_rate=0.01,
                 num_epochs=1)
  runs = {
      "episode_cem_v0": (algos.EpisodeCEMConfig(env_params=v0_params, num_steps=200, num_iterations=iters,
                                                **episode), 199.0),
      "episode_cem_v1": (algos.EpisodeCEMConfig(env_params=v1_params, num_steps=500, num_iterations=iters_v1,
                                                **episode), 475.0),
      "param_cem_v1": (algos.ParamCEMConfig(env=env, env_params=v1_params, num_steps=500,
                                            num_iterations=min(iters, 40), population_size=32,
                                            elite_fraction=0.2), 475.0),
  }
  result = {"num_seeds": num_seeds, "runs": {}}
  for name, (config, threshold) in runs.items():
    t = time.time()
    _, metrics = jax.jit(jax.vmap(algos.make_train(config)))(keys)
    curve = np.asarray(metrics.episode_return)
    its = iterations_to(curve, threshold)
    result["runs"][name] = dict(threshold=threshold, budget=curve.shape[1], curve=curve, iterations=its,
                                seconds=round(time.time() - t, 1))
    print(f"{name}: median iterations {np.median(its)}, solved {np.mean(its <= curve.shape[1]):.2f}", flush=True)
  return result


def _median_diff_ci(a, b, seed=0, resamples=2000):
  """Median of the paired differences a - b and the half-width of its 95% percentile-bootstrap CI."""
  d = np.asarray(a) - np.asarray(b)
  rng = np.random.default_rng(seed)
  boot = np.median(d[rng.integers(0, d.size, (resamples, d.size))], axis=1)
  lo, hi = np.percentile(boot, [2.5, 97.5])
  med = float(np.median(d))
  # reported as (centre, half-width) of the percentile interval so the threshold reads it directly
  return [float((lo + hi) / 2), float((hi - lo) / 2)], med, (float(lo), float(hi))


def claims(result):
  r = result["runs"]
  solved = {k: float(np.mean(v["iterations"] <= v["budget"])) for k, v in r.items()}
  med = {k: float(np.median(v["iterations"])) for k, v in r.items()}
  out = [CLAIMS["v0_median"](med["episode_cem_v0"]), CLAIMS["v0_solved"](solved["episode_cem_v0"]),
         CLAIMS["v1_median"](med["episode_cem_v1"]), CLAIMS["p1_median"](med["param_cem_v1"]),
         CLAIMS["v1_solved"](solved["episode_cem_v1"], which="episode-CEM"),
         CLAIMS["v1_solved"](solved["param_cem_v1"], which="parameter-CEM")]
  # unsolved seeds of both methods censored at the same value (the larger budget + 1)
  cens = max(r["param_cem_v1"]["budget"], r["episode_cem_v1"]["budget"]) + 1
  its = {k: np.where(r[k]["iterations"] <= r[k]["budget"], r[k]["iterations"], cens)
         for k in ("param_cem_v1", "episode_cem_v1")}
  ci, med_d, (lo, hi) = _median_diff_ci(its["param_cem_v1"], its["episode_cem_v1"])
  out.append(CLAIMS["paired"](ci))
  ms = [C.Measurement(f"{k}: iterations to solve, quartiles (25/50/75%)",
                      [float(q) for q in np.percentile(v["iterations"], [25, 50, 75])],
                      f"budget {v['budget']}; {EPISODES[k]} episodes per iteration") for k, v in r.items()]
  ms.append(C.Measurement("CartPole-v1: paired median difference, parameter-CEM minus episode-CEM iterations",
                          med_d, f"95% bootstrap CI [{lo:g}, {hi:g}]"))
  ms += [C.Measurement(f"{k}: median episodes to solve", med[k] * EPISODES[k],
                       "iterations x episodes per iteration") for k in ("episode_cem_v1", "param_cem_v1")]
  ms += [C.Measurement(f"{k}: mean return over the last 5 iterations", float(v["curve"][:, -5:].mean()), "")
         for k, v in r.items()]
  return out, ms


def plot(result, out):
  plt = C.pyplot()
  runs = result["runs"]
  fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4))
  for ax, (name, r) in zip(axes, runs.items()):
    c = np.asarray(r["curve"])
    x = np.arange(1, c.shape[1] + 1)
    for row in c:
      ax.plot(x, row, color="0.8", lw=0.5)
    ax.plot(x, c.mean(0), color="C0", label="mean over seeds")
    ax.plot(x, np.median(c, 0), color="C1", label="median")
    ax.axhline(r["threshold"], color="k", ls="--", lw=0.8, label=f"solved ({r['threshold']:g})")
    ax.set_title(name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean episode return of the batch")
  axes[0].legend()
  fig.suptitle(f"Cross-entropy method on CartPole ({result['num_seeds']} seeds)")
  fig.tight_layout()
  return [C.savefig(fig, out, f"{NAME}.png", dpi=120)]


def main(argv=None):
  C.run(NAME, __doc__, compute, claims, plot, CLAIMS, argv)


if __name__ == "__main__":
  main()
