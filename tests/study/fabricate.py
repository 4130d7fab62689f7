"""Fabricated study analyses for report tests: the analysis.json a point's analyse stage would
write, built from run directories the test wrote itself (no training, no decoding)."""

import os

from gr_jax.evaluation import runs
from gr_jax.study import analyses
from gr_jax.study import plan as plan_lib
from tests.study.test_plan import load_config


def quickstart_plan(tmp_path, seeds: int, budget: str):
  """The quickstart's plan with `seeds` seeds, one budget, the beam decoder and no H1/H2
  analyses, under tmp_path/study -> (plan, its one point, the headline metric)."""
  config = load_config("quickstart", f"seeds={seeds}")
  config.reproduce.budgets = (budget,)
  config.reproduce.decoders = ("beam",)
  config.reproduce.analyses = False
  plan = plan_lib.build_plan(config, str(tmp_path / "study"))
  return plan, plan.points[0], analyses.headline_metric(plan.config)


def sweep_plan(tmp_path, seeds: int, values: tuple, statistic: str | None = None):
  """The S1 sweep's plan (shuffle_fraction) with `seeds` seeds, one point per value, the
  matched_steps budget, the beam decoder and `statistic` as the sweep's realised x (None: the
  value), under tmp_path/study -> (plan, the headline metric)."""
  config = load_config("sim_s1_popularity", f"seeds={seeds}")
  config.reproduce.sweep_values = tuple(values)
  config.reproduce.sweep_statistic = statistic or ""
  config.reproduce.decoders = ("beam",)
  plan = plan_lib.build_plan(config, str(tmp_path / "study"))
  return plan, analyses.headline_metric(plan.config)


def write_analysis(
  plan,
  point,
  metric,
  groups,
  headline,
  *,
  budget,
  decode,
  training=None,
  manifest_stats=None,
  sweep_value=None,
) -> str:
  """Writes `point`'s analysis.json with one (budget, decode) block of `groups` (model -> run dirs)
  and its `headline` comparison (`sweep_value`: the point's x when its sweep has no realised
  statistic); returns the file's path."""
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
    "sweep_value": sweep_value,
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
