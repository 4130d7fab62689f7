"""Per-point statistics and analyses: what the report needs, computed from the runs on disk.

Everything here reads `eval/<split>/` of the run directories and the baselines, never a live
model (except the t-SNE, which restores one checkpoint per model kind).
"""

from __future__ import annotations

import os

import numpy as np

from gr_jax.data import TASKS
from gr_jax.study.plan import MODEL_LABELS, Plan, Point, sweep_fields, sweep_label


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
  # Held-out examples dropped by data.heldout_coverage_rule (report.json "coverage"); a manifest
  # from before the knob was prepared under the paper's rule.
  out["heldout_coverage_rule"] = manifest.get("heldout_coverage_rule", "paper")
  for key, value in manifest.get("counts", {}).items():
    if key.endswith("_dropped_not_trained_in_both"):
      out[f"counts.{key}"] = value
  out["items"] = manifest.get("num_items")
  # How search was held out and what its queries are (issue 26: a search comparison needs enough
  # test queries to decide, and the report must say what a query is). A manifest without the
  # field was split by distinct query text and adds nothing (its reports stay as they were).
  split = manifest.get("search_split", {})
  if split:
    out["search_split"] = split.get("design", "by_query")
  for name in ("valid", "test"):
    for key, value in split.get(name, {}).items():
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        out[f"search_split.{name}.{key}"] = value
  sources = manifest.get("config", {}).get("movielens", {}).get("query_sources")
  if manifest.get("config", {}).get("source") == "movielens" and sources:
    out["query_sources"] = ",".join(sources)
  return out


def analyse_point(plan: Plan, point: Point, out_dir: str) -> dict:
  """Per budget and decoder: results and tests of Gen_R+S against each task-specific model."""
  from gr_jax.analysis import stats
  from gr_jax.data.dataset import ProcessedDataset
  from gr_jax.evaluation import runs as runs_lib
  from gr_jax.study.stages import baselines_dir, eval_subdir

  config = plan.config
  r = config.reproduce
  split = config.eval.split
  per_seed_data = len(point.datasets) > 1
  compare = stats.compare_within_seeds if per_seed_data else stats.compare_models
  budgets = list(dict.fromkeys(run.budget for run in point.runs))
  decoders = list(r.get("decoders", ("beam",)))
  blocks = []
  for budget in budgets:
    groups: dict[str, list[str]] = {}
    for run in point.runs:
      if run.budget == budget:
        groups.setdefault(run.model, []).append(run.run_dir)
    training = {
      m: [_training_summary(d, headline_metric(config)) for d in dirs] for m, dirs in groups.items()
    }
    for decoder in decoders:
      sub = eval_subdir(split, decoder)
      # The paper's tests: the joint model against each task-specific one on R@30 (the study's
      # report corrects over every test of the study together).
      headline = compare(
        groups,
        task=list(TASKS),
        metric=headline_metric(config),
        test=r.test,
        correction=r.correction,
        baseline="joint",
        split=sub,
      )
      others = compare(
        groups,
        task=list(TASKS),
        metric=_metrics(config.eval.ks),
        test="ttest",
        correction=r.correction,
        baseline="joint",
        split=sub,
        bootstrap_resamples=0,  # only the results (mean ± std) of this call are kept
      )
      distinct = {m: {t: _distinct(dirs, sub, t) for t in TASKS} for m, dirs in groups.items()}
      vs_baseline = _against_best_baselines(plan, point, budget, groups, sub, compare)
      blocks.append(
        {
          "budget": budget,
          "decode": decoder,
          "groups": groups,
          "headline": headline,
          "all_metrics": others["results"],
          "training": training,
          "distinct_items": distinct,
          "vs_baseline": vs_baseline,
        }
      )
  baselines = {}
  for data in point.datasets:
    bdir = baselines_dir(plan, point, data)
    if os.path.isdir(bdir):
      for name in sorted(os.listdir(bdir)):
        summary, _ = runs_lib.load_eval(os.path.join(bdir, name), split)
        for t, v in summary.items():
          if t in TASKS:
            baselines.setdefault(name, {}).setdefault(t, {}).setdefault("per_seed", []).append(v)
  for name, tasks in baselines.items():  # mean over the datasets (one per seed when simulated)
    for t, entry in tasks.items():
      seeds = entry.pop("per_seed")
      for metric in seeds[0]:
        vals = [float(x[metric]) for x in seeds if isinstance(x.get(metric), (int, float))]
        if vals:
          entry[metric] = float(np.mean(vals))
  dataset = ProcessedDataset(point.datasets[0].data_dir)
  first = blocks[0]
  result = {
    "point": point.name,
    "headline_metric": headline_metric(config),
    # The sweep plot's x (a mapping-valued point's name); sweep_fields: what the point sets.
    "sweep_value": sweep_label(point.sweep_value, point.name),
    "sweep_fields": sweep_fields(r.sweep, point.sweep_value) if r.sweep else {},
    "blocks": blocks,
    # The first budget and decoder stand for the point in the sweep plot and old readers.
    "groups": first["groups"],
    "headline": first["headline"],
    "all_metrics": first["all_metrics"],
    "baselines": baselines,
    "manifest_stats": _mean_stats([ProcessedDataset(d.data_dir).manifest for d in point.datasets]),
    "h1": [],
    "h2": [],
    "tsne": {},
  }
  if r.analyses:
    # H1/H2 on the first budget's runs of the first dataset (one dataset per analysis).
    key = point.datasets[0].key
    groups = {}
    for run in point.runs:
      if run.budget == budgets[0] and run.data == key:
        groups.setdefault(run.model, []).append(run.run_dir)
    result.update(_hypotheses(plan, point, groups, dataset, out_dir))
  return result


