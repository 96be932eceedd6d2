r"""Vanilla vs natural policy-gradient fields on a 1-D linear system (the figure of CS285, lecture 5).

Setting, stated in full (the lecture leaves the dynamics, horizon and initial state out):

* state :math:`s_t \in \mathbb{R}`, dynamics :math:`s_{t+1} = s_t + a_t` (deterministic),
* policy :math:`a_t \sim \mathcal{N}(k s_t, \sigma^2)` with parameters :math:`\theta = (k, \sigma)`,
* reward :math:`r_t = -s_t^2 - a_t^2`, initial state :math:`s_0 \sim \mathcal{N}(0, 1)`,
* objective :math:`J(k, \sigma) = \mathbb{E}\sum_{t \ge 0} \gamma^t r_t`, infinite horizon,
  :math:`\gamma = 0.99` ("almost undiscounted": with :math:`\sigma > 0` and :math:`\gamma = 1` the
  exploration noise makes :math:`J = -\infty`, so a discount is needed for a field over :math:`\sigma > 0`).

Closed form. With :math:`m_t = \mathbb{E}[s_t^2]`, :math:`\rho = (1 + k)^2`:
:math:`m_{t+1} = \rho m_t + \sigma^2`, :math:`\mathbb{E}[r_t] = -(1 + k^2) m_t - \sigma^2`, so for
:math:`\gamma\rho < 1`

.. math::

   M(k,\sigma) = \sum_t \gamma^t m_t = \frac{m_0 + \gamma\sigma^2/(1-\gamma)}{1 - \gamma(1+k)^2},\qquad
   J(k, \sigma) = -(1 + k^2)\, M - \frac{\sigma^2}{1-\gamma}.

Optimum. :math:`J` decreases in :math:`\sigma^2` and its :math:`k`-dependence is
:math:`(1+k^2)/(1-\gamma(1+k)^2)` for every :math:`\sigma` (certainty equivalence), so the optimum is
:math:`(k^*, \sigma \to 0)` with :math:`k^*` the discounted Riccati gain: :math:`P = 1 + \gamma P/(1+\gamma P)`,
i.e. :math:`\gamma P^2 + (1-2\gamma)P - 1 = 0`, :math:`k^* = -\gamma P/(1 + \gamma P)`. For
:math:`\gamma = 0.99`, :math:`k^* = -0.61525`; for :math:`\gamma \to 1`, :math:`-(\sqrt5-1)/2 = -0.618`. The
lecture's :math:`k^* = -1` is the optimum of none of these (it is the one-step dead-beat gain that sends
:math:`s` to 0 immediately, optimal only when actions are free). The script checks :math:`k^*` three ways:
the closed form, a numerical argmin of :math:`J(k, 0)` and ``pgjax.envs.linear_system_optimal_gain``.

Fisher. The natural gradient uses the policy's Fisher averaged over the discounted state-visitation
distribution (Kakade 2001; Peters & Schaal 2008), :math:`F = (1-\gamma)\sum_t \gamma^t
\mathbb{E}[F_\pi(s_t)]` with :math:`F_\pi(s) = \mathrm{diag}(s^2/\sigma^2, 2/\sigma^2)`, i.e.
:math:`F = \mathrm{diag}((1-\gamma)M/\sigma^2,\ 2/\sigma^2)`. The script checks this closed form against
``pgjax.natural.fisher_vector_product`` on Gaussian states with weights :math:`\gamma^t`, and computes
the natural field with ``pgjax.natural.natural_gradient`` (CG, 2 iterations: exact in 2-D).

Why the vanilla field points at :math:`\sigma`: :math:`\partial J/\partial\sigma = -2\sigma C/(1-\gamma)`
with :math:`C = 1 + \gamma(1+k^2)/(1-\gamma\rho)`: the exploration penalty accumulates over the
effective horizon :math:`1/(1-\gamma)` while the :math:`k`-dependence comes from the transient only. The
exact :math:`\sigma`-component vanishes linearly as :math:`\sigma \to 0`, but at :math:`\gamma = 0.99` it
still dominates at :math:`\sigma = 0.05`. The natural gradient rescales the two coordinates by their
Fisher information and points almost straight at :math:`(k^*, 0)`.

Outputs: ``natural_gradient_field.png`` (normalised fields side by side and the mean cosine to the
optimum vs :math:`\sigma`), ``natural_gradient_field_training.png`` (distance to the optimum vs
iterations, many seeds by ``vmap``, each method at each step size of a small grid), and
``natural_gradient_field.json`` with the claims.

Training: from :math:`(k, \sigma) = (-1.8, 0.9)`, each iteration samples 32 trajectories of 300 steps of
``pgjax.envs.LinearSystem`` with ``pgjax.rollout``
(truncation :math:`\gamma^{300} = 0.05`; the truncated problem has the same optimum because the state
converges to 0 geometrically), estimates :math:`\nabla J` by the score function with discounted
reward-to-go :math:`\gamma^t Q_t` (``pgjax.returns.reward_to_go``) and a per-time-step leave-one-out
baseline (``pgjax.baselines.leave_one_out``), then takes (a) a vanilla step :math:`\eta g`, (b) a
normalised vanilla step :math:`\eta g/\|g\|` (a Euclidean trust region), or (c) a natural step scaled to
a KL radius :math:`\delta` (``natural_gradient`` + ``trust_region_step`` with the Fisher from the sampled
states, weighted by :math:`\gamma^t`). :math:`\sigma` is projected onto :math:`[10^{-3}, \infty)` after each step
(the vanilla steps can overshoot below 0). Runs whose iterate leaves the stable region and overflows are
counted as diverged; medians are over the seeds that did not diverge. Each method is reported at its best
step size (smallest median final distance among the step sizes with at most 10% diverged seeds).

Run: ``python -m experiments.natural_gradient_field [--quick] [--out results]``.
"""

