"""Conjugate gradient against dense solves, on pytrees, singular and ill-conditioned systems."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax._src import utils
from pgjax.natural import conjugate_gradient
from tests.helpers import numpy_tree


def _spd(key, n, cond):
  """Random SPD matrix with eigenvalues log-spaced from 1 to ``cond``."""
  q, _ = jnp.linalg.qr(jax.random.normal(key, (n, n)))
  eig = jnp.logspace(0.0, jnp.log10(cond), n)
  return (q * eig[None, :]) @ q.T


def test_matches_dense_solve_on_damped_spd_systems(key):
  n = 6

  @jax.jit  # one program for the three systems (cond and damping traced)
  def case(key, i, cond, damping):
    k1, k2 = jax.random.split(jax.random.fold_in(key, i))
    a = _spd(k1, n, cond)
    b = jax.random.normal(k2, (n,))
    return a, b, conjugate_gradient(lambda v: a @ v, b, iters=3 * n, damping=damping, tol=0.0)

  for i, (cond, damping) in enumerate([(10.0, 0.0), (100.0, 0.1), (1e3, 1.0)]):
    a, b, (x, info) = numpy_tree(case(key, i, np.float32(cond), np.float32(damping)))
    expected = np.linalg.solve(np.asarray(a, np.float64) + damping * np.eye(n), np.asarray(b, np.float64))
    np.testing.assert_allclose(x, expected, rtol=2e-4, atol=2e-4 * np.abs(expected).max())
    assert info.residual_norm < 1e-4 * float(np.linalg.norm(b))


def test_pytree_system_matches_dense_solve_on_matrix_materialised_by_jacfwd(key):
  """A block operator on a dict pytree: materialise it by jacfwd and compare with the dense solve."""
  flat = lambda t: jnp.concatenate([t["b"].ravel(), t["w"].ravel()])  # dict leaves are sorted: b, w
  unflat = lambda x: {"b": x[:2], "w": x[2:].reshape(3, 2)}
  flat_np = lambda t: np.concatenate([np.ravel(t["b"]), np.ravel(t["w"])])

  @jax.jit  # the whole computation in one program
  def run(key):
    k1, k2, k3 = jax.random.split(key, 3)
    m = _spd(k1, 8, 30.0)

    def matvec(t):
      return unflat(m @ flat(t))

    b = {"w": jax.random.normal(k2, (3, 2)), "b": jax.random.normal(k3, (2,))}
    dense = jax.jacfwd(lambda x: flat(matvec(unflat(x))))(jnp.zeros(8))
    return m, b, dense, conjugate_gradient(matvec, b, iters=20, damping=0.5, tol=0.0)

  m, b, dense, (x, info) = numpy_tree(run(key))
  np.testing.assert_allclose(dense, m, rtol=1e-6)
  chex.assert_trees_all_equal_structs(x, b)
  chex.assert_trees_all_equal_shapes_and_dtypes(x, b)
  expected = np.linalg.solve(np.asarray(dense) + 0.5 * np.eye(8), flat_np(b))
  np.testing.assert_allclose(flat_np(x), expected, rtol=1e-4, atol=1e-5)


def _np_softmax_fisher(logits):
  p = np.exp(logits - logits.max())
  p = p / p.sum()
  return (np.diag(p) - np.outer(p, p)).astype(np.float32)


def test_singular_softmax_fisher_with_damping_gives_damped_solution_never_nan():
  fisher = _np_softmax_fisher(np.array([2.0, 0.5, -1.0, 0.0, -3.0]))  # singular along the all-ones vector
  matvec = lambda v: fisher @ v
  damping = 1e-2

  @jax.jit  # the three solves in one program
  def solves(b1, b2):
    return (conjugate_gradient(matvec, b1, iters=10, damping=damping, tol=0.0),
            conjugate_gradient(matvec, b2, iters=10, damping=damping, tol=0.0),
            conjugate_gradient(matvec, b1, iters=10, damping=damping, tol=1e-4))

  bs = [np.ones(5, np.float32), np.array([1.0, -2.0, 0.5, 0.0, 3.0], np.float32)]
  results = numpy_tree(solves(*bs))
  for b, (x, info) in zip(bs, results[:2]):
    assert np.all(np.isfinite(x))
    expected = np.linalg.solve(np.asarray(fisher, np.float64) + damping * np.eye(5), np.asarray(b))
    np.testing.assert_allclose(x, expected, rtol=1e-3, atol=1e-3)
  # b in the null space: the damped solution is exactly b / damping, found in one iteration.
  x, info = results[2]
  np.testing.assert_allclose(x, np.ones(5) / damping, rtol=1e-4)
  assert int(info.iterations) == 1 and bool(info.converged)


def test_undamped_singular_system_stops_finite():
  """Zero curvature (b in the null space, no damping) is a breakdown: no update, no NaN, not converged."""
  fisher = _np_softmax_fisher(np.array([2.0, 0.5, -1.0]))
  indefinite = np.diag(np.array([1.0, -1.0], np.float32))

  @jax.jit  # both solves in one program
  def solves():
    return (conjugate_gradient(lambda v: fisher @ v, jnp.ones(3), iters=10, damping=0.0, tol=0.0),
            conjugate_gradient(lambda v: indefinite @ v, jnp.array([0.0, 1.0]), iters=5))

  (x, info), (x_indefinite, info_indefinite) = numpy_tree(solves())
  assert np.all(np.isfinite(x))
  assert not bool(info.converged)
  # An indefinite matrix: CG stops at the first non-positive curvature instead of diverging.
  np.testing.assert_array_equal(x_indefinite, np.zeros(2))
  assert int(info_indefinite.iterations) == 0


def test_64_vmapped_systems_with_very_different_conditioning_all_finite(key):
  """Condition numbers from 1 to 1e8 in one vmap at tol=0 (where jax.scipy's cg has returned NaN)."""
  n, count = 8, 64
  conds = np.logspace(0.0, 8.0, count).astype(np.float32)

  @jax.jit
  def systems(key):
    keys = jax.random.split(key, count)
    mats = jax.vmap(lambda k, c: _spd(k, n, c))(keys, conds)
    bs = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), (n,)))(keys)
    return mats, bs

  @jax.jit
  def solve(a, b):
    return conjugate_gradient(lambda v: a @ v, b, iters=40, damping=0.0, tol=0.0)

  mats, bs = systems(key)
  xs, info = numpy_tree(jax.vmap(solve)(mats, bs))
  mats, bs = np.asarray(mats), np.asarray(bs)
  assert np.all(np.isfinite(xs))
  assert np.all(np.isfinite(info.residual_norm))
  # Each member stops at its own iteration count (not all the same), at most 40.
  assert int(info.iterations.max()) <= 40 and int(info.iterations.min()) < int(info.iterations.max())
  # The well-conditioned members (cond <= 100) are solved accurately.
  well = np.asarray(conds) <= 100.0
  expected = np.linalg.solve(np.asarray(mats, np.float64)[well], np.asarray(bs, np.float64)[well][..., None])[..., 0]
  np.testing.assert_allclose(np.asarray(xs)[well], expected, rtol=1e-3, atol=1e-3)


