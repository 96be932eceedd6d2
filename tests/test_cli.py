"""Tests of the sweep command line (python -m pgjax.sweep CONFIG) and its config validation."""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

import pgjax
from pgjax._src.grid import cli
from pgjax._src.grid import config as grid_config
from pgjax._src.grid import plot as grid_plot

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
  old_umask = os.umask(0o027)
  try:
    assert cli.main([cfg, "--out", str(out), "--no-progress"]) == 0
  finally:
    os.umask(old_umask)
  # Files get the mode any new file gets under the umask (0o666 & ~0o027), not a temporary file's 0o600.
  cell = next((out / "cells").iterdir())
  for path in (out / "results.csv", out / "results.json", cell):
    assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
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


def test_help_says_that_quick_changes_the_output_folder(monkeypatch, capsys):
  monkeypatch.setattr(sys, "argv", ["pgjax-sweep", "--help"])
  with pytest.raises(SystemExit) as exit_info:
    cli.console_main()  # the installed console script's entry point
  assert exit_info.value.code == 0
  text = " ".join(capsys.readouterr().out.split())
  assert "usage: pgjax-sweep" in text
  assert "changes the output folder to <out>-quick unless --out is given" in text


def test_only_real_problems_are_offered_and_each_builds():
  known = grid_config.known_problems()
  for helper in ("cross_entropy_gradient", "argmax_accuracy", "label_scored_gradient",
                 "expected_reward_gradient", "make_classification_data", "linear_policy_logits"):
    assert helper not in known
  assert {"gaussian_quadratic", "categorical_bandit", "classification_robot"} <= set(known)
  for name in ("gaussian_quadratic", "classification_robot"):  # (the latter returns (problem, data))
    problem = grid_config.resolve_problem("p", {"type": name})
    assert isinstance(problem, pgjax.problems.Problem), name
  with pytest.raises(pgjax.sweep.GridError,
                     match=r"unknown problem type 'cross_entropy_gradient'; known: \['argmax_classifier'"):
    grid_config.resolve_problem("p", {"type": "cross_entropy_gradient"})


def test_variance_figure_plots_mse_beside_variance_and_shows_exact_zeros():
  def row(est, n, var, mse):
    return dict(estimator=est, problem="quad", num_samples=n, hyperparameters="{}", total_variance=var,
                total_variance_se=0.1 * var, mse=mse, mse_se=0.1 * mse)
  rows = [row("noisy", 4, 1.0, 1.0), row("noisy", 16, 0.25, 0.25),
          row("constant", 4, 0.0, 2.0), row("constant", 16, 0.0, 2.0)]  # biased and exactly constant
  fig = grid_plot.variance_figure(rows)
  var_ax, mse_ax = fig.axes
  assert var_ax.get_title() == "quad: total_variance" and mse_ax.get_title() == "quad: mse"
  zeros = [l for l in var_ax.get_lines() if l.get_label() == grid_plot.ZERO_LABEL]
  assert len(zeros) == 1 and list(zeros[0].get_xdata()) == [4, 16]
  bottom = var_ax.get_ylim()[0]
  assert bottom > 0 and list(zeros[0].get_ydata()) == [bottom, bottom]  # on the log axis, at its floor
  assert grid_plot.ZERO_LABEL in [t.get_text() for t in var_ax.get_legend().get_texts()]
  assert not [l for l in mse_ax.get_lines() if l.get_label() == grid_plot.ZERO_LABEL]
  # The biased constant estimator is plotted on the MSE panel (2.0 at both N), above the noisy one at N=16.
  mse_y = sorted(float(y) for c in mse_ax.containers for y in c.lines[0].get_ydata() if y == y)
  assert mse_y == [0.25, 1.0, 2.0, 2.0]


USER_MODULE = textwrap.dedent("""
    import os, time
    from typing import Any, Callable, NamedTuple
    import distrax, jax, jax.numpy as jnp
    import pgjax

    class Shifted(NamedTuple):
      params: Any
      f: Callable
      dist_fn: Callable
      true_grad: Callable

    def make_problem(shift=1.0):
      # E_{x ~ N(mu, I)} ||x - shift||^2 = ||mu - shift||^2 + 2: gradient 2 (mu - shift).
      return Shifted({"mu": jnp.zeros(2)}, lambda x: jnp.sum((x - shift) ** 2),
                     lambda p: distrax.MultivariateNormalDiag(p["mu"], jnp.ones(2)),
                     lambda p: {"mu": 2 * (p["mu"] - shift)})

    def stalling(problem, num_samples):
      est = pgjax.score_function(problem.f, problem.dist_fn, num_samples=num_samples,
                                 baseline="leave_one_out")
      if os.environ.get("STALL") != "1" or num_samples != 8:
        return est
      def stalled(key, params):
        jax.debug.callback(lambda: time.sleep(600))
        return est(key, params)
      return stalled
    """)

USER_CONFIG = textwrap.dedent("""
    num_seeds = 256
    sample_sizes = [2, 8]

    [problems.mine]
    type = "userprob:make_problem"
    shift = 0.5

    [estimators.rloo]
    type = "userprob:stalling"
    """)


def test_users_own_problem_and_ctrl_c_then_resume(tmp_path):
  (tmp_path / "userprob.py").write_text(USER_MODULE)
  cfg = write(tmp_path, USER_CONFIG)
  out = tmp_path / "out"
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  command = [sys.executable, "-m", "pgjax", cfg, "--out", str(out), "--no-progress", "--no-plot"]
  child = subprocess.Popen(command, env=dict(env, STALL="1"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  while not ((out / "cells").is_dir() and len(os.listdir(out / "cells")) >= 1):
    assert child.poll() is None, child.communicate()[1][-2000:]
    assert time.time() < deadline, "the child wrote no cell in time"
    time.sleep(0.1)
  time.sleep(0.5)  # the N = 8 group is now stalled in its callback
  child.send_signal(signal.SIGINT)
  _, err = child.communicate(timeout=60)  # promptly: the stalled group is abandoned
  assert child.returncode == 130, err[-2000:]
  assert "interrupted; rerun the same command to resume" in err and "Traceback" not in err, err[-2000:]
  rerun = subprocess.run(command, env=dict(env, STALL="0"), capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert "2 cells (1 computed, 1 reused, 1 groups compiled)" in rerun.stdout
  with open(out / "results.json") as fh:
    rows = json.load(fh)
  assert [(r["problem"], r["num_samples"]) for r in rows] == [("mine", 2), ("mine", 8)]
  for r in rows:  # the user's problem was built with shift = 0.5, and leave-one-out is unbiased
    assert json.loads(r["problem_spec"]) == {"type": "userprob:make_problem", "shift": 0.5}
    assert r["bias_p_value"] > 0.001 and r["max_abs_z"] < 4.5


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