from __future__ import annotations

import time

import distrax
import jax
import jax.numpy as jnp
import numpy as np

import pgjax
from experiments import _common as C
from pgjax import natural

NAME = "natural_gradient_field"
GAMMA = 0.99
M0 = 1.0  # E[s_0^2] for s_0 ~ N(0, 1)
SIGMA_MIN = 1e-3
K_RANGE = (-2.0, 0.0)
START = (-1.8, 0.9)


def optimal_gain(gamma=GAMMA):
  """Closed-form discounted Riccati gain for s' = s + a, r = -s^2 - a^2."""
  p = ((2 * gamma - 1) + np.sqrt(1 + 4 * gamma**2)) / (2 * gamma)
  return -gamma * p / (1 + gamma * p)


K_STAR = optimal_gain()


def discounted_second_moment(k, sigma, gamma=GAMMA):
  return (M0 + gamma * sigma**2 / (1 - gamma)) / (1 - gamma * (1 + k) ** 2)


def expected_return(theta, gamma=GAMMA):
  k, sigma = theta[0], theta[1]
  return -(1 + k**2) * discounted_second_moment(k, sigma, gamma) - sigma**2 / (1 - gamma)


def fisher_closed_form(theta, gamma=GAMMA):
  k, sigma = theta[0], theta[1]
  return jnp.diag(jnp.stack([(1 - gamma) * discounted_second_moment(k, sigma, gamma) / sigma**2,
                             2.0 / sigma**2]))


def fields(theta):
  """(vanilla gradient, natural gradient) at theta = (k, sigma), natural by pgjax CG on the Fisher."""
  g = jax.grad(expected_return)(theta)
  f = fisher_closed_form(theta)
  nat, _ = natural.natural_gradient(g, lambda v: f @ v, damping=0.0, iters=2, tol=0.0)
  return g, nat


def cosine_to_optimum(field, theta):
  direction = jnp.stack([K_STAR - theta[..., 0], -theta[..., 1]], axis=-1)
  num = jnp.sum(field * direction, axis=-1)
  return num / (jnp.linalg.norm(field, axis=-1) * jnp.linalg.norm(direction, axis=-1))