def test_tolerance_stops_early_and_counts_iterations():
  a = np.diag(np.array([1.0, 1.0, 5.0, 5.0], np.float32))

  @jax.jit  # the three solves in one program
  def solves():
    return (conjugate_gradient(lambda v: 4.0 * v, jnp.arange(1.0, 4.0), iters=7, tol=1e-6),
            conjugate_gradient(lambda v: 4.0 * v, jnp.zeros(3), iters=7),
            conjugate_gradient(lambda v: a @ v, jnp.ones(4), iters=10, tol=1e-6))

  identity, zero, two_eigenvalues = numpy_tree(solves())
  # A multiple of the identity is solved in exactly one iteration.
  x, info = identity
  np.testing.assert_allclose(x, np.arange(1.0, 4.0) / 4.0, rtol=1e-6)
  assert int(info.iterations) == 1 and bool(info.converged)
  # b = 0: nothing to do, x = 0, zero iterations.
  x, info = zero
  np.testing.assert_array_equal(x, np.zeros(3))
  assert int(info.iterations) == 0 and bool(info.converged)
  # Two distinct eigenvalues: exact after two iterations.
  x, info = two_eigenvalues
  np.testing.assert_allclose(x, np.array([1.0, 1.0, 0.2, 0.2]), rtol=1e-5)
  assert int(info.iterations) == 2


def test_warm_start_x0():
  a = np.diag(np.array([1.0, 2.0, 3.0], np.float32))
  b = np.array([1.0, 1.0, 1.0], np.float32)
  exact = b / np.diag(a)
  x, info = jax.jit(lambda b, x0: conjugate_gradient(lambda v: a @ v, b, iters=5, x0=x0, tol=1e-6))(b, exact)
  np.testing.assert_allclose(x, exact, rtol=1e-6)
  assert int(info.iterations) == 0


