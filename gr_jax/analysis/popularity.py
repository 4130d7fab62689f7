"""H1: does joint training regularise each item's popularity estimate?

Two views of a run against the test targets of its task:
- KL divergence between the popularity of *predicted* items (how often each item appears in the
  top-K lists, all queries pooled, each list position counted once) and the popularity of the
  *test targets*. Both distributions get additive smoothing `eps` before normalising so that KL is
  finite; we report KL(targets || predictions) (how badly the predictions cover where the targets
  are) and the reverse.
- Recall on head / torso / tail items: items are bucketed by their *training* popularity: sorted
  by count, head = the most popular items that together hold the first third of the training
  examples, torso the next third, tail the rest (bounds configurable). Bucket recall@K = share of
  (query, relevant item) pairs with the item in the bucket whose item is in the query's top K.
Items are catalogue id strings throughout, as in run files.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from gr_jax.data.divergence import kl_divergence
from gr_jax.evaluation import metrics as metrics_lib

BUCKETS = ("head", "torso", "tail")


def distribution(counts: Mapping[str, float], items: Sequence[str], eps: float = 0.0) -> np.ndarray:
  """Counts over `items` (missing = 0) plus eps, normalised: `[len(items)]`."""
  c = np.asarray([float(counts.get(i, 0.0)) for i in items], np.float64) + eps
  s = c.sum()
  if s <= 0:
    raise ValueError("distribution of all-zero counts (no predictions or no targets)")
  return c / s


def predicted_counts(run: Mapping[str, Mapping[str, float]], k: int) -> dict[str, int]:
  """How many queries' top-k lists hold each item."""
  counts: dict[str, int] = {}
  for scores in run.values():
    for d in metrics_lib.rank_items(scores)[:k]:
      counts[d] = counts.get(d, 0) + 1
  return counts


def target_counts(qrels: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
  counts: dict[str, int] = {}
  for rels in qrels.values():
    for d, r in rels.items():
      if r > 0:
        counts[d] = counts.get(d, 0) + 1
  return counts


def popularity_kl(run, qrels, items: Sequence[str], k: int = 30, eps: float = 1e-6) -> dict:
  """`{"kl_target_pred", "kl_pred_target", "k", "eps"}` for one run and its qrels."""
  p_pred = distribution(predicted_counts(run, k), items, eps)
  p_tgt = distribution(target_counts(qrels), items, eps)
  return {
    "kl_target_pred": kl_divergence(p_tgt, p_pred),
    "kl_pred_target": kl_divergence(p_pred, p_tgt),
    "k": k,
    "eps": eps,
  }


def popularity_buckets(
  train_counts: Mapping[str, float], bounds: Sequence[float] = (1 / 3, 2 / 3)
) -> dict[str, str]:
  """Item -> head | torso | tail by cumulative share of training examples (see module doc).

  Items are sorted by count descending (ties by id, for determinism); an item belongs to the
  bucket in which its cumulative share *starts*, so the most popular item is always head.
  """
  if len(bounds) != 2 or not 0.0 < float(bounds[0]) <= float(bounds[1]) <= 1.0:
    raise ValueError(f"bucket bounds must be two shares 0 < head <= torso <= 1, got {bounds!r}")
  items = sorted(train_counts, key=lambda d: (-float(train_counts[d]), d))
  total = float(sum(train_counts.values()))
  if total <= 0:
    raise ValueError("no training examples to bucket items by")
  out, cum = {}, 0.0
  for d in items:
    share = cum / total
    out[d] = "head" if share < bounds[0] else ("torso" if share < bounds[1] else "tail")
    cum += float(train_counts[d])
  return out


def bucket_recall(run, qrels, buckets: Mapping[str, str], k: int = 30) -> dict[str, dict]:
  """`{bucket: {"recall", "pairs"}}` over (query, relevant item) pairs; unknown items -> tail."""
  hits = {b: 0 for b in BUCKETS}
  pairs = {b: 0 for b in BUCKETS}
  for qid, rels in qrels.items():
    top = set(metrics_lib.rank_items(run.get(qid, {}))[:k])
    for d, r in rels.items():
      if r <= 0:
        continue
      b = buckets.get(d, "tail")  # never seen in training: the longest of tails
      pairs[b] += 1
      hits[b] += d in top
  return {
    b: {"recall": hits[b] / pairs[b] if pairs[b] else float("nan"), "pairs": pairs[b]}
    for b in BUCKETS
  }


def h1_analysis(
  runs: Mapping[str, Mapping],
  qrels,
  train_counts: Mapping[str, float],
  items: Sequence[str],
  k: int = 30,
  eps: float = 1e-6,
  bounds: Sequence[float] = (1 / 3, 2 / 3),
) -> list[dict]:
  """One record per model: KL both ways and head/torso/tail recall. runs: model -> run (one task)."""
  buckets = popularity_buckets(train_counts, bounds)
  out = []
  for model, run in runs.items():
    rec = {"model": model, **popularity_kl(run, qrels, items, k, eps)}
    for b, v in bucket_recall(run, qrels, buckets, k).items():
      rec[f"recall_{b}"] = v["recall"]
      rec[f"pairs_{b}"] = v["pairs"]
    out.append(rec)
  return out


def _mean_records(records: list[dict]) -> dict:
  """Mean of numeric fields over seeds (NaN-aware), plus how many seeds."""
  out = {"num_seeds": len(records)}
  for key in records[0]:
    vals = [r[key] for r in records]
    if all(isinstance(v, int) for v in vals) and len(set(vals)) == 1:
      out[key] = vals[0]  # a setting such as k
    elif all(isinstance(v, (int, float)) for v in vals):
      out[key] = float(np.nanmean(vals)) if not all(v != v for v in vals) else float("nan")
    else:
      out[key] = vals[0]
  return out


def h1_from_runs(
  groups: Mapping[str, Sequence[str]],
  dataset,
  task: str,
  split: str = "test",
  k: int = 30,
  eps: float = 1e-6,
  bounds: Sequence[float] = (1 / 3, 2 / 3),
) -> list[dict]:
  """H1 per model (mean over its seeds' run dirs) from `eval/<split>/{task}.run` files."""
  import os
  from gr_jax.evaluation import runs as runs_lib

  items = list(dataset.catalog.item_ids)
  train = np.bincount(
    np.asarray(dataset.split(task, "train")["target_item"], np.int64), minlength=len(items)
  )
  train_counts = {items[i]: int(c) for i, c in enumerate(train) if c > 0}
  out = []
  for model, dirs in groups.items():
    recs = []
    for d in dirs:
      path = os.path.join(runs_lib.eval_dir(d, split), f"{task}.run")
      if not os.path.exists(path):
        break  # the model has no run for this task (e.g. Gen_R on search)
      run = runs_lib.read_run(path)
      qrels = runs_lib.read_qrels(os.path.join(runs_lib.eval_dir(d, split), f"{task}.qrels"))
      recs.append(h1_analysis({model: run}, qrels, train_counts, items, k, eps, bounds)[0])
    if recs:
      out.append({"task": task, **_mean_records(recs)})
  return out
