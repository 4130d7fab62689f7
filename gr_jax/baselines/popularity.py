"""Popularity baselines: Pop_S, Pop_R and their mix, written as runs like a model's.

- Pop_S ranks items by how many *search* training examples have them as target; Pop_R by *rec*
  training targets; Pop_mix by `w * p_S + (1 - w) * p_R` (w = 0.5 by default), p = normalised counts.
- Every query of a task gets the same list (the top `max(ks)` items). Scores are the popularity
  probabilities; equal counts tie and fall in the metrics' tie order (item id descending).
  With `exclude_seen` (`eval.exclude_seen`) a rec query's list is that ranking without the query's
  own history items, topped up from further down (the first `max(ks)` remaining items).
- Each baseline is written as a run directory `out_dir/<name>/eval/<split>/` with `{task}.run`,
  `{task}.qrels`, `metrics.json`, `per_query.json`, so `gr_jax.stats` treats it like a model.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from gr_jax.data.dataset import query_histories
from gr_jax.evaluation import metrics as metrics_lib
from gr_jax.evaluation import runs as runs_lib
from gr_jax.schema import TASKS

BASELINES = ("pop_s", "pop_r", "pop_mix")


def _task_arrays(dataset, task: str, split: str):
  """The split's arrays, or None when the dataset has no such task split."""
  root = getattr(dataset, "directory", getattr(dataset, "path", ""))
  path = os.path.join(root, task, f"{split}.npz")
  try:
    return dataset.split(task, split)
  except (FileNotFoundError, KeyError):
    return None
  except ValueError as e:  # DataError for a missing file is a ValueError too
    if not os.path.exists(path):
      return None
    raise e


def popularity_counts(dataset, task: str, split: str = "train") -> np.ndarray:
  """Training examples per item index with the item as target: int64 `[num_items]`."""
  arrays = _task_arrays(dataset, task, split)
  n = dataset.catalog.num_items
  if arrays is None:
    return np.zeros([n], np.int64)
  return np.bincount(np.asarray(arrays["target_item"], np.int64), minlength=n)


def popularity_distributions(dataset, mix_weight: float = 0.5) -> dict[str, np.ndarray]:
  """`{pop_s, pop_r, pop_mix}` -> probability over item indices `[num_items]`."""

  def norm(c):
    s = c.sum()
    return c / s if s > 0 else np.zeros(c.shape, np.float64)

  p_s = norm(popularity_counts(dataset, "search").astype(np.float64))
  p_r = norm(popularity_counts(dataset, "rec").astype(np.float64))
  return {"pop_s": p_s, "pop_r": p_r, "pop_mix": mix_weight * p_s + (1 - mix_weight) * p_r}


def popularity_run(
  probs: np.ndarray,
  item_ids: Sequence[str],
  query_ids: Sequence[str],
  depth: int,
  histories: Sequence[np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
  """The same top-`depth` list for every query; with `histories` (item indices per query), each
  query's list skips its own history items and takes the next ones instead."""
  scores = {item_ids[i]: float(probs[i]) for i in range(len(item_ids))}
  order = metrics_lib.rank_items(scores)
  if histories is None:
    ranked = {d: scores[d] for d in order[:depth]}
    return {q: dict(ranked) for q in query_ids}
  run = {}
  for q, hist in zip(query_ids, histories):
    seen = {item_ids[int(i)] for i in np.asarray(hist).tolist()}
    top = [d for d in order[: depth + len(seen)] if d not in seen][:depth]
    run[q] = {d: scores[d] for d in top}
  return run


def _evaluate(
  dataset,
  split: str,
  ks: Sequence[int],
  mix_weight: float,
  baselines: Sequence[str],
  exclude_seen: bool = False,
):
  """`{baseline: {task: {run, qrels, means, per_query}}}` over the tasks that have the split."""
  dists = popularity_distributions(dataset, mix_weight)
  item_ids = dataset.catalog.item_ids
  depth = max(ks)
  out = {}
  for name in baselines:
    if name not in dists:
      raise ValueError(f"unknown baseline {name!r}; expected one of {BASELINES}")
    task_results = {}
    for task in TASKS:
      arrays = _task_arrays(dataset, task, split)
      if arrays is None:
        continue
      src = f"{task}/{split}.npz"
      qids, first = runs_lib.split_queries(arrays, src)
      qrels = runs_lib.qrels_from_split(arrays, item_ids, src)
      seen = None
      if exclude_seen and task == "rec":  # search queries have no history
        seen = query_histories(arrays, first, dataset.catalog)
      run = popularity_run(dists[name], item_ids, qids, depth, seen)
      means, pq = metrics_lib.evaluate_run(qrels, run, ks)
      task_results[task] = {"run": run, "qrels": qrels, "means": means, "per_query": pq}
    if not task_results:
      raise FileNotFoundError(f"dataset has no {split} split for any task ({TASKS})")
    out[name] = task_results
  return out


def popularity_means(
  dataset,
  split: str = "valid",
  ks: Sequence[int] = (1, 5, 10, 30),
  mix_weight: float = 0.5,
  baselines: Sequence[str] = BASELINES,
  exclude_seen: bool = False,
) -> dict[str, dict[str, dict[str, float]]]:
  """`{baseline: {task: {metric: mean}}}` on a split, without writing runs (the study report's
  validation curves draw them as reference lines)."""
  results = _evaluate(dataset, split, ks, mix_weight, baselines, exclude_seen)
  return {
    name: {task: dict(r["means"]) for task, r in tasks.items()} for name, tasks in results.items()
  }


def write_popularity_runs(
  dataset,
  out_dir: str,
  split: str = "test",
  ks: Sequence[int] = (1, 5, 10, 30),
  mix_weight: float = 0.5,
  baselines: Sequence[str] = BASELINES,
  exclude_seen: bool = False,
) -> dict:
  """Writes each baseline's run directory; returns `{baseline: metrics.json object}`.
  exclude_seen: rec lists skip each query's own history items (`eval.exclude_seen`)."""
  out = {}
  results = _evaluate(dataset, split, ks, mix_weight, baselines, bool(exclude_seen))
  for name, task_results in results.items():
    extra = {
      "info": {
        "model": name,
        "split": split,
        "ks": list(ks),
        "mix_weight": mix_weight,
        "exclude_seen": bool(exclude_seen),
        "metric_note": "recall@K is Recall; equals Success@K with one target per query",
      }
    }
    out[name] = runs_lib.write_eval_outputs(
      runs_lib.eval_dir(os.path.join(out_dir, name), split), task_results, extra, tag=name
    )
  return out
