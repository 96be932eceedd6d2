r"""Reward-to-go vs full-return REINFORCE: variance table with standard errors (SPEC 1.3, seeds 000/001).

A random tabular MDP (4 states, 2 actions, softmax policy), undiscounted horizon-H objective
J_H = sum_{t<H} mu^T P_pi^t r_pi computed exactly (pgjax.envs.tabular_expected_return) and
differentiated by jax.grad: the oracle. For each horizon H the four estimators

  full return, no baseline      sum_t grad log pi_t * R(tau)
  full return, leave-one-out    sum_t grad log pi_t * (R - mean of the other trajectories' R)
  reward-to-go, no baseline     sum_t grad log pi_t * Q_t
  reward-to-go, leave-one-out   sum_t grad log pi_t * (Q_t - mean over other trajectories of Q_t)

(8 trajectories per estimate) are run over many seeds with pgjax.sweep.gradient_stats: total variance
(trace of the covariance) with its standard error, bias norm, and the per-coordinate 5-SE unbiasedness
check against the exact gradient.

Run: python experiments/reward_to_go.py [--quick] [--out results]
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import distrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _common import Claim, parse_args, save_results  # noqa: E402
import pgjax  # noqa: E402
from pgjax import envs, losses, sweep  # noqa: E402

ESTIMATORS = {
    "full_return": dict(reward_to_go=False, baseline=None),
    "full_return+loo": dict(reward_to_go=False, baseline="leave_one_out"),
    "reward_to_go": dict(reward_to_go=True, baseline=None),
    "reward_to_go+loo": dict(reward_to_go=True, baseline="leave_one_out"),
}


def main():
  args = parse_args(__doc__.splitlines()[0])
  started = time.time()
  horizons = (4, 16) if args.quick else (4, 8, 16, 32)
  num_seeds = 2000 if args.quick else 10000
  num_traj = 8
  num_states, num_actions = 4, 2
  key = jax.random.key(args.seed)
  k_mdp, k_theta, k_run = jax.random.split(key, 3)
  theta = 0.5 * jax.random.normal(k_theta, (num_states, num_actions))
  env = envs.TabularMDP(num_states, num_actions)
  policy = lambda th, s: distrax.Categorical(logits=th[s])

  rows, claims = [], []
  for h in horizons:
    mdp = envs.random_tabular_mdp(k_mdp, num_states, num_actions, max_steps_in_episode=h)
    exact = lambda th: envs.tabular_expected_return(mdp, jax.nn.softmax(th), discount=1.0, horizon=h)
    true = jax.grad(exact)(theta)
    for name, kw in ESTIMATORS.items():
      def estimator(k, th, kw=kw, mdp=mdp, h=h):
        traj = pgjax.rollout(k, policy, th, env, mdp, num_steps=h, num_envs=num_traj)

        def loss(t):
          lp = jax.nn.log_softmax(t)[traj.obs, traj.actions]
          return losses.reinforce_loss(lp, traj.rewards, traj.dones, **kw)
        return jax.tree.map(jnp.negative, jax.grad(loss)(th)), ()

      st = sweep.gradient_stats(estimator, theta, jax.random.fold_in(k_run, h), num_seeds=num_seeds,
                                true_grad=true)
      z = float(np.max(np.abs(np.asarray(st.mean - true)) / np.asarray(st.mean_se)))
      rows.append(dict(horizon=h, estimator=name, total_variance=float(st.total_variance),
                       total_variance_se=float(st.total_variance_se), bias_norm=float(st.bias_norm),
                       bias_norm_se=float(st.bias_norm_se), max_abs_z=z, grad_norm=float(jnp.linalg.norm(true)),
                       cosine=float(st.cosine)))
      print(f"H={h:3d} {name:18s} tr Cov = {st.total_variance:9.4f} +- {st.total_variance_se:.4f}  "
            f"|bias| = {st.bias_norm:.4f} +- {st.bias_norm_se:.4f}  max |z| = {z:.2f}", flush=True)

  by = {(r["horizon"], r["estimator"]): r for r in rows}
  for h in horizons:
    for name in ESTIMATORS:
      r = by[(h, name)]
      claims.append(Claim(f"H={h} {name}: unbiased (every coordinate within 5 SE of grad J)", r["max_abs_z"],
                          "< 5", r["max_abs_z"] < 5))
    for a, b in (("reward_to_go", "full_return"), ("reward_to_go+loo", "full_return+loo")):
      ra, rb = by[(h, a)], by[(h, b)]
      lhs = ra["total_variance"] + 5 * ra["total_variance_se"]
      rhs = rb["total_variance"] - 5 * rb["total_variance_se"]
      claims.append(Claim(f"H={h}: tr Cov[{a}] < tr Cov[{b}] (5-SE margins)",
                          [ra["total_variance"], rb["total_variance"]], "var_a + 5se_a < var_b - 5se_b", lhs < rhs))

  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for name in ESTIMATORS:
    v = np.array([by[(h, name)]["total_variance"] for h in horizons])
    se = np.array([by[(h, name)]["total_variance_se"] for h in horizons])
    ax.errorbar(horizons, v, yerr=2 * se, marker="o", capsize=3, label=name)
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xlabel("horizon H")
  ax.set_ylabel("total variance of the gradient estimate (+-2 SE)")
  ax.set_title(f"REINFORCE on a tabular MDP, {num_traj} trajectories/estimate, {num_seeds} seeds")
  ax.legend()
  fig.tight_layout()
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "reward_to_go.png")
  fig.savefig(path, dpi=120)
  table = ["| H | estimator | tr Cov | SE | bias norm | SE | max |z| |", "|---|---|---|---|---|---|---|"]
  table += [f"| {r['horizon']} | {r['estimator']} | {r['total_variance']:.4g} | {r['total_variance_se']:.2g} | "
            f"{r['bias_norm']:.3g} | {r['bias_norm_se']:.2g} | {r['max_abs_z']:.2f} |" for r in rows]
  print("\n".join(table))
  save_results("reward_to_go", args, claims=claims, data={"rows": rows, "table_md": "\n".join(table),
                                                          "num_seeds": num_seeds, "num_trajectories": num_traj},
               figures=[path], started=started)


if __name__ == "__main__":
  main()
