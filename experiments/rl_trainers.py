r"""The policy-search trainers learn: REINFORCE, TRPO and ES on CartPole-v1, natural vs vanilla PG on a linear system.

Training curves over many seeds at once (``jax.jit(jax.vmap(pgjax.algos.make_train(config)))``), from the same
keys for every method:

* REINFORCE (leave-one-out baseline, reward-to-go, Adam 0.01) and TRPO (conjugate-gradient natural direction
  scaled to a KL radius of 0.02, backtracking line search; Schulman et al., 2015), both with 8 environments x
  500 steps per iteration and a 64-64 MLP policy. A random policy survives about 22 steps; both must reach a mean
  return of 150 within 20 iterations, and TRPO's line search must keep the exact KL of every accepted step
  within the radius.
* OpenAI-ES (Salimans et al., 2017: antithetic, centred ranks, Adam) with 32 perturbations of a 16-unit MLP:
  the population's return must rise clearly above its start within 20 iterations.
* On the 1-D linear system :math:`s' = s + a`, :math:`r = -s^2 - a^2`, :math:`a \sim N(k s, \sigma^2)`
  (:class:`pgjax.envs.LinearSystem`, 30-step episodes, :math:`\gamma = 0.9`), natural PG (Kakade, 2001) reaches
  the discounted Riccati gain :math:`k^\star` faster than vanilla PG, each at its best step size of a small grid
  (a vmap over the traced step-size field).

Run: ``python -m experiments.rl_trainers [--quick] [--out results]``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import _common as C
from pgjax import algos, envs

NAME = "rl_trainers"
LAST = 3  # iterations averaged at the end of a curve

CLAIMS = {
    "random_start": C.ClaimSpec("{method}: first-iteration mean return, largest over seeds (a random policy "
                                "survives ~22 steps)", C.lt(40)),
    "learns": C.ClaimSpec("{method}, CartPole-v1: fraction of seeds whose mean return over the last 3 of {iters} "
                          "iterations is >= 150", C.ge(0.75)),
    "learns_median": C.ClaimSpec("{method}, CartPole-v1: median over seeds of the mean return over the last 3 "
                                 "iterations", C.ge(150)),
    "kl": C.ClaimSpec("TRPO: largest exact KL of a step / the radius 0.02 (the line search enforces it)",
                      C.le(1.0 + 1e-4)),
    "accepted": C.ClaimSpec("TRPO: fraction of iterations whose line search accepted a step", C.gt(0.5)),
    "es_improves": C.ClaimSpec("ES, CartPole-v1: mean return over the last 3 minus the first 3 iterations, paired "
                               "over seeds [value: mean, 95% CI half-width]", C.ci_above(30.0)),
    "npg_reaches": C.ClaimSpec("linear system: natural PG's mean |k - k*| after 25 iterations (best step size)",
                               C.lt(0.07)),
    "npg_vs_vanilla": C.ClaimSpec("linear system: natural PG's mean |k - k*| / vanilla PG's (each at its best step "
                                  "size), after 25 iterations", C.lt(0.5)),
}


def _train(config, keys):
  return jax.jit(jax.vmap(algos.make_train(config)))(keys)


def compute_cartpole(key, quick):
  num_seeds = 8 if quick else 32
  iters = 20 if quick else 50
  keys = jax.random.split(key, num_seeds)
  configs = {
      "REINFORCE": algos.ReinforceConfig(env="CartPole-v1", num_envs=8, num_steps=500, num_iterations=iters,
                                         learning_rate=0.01),
      "TRPO": algos.NaturalPGConfig(env="CartPole-v1", method="trpo", num_envs=8, num_steps=500,
                                    num_iterations=iters, max_kl=0.02),
      "ES": algos.ESConfig(env="CartPole-v1", num_iterations=iters, num_directions=32, sigma=0.1,
                           learning_rate=0.03),
  }
  out = {"num_seeds": num_seeds, "iterations": iters, "curves": {}}
  for name, config in configs.items():
    t = time.time()
    _, metrics = _train(config, keys)
    out["curves"][name] = np.asarray(metrics.episode_return)
    if name == "TRPO":
      out["trpo_kl"] = np.asarray(metrics.kl)
      out["trpo_step_fraction"] = np.asarray(metrics.step_fraction)
    print(f"{name}: final returns {np.round(out['curves'][name][:, -1], 1)} ({time.time() - t:.1f} s)", flush=True)
  return out


def compute_linear(key, quick):
  num_seeds = 4 if quick else 16
  params = envs.LinearSystemParams(init_mean=0.0, init_std=1.0, max_steps_in_episode=30)
  k_star = float(envs.linear_system_optimal_gain(params, discount=0.9))
  common = dict(env="LinearSystem", env_params=params, policy=algos.linear_gaussian_policy(0.0, 0.0),
                num_envs=32, num_steps=30, num_iterations=25, discount=0.9, time_discount=True,
                normalize_advantages=False)
  vanilla = algos.ReinforceConfig(optimizer="sgd", max_grad_norm=jnp.inf, **common)
  natural = algos.NaturalPGConfig(method="npg", damping=1e-3, **common)
  keys = jax.random.split(key, num_seeds)

  def final_gain_error(config, field, values):
    run = lambda v, k: algos.make_train(config.replace(**{field: v}))(k)[0]["gain"]
    gains = jax.jit(jax.vmap(jax.vmap(run, in_axes=(None, 0)), in_axes=(0, None)))(jnp.array(values), keys)
    return np.abs(np.asarray(gains) - k_star).mean(axis=1)  # [grid]

  grids = {"vanilla": ("learning_rate", [0.005, 0.01, 0.02]), "natural": ("step_size", [0.15, 0.2])}
  errors = {"vanilla": final_gain_error(vanilla, *grids["vanilla"]),
            "natural": final_gain_error(natural, *grids["natural"])}
  return {"k_star": k_star, "num_seeds": num_seeds, "grids": grids, "mean_abs_gain_error": errors}


def compute(key, quick):
  return {"cartpole": compute_cartpole(jax.random.fold_in(key, 0), quick),
          "linear_system": compute_linear(jax.random.fold_in(key, 1), quick)}


def claims(result):
  cp, lin = result["cartpole"], result["linear_system"]
  curves = {k: np.asarray(v) for k, v in cp["curves"].items()}
  out = []
  for m in ("REINFORCE", "TRPO"):
    c = curves[m]
    final = c[:, -LAST:].mean(1)
    out += [CLAIMS["random_start"](float(c[:, 0].max()), method=m),
            CLAIMS["learns"](float(np.mean(final >= 150)), method=m, iters=cp["iterations"]),
            CLAIMS["learns_median"](float(np.median(final)), method=m)]
  out += [CLAIMS["kl"](float(np.max(cp["trpo_kl"])) / 0.02),
          CLAIMS["accepted"](float(np.mean(np.asarray(cp["trpo_step_fraction"]) > 0)))]
  d = curves["ES"][:, -LAST:].mean(1) - curves["ES"][:, :LAST].mean(1)
  out.append(CLAIMS["es_improves"]([float(d.mean()), float(1.96 * d.std(ddof=1) / np.sqrt(d.size))]))
  err = {k: np.asarray(v) for k, v in lin["mean_abs_gain_error"].items()}
  out += [CLAIMS["npg_reaches"](float(err["natural"].min())),
          CLAIMS["npg_vs_vanilla"](float(err["natural"].min() / err["vanilla"].min()))]
  ms = [C.Measurement(f"{m}: mean return over the last 3 iterations, quartiles over seeds",
                      [round(float(q), 1) for q in np.percentile(c[:, -LAST:].mean(1), [25, 50, 75])],
                      f"{cp['num_seeds']} seeds, {cp['iterations']} iterations") for m, c in curves.items()]
  ms.append(C.Measurement("linear system: mean |k - k*| after 25 iterations per step size",
                          {k: [round(float(x), 4) for x in v] for k, v in err.items()},
                          f"grids {lin['grids']}; k* = {lin['k_star']:.4f}"))
  return out, ms


def plot(result, out):
  plt = C.pyplot()
  cp = result["cartpole"]
  fig, axes = plt.subplots(1, len(cp["curves"]), figsize=(5 * len(cp["curves"]), 4))
  for ax, (name, c) in zip(axes, cp["curves"].items()):
    c = np.asarray(c)
    x = np.arange(1, c.shape[1] + 1)
    for row in c:
      ax.plot(x, row, color="0.8", lw=0.5)
    ax.plot(x, np.median(c, 0), color="C1", label="median over seeds")
    ax.axhline(150, color="k", ls="--", lw=0.8, label="150")
    ax.set(title=f"{name}, CartPole-v1", xlabel="iteration", ylabel="mean episode return")
  axes[0].legend()
  fig.tight_layout()
  return [C.savefig(fig, out, f"{NAME}.png")]


def main(argv=None):
  C.run(NAME, __doc__, compute, claims, plot, CLAIMS, argv)


if __name__ == "__main__":
  main()
