"""Shared plumbing for the experiments (never imported by pgjax itself).

Every experiment ``experiments/<name>.py`` is a module of the ``experiments`` package, run from the
repository root as ``python -m experiments.<name> [--quick] [--out DIR]``, and is split into

* ``compute(key, quick) -> dict``: the numbers (the only expensive part);
* ``claims(result) -> (claims, measurements)``: what the numbers show;
* ``plot(result, out) -> [png paths]``: the figures;
* a short ``main`` that calls :func:`run`.

Honest numbers. A :class:`Claim` is a statement with a :class:`Threshold` that a wrong implementation
or a different outcome would fail (``< 1e-6``, ``within 5 SE of 0``, ``95% CI above 0`` ...); whether
it passed is computed from the value, never passed in. Each experiment declares its claims as data
(a module-level ``CLAIMS`` dict of :class:`ClaimSpec`), so ``tests/test_experiment_claims.py`` can check
every threshold without running anything expensive. A :class:`Measurement` is a number worth reporting
that no threshold judges (iterations to solve, the best estimator): it is listed in its own table and
never counted as a pass.

Outputs: ``DIR/<name>.json`` (:func:`save_results`, read by ``experiments/reproduce.py``) and the
figures ``DIR/<name>*.png``. A run exits with status 0 even when a claim fails (the summary reports it)
and non-zero only on a crash.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import sys
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

# ---------------------------------------------------------------------------------------------------
# Thresholds: comparisons that can fail.

_SIMPLE_OPS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal}


def _as_float_array(value: Any) -> np.ndarray | None:
  try:
    arr = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError):
    return None
  return arr


@dataclasses.dataclass(frozen=True)
class Threshold:
  r"""A comparison that a claim's measured value must satisfy; :meth:`check` evaluates it.

  Kinds (``value`` is what the claim measured):

  * ``"<"``, ``"<="``, ``">"``, ``">="``, ``"=="``: ``value OP bound``; a sequence value must satisfy it
    in every element.
  * ``"between"``: ``bound = (lo, hi)``, ``lo <= value <= hi`` (every element).
  * ``"within_se"``: ``value = (estimate, se)``, :math:`|\text{estimate} - \text{bound}| \le k\,\text{se}`.
  * ``"above_se"`` / ``"below_se"``: ``value = (estimate, se)``, estimate :math:`\mp k` se beyond ``bound``.
  * ``"separated_se"``: ``value = (a, se_a, b, se_b)``, :math:`a + k\,se_a < b - k\,se_b` (a clearly below b).
  * ``"ci_above"`` / ``"ci_below"``: ``value = (estimate, half_width)``, the interval lies strictly
    above / below ``bound`` (it excludes it).
  * ``"ci_contains"``: ``value = (estimate, half_width)``, the interval contains ``bound``.

  A NaN, ``None`` or malformed value fails every kind.
  """

  kind: str
  bound: Any = None
  k: float = 5.0

  KINDS = ("<", "<=", ">", ">=", "==", "between", "within_se", "above_se", "below_se", "separated_se",
           "ci_above", "ci_below", "ci_contains")

  def __post_init__(self):
    if self.kind not in self.KINDS:
      raise ValueError(f"Threshold kind must be one of {self.KINDS}, got {self.kind!r}")
    if self.kind == "between":
      lo, hi = self.bound
      if not lo < hi:
        raise ValueError(f"between needs lo < hi, got {self.bound}")
    elif self.kind != "separated_se":
      if not (isinstance(self.bound, (int, float, np.floating, np.integer)) and math.isfinite(self.bound)):
        raise ValueError(f"Threshold bound must be a finite number, got {self.bound!r}")
    if not (math.isfinite(self.k) and self.k > 0):
      raise ValueError(f"k must be positive, got {self.k}")

  def check(self, value: Any) -> bool:
    """Whether ``value`` satisfies the threshold (False for NaN, None or a malformed value)."""
    arr = _as_float_array(value)
    if arr is None or arr.size == 0 or not np.all(np.isfinite(arr)):
      return False
    kind, b, k = self.kind, self.bound, self.k
    if kind in _SIMPLE_OPS:
      return bool(np.all(_SIMPLE_OPS[kind](arr, b)))
    if kind == "between":
      return bool(np.all((arr >= b[0]) & (arr <= b[1])))
    if kind == "separated_se":
      if arr.shape != (4,):
        return False
      a, se_a, c, se_c = arr
      return bool(se_a >= 0 and se_c >= 0 and a + k * se_a < c - k * se_c)
    if arr.shape != (2,) or arr[1] < 0:
      return False
    est, spread = arr
    if kind == "within_se":
      return bool(abs(est - b) <= k * spread)
    if kind == "above_se":
      return bool(est - k * spread > b)
    if kind == "below_se":
      return bool(est + k * spread < b)
    if kind == "ci_above":
      return bool(est - spread > b)
    if kind == "ci_below":
      return bool(est + spread < b)
    return bool(abs(est - b) <= spread)  # ci_contains

  def describe(self) -> str:
    kind, b, k = self.kind, self.bound, self.k
    if kind in _SIMPLE_OPS:
      return f"{kind} {b:g}"
    return {
        "between": lambda: f"in [{b[0]:g}, {b[1]:g}]",
        "within_se": lambda: f"within {k:g} SE of {b:g} [value: estimate, SE]",
        "above_se": lambda: f"> {b:g} by {k:g} SE [value: estimate, SE]",
        "below_se": lambda: f"< {b:g} by {k:g} SE [value: estimate, SE]",
        "separated_se": lambda: f"a + {k:g} SE_a < b - {k:g} SE_b [value: a, SE_a, b, SE_b]",
        "ci_above": lambda: f"95% CI above {b:g} [value: estimate, CI half-width]",
        "ci_below": lambda: f"95% CI below {b:g} [value: estimate, CI half-width]",
        "ci_contains": lambda: f"95% CI contains {b:g} [value: estimate, CI half-width]",
    }[kind]()

  def examples(self) -> tuple[Any, Any]:
    """A (passing, failing) pair of values: proof that the threshold is a comparison that can fail."""
    kind, b, k = self.kind, self.bound, self.k
    if kind in ("<", "<="):
      return b - 1.0 - abs(b), b + 1.0 + abs(b)
    if kind in (">", ">="):
      return b + 1.0 + abs(b), b - 1.0 - abs(b)
    if kind == "==":
      return b, b + 1.0
    if kind == "between":
      return 0.5 * (b[0] + b[1]), b[1] + 1.0 + abs(b[1])
    if kind == "separated_se":
      return (0.0, 0.1, 10.0 * k, 0.1), (1.0, 0.1, 1.0, 0.1)
    if kind == "within_se":
      return (b, 1.0), (b + 10.0 * k, 1.0)
    if kind in ("above_se", "ci_above"):
      return (b + 10.0 * k, 1.0), (b, 1.0)
    if kind in ("below_se", "ci_below"):
      return (b - 10.0 * k, 1.0), (b, 1.0)
    return (b, 1.0), (b + 10.0, 1.0)  # ci_contains

  def to_dict(self) -> dict[str, Any]:
    return {"kind": self.kind, "bound": _to_jsonable(self.bound), "k": self.k}


def lt(b) -> Threshold:
  return Threshold("<", b)


def le(b) -> Threshold:
  return Threshold("<=", b)


def gt(b) -> Threshold:
  return Threshold(">", b)


def ge(b) -> Threshold:
  return Threshold(">=", b)


def eq(b) -> Threshold:
  return Threshold("==", b)


def between(lo, hi) -> Threshold:
  return Threshold("between", (lo, hi))


def within_se(b=0.0, k=5.0) -> Threshold:
  return Threshold("within_se", b, k)


def above_se(b=0.0, k=5.0) -> Threshold:
  return Threshold("above_se", b, k)


def below_se(b=0.0, k=5.0) -> Threshold:
  return Threshold("below_se", b, k)


def separated_se(k=5.0) -> Threshold:
  return Threshold("separated_se", None, k)


def ci_above(b=0.0) -> Threshold:
  return Threshold("ci_above", b)


def ci_below(b=0.0) -> Threshold:
  return Threshold("ci_below", b)


def ci_contains(b=0.0) -> Threshold:
  return Threshold("ci_contains", b)


_LEGACY = re.compile(r"^\s*(<=|>=|==|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def parse_threshold(text: str) -> Threshold:
  """``"<= 3"``, ``"> 0.9"``, ``"== 0"`` ... as a :class:`Threshold`; anything else is a ValueError."""
  m = _LEGACY.match(text)
  if not m:
    raise ValueError(f"threshold {text!r} is not a comparison ('OP number'); state it as a Threshold, or "
                     "report the value as a Measurement")
  return Threshold(m.group(1), float(m.group(2)))


# ---------------------------------------------------------------------------------------------------
# Claims and measurements.


class Claim:
  """One checkable statement: ``Claim("natural cosine at sigma=0.05", 0.997, gt(0.99))``.

  ``passed`` is computed from ``value`` by ``threshold``. For older scripts a threshold string of the
  form ``"OP number"`` is parsed (the ``passed`` flag they give is then ignored, with a warning when it
  disagrees with the value); any other string is rejected: a number that no threshold judges is a
  :class:`Measurement`.
  """

  __slots__ = ("claim", "value", "threshold", "passed", "spec")

  def __init__(self, claim: str, value: Any, threshold: Threshold | str, passed: bool | None = None, *,
               spec: str | None = None):
    if isinstance(threshold, str):
      threshold = parse_threshold(threshold)
    elif not isinstance(threshold, Threshold):
      raise TypeError(f"threshold must be a Threshold, got {type(threshold).__name__}")
    self.claim, self.value, self.threshold, self.spec = claim, value, threshold, spec
    self.passed = threshold.check(value)
    if passed is not None and bool(passed) != self.passed:
      warnings.warn(f"claim {claim!r}: given passed={passed} but {value!r} {threshold.describe()} is "
                    f"{self.passed}; the value decides", stacklevel=2)

  def to_dict(self) -> dict[str, Any]:
    return {"claim": self.claim, "value": _to_jsonable(self.value), "threshold": self.threshold.describe(),
            "check": self.threshold.to_dict(), "passed": self.passed, "spec": self.spec}

  def __repr__(self) -> str:
    return (f"Claim({self.claim!r}, {self.value!r}, {self.threshold.describe()!r}, "
            f"{'PASS' if self.passed else 'FAIL'})")


@dataclasses.dataclass(frozen=True)
class Measurement:
  """A reported number with no pass/fail: listed apart from the claims, never counted as a pass."""

  name: str
  value: Any
  note: str = ""

  def to_dict(self) -> dict[str, Any]:
    return {"name": self.name, "value": _to_jsonable(self.value), "note": self.note}


@dataclasses.dataclass(frozen=True)
class ClaimSpec:
  """A claim declared as data: its text (a ``str.format`` template) and its threshold."""

  text: str
  threshold: Threshold

  def __post_init__(self):
    if not isinstance(self.threshold, Threshold):
      raise TypeError(f"ClaimSpec {self.text!r}: threshold must be a Threshold")

  def __call__(self, value: Any, **fmt: Any) -> Claim:
    return Claim(self.text.format(**fmt), value, self.threshold, spec=self.text)


# ---------------------------------------------------------------------------------------------------
# Running, saving.


def parse_args(description: str, argv: Sequence[str] | None = None,
               extra: Callable | None = None) -> argparse.Namespace:
  """Standard ``--quick`` / ``--out`` / ``--seed`` parser; ``extra(parser)`` may add more."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--quick", action="store_true", help="small scale (under a minute on a quiet 2-core CPU)")
  parser.add_argument("--out", default="results", help="output folder")
  parser.add_argument("--seed", type=int, default=0, help="root PRNG seed")
  if extra is not None:
    extra(parser)
  return parser.parse_args(argv)


