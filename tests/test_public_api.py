"""Pins the public surface: adding or removing a name is a deliberate, reviewed change."""

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
