"""Markdown tables and matplotlib PNGs (Agg backend: no display needed)."""

from __future__ import annotations

import os
from typing import Mapping, Sequence


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
  for i, r in enumerate(rows):
    if len(r) != len(headers):
      raise ValueError(f"row {i} has {len(r)} cells, expected {len(headers)} ({list(headers)})")
  esc = lambda s: str(s).replace("|", "\\|")
  lines = [
    "| " + " | ".join(esc(h) for h in headers) + " |",
    "|" + "|".join("---" for _ in headers) + "|",
  ]
  lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
  return "\n".join(lines)


def metric_label(metric: str) -> str:
  """`recall@30` -> `Recall@30`: tables say which of Recall / Success they show."""
  fam, _, k = metric.partition("@")
  names = {"recall": "Recall", "success": "Success", "ndcg": "NDCG", "mrr": "MRR"}
  return f"{names.get(fam, fam)}@{k}" if k else metric


def pyplot():
  """matplotlib.pyplot on the Agg backend."""
  import matplotlib

  matplotlib.use("Agg", force=True)
  import matplotlib.pyplot as plt

  return plt


def line_plot(
  path: str,
  series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
  *,
  xlabel: str,
  ylabel: str,
  title: str = "",
  logx: bool = False,
  errors: Mapping[str, Sequence[float]] | None = None,
) -> str:
  """One line per series name: `{name: (xs, ys)}`, optional error bars; writes a PNG."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
  for name, (xs, ys) in series.items():
    yerr = errors.get(name) if errors else None
    ax.errorbar(list(xs), list(ys), yerr=yerr, marker="o", capsize=3, label=name)
  if logx:
    ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path
