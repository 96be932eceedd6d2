r"""Cross-entropy as the label-scored policy gradient; cross-entropy vs REINFORCE training curves.

Part 1 (exact identities) on a classification robot (linear softmax policy, pgjax.problems):
  * E_{a~pi}[r grad log pi(a|s)] (enumerated over actions) == grad pi(y|s) (hand-written closed form);
  * sum_a r(s,a) grad log pi(a|s) (every action scored by its label) == -grad CE (optax).
Part 2: train the classifier from the same minibatches (B examples per step, Adam) with
  * cross-entropy (labels seen), and
  * REINFORCE as a contextual bandit (one sampled answer per example, reward 1 if correct) with no
    baseline, the batch mean (biased by (B-1)/B) and leave-one-out (unbiased),
over many seeds (vmap), reporting held-out argmax accuracy and expected accuracy (mean pi(y|s)) with
95% confidence intervals over seeds.

Run: ``python -m experiments.ce_vs_pg [--quick] [--out results]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import _common as C
from pgjax import baselines, losses, problems

NAME = "ce_vs_pg"
METHODS = ("cross_entropy", "reinforce_none", "reinforce_mean", "reinforce_leave_one_out")


def tree_max_abs_diff(a, b):
  return float(max(jnp.max(jnp.abs(x - y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


EARLY = 20  # early learning: held-out accuracy averaged over the first EARLY steps, per seed
LAST = 20   # final: averaged over the last LAST steps

CLAIMS = {
    "pg_identity": C.ClaimSpec("E_pi[r grad log pi] == grad pi(y|s) (max abs diff, float32)", C.lt(1e-6)),
    "ce_identity": C.ClaimSpec("label-scored PG == -grad cross-entropy (max abs diff; gradient scale {scale:.3g})",
                               C.lt(1e-6)),
    "ce_early": C.ClaimSpec(f"early held-out accuracy (mean over steps < {EARLY}): cross-entropy minus REINFORCE "
                            "without baseline, paired over seeds (labels for every example vs one sampled answer)",
                            C.ci_above(0.0)),
    "loo_early": C.ClaimSpec(f"early held-out accuracy (mean over steps < {EARLY}): leave-one-out minus no "
                             "baseline, paired over seeds", C.ci_above(0.0)),
    "pg_final": C.ClaimSpec(f"final expected accuracy mean pi(y|s) (last {LAST} steps): REINFORCE (which ascends "
                            "it) minus cross-entropy (which ascends log pi(y|s)), paired over seeds",
                            C.ci_above(0.0)),
    "mean_is_loo": C.ClaimSpec("batch-mean and leave-one-out baselines give the same Adam trajectory (LOO = mean-"
                               "baseline gradient x B/(B-1); Adam is scale-invariant): max over steps of the "
                               "seed-averaged |difference| of expected accuracy", C.lt(0.005)),
}


def compute(key, quick):
  num_seeds = 64 if quick else 256
  num_steps = 150 if quick else 400
  batch, lr = 32, 0.05
  k_data, k_test, k_params, k_train = jax.random.split(key, 4)

  # ---- Part 1: identities to float precision.
  problem, data = problems.classification_robot(k_data, num_examples=64, num_features=6, num_classes=4,
                                                init_scale=1.0)
  params = problem.params
  identities = dict(
      pg=tree_max_abs_diff(problems.policy_gradient_by_enumeration(params, data),
                           problems.expected_reward_gradient(params, data)),
      ce=tree_max_abs_diff(problems.label_scored_gradient(params, data), problems.cross_entropy_gradient(params, data)),
      scale=float(max(jnp.max(jnp.abs(x)) for x in jax.tree.leaves(problems.cross_entropy_gradient(params, data)))))

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
  curves = {m: {"accuracy": np.asarray(acc), "expected_accuracy": np.asarray(exp_acc)}
            for m in METHODS for acc, exp_acc in [make_run(m)(keys)]}
  return {"num_seeds": num_seeds, "num_steps": num_steps, "batch": batch, "learning_rate": lr,
          "identities": identities, "curves": curves}


def _paired(curves, m1, m2, which, sl):
  """Mean and 95% CI half-width of the per-seed difference m1 - m2 (same seeds/minibatches for both)."""
  d = np.asarray(curves[m1][which])[:, sl].mean(1) - np.asarray(curves[m2][which])[:, sl].mean(1)
  return [float(d.mean()), float(1.96 * d.std(ddof=1) / np.sqrt(d.size))]


def claims(result):
  c, n, ids = result["curves"], result["num_steps"], result["identities"]
  first, last = slice(0, EARLY), slice(n - LAST, n)
  same = float(np.max(np.mean(np.abs(np.asarray(c["reinforce_mean"]["expected_accuracy"])
                                     - np.asarray(c["reinforce_leave_one_out"]["expected_accuracy"])), 0)))
  out = [CLAIMS["pg_identity"](ids["pg"]), CLAIMS["ce_identity"](ids["ce"], scale=ids["scale"]),
         CLAIMS["ce_early"](_paired(c, "cross_entropy", "reinforce_none", "accuracy", first)),
         CLAIMS["loo_early"](_paired(c, "reinforce_leave_one_out", "reinforce_none", "accuracy", first)),
         CLAIMS["pg_final"](_paired(c, "reinforce_none", "cross_entropy", "expected_accuracy", last)),
         CLAIMS["mean_is_loo"](same)]
  ms = []
  for m in METHODS:
    for which in ("accuracy", "expected_accuracy"):
      x = np.asarray(c[m][which])[:, last].mean(1)
      ms.append(C.Measurement(f"{m}: final held-out {which.replace('_', ' ')} (last {LAST} steps)",
                              [round(float(x.mean()), 4), round(float(1.96 * x.std(ddof=1) / np.sqrt(x.size)), 4)],
                              "[mean, 95% CI half-width] over seeds"))
  return out, ms


def plot(result, out):
  plt = C.pyplot()
  c, n = result["curves"], result["num_steps"]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for m in METHODS:
    for ax, which in zip(axes, ("accuracy", "expected_accuracy")):
      x = np.asarray(c[m][which])
      mean, ci = x.mean(0), 1.96 * x.std(0, ddof=1) / np.sqrt(x.shape[0])
      ax.plot(mean, label=m)
      ax.fill_between(np.arange(n), mean - ci, mean + ci, alpha=0.25)
      ax.set_xlabel("step")
      ax.set_ylabel(f"held-out {which.replace('_', ' ')}")
  axes[0].legend()
  fig.suptitle(f"Cross-entropy vs REINFORCE (batch {result['batch']}, Adam {result['learning_rate']}, "
               f"{result['num_seeds']} seeds, 95% CI)")
  fig.tight_layout()
  return [C.savefig(fig, out, f"{NAME}.png", dpi=120)]


def main(argv=None):
  C.run(NAME, __doc__, compute, claims, plot, CLAIMS, argv)


if __name__ == "__main__":
  main()
