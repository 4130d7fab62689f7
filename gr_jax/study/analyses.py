"""Per-point statistics and analyses: what the report needs, computed from the runs on disk.

Everything here reads `eval/<split>/` of the run directories and the baselines, never a live
model (except the t-SNE, which restores one checkpoint per model kind).
"""

from __future__ import annotations

import os

from gr_jax.data import TASKS
from gr_jax.study.plan import MODEL_LABELS, Plan, Point

def headline_metric(config) -> str:
  """The paper's metric, Recall@30, or Recall at the deepest configured cut-off."""
  return f"recall@{max(int(k) for k in config.eval.ks)}"


def _metrics(ks) -> list[str]:
  return [f"{fam}@{k}" for fam in ("recall", "ndcg", "mrr") for k in ks]


def manifest_stats(manifest: dict) -> dict:
  """The dataset statistics a report shows and a sweep plots (flat, dotted names)."""
  out = {}
  for section in ("source_stats", "popularity_kl", "overlap"):
    for key, value in manifest.get(section, {}).items():
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        out[f"{section}.{key}"] = value
  out["items"] = manifest.get("num_items")
  return out


def analyse_point(plan: Plan, point: Point, baselines_dir: str, out_dir: str) -> dict:
  from gr_jax.analysis import stats
  from gr_jax.data.dataset import ProcessedDataset
  from gr_jax.evaluation import runs as runs_lib

  config = plan.config
  split = config.eval.split
  groups: dict[str, list[str]] = {}
  for run in point.runs:
    groups.setdefault(run.model, []).append(run.run_dir)
  # The paper's tests: the joint model against each task-specific one on R@30, corrected together.
  headline = stats.compare_models(groups, task=list(TASKS), metric=headline_metric(config),
                                  test=config.reproduce.test,
                                  correction=config.reproduce.correction, baseline="joint",
                                  split=split)
  # Every other metric: means and stds only (no further tests, so no extra correction burden).
  others = stats.compare_models(groups, task=list(TASKS), metric=_metrics(config.eval.ks),
                                test="ttest", correction=config.reproduce.correction,
                                baseline="joint", split=split)
  baselines = {}
  if os.path.isdir(baselines_dir):
    for name in sorted(os.listdir(baselines_dir)):
      summary, _ = runs_lib.load_eval(os.path.join(baselines_dir, name), split)
      baselines[name] = {t: v for t, v in summary.items() if t in TASKS}
  dataset = ProcessedDataset(point.data_dir)
  result = {"point": point.name, "headline_metric": headline_metric(config), "sweep_value": point.sweep_value, "groups": groups,
            "headline": headline, "all_metrics": others["results"], "baselines": baselines,
            "manifest_stats": manifest_stats(dataset.manifest), "h1": [], "h2": [],
            "tsne": {}}
  if config.reproduce.analyses:
    result.update(_hypotheses(plan, point, groups, dataset, out_dir))
  return result


def _hypotheses(plan: Plan, point: Point, groups, dataset, out_dir) -> dict:
  from gr_jax.analysis import cooccurrence, popularity
  split = plan.config.eval.split
  k = max(plan.config.eval.ks)
  h1, h2 = [], []
  for task in TASKS:
    task_groups = {m: d for m, d in groups.items() if m in ("joint", task)}
    h1 += popularity.h1_from_runs(task_groups, dataset, task, split=split, k=k)
    if task in groups and "joint" in groups:
      h2.append(cooccurrence.h2_from_runs(groups[task], groups["joint"], dataset, task,
                                          split=split, k=k))
  return {"h1": h1, "h2": h2, "tsne": _tsne(plan, point, groups, dataset)}


def _tsne(plan: Plan, point: Point, groups, dataset) -> dict:
  """One t-SNE PNG per model kind (its first seed), coloured by cluster or genre."""
  from gr_jax.analysis import embeddings
  from gr_jax.training.checkpointing import restore_for_inference
  catalog = dataset.catalog
  first = catalog.metadata[0] if catalog.metadata else {}
  labels = embeddings.item_labels(catalog, "rec_cluster" if "rec_cluster" in first else "genres")
  out = {}
  for model_kind, dirs in groups.items():
    model, _, _ = restore_for_inference(dirs[0])
    emb = embeddings.item_embedding_matrix(model, catalog.token_offset, catalog.num_items)
    path = os.path.join(plan.workdir, "plots", f"tsne_{point.name}_{model_kind}.png")
    embeddings.tsne_plot(path, emb, labels,
                         title=f"{MODEL_LABELS[model_kind]} item embeddings (t-SNE, {point.name})")
    out[model_kind] = os.path.relpath(path, plan.workdir)
  return out
