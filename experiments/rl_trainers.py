r"""Every policy-search trainer on CartPole-v1 and Acrobot-v1 under one evaluation; natural vs vanilla PG on a
linear system.

Eight trainers, each ``jax.jit(jax.vmap(pgjax.algos.make_train(config)))`` over the same 64 seeds, on gymnax's
CartPole-v1 (500-step limit, solved at a return >= 475) and Acrobot-v1 (500-step limit, -1 per step until the
goal: -500 is the truncation floor, -100 the usual "solved" threshold); the settings are in
:func:`trainer_configs`:

* REINFORCE (reward-to-go minus the leave-one-out batch baseline, normalised, Adam) without and with a learned
  critic (generalised advantages from a fitted flax MLP value function; on Acrobot-v1 with ``discount=0.99``,
  so that the bootstrapped value of a policy that never reaches the goal is bounded: with ``discount=1`` the
  critic's targets fall by about 1/(1 - lambda) at every fit and its value loss stays at ~190 while every
  episode is truncated). A seed whose 8 x 25 training episodes never reach the goal gets no reward signal
  from any advantage estimator, so the floor fraction measures exploration: without an entropy bonus, Adam
  turns the normalised noise advantages of such a seed into full-size steps and its policy collapses to a
  near-deterministic one that never reaches the goal (a fifth to a quarter of 64 seeds, with or without
  the critic). On Acrobot-v1 REINFORCE with a critic therefore adds the entropy bonus ``entropy_coef=0.1``:
  it keeps the policy exploring until the first episodes reach the goal, after which the critic's
  advantages carry the signal. The bonus alone does not do it: REINFORCE without a critic at the same
  setting left 14 of the same 64 seeds at the floor (median -102), against 16 of 64 (median -90) at its
  default ``entropy_coef=0``, which the run below uses;
* A2C and PPO (Schulman et al., 2017; PureJaxRL's CartPole settings, and for PPO on CartPole-v1 its budget
  of 5e5 environment steps: at half of it, 256000 steps, 56 of 64 seeds had reached 475) with their
  actor-critic networks;
* NPG (Kakade, 2001) with the normalised step (the quadratic-model KL of every step equals ``max_kl``) and
  TRPO (Schulman et al., 2015: KL radius and backtracking line search), with Monte-Carlo advantages on
  CartPole and with the learned critic on Acrobot (where every episode of a random policy is truncated,
  Monte-Carlo advantages minus a batch baseline are exactly zero);
* OpenAI-ES (Salimans et al., 2017: antithetic, centred ranks, Adam) and the cross-entropy method on the
  policy's parameters (*parameter* CEM: a diagonal Gaussian over the weights of a deterministic policy,
  refitted to the top 20% of a population of 32, with a decaying noise floor).

The one metric compared across trainers is ``metrics.eval_return`` (:func:`pgjax.algos.evaluate_policy`: the
greedy policy's mean undiscounted return over 8 fresh episodes of at most 500 steps, every ``eval_every``
iterations and after the last), plotted as the median and interquartile band over seeds against the
environment steps simulated for training (per iteration: environments x steps for the gradient methods,
population x episode length for ES and CEM; evaluation episodes are not counted).

Kept from earlier versions: REINFORCE and TRPO learn CartPole-v1 (training metric), TRPO's line search keeps
the exact KL of every accepted step within its radius, ES improves, and on the 1-D linear system
:math:`s' = s + a`, :math:`r = -s^2 - a^2`, :math:`a \sim N(k s, \sigma^2)` (:class:`pgjax.envs.LinearSystem`,
30-step episodes, :math:`\gamma = 0.9`) natural PG with a fixed step reaches the discounted Riccati gain
:math:`k^\star` faster than vanilla PG, each at its best step size of a small grid (a vmap over the traced
step-size field).

``--quick`` runs a subset at small scale (TRPO on CartPole-v1, NPG on Acrobot-v1, the linear system: one
compilation per trainer dominates its time); claims that need the full budget or the other trainers are made
in the full run only.

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
LAST = 3  # training-metric iterations averaged at the end of a curve
ENVS = {"CartPole-v1": {"solved": 475.0}, "Acrobot-v1": {"solved": -100.0, "floor": -500.0}}
EVAL = dict(eval_episodes=8, eval_max_steps=500, eval_greedy=True)  # the same evaluation for every trainer
NUM_EVALS = 12  # evaluations per curve (about)
METHODS = ("REINFORCE", "REINFORCE+critic", "A2C", "PPO", "NPG", "TRPO", "ES", "CEM")
QUICK = {"CartPole-v1": ("TRPO",), "Acrobot-v1": ("NPG",)}
TRPO_KL = 0.02  # TRPO's radius on CartPole-v1
SEEDS = 64  # seeds per trainer and environment in the full run

CLAIMS = {
    "random_start": C.ClaimSpec("{method}: first-iteration mean return, largest over seeds (a random policy "
                                "survives ~22 steps)", C.lt(40)),
    "learns": C.ClaimSpec("{method}, CartPole-v1: fraction of seeds whose mean return over the last 3 of "
                          "{iters} iterations is >= 150", C.ge(0.75)),
    "learns_median": C.ClaimSpec("{method}, CartPole-v1: median over seeds of the mean return over the last "
                                 "3 iterations", C.ge(150)),
    "kl": C.ClaimSpec("TRPO: largest exact KL of a step / the radius 0.02 (the line search enforces it)",
                      C.le(1.0 + 1e-4)),
    "accepted": C.ClaimSpec("TRPO: fraction of iterations whose line search accepted a step", C.gt(0.5)),
    "es_improves": C.ClaimSpec("ES, CartPole-v1: mean return over the last 3 minus the first 3 iterations, "
                               "paired over seeds [value: mean, 95% CI half-width]", C.ci_above(30.0)),
    "ppo_solves": C.ClaimSpec("PPO, CartPole-v1: fraction of seeds whose final evaluation return is >= 475 "
                              "({steps} environment steps)", C.ge(0.9)),
    "critic_floor": C.ClaimSpec("REINFORCE with a critic, Acrobot-v1: fraction of seeds whose final "
                                "evaluation return is at the truncation floor -500", C.eq(0.0)),
    "npg_kl": C.ClaimSpec("NPG (normalised step), Acrobot-v1: mean over seeds and iterations of the exact KL "
                          "of a step / the target max_kl", C.between(0.5, 2.0)),
    "solves_CartPole-v1": C.ClaimSpec("{method}, CartPole-v1: median over seeds of the final evaluation "
                                      "return ({steps} environment steps)", C.ge(475)),
    "solves_Acrobot-v1": C.ClaimSpec("{method}, Acrobot-v1: median over seeds of the final evaluation "
                                     "return ({steps} environment steps)", C.ge(-100)),
    "npg_reaches": C.ClaimSpec("linear system: natural PG's mean |k - k*| after 25 iterations (best step "
                               "size)", C.lt(0.07)),
    "npg_vs_vanilla": C.ClaimSpec("linear system: natural PG's mean |k - k*| / vanilla PG's (each at its "
                                  "best step size), after 25 iterations", C.lt(0.5)),
}


def trainer_configs(env: str, quick: bool) -> dict:
  """``{method: (config, environment steps per iteration)}``: the settings of the run (full budget)."""
  cartpole = env == "CartPole-v1"
  pg = dict(env=env, num_envs=8, num_steps=500, num_iterations=40 if cartpole else 25)
  critic = dict(critic=True, critic_learning_rate=1e-2, critic_steps=20, gae_lambda=0.95)
  explore = {} if cartpole else dict(entropy_coef=0.1)  # REINFORCE+critic on Acrobot-v1
  nat = {**pg, "num_iterations": 30 if cartpole else 25}
  nat_adv = {} if cartpole else critic
  es = dict(env=env, num_iterations=40 if cartpole else 20, num_steps=500)
  out = {
      "REINFORCE": (algos.ReinforceConfig(learning_rate=0.01, **pg), 8 * 500),
      "REINFORCE+critic": (algos.ReinforceConfig(learning_rate=0.01, **pg, **critic, **explore,
                                                 **({} if cartpole else dict(discount=0.99))), 8 * 500),
      "A2C": (algos.A2CConfig(env=env, num_updates=1500 if cartpole else 1000), 16 * 8),
      # PPO on CartPole-v1: PureJaxRL's budget of 5e5 environment steps (976 updates of 4 x 128 steps)
      "PPO": (algos.PPOConfig(env=env, num_updates=976 if cartpole else 200), 4 * 128),
      "NPG": (algos.NaturalPGConfig(method="npg", max_kl=TRPO_KL if cartpole else 0.01, **nat, **nat_adv),
              8 * 500),
      "TRPO": (algos.NaturalPGConfig(method="trpo", max_kl=TRPO_KL, **nat, **nat_adv), 8 * 500),
      "ES": (algos.ESConfig(num_directions=32, sigma=0.1, learning_rate=0.03, **es), 32 * 500),
      "CEM": (algos.ParamCEMConfig(population_size=32, elite_fraction=0.2,
                                   **{**es, "num_iterations": 30 if cartpole else 20}), 32 * 500),
  }
  if quick:
    out = {m: out[m] for m in QUICK[env]}
    short = {"TRPO": 15, "NPG": 6}
    out = {m: (c.replace(num_iterations=short[m]), s) for m, (c, s) in out.items()}
  return out


def _iterations(config):
  return config.num_updates if hasattr(config, "num_updates") else config.num_iterations


def compute_env(key, env, quick):
  num_seeds = 4 if quick else SEEDS
  keys = jax.random.split(key, num_seeds)  # the same seeds for every trainer
  out = {"num_seeds": num_seeds, "runs": {}}
  for name, (config, steps_per_iter) in trainer_configs(env, quick).items():
    n = _iterations(config)
    every = max(1, n // (4 if quick else NUM_EVALS))
    config = config.replace(eval_every=every, **EVAL)
    t = time.time()
    _, m = jax.jit(jax.vmap(algos.make_train(config)))(keys)
    evals = np.asarray(m.eval_return)
    at = np.minimum(np.arange(1, evals.shape[1] + 1) * every, n)
    run = {"eval_return": evals, "eval_steps": at * steps_per_iter,
           "train_return": np.asarray(m.episode_return), "iterations": n,
           "steps_per_iteration": steps_per_iter, "num_seeds": int(keys.shape[0]),
           "seconds": round(time.time() - t, 1)}
    if name in ("NPG", "TRPO"):
      run["kl"], run["step_fraction"] = np.asarray(m.kl), np.asarray(m.step_fraction)
      run["max_kl"] = float(config.max_kl)
    out["runs"][name] = run
    quartiles = np.percentile(evals[:, -1], [25, 50, 75]).round(1)
    print(f"{env} {name}: final evaluation return quartiles {quartiles} ({run['seconds']} s)", flush=True)
  return out


def compute_linear(key, quick):
  num_seeds = 4 if quick else 16
  params = envs.LinearSystemParams(init_mean=0.0, init_std=1.0, max_steps_in_episode=30)
  k_star = float(envs.linear_system_optimal_gain(params, discount=0.9))
  common = dict(env="LinearSystem", env_params=params, policy=algos.linear_gaussian_policy(0.0, 0.0),
                num_envs=32, num_steps=30, num_iterations=25, discount=0.9, time_discount=True,
                normalize_advantages=False)
  vanilla = algos.ReinforceConfig(optimizer="sgd", max_grad_norm=jnp.inf, **common)
  natural = algos.NaturalPGConfig(method="npg", damping=1e-3, step_size=0.1, **common)  # fixed step: a grid
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
  out = {env: compute_env(jax.random.fold_in(key, i), env, quick) for i, env in enumerate(ENVS)}
  out["linear_system"] = compute_linear(jax.random.fold_in(key, len(ENVS)), quick)
  out["quick"] = bool(quick)
  return out


def _final(run):
  return np.asarray(run["eval_return"])[:, -1]


def claims(result):
  cp, ac, lin = result["CartPole-v1"]["runs"], result["Acrobot-v1"]["runs"], result["linear_system"]
  out, ms = [], []
  for m in [m for m in ("REINFORCE", "TRPO") if m in cp]:
    c = np.asarray(cp[m]["train_return"])
    final = c[:, -LAST:].mean(1)
    out += [CLAIMS["random_start"](float(c[:, 0].max()), method=m),
            CLAIMS["learns"](float(np.mean(final >= 150)), method=m, iters=cp[m]["iterations"]),
            CLAIMS["learns_median"](float(np.median(final)), method=m)]
  out += [CLAIMS["kl"](float(np.max(cp["TRPO"]["kl"])) / TRPO_KL),
          CLAIMS["accepted"](float(np.mean(np.asarray(cp["TRPO"]["step_fraction"]) > 0)))]
  if "ES" in cp:
    c = np.asarray(cp["ES"]["train_return"])
    d = c[:, -LAST:].mean(1) - c[:, :LAST].mean(1)
    out.append(CLAIMS["es_improves"]([float(d.mean()), float(1.96 * d.std(ddof=1) / np.sqrt(d.size))]))
  if not result["quick"]:  # budgets that solve: full run only
    ppo = cp["PPO"]
    out.append(CLAIMS["ppo_solves"](float(np.mean(_final(ppo) >= 475)),
                                    steps=ppo["iterations"] * ppo["steps_per_iteration"]))
    for env in ENVS:
      for m, run in result[env]["runs"].items():
        out.append(CLAIMS[f"solves_{env}"](float(np.median(_final(run))), method=m,
                                           steps=run["iterations"] * run["steps_per_iteration"]))
  if "REINFORCE+critic" in ac:
    out.append(CLAIMS["critic_floor"](float(np.mean(_final(ac["REINFORCE+critic"]) <= -500 + 1e-3))))
  out.append(CLAIMS["npg_kl"](float(np.mean(ac["NPG"]["kl"]) / ac["NPG"]["max_kl"])))
  err = {k: np.asarray(v) for k, v in lin["mean_abs_gain_error"].items()}
  out += [CLAIMS["npg_reaches"](float(err["natural"].min())),
          CLAIMS["npg_vs_vanilla"](float(err["natural"].min() / err["vanilla"].min()))]
  for env in ENVS:
    r = result[env]
    for m, run in r["runs"].items():
      f = _final(run)
      ms.append(C.Measurement(
          f"{env}, {m}: final evaluation return, quartiles over seeds; fraction solved",
          [[round(float(q), 1) for q in np.percentile(f, [25, 50, 75])],
           round(float(np.mean(f >= ENVS[env]["solved"])), 3)],
          f"{run['num_seeds']} seeds, {run['iterations']} iterations x {run['steps_per_iteration']} steps"))
    if "REINFORCE" in r["runs"] and env == "Acrobot-v1":
      ms.append(C.Measurement("Acrobot-v1, REINFORCE without a critic: fraction of seeds at the floor -500",
                              float(np.mean(_final(r["runs"]["REINFORCE"]) <= -500 + 1e-3))))
  ms.append(C.Measurement("linear system: mean |k - k*| after 25 iterations per step size",
                          {k: [round(float(x), 4) for x in v] for k, v in err.items()},
                          f"grids {lin['grids']}; k* = {lin['k_star']:.4f}"))
  return out, ms


def plot(result, out):
  plt = C.pyplot()
  fig, axes = plt.subplots(1, len(ENVS), figsize=(7 * len(ENVS), 4.5))
  for ax, env in zip(axes, ENVS):
    for i, m in enumerate(METHODS):
      run = result[env]["runs"].get(m)
      if run is None:
        continue
      ev, x = np.asarray(run["eval_return"]), np.asarray(run["eval_steps"])
      q25, q50, q75 = np.percentile(ev, [25, 50, 75], axis=0)
      ax.plot(x, q50, color=f"C{i}", label=m, marker=".")
      ax.fill_between(x, q25, q75, color=f"C{i}", alpha=0.2, lw=0)
    ax.axhline(ENVS[env]["solved"], color="k", ls="--", lw=0.8)
    ax.set_xscale("log")
    seeds = sorted({run["num_seeds"] for run in result[env]["runs"].values()})
    ax.set(title=f"{env}: greedy evaluation return, median and IQR over {'/'.join(map(str, seeds))} seeds",
           xlabel="environment steps (training)", ylabel="evaluation return")
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  return [C.savefig(fig, out, f"{NAME}.png")]


def main(argv=None):
  C.run(NAME, __doc__, compute, claims, plot, CLAIMS, argv)


if __name__ == "__main__":
  main()
