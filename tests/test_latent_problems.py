"""The binary VAE problem: exact enumeration against a brute-force NumPy computation (float64)."""

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax import problems as P
from tests.helpers import assert_unbiased_with_power
from tests.helpers import scale_tree


def _np_log_sigmoid(a):
  return -np.logaddexp(0.0, -a)


def _np_elbo(params, data):
  """Mean ELBO by explicit loops over examples and the 2^K states (NumPy float64, no JAX)."""
  p = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params)
  k = p["prior_logits"].shape[0]
  total = 0.0
  for x in np.asarray(data, np.float64):
    enc_logits = x @ p["encoder"]["w"] + p["encoder"]["b"]
    for bits in itertools.product([0.0, 1.0], repeat=k):
      z = np.array(bits)
      log_q = np.sum(np.where(z == 1, _np_log_sigmoid(enc_logits), _np_log_sigmoid(-enc_logits)))
      a = p["prior_logits"]
      log_prior = np.sum(np.where(z == 1, _np_log_sigmoid(a), _np_log_sigmoid(-a)))
      h = z @ p["decoder"]["w"] + p["decoder"]["b"]
      log_lik = np.sum(np.where(x == 1, _np_log_sigmoid(h), _np_log_sigmoid(-h)))
      total += np.exp(log_q) * (log_prior + log_lik - log_q)
  return total / data.shape[0]


def _np_fd_grad(fn, params, eps=1e-5):
  """Central finite differences of a NumPy float64 function of a pytree, leaf by leaf."""
  leaves, treedef = jax.tree_util.tree_flatten(jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64),
                                                                      params))
  grads = []
  for i, leaf in enumerate(leaves):
    g = np.zeros_like(leaf)
    for idx in np.ndindex(leaf.shape):
      def at(delta):
        moved = [l.copy() for l in leaves]
        moved[i][idx] += delta
        return fn(jax.tree_util.tree_unflatten(treedef, moved))
      g[idx] = (at(eps) - at(-eps)) / (2 * eps)
    grads.append(g)
  return jax.tree_util.tree_unflatten(treedef, grads)


@pytest.fixture(scope="module")
def tiny():
  vae = P.binary_vae(jax.random.key(3), num_latents=3, num_pixels=4, num_examples=3, init_scale=0.8)
  # Move every parameter away from its structured initial value so no gradient entry is trivially zero.
  params = jax.tree_util.tree_map(
      lambda x: (np.asarray(x) + 0.2 * np.sin(np.arange(x.size) + 1.0).reshape(x.shape)).astype(np.float32),
      vae.params)
  return vae, params


def test_tiny_elbo_and_gradient_match_bruteforce_numpy(tiny):
  vae, params = tiny
  elbo, grad, encoder_grad = jax.jit(lambda p: (vae.elbo(p), jax.grad(vae.elbo)(p), vae.encoder_gradient(p)))(
      params)
  np.testing.assert_allclose(elbo, _np_elbo(params, vae.data), rtol=1e-5)
  fd = _np_fd_grad(functools.partial(_np_elbo, data=np.asarray(vae.data)), params)
  chex.assert_trees_all_close(grad, fd, atol=2e-5)
  # The hand-written encoder gradient (the estimand of the discrete estimators) and the Problem view.
  chex.assert_trees_all_close(encoder_grad, fd["encoder"], atol=2e-5)


def test_problem_view_against_generic_enumeration(tiny):
  vae, _ = tiny
  prob = vae.problem
  enc = jax.tree_util.tree_map(lambda x: np.asarray(x) + np.float32(0.3), prob.params)  # the fixed-f estimand

  @jax.jit
  def exact(enc):
    g, aux = pgjax.exact_gradient(prob.f, prob.dist_fn)(None, enc)  # all 2**(M K) = 512 joint states
    return (g, aux.value, prob.true_grad(enc), prob.expectation(enc), prob.expectation(prob.params),
            vae.elbo(vae.params), prob.true_grad(prob.params), vae.encoder_gradient(vae.params))

  g, value, true_grad, expectation, own_expectation, elbo, own_true_grad, encoder_grad = exact(enc)
  chex.assert_trees_all_close(g, true_grad, atol=1e-5)
  np.testing.assert_allclose(value, expectation, rtol=1e-5)
  # At the problem's own params the view is the ELBO and its encoder gradient.
  np.testing.assert_allclose(own_expectation, elbo, rtol=1e-6)
  chex.assert_trees_all_close(own_true_grad, encoder_grad, atol=1e-6)


def test_log_weight_is_linear_in_relaxed_latents(tiny):
  """The integrand accepts relaxed z in [0, 1]: each log-density is linear in z (finite, differentiable)."""
  vae, params = tiny

  @jax.jit
  def log_weights(params, x):
    z0, z1 = jnp.zeros(3), jnp.ones(3)
    lw = lambda z: P.binary_vae_log_weight(params, x, z)
    # Linear in z inside each log-density, but log p(x|z) is not linear in z: check the prior and q parts.
    zero_dec = {**params, "decoder": {"w": jnp.zeros_like(params["decoder"]["w"]), "b": params["decoder"]["b"]}}
    lw_lin = lambda z: P.binary_vae_log_weight(zero_dec, x, z)
    return lw_lin(0.25 * z1), lw_lin(z0), lw_lin(z1), jax.grad(lw)(0.5 * z1)

  at_quarter, at_zero, at_one, grad = (np.asarray(v) for v in log_weights(params, np.asarray(vae.data)[0]))
  np.testing.assert_allclose(at_quarter, 0.75 * at_zero + 0.25 * at_one, rtol=1e-5)
  assert np.all(np.isfinite(grad))


def test_score_function_unbiased_on_binary_vae_encoder(tiny):
  """RLOO on the problem view is within 5 SE of the exact encoder gradient; the same check at 1.1x fails."""
  prob = tiny[0].problem
  truth = jax.device_get(jax.jit(prob.true_grad)(prob.params))
  est = pgjax.score_function(prob.f, prob.dist_fn, num_samples=8, baseline="leave_one_out")
  assert_unbiased_with_power(est, prob.params, jax.random.key(11), target=truth,
                             wrong_target=scale_tree(truth, 1.1), num_replicates=1000)


def test_default_data_have_latent_structure():
  data = np.asarray(P.binary_vae().data)
  assert data.shape == (16, 16)
  mean = float(np.mean(data))
  assert 0.1 < mean < 0.9
  # Not all examples equal (the latents matter).
  assert len({tuple(r.tolist()) for r in data}) > 4


@pytest.mark.parametrize("call, match", [
    (lambda: P.binary_vae(num_latents=13), "num_latents"),
    (lambda: P.binary_vae(num_latents=0), "num_latents"),
    (lambda: P.binary_vae(data=np.full((3, 4), 0.5)), "binary"),
    (lambda: P.binary_vae(data=np.zeros(4)), "data"),
    (lambda: P.binary_vae(init_scale=-1.0), "init_scale"),
])
def test_bad_input(call, match):
  with pytest.raises(ValueError, match=match):
    call()
