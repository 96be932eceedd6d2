r"""``variance.png``: total variance and mean squared error against the number of samples.

Variance alone flatters a biased estimator (and an estimator that is exactly constant has variance 0, which a
log axis cannot show), so each problem gets two panels: the total variance
:math:`\operatorname{tr}\operatorname{Cov}[\hat g]` and the mean squared error
:math:`\mathbb E\|\hat g-\nabla J\|^2 = \text{variance} + \|\text{bias}\|^2`. Values that are exactly zero
are drawn as downward triangles on the bottom edge of the panel, labelled in the legend.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

# (row field, its standard error, axis label)
PANELS = (("total_variance", "total_variance_se", r"total variance  $E\|g - Eg\|^2$"),
          ("mse", "mse_se", r"mean squared error  $E\|g - \nabla J\|^2$"))
ZERO_LABEL = "exactly 0 (drawn at the bottom edge)"


def _num(x: Any) -> float:
  try:
    return float(x)
  except (TypeError, ValueError):
    return math.nan


def _lines(rows: Sequence[dict], problem: str) -> dict:
  lines: dict = {}
  for r in rows:
    if r["problem"] != problem:
      continue
    hyper = json.loads(r.get("hyperparameters") or "{}")
    label = r["estimator"] + "".join(f" {k}={v:g}" for k, v in hyper.items())
    lines.setdefault(label, []).append(r)
  return {label: sorted(rs, key=lambda r: r["num_samples"]) for label, rs in lines.items()}


def _panel(ax, lines: dict, field: str, se_field: str, ylabel: str) -> None:
  positive = [_num(r.get(field)) for rs in lines.values() for r in rs]
  positive = [v for v in positive if v > 0 and math.isfinite(v)]
  floor = min(positive) / 10 if positive else 1e-12
  zeros_labelled = False
  for label, rs in lines.items():
    x = [r["num_samples"] for r in rs]
    y = [_num(r.get(field)) for r in rs]
    e = [_num(r.get(se_field)) for r in rs]
    y_pos = [v if v > 0 else math.nan for v in y]
    line = ax.errorbar(x, y_pos, yerr=e, marker="o", capsize=3, label=label)
    zx = [xi for xi, v in zip(x, y) if v == 0]
    if zx:
      color = line.lines[0].get_color()
      ax.plot(zx, [floor] * len(zx), linestyle="none", marker="v", markersize=9, color=color,
              clip_on=False, label=None if zeros_labelled else ZERO_LABEL)
      zeros_labelled = True
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  if zeros_labelled:
    ax.set_ylim(bottom=floor)
  ax.set_xlabel("samples per estimate N")
  ax.set_ylabel(ylabel)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=7)


def variance_figure(rows: Sequence[dict]):
  """The figure: one row of panels per problem (variance, and MSE where the problem has a true gradient)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  problems = list(dict.fromkeys(r["problem"] for r in rows))
  fig, axes = plt.subplots(len(problems), len(PANELS), figsize=(5.5 * len(PANELS), 4 * len(problems)),
                           squeeze=False)
  for ax_row, prob in zip(axes, problems):
    lines = _lines(rows, prob)
    for ax, (field, se_field, ylabel) in zip(ax_row, PANELS):
      if not any(math.isfinite(_num(r.get(field))) for rs in lines.values() for r in rs):
        ax.set_axis_off()
        ax.set_title(f"{prob}: no {field} (the problem has no true gradient)")
        continue
      _panel(ax, lines, field, se_field, ylabel)
      ax.set_title(f"{prob}: {field}")
  fig.tight_layout()
  return fig


def plot_variance(rows: Sequence[dict], path: str) -> str:
  """Writes :func:`variance_figure` of ``rows`` to ``path`` (error bars: +-1 standard error); returns
  ``path``."""
  fig = variance_figure(rows)
  import matplotlib.pyplot as plt
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
