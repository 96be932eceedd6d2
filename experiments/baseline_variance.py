r"""Variance and bias of the score-function estimator under every baseline, and where the optimal baseline pays.

Part 1, on four problems with closed-form gradients (``pgjax.problems``):

* the classification robot's two identities hold to float precision (the exact policy gradient of the
  expected accuracy equals :math:`\nabla\pi(y|s)`; scoring every action by its label gives the negative
  cross-entropy gradient);
* on the Gaussian quadratic at N = 8, total variance orders optimal < batch mean < none;
* leave-one-out (RLOO) is unbiased (every coordinate within 5 SE of the true gradient) while the batch mean
  shrinks the gradient by exactly :math:`(N-1)/N` (the shrunk target is met, the unshrunk one rejected);
* on the Bernoulli quadratic, RLOO has < 5% of the variance of no baseline.

Part 2, the crossover. The variance-optimal constant :math:`b^\star = E[f\|s\|^2]/E[\|s\|^2]` (Greensmith,
Bartlett and Baxter, 2004) beats the mean :math:`E f` by a fixed fraction of the variance, but its
leave-one-out estimate from :math:`N-1` samples is a ratio of noisy sums whose extra variance shrinks only
like :math:`1/N`; so at small N the optimal leave-one-out baseline *loses* to plain leave-one-out. On the
Gaussian step objective :math:`f(x) = \sum_k 1[x_k > 0.5]`, :math:`x \sim N(\mu, I_3)` (``gaussian_step``),
both baselines are unbiased, so :math:`\operatorname{tr}\operatorname{Cov}[\hat g] = E\|\hat g - \nabla J\|^2`
and the two are compared *paired* (the same samples for both, per seed) against the closed-form gradient,
for :math:`\mu = 0` (the step is often crossed; :math:`b^\star` saves 2.5% over :math:`E f`) and
:math:`\mu = -1` (a rarer event; :math:`b^\star` saves 18.5%). The crossover N is where the paired
difference changes sign.

Run: ``python -m experiments.baseline_variance [--quick] [--out results]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import pgjax
from experiments import _common as C
from pgjax import problems as P

NAME = "baseline_variance"
BASELINES = ("none", "mean", "leave_one_out", "optimal", "optimal_leave_one_out", "optimal_per_coordinate",
             "optimal_per_coordinate_leave_one_out")
PROBLEMS = ("gaussian_quadratic", "bernoulli_quadratic", "categorical_bandit", "classification_robot")
N_CLAIM = 8                       # the sample size of the part-1 claims
STEP_MEANS = (0.0, -1.0)          # mu of the Gaussian step problem (every coordinate)
CROSS_SIZES = (4, 8, 16, 32, 64, 128, 256, 512)
# Part-2 claims at sizes chosen from the full-scale run: below, optimal LOO loses; above, it wins.
LOSES_AT = {0.0: (4, 8, 16, 32), -1.0: (4, 8)}
WINS_AT = {0.0: (256, 512), -1.0: (32, 64, 128, 256, 512)}

CLAIMS = {
    "robot_pg": C.ClaimSpec("classification robot: E_a[r grad log pi] == grad pi(y|s) (max abs diff)", C.lt(1e-6)),
    "robot_ce": C.ClaimSpec("classification robot: sum_a r grad log pi == -grad CE (max abs diff)", C.lt(1e-6)),
    "order": C.ClaimSpec("Gaussian quadratic N=8: tr Cov[{a}] < tr Cov[{b}] (5-SE margins)", C.separated_se(5)),
    "rloo_unbiased": C.ClaimSpec("RLOO unbiased on all four problems (max |z| over coordinates, N=8)", C.lt(5)),
    "mean_shrunk": C.ClaimSpec("batch mean matches (N-1)/N x grad on all four problems (max |z|, N=8)", C.lt(5)),
    "mean_detected": C.ClaimSpec("batch mean rejected against the unshrunk grad (min over problems of max |z|, "
                                 "N=8)", C.gt(5)),
    "rloo_vs_none": C.ClaimSpec("Bernoulli quadratic N=8: tr Cov[RLOO] / tr Cov[none]", C.lt(0.05)),
    "loses": C.ClaimSpec("step problem, mu={mu:g}: optimal LOO has HIGHER variance than LOO at N in {sizes} "
                         "(paired z of tr Cov[opt LOO] - tr Cov[LOO], each)", C.gt(3)),
    "wins": C.ClaimSpec("step problem, mu={mu:g}: optimal LOO has LOWER variance than LOO at N in {sizes} "
                        "(paired z, each)", C.lt(-3)),
    "earlier": C.ClaimSpec("the crossover comes earlier where b* saves more: N*(mu=-1) < N*(mu=0) "
                           "[value: N*(mu=-1), N*(mu=0) - N*(mu=-1)]", C.gt(0)),
}


def _flat(tree):
  return np.asarray(ravel_pytree(tree)[0], np.float64)


def _problems(key):
  robot, data = P.classification_robot(jax.random.fold_in(key, 99))
  probs = {"gaussian_quadratic": P.gaussian_quadratic(3), "bernoulli_quadratic": P.bernoulli_quadratic(5),
           "categorical_bandit": P.categorical_bandit(), "classification_robot": robot}
  return probs, robot, data


def _cells(quick):
  """(problem, baseline, N) cells of part 1; the quick run measures only what its claims and figure need."""
  if not quick:
    return [(p, b, n) for p in PROBLEMS for b in BASELINES for n in (2, 4, 8, 16, 32, 64)
            if not (n < 2 and "leave_one_out" in b)]
  cells = [(p, b, N_CLAIM) for p in PROBLEMS for b in ("mean", "leave_one_out")]
  cells += [("gaussian_quadratic", b, N_CLAIM) for b in ("none", "optimal")]
  return cells + [("bernoulli_quadratic", "none", N_CLAIM)]


def compute_table(key, quick):
  probs, robot, data = _problems(key)
  identities = {
      "robot_pg": float(np.max(np.abs(_flat(P.policy_gradient_by_enumeration(robot.params, data))
                                      - _flat(P.expected_reward_gradient(robot.params, data))))),
      "robot_ce": float(np.max(np.abs(_flat(P.cross_entropy_gradient(robot.params, data))
                                      - _flat(P.label_scored_gradient(robot.params, data))))),
  }
  num_seeds = 4000 if quick else 20000
  cells = _cells(quick)
  rows = []
  # One compiled vmap over seeds per (problem, N) evaluates all its baselines on the same samples.
  for pname, n in dict.fromkeys((p, n) for p, _, n in cells):
    prob = probs[pname]
    truth = _flat(prob.true_grad(prob.params))
    bls = [b for p, b, m in cells if (p, m) == (pname, n)]
    ests = [pgjax.score_function(prob.f, prob.dist_fn, num_samples=n, baseline=b) for b in bls]
    keys = jax.random.split(jax.random.fold_in(key, n), num_seeds)
    per_seed = jax.jit(jax.vmap(lambda k, ests=ests, prob=prob: jnp.stack(
        [ravel_pytree(e(k, prob.params)[0])[0] for e in ests])))(keys)          # [S, baselines, D]
    per_seed = np.asarray(per_seed, np.float64)
    for j, bl in enumerate(bls):
      s = C.seed_stats(per_seed[:, j], truth)
      shrunk = C.seed_stats(per_seed[:, j], (n - 1) / n * truth)["max_abs_z"]
      rows.append(dict(problem=pname, baseline=bl, num_samples=n, total_variance=s["total_variance"],
                       total_variance_se=s["total_variance_se"],
                       bias_sq=float(np.sum((s["mean"] - truth) ** 2) - np.sum(s["mean_se"] ** 2)),
                       max_z_unbiased=s["max_abs_z"], max_z_shrunk=shrunk))
  return dict(identities=identities, num_seeds=num_seeds, rows=rows)


def compute_crossover(key, quick):
  """Paired E||g - grad J||^2 of optimal LOO minus LOO on the step problem, per N, both means at once."""
  num_seeds = 8000 if quick else 40000
  base = P.gaussian_step(3)
  params = jax.vmap(lambda m: P.gaussian_step(3, mean=jnp.full(3, m)).params)(jnp.asarray(STEP_MEANS))
  truth = jax.vmap(lambda p: ravel_pytree(base.true_grad(p))[0])(params)       # [M, D]
  rows = []
  for n in CROSS_SIZES:
    ests = [pgjax.score_function(base.f, base.dist_fn, num_samples=n, baseline=b)
            for b in ("leave_one_out", "optimal_leave_one_out")]

    def sq_errors(k, p, t, ests=ests):
      return jnp.stack([jnp.sum((ravel_pytree(e(k, p)[0])[0] - t) ** 2) for e in ests])

    keys = jax.random.split(jax.random.fold_in(key, n), num_seeds)
    run = jax.jit(lambda ks, sq=sq_errors: jax.vmap(
        lambda p, t: jax.lax.map(lambda k: sq(k, p, t), ks, batch_size=2000))(params, truth))
    e = np.asarray(run(keys), np.float64)                                          # [M, S, 2]
    for i, mu in enumerate(STEP_MEANS):
      d = e[i, :, 1] - e[i, :, 0]
      v = e[i].mean(0)
      rows.append(dict(mu=mu, num_samples=n, var_loo=float(v[0]), var_opt_loo=float(v[1]),
                       var_loo_se=float(e[i, :, 0].std(ddof=1) / np.sqrt(num_seeds)),
                       diff=float(d.mean()), diff_se=float(d.std(ddof=1) / np.sqrt(num_seeds))))
  return dict(num_seeds=num_seeds, sizes=CROSS_SIZES, means=STEP_MEANS, rows=rows)


def compute(key, quick):
  return {"table": compute_table(key, quick), "crossover": compute_crossover(jax.random.fold_in(key, 7), quick)}


def crossover_n(rows, mu):
  """Where the paired difference changes sign (log-linear interpolation in N); None if it never does."""
  sel = sorted((r for r in rows if r["mu"] == mu), key=lambda r: r["num_samples"])
  for a, b in zip(sel, sel[1:]):
    if a["diff"] > 0 >= b["diff"]:
      la, lb = np.log(a["num_samples"]), np.log(b["num_samples"])
      return float(np.exp(la + (lb - la) * a["diff"] / (a["diff"] - b["diff"])))
  return None


def claims(result):
  t, x = result["table"], result["crossover"]
  cell = {(r["problem"], r["baseline"], r["num_samples"]): r for r in t["rows"]}
  out = [CLAIMS["robot_pg"](t["identities"]["robot_pg"]), CLAIMS["robot_ce"](t["identities"]["robot_ce"])]
  g = {b: cell[("gaussian_quadratic", b, N_CLAIM)] for b in ("optimal", "mean", "none")}
  for a, b in (("optimal", "mean"), ("mean", "none")):
    out.append(CLAIMS["order"]([g[a]["total_variance"], g[a]["total_variance_se"], g[b]["total_variance"],
                                g[b]["total_variance_se"]], a=a, b=b))
  out.append(CLAIMS["rloo_unbiased"](max(cell[(p, "leave_one_out", N_CLAIM)]["max_z_unbiased"] for p in PROBLEMS)))
  out.append(CLAIMS["mean_shrunk"](max(cell[(p, "mean", N_CLAIM)]["max_z_shrunk"] for p in PROBLEMS)))
  out.append(CLAIMS["mean_detected"](min(cell[(p, "mean", N_CLAIM)]["max_z_unbiased"] for p in PROBLEMS)))
  b = cell[("bernoulli_quadratic", "leave_one_out", N_CLAIM)], cell[("bernoulli_quadratic", "none", N_CLAIM)]
  out.append(CLAIMS["rloo_vs_none"](b[0]["total_variance"] / b[1]["total_variance"]))
  xr = {(r["mu"], r["num_samples"]): r for r in x["rows"]}
  z = {k: r["diff"] / r["diff_se"] for k, r in xr.items()}
  for mu in STEP_MEANS:
    out.append(CLAIMS["loses"]([round(z[(mu, n)], 2) for n in LOSES_AT[mu]], mu=mu, sizes=list(LOSES_AT[mu])))
    out.append(CLAIMS["wins"]([round(z[(mu, n)], 2) for n in WINS_AT[mu]], mu=mu, sizes=list(WINS_AT[mu])))
  n_star = {mu: crossover_n(x["rows"], mu) for mu in STEP_MEANS}
  ok = all(v is not None for v in n_star.values())
  out.append(CLAIMS["earlier"]([n_star[-1.0], n_star[0.0] - n_star[-1.0]] if ok else None))
  measurements = [C.Measurement(f"step problem, mu={mu:g}: crossover N* (paired difference changes sign)",
                                None if v is None else round(v, 1), "log-linear interpolation between grid sizes")
                  for mu, v in n_star.items()]
  measurements += [C.Measurement(f"step problem, mu={r['mu']:g}, N={r['num_samples']}: tr Cov[opt LOO] / "
                                 "tr Cov[LOO]", round(r["var_opt_loo"] / r["var_loo"], 4),
                                 f"difference {r['diff']:.3g} ± {r['diff_se']:.2g} (paired SE)")
                   for r in x["rows"] if r["num_samples"] in (8, 64, 512)]
  return out, measurements


def plot(result, out):
  plt = C.pyplot()
  import matplotlib.ticker
  t, x = result["table"], result["crossover"]
  fig, axes = plt.subplots(1, len(PROBLEMS), figsize=(4.2 * len(PROBLEMS), 3.6))
  for ax, pname in zip(axes, PROBLEMS):
    for bl in BASELINES:
      sel = sorted((r for r in t["rows"] if r["problem"] == pname and r["baseline"] == bl),
                   key=lambda r: r["num_samples"])
      if not sel:
        continue
      ax.errorbar([r["num_samples"] for r in sel], [r["total_variance"] for r in sel],
                  yerr=[2 * r["total_variance_se"] for r in sel], label=bl, marker="o", ms=3, capsize=2)
    sizes = sorted({r["num_samples"] for r in t["rows"]})
    ax.set(xscale="log", yscale="log", xlabel="samples N", title=pname)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  axes[0].set_ylabel("total variance tr Cov[g] (± 2 SE)")
  axes[-1].legend(fontsize=7)
  fig.tight_layout()
  paths = [C.savefig(fig, out, f"{NAME}.png", dpi=120)]

  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for i, mu in enumerate(STEP_MEANS):
    sel = sorted((r for r in x["rows"] if r["mu"] == mu), key=lambda r: r["num_samples"])
    ns = np.array([r["num_samples"] for r in sel])
    rel = np.array([r["diff"] / r["var_loo"] for r in sel])
    rel_se = np.array([r["diff_se"] / r["var_loo"] for r in sel])
    axes[0].errorbar(ns, rel, yerr=2 * rel_se, marker="o", capsize=3, color=f"C{i}", label=f"mu = {mu:g}")
    n_star = crossover_n(x["rows"], mu)
    if n_star is not None:
      axes[0].axvline(n_star, color=f"C{i}", ls=":", lw=1)
      axes[0].annotate(f"N* ≈ {n_star:.0f}", (n_star, 0.0), textcoords="offset points", xytext=(4, 8 + 14 * i),
                       color=f"C{i}", fontsize=8)
    axes[1].plot(ns, [r["var_loo"] for r in sel], "o-", color=f"C{i}", label=f"LOO, mu = {mu:g}")
    axes[1].plot(ns, [r["var_opt_loo"] for r in sel], "s--", color=f"C{i}", label=f"optimal LOO, mu = {mu:g}")
  axes[0].axhline(0.0, color="k", lw=0.8)
  axes[0].set(xscale="log", xlabel="samples N", ylabel="(tr Cov[opt LOO] - tr Cov[LOO]) / tr Cov[LOO]",
              title=f"paired over {x['num_seeds']} seeds, ± 2 SE; above 0: optimal loses")
  axes[1].set(xscale="log", yscale="log", xlabel="samples N", ylabel="tr Cov[g]",
              title="Gaussian step problem, d = 3, threshold 0.5")
  for ax in axes:
    ax.set_xticks(list(CROSS_SIZES), [str(s) for s in CROSS_SIZES])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=8)
  fig.tight_layout()
  paths.append(C.savefig(fig, out, f"{NAME}_crossover.png", dpi=120))
  return paths


def main(argv=None):
  C.run(NAME, __doc__, compute, claims, plot, CLAIMS, argv)


if __name__ == "__main__":
  main()