def test_damping_is_traced_vmap_and_single_trace():
  a = np.diag(np.array([1.0, 2.0, 3.0], np.float32))
  b = np.ones(3, np.float32)

  def solve(damping):
    return conjugate_gradient(lambda v: a @ v, b, iters=5, damping=damping, tol=0.0)[0]

  dampings = np.array([0.0, 0.5, 2.0], np.float32)
  xs = jax.jit(jax.vmap(solve))(dampings)
  np.testing.assert_allclose(xs, b[None, :] / (np.diag(a)[None, :] + dampings[:, None]), rtol=1e-5)
  solve_once = jax.jit(chex.assert_max_traces(solve, n=1))
  np.testing.assert_allclose(solve_once(np.float32(1.0)), b / (np.diag(a) + 1.0), rtol=1e-5)
  solve_once(np.float32(3.0))  # a new damping value does not retrace


def test_dtypes_preserved_for_mixed_precision_tree():
  b = {"a": np.ones(3, np.float32), "h": np.ones(2, jnp.bfloat16)}
  x, info = jax.jit(lambda b: conjugate_gradient(lambda v: jax.tree_util.tree_map(lambda t: 2.0 * t, v), b,
                                                 iters=3))(b)
  chex.assert_trees_all_equal_shapes_and_dtypes(x, b)
  np.testing.assert_allclose(np.asarray(x["a"]), 0.5)
  np.testing.assert_allclose(np.asarray(x["h"], np.float32), 0.5)
  assert info.residual_norm.dtype == jnp.float32


def test_bad_input_raises_naming_the_argument():
  mv = lambda v: v
  with pytest.raises(ValueError, match="iters"):
    conjugate_gradient(mv, jnp.ones(2), iters=0)
  with pytest.raises(TypeError, match="iters"):
    conjugate_gradient(mv, jnp.ones(2), iters=2.5)
  with pytest.raises(ValueError, match="damping"):
    conjugate_gradient(mv, jnp.ones(2), damping=-1.0)
  with pytest.raises(ValueError, match="tol"):
    conjugate_gradient(mv, jnp.ones(2), tol=-1e-3)
  with pytest.raises(TypeError, match="matvec"):
    conjugate_gradient("not a function", jnp.ones(2))
  with pytest.raises(TypeError, match="`b`"):
    conjugate_gradient(mv, jnp.ones(2, jnp.int32))
  with pytest.raises(ValueError, match="matvec"):
    conjugate_gradient(lambda v: {"x": v}, jnp.ones(2))
  with pytest.raises(ValueError, match="x0"):
    conjugate_gradient(mv, jnp.ones(2), x0=jnp.ones(3))


def test_tree_vdot_accumulates_in_float32():
  a = {"x": np.full((1000,), 0.1, jnp.bfloat16)}
  assert jax.jit(utils.tree_vdot)(a, a).dtype == jnp.float32


def test_non_finite_right_hand_side_propagates_instead_of_a_silent_zero_step():
  import pgjax
  x, info = jax.jit(lambda b: pgjax.natural.conjugate_gradient(lambda v: 2.0 * v, b, iters=5))(
      np.array([np.nan, 1.0], np.float32))
  assert np.all(np.isnan(np.asarray(x))) and not bool(info.converged)


def test_low_precision_system_is_solved_in_float32(key):
  """bfloat16 right-hand side: the iterates run in float32 (matvec sees bfloat16), so the solution is the
  dense solution up to bfloat16 rounding, returned as bfloat16."""

  @jax.jit  # the system and the solve in one program
  def run(key):
    a = _spd(key, 12, 50.0)
    x_true = jax.random.normal(jax.random.fold_in(key, 1), (12,))
    b = (a @ x_true).astype(jnp.bfloat16)
    matvec = lambda v: (a @ v.astype(jnp.float32)).astype(jnp.bfloat16)
    return a, b, conjugate_gradient(matvec, b, iters=40, tol=0.0)

  a, b, (x, info) = run(key)
  assert x.dtype == jnp.bfloat16 and info.residual_norm.dtype == jnp.float32
  expected = np.linalg.solve(np.asarray(a, np.float64), np.asarray(b, np.float64))
  err = np.linalg.norm(np.asarray(x, np.float32) - expected) / np.linalg.norm(expected)
  assert err < 3e-2, err


def test_derivative_with_respect_to_damping_matches_closed_form_after_convergence():
  """d/dlambda of sum((A + lambda I)^{-1} b) = -1^T (A + lambda I)^{-2} b, through CG run for more
  iterations than it needs (the masked updates after convergence must not turn the derivative NaN)."""
  a = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 3.0]], np.float32)
  b = np.array([1.0, -2.0, 0.5], np.float32)
  solve = lambda lam: jnp.sum(conjugate_gradient(lambda v: a @ v, b, iters=10, damping=lam)[0])
  m = np.linalg.inv(np.asarray(a, np.float64) + 0.3 * np.eye(3))
  expected = -np.sum(m @ m @ np.asarray(b, np.float64))
  np.testing.assert_allclose(jax.jit(jax.grad(solve))(np.float32(0.3)), expected, rtol=1e-4)
