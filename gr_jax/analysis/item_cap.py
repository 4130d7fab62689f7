"""The per-item cap study: the added task's training instances per item capped at 5/10/50/500.

Input records `{"cap", "model", "task", "metric", "mean", "std"}` (e.g. the `results` of
`stats.compare_models` with a `cap` key added by the reproduce driver); output a markdown table
(one row per cap, one column per model) and a line plot of the metric against the cap.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from gr_jax.analysis import report

DEFAULT_CAPS = (5, 10, 50, 500)


def _label(cap) -> str:
  return "none" if not cap else str(cap)


def cap_table(records: Sequence[Mapping], task: str, metric: str = "recall@30") -> str:
  rows = [r for r in records if r["task"] == task and r["metric"] == metric]
  if not rows:
    raise ValueError(f"no item-cap records for task {task!r} and metric {metric!r}")
  models = sorted({r["model"] for r in rows})
  caps = sorted({r["cap"] for r in rows}, key=lambda c: math.inf if not c else c)
  cell = {(r["cap"], r["model"]): r for r in rows}
  body = []
  for c in caps:
    line = [_label(c)]
    for m in models:
      r = cell.get((c, m))
      line.append("" if r is None else f"{r['mean']:.4f} ± {r.get('std', 0.0):.4f}")
    body.append(line)
  return (
    f"{task}: {report.metric_label(metric)} (mean ± std over seeds) by per-item cap of the added task\n\n"
    + report.markdown_table(["cap"] + models, body)
  )


def cap_plot(path: str, records: Sequence[Mapping], task: str, metric: str = "recall@30") -> str:
  rows = [r for r in records if r["task"] == task and r["metric"] == metric and r["cap"]]
  if not rows:
    raise ValueError(f"no capped item-cap records for task {task!r} and metric {metric!r}")
  series, errors = {}, {}
  for m in sorted({r["model"] for r in rows}):
    pts = sorted((r["cap"], r["mean"], r.get("std", 0.0)) for r in rows if r["model"] == m)
    series[m] = ([p[0] for p in pts], [p[1] for p in pts])
    errors[m] = [p[2] for p in pts]
  return report.line_plot(
    path,
    series,
    errors=errors,
    xlabel="per-item cap of the added task",
    ylabel=metric,
    title=task,
    logx=True,
  )
