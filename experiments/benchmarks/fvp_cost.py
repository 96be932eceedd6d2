r"""Cost of Fisher-vector products and of a 10-iteration CG solve, in units of one gradient evaluation.

Policy: a flax MLP (obs 16 -> 64 -> 64 -> 6 logits, tanh; 5.7k parameters) on a batch of 1024 states,
categorical actions. The unit is one gradient of the score-function surrogate
:math:`\frac1B\sum_b \log\pi_\theta(a_b|s_b) A_b` (forward + backward through the network), jitted.

Measured (each jitted, timed with ``block_until_ready``, all variants interleaved in every repeat,
median over repeats; the machine is shared, so only the ratios measured side by side mean anything):

* ``ggn``: ``fisher_vector_product`` (Gauss-Newton J^T M J) built and applied once, i.e. linearisation
  (one forward pass storing the Jacobian's residuals) + one product;
* ``ggn_per_product``: the marginal cost of one more product with the same linearisation,
  ``(t(11 chained products) - t(1 product)) / 10``;
* ``forward_over_reverse``: ``kl_hessian_vector_product`` (jvp of the KL gradient), built + one product;
* ``reverse_over_reverse``: gradient of <grad KL, v>, one product;
* ``cg10_<product>``: gradient + construction of the product + ``natural_gradient(grads, fvp,
  iters=10)`` (10 products; the trace-time shape checks cost nothing at run time), i.e. the whole cost
  of one natural-gradient direction including the gradient itself.

Target: the Gauss-Newton product costs at most 3 gradient-equivalents.

Run: ``python -m experiments.benchmarks.fvp_cost [--quick] [--out results]`` (writes
``<out>/benchmarks/fvp_cost.json``).
"""

from __future__ import annotations

import os
import time

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pgjax import natural
from experiments._common import Claim, parse_args, save_results

OBS, HIDDEN, ACTIONS, BATCH = 16, 64, 6, 1024


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.tanh(nn.Dense(HIDDEN)(x))
    x = nn.tanh(nn.Dense(HIDDEN)(x))
    return nn.Dense(ACTIONS)(x)


def build():
  model = MLP()
  k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
  states = jax.random.normal(k1, (BATCH, OBS))
  params = model.init(k2, states)
  actions = jax.random.randint(k3, (BATCH,), 0, ACTIONS)
  adv = jax.random.normal(k4, (BATCH,))
  v = jax.tree_util.tree_map(lambda x: jax.random.normal(k4, x.shape, x.dtype), params)

  def dist_fn(p):
    return distrax.Categorical(logits=model.apply(p, states))

  def grad_fn(p):
    return jax.grad(lambda q: jnp.mean(dist_fn(q).log_prob(actions) * adv))(p)

  def chain(fvp, v, n):
    def body(_, x):
      y = fvp(x)
      norm = jnp.sqrt(sum(jnp.sum(l**2) for l in jax.tree_util.tree_leaves(y)))
      return jax.tree_util.tree_map(lambda l: l / (norm + 1e-30), y)
    return jax.lax.fori_loop(0, n, body, v)

  products = {
      "ggn": lambda p: natural.fisher_vector_product(dist_fn, p),
      "forward_over_reverse": lambda p: natural.kl_hessian_vector_product(dist_fn, p),
      "reverse_over_reverse": lambda p: natural.kl_hessian_vector_product(dist_fn, p,
                                                                          mode="reverse_over_reverse"),
  }
  fns = {"gradient": jax.jit(grad_fn)}
  for name, make in products.items():
    fns[name] = jax.jit(lambda p, v, make=make: make(p)(v))
  fns["ggn_1_chained"] = jax.jit(lambda p, v: chain(products["ggn"](p), v, 1))
  fns["ggn_11_chained"] = jax.jit(lambda p, v: chain(products["ggn"](p), v, 11))
  for name, make in products.items():
    fns["cg10_" + name] = jax.jit(
        lambda p, make=make: natural.natural_gradient(grad_fn(p), make(p), damping=1e-3, iters=10)[0])
  args = {name: ((params,) if name == "gradient" or name.startswith("cg10_") else (params, v)) for name in fns}
  return fns, args, params


def main(argv=None):
  args = parse_args(__doc__.splitlines()[0], argv)
  started = time.time()
  repeats = 15 if args.quick else 50
  fns, fn_args, params = build()
  num_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
  for name, fn in fns.items():  # compile + warm up
    jax.block_until_ready(fn(*fn_args[name]))
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():  # interleaved
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*fn_args[name]))
      times[name].append(time.perf_counter() - t0)
  med = {name: float(np.median(t)) for name, t in times.items()}
  unit = med["gradient"]
  ratios = {name: med[name] / unit for name in med}
  ratios["ggn_per_product"] = (med["ggn_11_chained"] - med["ggn_1_chained"]) / 10 / unit
  print(f"MLP {OBS}-{HIDDEN}-{HIDDEN}-{ACTIONS}, {num_params} parameters, batch {BATCH}; "
        f"median of {repeats} interleaved repeats; one gradient = {unit * 1e3:.3f} ms")
  for name in ["gradient", "ggn", "ggn_per_product", "forward_over_reverse", "reverse_over_reverse",
               "cg10_ggn", "cg10_forward_over_reverse", "cg10_reverse_over_reverse"]:
    print(f"  {name:28s} {ratios[name]:6.2f} gradient-equivalents")
  claims = [
      Claim("GGN Fisher-vector product (linearise + 1 product) in gradient-equivalents",
            round(ratios["ggn"], 2), "<= 3", ratios["ggn"] <= 3.0),
      Claim("10-iteration CG with the GGN product cheaper than with reverse-over-reverse",
            round(ratios["cg10_ggn"], 2), f"< {ratios['cg10_reverse_over_reverse']:.2f}",
            ratios["cg10_ggn"] < ratios["cg10_reverse_over_reverse"]),
  ]
  args.out = os.path.join(args.out, "benchmarks")
  save_results("fvp_cost", args, claims=claims, started=started,
               data={"num_params": num_params, "batch": BATCH, "repeats": repeats,
                     "median_seconds": med, "gradient_equivalents": ratios,
                     "architecture": f"{OBS}-{HIDDEN}-{HIDDEN}-{ACTIONS} tanh MLP, categorical"})


if __name__ == "__main__":
  main()