def pyplot():
  """``matplotlib.pyplot`` with the non-interactive Agg backend."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def savefig(fig, out: str, name: str, dpi: int = 110) -> str:
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, name)
  fig.savefig(path, dpi=dpi)
  pyplot().close(fig)
  return path


def run(name: str, doc: str, compute: Callable, claims: Callable, plot: Callable,
        specs: Mapping[str, ClaimSpec], argv: Sequence[str] | None = None) -> str:
  """Parses the arguments, then ``compute`` -> ``claims`` -> ``plot`` -> :func:`save_results`.

  Every claim must come from one of the experiment's declared ``specs`` (so the claims test sees it).
  """
  import jax
  args = parse_args(doc.strip().splitlines()[0], argv)
  started = time.time()
  result = compute(jax.random.key(args.seed), args.quick)
  cl, ms = claims(result)
  declared = {s.text for s in specs.values()}
  undeclared = [c.claim for c in cl if c.spec not in declared]
  if undeclared:
    raise RuntimeError(f"{name}: claims not declared in CLAIMS: {undeclared}")
  figures = plot(result, args.out)
  return save_results(name, args, claims=cl, measurements=ms, data=result, figures=figures, started=started)


def seed_stats(grads: Any, target: Any | None = None) -> dict[str, Any]:
  """Statistics of per-seed estimates ``grads`` ``[S, ...]`` (flattened per seed), in float64.

  Returns the mean and its per-coordinate SE, the total variance (unbiased) and its SE (the SE of the mean
  of the per-seed squared deviations), and, with ``target``, the largest per-coordinate |z| of the mean
  against it.
  """
  g = np.asarray(grads, np.float64).reshape(np.shape(grads)[0], -1)
  n = g.shape[0]
  mean = g.mean(0)
  se = g.std(0, ddof=1) / math.sqrt(n)
  dev = np.sum((g - mean) ** 2, axis=1) * n / (n - 1)
  out = {"mean": mean, "mean_se": se, "total_variance": float(dev.mean()),
         "total_variance_se": float(dev.std(ddof=1) / math.sqrt(n))}
  if target is not None:
    err = mean - np.asarray(target, np.float64).ravel()
    out["max_abs_z"] = float(np.max(np.abs(err) / np.maximum(se, 1e-300)))
  return out


def paired_variance_difference(grads_a: Any, grads_b: Any) -> list[float]:
  """``[tr Cov[a] - tr Cov[b], SE]`` from per-seed estimates of two estimators on the same seeds.

  The SE is that of the mean of the per-seed differences of squared deviations, so the correlation of
  estimators that share their samples is used, not ignored.
  """
  a = np.asarray(grads_a, np.float64).reshape(np.shape(grads_a)[0], -1)
  b = np.asarray(grads_b, np.float64).reshape(np.shape(grads_b)[0], -1)
  n = a.shape[0]
  d = (np.sum((a - a.mean(0)) ** 2, axis=1) - np.sum((b - b.mean(0)) ** 2, axis=1)) * n / (n - 1)
  return [float(d.mean()), float(d.std(ddof=1) / math.sqrt(n))]


def _to_jsonable(obj: Any) -> Any:
  if isinstance(obj, dict):
    return {str(k): _to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_to_jsonable(v) for v in obj]
  if isinstance(obj, (Claim, Measurement, Threshold)):
    return obj.to_dict()
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return _to_jsonable(dataclasses.asdict(obj))
  if hasattr(obj, "tolist"):  # numpy / jax arrays and scalars
    return _to_jsonable(np.asarray(obj).tolist())
  if isinstance(obj, float) and not np.isfinite(obj):
    return str(obj)
  return obj


def versions() -> dict[str, Any]:
  """Versions of the packages that determine the numbers."""
  import jax
  import jaxlib
  import pgjax
  return {"python": platform.python_version(), "pgjax": pgjax.__version__,
          "jax": jax.__version__, "jaxlib": jaxlib.__version__,
          "platform": platform.platform(),
          "devices": [str(d) for d in jax.devices()]}


def save_results(name: str, args: argparse.Namespace, *, claims: Sequence[Claim], data: dict[str, Any],
                 figures: Sequence[str] = (), started: float | None = None,
                 measurements: Sequence[Measurement] = ()) -> str:
  """Writes ``<out>/<name>.json`` atomically and prints the claims and measurements; returns the path."""
  claims = [c if isinstance(c, Claim) else Claim(**c) for c in claims]
  os.makedirs(args.out, exist_ok=True)
  record = {
      "name": name,
      "quick": bool(args.quick),
      "seed": args.seed,
      "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
      "seconds": None if started is None else round(time.time() - started, 2),
      "claims": [c.to_dict() for c in claims],
      "measurements": [m.to_dict() for m in measurements],
      "figures": [os.path.basename(f) for f in figures],
      "versions": versions(),
      "data": data,
  }
  path = os.path.join(args.out, f"{name}.json")
  tmp = path + ".tmp"
  with open(tmp, "w") as fh:
    json.dump(_to_jsonable(record), fh, indent=1)
  os.replace(tmp, path)
  for c in claims:
    print(f"[{'PASS' if c.passed else 'FAIL'}] {c.claim}: {_to_jsonable(c.value)} ({c.threshold.describe()})")
  for m in measurements:
    print(f"[measured] {m.name}: {_to_jsonable(m.value)}" + (f" ({m.note})" if m.note else ""))
  print(f"wrote {path}")
  return path
