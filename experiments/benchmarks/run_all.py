r"""Runs every benchmark in ``experiments/benchmarks/`` and writes ``experiments/benchmarks/RESULTS.md``.

Each ``experiments/benchmarks/<name>.py`` (except this file) runs in its own subprocess as
``python -m experiments.benchmarks.<name>`` from the repository root, one after the other
(benchmarks must not share the CPU with each other), with ``--out DIR`` (and ``--quick`` when given). Its
printed output (the ratios, measured interleaved inside the benchmark) and the claims of the JSON it writes
(``DIR/benchmarks/<name>.json``) go into ``RESULTS.md`` together with the machine, the versions and the
command, so the file says what was measured, where and how. A benchmark that crashes is reported as such.

Usage::

  python -m experiments.benchmarks.run_all [--quick] [--out results] [--only NAME ...]
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
ROOT = os.path.dirname(os.path.dirname(HERE))


def _machine() -> list[str]:
  lines = [f"- Python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPU cores"]
  try:
    with open("/proc/cpuinfo") as fh:
      model = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), None)
    if model:
      lines.append(f"- CPU: {model}")
  except OSError:
    pass
  try:
    load = os.getloadavg()
    lines.append(f"- Load average when the run started: {load[0]:.1f} (1 min), {load[1]:.1f} (5 min) "
                 "(other work shares this machine; only ratios measured side by side mean anything)")
  except OSError:
    pass
  try:
    import jax
    import jaxlib
    import pgjax
    devices = jax.devices()
    lines.append(f"- pgjax {pgjax.__version__}, jax {jax.__version__}, jaxlib {jaxlib.__version__}; "
                 f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()})")
    versions = []
    for mod in ("optax", "flax", "chex", "distrax", "gymnax", "evosax", "numpy"):
      try:
        versions.append(f"{mod} {__import__(mod).__version__}")
      except Exception:  # noqa: BLE001 - optional packages
        pass
    lines.append("- " + ", ".join(versions))
  except Exception as err:  # noqa: BLE001
    lines.append(f"- (versions unavailable: {err})")
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, timeout=10).stdout.strip()
    if commit:
      lines.append(f"- Commit: {commit}")
  except (OSError, subprocess.SubprocessError):
    pass
  return lines


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  return str(v).replace("|", "\\|")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
  parser.add_argument("--out", default="results", help="folder for the JSON (default results)")
  parser.add_argument("--only", nargs="*", help="run only these benchmarks")
  parser.add_argument("--timeout", type=float, default=1800.0, help="per-benchmark limit (s)")
  parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"),
                      help="where to write the markdown (default experiments/benchmarks/RESULTS.md)")
  args = parser.parse_args(argv)
  names = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(HERE, "*.py"))
                 if os.path.basename(p) not in ("run_all.py",) and not os.path.basename(p).startswith("_"))
  if args.only:
    names = [n for n in names if n in args.only]
  machine = _machine()
  started = time.time()
  sections = []
  summary = []
  for name in names:
    cmd = [sys.executable, "-m", f"experiments.benchmarks.{name}", "--out", args.out]
    if args.quick:
      cmd.append("--quick")
    shown = " ".join(["python -m", f"experiments.benchmarks.{name}"] + cmd[3:])
    print(f"== {shown}", flush=True)
    t0 = time.time()
    try:
      proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout,
                            env=dict(os.environ, MPLBACKEND="Agg"))
      status = "ok" if proc.returncode == 0 else f"crashed (exit {proc.returncode})"
      stdout, stderr = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as err:
      status, stdout, stderr = f"timed out after {args.timeout:.0f} s", err.stdout or "", err.stderr or ""
      stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
      stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
    seconds = time.time() - t0
    print(stdout[-4000:], flush=True)
    claims, measurements = [], []
    json_path = os.path.join(ROOT, args.out, "benchmarks", f"{name}.json")
    if status == "ok" and os.path.exists(json_path) and os.path.getmtime(json_path) >= t0 - 1:
      with open(json_path) as fh:
        record = json.load(fh)
      claims, measurements = record.get("claims", []), record.get("measurements", [])
    doc = ""
    with open(os.path.join(HERE, f"{name}.py")) as fh:
      src = fh.read()
    if '"""' in src:
      doc = src.split('"""', 2)[1].strip().splitlines()[0]
    sec = [f"## {name}", "", doc, "", f"`{shown}` ({status}, {seconds:.0f} s)", ""]
    if claims:
      sec += ["| claim | value | target | result |", "|---|---|---|---|"]
      sec += [f"| {_fmt(c['claim'])} | {_fmt(c['value'])} | {_fmt(c['threshold'])} | "
              f"{'PASS' if c['passed'] else '**FAIL**'} |" for c in claims]
      sec.append("")
    if measurements:
      sec += ["Measurements (no threshold; not counted):", "", "| measurement | value | note |", "|---|---|---|"]
      sec += [f"| {_fmt(m['name'])} | {_fmt(m['value'])} | {_fmt(m.get('note', ''))} |" for m in measurements]
      sec.append("")
    printed = "\n".join(l for l in stdout.splitlines() if not l.startswith("wrote ")).strip()
    if printed:
      sec += ["Output:", "", "```", printed[-6000:], "```", ""]
    if status != "ok":
      sec += ["Error output:", "", "```", stderr.strip()[-3000:], "```", ""]
    sections.append("\n".join(sec))
    npass = sum(c["passed"] for c in claims)
    summary.append(f"| [{name}](#{name}) | {status} | {seconds:.0f} | "
                   f"{npass} / {len(claims)} |")
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  command = "python -m experiments.benchmarks.run_all" + (" --quick" if args.quick else "")
  head = ["# pgjax benchmarks", "",
          f"Generated by `{command}` on {now} ({(time.time() - started) / 60:.1f} min). Every ratio below was "
          "measured inside one benchmark run with the variants interleaved (median over repeats).", "",
          "Machine:", ""] + machine + ["", "| benchmark | status | seconds | claims passed |",
                                       "|---|---|---:|---:|"] + summary + [""]
  text = "\n".join(head) + "\n" + "\n".join(sections) + "\n"
  tmp = args.results + ".tmp"
  with open(tmp, "w") as fh:
    fh.write(text)
  os.replace(tmp, args.results)
  print(f"wrote {args.results}")
  return 0 if all("| ok |" in s for s in summary) else 1


if __name__ == "__main__":
  sys.exit(main())
