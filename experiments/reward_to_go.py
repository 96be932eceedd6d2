r"""Reward-to-go vs full-return REINFORCE: variance table with standard errors.

A random tabular MDP (4 states, 2 actions, softmax policy), undiscounted horizon-H objective
J_H = sum_{t<H} mu^T P_pi^t r_pi computed exactly (pgjax.envs.tabular_expected_return) and
differentiated by jax.grad: the oracle. For each horizon H the four estimators

  full return, no baseline      sum_t grad log pi_t * R(tau)
  full return, leave-one-out    sum_t grad log pi_t * (R - mean of the other trajectories' R)
  reward-to-go, no baseline     sum_t grad log pi_t * Q_t
  reward-to-go, leave-one-out   sum_t grad log pi_t * (Q_t - mean over other trajectories of Q_t)

(8 trajectories per estimate, the same trajectories for all four on a given seed) are run over many seeds:
total variance (trace of the covariance) with its standard error, the per-coordinate 5-SE unbiasedness
check against the exact gradient, and the variance differences paired over the shared trajectories.

Run: ``python -m experiments.reward_to_go [--quick] [--out results]``.
"""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import numpy as np

import pgjax
from experiments import _common as C
from pgjax import envs, losses

NAME = "reward_to_go"
NUM_TRAJ = 8
ESTIMATORS = {
    "full_return": dict(reward_to_go=False, baseline=None),
    "full_return+loo": dict(reward_to_go=False, baseline="leave_one_out"),
    "reward_to_go": dict(reward_to_go=True, baseline=None),
    "reward_to_go+loo": dict(reward_to_go=True, baseline="leave_one_out"),
}


PAIRS = (("reward_to_go", "full_return"), ("reward_to_go+loo", "full_return+loo"))

CLAIMS = {
    "unbiased": C.ClaimSpec("H={h} {name}: unbiased (largest per-coordinate |z| against grad J)", C.lt(5)),
    "rtg": C.ClaimSpec("H={h}: tr Cov[{a}] - tr Cov[{b}], paired over the same trajectories [value: difference, "
                       "SE]", C.below_se(0.0, 5)),
}


def compute(key, quick):
  horizons = (4, 16) if quick else (4, 8, 16, 32)
  num_seeds = 2000 if quick else 10000
  num_states, num_actions = 4, 2
  k_mdp, k_theta, k_run = jax.random.split(key, 3)
  theta = 0.5 * jax.random.normal(k_theta, (num_states, num_actions))
  env = envs.TabularMDP(num_states, num_actions)
  policy = lambda th, s: distrax.Categorical(logits=th[s])
  rows, paired = [], {}
  for h in horizons:
    mdp = envs.random_tabular_mdp(k_mdp, num_states, num_actions, max_steps_in_episode=h)
    true = jax.grad(lambda th: envs.tabular_expected_return(mdp, jax.nn.softmax(th), discount=1.0, horizon=h))(theta)

    def all_estimates(k, mdp=mdp, h=h):
      traj = pgjax.rollout(k, policy, theta, env, mdp, num_steps=h, num_envs=NUM_TRAJ)

      def grad(kw):
        def loss(t):
          return losses.reinforce_loss(jax.nn.log_softmax(t)[traj.obs, traj.actions], traj.rewards, traj.dones, **kw)
        return -jax.grad(loss)(theta)
      return jnp.stack([grad(kw) for kw in ESTIMATORS.values()])

    keys = jax.random.split(jax.random.fold_in(k_run, h), num_seeds)
    g = np.asarray(jax.jit(jax.vmap(all_estimates))(keys), np.float64)       # [S, estimators, states, actions]
    names = list(ESTIMATORS)
    for j, name in enumerate(names):
      st = C.seed_stats(g[:, j], true)
      rows.append(dict(horizon=h, estimator=name, total_variance=st["total_variance"],
                       total_variance_se=st["total_variance_se"], max_abs_z=st["max_abs_z"],
                       bias_norm=float(np.linalg.norm(st["mean"] - np.asarray(true).ravel())),
                       grad_norm=float(jnp.linalg.norm(true))))
      print(f"H={h:3d} {name:18s} tr Cov = {st['total_variance']:9.4f} +- {st['total_variance_se']:.4f}  "
            f"max |z| = {st['max_abs_z']:.2f}", flush=True)
    for a, b in PAIRS:
      paired[f"{h}/{a}/{b}"] = C.paired_variance_difference(g[:, names.index(a)], g[:, names.index(b)])
  return {"horizons": horizons, "num_seeds": num_seeds, "num_trajectories": NUM_TRAJ, "rows": rows,
          "paired": paired}


def claims(result):
  out = [CLAIMS["unbiased"](r["max_abs_z"], h=r["horizon"], name=r["estimator"]) for r in result["rows"]]
  out += [CLAIMS["rtg"](result["paired"][f"{h}/{a}/{b}"], h=h, a=a, b=b)
          for h in result["horizons"] for a, b in PAIRS]
  by = {(r["horizon"], r["estimator"]): r for r in result["rows"]}
  ms = [C.Measurement(f"H={h}: tr Cov[{a}] / tr Cov[{b}]",
                      round(by[(h, a)]["total_variance"] / by[(h, b)]["total_variance"], 4), "")
        for h in result["horizons"] for a, b in PAIRS]
  return out, ms


def plot(result, out):
  plt = C.pyplot()
  by = {(r["horizon"], r["estimator"]): r for r in result["rows"]}
  horizons = result["horizons"]
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for name in ESTIMATORS:
    v = np.array([by[(h, name)]["total_variance"] for h in horizons])
    se = np.array([by[(h, name)]["total_variance_se"] for h in horizons])
    ax.errorbar(horizons, v, yerr=2 * se, marker="o", capsize=3, label=name)
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xlabel("horizon H")
  ax.set_ylabel("total variance of the gradient estimate (+-2 SE)")
  ax.set_title(f"REINFORCE on a tabular MDP, {NUM_TRAJ} trajectories/estimate, {result['num_seeds']} seeds")
  ax.legend()
  fig.tight_layout()
  return [C.savefig(fig, out, f"{NAME}.png", dpi=120)]


def main(argv=None):
  C.run(NAME, __doc__, compute, claims, plot, CLAIMS, argv)


if __name__ == "__main__":
  main()
