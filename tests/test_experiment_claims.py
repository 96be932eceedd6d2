"""Every experiment's claims are comparisons that can fail; measurements are never counted as passes.

The claims are declared as data (``CLAIMS`` in each ``experiments/<name>.py``), so these checks import the
experiments without running their computation. ``experiments/reproduce.py`` is checked on tiny fake
experiments: the overview counts claims only, a timed-out experiment is reported and the rest still run.
"""

import json
import math
import os
import string
import sys
import textwrap
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def package():
  if ROOT not in sys.path:  # the experiments run from the repository root (``python -m experiments.X``)
    sys.path.insert(0, ROOT)
  from experiments import _common, reproduce
  return _common, reproduce


def _experiment_modules(reproduce):
  import importlib
  return {name: importlib.import_module(f"experiments.{name}") for name in reproduce.experiment_names()}


def _format_fields(text):
  return {name: 1.0 for _, name, _, _ in string.Formatter().parse(text) if name}


def test_registry_lists_every_experiment_module(package):
  _, reproduce = package
  found = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "experiments"))
                 if f.endswith(".py") and not f.startswith("_") and f != "reproduce.py")
  assert sorted(reproduce.experiment_names()) == found
  missing = [n for n in reproduce.EXPERIMENTS if n not in found]
  assert not missing, f"registered but absent: {missing}"


def test_every_experiment_declares_claims_that_can_fail(package):
  C, reproduce = package
  modules = _experiment_modules(reproduce)
  assert len(modules) >= 8
  total = 0
  for name, mod in modules.items():
    for attr in ("compute", "claims", "plot", "main"):
      assert callable(getattr(mod, attr, None)), f"{name}.{attr} missing"
    specs = getattr(mod, "CLAIMS", None)
    assert isinstance(specs, dict) and specs, f"{name}: no CLAIMS declared"
    for key, spec in specs.items():
      assert isinstance(spec, C.ClaimSpec), (name, key)
      th = spec.threshold
      assert isinstance(th, C.Threshold) and th.kind in C.Threshold.KINDS, (name, key)
      good, bad = th.examples()
      fmt = _format_fields(spec.text)
      assert spec(good, **fmt).passed, (name, key, th.describe(), good)
      assert not spec(bad, **fmt).passed, (name, key, th.describe(), bad)
      assert not spec(float("nan"), **fmt).passed and not spec(None, **fmt).passed, (name, key)
      assert "reported" not in th.describe()
      total += 1
  assert total >= 40


@pytest.mark.parametrize("threshold, passing, failing", [
    ("lt", 0.5, 1.0), ("le", 1.0, 1.5), ("gt", 1.5, 1.0), ("ge", 1.0, 0.5), ("eq", 1.0, 0.999)])
def test_simple_comparisons_apply_to_every_element(package, threshold, passing, failing):
  C, _ = package
  th = getattr(C, threshold)(1.0)
  assert th.check(passing) and th.check([passing, passing])
  assert not th.check(failing) and not th.check([passing, failing])
  assert not th.check(float("nan")) and not th.check([passing, float("nan")]) and not th.check(None)
  assert not th.check([]) and not th.check("text")


def test_statistical_thresholds(package):
  C, _ = package
  assert C.within_se(0.0, 5).check([0.4, 0.1]) and not C.within_se(0.0, 5).check([0.6, 0.1])
  assert C.above_se(0.5, 5).check([0.7, 0.03]) and not C.above_se(0.5, 5).check([0.7, 0.05])
  assert C.below_se(0.0, 5).check([-1.0, 0.1]) and not C.below_se(0.0, 5).check([-1.0, 0.3])
  assert not C.below_se(0.0, 5).check([-1.0, -0.3])  # a negative SE is malformed
  assert C.separated_se(5).check([1.0, 0.1, 3.0, 0.1]) and not C.separated_se(5).check([1.0, 0.1, 1.9, 0.1])
  assert C.ci_above(0.0).check([0.2, 0.1]) and not C.ci_above(0.0).check([0.2, 0.3])
  assert C.ci_below(0.0).check([-0.2, 0.1]) and not C.ci_below(0.0).check([0.0, 0.1])
  assert C.ci_contains(1.0).check([1.1, 0.2]) and not C.ci_contains(1.0).check([1.5, 0.2])
  assert C.between(-1.05, -0.95).check(-1.0) and not C.between(-1.05, -0.95).check(-0.9)
  with pytest.raises(ValueError, match="kind"):
    C.Threshold("reported")
  with pytest.raises(ValueError, match="bound"):
    C.Threshold("<", float("nan"))