def fisher_check(theta, num_steps=3000):
  """Closed-form Fisher vs pgjax.natural.fisher_vector_product on states +-sqrt(m_t), weights gamma^t."""
  k, sigma = theta
  rho, var = (1 + k) ** 2, sigma**2

  def body(m, _):
    return rho * m + var, m

  _, m = jax.lax.scan(body, jnp.asarray(M0), None, length=num_steps)
  states = jnp.concatenate([jnp.sqrt(m), -jnp.sqrt(m)])  # two-point states with E[s^2] = m_t
  weights = jnp.tile(GAMMA ** jnp.arange(num_steps), 2)
  fvp = natural.fisher_vector_product(lambda p: distrax.Normal(p[0] * states, p[1]), jnp.asarray(theta),
                                      weights=weights)
  dense = jax.jacfwd(fvp)(jnp.zeros(2))
  return dense, fisher_closed_form(jnp.asarray(theta))


# ------------------------------------------------------------------------------------------------
# Training from the same start over many seeds.


def make_train(method, *, num_traj, horizon, iters):
  """Returns train(key, step_size) -> distances [iters] to (k*, 0); trajectories by ``pgjax.rollout``."""
  disc = GAMMA ** jnp.arange(horizon, dtype=jnp.float32)[:, None]  # [T, 1]

  env = pgjax.envs.LinearSystem()
  # s' = s + a, r = -s^2 - a^2, s_0 ~ N(0, 1); episodes longer than the horizon (no reset inside a rollout)
  env_params = pgjax.envs.LinearSystemParams(init_mean=0.0, init_std=float(np.sqrt(M0)),
                                             max_steps_in_episode=horizon + 1)

  def policy(theta, obs):
    return distrax.Normal(theta[0] * obs, theta[1])  # a ~ N(k s, sigma^2), action shape (1,)

  def rollout(key, theta):
    traj = pgjax.rollout(key, policy, theta, env, env_params, num_steps=horizon, num_envs=num_traj)
    return traj.obs[..., 0], traj.actions[..., 0], traj.rewards  # time-major [T, N]

  def estimate(key, theta):
    states, actions, rewards = jax.lax.stop_gradient(rollout(key, theta))
    q = pgjax.returns.reward_to_go(rewards, jnp.zeros_like(rewards), discount=GAMMA)
    w = disc * q  # gamma^t Q_t: the discounted objective's weight at time t
    w = w - jax.vmap(pgjax.baselines.leave_one_out)(w)  # per time step, across trajectories
    dist_fn = lambda p: distrax.Normal(p[0] * states, p[1])
    grad = jax.grad(lambda p: jnp.sum(dist_fn(p).log_prob(actions) * w) / num_traj)(theta)
    return grad, dist_fn, states

  def update(key, theta, step_size):
    grad, dist_fn, states = estimate(key, theta)
    if method == "vanilla":
      new = theta + step_size * grad
    elif method == "vanilla_normalised":
      new = theta + step_size * grad / jnp.maximum(jnp.linalg.norm(grad), 1e-30)
    elif method == "natural_trust_region":
      fvp = natural.fisher_vector_product(dist_fn, theta, weights=jnp.broadcast_to(disc, states.shape))
      direction, _ = natural.natural_gradient(grad, fvp, damping=1e-6, iters=2)
      step, _ = natural.trust_region_step(direction, grad, fvp, max_kl=step_size)
      new = theta + step
    else:
      raise ValueError(method)
    return new.at[1].set(jnp.maximum(new[1], SIGMA_MIN))

  def train(key, step_size):
    def body(theta, key):
      new = update(key, theta, step_size)
      diverged = ~jnp.all(jnp.isfinite(new))
      new = jnp.where(diverged, jnp.full_like(new, jnp.nan), new)
      return new, jnp.hypot(new[0] - K_STAR, new[1])

    _, dist = jax.lax.scan(body, jnp.asarray(START, jnp.float32), jax.random.split(key, iters))
    return dist

  return train


STEP_SIZES = {
    "vanilla": [1e-5, 3e-5, 1e-4, 3e-4],
    "vanilla_normalised": [0.01, 0.03, 0.1, 0.3],
    "natural_trust_region": [3e-4, 1e-3, 3e-3, 1e-2],
}
LABELS = {"vanilla": "vanilla, step $\\eta g$", "vanilla_normalised": "vanilla, step $\\eta g/\\|g\\|$",
          "natural_trust_region": "natural, KL radius $\\delta$"}


