r"""Reproduces every experiment of the project and writes ``results/summary.md``.

Runs each experiment of :data:`EXPERIMENTS` as ``python -m experiments.<name> --out DIR [--quick]`` in its
own subprocess, one after the other, then every grid config in ``experiments/configs/*.toml`` through
``python -m pgjax``; collects the JSON each experiment writes (``DIR/<name>.json``, see
``experiments/_common.py``) and writes ``DIR/summary.md``: an overview that counts **claims** (statements
with a threshold that can fail) and nothing else, then per experiment a table of its claims (measured
value, threshold, PASS/FAIL), a separate table of its **measurements** (reported numbers, never counted as
a pass) and its figures. An experiment that crashes, times out or writes no JSON is reported as such with
the end of its output, and the rest still run.

Timeouts: ``--timeout SECONDS`` per experiment, or by default a budget (120 s quick, 2 h full) scaled by a
short calibration of this machine's current speed, repeated before each experiment (a fixed workload timed against a quiet machine, and the
load average; a loaded machine gets proportionally more time, at least the budget, at most 30 times it).

Usage (from the repository root)::

  python -m experiments.reproduce --quick        # small scale, under 8 min on a quiet 2-core CPU
  python -m experiments.reproduce                # full scale
  python -m experiments.reproduce --only zo_variance baseline_variance

(``python experiments/reproduce.py`` works too.) Exit status: 0 when every experiment ran and wrote its
results (claims may still fail: see the summary), 1 when one crashed or timed out (or, with
``--strict``, when a claim failed).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The experiments, in the order they run. A new experiment is one line here (and its module).
EXPERIMENTS = (
    "baseline_variance",
    "ce_vs_pg",
    "cem_cartpole",
    "importance_sampling",
    "natural_gradient_field",
    "reward_to_go",
    "zo_variance",
    "zo_vs_pg",
    "nes_vs_es",
    "discrete_estimators",
    "rl_trainers",
)
_NOT_EXPERIMENTS = {"__init__", "_common", "reproduce"}

QUICK_BUDGET_S = 120.0   # per experiment, quiet machine (each quick experiment takes < 60 s there)
FULL_BUDGET_S = 7200.0
# Seconds the calibration workload takes on a quiet 2-core machine (measured when it was written).
CALIBRATION_REFERENCE_S = 0.12


def experiment_names(only=None) -> list[str]:
  """The registry, then any other module in the folder (a script not yet registered still runs)."""
  found = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(HERE, "*.py")))
  names = [n for n in EXPERIMENTS if n in found] + [
      n for n in found if n not in EXPERIMENTS and n not in _NOT_EXPERIMENTS and not n.startswith("_")]
  if only:
    unknown = sorted(set(only) - set(names))
    if unknown:
      raise SystemExit(f"reproduce: unknown experiment(s) {unknown}; known: {names}")
    names = [n for n in names if n in only]
  return names


def grid_configs() -> list[str]:
  return sorted(glob.glob(os.path.join(HERE, "configs", "*.toml")))


def calibrate(repeats: int = 9) -> float:
  """Machine slowness now, between 1 and 30: the larger of (a) a fixed single-threaded NumPy + Python workload's
  median time over its time on a quiet machine and (b) half the 1-minute load average per CPU core (the
  load average counts waiting threads too, so it overstates the slowdown; measured here: load 19 on 2 cores
  slowed the experiments about 4x)."""
  import numpy as np
  a = np.random.default_rng(0).standard_normal(200_000)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    x = a
    for _ in range(30):
      x = np.tanh(x * 1.01)
    s = 0.0
    for v in range(200_000):  # the Python interpreter's share of an experiment (tracing, plotting)
      s += v * 0.5
    times.append(time.perf_counter() - t0)
  measured = sorted(times)[len(times) // 2] / CALIBRATION_REFERENCE_S
  try:
    per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
  except OSError:
    per_core = 0.0
  return min(30.0, max(1.0, measured, 0.5 * per_core))


def _tail(text: str, n: int = 1500) -> str:
  return (text or "").strip()[-n:]


def run(cmd: list[str], timeout: float, log_path: str) -> dict:
  env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
  t0 = time.time()
  cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
  with open(log_path, "w") as log:
    try:
      proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
      status = "ok" if proc.returncode == 0 else f"crashed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
      status = f"timed out after {timeout:.0f} s"
  seconds = time.time() - t0
  cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)  # finished children only
  with open(log_path) as log:
    output = log.read()
  return {"status": status, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "log_tail": _tail(output)}


def _fmt(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  if isinstance(value, (list, tuple)) and len(value) > 6:
    return "[" + ", ".join(_fmt(v) for v in value[:6]) + ", ...]"
  if isinstance(value, (list, tuple)):
    return "[" + ", ".join(_fmt(v) for v in value) + "]"
  if isinstance(value, dict):
    return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
  return str(value).replace("|", "\\|").replace("\n", " ")


def _versions() -> str:
  try:
    import jax
    import jaxlib
    import pgjax
    devices = jax.devices()
    return (f"pgjax {pgjax.__version__}, jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
            f"Python {platform.python_version()}, {platform.platform()}, "
            f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), "
            f"{os.cpu_count()} CPU cores")
  except Exception as err:  # noqa: BLE001 - the summary must still be written
    return f"(versions unavailable: {err})"


def _load() -> str:
  try:
    return "load average {:.1f} / {:.1f} / {:.1f} (1 / 5 / 15 min)".format(*os.getloadavg())
  except OSError:
    return "load average unavailable"


def write_summary(out: str, entries: list[dict], grids: list[dict], args, total: float,
                  machine: str = "") -> str:
  lines = ["# pgjax: reproduction summary", ""]
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  cmd = "python -m experiments.reproduce" + (" --quick" if args.quick else "") + (
      f" --out {args.out}" if args.out != "results" else "")
  lines += [f"- Command: `{cmd}`", f"- Finished: {now}, total {total / 60:.1f} min",
            f"- Machine: {_versions()}"]
  if machine:
    lines.append(f"- Machine load: {machine}")
  lines += [f"- Scale: {'quick (each claim checked at a smaller scale)' if args.quick else 'full'}", ""]
  n_claims = sum(len(e.get("claims", [])) for e in entries)
  n_pass = sum(bool(c["passed"]) for e in entries for c in e.get("claims", []))
  n_meas = sum(len(e.get("measurements", [])) for e in entries)
  n_bad = sum(bool(e["status"] != "ok" or e.get("json_error")) for e in entries)
  lines += [f"**{n_pass} of {n_claims} claims pass; {len(entries) - n_bad} of {len(entries)} experiments "
            f"ran to completion.**", "",
            f"A claim has a threshold that a wrong implementation or a different outcome would fail. "
            f"Measurements ({n_meas} below) are reported numbers with no threshold and are not counted.", ""]
  lines += ["| experiment | status | seconds | CPU seconds | claims passed | measurements |",
            "|---|---|---:|---:|---:|---:|"]
  for e in entries:
    status = e["status"] if not e.get("json_error") else f"{e['status']}; {e['json_error']}"
    cl = e.get("claims", [])
    lines.append(f"| [{e['name']}](#{e['name']}) | {status} | {e['seconds']} | {e.get('cpu_seconds', '')} | "
                 f"{sum(bool(c['passed']) for c in cl)} / {len(cl)} | {len(e.get('measurements', []))} |")
  for g in grids:
    lines.append(f"| grid: {g['name']} | {g['status']} | {g['seconds']} | {g.get('cpu_seconds', '')} | (table) | |")
  lines.append("")
  for e in entries:
    lines += [f"## {e['name']}", ""]
    if e.get("command"):
      lines += [f"`{e['command']}` ({e['seconds']} s)", ""]
    if e["status"] != "ok" or e.get("json_error"):
      lines += [f"**{e['status']}{'; ' + e['json_error'] if e.get('json_error') else ''}.** "
                "End of its output:", "", "```", e["log_tail"], "```", ""]
    if e.get("claims"):
      lines += ["| claim | value | threshold | result |", "|---|---|---|---|"]
      for c in e["claims"]:
        lines.append(f"| {_fmt(c['claim'])} | {_fmt(c['value'])} | {_fmt(c['threshold'])} | "
                     f"{'PASS' if c['passed'] else '**FAIL**'} |")
      lines.append("")
    if e.get("measurements"):
      lines += ["Measurements (no threshold; not counted):", "", "| measurement | value | note |",
                "|---|---|---|"]
      for m in e["measurements"]:
        lines.append(f"| {_fmt(m['name'])} | {_fmt(m['value'])} | {_fmt(m.get('note', ''))} |")
      lines.append("")
    for fig in e.get("figures", []):
      if os.path.exists(os.path.join(out, fig)):
        lines += [f"![{fig}]({fig})", ""]
      else:
        lines += [f"(figure `{fig}` is missing)", ""]
  for g in grids:
    lines += [f"## grid: {g['name']}", "", f"`{g['command']}` ({g['seconds']} s)", ""]
    if g["status"] != "ok":
      lines += [f"**{g['status']}.** End of its output:", "", "```", g["log_tail"], "```", ""]
      continue
    lines += g["table"] + [""]
    if g.get("figure"):
      lines += [f"![{g['name']}]({g['figure']})", ""]
  path = os.path.join(out, "summary.md")
  tmp = path + ".tmp"
  with open(tmp, "w") as fh:
    fh.write("\n".join(lines) + "\n")
  os.replace(tmp, path)
  return path


_TEST_HEADERS = {"max_abs_z": "bias test: max \\|z\\|", "bias_p_value": "bias p-value"}


def grid_table(results_json: str) -> list[str]:
  """The grid's rows; bias read through its test (largest per-coordinate |z| and its p-value, where the grid
  has them) and the unbiased squared bias, never as |mean - true| (which noise alone makes positive)."""
  with open(results_json) as fh:
    rows = json.load(fh)
  test_cols = [c for c in ("max_abs_z", "bias_p_value") if rows and c in rows[0]]
  head = ("| estimator | problem | N | hyperparameters | total variance (± SE) | squared bias (unbiased) | "
          + "".join(f"{_TEST_HEADERS[c]} | " for c in test_cols) + "cosine |")
  out = [head, "|---|---|---:|---|---|---|" + "---:|" * len(test_cols) + "---:|"]
  for r in rows:
    sq = _fmt(r.get("bias_sq")) + (f" ± {_fmt(r['bias_sq_se'])}" if r.get("bias_sq_se") is not None else "")
    out.append(f"| {r['estimator']} | {r['problem']} | {r['num_samples']} | "
               f"{r.get('hyperparameters') or ''} | {_fmt(r['total_variance'])} ± "
               f"{_fmt(r['total_variance_se'])} | {sq} | " + "".join(f"{_fmt(r.get(c))} | " for c in test_cols)
               + f"{_fmt(r['cosine'])} |")
  return out


def _collect(entry: dict, json_path: str, before: float | None) -> None:
  if os.path.exists(json_path) and os.path.getmtime(json_path) != before:
    try:
      with open(json_path) as fh:
        record = json.load(fh)
      entry["claims"] = record.get("claims", [])
      entry["measurements"] = record.get("measurements", [])
      entry["figures"] = record.get("figures", [])
    except (OSError, ValueError) as err:
      entry["json_error"] = f"unreadable {os.path.basename(json_path)}: {err}"
  else:
    entry["json_error"] = f"no fresh {os.path.basename(json_path)} written"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small scale (under 8 min on a quiet 2-core CPU)")
  parser.add_argument("--out", default="results", help="output folder (default results)")
  parser.add_argument("--only", nargs="*", help="run only these experiments (module names)")
  parser.add_argument("--no-grids", action="store_true", help="skip experiments/configs/*.toml")
  parser.add_argument("--timeout", type=float, default=None,
                      help="per-experiment limit in seconds (default: 120 with --quick, 7200 without, "
                           "times the measured slowness of this machine)")
  parser.add_argument("--strict", action="store_true", help="exit 1 when any claim fails")
  args = parser.parse_args(argv)
  out = os.path.abspath(os.path.join(ROOT, args.out) if not os.path.isabs(args.out) else args.out)
  os.makedirs(os.path.join(out, "logs"), exist_ok=True)
  budget = QUICK_BUDGET_S if args.quick else FULL_BUDGET_S

  def limit() -> float:
    """--timeout, or the budget times the machine's slowness measured just now (load changes during a run)."""
    return args.timeout if args.timeout is not None else budget * calibrate(repeats=5)

  how = ("set by --timeout" if args.timeout is not None else
         f"{budget:.0f} s x the slowness measured before each experiment")
  machine = f"{_load()} at the start; per-experiment timeout {how}"
  print(machine, flush=True)
  started = time.time()
  entries = []
  names = experiment_names(args.only)
  for i, name in enumerate(names):
    cmd = [sys.executable, "-m", f"experiments.{name}", "--out", out] + (["--quick"] if args.quick else [])
    print(f"[{i + 1}/{len(names)}] {name} ...", flush=True)
    json_path = os.path.join(out, f"{name}.json")
    before = os.path.getmtime(json_path) if os.path.exists(json_path) else None
    timeout = limit()
    res = run(cmd, timeout, os.path.join(out, "logs", f"{name}.log"))
    entry = {"name": name, **res, "timeout_s": round(timeout),
             "command": " ".join(["python -m", f"experiments.{name}"] + (["--quick"] if args.quick else [])
                                 + ["--out", args.out])}
    _collect(entry, json_path, before)
    cl = entry.get("claims", [])
    print(f"    {entry['status']}, {entry['seconds']} s (CPU {entry['cpu_seconds']} s, limit {timeout:.0f} s), "
          f"claims {sum(bool(c['passed']) for c in cl)}/{len(cl)}, "
          f"measurements {len(entry.get('measurements', []))}"
          + (f", {entry['json_error']}" if entry.get("json_error") else ""), flush=True)
    entries.append(entry)

  grids = []
  if not args.no_grids and not args.only:
    for cfg in grid_configs():
      name = os.path.splitext(os.path.basename(cfg))[0]
      grid_out = os.path.join(out, "grids", name)
      cmd = [sys.executable, "-m", "pgjax", os.path.relpath(cfg, ROOT), "--out", grid_out,
             "--no-progress"] + (["--quick"] if args.quick else [])
      print(f"[grid] {name} ...", flush=True)
      res = run(cmd, limit(), os.path.join(out, "logs", f"grid_{name}.log"))
      entry = {"name": name, **res, "command": "python -m pgjax " + os.path.relpath(cfg, ROOT)
               + (" --quick" if args.quick else "")}
      results_json = os.path.join(grid_out, "results.json")
      if res["status"] == "ok" and os.path.exists(results_json):
        entry["table"] = grid_table(results_json)
        fig = os.path.join(grid_out, "variance.png")
        if os.path.exists(fig):
          entry["figure"] = os.path.relpath(fig, out)
      elif res["status"] == "ok":
        entry["status"] = "ran but wrote no results.json"
      print(f"    {entry['status']}, {entry['seconds']} s", flush=True)
      grids.append(entry)

  total = time.time() - started
  path = write_summary(out, entries, grids, args, total, machine=f"{machine}; {_load()} at the end")
  print(f"wrote {path} ({total / 60:.1f} min)")
  crashed = [e["name"] for e in entries + grids if e["status"] != "ok" or e.get("json_error")]
  failed = [c["claim"] for e in entries for c in e.get("claims", []) if not c["passed"]]
  if crashed:
    print(f"did not complete: {crashed}")
  if failed:
    print(f"{len(failed)} claim(s) failed (see the summary)")
  return 1 if crashed or (args.strict and failed) else 0


if __name__ == "__main__":
  sys.exit(main())
