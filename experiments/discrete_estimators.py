r"""Gradient estimators for binary latent variables on a binary VAE, against the exact gradient.

Problem: :func:`pgjax.problems.binary_vae` (a sigmoid belief network with :math:`K = 8` Bernoulli latents,
16 binary pixels, 16 synthetic examples), whose ELBO gradient with respect to the encoder is exact by
enumerating the :math:`2^K` latent states. The estimand is the encoder gradient
:math:`\nabla_\phi\,\mathbb{E}_{q_\phi(z|x)}[\ell(x, z)]` (136 coordinates), at two fixed parameter values:
the initial parameters, and parameters after 200 Adam steps on the exact ELBO (a sharper posterior, encoder
logits within about +-3).

Every estimator gets the same budget of :math:`B = 6` evaluations of the ELBO integrand ``f`` (one
evaluation = all 16 examples at one joint latent sample):

* REINFORCE (score function, no baseline) and RLOO (leave-one-out baseline), 6 samples;
* ARM and DisARM, 3 antithetic pairs;
* REBAR, 2 samples (3 evaluations each), at :math:`\eta = 1, \tau = 0.5` and with :math:`(\eta, \tau)` tuned
  by Adam on the squared estimate (Tucker et al. 2017, section 3.3);
* RELAX, 2 samples, control variate :math:`c_\phi(z) = \eta f(\sigma_\tau(z)) + r_\rho(z)` with a small
  network :math:`r_\rho` of the relaxed latents and the data, :math:`\phi` trained by Adam on the squared
  estimate (Grathwohl et al. 2018);
* Gumbel-softmax (binary Concrete) and straight-through Gumbel at :math:`\tau = 0.5`, 6 samples (biased; they
  also differentiate ``f``).

Not included: measure-valued gradients (2 evaluations per latent coordinate: 256 per sample here, far above
the budget) and the unordered set estimator (defined for one categorical variable, not a product of
Bernoullis).

For each estimator, over many seeds: the total variance :math:`\operatorname{tr}\operatorname{Cov}[\hat g]`
with its standard error, and the bias against the exact gradient (largest per-coordinate :math:`|z|`, and the
relative bias norm :math:`\|\bar g - \nabla\|/\|\nabla\|`).

Second part: the binary VAE trained from its initial parameters for 500 steps (100 with ``--quick``) on 16
seeds with the encoder gradient from RLOO, DisARM, REBAR and RELAX (their control-variate parameters tuned
online by one Adam step on the squared estimate per step), straight-through Gumbel, or the exact gradient
(``--quick``: exact, RLOO and RELAX only); decoder and prior gradients exact. Curves of the exact ELBO and of the encoder estimator's log variance (8
extra estimates at the current parameters) with 95% confidence bands over seeds.

Run: ``python -m experiments.discrete_estimators [--quick] [--out results]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import pgjax
from experiments import _common as C
from pgjax import problems as P

NAME = "discrete_estimators"
BUDGET = 6
TUNE_STEPS = 300
ATOL = 1e-6   # float32 accuracy of the exact gradient (against a float64 enumeration: 3e-7)
ORDER = ("REINFORCE", "RLOO", "ARM", "DisARM", "REBAR", "Gumbel-softmax", "ST Gumbel", "RELAX", "REBAR (tuned)")
UNBIASED = ("REINFORCE", "RLOO", "ARM", "DisARM", "REBAR", "REBAR (tuned)", "RELAX")
BIASED = ("Gumbel-softmax", "ST Gumbel")

CLAIMS = {
    "unbiased": C.ClaimSpec("{point}: {name} is unbiased: largest |z| of the mean against the exact gradient "
                            "over 136 coordinates (differences below 1e-6 ignored)", C.lt(5.0)),
    "biased": C.ClaimSpec("{point}: {name} (tau = 0.5) is biased: largest |z| against the exact gradient",
                          C.gt(5.0)),
    "disarm": C.ClaimSpec("{point}: tr Cov[DisARM] - tr Cov[ARM] (same uniforms, paired) is below 0 "
                          "[value: difference, SE]", C.below_se(0.0)),
    "rloo": C.ClaimSpec("{point}: tr Cov[RLOO] < tr Cov[REINFORCE] at equal evaluations "
                        "[value: a, SE_a, b, SE_b]", C.separated_se(5)),
    "relax_vs_rebar": C.ClaimSpec("{point}: tr Cov[RELAX] < tr Cov[REBAR (eta=1, tau=0.5)] at equal evaluations "
                                  "[value: a, SE_a, b, SE_b]", C.separated_se(5)),
    "trains": C.ClaimSpec("training with {name} for {steps} steps raises the exact ELBO: final minus initial, "
                          "mean over 16 seeds [value: estimate, 95% CI half-width]", C.ci_above(0.0)),
    "tuned_rebar": C.ClaimSpec("{point}: tuning (eta, tau) on the squared estimate lowers REBAR's variance "
                               "[value: a, SE_a, b, SE_b]", C.separated_se(5)),
}


def _sq_norm(tree):
  return sum(jnp.sum(x ** 2) for x in jax.tree_util.tree_leaves(tree))


def _relax_control_variate(f, data):
  """c_phi(z) = eta f(sigmoid(z / tau)) + mean_m MLP([sigmoid(z_m), x_m])."""
  def c(phi, z):
    s = jax.nn.sigmoid(z)
    h = jnp.tanh(s @ phi["w_z"] + data @ phi["w_x"] + phi["b1"][None, :])
    r = jnp.mean(h @ phi["w2"]) + phi["b2"]
    return phi["eta"] * f(jax.nn.sigmoid(z / jnp.exp(phi["log_tau"]))) + r
  return c


def _init_relax(key, num_latents, num_pixels, hidden=32):
  k1, k2, k3 = jax.random.split(key, 3)
  return {"w_z": 0.1 * jax.random.normal(k1, (num_latents, hidden)),
          "w_x": 0.1 * jax.random.normal(k2, (num_pixels, hidden)), "b1": jnp.zeros(hidden),
          "w2": 0.1 * jax.random.normal(k3, (hidden,)), "b2": jnp.zeros(()),
          "eta": jnp.ones(()), "log_tau": jnp.log(jnp.asarray(0.5))}


def _tune(loss, phi, key, steps, lr=1e-2, batch=8):
  """Adam on the mean squared estimate over ``batch`` keys per step (the variance gradient)."""
  opt = optax.adam(lr)

  def step(carry, k):
    phi, state = carry
    g = jax.grad(lambda p: jnp.mean(jax.vmap(lambda kk: loss(p, kk))(jax.random.split(k, batch))))(phi)
    updates, state = opt.update(g, state)
    return (optax.apply_updates(phi, updates), state), None

  (phi, _), _ = jax.lax.scan(step, (phi, opt.init(phi)), jax.random.split(key, steps))
  return phi


def _trained_params(vae, steps=200):
  """The model after ``steps`` Adam steps (learning rate 0.01) on the exact ELBO (every parameter)."""
  opt = optax.adam(1e-2)

  def step(carry, _):
    params, state = carry
    g = jax.grad(lambda p: -vae.elbo(p))(params)
    updates, state = opt.update(g, state)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.lax.scan(step, (vae.params, opt.init(vae.params)), None, length=steps)
  return params


def _estimators(f, dist_fn, data, num_latents, num_pixels):
  return {
      "REINFORCE": pgjax.score_function(f, dist_fn, num_samples=BUDGET),
      "RLOO": pgjax.score_function(f, dist_fn, num_samples=BUDGET, baseline="leave_one_out"),
      "ARM": pgjax.arm(f, dist_fn, num_pairs=BUDGET // 2),
      "DisARM": pgjax.disarm(f, dist_fn, num_pairs=BUDGET // 2),
      "REBAR": pgjax.rebar(f, dist_fn, num_samples=BUDGET // 3, temperature=0.5, eta=1.0),
      "RELAX": pgjax.relax(f, dist_fn, control_variate=_relax_control_variate(f, data),
                           control_params=_init_relax(jax.random.key(0), num_latents, num_pixels),
                           num_samples=BUDGET // 3, control_evaluations=1),
      "Gumbel-softmax": pgjax.gumbel_softmax(f, dist_fn, num_samples=BUDGET, temperature=0.5),
      "ST Gumbel": pgjax.gumbel_softmax(f, dist_fn, num_samples=BUDGET, temperature=0.5, straight_through=True),
  }


def _estimates(key, vae, params, num_seeds, tune_steps):
  """Per-seed estimates ``[S, E, D]`` of every estimator at ``params`` (traced: one compilation for all points)."""
  enc = params["encoder"]
  data = vae.data

  def dist_fn(e):
    return vae.dist_fn({**params, "encoder": e})

  def f(z):
    return vae.f(params, z)

  num_latents, num_pixels = enc["w"].shape[1], enc["w"].shape[0]
  ests = _estimators(f, dist_fn, data, num_latents, num_pixels)
  k_rebar, k_relax, k_seeds = jax.random.split(key, 3)
  rebar_est, relax_est = ests["REBAR"], ests["RELAX"]

  def rebar_loss(phi, k):
    return _sq_norm(rebar_est(k, enc, eta=phi["eta"], temperature=jnp.exp(phi["log_tau"]))[0])

  def relax_loss(phi, k):
    return _sq_norm(relax_est(k, enc, control_params=phi)[0])

  rebar_phi = _tune(rebar_loss, {"eta": jnp.ones(()), "log_tau": jnp.log(jnp.asarray(0.5))}, k_rebar, tune_steps)
  relax_phi = _tune(relax_loss, _init_relax(jax.random.key(0), num_latents, num_pixels), k_relax, tune_steps)

  def all_estimates(k):
    out = [ests[n](k, enc) for n in ORDER[:-2]]
    out.append(relax_est(k, enc, control_params=relax_phi))
    out.append(rebar_est(k, enc, eta=rebar_phi["eta"], temperature=jnp.exp(rebar_phi["log_tau"])))
    for _, aux in out:   # equal budgets, checked at trace time
      assert int(aux.num_evaluations) == BUDGET, aux
    return jnp.stack([ravel_pytree(g)[0] for g, _ in out])

  grads = jax.lax.map(all_estimates, jax.random.split(k_seeds, num_seeds), batch_size=250)
  tuned = {"rebar_eta": rebar_phi["eta"], "rebar_temperature": jnp.exp(rebar_phi["log_tau"]),
           "relax_eta": relax_phi["eta"], "relax_temperature": jnp.exp(relax_phi["log_tau"])}
  return grads, tuned


TRAIN_ESTIMATORS = ("exact", "RLOO", "DisARM", "REBAR (online)", "RELAX (online)", "ST Gumbel")
TRAIN_ESTIMATORS_QUICK = ("exact", "RLOO", "RELAX (online)")   # fewer compilations


def _train_curves(key, vae, name, num_seeds, num_logs, log_every, probe):
  r"""Trains the binary VAE from its initial parameters on ``num_seeds`` seeds with one encoder estimator.

  The encoder gradient is the estimator's (``BUDGET`` evaluations of ``f``); the decoder and prior gradients
  are exact (enumeration), so the curves differ only through the encoder estimator. REBAR's
  :math:`(\eta, \log\tau)` and RELAX's :math:`\phi` take one Adam step on the squared estimate per step
  (the online tuning of both papers). Every ``log_every`` steps: the exact ELBO and the encoder estimator's
  total variance at the current parameters from ``probe`` extra estimates.
  """
  data = vae.data
  num_latents, num_pixels = vae.params["encoder"]["w"].shape[1], data.shape[1]
  opt, cv_opt = optax.adam(1e-2), optax.adam(1e-2)

  def encoder_estimate(k, params, cv):
    def dist_fn(e):
      return vae.dist_fn({**params, "encoder": e})

    def f(z):
      return vae.f(jax.lax.stop_gradient(params), z)

    enc = params["encoder"]
    if name == "exact":
      return P.binary_vae_encoder_gradient(params, data)
    if name == "RLOO":
      return pgjax.score_function(f, dist_fn, num_samples=BUDGET, baseline="leave_one_out")(k, enc)[0]
    if name == "DisARM":
      return pgjax.disarm(f, dist_fn, num_pairs=BUDGET // 2)(k, enc)[0]
    if name == "ST Gumbel":
      return pgjax.gumbel_softmax(f, dist_fn, num_samples=BUDGET, temperature=0.5, straight_through=True)(
          k, enc)[0]
    if name == "REBAR (online)":
      return pgjax.rebar(f, dist_fn, num_samples=BUDGET // 3)(k, enc, eta=cv["eta"],
                                                              temperature=jnp.exp(cv["log_tau"]))[0]
    return pgjax.relax(f, dist_fn, control_variate=_relax_control_variate(f, data), control_params=cv,
                       num_samples=BUDGET // 3, control_evaluations=1)(k, enc)[0]

  cv0 = (_init_relax(jax.random.key(0), num_latents, num_pixels) if name == "RELAX (online)"
         else {"eta": jnp.ones(()), "log_tau": jnp.log(jnp.asarray(0.5))})
  tunes = name in ("REBAR (online)", "RELAX (online)")

  def step(carry, k):
    params, state, cv, cv_state = carry
    g_enc = encoder_estimate(k, params, cv)
    g_rest = jax.grad(vae.elbo)(params)
    grads = {**g_rest, "encoder": g_enc}
    updates, state = opt.update(jax.tree_util.tree_map(jnp.negative, grads), state, params)
    if tunes:
      g_cv = jax.grad(lambda c: _sq_norm(encoder_estimate(k, params, c)))(cv)
      cv_updates, cv_state = cv_opt.update(g_cv, cv_state, cv)
      cv = optax.apply_updates(cv, cv_updates)
    return (optax.apply_updates(params, updates), state, cv, cv_state), None

  def log_block(carry, k):
    k_train, k_probe = jax.random.split(k)
    carry, _ = jax.lax.scan(step, carry, jax.random.split(k_train, log_every))
    params, _, cv, _ = carry
    g = jax.vmap(lambda kk: ravel_pytree(encoder_estimate(kk, params, cv))[0])(jax.random.split(k_probe, probe))
    variance = jnp.sum(jnp.var(g, axis=0, ddof=1))
    return carry, (vae.elbo(params), variance)

  def one_seed(k):
    init = (vae.params, opt.init(vae.params), cv0, cv_opt.init(cv0))
    _, (elbos, variances) = jax.lax.scan(log_block, init, jax.random.split(k, num_logs))
    return elbos, variances

  return jax.vmap(one_seed)(jax.random.split(key, num_seeds))


def compute_training(key, quick):
  num_seeds, log_every = 16, 10
  num_logs = 10 if quick else 50
  vae = P.binary_vae()
  names = TRAIN_ESTIMATORS_QUICK if quick else TRAIN_ESTIMATORS
  out = {"num_seeds": num_seeds, "log_every": log_every, "steps": log_every * num_logs,
         "initial_elbo": float(vae.elbo(vae.params)), "curves": {}}
  for i, name in enumerate(names):
    elbos, variances = jax.jit(lambda k, name=name: _train_curves(k, vae, name, num_seeds, num_logs, log_every,
                                                                   probe=8))(jax.random.fold_in(key, i))
    out["curves"][name] = {"elbo": np.asarray(elbos, np.float64), "variance": np.asarray(variances, np.float64)}
  return out


def _mean_ci(x):
  """Mean over seeds (axis 0) and the half-width of its 95% t interval."""
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  t95 = {16: 2.131}.get(n, 1.96)
  return x.mean(0), t95 * x.std(0, ddof=1) / np.sqrt(n)


def _max_z(mean, se, truth, atol=ATOL):
  """Largest per-coordinate ``(|mean - truth| - atol)_+ / SE`` (``atol``: float32 accuracy of the truth)."""
  excess = np.maximum(np.abs(mean - truth) - atol, 0.0)
  return float(np.max(np.where(excess > 0, excess / np.maximum(se, 1e-300), 0.0)))


def compute(key, quick):
  num_seeds = 1000 if quick else 10000
  tune_steps = 100 if quick else TUNE_STEPS
  vae = P.binary_vae()
  points = {"initial": vae.params, "trained": jax.jit(lambda: _trained_params(vae))()}
  run = jax.jit(lambda k, p: _estimates(k, vae, p, num_seeds, tune_steps))
  out = {"num_seeds": num_seeds, "budget": BUDGET, "num_latents": 8, "tune_steps": tune_steps, "atol": ATOL,
         "points": {}}
  for i, (point, params) in enumerate(points.items()):
    grads, tuned = run(jax.random.fold_in(key, i), params)
    grads = np.asarray(grads, np.float64)                                          # [S, E, D]
    truth = np.asarray(ravel_pytree(P.binary_vae_encoder_gradient(params, vae.data))[0], np.float64)
    rows = {}
    for j, name in enumerate(ORDER):
      st = C.seed_stats(grads[:, j])
      rows[name] = {"variance": st["total_variance"], "variance_se": st["total_variance_se"],
                    "max_abs_z": _max_z(st["mean"], st["mean_se"], truth),
                    "relative_bias": float(np.linalg.norm(st["mean"] - truth) / np.linalg.norm(truth)),
                    "noise_of_relative_bias": float(np.sqrt(st["total_variance"] / num_seeds)
                                                    / np.linalg.norm(truth))}
    out["points"][point] = {
        "rows": rows, "grad_norm": float(np.linalg.norm(truth)), "elbo": float(vae.elbo(params)),
        "disarm_minus_arm": C.paired_variance_difference(grads[:, ORDER.index("DisARM")],
                                                         grads[:, ORDER.index("ARM")]),
        "tuned": {k: float(v) for k, v in tuned.items()}}
  out["training"] = compute_training(jax.random.fold_in(key, 100), quick)
  return out


def claims(result):
  cl, ms = [], []
  for point, res in result["points"].items():
    rows = res["rows"]
    for name in UNBIASED:
      cl.append(CLAIMS["unbiased"](rows[name]["max_abs_z"], point=point, name=name))
    for name in BIASED:
      cl.append(CLAIMS["biased"](rows[name]["max_abs_z"], point=point, name=name))
    cl.append(CLAIMS["disarm"](res["disarm_minus_arm"], point=point))

    def pair(a, b):
      return [rows[a]["variance"], rows[a]["variance_se"], rows[b]["variance"], rows[b]["variance_se"]]

    cl.append(CLAIMS["rloo"](pair("RLOO", "REINFORCE"), point=point))
    cl.append(CLAIMS["relax_vs_rebar"](pair("RELAX", "REBAR"), point=point))
    cl.append(CLAIMS["tuned_rebar"](pair("REBAR (tuned)", "REBAR"), point=point))
    table = {n: {"tr Cov": f"{r['variance']:.4g} +- {r['variance_se']:.2g}", "max |z|": round(r["max_abs_z"], 2),
                 "rel. bias": f"{r['relative_bias']:.3g} (noise {r['noise_of_relative_bias']:.2g})"}
             for n, r in rows.items()}
    ms.append(C.Measurement(f"{point}: variance and bias of every estimator at {result['budget']} evaluations",
                            table, f"||grad|| = {res['grad_norm']:.4g}, ELBO = {res['elbo']:.4g}, "
                            f"{result['num_seeds']} seeds"))
    ms.append(C.Measurement(
        f"{point}: tr Cov of RELAX, REBAR (eta=1, tau=0.5), REBAR (tuned), RLOO, DisARM at equal evaluations",
        {n: [round(rows[n]["variance"], 4), round(rows[n]["variance_se"], 4)]
         for n in ("RELAX", "REBAR", "REBAR (tuned)", "RLOO", "DisARM")},
        "[variance, SE]; the ordering RELAX <= REBAR <= RLOO is not assumed: untuned REBAR is above RLOO here"))
    best = min(UNBIASED, key=lambda n: rows[n]["variance"])
    ms.append(C.Measurement(f"{point}: lowest-variance unbiased estimator", best,
                            f"tr Cov {rows[best]['variance']:.4g}"))
    ms.append(C.Measurement(f"{point}: tuned control-variate parameters", res["tuned"]))
  tr = result["training"]
  for name in tr["curves"]:
    cur = tr["curves"][name]
    m, ci = _mean_ci(np.asarray(cur["elbo"])[:, -1] - tr["initial_elbo"])
    cl.append(CLAIMS["trains"]([float(m), float(ci)], name=name, steps=tr["steps"]))
  final = {}
  for name in tr["curves"]:
    m, ci = _mean_ci(np.asarray(tr["curves"][name]["elbo"])[:, -1])
    final[name] = {"ELBO": f"{m:.4g} +- {ci:.2g}"}
    if name != "exact":
      lv, lci = _mean_ci(np.log10(np.asarray(tr["curves"][name]["variance"])[:, -1]))
      final[name]["log10 tr Cov"] = f"{lv:.3g} +- {lci:.2g}"
  ms.append(C.Measurement(f"training: final exact ELBO and log10 encoder-gradient variance after {tr['steps']} "
                          "steps (mean over 16 seeds +- 95% CI)", final,
                          f"initial ELBO {tr['initial_elbo']:.4g}; decoder and prior gradients exact"))
  return cl, ms


def plot(result, out):
  plt = C.pyplot()
  points = list(result["points"])
  fig, axes = plt.subplots(1, len(points), figsize=(7 * len(points), 4.8))
  for ax, point in zip(np.atleast_1d(axes), points):
    res = result["points"][point]
    names = list(UNBIASED) + list(BIASED)
    v = [res["rows"][n]["variance"] for n in names]
    se = [2 * res["rows"][n]["variance_se"] for n in names]
    colors = ["C0"] * len(UNBIASED) + ["C3"] * len(BIASED)
    ax.bar(range(len(names)), v, yerr=se, color=colors)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel(r"tr Cov[$\hat g$] (error bars 2 SE)")
    ax.set_title(f"{point} parameters (ELBO {res['elbo']:.3g}); red: biased")
    ax.grid(alpha=0.3, axis="y")
  fig.suptitle(f"Binary VAE encoder gradient, K=8 latents, {result['budget']} evaluations of f per estimate, "
               f"{result['num_seeds']} seeds")
  fig.tight_layout()
  paths = [C.savefig(fig, out, f"{NAME}.png")]
  tr = result["training"]
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.8))
  steps = tr["log_every"] * np.arange(1, len(np.asarray(tr["curves"]["exact"]["elbo"])[0]) + 1)
  for i, name in enumerate(tr["curves"]):
    cur = tr["curves"][name]
    m, ci = _mean_ci(cur["elbo"])
    ax1.plot(steps, m, color=f"C{i}", label=name)
    ax1.fill_between(steps, m - ci, m + ci, color=f"C{i}", alpha=0.2)
    if name != "exact":
      lv, lci = _mean_ci(np.log10(np.maximum(np.asarray(cur["variance"]), 1e-30)))
      ax2.plot(steps, lv, color=f"C{i}", label=name)
      ax2.fill_between(steps, lv - lci, lv + lci, color=f"C{i}", alpha=0.2)
  ax1.set_xlabel("training step")
  ax1.set_ylabel("exact ELBO (enumeration)")
  ax1.legend(fontsize=8)
  ax1.grid(alpha=0.3)
  ax2.set_xlabel("training step")
  ax2.set_ylabel(r"log$_{10}$ tr Cov of the encoder estimate")
  ax2.legend(fontsize=8)
  ax2.grid(alpha=0.3)
  fig.suptitle(f"Binary VAE trained with each encoder estimator ({BUDGET} evaluations of f per step; decoder "
               f"gradient exact), {tr['num_seeds']} seeds, bands: 95% CI of the mean")
  fig.tight_layout()
  paths.append(C.savefig(fig, out, f"{NAME}_training.png"))
  return paths


def main(argv=None):
  C.run(NAME, __doc__, compute, claims, plot, CLAIMS, argv)


if __name__ == "__main__":
  main()
