r"""Seed 003: "policy gradient and zeroth-order optimisation reach the same place".

A linear softmax classifier (``pgjax.problems.argmax_classifier``: 3 classes, 4 features, 128 examples) is
scored by its **argmax accuracy** :math:`R(\theta)` (piecewise constant: no useful gradient). Su (2020)
argues that the zeroth-order gradient of :math:`R`,
:math:`\tilde\nabla R = \mathbb{E}_u[(R(\theta + \epsilon u) - R(\theta)) u]/\epsilon`, is approximately the
policy gradient :math:`\nabla J_\tau` of the softmax expected reward
:math:`J_\tau = \frac1M\sum_m \mathrm{softmax}(z_m/\tau)_{y_m}`.

Part 1 (the claim, measured). For a grid of :math:`\epsilon` (= ``sigma``) and temperatures :math:`\tau`, at a
fixed random :math:`\theta`: the cosine between the zeroth-order estimate (antithetic, 32 evaluations)
and the exact :math:`\nabla J_\tau` (closed form), per seed (mean +- SE over seeds) and for the
seed-averaged estimate. The whole :math:`\epsilon` sweep is one ``jax.vmap`` over a traced ``sigma`` (one
compilation). Prediction: for this linear model, perturbing :math:`\theta` by :math:`\epsilon u` perturbs
example :math:`m`'s logits by Gaussian noise of scale :math:`s_m = \epsilon\sqrt{\|x_m\|^2 + 1}`, i.e. the
smoothed accuracy is a probit choice model; a softmax is the same model with Gumbel noise of scale
:math:`\tau`, so the best-matching temperature should be :math:`\tau^\star \approx \sqrt6\, s/\pi \approx
0.78\,\epsilon\,\overline{\sqrt{\|x\|^2+1}}` — the two gradients meet at a temperature that grows linearly
with :math:`\epsilon`, not at :math:`\tau = 1`. ``pgjax.sweep.gradient_stats`` (vmapped over ``sigma`` and
the target) gives the cosine at :math:`\tau^\star(\epsilon)` with its standard error.

Part 2 (training both, many seeds at once). From the same initialisation, 8 seeds each, equal budget of 32
passes over the data per step: ES (``pgjax.zeroth_order`` on the argmax accuracy + Adam), REINFORCE
(``pgjax.score_function`` with leave-one-out baseline on sampled answers from the softmax policy + Adam),
and the cross-entropy gradient (full-batch, the usual supervised ceiling). Accuracy curves with 2-SE bands.

Run: ``python experiments/zo_vs_pg.py [--quick]``; writes ``results/zo_vs_pg.json`` and
``results/zo_vs_pg.png``.
"""

from __future__ import annotations

import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import pgjax  # noqa: E402
from pgjax import problems  # noqa: E402
from _common import Claim, parse_args, save_results  # noqa: E402

NUM_EVALS = 32


def cosine_grid(g, targets):
  """g [S, D], targets [T, D] -> per-seed cosines [S, T] (0 for an all-zero estimate)."""
  gn = np.linalg.norm(g, axis=1, keepdims=True)
  tn = np.linalg.norm(targets, axis=1)
  dots = g @ targets.T
  return np.where(gn > 0, dots / np.maximum(gn, 1e-30) / tn[None, :], 0.0)


