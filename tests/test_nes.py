"""Natural evolution strategies: each update equals the natural gradient of the score-function estimate on
the search distribution (closed-form Gaussian Fisher through pgjax.natural), to float precision."""

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pgjax
from pgjax import nes

D = 5
SPHERE = lambda x: -jnp.sum(x ** 2)


def _score_natural(dist_fn, params, samples, weights, iters=20):
  """F^{-1} (1/N) sum_k w_k grad log p(x_k), from pgjax's surrogate, exact Fisher and CG (no damping)."""
  n = weights.shape[0]
  def log_probs(p):
    with jax.numpy_rank_promotion("allow"):                # distrax broadcasts implicitly inside log_prob
      return dist_fn(p).log_prob(samples)

  grads = jax.grad(lambda p: -pgjax.losses.score_function_surrogate(log_probs(p), weights))(params)
  fvp = pgjax.natural.fisher_vector_product(dist_fn, params)
  direction, _ = pgjax.natural.natural_gradient(grads, fvp, damping=0.0, iters=iters, tol=0.0)
  return grads, direction, n


def _flat_fitness(key, p):
  return jax.random.normal(key, (p,))


def test_utilities_match_the_paper_formula_and_sum_to_zero():
  fitness = jnp.array([3.0, -1.0, 7.0, 0.5, 2.0, jnp.nan])
  u = np.asarray(pgjax.shaping.nes_utilities(fitness))
  lam = 6
  ranks = np.array([2, 5, 1, 4, 3, 6])                  # NaN ranks last
  raw = np.maximum(0, np.log(lam / 2 + 1) - np.log(np.arange(1, lam + 1)))
  expected = raw[ranks - 1] / raw.sum() - 1 / lam
  np.testing.assert_allclose(u, expected, rtol=1e-6, atol=1e-7)
  assert abs(u.sum()) < 1e-6
  # Only the first 4 active: the rest get 0, the active ones use lambda = 4.
  u4 = np.asarray(pgjax.shaping.nes_utilities(fitness, where=jnp.arange(6) < 4))
  raw4 = np.maximum(0, np.log(3) - np.log(np.arange(1, 5)))
  np.testing.assert_allclose(u4[:4], raw4[np.array([2, 4, 1, 3]) - 1] / raw4.sum() - 0.25, atol=1e-7)
  np.testing.assert_array_equal(u4[4:], 0.0)


