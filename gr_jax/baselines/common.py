"""Shared pieces of the trained and lexical baselines: full-catalogue top-K and run directories.

Every baseline scores *all* items of the catalogue for each query and keeps the top
`K = max(config.eval.ks)`. The cut is taken in the metrics' own order (score descending, ties by
item id descending, `gr_jax.evaluation.metrics.rank_items`), so the K items written are exactly the
first K of the full ranking the metrics would make: no tie straddling rank K can change a value.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np

from gr_jax.evaluation import metrics as metrics_lib
from gr_jax import workdir as workdir_lib
from gr_jax.evaluation import runs as runs_lib


def tie_order(item_ids: Sequence[str]) -> np.ndarray:
  """int64 `[num_items]`: 0 for the item the metrics put first among equal scores (largest id)."""
  order = sorted(range(len(item_ids)), key=lambda i: item_ids[i], reverse=True)
  rank = np.empty(len(item_ids), np.int64)
  rank[np.asarray(order, np.int64)] = np.arange(len(item_ids))
  return rank


def top_k(scores: np.ndarray, k: int, ties: np.ndarray) -> np.ndarray:
  """Indices `[Q, min(k, n)]` of each row's best items in metric order (see module doc).

  scores: float `[Q, n]`; ties: `tie_order(...)` `[n]`.
  """
  scores = np.asarray(scores)
  q, n = scores.shape
  k = min(int(k), n)
  out = np.zeros([q, k], np.int64)
  if k == 0:
    return out
  # k-th largest score of each row: every item at or above it is a candidate, then an exact sort
  # of the (few) candidates by (score desc, tie rank asc) picks the first k.
  kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]  # [Q]
  for r in range(q):
    cand = np.flatnonzero(scores[r] >= kth[r])  # [C >= k]
    order = np.lexsort((ties[cand], -scores[r, cand]))  # last key is primary
    out[r] = cand[order[:k]]
  return out


def run_from_top_k(query_ids: Sequence[str], idx: np.ndarray, scores: np.ndarray,
                   item_ids: Sequence[str]) -> dict[str, dict[str, float]]:
  """`{qid: {item_id: score}}` from top-K indices `[Q, K]` and the full score rows `[Q, n]`."""
  run = {}
  for r, qid in enumerate(query_ids):
    run[qid] = {item_ids[int(i)]: float(scores[r, int(i)]) for i in idx[r]}
  return run


def write_config(out_dir: str, config, name: str) -> None:
  """`config.json` of a baseline run: the whole resolved config plus which baseline it is."""
  d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  d = dict(d, baseline=name)
  os.makedirs(out_dir, exist_ok=True)
  workdir_lib.write_text(os.path.join(out_dir, "config.json"),
                         json.dumps(d, indent=2, sort_keys=True, default=list) + "\n")


def evaluate_and_write(out_dir: str, split: str, task: str, run: Mapping, arrays: Mapping,
                       item_ids: Sequence[str], ks: Sequence[int], name: str,
                       info: Mapping | None = None) -> dict:
  """Metrics of one task's run against the split's qrels, written as `eval/<split>/` of `out_dir`.

  Returns the metrics.json object (`{task: {metric: mean}, "info": {...}}`).
  """
  src = f"{task}/{split}.npz"
  qrels = runs_lib.qrels_from_split(arrays, item_ids, src)
  means, pq = metrics_lib.evaluate_run(qrels, run, ks)
  extra = {"info": dict(info or {}, model=name, split=split, ks=list(ks),
                        metric_note="recall@K is Recall; equals Success@K with one target "
                        "per query")}
  return runs_lib.write_eval_outputs(
      runs_lib.eval_dir(out_dir, split),
      {task: {"run": run, "qrels": qrels, "means": means, "per_query": pq}}, extra, tag=name)
