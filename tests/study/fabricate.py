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


def write_eval_dir(eval_dir, task_values: dict, metric: str, info=None) -> str:
  """A fabricated eval directory (`<run>/eval/<split>/`, no decoding): metrics.json (each task's
  mean of `metric`), per_query.json and `{task}.qrels`, for `task_values` = {task: per-query
  values}; query i is `q{i}` with relevant item `i{i}` (the same queries in every directory, so
  any two of them pair). `info`: metrics.json's info section. Returns eval_dir."""
  import numpy as np

  summary, per_query = {}, {}
  for task, values in task_values.items():
    ids = [f"q{i}" for i in range(len(values))]
    per_query[task] = {metric: {q: float(v) for q, v in zip(ids, values)}}
    summary[task] = {metric: float(np.mean(values))}
    runs.write_qrels(
      os.path.join(eval_dir, f"{task}.qrels"), {q: {f"i{i}": 1} for i, q in enumerate(ids)}
    )
  if info is not None:
    summary["info"] = info
  runs.write_json(os.path.join(eval_dir, "metrics.json"), summary)
  runs.write_json(os.path.join(eval_dir, "per_query.json"), per_query)
  return eval_dir