def test_snes_update_is_the_natural_gradient_of_the_score_function_estimate(key):
  es = nes.snes(population_size=12, learning_rate_mean=0.7, learning_rate_sigma=0.3)
  mu0 = jnp.linspace(-1.0, 1.0, D)
  sigma0 = jnp.linspace(0.5, 2.0, D)
  state = es.init(mu0, init_sigma=sigma0)
  population, noise = es.ask(key, state)
  fitness = jax.vmap(lambda x: -jnp.sum((x - 0.3) ** 2) + jnp.sin(3 * x[0]))(population)
  new, _ = es.tell(state, noise, fitness)

  params = {"mu": mu0, "log_sigma": jnp.log(sigma0)}
  dist_fn = lambda p: distrax.MultivariateNormalDiag(p["mu"], jnp.exp(p["log_sigma"]))
  u = pgjax.shaping.nes_utilities(fitness)
  _, direction, n = _score_natural(dist_fn, params, population, n_times(u, 12))
  np.testing.assert_allclose(new.mean - mu0, 0.7 * direction["mu"], rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(jnp.log(new.sigma) - jnp.log(sigma0), 0.3 * direction["log_sigma"],
                             rtol=2e-5, atol=1e-6)
  # Power control: the vanilla (unpreconditioned) gradient is a different update.
  grads, _, _ = _score_natural(dist_fn, params, population, n_times(u, 12))
  assert not np.allclose(new.mean - mu0, 0.7 * grads["mu"], rtol=1e-2)


def n_times(u, n):
  """The surrogate averages over samples; NES sums: weights N * u_k give sum_k u_k grad log p."""
  return n * u


def test_xnes_mean_and_step_size_are_the_natural_gradient_at_identity_shape(key):
  es = nes.xnes(population_size=9, learning_rate_mean=0.5, learning_rate_sigma=0.2, learning_rate_shape=0.0)
  mu0 = jnp.array([0.3, -0.2, 1.0, 0.0, 0.5])
  state = es.init(mu0, init_sigma=0.7)
  population, noise = es.ask(key, state)
  fitness = jax.vmap(lambda x: -jnp.sum(jnp.abs(x - 1.0)))(population)
  new, _ = es.tell(state, noise, fitness)
  params = {"mu": mu0, "log_sigma": jnp.log(jnp.asarray(0.7))}
  dist_fn = lambda p: distrax.MultivariateNormalDiag(p["mu"], jnp.exp(p["log_sigma"]) * jnp.ones(D))
  _, direction, _ = _score_natural(dist_fn, params, population, 9 * pgjax.shaping.nes_utilities(fitness))
  np.testing.assert_allclose(new.mean - mu0, 0.5 * direction["mu"], rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(jnp.log(new.sigma) - jnp.log(0.7), 0.2 * direction["log_sigma"], rtol=2e-5,
                             atol=1e-7)
  np.testing.assert_allclose(new.shape, jnp.eye(D), atol=1e-6)     # eta_B = 0 leaves B alone


def test_xnes_shape_keeps_unit_determinant_and_learns_an_elongated_quadratic(key):
  es = nes.xnes()
  scales = jnp.array([1.0, 10.0, 100.0])
  f = lambda x: -jnp.sum((scales * x) ** 2)
  state = es.init(jnp.ones(3), init_sigma=1.0)
  final, infos = jax.jit(lambda k, s: nes.run(es, k, s, f, num_steps=300))(key, state)
  np.testing.assert_allclose(jnp.linalg.det(final.shape), 1.0, rtol=1e-4)
  assert float(infos.best_fitness[-1]) > -1e-8
  # The learned covariance is elongated along the flat direction: ratio of axis lengths >> 1.
  cov = final.shape @ final.shape.T
  assert float(cov[0, 0] / cov[2, 2]) > 100.0


def test_pgpe_direction_is_the_natural_gradient_in_mean_and_twice_it_in_sigma(key):
  es = nes.pgpe(population_size=8, optimizer=optax.sgd(1.0), learning_rate_sigma=1.0, max_sigma_change=1e9,
                shaping=None)
  mu0 = jnp.array([0.1, -0.4, 0.8, 0.0, 1.2])
  sigma0 = jnp.array([0.5, 1.0, 0.3, 2.0, 0.8])
  state = es.init(mu0, init_sigma=sigma0)
  population, noise = es.ask(key, state)
  np.testing.assert_allclose(population[:4] + population[4:], jnp.broadcast_to(2 * mu0, (4, D)), atol=1e-5)
  fitness = jax.vmap(lambda x: -jnp.sum((x - 0.5) ** 2))(population)
  new, _ = es.tell(state, noise, fitness)
  params = {"mu": mu0, "sigma": sigma0}
  dist_fn = lambda p: distrax.MultivariateNormalDiag(p["mu"], p["sigma"])
  weights = fitness - jnp.mean(fitness)
  _, direction, _ = _score_natural(dist_fn, params, population, weights)
  np.testing.assert_allclose(new.mean - mu0, direction["mu"], rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(new.sigma - sigma0, 2 * direction["sigma"], rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["snes", "xnes", "pgpe"])
def test_solves_the_sphere_and_works_on_pytrees_under_vmap(name, key):
  es = {"snes": nes.snes(), "xnes": nes.xnes(), "pgpe": nes.pgpe(optimizer=optax.adam(0.1))}[name]
  params = {"a": jnp.full((3,), 2.0), "b": {"c": jnp.full((2, 2), -1.5)}}
  f = lambda p: -(jnp.sum(p["a"] ** 2) + jnp.sum(p["b"]["c"] ** 2))
  state = es.init(params, init_sigma=1.0)

  traces = []

  def one(k):
    traces.append(1)
    final, infos = nes.run(es, k, state, f, num_steps=300)
    return final.best_fitness, infos.num_evaluations

  run = jax.jit(jax.vmap(one))
  best, evals = run(jax.random.split(key, 4))
  run(jax.random.split(jax.random.fold_in(key, 1), 4))
  assert len(traces) == 1                                      # traced once across calls
  chex.assert_trees_all_equal_structs(state.best_params, params)
  assert np.all(np.asarray(evals) == es.population_size(params))
  start = float(f(params))                                     # -21
  assert np.all(np.asarray(best) > {"snes": -1e-6, "xnes": -1e-3, "pgpe": -1e-2}[name]), (start, best)


def test_nan_fitness_ranks_last_and_is_counted(key):
  es = nes.snes(population_size=16)
  f = lambda x: jnp.where(x[0] > 0.5, jnp.nan, -jnp.sum((x - 0.4) ** 2))
  state = es.init(jnp.zeros(2), init_sigma=1.0)
  new, info = es.step(key, state, f)
  assert int(info.num_nonfinite) > 0
  assert bool(jnp.all(jnp.isfinite(new.mean)))
  assert float(new.mean[0]) < 0.0 + 0.5      # never moved into the NaN region's far side
  assert bool(jnp.isfinite(new.best_fitness))


def test_ipop_restarts_double_the_population_and_count_evaluations(key):
  es = nes.snes(population_size=6)
  rastrigin = lambda x: -(10 * x.shape[0] + jnp.sum(x ** 2 - 10 * jnp.cos(2 * jnp.pi * x)))
  state = es.init(jnp.full((4,), 3.0), init_sigma=2.0)
  run = jax.jit(lambda k: nes.run(es, k, state, rastrigin, num_steps=600, restarts=2, patience=60))
  final, infos = run(key)
  evals = np.asarray(infos.num_evaluations)
  assert set(np.unique(evals)) <= {6, 12, 24}
  assert evals[0] == 6 and evals[-1] == 24                    # both restarts happened
  assert np.all(np.diff(evals) >= 0)
  no_restart, infos0 = jax.jit(lambda k: nes.run(es, k, state, rastrigin, num_steps=600))(key)
  assert float(final.best_fitness) >= float(no_restart.best_fitness)


def test_bad_arguments_name_themselves():
  with pytest.raises((TypeError, ValueError), match="population_size"):
    nes.snes(population_size=1)
  with pytest.raises(ValueError, match="shaping"):
    nes.pgpe(shaping="zscore")
  with pytest.raises(TypeError, match="optimizer"):
    nes.pgpe(optimizer=0.1)
  es = nes.snes()
  state = es.init(jnp.zeros(3))
  with pytest.raises(ValueError, match="fitness"):
    es.tell(state, jnp.zeros((es.population_size(state.mean), 3)), jnp.zeros(2))
  with pytest.raises((TypeError, ValueError), match="num_steps"):
    nes.run(es, jax.random.key(0), state, SPHERE, num_steps=0)
  with pytest.raises(ValueError, match="init_sigma"):
    es.init(jnp.zeros(3), init_sigma=-1.0)
  assert nes.default_population_size(10) == 4 + int(np.floor(3 * np.log(10)))


def test_nes_trainer_improves_a_cartpole_policy_quickly():
  """SNES policy search on CartPole-v1 (4-16-2 MLP, episodes cut at 200 steps): a random policy returns ~22."""
  cfg = pgjax.algos.NESConfig(strategy="snes", num_iterations=12, num_steps=200)
  _, metrics = jax.jit(jax.vmap(pgjax.algos.make_train(cfg)))(jax.random.split(jax.random.key(3), 4))
  best = np.asarray(metrics.best_return)
  assert best.shape == (4, 12)
  assert np.all(np.diff(best, axis=1) >= 0)                       # best-so-far never decreases
  assert np.median(best[:, -1]) >= 150.0, best[:, -1]
  assert np.median(best[:, 0]) < 150.0                            # and it was not solved at the start
  with pytest.raises(ValueError, match="strategy"):
    pgjax.algos.make_train(pgjax.algos.NESConfig(strategy="cma"))


def test_learning_rates_are_traced_so_a_sweep_is_one_vmap():
  def final(lr):
    es = nes.snes(population_size=8, learning_rate_sigma=lr)
    state = es.init(jnp.full((3,), 2.0))
    _, infos = nes.run(es, jax.random.key(0), state, SPHERE, num_steps=40)
    return infos.best_fitness[-1]

  lrs = jnp.array([0.05, 0.3, 1.0])
  swept = np.asarray(jax.jit(jax.vmap(final))(lrs))
  np.testing.assert_allclose(swept[1], final(0.3), rtol=1e-5, atol=1e-8)   # the same as a concrete call
  assert len(set(swept.round(8).tolist())) == 3                          # the rate matters