def _baseline_eval_dirs(plan: Plan, point: Point, split: str) -> dict[str, list[str]]:
  """Baseline name -> its eval directories (`<baseline>/eval/<split>`), one per dataset of the
  point in seed order; only baselines evaluated on every dataset."""
  from gr_jax.study.stages import baselines_dir

  found: dict[str, list[str]] = {}
  for data in point.datasets:
    bdir = baselines_dir(plan, point, data)
    names = sorted(os.listdir(bdir)) if os.path.isdir(bdir) else []
    for name in names:
      d = os.path.join(bdir, name, "eval", split)
      if os.path.exists(os.path.join(d, "metrics.json")):
        found.setdefault(name, []).append(d)
  return {n: dirs for n, dirs in found.items() if len(dirs) == len(point.datasets)}


def _against_best_baselines(
  plan: Plan, point: Point, budget: str, groups, subdir: str, compare
) -> list[dict]:
  """Gen_R+S against the best baseline of each task (the highest mean headline metric on the
  study's split: the strongest competitor, so a win over it is conservative), with the same two
  paired tests as the verdict (over (seed, query) pairs and over seeds).

  One dataset shared by all seeds: the baseline's one run stands against every seed of Gen_R+S
  (its own seed variance is not in the seed test). One dataset per seed: run i of Gen_R+S is paired
  with the baseline trained on seed i's dataset. Returns one comparison record per task (the
  records of `stats.compare_models`, plus "baseline_means": every baseline's mean), uncorrected:
  the report corrects over these comparisons as their own family.
  """
  from gr_jax.evaluation import runs as runs_lib

  config = plan.config
  metric = headline_metric(config)
  if "joint" not in groups:
    return []
  baselines = _baseline_eval_dirs(plan, point, config.eval.split)
  joint = [os.path.join(d, "eval", subdir) for d in groups["joint"]]
  out = []
  for task in TASKS:
    means = {}
    for name, dirs in baselines.items():
      vals = [
        runs_lib.read_json(os.path.join(d, "metrics.json")).get(task, {}).get(metric) for d in dirs
      ]
      if all(isinstance(v, (int, float)) for v in vals):
        means[name] = float(np.mean(vals))
    if not means:
      continue
    best = max(sorted(means), key=means.get)
    dirs = baselines[best]
    repeated = ()
    if len(dirs) == 1:  # one run stands against every seed (stats refuses unannounced repeats)
      dirs, repeated = dirs * len(joint), (best,)
    res = compare(
      {"joint": joint, best: dirs},
      task=task,
      metric=metric,
      test=config.reproduce.test,
      correction=config.reproduce.correction,
      baseline="joint",
      split=config.eval.split,
      repeated=repeated,
    )
    for c in res["comparisons"]:
      out.append(dict(c, budget=budget, baseline_means=means))
  return out


