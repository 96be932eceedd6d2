"""Variance and bias of the score-function estimator under every baseline, vs the number of samples N.

Claims checked (SPEC 1.1, 1.2):
* the SPEC 1.2 identities of the classification robot hold to float precision;
* on the Gaussian quadratic at N = 10, total variance orders optimal < mean < none;
* leave-one-out (RLOO) is unbiased (squared bias within 5 SE of 0) while the batch mean shrinks the gradient
  by (N - 1) / N (the shrunk target is met, the unshrunk is rejected);
* on the Bernoulli quadratic, RLOO has < 5% of the variance of no baseline.

Run: python experiments/baseline_variance.py [--quick]
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from jax.flatten_util import ravel_pytree

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import pgjax  # noqa: E402
from pgjax import problems as P  # noqa: E402

BASELINES = ["none", "mean", "leave_one_out", "optimal", "optimal_leave_one_out", "optimal_per_coordinate",
             "optimal_per_coordinate_leave_one_out"]


def flat(tree):
  return np.asarray(ravel_pytree(tree)[0], np.float64)


def main(argv=None):
  args = _common.parse_args(__doc__.splitlines()[0], argv)
  started = time.time()
  key = jax.random.key(args.seed)
  # Compilation dominates the quick run (one per problem x baseline x N), so it trims the grid, not the seeds.
  num_seeds = 4000 if args.quick else 20000
  sizes = [4, 8] if args.quick else [2, 4, 8, 16, 32, 64]
  baselines = BASELINES[:5] if args.quick else BASELINES
  robot, data = P.classification_robot(jax.random.fold_in(key, 99))
  problems = {
      "gaussian_quadratic": P.gaussian_quadratic(3),
      "bernoulli_quadratic": P.bernoulli_quadratic(5),
      "categorical_bandit": P.categorical_bandit(),
      "classification_robot": robot,
  }
  claims = []

  # SPEC 1.2 identities, to float precision.
  pg_enum = flat(P.policy_gradient_by_enumeration(robot.params, data))
  pg_true = flat(P.expected_reward_gradient(robot.params, data))
  ce = flat(P.cross_entropy_gradient(robot.params, data))
  labelled = flat(P.label_scored_gradient(robot.params, data))
  err1, err2 = float(np.max(np.abs(pg_enum - pg_true))), float(np.max(np.abs(ce - labelled)))
  claims.append(_common.Claim("E_a[r grad log pi] == grad pi(y|s) (max abs diff)", err1, "< 1e-6", err1 < 1e-6))
  claims.append(_common.Claim("sum_a r grad log pi == -grad CE (max abs diff)", err2, "< 1e-6", err2 < 1e-6))

  table = {}
  for pname, prob in problems.items():
    truth = prob.true_grad(prob.params)
    for bl in baselines:
      for n in sizes:
        if n < 2 and "leave_one_out" in bl:
          continue
        est = pgjax.score_function(prob.f, prob.dist_fn, num_samples=n, baseline=bl)
        s = pgjax.sweep.gradient_stats(est, prob.params, jax.random.fold_in(key, n), num_seeds=num_seeds,
                                       true_grad=truth)
        table[(pname, bl, n)] = dict(
            total_variance=float(s.total_variance), total_variance_se=float(s.total_variance_se),
            bias_norm=float(s.bias_norm), bias_sq=float(s.bias_sq), mse=float(s.mse), cosine=float(s.cosine),
            snr=float(s.snr),
            max_z_unbiased=float(np.max(np.abs(flat(s.mean) - flat(truth)) / flat(s.mean_se))),
            max_z_shrunk=float(np.max(np.abs(flat(s.mean) - (n - 1) / n * flat(truth)) / flat(s.mean_se))))

  n = 8
  g = {bl: table[("gaussian_quadratic", bl, n)] for bl in ("optimal", "mean", "none")}
  ok = (g["optimal"]["total_variance"] + 5 * g["optimal"]["total_variance_se"]
        < g["mean"]["total_variance"] - 5 * g["mean"]["total_variance_se"]) and (
            g["mean"]["total_variance"] + 5 * g["mean"]["total_variance_se"]
            < g["none"]["total_variance"] - 5 * g["none"]["total_variance_se"])
  claims.append(_common.Claim(f"Gaussian quadratic N={n}: var optimal < mean < none",
                              [round(g[b]["total_variance"], 3) for b in ("optimal", "mean", "none")],
                              "strict, 5 SE apart", ok))
  loo = [table[(p, "leave_one_out", n)]["max_z_unbiased"] for p in problems]
  claims.append(_common.Claim(f"RLOO unbiased on all problems (max |z| over coords, N={n})", max(loo),
                              "< 5", max(loo) < 5))
  mean_ok = [table[(p, "mean", n)] for p in problems]
  shrunk = max(m["max_z_shrunk"] for m in mean_ok)
  detected = min(m["max_z_unbiased"] for m in mean_ok)
  claims.append(_common.Claim(f"batch mean matches (N-1)/N * grad (max |z|, N={n})", shrunk, "< 5", shrunk < 5))
  claims.append(_common.Claim(f"batch mean rejected against the unshrunk grad (min over problems of max |z|)",
                              detected, "> 5", detected > 5))
  b = {bl: table[("bernoulli_quadratic", bl, n)]["total_variance"] for bl in ("leave_one_out", "none")}
  ratio = b["leave_one_out"] / b["none"]
  claims.append(_common.Claim(f"Bernoulli: var RLOO / var none (N={n})", ratio, "< 0.05", ratio < 0.05))

  fig, axes = plt.subplots(1, len(problems), figsize=(4.2 * len(problems), 3.6))
  for ax, pname in zip(axes, problems):
    for bl in baselines:
      xs = [m for m in sizes if (pname, bl, m) in table]
      ys = np.array([table[(pname, bl, m)]["total_variance"] for m in xs])
      es = np.array([table[(pname, bl, m)]["total_variance_se"] for m in xs])
      ax.errorbar(xs, ys, yerr=2 * es, label=bl, marker="o", ms=3, capsize=2)
    ax.set(xscale="log", yscale="log", xlabel="samples N", title=pname)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  axes[0].set_ylabel("total variance tr Cov[g]")
  axes[-1].legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(args.out, exist_ok=True)
  fig_path = os.path.join(args.out, "baseline_variance.png")
  fig.savefig(fig_path, dpi=120)
  data = {"num_seeds": num_seeds, "sizes": sizes,
          "rows": [dict(problem=p, baseline=bl, num_samples=m, **v) for (p, bl, m), v in table.items()]}
  _common.save_results("baseline_variance", args, claims=claims, data=data, figures=[fig_path], started=started)


if __name__ == "__main__":
  main()