SIGMAS_COS = (0.05, 0.1, 0.2, 0.5, 1.0)

CLAIMS = {
    "k_numeric": C.ClaimSpec("k* (Riccati closed form, gamma=0.99) minus the numerical argmin of J(k, 0): |diff|",
                             C.lt(1e-4)),
    "k_envs": C.ClaimSpec("k* minus pgjax.envs.linear_system_optimal_gain(discount=0.99): |diff|", C.lt(1e-4)),
    "lecture": C.ClaimSpec("the lecture's k = -1 is not optimal: J(k*, 0) - J(-1, 0)", C.gt(0.0)),
    "j_envs": C.ClaimSpec("closed-form J vs pgjax.envs finite-horizon J (H=5000) at (-1.2, 0.3): relative diff",
                          C.lt(1e-3)),
    "fisher": C.ClaimSpec("closed-form Fisher = pgjax fisher_vector_product (gamma^t-weighted states): max "
                          "relative error", C.lt(1e-3)),
    "nat_cos": C.ClaimSpec("natural field: mean cosine to the optimum at sigma=0.05", C.gt(0.99)),
    "van_cos": C.ClaimSpec("vanilla field: mean cosine to the optimum at sigma=0.05", C.lt(0.5)),
    "nat_vs_van": C.ClaimSpec("natural minus vanilla mean cosine to the optimum, at every sigma in "
                              f"{list(SIGMAS_COS)}", C.gt(0.0)),
    "train": C.ClaimSpec("training by pgjax.rollout on LinearSystem: median distance to the optimum after {iters} "
                         "iterations (best step size each), natural / best vanilla", C.lt(0.5)),
    "no_divergence": C.ClaimSpec("natural trust-region training: largest diverged fraction over KL radii",
                                 C.eq(0.0)),
}


def compute_closed_forms():
  k_grid = np.linspace(-1.5, 0.0, 1_500_001)  # numerical argmin in float64 NumPy of J(k, 0)
  j0 = -M0 * (1 + k_grid**2) / (1 - GAMMA * (1 + k_grid) ** 2)
  env_params = pgjax.envs.LinearSystem().default_params
  out = {"k_star_riccati_closed_form": K_STAR, "k_star_numerical_argmin": float(k_grid[np.argmax(j0)]),
         "k_star_pgjax_envs_riccati": float(pgjax.envs.linear_system_optimal_gain(env_params, discount=GAMMA)),
         "k_star_gamma_1": -(np.sqrt(5) - 1) / 2,
         "J_at_k_star": float(expected_return(jnp.array([K_STAR, 0.0]))),
         "J_at_lecture_k_minus_1": float(expected_return(jnp.array([-1.0, 0.0]))),
         "J_closed_form_at_(-1.2,0.3)": float(expected_return(jnp.array([-1.2, 0.3]))),
         "J_pgjax_envs_H5000_at_(-1.2,0.3)": float(pgjax.envs.linear_system_expected_return(
             env_params, -1.2, 0.3, horizon=5000, discount=GAMMA))}
  err = 0.0
  for theta in [(-1.2, 0.3), (-0.4, 0.05), (-1.9, 0.8)]:
    dense, closed = fisher_check(theta)
    err = max(err, float(jnp.max(jnp.abs(dense - closed) / jnp.max(jnp.abs(closed)))))
  out["fisher_max_relative_error"] = err
  return out


def compute_fields():
  ks = jnp.linspace(*K_RANGE, 201)
  thetas = jnp.stack(jnp.meshgrid(ks, jnp.asarray(SIGMAS_COS), indexing="xy"), axis=-1)  # [S, K, 2]
  van, nat = jax.jit(jax.vmap(jax.vmap(fields)))(thetas)
  cos_v, cos_n = np.asarray(cosine_to_optimum(van, thetas)), np.asarray(cosine_to_optimum(nat, thetas))
  qt = jnp.stack(jnp.meshgrid(jnp.linspace(-2.0, 0.0, 17), jnp.linspace(0.05, 1.0, 14), indexing="xy"), axis=-1)
  qv, qn = jax.jit(jax.vmap(jax.vmap(fields)))(qt)
  return {"k_grid": f"{ks.size} points in [{K_RANGE[0]}, {K_RANGE[1]}]", "sigma": SIGMAS_COS,
          "vanilla_mean": cos_v.mean(1), "vanilla_min": cos_v.min(1),
          "natural_mean": cos_n.mean(1), "natural_min": cos_n.min(1),
          "quiver": {"theta": np.asarray(qt), "vanilla": np.asarray(qv), "natural": np.asarray(qn)}}


