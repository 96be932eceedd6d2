"""Tests of the sweep command line (python -m pgjax.sweep CONFIG) and its config validation."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from pgjax._src import cli

CONFIG = textwrap.dedent("""
    num_seeds = 400
    sample_sizes = [4, 16]
    seed = 3

    [quick]
    num_seeds = 64
    sample_sizes = [4]

    [problems.quad]
    type = "gaussian_quadratic"
    dim = 2

    [estimators.reinforce]
    type = "score_function"

    [estimators.rloo]
    type = "score_function"
    baseline = "leave_one_out"
    """)


def write(tmp_path, text, name="grid.toml"):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_toml_config_runs_writes_table_and_plot_and_resumes(tmp_path, capsys):
  cfg = write(tmp_path, CONFIG)
  out = tmp_path / "out"
  assert cli.main([cfg, "--out", str(out), "--no-progress"]) == 0
  with open(out / "results.json") as fh:
    rows = json.load(fh)
  assert [(r["estimator"], r["num_samples"]) for r in rows] == [
      ("reinforce", 4), ("reinforce", 16), ("rloo", 4), ("rloo", 16)]
  by = {(r["estimator"], r["num_samples"]): r for r in rows}
  for est in ("reinforce", "rloo"):  # variance falls like 1/N: 4x fewer samples, ~4x the variance
    ratio = by[(est, 4)]["total_variance"] / by[(est, 16)]["total_variance"]
    assert 2.5 < ratio < 6.5, (est, ratio)
  assert by[("rloo", 16)]["total_variance"] < by[("reinforce", 16)]["total_variance"]
  assert json.loads(rows[2]["estimator_spec"]) == {"type": "score_function", "baseline": "leave_one_out"}
  assert (out / "variance.png").stat().st_size > 1000
  assert "4 cells (4 computed, 0 reused, 4 groups compiled)" in capsys.readouterr().out
  assert cli.main([cfg, "--out", str(out), "--no-progress", "--no-plot"]) == 0
  assert "4 cells (0 computed, 4 reused, 0 groups compiled)" in capsys.readouterr().out


def test_quick_json_config_and_module_entry_point(tmp_path):
  cfg = {"num_seeds": 400, "sample_sizes": [4, 16],
         "quick": {"num_seeds": 32, "sample_sizes": [4]},
         "problems": {"bandit": {"type": "categorical_bandit"}},
         "estimators": {"sf": {"type": "score_function", "baseline": "mean"}}}
  path = write(tmp_path, json.dumps(cfg), "grid.json")
  out = tmp_path / "quick"
  proc = subprocess.run([sys.executable, "-m", "pgjax.sweep", path, "--quick", "--out", str(out),
                         "--no-progress"], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(out / "results.json") as fh:
    rows = json.load(fh)
  assert len(rows) == 1 and rows[0]["num_seeds"] == 32 and rows[0]["num_samples"] == 4
  assert os.path.exists(out / "variance.png")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.replace('type = "score_function"\n\n', 'type = "score_fnction"\n\n', 1),
     "unknown estimator type 'score_fnction'"),
    (lambda c: c.replace("num_seeds = 400\n", ""), r"missing required field\(s\) \['num_seeds'\]"),
    (lambda c: c.replace("sample_sizes = [4, 16]", "sample_sizes = [4, -16]"), r"sample_sizes\[1\]"),
    (lambda c: c.replace('type = "gaussian_quadratic"', 'type = "gaussian_quadrtic"'),
     "unknown problem type 'gaussian_quadrtic'"),
    (lambda c: c.replace('[estimators.rloo]\ntype = "score_function"\n', '[estimators.rloo]\n'),
     "estimators.rloo is missing the field `type`"),
    (lambda c: c.replace("seed = 3", "seeds = 3"), r"unknown field\(s\) \['seeds'\]"),
    (lambda c: c.replace("dim = 2", "dimension = 2"), "problems.quad: gaussian_quadratic"),
    (lambda c: c.replace("sample_sizes = [4, 16]", "sample_sizes = [1, 16]"),
     "'rloo'.*num_samples=1.*fails to build"),
    (lambda c: c + "\n[broken\n", "not valid TOML"),
])
def test_bad_configs_fail_before_any_work(tmp_path, capsys, edit, message):
  out = tmp_path / "out"
  out.mkdir()
  (out / "results.csv").write_text("precious\n")
  cfg = write(tmp_path, edit(CONFIG))
  assert cli.main([cfg, "--out", str(out), "--no-progress"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("pgjax.sweep: error:")
  assert re.search(message, err), err
  assert sorted(os.listdir(out)) == ["results.csv"]  # nothing computed, nothing lost
  assert (out / "results.csv").read_text() == "precious\n"


def test_unwritable_output_and_missing_config(tmp_path, capsys):
  cfg = write(tmp_path, CONFIG)
  blocker = tmp_path / "file"
  blocker.write_text("x")
  assert cli.main([cfg, "--out", str(blocker / "sub"), "--no-progress"]) == 2
  assert "is a file, not a folder" in capsys.readouterr().err
  assert cli.main([str(tmp_path / "nope.toml")]) == 2
  assert "does not exist" in capsys.readouterr().err


def _load_reproduce(monkeypatch, root):
  import importlib.util
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments",
                      "reproduce.py")
  spec = importlib.util.spec_from_file_location("reproduce_under_test", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  monkeypatch.setattr(mod, "HERE", str(root / "experiments"))
  monkeypatch.setattr(mod, "ROOT", str(root))
  return mod


def test_reproduce_collects_claims_figures_and_reports_crashes(tmp_path, monkeypatch):
  exp = tmp_path / "experiments"
  exp.mkdir()
  (exp / "_common.py").write_text("raise SystemExit('never run')\n")
  (exp / "good.py").write_text(textwrap.dedent("""
      import json, os, sys
      out = sys.argv[sys.argv.index("--out") + 1]
      quick = "--quick" in sys.argv
      open(os.path.join(out, "good.png"), "wb").write(b"png")
      json.dump({"claims": [{"claim": "variance falls", "value": 0.5, "threshold": "< 1", "passed": True},
                            {"claim": "quick flag seen", "value": quick, "threshold": "True",
                             "passed": quick}],
                 "figures": ["good.png"]}, open(os.path.join(out, "good.json"), "w"))
      """))
  (exp / "broken.py").write_text("import sys\nprint('about to fail')\nraise RuntimeError('boom')\n")
  mod = _load_reproduce(monkeypatch, tmp_path)
  out = tmp_path / "res"
  assert mod.main(["--quick", "--out", str(out), "--no-grids"]) == 1  # a crash is not hidden
  summary = (out / "summary.md").read_text()
  assert "**2 of 2 claims pass; 1 of 2 experiments ran to completion.**" in summary
  assert "| variance falls | 0.5 | < 1 | PASS |" in summary
  assert "![good.png](good.png)" in summary
  assert "crashed (exit 1)" in summary and "RuntimeError: boom" in summary
  assert "_common" not in summary