def part1(args, problem, data, key):
  params = problem.params
  flat, unravel = ravel_pytree(params)
  sigmas = np.array([0.01, 0.03, 0.1, 0.3, 1.0], np.float32)
  taus = np.logspace(-2.5, 1.0, 29).astype(np.float32)
  num_seeds = 1000 if args.quick else 4000
  acc_f = functools.partial(problems.argmax_accuracy, data=data)

  @jax.jit
  def all_grads(sig):
    def for_sigma(s):
      est = pgjax.zeroth_order(acc_f, num_directions=NUM_EVALS, sigma=s, scheme="antithetic")
      keys = jax.random.split(jax.random.fold_in(key, 1), num_seeds)
      return jax.lax.map(lambda k: ravel_pytree(est(k, params)[0])[0], keys, batch_size=250)
    return jax.vmap(for_sigma)(sig)

  grads = np.asarray(all_grads(jnp.asarray(sigmas)), np.float64)           # [nS, S, D]
  targets = np.stack([np.asarray(ravel_pytree(problems.softmax_expected_reward_gradient(params, data, t))[0],
                                 np.float64) for t in taus])                # [nT, D]
  cos_seed = np.stack([cosine_grid(g, targets) for g in grads])             # [nS, S, nT]
  cos_seed_mean = cos_seed.mean(1)
  cos_seed_se = cos_seed.std(1, ddof=1) / np.sqrt(num_seeds)
  mean_g = grads.mean(1)                                                    # [nS, D]
  cos_of_mean = cosine_grid(mean_g, targets)                                # [nS, nT]
  # the seed-averaged cosine's uncertainty: bootstrap over seeds (200 resamples)
  rng = np.random.default_rng(args.seed)
  boot = []
  for _ in range(200):
    idx = rng.integers(0, num_seeds, num_seeds)
    boot.append(cosine_grid(grads[:, idx].mean(1), targets))
  cos_of_mean_se = np.std(np.stack(boot), axis=0, ddof=1)
  scale = float(np.mean(np.sqrt(np.sum(np.asarray(data.features) ** 2, axis=1) + 1.0)))
  tau_pred = np.sqrt(6.0) / np.pi * sigmas * scale
  best_tau = taus[np.argmax(cos_of_mean, axis=1)]
  zero_frac = (np.linalg.norm(grads, axis=2) == 0).mean(1)

  # gradient_stats at the predicted temperature: vmap over traced sigma and target (one compilation).
  targets_pred = jnp.stack([ravel_pytree(problems.softmax_expected_reward_gradient(params, data, float(t)))[0]
                            for t in tau_pred])

  @jax.jit
  def stats_at_pred(sig, tgt):
    def one(s, t):
      est = pgjax.zeroth_order(acc_f, num_directions=NUM_EVALS, sigma=s, scheme="antithetic")
      st = pgjax.sweep.gradient_stats(est, params, jax.random.fold_in(key, 2), num_seeds=num_seeds,
                                      true_grad=unravel(t), chunk_size=250)
      return st.cosine, st.cosine_se, st.snr
    return jax.vmap(one)(sig, tgt)

  cos_pred, cos_pred_se, snr_pred = (np.asarray(v) for v in stats_at_pred(jnp.asarray(sigmas), targets_pred))
  for i, s in enumerate(sigmas):
    j = int(np.argmax(cos_of_mean[i]))
    print(f"eps={s:<5}: best tau {taus[j]:.4f} (predicted {tau_pred[i]:.4f}); cos(mean ZO, PG) "
          f"{cos_of_mean[i, j]:.3f} +- {cos_of_mean_se[i, j]:.3f}; per-seed cos {cos_seed_mean[i, j]:.3f} +- "
          f"{cos_seed_se[i, j]:.3f}; at tau*: gradient_stats cos {cos_pred[i]:.3f} +- {cos_pred_se[i]:.3f}; "
          f"cos(mean ZO, PG tau=1) {cos_of_mean[i, np.argmin(np.abs(taus - 1))]:.3f}; zero estimates {zero_frac[i]:.2f}")
  return dict(sigmas=sigmas, taus=taus, num_seeds=num_seeds, cos_seed_mean=cos_seed_mean, cos_seed_se=cos_seed_se,
              cos_of_mean=cos_of_mean, cos_of_mean_se=cos_of_mean_se, tau_pred=tau_pred, best_tau=best_tau,
              logit_noise_scale_per_eps=scale, cos_at_pred=cos_pred, cos_at_pred_se=cos_pred_se,
              snr_at_pred=snr_pred, zero_estimate_fraction=zero_frac)


def part2(args, problem, data, key):
  steps = 150 if args.quick else 400
  seeds = 8
  lr = 0.05
  sigma = 0.1
  acc_f = functools.partial(problems.argmax_accuracy, data=data)
  es_est = pgjax.zeroth_order(acc_f, num_directions=NUM_EVALS, sigma=sigma, scheme="antithetic")
  pg_est = pgjax.score_function(problem.f, problem.dist_fn, num_samples=NUM_EVALS, baseline="leave_one_out")

  def ce_est(k, p):
    return problems.cross_entropy_gradient(p, data), None

  opt = optax.adam(lr)

  def make_train(estimator):
    def train(k):
      def step(carry, kk):
        p, s = carry
        g, _ = estimator(kk, p)
        upd, s = opt.update(jax.tree_util.tree_map(jnp.negative, g), s, p)  # ascend: minimise -objective
        p = optax.apply_updates(p, upd)
        return (p, s), problems.argmax_accuracy(p, data)
      p0 = problem.params
      (_, _), accs = jax.lax.scan(step, (p0, opt.init(p0)), jax.random.split(k, steps))
      return accs
    return jax.jit(jax.vmap(train))

  keys = jax.random.split(jax.random.fold_in(key, 3), seeds)
  curves = {name: np.asarray(make_train(e)(keys)) for name, e in
            (("ES (zeroth-order on argmax accuracy)", es_est),
             ("REINFORCE (softmax expected reward, LOO)", pg_est),
             ("cross-entropy (supervised)", ce_est))}
  for name, c in curves.items():
    print(f"{name}: final accuracy {c[:, -1].mean():.3f} +- {c[:, -1].std(ddof=1) / np.sqrt(seeds):.3f} "
          f"(start {float(problems.argmax_accuracy(problem.params, data)):.3f})")
  return dict(steps=steps, seeds=seeds, lr=lr, sigma=sigma, evaluations_per_step=NUM_EVALS,
              curves={k: v for k, v in curves.items()})


