"""Fabricated study analyses for report tests: the analysis.json a point's analyse stage would
write, built from run directories the test wrote itself (no training, no decoding)."""

import os

from gr_jax.evaluation import runs


def write_analysis(
  plan, point, metric, groups, headline, *, budget, decode, training=None, manifest_stats=None
) -> str:
  """Writes `point`'s analysis.json with one (budget, decode) block of `groups` (model -> run dirs)
  and its `headline` comparison; returns the file's path."""
  block = {
    "budget": budget,
    "decode": decode,
    "groups": groups,
    "headline": headline,
    "all_metrics": [],
    "training": training or {},
    "distinct_items": {},
    "vs_baseline": [],
  }
  analysis = {
    "point": point.name,
    "headline_metric": metric,
    "sweep_value": None,
    "sweep_fields": {},
    "blocks": [block],
    "groups": groups,
    "headline": headline,
    "all_metrics": [],
    "baselines": {},
    "manifest_stats": manifest_stats or {},
    "h1": [],
    "h2": [],
    "tsne": {},
  }
  path = os.path.join(plan.workdir, "analysis", point.name, "analysis.json")
  runs.write_json(path, analysis)
  return path
