r"""Seed 000: cross-entropy as the label-scored policy gradient; CE vs REINFORCE training curves.

Part 1 (exact identities, SPEC 1.2) on the seed-000 classification robot (linear softmax policy):
  * E_{a~pi}[r grad log pi(a|s)] (enumerated over actions) == grad pi(y|s) (hand-written closed form);
  * sum_a r(s,a) grad log pi(a|s) (every action scored by its label) == -grad CE (optax).
Part 2: train the classifier from the same minibatches (B examples per step, Adam) with
  * cross-entropy (labels seen), and
  * REINFORCE as a contextual bandit (one sampled answer per example, reward 1 if correct) with no
    baseline, the batch mean (biased by (B-1)/B) and leave-one-out (unbiased),
over many seeds (vmap), reporting held-out argmax accuracy and expected accuracy (mean pi(y|s)) with
95% confidence intervals over seeds.

Run: python experiments/ce_vs_pg.py [--quick] [--out results]
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _common import Claim, parse_args, save_results  # noqa: E402
from pgjax import baselines, losses, problems  # noqa: E402

METHODS = ("cross_entropy", "reinforce_none", "reinforce_mean", "reinforce_leave_one_out")


def tree_max_abs_diff(a, b):
  return float(max(jnp.max(jnp.abs(x - y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def main():
  args = parse_args(__doc__.splitlines()[0])
  started = time.time()
  num_seeds = 64 if args.quick else 256
  num_steps = 150 if args.quick else 400
  batch, lr = 32, 0.05
  key = jax.random.key(args.seed)
  k_data, k_test, k_params, k_train = jax.random.split(key, 4)

  # ---- Part 1: identities to float precision.
  problem, data = problems.classification_robot(k_data, num_examples=64, num_features=6, num_classes=4,
                                                init_scale=1.0)
  params = problem.params
  d1 = tree_max_abs_diff(problems.policy_gradient_by_enumeration(params, data),
                         problems.expected_reward_gradient(params, data))
  d2 = tree_max_abs_diff(problems.label_scored_gradient(params, data),
                         problems.cross_entropy_gradient(params, data))
  scale = float(max(jnp.max(jnp.abs(x)) for x in jax.tree.leaves(problems.cross_entropy_gradient(params, data))))

  # ---- Part 2: training curves.
  num_features, num_classes = 8, 4
  # one draw from the same class centres, split into 512 training and 2048 held-out examples
  all_data = problems.make_classification_data(k_test, num_examples=512 + 2048, num_features=num_features,
                                               num_classes=num_classes, separation=1.0)
  train_data = problems.ClassificationData(all_data.features[:512], all_data.labels[:512])
  test_x, test_labels = all_data.features[512:], all_data.labels[512:]
  tx = optax.adam(lr)

  def logits_fn(p, x):
    return x @ p["w"] + p["b"]

  def evaluate(p):
    logits = logits_fn(p, test_x)
    acc = jnp.mean(jnp.argmax(logits, -1) == test_labels)
    exp_acc = jnp.mean(jnp.take_along_axis(jax.nn.softmax(logits), test_labels[:, None], -1))
    return acc, exp_acc

  def make_run(method):
    def run(key):
      p = {"w": jnp.zeros((num_features, num_classes)), "b": jnp.zeros((num_classes,))}
      s = tx.init(p)

      def step(carry, k):
        p, s = carry
        k_idx, k_act = jax.random.split(k)
        idx = jax.random.randint(k_idx, (batch,), 0, train_data.labels.shape[0])
        x, y = train_data.features[idx], train_data.labels[idx]
        if method == "cross_entropy":
          loss = lambda q: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits_fn(q, x), y))
        else:
          a = jax.random.categorical(k_act, logits_fn(p, x))
          r = (a == y).astype(jnp.float32)
          b = {"reinforce_none": baselines.none, "reinforce_mean": baselines.batch_mean,
               "reinforce_leave_one_out": baselines.leave_one_out}[method](r)

          def loss(q):
            lp = jnp.take_along_axis(jax.nn.log_softmax(logits_fn(q, x)), a[:, None], -1)[:, 0]
            return losses.score_function_surrogate(lp, r - b)
        g = jax.grad(loss)(p)
        u, s = tx.update(g, s, p)
        p = optax.apply_updates(p, u)
        return (p, s), evaluate(p)

      _, (acc, exp_acc) = jax.lax.scan(step, (p, s), jax.random.split(key, num_steps))
      return acc, exp_acc
    return jax.jit(jax.vmap(run))

  keys = jax.random.split(k_train, num_seeds)  # the same seeds (minibatches) for every method
  curves = {m: [np.asarray(x) for x in make_run(m)(keys)] for m in METHODS}

  def summary(x):
    mean = x.mean(0)
    ci = 1.96 * x.std(0, ddof=1) / np.sqrt(x.shape[0])
    return mean, ci

  final = {}
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for m in METHODS:
    for ax, x, name in zip(axes, curves[m], ("argmax accuracy", "expected accuracy")):
      mean, ci = summary(x)
      ax.plot(mean, label=m)
      ax.fill_between(np.arange(num_steps), mean - ci, mean + ci, alpha=0.25)
      ax.set_xlabel("step")
      ax.set_ylabel(f"held-out {name}")
    acc_m, acc_ci = summary(curves[m][0][:, -20:].mean(1, keepdims=True))
    exp_m, exp_ci = summary(curves[m][1][:, -20:].mean(1, keepdims=True))
    final[m] = {"accuracy": float(acc_m[0]), "accuracy_ci95": float(acc_ci[0]),
                "expected_accuracy": float(exp_m[0]), "expected_accuracy_ci95": float(exp_ci[0])}
  axes[0].legend()
  fig.suptitle(f"Cross-entropy vs REINFORCE (batch {batch}, Adam {lr}, {num_seeds} seeds, 95% CI)")
  fig.tight_layout()
  os.makedirs(args.out, exist_ok=True)
  fig_path = os.path.join(args.out, "ce_vs_pg.png")
  fig.savefig(fig_path, dpi=120)

  f = final
  early = 20  # early learning: held-out accuracy averaged over the first `early` steps, per seed

  def at(m, which, t):
    x = curves[m][which][:, :t].mean(1)
    return float(x.mean()), float(1.96 * x.std(ddof=1) / np.sqrt(x.size))

  def paired(m1, m2, which, sl):
    """Mean and 95% CI of the per-seed difference m1 - m2 (same seeds/minibatches for every method)."""
    d = curves[m1][which][:, sl].mean(1) - curves[m2][which][:, sl].mean(1)
    return float(d.mean()), float(1.96 * d.std(ddof=1) / np.sqrt(d.size))

  first, last = slice(0, early), slice(num_steps - 20, num_steps)
  ce_vs_none = paired("cross_entropy", "reinforce_none", 0, first)
  loo_vs_none = paired("reinforce_leave_one_out", "reinforce_none", 0, first)
  pg_vs_ce = paired("reinforce_none", "cross_entropy", 1, last)
  # max over steps of the seed-averaged |difference| of the expected-accuracy curves
  same = float(np.max(np.mean(np.abs(curves["reinforce_mean"][1] - curves["reinforce_leave_one_out"][1]), 0)))
  claims = [
      Claim("E_pi[r grad log pi] == grad pi(y|s) (max abs diff, float32)", d1, "< 1e-6", d1 < 1e-6),
      Claim("label-scored PG == -grad cross-entropy (max abs diff)", d2,
            f"< 1e-6 (gradient scale {scale:.3g})", d2 < 1e-6),
      Claim(f"early held-out accuracy (mean over steps < {early}): cross-entropy minus REINFORCE without "
            "baseline, paired over seeds (labels for every example vs one sampled answer)", ce_vs_none,
            "[diff, ci95]: diff - ci > 0", ce_vs_none[0] - ce_vs_none[1] > 0),
      Claim(f"early held-out accuracy (mean over steps < {early}): leave-one-out minus no baseline, paired",
            loo_vs_none, "[diff, ci95]: diff - ci > 0", loo_vs_none[0] - loo_vs_none[1] > 0),
      Claim("final expected accuracy mean pi(y|s) (last 20 steps): REINFORCE (which ascends it) minus "
            "cross-entropy (which ascends log pi(y|s)), paired", pg_vs_ce, "[diff, ci95]: diff - ci > 0",
            pg_vs_ce[0] - pg_vs_ce[1] > 0),
      Claim("batch-mean and leave-one-out baselines give the same Adam trajectory (LOO = mean-baseline "
            "gradient x B/(B-1); Adam is scale-invariant)", same, "max_t mean_seeds |diff| < 0.005 (Adam eps only)", same < 0.005),
  ]
  data_out = {"num_seeds": num_seeds, "num_steps": num_steps, "batch": batch, "learning_rate": lr,
              "final_last20_mean": final,
              "curves_mean": {m: {"accuracy": curves[m][0].mean(0), "expected_accuracy": curves[m][1].mean(0)}
                              for m in METHODS}}
  save_results("ce_vs_pg", args, claims=claims, data=data_out, figures=[fig_path], started=started)


if __name__ == "__main__":
  main()