def compute_training(key, quick):
  num_seeds = 16 if quick else 128
  iters = 150 if quick else 300
  step_sizes = {m: v[1:] if quick else v for m, v in STEP_SIZES.items()}  # quick: without the smallest
  cfg = dict(num_traj=32, horizon=300, iters=iters)
  keys = jax.random.split(jax.random.fold_in(key, 1), num_seeds)
  curves, summary = {}, {}
  for method, sizes in step_sizes.items():
    run = jax.jit(jax.vmap(jax.vmap(make_train(method, **cfg), in_axes=(0, None)), in_axes=(None, 0)))
    t0 = time.time()
    dist = np.asarray(run(keys, jnp.asarray(sizes, jnp.float32)))  # [sizes, seeds, iters]
    print(f"trained {method}: {len(sizes)} step sizes x {num_seeds} seeds x {iters} iterations "
          f"in {time.time() - t0:.1f}s", flush=True)
    curves[method] = dist
    per_size = []
    for i, size in enumerate(sizes):
      d = dist[i]
      ok = np.all(np.isfinite(d), axis=1)
      per_size.append({"step_size": size, "diverged_fraction": float(1 - ok.mean()),
                       "median_final_distance": float(np.median(d[ok, -1])) if ok.any() else float("inf"),
                       "median_curve": np.median(d[ok], axis=0) if ok.any() else None,
                       "iqr_curve": np.percentile(d[ok], [25, 75], axis=0) if ok.any() else None})
    # best = smallest median final distance among step sizes with at most 10% diverged seeds
    best = int(np.argmin([p["median_final_distance"] if p["diverged_fraction"] <= 0.1 else np.inf
                          for p in per_size]))
    summary[method] = {"per_step_size": per_size, "best_index": best}
  return {"start": START, "num_seeds": num_seeds, **cfg, "sigma_min": SIGMA_MIN, "step_sizes": step_sizes,
          "summary": summary}


def compute(key, quick):
  return {"setting": {"dynamics": "s' = s + a", "policy": "a ~ N(k s, sigma^2)", "reward": "-s^2 - a^2",
                      "initial_state": "s_0 ~ N(0, 1)", "horizon": "infinite", "discount": GAMMA},
          "optimum": compute_closed_forms(), "cosine_to_optimum": compute_fields(),
          "training": compute_training(key, quick)}


def claims(result):
  o, c, t = result["optimum"], result["cosine_to_optimum"], result["training"]
  i05 = list(c["sigma"]).index(0.05)
  nat_m, van_m = np.asarray(c["natural_mean"]), np.asarray(c["vanilla_mean"])
  best = {m: s["per_step_size"][s["best_index"]]["median_final_distance"] for m, s in t["summary"].items()}
  out = [CLAIMS["k_numeric"](abs(K_STAR - o["k_star_numerical_argmin"])),
         CLAIMS["k_envs"](abs(K_STAR - o["k_star_pgjax_envs_riccati"])),
         CLAIMS["lecture"](o["J_at_k_star"] - o["J_at_lecture_k_minus_1"]),
         CLAIMS["j_envs"](abs(o["J_closed_form_at_(-1.2,0.3)"] - o["J_pgjax_envs_H5000_at_(-1.2,0.3)"])
                          / abs(o["J_pgjax_envs_H5000_at_(-1.2,0.3)"])),
         CLAIMS["fisher"](o["fisher_max_relative_error"]),
         CLAIMS["nat_cos"](float(nat_m[i05])), CLAIMS["van_cos"](float(van_m[i05])),
         CLAIMS["nat_vs_van"]([float(v) for v in nat_m - van_m]),
         CLAIMS["train"](best["natural_trust_region"] / min(best["vanilla"], best["vanilla_normalised"]),
                         iters=t["iters"]),
         CLAIMS["no_divergence"](max(p["diverged_fraction"] for p in t["summary"]["natural_trust_region"]
                                     ["per_step_size"]))]
  ms = [C.Measurement("optimal gain k*", round(K_STAR, 5), "discounted Riccati, gamma = 0.99"),
        C.Measurement(f"median distance to the optimum after {t['iters']} iterations, best step size",
                      {m: round(v, 4) for m, v in best.items()},
                      "step sizes: " + ", ".join(f"{m} {t['step_sizes'][m][s['best_index']]:g}"
                                                 for m, s in t["summary"].items()))]
  return out, ms


