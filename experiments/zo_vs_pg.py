r"""Policy gradient and zeroth-order optimisation reach the same place (Su, 2020), measured.

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

Run: ``python -m experiments.zo_vs_pg [--quick] [--out results]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import pgjax
from experiments import _common as C
from pgjax import problems

NAME = "zo_vs_pg"
NUM_EVALS = 32


def cosine_grid(g, targets):
  """g [S, D], targets [T, D] -> per-seed cosines [S, T] (0 for an all-zero estimate)."""
  gn = np.linalg.norm(g, axis=1, keepdims=True)
  tn = np.linalg.norm(targets, axis=1)
  dots = g @ targets.T
  return np.where(gn > 0, dots / np.maximum(gn, 1e-30) / tn[None, :], 0.0)


def part1(quick, seed, problem, data, key):
  params = problem.params
  flat, unravel = ravel_pytree(params)
  sigmas = np.array([0.01, 0.03, 0.1, 0.3, 1.0], np.float32)
  taus = np.logspace(-2.5, 1.0, 29).astype(np.float32)
  num_seeds = 1000 if quick else 4000
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
  rng = np.random.default_rng(seed)
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


def part2(quick, problem, data, key):
  steps = 150 if quick else 400
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


CLAIMS = {
    "best_cos": C.ClaimSpec("for every eps in {{0.03, 0.1, 0.3, 1}}, some temperature gives cos(seed-averaged ZO "
                            "gradient of argmax accuracy, exact PG of softmax expected reward)", C.ge(0.9)),
    "tau_ratio": C.ClaimSpec("best-matching temperature / probit prediction 0.78 eps mean sqrt(|x|^2+1), "
                             "eps >= 0.03", C.between(0.5, 2.0)),
    "tau_mono": C.ClaimSpec("best-matching temperature increases with eps: successive differences", C.gt(0.0)),
    "per_seed_cos": C.ClaimSpec("per-seed cosine (32 evaluations) to the PG at the predicted temperature, "
                                "eps=0.1 (gradient_stats) [value: cosine, SE]", C.above_se(0.5, 5)),
    "mismatch": C.ClaimSpec("a mismatched temperature loses the match: best cosine at eps=0.01 minus cos(seed-"
                            "averaged ZO gradient, PG at tau=1)", C.gt(0.5)),
    "train": C.ClaimSpec("{name}: final train accuracy minus cross-entropy's (mean over seeds)", C.ge(-0.05)),
}
TRAINED = ("ES (zeroth-order on argmax accuracy)", "REINFORCE (softmax expected reward, LOO)")


def compute(key, quick):
  problem, data = problems.argmax_classifier(jax.random.fold_in(key, 0), num_examples=128, num_features=4,
                                             num_classes=3, init_scale=0.5, separation=1.5)
  return {"part1": part1(quick, 0, problem, data, key), "part2": part2(quick, problem, data, key)}


def claims(result):
  r1, r2 = result["part1"], result["part2"]
  taus, sigmas = np.asarray(r1["taus"]), np.asarray(r1["sigmas"])
  cos_of_mean = np.asarray(r1["cos_of_mean"])
  best = cos_of_mean.max(axis=1)
  best_tau = np.asarray(r1["best_tau"])
  ratio = best_tau / np.asarray(r1["tau_pred"])
  i01 = int(np.argmin(np.abs(sigmas - 0.1)))
  i1 = int(np.argmin(np.abs(taus - 1.0)))
  out = [CLAIMS["best_cos"]([round(float(v), 3) for v in best[1:]]),
         CLAIMS["tau_ratio"]([round(float(v), 2) for v in ratio[1:]]),
         CLAIMS["tau_mono"]([float(v) for v in np.diff(best_tau)]),
         CLAIMS["per_seed_cos"]([float(r1["cos_at_pred"][i01]), float(r1["cos_at_pred_se"][i01])]),
         CLAIMS["mismatch"](float(best[0] - cos_of_mean[0, i1]))]
  fin = {k: np.asarray(v)[:, -1] for k, v in r2["curves"].items()}
  ce = fin["cross-entropy (supervised)"].mean()
  out += [CLAIMS["train"](float(fin[name].mean() - ce), name=name) for name in TRAINED]
  ms = [C.Measurement("best-matching temperature per eps", {f"{s:g}": float(t) for s, t in zip(sigmas, best_tau)},
                      "grid of 29 temperatures"),
        C.Measurement("fraction of all-zero ZO estimates per eps (argmax accuracy is piecewise constant)",
                      {f"{s:g}": float(z) for s, z in zip(sigmas, r1["zero_estimate_fraction"])}, ""),
        C.Measurement("final train accuracy (mean over seeds)", {k: round(float(v.mean()), 3) for k, v in fin.items()},
                      f"{r2['seeds']} seeds, {r2['steps']} steps")]
  return out, ms


def plot(result, out):
  plt = C.pyplot()
  r1, r2 = result["part1"], result["part2"]
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
    c = np.asarray(c)
    m, se = c.mean(0), c.std(0, ddof=1) / np.sqrt(c.shape[0])
    ax.plot(steps, m, color=f"C{i}", label=name)
    ax.fill_between(steps, m - 2 * se, m + 2 * se, color=f"C{i}", alpha=0.25)
  ax.set_xlabel(f"step ({NUM_EVALS} passes over the data per step for ES and REINFORCE)")
  ax.set_ylabel("train argmax accuracy")
  ax.set_title(f"training, {r2['seeds']} seeds (2-SE bands)")
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  return [C.savefig(fig, out, f"{NAME}.png")]


def main(argv=None):
  C.run(NAME, __doc__, compute, claims, plot, CLAIMS, argv)


if __name__ == "__main__":
  main()
