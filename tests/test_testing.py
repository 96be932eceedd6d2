"""pgjax.testing: the checks pass on correct estimators and fail on wrong ones."""

import jax
import jax.numpy as jnp
import pytest

import pgjax


def noisy(bias=0.0, scale=1.0):
  def est(key, params):
    return params * (1.0 + bias) + scale * jax.random.normal(key, params.shape), ()
  return est


def test_assert_unbiased_passes_and_reports_failures(key):
  p = jnp.array([1.0, -2.0, 0.5])
  stats = pgjax.testing.assert_unbiased(noisy(), p, key, target=p, num_replicates=1000)
  assert stats.mean.shape == p.shape
  with pytest.raises(AssertionError, match="coord 1"):  # the largest coordinate shows the 10% bias first
    pgjax.testing.assert_unbiased(noisy(bias=0.1), p, key, target=p, num_replicates=4000)


def test_check_unbiased_returns_flag(key):
  p = jnp.array([1.0])
  ok, report, _ = pgjax.testing.check_unbiased(noisy(bias=1.0), p, key, target=p, num_replicates=100)
  assert not ok and "outside" in report


def test_assert_variance_less_with_margin(key):
  p = jnp.zeros(4)
  pgjax.testing.assert_variance_less(noisy(scale=0.5), noisy(scale=1.0), p, key, num_replicates=2000,
                                     ratio=0.4)  # 0.25 < 0.4
  with pytest.raises(AssertionError, match="variance claim failed"):
    pgjax.testing.assert_variance_less(noisy(scale=0.5), noisy(scale=1.0), p, key, num_replicates=2000,
                                       ratio=0.2)


def test_assert_tree_all_finite_names_the_leaf():
  with pytest.raises(AssertionError, match=r"grads\['b'\]"):
    pgjax.testing.assert_tree_all_finite({"a": jnp.ones(2), "b": jnp.array([jnp.nan])}, "grads")
