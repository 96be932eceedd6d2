"""Tests of pgjax.sweep.run_grid: closed-form statistics per cell, one compilation per group,
resume after a SIGKILL, validation before any work."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax.sweep import GridError
from pgjax.sweep import run_grid

STAT_COLUMNS = ("estimator", "problem", "num_samples", "hyperparameters", "num_seeds",
                "total_variance", "total_variance_se", "bias_norm", "mse", "cosine", "snr", "mean",
                "key", "cell_id")


class ToyProblem(NamedTuple):
  """A problem whose estimators below have closed-form moments."""
  params: Any
  true_grad: Any


def noisy_factory(counter=None):
  r"""g = mu + scale * mean of N standard normals, per coordinate: E g = mu, tr Cov = D scale^2 / N."""
  def factory(problem, num_samples, scale=1.0):
    if counter is not None:
      counter["traces"] += 1

    def estimator(key, params):
      z = jax.random.normal(key, (num_samples,) + params["mu"].shape)
      return {"mu": params["mu"] + scale * jnp.mean(z, axis=0)}, ()
    return estimator
  return factory


def toy_problem(dim=3):
  mu = jnp.arange(1.0, dim + 1.0)
  return ToyProblem({"mu": mu}, lambda p: {"mu": p["mu"]})


def test_cells_match_closed_form_and_record_provenance(tmp_path):
  counter = {"traces": 0}
  scales = [0.5, 1.0, 2.0]
  res = run_grid({"noisy": noisy_factory(counter)}, {"toy": toy_problem()}, sample_sizes=[1, 4],
                 num_seeds=2000, key=0, out_dir=tmp_path, hyperparameters={"noisy": {"scale": scales}},
                 progress=False)
  assert len(res.rows) == 6 and res.num_computed == 6 and res.num_reused == 0
  # One trace (hence one compilation) per (estimator, problem, sample size): 2, not 6.
  assert counter["traces"] == 2 and res.num_compiled == 2
  for row in res.rows:
    scale, n = row["scale"], row["num_samples"]
    expected = 3 * scale ** 2 / n
    assert abs(row["total_variance"] - expected) <= 5 * row["total_variance_se"], row
    assert row["total_variance_se"] < 0.1 * expected  # the check above has power
    assert abs(row["mse"] - expected) <= 5 * row["mse_se"]
    assert row["num_seeds"] == 2000
    for k in ("pgjax_version", "jax_version", "jaxlib_version", "device_kind", "device_count", "key"):
      assert row[k] not in ("", None), k
    assert row["jax_version"] == jax.__version__ and row["device_count"] == jax.device_count()
  # Common random numbers: all scales of one sample size share the key; sample sizes do not.
  assert len({r["key"] for r in res.rows if r["num_samples"] == 1}) == 1
  assert len({r["key"] for r in res.rows}) == 2
  with open(res.json_path) as fh:
    assert [r["cell_id"] for r in json.load(fh)] == [r["cell_id"] for r in res.rows]
  with open(res.csv_path) as fh:
    lines = fh.read().splitlines()
  assert len(lines) == 7 and "total_variance" in lines[0] and "scale" in lines[0]
  # A rerun reads every cell back: nothing computed or compiled, same rows.
  again = run_grid({"noisy": noisy_factory(counter)}, {"toy": toy_problem()}, sample_sizes=[1, 4],
                   num_seeds=2000, key=0, out_dir=tmp_path,
                   hyperparameters={"noisy": {"scale": scales}}, progress=False)
  assert (again.num_computed, again.num_reused, again.num_compiled) == (0, 6, 0)
  assert again.rows == res.rows


def test_one_compilation_across_sigma_damping_and_learning_rate(tmp_path):
  r"""g = mu + (lr sigma / (1 + damping)) mean(z): tr Cov = D (lr sigma / (1 + damping))^2 / N."""
  counter = {"traces": 0}

  def factory(problem, n, sigma, damping, learning_rate):
    counter["traces"] += 1
    scale = learning_rate * sigma / (1.0 + damping)
    return noisy_factory()(problem, n, scale)

  grid = {"sigma": [0.5, 2.0], "damping": [0.0, 1.0], "learning_rate": [0.1, 1.0]}
  res = run_grid({"es_like": factory}, {"toy": toy_problem(dim=2)}, sample_sizes=[8], num_seeds=1000,
                 key=5, out_dir=tmp_path, hyperparameters={"es_like": grid}, progress=False)
  assert len(res.rows) == 8 and counter["traces"] == 1 and res.num_compiled == 1
  seen = set()
  for row in res.rows:
    expected = 2 * (row["learning_rate"] * row["sigma"] / (1 + row["damping"])) ** 2 / 8
    assert abs(row["total_variance"] - expected) <= 5 * row["total_variance_se"], row
    seen.add((row["sigma"], row["damping"], row["learning_rate"]))
  assert len(seen) == 8


def test_cell_equals_direct_gradient_stats_with_an_rbg_key(tmp_path):
  problem = pgjax.problems.gaussian_quadratic()
  root = jax.random.key(3, impl="rbg")  # a non-default PRNG implementation (4-word keys)
  res = run_grid({"sf": lambda p, n: pgjax.score_function(p.f, p.dist_fn, num_samples=n)},
                 {"quad": problem}, sample_sizes=[4], num_seeds=300, key=root,
                 out_dir=tmp_path, progress=False, chunk_size=64)
  row = res.rows[0]
  assert row["key_impl"] == "rbg" and len(row["key"].split(":")) == 4
  key = jax.random.wrap_key_data(jnp.asarray([int(x, 16) for x in row["key"].split(":")], jnp.uint32),
                                 impl=row["key_impl"])
  assert row["root_key"] == ":".join(f"{x:#010x}" for x in np.asarray(jax.random.key_data(root)))
  est = pgjax.score_function(problem.f, problem.dist_fn, num_samples=4)
  direct = pgjax.sweep.gradient_stats(est, problem.params, key, num_seeds=300, chunk_size=64,
                                      true_grad=problem.true_grad(problem.params))
  np.testing.assert_allclose(row["total_variance"], direct.total_variance, rtol=1e-5)
  np.testing.assert_allclose(row["bias_norm"], direct.bias_norm, rtol=1e-4)
  np.testing.assert_allclose(np.concatenate([np.ravel(x) for x in row["mean"]]),
                             jax.flatten_util.ravel_pytree(direct.mean)[0], rtol=1e-5, atol=1e-6)


_CHILD = textwrap.dedent("""
    import os, sys, time
    import jax
    sys.path.insert(0, {tests!r})
    from test_grid import noisy_factory, toy_problem
    from pgjax.sweep import run_grid
    stall = os.environ.get("STALL") == "1"
    base = noisy_factory()

    def factory(problem, n, scale):
      est = base(problem, n, scale)
      if not (stall and n == 8):
        return est
      def stalled(key, params):
        # A host callback that stalls the last group, so the parent can kill us mid-grid.
        jax.debug.callback(lambda: time.sleep(600))
        return est(key, params)
      return stalled

    res = run_grid({{"noisy": factory}}, {{"toy": toy_problem()}}, sample_sizes=[2, 4, 8],
                   num_seeds=128, key=7, out_dir=sys.argv[1], progress=False,
                   hyperparameters={{"noisy": {{"scale": [0.5, 1.0, 3.0]}}}})
    print("computed", res.num_computed, "reused", res.num_reused, "compiled", res.num_compiled)
    """)


def _child(out_dir, cache_dir, stall):
  script = _CHILD.format(tests=os.path.dirname(__file__))
  # A persistent compilation cache shared by the three processes keeps this test to ~4 compilations.
  env = dict(os.environ, STALL="1" if stall else "0", JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return subprocess.Popen([sys.executable, "-c", script, str(out_dir)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _table(path):
  with open(path) as fh:
    rows = json.load(fh)
  return [{k: r[k] for k in STAT_COLUMNS} for r in rows]


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
  killed, clean, cache = tmp_path / "killed", tmp_path / "clean", tmp_path / "cache"
  reference = _child(clean, cache, stall=False)  # the uninterrupted run
  out, err = reference.communicate(timeout=300)
  assert reference.returncode == 0, err.decode()[-2000:]
  assert b"computed 9 reused 0 compiled 3" in out

  child = _child(killed, cache, stall=True)
  cells = killed / "cells"
  deadline = time.time() + 120
  while time.time() < deadline:
    if cells.is_dir() and len([f for f in os.listdir(cells) if f.endswith(".json")]) >= 6:
      break  # groups N=2 and N=4 are written; N=8 stalls in its callback
    assert child.poll() is None, child.communicate()[1].decode()[-2000:]
    time.sleep(0.1)
  else:
    pytest.fail("the child wrote no cells in time")
  time.sleep(0.3)
  child.send_signal(signal.SIGKILL)
  child.wait()
  assert child.returncode == -signal.SIGKILL
  written = sorted(os.listdir(cells))
  assert len(written) == 6 and all(f.endswith(".json") for f in written)  # whole cells only
  assert len(_table(killed / "results.json")) == 6

  restart = _child(killed, cache, stall=False)
  out, err = restart.communicate(timeout=300)
  assert restart.returncode == 0, err.decode()[-2000:]
  assert b"computed 3 reused 6 compiled 1" in out  # only the missing group runs
  resumed, uninterrupted = _table(killed / "results.json"), _table(clean / "results.json")
  assert resumed == uninterrupted  # bit-identical statistics, same order
  ids = [r["cell_id"] for r in resumed]
  assert len(ids) == len(set(ids)) == 9
  with open(killed / "results.csv") as fh:
    assert len(fh.read().splitlines()) == 10


def test_validation_happens_before_any_work_and_keeps_old_results(tmp_path):
  good = dict(estimators={"noisy": noisy_factory()}, problems={"toy": toy_problem()},
              sample_sizes=[2], num_seeds=16, key=0, out_dir=tmp_path, progress=False)
  run_grid(**good)
  before = {p: open(os.path.join(tmp_path, p), "rb").read() for p in ("results.csv", "results.json")}
  cells_before = sorted(os.listdir(tmp_path / "cells"))

  cases = [
      (dict(sample_sizes=[2, -3]), r"sample_sizes\[1\].*>= 1"),
      (dict(sample_sizes=[2.5]), r"sample_sizes\[0\].*integer"),
      (dict(sample_sizes=[]), "sample_sizes"),
      (dict(num_seeds=1), "num_seeds"),
      (dict(estimators={}), "estimators"),
      (dict(estimators={"noisy": "score_function"}), r"estimators\['noisy'\].*callable"),
      (dict(problems={"toy": 3.0}), r"problems\['toy'\].*params"),
      (dict(hyperparameters={"nosiy": {"scale": [1.0]}}), "unknown estimator 'nosiy'"),
      (dict(hyperparameters={"noisy": {"scale": [1.0, float("nan")]}}), "finite"),
      (dict(hyperparameters={"noisy": {"scale": []}}), "non-empty"),
      (dict(hyperparameters={"noisy": {"mse": [1.0]}}), "reserved"),
      (dict(key="zero"), "key"),
      (dict(out_dir=tmp_path / "results.csv" / "sub"), "out_dir.*is a file"),
      # A trace-time error of the estimator (bad static setting) is caught before running anything.
      (dict(estimators={"loo": lambda p, n: pgjax.score_function(
          p.f, p.dist_fn, num_samples=n, baseline="leave_one_out")},
            problems={"quad": pgjax.problems.gaussian_quadratic()}, sample_sizes=[4, 1]),
       "'loo'.*num_samples=1.*fails to build"),
  ]
  for change, match in cases:
    with pytest.raises(GridError, match=match):
      run_grid(**{**good, **change})
  after = {p: open(os.path.join(tmp_path, p), "rb").read() for p in ("results.csv", "results.json")}
  assert after == before and sorted(os.listdir(tmp_path / "cells")) == cells_before
  assert not (tmp_path / "results.csv" / "sub").exists()
  # resume=False recomputes this grid's cells in place: no duplicates, other files kept.
  fresh = run_grid(**good, resume=False)
  assert fresh.num_computed == 1 and sorted(os.listdir(tmp_path / "cells")) == cells_before
