"""Per-point statistics and analyses: what the report needs, computed from the runs on disk.

Everything here reads `eval/<split>/` of the run directories and the baselines (and the baselines'
`eval/valid/`, where the best baseline of a task is chosen), never a live model (except the t-SNE,
which restores one checkpoint per model kind).
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
  from gr_jax.study.stages import eval_subdir

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
  baselines = baseline_means(plan, point, split)
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
    # Per-seed H1/H2 numbers for the report's seed-level hypothesis tests (report.py
    # `hypothesis_rows`); with the analyses off, the reason instead of numbers.
    "hypothesis_seeds": {"h1": [], "h2": [], "skipped": [], "reason": ANALYSES_OFF},
  }
  if r.analyses:
    result["hypothesis_seeds"] = hypothesis_seeds(plan, point)
    # H1/H2 on the first budget's runs of the first dataset (one dataset per analysis).
    key = point.datasets[0].key
    groups = {}
    for run in point.runs:
      if run.budget == budgets[0] and run.data == key:
        groups.setdefault(run.model, []).append(run.run_dir)
    result.update(_hypotheses(plan, point, groups, dataset, out_dir))
  return result


def _baseline_eval_dirs(plan: Plan, point: Point, split: str) -> dict[str, list[str]]:
  """Baseline name -> its eval directories (`<baseline run>/eval/<split>`) in the study's seed
  order: one per dataset when each seed has its own (seed k's dataset's baselines trained with seed
  k); on a shared dataset one per study seed for a trained baseline (`<name>/seed<k>/`) and one for
  a deterministic one (bm25, popularity: the same run stands for every seed). Only baselines
  evaluated on `split` for every seed (and trained ones still in `reproduce.baselines`)."""
  from gr_jax.study.stages import TRAINED_BASELINES, baseline_run_dir, baselines_dir, is_shared

  seeds = [int(s) for s in plan.config.reproduce.seeds]
  configured = set(plan.config.reproduce.get("baselines", ()))
  found: dict[str, list[str]] = {}
  datasets: dict[str, int] = {}  # name -> datasets that hold all of its runs
  for data in point.datasets:
    bdir = baselines_dir(plan, point, data)
    names = sorted(os.listdir(bdir)) if os.path.isdir(bdir) else []
    for name in names:
      if not os.path.isdir(os.path.join(bdir, name)):
        continue
      if is_shared(data) and name in TRAINED_BASELINES:
        if name not in configured:  # a leftover of a baseline no longer asked for
          continue
        runs = [baseline_run_dir(plan, point, data, name, s) for s in seeds]
      else:
        runs = [os.path.join(bdir, name)]
      dirs = [os.path.join(d, "eval", split) for d in runs]
      if all(os.path.exists(os.path.join(d, "metrics.json")) for d in dirs):
        found.setdefault(name, []).extend(dirs)
        datasets[name] = datasets.get(name, 0) + 1
  return {n: dirs for n, dirs in found.items() if datasets[n] == len(point.datasets)}


def baseline_means(plan: Plan, point: Point, split: str) -> dict:
  """Baseline name -> task -> metric -> its mean on `split` over its runs (`_baseline_eval_dirs`):
  one per seed (a per-seed dataset's, or a trained baseline's of the shared dataset), or its one
  run (a deterministic baseline of the shared dataset)."""
  from gr_jax.evaluation import runs as runs_lib

  out: dict = {}
  for name, dirs in _baseline_eval_dirs(plan, point, split).items():
    summaries = [runs_lib.load_eval(d, split)[0] for d in dirs]
    for t in TASKS:
      per_seed = [x[t] for x in summaries if isinstance(x.get(t), dict)]
      if len(per_seed) != len(summaries):
        continue
      entry = out.setdefault(name, {}).setdefault(t, {})
      for metric in per_seed[0]:
        vals = [float(x[metric]) for x in per_seed if isinstance(x.get(metric), (int, float))]
        if vals:
          entry[metric] = float(np.mean(vals))
  return out


def _task_means(baselines: dict[str, list[str]], task: str, metric: str) -> dict[str, float]:
  """Baseline name -> mean of `task`'s `metric` over its eval directories (the baselines that
  report it in every one)."""
  from gr_jax.evaluation import runs as runs_lib

  means = {}
  for name, dirs in baselines.items():
    vals = [
      runs_lib.read_json(os.path.join(d, "metrics.json")).get(task, {}).get(metric) for d in dirs
    ]
    if vals and all(isinstance(v, (int, float)) for v in vals):
      means[name] = float(np.mean(vals))
  return means


# The split on which the best baseline of a task is chosen (never the test split).
CHOICE_SPLIT = "valid"


def best_baselines(plan: Plan, point: Point) -> dict[str, tuple[str, dict[str, float]]]:
  """Task -> (the best baseline, every baseline's mean on valid): the highest mean headline
  metric on the VALID split, as every choice of the study is made. Reads only `eval/valid/`;
  a task without a baseline evaluated on valid has none."""
  metric = headline_metric(plan.config)
  valid = _baseline_eval_dirs(plan, point, CHOICE_SPLIT)
  out = {}
  for task in TASKS:
    means = _task_means(valid, task, metric)
    if means:
      out[task] = (max(sorted(means), key=means.get), means)
  return out


def _against_best_baselines(
  plan: Plan, point: Point, budget: str, groups, subdir: str, compare
) -> list[dict]:
  """Gen_R+S against the best baseline of each task (`best_baselines`: the highest mean headline
  metric on the VALID split, the strongest competitor chosen without looking at test, so a win
  over it is conservative), compared on the study's split with the same two paired tests as the
  verdict (over (seed, query) pairs and over seeds).

  Run i of Gen_R+S is paired with seed i's run of the baseline: the baseline trained on seed i's
  dataset (one dataset per seed), or on the shared dataset the trained baseline's seed-i run; only
  a deterministic baseline of the shared dataset (bm25, popularity) is one run standing against
  every seed (`repeated`). Returns one comparison record per task (the records of
  `stats.compare_models`, plus "baseline_means": every baseline's mean on the study's split,
  "chosen_on": "valid" and "baseline_means_valid": the means that chose it), uncorrected: the
  report corrects over these comparisons as their own family.
  """
  config = plan.config
  metric = headline_metric(config)
  if "joint" not in groups:
    return []
  seeds = [int(s) for s in config.reproduce.seeds]
  by_seed = {r.seed: r.run_dir for r in point.runs if r.budget == budget and r.model == "joint"}
  # In the study's seed order, as the baselines' runs (paired by position).
  joint = [os.path.join(by_seed[s], "eval", subdir) for s in seeds if s in by_seed]
  baselines = _baseline_eval_dirs(plan, point, config.eval.split)
  out = []
  for task, (best, valid_means) in best_baselines(plan, point).items():
    means = _task_means(baselines, task, metric)
    if best not in means:  # chosen on valid but not evaluated on the study's split
      continue
    dirs = baselines[best]
    repeated = ()
    if len(dirs) == 1 and len(joint) > 1:  # a deterministic baseline of the shared dataset
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
      out.append(
        dict(
          c,
          budget=budget,
          baseline_means=means,
          chosen_on=CHOICE_SPLIT,
          baseline_means_valid=valid_means,
        )
      )
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


ANALYSES_OFF = "reproduce.analyses = False: the H1/H2 analyses were not run"


def hypothesis_seeds(plan: Plan, point: Point) -> dict:
  """The per-seed numbers of the report's H1 and H2 tests, for every budget and decoder of a point.

  Unlike `_hypotheses` (one dataset, models averaged or pooled over seeds), each seed's joint model
  is paired with the same seed's task-specific model on the dataset they trained on, so a study
  with one dataset per seed contributes every seed. Settings: eval.analysis_k (0: the deepest of
  eval.ks), eval.kl_eps and eval.session_window, as for `_hypotheses`. Returns
  `{"h1": [...], "h2": [...], "skipped": [...], "reason": None, "k", "eps", "window"}`, one
  record per (budget, decode, task, seed) in each list (`seed_hypotheses`).
  """
  from gr_jax.data.dataset import ProcessedDataset
  from gr_jax.study.stages import eval_subdir

  ev = plan.config.eval
  k = int(ev.get("analysis_k", 0)) or max(ev.ks)
  eps = float(ev.get("kl_eps", 1e-6))
  window = int(ev.get("session_window", 10))
  decoders = list(plan.config.reproduce.get("decoders", ("beam",)))
  budgets = list(dict.fromkeys(run.budget for run in point.runs))
  out = {"h1": [], "h2": [], "skipped": [], "reason": None, "k": k, "eps": eps, "window": window}
  for data in point.datasets:
    pairs = []  # (budget, decode, seed, {model: eval dir})
    for budget in budgets:
      seeds: dict[int, dict[str, str]] = {}
      for run in point.runs:
        if run.budget == budget and run.data == data.key:
          seeds.setdefault(run.seed, {})[run.model] = run.run_dir
      for decoder in decoders:
        sub = eval_subdir(plan.config.eval.split, decoder)
        for seed, models in sorted(seeds.items()):
          dirs = {m: os.path.join(d, "eval", sub) for m, d in models.items()}
          pairs.append((budget, decoder, seed, dirs))
    if not any("joint" in dirs for *_, dirs in pairs):
      continue
    found = seed_hypotheses(
      ProcessedDataset(data.data_dir), pairs, data=data.key, k=k, eps=eps, window=window
    )
    for key in ("h1", "h2", "skipped"):
      out[key] += found[key]
  return out


def seed_hypotheses(
  dataset, pairs, *, data: str = "shared", k: int = 30, eps: float = 1e-6, window: int = 10
) -> dict:
  """H1 and H2 numbers of each seed's joint and task-specific model on one dataset.

  pairs: `(budget, decode, seed, {model: eval dir})`, the eval dir holding `{task}.run` (and
  `{task}.qrels`). For each task with a joint and a task-specific run, one record per hypothesis,
  `{"budget", "decode", "task", "seed", "data", "joint": {...}, "specific": {...}}`:
  - H1 (`gr_jax/analysis/popularity.py`): the model's predicted-item distribution P (how many of
    the task's test lists hold each item in their top k, smoothed by eps and normalised) against
    each task's popularity (its training targets' counts, smoothed the same way):
    "kl_own" = KL(P || this task's popularity), "kl_other" = KL(P || the other task's),
    "kl_target" = KL(P || the test targets), the `popularity_kl` "kl_pred_target" of the H1 table.
  - H2 (`gr_jax/analysis/cooccurrence.py`): "cooccurrences" = pairs of items in the same top-k
    list, summed over the task's test lists; "related_cooccurrences" = those on pairs the OTHER
    task relates (`related_pairs`: search: co-occurring in rec training sessions within `window`;
    rec: relevant to the same training query); "related_share" = their ratio (None without any
    co-occurrence); and "num_related_pairs" (the other task's related pairs; beside the models).
  A seed whose run file is missing, or whose predictions make a number undefined, goes to
  "skipped" with the reason instead.
  """
  from gr_jax.analysis import cooccurrence, popularity
  from gr_jax.data.divergence import kl_divergence
  from gr_jax.evaluation import runs as runs_lib

  items = list(dataset.catalog.item_ids)
  index = {d: i for i, d in enumerate(items)}
  task_popularity = {}
  for task in TASKS:
    counts = np.bincount(
      np.asarray(dataset.split(task, "train")["target_item"], np.int64), minlength=len(items)
    )
    task_popularity[task] = popularity.distribution(dict(zip(items, counts.tolist())), items, eps)
  related: dict[str, set] = {}
  out = {"h1": [], "h2": [], "skipped": []}
  for budget, decoder, seed, dirs in pairs:
    for task in TASKS:
      if "joint" not in dirs or task not in dirs:
        continue
      other = next(t for t in TASKS if t != task)
      common = {"budget": budget, "decode": decoder, "task": task, "seed": seed, "data": data}
      roles = {"joint": dirs["joint"], "specific": dirs[task]}
      missing = [
        os.path.join(d, f"{task}.run")
        for d in roles.values()
        if not os.path.exists(os.path.join(d, f"{task}.run"))
      ]
      if missing:
        out["skipped"].append({**common, "reason": f"no run file {missing[0]}"})
        continue
      if task not in related:
        related[task] = cooccurrence.related_pairs(dataset, task, window)
      h1, h2 = dict(common), dict(common, num_related_pairs=len(related[task]))
      try:
        for role, d in roles.items():
          run = runs_lib.read_run(os.path.join(d, f"{task}.run"))
          qrels = runs_lib.read_qrels(os.path.join(d, f"{task}.qrels"))
          pred = popularity.distribution(popularity.predicted_counts(run, k), items, eps)
          h1[role] = {
            "kl_own": kl_divergence(pred, task_popularity[task]),
            "kl_other": kl_divergence(pred, task_popularity[other]),
            "kl_target": popularity.popularity_kl(run, qrels, items, k, eps)["kl_pred_target"],
          }
          cooc = cooccurrence.prediction_cooccurrence(run, index, k)
          total = int(sum(cooc.values()))
          on_related = int(sum(c for p, c in cooc.items() if p in related[task]))
          h2[role] = {
            "cooccurrences": total,
            "related_cooccurrences": on_related,
            "related_share": on_related / total if total else None,
          }
      except (OSError, ValueError) as e:  # no predictions at all (eps = 0), unreadable files
        out["skipped"].append({**common, "reason": f"{type(e).__name__}: {e}"})
        continue
      out["h1"].append(h1)
      out["h2"].append(h2)
  return out


def _tsne(plan: Plan, point: Point, groups, dataset) -> dict:
  """One t-SNE PNG per model kind (its first seed), coloured by cluster or genre."""
  from gr_jax.analysis import embeddings
  from gr_jax.checkpointing import restore_for_inference

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
