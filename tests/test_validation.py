"""Argument validators: errors name the argument; keys of every accepted kind give the same stream."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax._src import validation


def test_as_key_accepts_typed_legacy_and_numpy_keys_with_identical_streams():
  typed = validation.as_key(jax.random.key(3))
  legacy = validation.as_key(jax.random.PRNGKey(3))
  numpy_legacy = validation.as_key(np.asarray(jax.random.PRNGKey(3)))
  draws = [jax.random.normal(k, (4,)) for k in (typed, legacy, numpy_legacy)]
  np.testing.assert_array_equal(draws[0], draws[1])
  np.testing.assert_array_equal(draws[0], draws[2])


def test_as_key_accepts_typed_keys_of_any_impl_and_traced_keys():
  k = jax.random.key(0, impl="rbg")
  assert validation.as_key(k) is k
  out = jax.jit(lambda key: jax.random.uniform(validation.as_key(key)))(jax.random.PRNGKey(1))
  assert out.shape == ()


@pytest.mark.parametrize("bad", [0, 7, np.zeros(2), np.zeros(3, np.uint32), "key", None])
def test_as_key_rejects_non_keys_naming_the_argument(bad):
  with pytest.raises(TypeError, match="`rng`"):
    validation.as_key(bad, "rng")


def test_as_key_rejects_a_batch_of_keys():
  with pytest.raises(TypeError, match="`key`.*batch"):
    validation.as_key(jax.random.split(jax.random.key(0)))


def test_numeric_checks_name_the_argument():
  with pytest.raises(TypeError, match="`sigma`"):
    validation.check_positive({"a": 1.0}, "sigma")
  with pytest.raises(ValueError, match="`sigma`"):
    validation.check_positive(0.0, "sigma")
  with pytest.raises(ValueError, match="`sigma`"):
    validation.check_positive(float("nan"), "sigma")
  validation.check_positive(0.0, "sigma", allow_zero=True)
  with pytest.raises(ValueError, match="`decay`"):
    validation.check_range(1.0, "decay", 0.0, 1.0, hi_open=True)
  with pytest.raises(ValueError, match="`decay`.*scalar"):
    validation.check_range(np.ones(2), "decay", 0.0, 1.0)
  with pytest.raises(ValueError, match="`gamma`"):
    validation.check_unit_interval(np.array([0.5, 1.5]), "gamma")
  with pytest.raises(TypeError, match="`n`"):
    validation.check_positive_int(2.0, "n")
  with pytest.raises(ValueError, match="`n`"):
    validation.check_positive_int(1, "n", minimum=2)
  with pytest.raises(ValueError, match="`temperature`.*scalar"):
    validation.check_positive_scalar(np.ones(2), "temperature")
  for bad in (0.0, -1.0, float("inf")):
    with pytest.raises(ValueError, match="`temperature` must be finite and > 0"):
      validation.check_positive_scalar(bad, "temperature")
  validation.check_positive_scalar(np.float32(0.5), "temperature")


def test_traced_values_pass_numeric_checks():
  def f(s):
    validation.check_positive(s, "sigma")
    validation.check_range(s, "decay", 0.0, 1.0)
    validation.check_positive_scalar(s, "temperature")
    return s
  assert float(jax.jit(f)(-1.0)) == -1.0


def test_check_distribution_duck_types():
  import distrax
  validation.check_distribution(distrax.Normal(0.0, 1.0))
  with pytest.raises(TypeError, match="`dist_fn`.*`sample`"):
    validation.check_distribution(jnp.zeros(2))