def test_claim_is_judged_by_its_value_not_a_flag(package):
  C, _ = package
  with pytest.raises(ValueError, match="Measurement"):
    C.Claim("iterations to solve", 31.5, "reported", True)
  with pytest.raises(TypeError, match="Threshold"):
    C.Claim("x", 1.0, None)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    c = C.Claim("ratio", 1.2, ">= 0.95", False)  # an older script's string threshold and wrong flag
  assert c.passed and c.threshold.kind == ">=" and any("value decides" in str(w.message) for w in caught)
  assert not C.Claim("ratio", 0.9, ">= 0.95").passed
  record = C.Claim("z", [0.1, 0.05], C.within_se(0.0, 5)).to_dict()
  assert record["passed"] and record["check"] == {"kind": "within_se", "bound": 0.0, "k": 5.0}


def test_run_rejects_claims_not_declared(package, tmp_path):
  C, _ = package
  spec = {"a": C.ClaimSpec("declared", C.lt(1))}
  ok = C.run("fake", "Fake experiment.", lambda key, quick: {"v": 0.5},
             lambda r: ([spec["a"](r["v"])], [C.Measurement("m", 3)]), lambda r, out: [], spec,
             ["--quick", "--out", str(tmp_path)])
  record = json.loads(open(ok).read())
  assert [c["passed"] for c in record["claims"]] == [True] and record["measurements"][0]["value"] == 3
  with pytest.raises(RuntimeError, match="not declared"):
    C.run("fake", "Fake experiment.", lambda key, quick: {}, lambda r: ([C.Claim("free", 0.5, C.lt(1))], []),
          lambda r, out: [], spec, ["--out", str(tmp_path)])


def _fake_root(tmp_path, scripts):
  exp = tmp_path / "experiments"
  exp.mkdir()
  (exp / "_common.py").write_text("raise SystemExit('never run')\n")
  for name, body in scripts.items():
    (exp / f"{name}.py").write_text(textwrap.dedent(body))
  return tmp_path


WRITES_JSON = """
    import json, os, sys
    out = sys.argv[sys.argv.index("--out") + 1]
    json.dump({"claims": [{"claim": "variance falls", "value": 0.5, "threshold": "< 1", "passed": True},
                          {"claim": "bias small", "value": 2.0, "threshold": "< 1", "passed": False}],
               "measurements": [{"name": "iterations to solve", "value": 31.5, "note": "book: about 40"}],
               "figures": []}, open(os.path.join(out, "good.json"), "w"))
    """


def test_reproduce_counts_claims_only_and_survives_a_timeout(package, tmp_path, monkeypatch):
  _, reproduce = package
  root = _fake_root(tmp_path, {"good": WRITES_JSON, "slow": "import time\ntime.sleep(60)\n",
                               "broken": "raise RuntimeError('boom')\n"})
  monkeypatch.setattr(reproduce, "HERE", str(root / "experiments"))
  monkeypatch.setattr(reproduce, "ROOT", str(root))
  monkeypatch.setattr(reproduce, "EXPERIMENTS", ("slow", "good"))
  assert reproduce.experiment_names() == ["slow", "good", "broken"]  # unregistered modules still run
  out = tmp_path / "res"
  assert reproduce.main(["--quick", "--out", str(out), "--no-grids", "--timeout", "3"]) == 1
  summary = (out / "summary.md").read_text()
  assert "**1 of 2 claims pass; 1 of 3 experiments ran to completion.**" in summary
  assert "timed out after 3 s" in summary and "RuntimeError: boom" in summary
  assert "| variance falls | 0.5 | < 1 | PASS |" in summary and "| bias small | 2 | < 1 | **FAIL** |" in summary
  assert "| iterations to solve | 31.5 | book: about 40 |" in summary  # listed apart, not counted
  assert "python -m experiments.good" in summary


def test_calibrated_timeout_grows_with_load(package, monkeypatch):
  _, reproduce = package
  monkeypatch.setattr(reproduce.os, "getloadavg", lambda: (20.0, 20.0, 20.0))
  monkeypatch.setattr(reproduce.os, "cpu_count", lambda: 2)
  assert reproduce.calibrate(repeats=1) >= 5.0
  monkeypatch.setattr(reproduce.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
  assert math.isfinite(reproduce.calibrate(repeats=1)) and reproduce.calibrate(repeats=1) >= 1.0
