"""The stages of a study plan: thin calls into the library packages, in dependency order."""

from __future__ import annotations

import os

from gr_jax.study.plan import Plan, Point, RunSpec
from gr_jax.study.runner import Stage


def _prepare(point: Point) -> None:
  from gr_jax.data.prepare import prepare_dataset
  prepare_dataset(point.config, point.data_dir)


def _train(run: RunSpec) -> None:
  from gr_jax.training.loop import train
  train(run.config, run.run_dir)


def _evaluate(run: RunSpec, split: str) -> None:
  from gr_jax.evaluation.evaluator import evaluate
  evaluate(run.run_dir, split=split)


def _baselines(plan: Plan, point: Point) -> None:
  from gr_jax.baselines.popularity import write_popularity_runs
  from gr_jax.data.dataset import ProcessedDataset
  dataset = ProcessedDataset(point.data_dir)
  write_popularity_runs(dataset, baselines_dir(plan, point), plan.config.eval.split,
                        tuple(plan.config.eval.ks))


def baselines_dir(plan: Plan, point: Point) -> str:
  return os.path.join(plan.workdir, "baselines", point.name)


def analysis_dir(plan: Plan, point: Point) -> str:
  return os.path.join(plan.workdir, "analysis", point.name)


def _analyse(plan: Plan, point: Point) -> None:
  from gr_jax.study import analyses
  out = analysis_dir(plan, point)
  os.makedirs(out, exist_ok=True)
  from gr_jax.evaluation.runs import write_json
  result = analyses.analyse_point(plan, point, baselines_dir(plan, point), out)
  write_json(os.path.join(out, "analysis.json"), result)


def _report(plan: Plan) -> None:
  from gr_jax.study import report
  report.write_report(plan)


def stages_for(plan: Plan) -> list[Stage]:
  """All stages, in an order where every stage's inputs exist when it runs."""
  split = plan.config.eval.split
  stages: list[Stage] = []
  for point in plan.points:
    stages.append(Stage(f"prepare__{point.name}", "prepare", f"prepare data ({point.name})",
                        lambda p=point: _prepare(p)))
    stages.append(Stage(f"baselines__{point.name}", "baselines",
                        f"popularity baselines ({point.name})",
                        lambda p=point: _baselines(plan, p)))
    for run in point.runs:
      tag = f"{point.name}__{run.model}__seed{run.seed}"
      stages.append(Stage(f"train__{tag}", "train",
                          f"train {run.model} seed {run.seed} ({point.name})",
                          lambda r=run: _train(r)))
      stages.append(Stage(f"evaluate__{tag}", "evaluate",
                          f"evaluate {run.model} seed {run.seed} on {split} ({point.name})",
                          lambda r=run: _evaluate(r, split)))
    stages.append(Stage(f"analyse__{point.name}", "analyse",
                        f"statistics and analyses ({point.name})",
                        lambda p=point: _analyse(plan, p)))
  stages.append(Stage("report", "report", "report", lambda: _report(plan)))
  # Stage ids are file names: keep them safe.
  for s in stages:
    s.id = "".join(ch if ch.isalnum() or ch in "._-=" else "_" for ch in s.id)
  return stages