def _training_summary(run_dir: str, metric: str) -> dict:
  """Optimizer steps, final training loss and best validation values of a run (metrics.jsonl):
  `best_val_recall` is the best validation decode of `metric` (mean over the run's tasks; runs
  without model selection have none)."""
  from gr_jax import workdir as workdir_lib

  recs = workdir_lib.read_jsonl(os.path.join(run_dir, "metrics.jsonl"))  # cut lines skipped

  def best(key, pick):
    vals = [r[key] for r in recs if isinstance(r.get(key), (int, float))]
    return pick(vals) if vals else None

  return {
    "run_dir": run_dir,
    "steps": max((int(r.get("step", 0)) for r in recs), default=0),
    "final_loss": recs[-1].get("loss") if recs else None,
    "best_val_loss": best("val/loss", min),
    "best_val_recall": best(f"val/{metric}", max),
  }


def _distinct(dirs, subdir: str, task: str) -> float | None:
  """Mean over seeds of the mean number of distinct items per returned list."""
  from gr_jax.evaluation import runs as runs_lib

  vals = []
  for d in dirs:
    try:
      info = runs_lib.read_json(os.path.join(d, "eval", subdir, "metrics.json")).get("info", {})
    except (OSError, ValueError):
      continue
    v = info.get("tasks", {}).get(task, {}).get("distinct_items_mean")
    if isinstance(v, (int, float)):
      vals.append(float(v))
  return float(np.mean(vals)) if vals else None


def _mean_stats(manifests: list[dict]) -> dict:
  """Dataset statistics of a point: the mean over its datasets of each numeric field."""
  rows = [manifest_stats(m) for m in manifests]
  out = {}
  for key in rows[0]:
    vals = [r.get(key) for r in rows]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
      out[key] = float(np.mean(vals)) if len(vals) > 1 else vals[0]
    else:
      out[key] = vals[0]
  return out


def _hypotheses(plan: Plan, point: Point, groups, dataset, out_dir) -> dict:
  from gr_jax.analysis import cooccurrence, embeddings, popularity

  ev = plan.config.eval
  split = ev.split
  # eval.analysis_k = 0 (or a config saved before the knob) analyses the deepest reported cut-off.
  k = int(ev.get("analysis_k", 0)) or max(ev.ks)
  eps = float(ev.get("kl_eps", 1e-6))
  bounds = tuple(float(b) for b in ev.get("bucket_bounds", (1 / 3, 2 / 3)))
  window = int(ev.get("session_window", 10))
  h1, h2 = [], []
  for task in TASKS:
    task_groups = {m: d for m, d in groups.items() if m in ("joint", task)}
    h1 += popularity.h1_from_runs(
      task_groups, dataset, task, split=split, k=k, eps=eps, bounds=bounds
    )
    if task in groups and "joint" in groups:
      h2.append(
        cooccurrence.h2_from_runs(
          groups[task], groups["joint"], dataset, task, split=split, k=k, window=window
        )
      )
  return {
    "h1": h1,
    "h2": h2,
    "tsne": _tsne(plan, point, groups, dataset),
    # What an item's vector is in those plots (semantic IDs have no one row per item).
    "tsne_item_embedding": embeddings.item_embedding_note(dataset.catalog),
  }


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
    emb = embeddings.item_embedding_matrix(model, catalog)
    path = os.path.join(plan.workdir, "plots", f"tsne_{point.name}_{model_kind}.png")
    embeddings.tsne_plot(
      path, emb, labels, title=f"{MODEL_LABELS[model_kind]} item embeddings (t-SNE, {point.name})"
    )
    out[model_kind] = os.path.relpath(path, plan.workdir)
  return out