def main():
  started = time.time()
  args = parse_args(__doc__.splitlines()[0])
  key = jax.random.key(args.seed)
  problem, data = problems.argmax_classifier(jax.random.fold_in(key, 0), num_examples=128, num_features=4,
                                             num_classes=3, init_scale=0.5, separation=1.5)
  r1 = part1(args, problem, data, key)
  r2 = part2(args, problem, data, key)

  claims = []
  best = r1["cos_of_mean"].max(axis=1)
  claims.append(Claim("for every eps in {0.03..1}, some temperature gives cos(seed-averaged ZO gradient of argmax "
                      "accuracy, exact PG of softmax expected reward) >= 0.9",
                      [round(float(v), 3) for v in best[1:]], ">= 0.9", bool(np.all(best[1:] >= 0.9))))
  ratio = r1["best_tau"] / r1["tau_pred"]
  claims.append(Claim("best-matching temperature / probit prediction 0.78*eps*mean sqrt(|x|^2+1)",
                      [round(float(v), 2) for v in ratio], "within [0.5, 2] for eps >= 0.03",
                      bool(np.all((ratio[1:] >= 0.5) & (ratio[1:] <= 2.0)))))
  mono = bool(np.all(np.diff(r1["best_tau"]) > 0))
  claims.append(Claim("best-matching temperature increases with eps", [float(t) for t in r1["best_tau"]],
                      "strictly increasing", mono))
  i1 = int(np.argmin(np.abs(r1["taus"] - 1.0)))
  claims.append(Claim("per-seed cosine (32 evaluations) at the predicted temperature, eps=0.1, gradient_stats",
                      f"{r1['cos_at_pred'][2]:.3f} +- {r1['cos_at_pred_se'][2]:.3f}", "reported (> 0)",
                      bool(r1["cos_at_pred"][2] - 5 * r1["cos_at_pred_se"][2] > 0)))
  claims.append(Claim("cos(seed-averaged ZO gradient at eps=0.01, PG at tau=1) (mismatched temperature)",
                      round(float(r1["cos_of_mean"][0, i1]), 3), "reported", True))
  fin = {k: v[:, -1] for k, v in r2["curves"].items()}
  ce = fin["cross-entropy (supervised)"].mean()
  for name in ("ES (zeroth-order on argmax accuracy)", "REINFORCE (softmax expected reward, LOO)"):
    m = fin[name].mean()
    claims.append(Claim(f"{name}: final train accuracy vs cross-entropy", f"{m:.3f} vs {ce:.3f}",
                        ">= cross-entropy - 0.05", bool(m >= ce - 0.05)))

  # ---- figure
  fig, axes = plt.subplots(1, 3, figsize=(18, 5))
  ax = axes[0]
  im = ax.pcolormesh(r1["taus"], r1["sigmas"], r1["cos_of_mean"], shading="nearest", vmin=0, vmax=1, cmap="viridis")
  ax.plot(r1["tau_pred"], r1["sigmas"], "w--", label=r"probit prediction $\tau^\star = 0.78\,\epsilon\,\bar s$")
  ax.plot(r1["best_tau"], r1["sigmas"], "r^", label="best temperature (measured)")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel(r"softmax temperature $\tau$")
  ax.set_ylabel(r"zeroth-order smoothing $\epsilon$")
  ax.set_title(f"cos(mean ZO grad of argmax acc, PG of softmax reward), {r1['num_seeds']} seeds", fontsize=9)
  ax.legend(fontsize=8, loc="lower right")
  fig.colorbar(im, ax=ax)
  ax = axes[1]
  for i, s in enumerate(r1["sigmas"]):
    ax.errorbar(r1["taus"], r1["cos_seed_mean"][i], yerr=2 * r1["cos_seed_se"][i], fmt="-", capsize=2,
                color=f"C{i}", label=rf"$\epsilon$={s:g}: per-seed ({NUM_EVALS} evals)")
    ax.errorbar(r1["taus"], r1["cos_of_mean"][i], yerr=2 * r1["cos_of_mean_se"][i], fmt=":", color=f"C{i}",
                alpha=0.7)
  ax.set_xscale("log")
  ax.set_xlabel(r"softmax temperature $\tau$")
  ax.set_ylabel("cosine to the policy gradient")
  ax.set_title("solid: mean per-seed cosine; dotted: cosine of the mean (2 SE)")
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  ax = axes[2]
  steps = np.arange(1, r2["steps"] + 1)
  for i, (name, c) in enumerate(r2["curves"].items()):
    m, se = c.mean(0), c.std(0, ddof=1) / np.sqrt(c.shape[0])
    ax.plot(steps, m, color=f"C{i}", label=name)
    ax.fill_between(steps, m - 2 * se, m + 2 * se, color=f"C{i}", alpha=0.25)
  ax.set_xlabel(f"step ({NUM_EVALS} passes over the data per step for ES and REINFORCE)")
  ax.set_ylabel("train argmax accuracy")
  ax.set_title(f"training, {r2['seeds']} seeds (2-SE bands)")
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  os.makedirs(args.out, exist_ok=True)
  png = os.path.join(args.out, "zo_vs_pg.png")
  fig.savefig(png, dpi=110)
  save_results("zo_vs_pg", args, claims=claims, data={"part1": r1, "part2": r2}, figures=[png], started=started)


if __name__ == "__main__":
  main()