def plot(result, out):
  plt = C.pyplot()
  c, t = result["cosine_to_optimum"], result["training"]
  q = c["quiver"]
  qt = np.asarray(q["theta"])
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
  for ax, f, title in [(axes[0], q["vanilla"], "vanilla gradient (normalised)"),
                       (axes[1], q["natural"], "natural gradient (normalised)")]:
    f = np.asarray(f)
    u = f / np.linalg.norm(f, axis=-1, keepdims=True)
    ax.quiver(qt[..., 0], qt[..., 1], u[..., 0], u[..., 1], color="tab:blue", angles="xy", scale=28, width=0.004)
    ax.plot([K_STAR], [0.0], "r*", ms=15, label=f"optimum $k^*$={K_STAR:.3f}, $\\sigma$=0")
    ax.plot([-1.0], [0.0], "kx", ms=9, label="lecture's $k=-1$")
    ax.set_xlabel("$k$")
    ax.set_ylabel("$\\sigma$")
    ax.set_title(title)
    ax.set_xlim(-2.1, 0.1)
    ax.set_ylim(-0.05, 1.08)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8)
  ax = axes[2]
  ax.plot(c["sigma"], c["vanilla_mean"], "o-", label="vanilla")
  ax.plot(c["sigma"], c["natural_mean"], "s-", label="natural")
  ax.axhline(0.99, color="gray", ls=":", lw=1)
  ax.axhline(0.5, color="gray", ls=":", lw=1)
  ax.set_xscale("log")
  ax.set_xlabel("$\\sigma$")
  ax.set_ylabel("mean cosine with direction to $(k^*, 0)$")
  ax.set_title(f"mean over {c['k_grid']} of $k$")
  ax.legend()
  fig.suptitle("$s'=s+a$, $a\\sim N(ks,\\sigma^2)$, $r=-s^2-a^2$, $s_0\\sim N(0,1)$, $\\gamma=0.99$, "
               "infinite horizon")
  fig.tight_layout()
  paths = [C.savefig(fig, out, f"{NAME}.png")]

  fig, ax = plt.subplots(figsize=(8, 5))
  colors = {"vanilla": "tab:orange", "vanilla_normalised": "tab:green", "natural_trust_region": "tab:blue"}
  its = np.arange(1, t["iters"] + 1)
  for method, s in t["summary"].items():
    for i, p in enumerate(s["per_step_size"]):
      if p["median_curve"] is None:
        continue
      if i == s["best_index"]:
        lo, hi = np.asarray(p["iqr_curve"])
        ax.fill_between(its, lo, hi, color=colors[method], alpha=0.2)
        ax.plot(its, p["median_curve"], color=colors[method], lw=2,
                label=f"{LABELS[method]} = {p['step_size']:g} (best; IQR band)")
      else:
        ax.plot(its, p["median_curve"], color=colors[method], lw=0.8, alpha=0.45)
  ax.set_yscale("log")
  ax.set_xlabel("iteration")
  ax.set_ylabel("distance to $(k^*, 0)$, median over seeds")
  ax.set_title(f"{t['num_seeds']} seeds from $(k,\\sigma)=({START[0]}, {START[1]})$; thin lines: other step sizes")
  ax.legend(fontsize=8)
  fig.tight_layout()
  paths.append(C.savefig(fig, out, f"{NAME}_training.png"))
  return paths


def main(argv=None):
  C.run(NAME, __doc__, compute, claims, plot, CLAIMS, argv)


if __name__ == "__main__":
  main()
