"""Tests of pgjax.cem: the elite refit is the maximum-likelihood fit (exactly), the update formulas, and
convergence on a shifted quadratic and on Rosenbrock in 10 dimensions from many seeds at once."""

import functools

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax import cem as C


@functools.partial(jax.jit, static_argnames="p")
def _population(key, p=20):
  k1, k2, k3 = jax.random.split(key, 3)
  pop = {"w": jax.random.normal(k1, (p, 2, 3)), "b": 3.0 + jax.random.normal(k2, (p,))}
  fitness = jax.random.normal(k3, (p,))
  return pop, fitness


def test_elite_refit_equals_the_ml_fit_of_the_elite(key):
  pop, fitness = _population(key)
  cem = C.cross_entropy_method(population_size=20, elite_fraction=0.25)
  assert cem.num_elite == 5
  # Independent reference: numpy sort, then the ML estimates of a diagonal Gaussian (mean, divisor-K std).
  order = np.argsort(-np.asarray(fitness))[:5]

  @jax.jit
  def refit_and_loglik_grad(pop, fitness, order):
    state = cem.init({"w": jnp.zeros((2, 3)), "b": jnp.zeros(())}, 1.0)
    new, info = cem.tell(state, pop, fitness)

    def elite_loglik(mu, log_std):
      x = pop["w"][order]
      return jnp.sum(jax.scipy.stats.norm.logpdf(x, mu[None], jnp.exp(log_std)[None]))
    return new, info, jax.grad(elite_loglik, argnums=(0, 1))(new.mean["w"], jnp.log(new.std["w"]))

  new, info, (g_mu, g_ls) = refit_and_loglik_grad(pop, fitness, order)
  for name in ("w", "b"):
    elite = np.asarray(pop[name], np.float64)[order]
    np.testing.assert_allclose(new.mean[name], elite.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new.std[name], elite.std(0, ddof=0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(info.elite_threshold, np.sort(np.asarray(fitness))[-5], rtol=0)
  # ... and it is a stationary point of the elite log-likelihood in (mean, log std).
  np.testing.assert_allclose(g_mu, 0.0, atol=1e-4)
  np.testing.assert_allclose(g_ls, 0.0, atol=1e-4)
  # power control: the unbiased (ddof=1) std is not what the ML fit returns
  assert not np.allclose(new.std["b"], np.asarray(pop["b"])[order].std(ddof=1), rtol=1e-3)


def test_weighted_elite_fit_and_nan_fitness(key):
  pop, fitness = _population(key)
  log_w = np.linspace(-1.0, 1.0, 20, dtype=np.float32)
  order = np.argsort(-np.asarray(fitness))[:6]
  bad = np.array(fitness)
  bad[order[0]] = np.nan

  @jax.jit
  def fits(pop, fitness, bad, log_w):
    return C.elite_fit(pop, fitness, num_elite=6, log_weights=log_w), C.elite_fit(pop, bad, num_elite=6)[2]

  (mean, std, idx), idx_nan = fits(pop, fitness, bad, log_w)
  np.testing.assert_array_equal(np.sort(np.asarray(idx)), np.sort(order))
  w = np.exp(np.asarray(log_w, np.float64)[order])
  w /= w.sum()
  b = np.asarray(pop["b"], np.float64)[order]
  mu = (w * b).sum()
  np.testing.assert_allclose(mean["b"], mu, rtol=1e-6)
  np.testing.assert_allclose(std["b"], np.sqrt((w * (b - mu) ** 2).sum()), rtol=1e-5)
  # NaN fitness ranks last: a NaN member never enters the elite
  assert order[0] not in np.asarray(idx_nan)


def test_smoothing_and_decaying_noise_floor_follow_the_formula(key):
  pop, fitness = _population(key)
  alpha, beta, eps0, gamma, t = 0.3, 0.6, 0.5, 0.8, 3
  cem = C.cross_entropy_method(population_size=20, elite_fraction=0.25, mean_smoothing=alpha,
                               std_smoothing=beta, extra_std=eps0, extra_std_decay=gamma, min_std=0.0)
  floor = C.cross_entropy_method(population_size=20, elite_fraction=0.25, min_std=5.0)

  @jax.jit
  def tells(pop, fitness):
    state = cem.init({"w": jnp.ones((2, 3)), "b": jnp.ones(())}, 2.0)._replace(step=jnp.asarray(t, jnp.int32))
    return cem.tell(state, pop, fitness), floor.tell(state, pop, fitness)[0]

  (new, info), new_f = tells(pop, fitness)
  order = np.argsort(-np.asarray(fitness))[:5]
  elite = np.asarray(pop["b"], np.float64)[order]
  eps = eps0 * gamma ** t
  np.testing.assert_allclose(info.extra_std, eps, rtol=1e-6)
  np.testing.assert_allclose(new.mean["b"], alpha * 1.0 + (1 - alpha) * elite.mean(), rtol=1e-6)
  np.testing.assert_allclose(new.std["b"], beta * 2.0 + (1 - beta) * np.sqrt(elite.var() + eps ** 2), rtol=1e-6)
  assert int(new.step) == t + 1
  # min_std is a hard floor
  np.testing.assert_array_equal(np.asarray(new_f.std["w"]), 5.0)


def test_importance_weights_with_target_equal_to_the_sampler_change_nothing(key):
  # w = p/q_t with p = q_t gives equal weights, so the step equals the unweighted one (checks log q_t).
  mean0, std0 = np.array([0.5, -1.0, 2.0], np.float32), np.array([1.0, 0.5, 2.0], np.float32)
  f = lambda x: -jnp.sum((x - 1.0) ** 2)
  plain = C.cross_entropy_method(population_size=30, elite_fraction=0.2)
  same = C.cross_entropy_method(population_size=30, elite_fraction=0.2, target_log_prob=lambda x: jnp.sum(
      distrax.Normal(mean0, std0).log_prob(x)))
  other = C.cross_entropy_method(population_size=30, elite_fraction=0.2, target_log_prob=lambda x: jnp.sum(
      distrax.Normal(mean0 + 1.0, std0).log_prob(x)))

  @jax.jit
  def steps(key):
    state = plain.init(mean0, std0)
    return [cem.step(key, state, f)[0] for cem in (plain, same, other)]

  s1, s2, s3 = steps(key)
  np.testing.assert_allclose(s2.mean, s1.mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(s2.std, s1.std, rtol=1e-5, atol=1e-6)
  assert not np.allclose(s3.mean, s1.mean, rtol=1e-3)  # power control: a different target reweights


def test_converges_on_shifted_quadratic_from_many_seeds(key):
  d = 10
  c = np.linspace(-2.0, 3.0, d, dtype=np.float32)
  f = lambda p: -jnp.sum((p["x"] - c) ** 2)
  cem = C.cross_entropy_method(population_size=100, elite_fraction=0.2, extra_std=0.2, extra_std_decay=0.9)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def many(key):
    state = cem.init({"x": jnp.zeros(d)}, 1.0)
    final, infos = jax.vmap(lambda k: C.run(cem, k, state, f, num_steps=80))(jax.random.split(key, 16))
    return final, infos, state.mean

  final, infos, mean0 = many(key)
  chex.assert_shape(infos.fitness_max, (16, 80))
  err = np.max(np.abs(np.asarray(final.mean["x"]) - np.asarray(c)), axis=1)
  assert np.all(err < 1e-3), err  # stated tolerance: every coordinate within 1e-3, all 16 seeds
  assert np.all(np.asarray(infos.fitness_max[:, 0]) < -1.0)  # power control: the start is far away
  chex.assert_trees_all_equal_structs(final.best_params, mean0)


def test_converges_on_rosenbrock_10d_from_many_seeds(key):
  def rosenbrock(x):
    return -jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

  cem = C.cross_entropy_method(population_size=100, elite_fraction=0.05, extra_std=0.03,
                               extra_std_decay=0.998)

  # 3000 generations: running the program dominates compiling it, so this one program is compiled with XLA's
  # backend (LLVM) optimisation on (IEEE semantics unchanged; the test suite otherwise turns it off).
  @functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 1})
  def many(key):
    state = cem.init(jnp.zeros(10), 1.0)
    final, infos = jax.vmap(lambda k: C.run(cem, k, state, rosenbrock, num_steps=3000))(jax.random.split(key, 8))
    return final, infos, jax.vmap(rosenbrock)(final.mean)

  final, infos, f_final = many(key)
  err = np.max(np.abs(np.asarray(final.mean) - 1.0), axis=1)
  # stated tolerance: the mean is within 0.05 of the optimum (1, ..., 1) in every coordinate, all 8 seeds
  assert np.all(err < 0.05), err
  assert np.all(np.asarray(f_final) > -1e-2)
  # power control: after 300 generations no seed is there yet (the valley is long)
  assert np.all(np.asarray(infos.fitness_max[:, 300]) < -1e-2)


def test_stochastic_fitness_gets_one_key_per_member(key):
  cem = C.cross_entropy_method(population_size=8, elite_fraction=0.5, f_takes_key=True)
  _, info = jax.jit(lambda key: cem.step(key, cem.init(jnp.zeros(2), 1.0), lambda k, x: jax.random.normal(k)))(key)
  # 8 distinct noise draws: their spread is that of a standard normal, not zero
  assert float(info.fitness_max) > float(info.fitness_mean)


def test_importance_weights_survive_a_collapsed_std(key):
  # Population 10, elite fraction 0.1: K = 1, so the elite std is exactly 0 after one generation. With a
  # target density, log q_t had 0/0 in it; the state must stay finite. Documented result: the mean is the
  # single elite member, the std 0, and later populations equal the mean (CEM has stopped moving).
  target = lambda x: jnp.sum(jax.scipy.stats.norm.logpdf(x, 1.0, 2.0))
  f = lambda x: -jnp.sum((x - 3.0) ** 2)
  cem = C.cross_entropy_method(population_size=10, elite_fraction=0.1, target_log_prob=target)
  floored = C.cross_entropy_method(population_size=10, elite_fraction=0.1, target_log_prob=target, min_std=0.1)

  @jax.jit
  def generations(key):
    state0 = cem.init(jnp.zeros(3), 1.0)
    states, infos = [state0], []
    for k in jax.random.split(key, 3):
      s, info = cem.step(k, states[-1], f)
      states.append(s)
      infos.append(info)
    return states, infos, C.run(floored, key, state0, f, num_steps=3)[0]

  states, infos, s_floor = generations(key)
  for s in states[1:]:
    for leaf in jax.tree_util.tree_leaves(s):
      assert np.all(np.isfinite(np.asarray(leaf))), s
  np.testing.assert_array_equal(states[1].std, np.zeros(3))
  np.testing.assert_array_equal(states[1].mean, states[1].best_params)  # K = 1: the mean is the best member
  np.testing.assert_array_equal(states[3].mean, states[1].mean)
  assert float(infos[2].fitness_max) == float(infos[2].fitness_mean)  # every member equals the mean
  # with a std floor it keeps exploring, still finite (power control: the mean moves)
  np.testing.assert_array_equal(s_floor.std, np.full(3, 0.1, np.float32))
  assert np.all(np.isfinite(np.asarray(s_floor.mean))) and not np.allclose(s_floor.mean, states[1].mean)


def test_nonfinite_log_weights_give_a_finite_documented_fit():
  pop = {"b": jnp.asarray(np.arange(6.0, dtype=np.float32))}
  fitness = jnp.asarray(np.arange(6.0, dtype=np.float32))  # elite of 3: members 5, 4, 3
  fit = jax.jit(lambda lw: C.elite_fit(pop, fitness, num_elite=3, log_weights=lw)[:2])
  # +inf weights share the weight: members 4 and 3 equally
  mean, std = fit(jnp.array([0.0, 0.0, 0.0, jnp.inf, jnp.inf, 1.0]))
  np.testing.assert_allclose(mean["b"], 3.5)
  np.testing.assert_allclose(std["b"], 0.5)
  # NaN counts as -inf (weight 0): members 3 and 5 with log-weights 0 and log 3 -> weights 1/4, 3/4
  mean, _ = fit(jnp.array([0.0, 0.0, 0.0, 0.0, jnp.nan, np.log(3.0)]))
  np.testing.assert_allclose(mean["b"], 0.25 * 3 + 0.75 * 5, rtol=1e-6)
  # no finite weight in the elite: equal weights
  mean, _ = fit(jnp.array([0.0, 0.0, 0.0, -jnp.inf, jnp.nan, -jnp.inf]))
  np.testing.assert_allclose(mean["b"], 4.0)


def test_nan_fitness_ranks_last_and_is_counted(key):
  pop, fitness = _population(key)
  cem = C.cross_entropy_method(population_size=20, elite_fraction=0.25)
  order = np.argsort(-np.asarray(fitness))
  bad = np.array(fitness)
  bad[order[0]], bad[order[1]], bad[order[-1]] = np.nan, np.inf, -np.inf
  new, info = jax.jit(lambda pop, fitness: cem.tell(cem.init({"w": jnp.zeros((2, 3)), "b": jnp.zeros(())}, 1.0),
                                                    pop, fitness))(pop, bad)
  assert int(info.num_nonfinite) == 3
  # elite = +inf member, then the next four finite ones (the NaN member is out)
  elite = np.concatenate([[order[1]], order[2:6]])
  np.testing.assert_allclose(new.mean["b"], np.asarray(pop["b"])[elite].mean(), rtol=1e-6)
  assert float(info.fitness_max) == np.inf
  finite = np.isfinite(np.asarray(bad))
  np.testing.assert_allclose(info.fitness_mean, np.asarray(bad)[finite].mean(), rtol=1e-6)
  # power control: had the NaN member been kept, the mean would differ
  assert not np.isclose(float(new.mean["b"]), np.asarray(pop["b"])[order[:5]].mean(), rtol=1e-6)


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(population_size=20, elite_fraction=0.0), ValueError, "elite_fraction"),
    (dict(population_size=20, elite_fraction=1.5), ValueError, "elite_fraction"),
    (dict(population_size=5, elite_fraction=0.1), ValueError, "population_size"),
    (dict(population_size=0), ValueError, "population_size"),
    (dict(population_size=10.0), TypeError, "population_size"),
    (dict(population_size=20, mean_smoothing=1.0), ValueError, "mean_smoothing"),
    (dict(population_size=20, std_smoothing=-0.1), ValueError, "std_smoothing"),
    (dict(population_size=20, extra_std=-1.0), ValueError, "extra_std"),
    (dict(population_size=20, extra_std_decay=0.0), ValueError, "extra_std_decay"),
    (dict(population_size=20, min_std=float("nan")), ValueError, "min_std"),
])
def test_bad_configuration_raises_naming_the_argument(kwargs, exc, name):
  with pytest.raises(exc, match=name):
    C.cross_entropy_method(**kwargs)


def test_bad_runtime_input(key):
  cem = C.cross_entropy_method(population_size=10, elite_fraction=0.2)
  with pytest.raises(ValueError, match="init_std"):
    cem.init(jnp.zeros(3), 0.0)
  state = cem.init(jnp.zeros(3), 1.0)
  with pytest.raises(ValueError, match="fitness"):
    cem.tell(state, jnp.zeros((10, 3)), jnp.zeros(9))
  with pytest.raises(ValueError, match="num_steps"):
    C.run(cem, key, state, lambda x: jnp.sum(x), num_steps=0)
  with pytest.raises(ValueError, match="scalar"):
    cem.step(key, state, lambda x: x)


def test_namespace():
  assert pgjax.cem.cross_entropy_method is C.cross_entropy_method
