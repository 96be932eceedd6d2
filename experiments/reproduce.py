r"""Reproduces every experiment of the project and writes ``results/summary.md``.

Runs each ``experiments/*.py`` script (except ``_common.py`` and this file) in its own subprocess with
``--out DIR`` (and ``--quick`` when given), one after the other, then every grid config in
``experiments/configs/*.toml`` through ``python -m pgjax.sweep``; collects the JSON each script writes
(``DIR/<name>.json``, see ``experiments/_common.py``) and writes ``DIR/summary.md``: an overview table,
then per experiment one table of its claims (measured value, threshold, PASS/FAIL) with its figures.
A script that crashes, times out or writes no JSON is reported as such, with the end of its stderr;
nothing is hidden.

Usage::

  python experiments/reproduce.py --quick            # small scale, < 15 min on 2 CPU cores
  python experiments/reproduce.py                    # full scale
  python experiments/reproduce.py --only zo_variance baseline_variance

Exit status: 0 when every script ran and wrote its results (claims may still fail: see the summary),
1 when a script crashed or timed out (or, with ``--strict``, when a claim failed).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SKIP = {"_common.py", "reproduce.py"}


def experiment_scripts(only=None) -> list[str]:
  names = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(HERE, "*.py"))
                 if os.path.basename(p) not in SKIP)
  if only:
    unknown = sorted(set(only) - set(names))
    if unknown:
      raise SystemExit(f"reproduce.py: unknown experiment(s) {unknown}; known: {names}")
    names = [n for n in names if n in only]
  return names


def grid_configs() -> list[str]:
  return sorted(glob.glob(os.path.join(HERE, "configs", "*.toml")))


def _tail(text: str, n: int = 1500) -> str:
  text = (text or "").strip()
  return text[-n:]


def run(cmd: list[str], timeout: float, log_path: str) -> dict:
  env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
  t0 = time.time()
  with open(log_path, "w") as log:
    try:
      proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            timeout=timeout)
      status = "ok" if proc.returncode == 0 else f"crashed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
      status = f"timed out after {timeout:.0f} s"
  seconds = time.time() - t0
  with open(log_path) as log:
    output = log.read()
  return {"status": status, "seconds": round(seconds, 1), "log_tail": _tail(output)}


def _fmt(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  if isinstance(value, (list, tuple)) and len(value) > 6:
    return "[" + ", ".join(_fmt(v) for v in value[:6]) + ", ...]"
  if isinstance(value, (list, tuple)):
    return "[" + ", ".join(_fmt(v) for v in value) + "]"
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


def write_summary(out: str, entries: list[dict], grids: list[dict], args, total: float) -> str:
  lines = ["# pgjax: reproduction summary", ""]
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  cmd = "python experiments/reproduce.py" + (" --quick" if args.quick else "") + (
      f" --out {args.out}" if args.out != "results" else "")
  lines += [f"- Command: `{cmd}`", f"- Finished: {now}, total {total / 60:.1f} min",
            f"- Machine: {_versions()}",
            f"- Scale: {'quick (each claim checked at a smaller scale)' if args.quick else 'full'}", ""]
  n_claims = sum(len(e.get("claims", [])) for e in entries)
  n_pass = sum(c["passed"] for e in entries for c in e.get("claims", []))
  n_bad = sum(bool(e["status"] != "ok" or e.get("json_error")) for e in entries)
  lines += [f"**{n_pass} of {n_claims} claims pass; {len(entries) - n_bad} of {len(entries)} experiments "
            f"ran to completion.**", ""]
  lines += ["| experiment | status | seconds | claims passed |", "|---|---|---:|---:|"]
  for e in entries:
    status = e["status"] if not e.get("json_error") else f"{e['status']}; {e['json_error']}"
    cl = e.get("claims", [])
    lines.append(f"| [{e['name']}](#{e['name']}) | {status} | {e['seconds']} | "
                 f"{sum(c['passed'] for c in cl)} / {len(cl)} |")
  for g in grids:
    lines.append(f"| grid: {g['name']} | {g['status']} | {g['seconds']} | (table) |")
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


def grid_table(results_json: str) -> list[str]:
  with open(results_json) as fh:
    rows = json.load(fh)
  out = ["| estimator | problem | N | hyperparameters | total variance (± SE) | bias norm (± SE) | "
         "cosine |", "|---|---|---:|---|---|---|---:|"]
  for r in rows:
    out.append(f"| {r['estimator']} | {r['problem']} | {r['num_samples']} | "
               f"{r.get('hyperparameters') or ''} | {_fmt(r['total_variance'])} ± "
               f"{_fmt(r['total_variance_se'])} | {_fmt(r['bias_norm'])} ± {_fmt(r['bias_norm_se'])} | "
               f"{_fmt(r['cosine'])} |")
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small scale (< 15 min on 2 cores)")
  parser.add_argument("--out", default="results", help="output folder (default results)")
  parser.add_argument("--only", nargs="*", help="run only these experiments (names without .py)")
  parser.add_argument("--no-grids", action="store_true", help="skip experiments/configs/*.toml")
  parser.add_argument("--timeout", type=float, default=None,
                      help="per-script limit in seconds (default 300 with --quick, 7200 without)")
  parser.add_argument("--strict", action="store_true", help="exit 1 when any claim fails")
  args = parser.parse_args(argv)
  timeout = args.timeout or (300.0 if args.quick else 7200.0)
  out = os.path.abspath(os.path.join(ROOT, args.out) if not os.path.isabs(args.out) else args.out)
  os.makedirs(os.path.join(out, "logs"), exist_ok=True)
  started = time.time()
  entries = []
  names = experiment_scripts(args.only)
  for i, name in enumerate(names):
    cmd = [sys.executable, os.path.join("experiments", f"{name}.py"), "--out", out]
    if args.quick:
      cmd.append("--quick")
    print(f"[{i + 1}/{len(names)}] {name} ...", flush=True)
    json_path = os.path.join(out, f"{name}.json")
    before = os.path.getmtime(json_path) if os.path.exists(json_path) else None
    res = run(cmd, timeout, os.path.join(out, "logs", f"{name}.log"))
    entry = {"name": name, **res,
             "command": " ".join(["python", f"experiments/{name}.py"] + (["--quick"] if args.quick else [])
                                 + ["--out", args.out])}
    if os.path.exists(json_path) and os.path.getmtime(json_path) != before:
      try:
        with open(json_path) as fh:
          record = json.load(fh)
        entry["claims"] = record.get("claims", [])
        entry["figures"] = record.get("figures", [])
      except (OSError, ValueError) as err:
        entry["json_error"] = f"unreadable {name}.json: {err}"
    else:
      entry["json_error"] = f"no fresh {name}.json written"
    passed = sum(c["passed"] for c in entry.get("claims", []))
    print(f"    {entry['status']}, {entry['seconds']} s, claims {passed}/{len(entry.get('claims', []))}"
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
      res = run(cmd, timeout, os.path.join(out, "logs", f"grid_{name}.log"))
      entry = {"name": name, **res, "command": "python -m pgjax.sweep " + os.path.relpath(cfg, ROOT)
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
  path = write_summary(out, entries, grids, args, total)
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
