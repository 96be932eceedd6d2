"""Pins the public surface: adding or removing a name is a deliberate, reviewed change."""

import importlib
import pathlib
import pkgutil
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import pgjax

EXPECTED_ALL = sorted([
    "__version__",
    "algos",
    "arm",
    "baselines",
    "cem",
    "control_variate",
    "disarm",
    "envs",
    "exact_gradient",
    "gumbel_softmax",
    "losses",
    "measure_valued",
    "natural",
    "nes",
    "noise_table",
    "pathwise",
    "problems",
    "rebar",
    "relax",
    "returns",
    "rollout",
    "score_function",
    "score_function_surrogate",
    "shaping",
    "sweep",
    "testing",
    "unordered_set",
    "zeroth_order",
])


def test_all_is_pinned_and_sorted():
  assert sorted(pgjax.__all__) == EXPECTED_ALL
  assert list(pgjax.__all__) == sorted(pgjax.__all__)


def test_every_exported_name_exists():
  for name in pgjax.__all__:
    assert hasattr(pgjax, name), name


def test_namespaces_have_sorted_all():
  for name in pgjax.__all__:
    obj = getattr(pgjax, name)
    if hasattr(obj, "__all__"):
      for sub in obj.__all__:
        assert hasattr(obj, sub), f"pgjax.{name}.{sub}"
      assert list(obj.__all__) == sorted(obj.__all__, key=str), f"pgjax.{name}.__all__ not sorted"


def _public_names():
  """``module.name`` for every name in the ``__all__`` of pgjax and of each public submodule."""
  modules = ["pgjax"] + [f"pgjax.{m.name}" for m in pkgutil.iter_modules(pgjax.__path__)
                         if not m.name.startswith("_")]
  names = []
  for module_name in sorted(modules):
    module = importlib.import_module(module_name)
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"
    names += [f"{module_name}.{name}" for name in sorted(module.__all__)]
  return names


def test_every_public_name_of_every_module_is_pinned():
  # To regenerate after a deliberate change (a removal needs a deprecated alias first, as below):
  # python -c "from tests.test_public_api import _public_names as f; print(*f(), sep=chr(10))" > tests/public_api.txt
  path = pathlib.Path(__file__).with_name("public_api.txt")
  pinned = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
  names = _public_names()
  removed, added = sorted(set(pinned) - set(names)), sorted(set(names) - set(pinned))
  assert not removed, f"public names removed without a deprecation path: {removed}"
  assert not added, f"public names added without updating tests/public_api.txt: {added}"
  assert len(pinned) > 200 and "pgjax.shaping.nes_utilities" in pinned  # the file is the whole surface


def test_deprecated_nes_utilities_warns_and_keeps_its_old_signature():
  with pytest.warns(DeprecationWarning, match="pgjax.shaping.nes_utilities"):
    old = pgjax.nes.nes_utilities
  # Wierstra et al. (2014), eq. 11 with P = 3 active members: raw_k = max(0, log(2.5) - log k) for rank k,
  # u_k = raw_k / sum(raw) - 1/3; the inactive fourth member gets 0.
  raw = np.maximum(0.0, np.log(2.5) - np.log([1.0, 2.0, 3.0]))
  u = raw / raw.sum() - 1.0 / 3.0
  expected = np.array([u[0], u[2], u[1], 0.0])  # fitness 3, 1, 2 have ranks 1, 3, 2
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # the returned function itself does not warn again
    got = np.asarray(old(jnp.array([3.0, 1.0, 2.0, 0.0]), num_active=3))
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
  assert abs(got[:3].sum()) < 1e-6 and got[3] == 0.0
  with pytest.raises(ValueError, match="fitness"):
    old(jnp.zeros((2, 3)))
  with pytest.raises(AttributeError, match="no_such_name"):
    pgjax.nes.no_such_name  # noqa: B018
