"""Ranking metrics: Recall@K, Success@K, NDCG@K, MRR@K over TREC-style runs and qrels.

Conventions (chosen so every value equals `ir_measures` to 1e-9, see tests/evaluation):
- A run is `{query_id: {item_id: score}}`; a qrels is `{query_id: {item_id: relevance}}`. Ids are
  strings, as in TREC files.
- Ranking = score descending, ties broken by item id *descending* (string order). This is
  trec_eval's (and so pytrec_eval's) order; ir_measures' msmarco provider (its only RR@K
  implementation) breaks ties the other way, so tests compare MRR@K with trec_eval's uncut RR.
- The mean is over the queries of the *qrels* that have at least one relevant item: a query with no
  run entry (or fewer than K items) scores 0 on the missing ranks; run queries absent from the qrels
  are ignored. Relevance <= 0 is non-relevant.
- Recall@K = relevant items in the top K / relevant items of the query. Success@K = 1 if any
  relevant item is in the top K. With one relevant item per query (rec, most search queries) the two
  are equal; our tables show Recall and say so.
- NDCG@K: gain = relevance, discount 1/log2(rank + 1), ideal = the qrels' relevances sorted.
- MRR@K: 1 / rank of the first relevant item if it is within the top K, else 0.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

METRIC_FAMILIES = ("recall", "success", "ndcg", "mrr")


def rank_items(scores: Mapping[str, float]) -> list[str]:
  """Item ids of one query in rank order: score descending, then item id descending (trec_eval)."""
  # Two stable sorts: secondary key first (id descending), then primary (score descending).
  items = sorted(scores, reverse=True)
  items.sort(key=lambda d: -float(scores[d]))
  return items


def rank_run(run: Run) -> dict[str, list[str]]:
  return {qid: rank_items(scores) for qid, scores in run.items()}


def metric_names(ks: Sequence[int], families: Sequence[str] = METRIC_FAMILIES) -> list[str]:
  """`recall@1, ..., ndcg@30, ...`: the names metrics.json uses."""
  for f in families:
    if f not in METRIC_FAMILIES:
      raise ValueError(f"unknown metric family {f!r}; expected one of {METRIC_FAMILIES}")
  return [f"{f}@{k}" for f in families for k in ks]


def query_metrics(
  ranked: Sequence[str],
  rels: Mapping[str, int],
  ks: Sequence[int],
  families: Sequence[str] = METRIC_FAMILIES,
) -> dict[str, float]:
  """All metrics of one query from its ranked item list and its qrels."""
  relevant = {d: float(r) for d, r in rels.items() if r > 0}
  n_rel = len(relevant)
  ideal = sorted(relevant.values(), reverse=True)
  out = {}
  for k in ks:
    if k <= 0:
      raise ValueError(f"cut-off must be positive, got {k}")
    top = ranked[:k]
    hits = [d for d in top if d in relevant]
    if "recall" in families:
      out[f"recall@{k}"] = len(hits) / n_rel if n_rel else 0.0
    if "success" in families:
      out[f"success@{k}"] = 1.0 if hits else 0.0
    if "ndcg" in families:
      dcg = sum(relevant[d] / math.log2(i + 2) for i, d in enumerate(top) if d in relevant)
      idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
      out[f"ndcg@{k}"] = dcg / idcg if idcg > 0 else 0.0
    if "mrr" in families:
      rr = 0.0
      for i, d in enumerate(top):
        if d in relevant:
          rr = 1.0 / (i + 1)
          break
      out[f"mrr@{k}"] = rr
  return out


def per_query_metrics(
  qrels: Qrels, run: Run, ks: Sequence[int], families: Sequence[str] = METRIC_FAMILIES
) -> dict[str, dict[str, float]]:
  """`{metric_name: {query_id: value}}` for every qrels query with a relevant item."""
  names = metric_names(ks, families)
  out: dict[str, dict[str, float]] = {n: {} for n in names}
  for qid in sorted(qrels):
    rels = qrels[qid]
    if not any(r > 0 for r in rels.values()):
      continue  # trec_eval skips queries without relevant items; so do we
    ranked = rank_items(run.get(qid, {}))
    for name, v in query_metrics(ranked, rels, ks, families).items():
      out[name][qid] = v
  return out


def aggregate(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
  """Mean over queries of each metric (0.0 when there is no query)."""
  return {name: (sum(v.values()) / len(v) if v else 0.0) for name, v in per_query.items()}


def evaluate_run(
  qrels: Qrels, run: Run, ks: Sequence[int], families: Sequence[str] = METRIC_FAMILIES
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
  """(means, per-query values) of one run."""
  pq = per_query_metrics(qrels, run, ks, families)
  return aggregate(pq), pq


def run_from_ranked(
  ranked: Mapping[str, Sequence[str]], scores: Mapping[str, Sequence[float]] | None = None
) -> dict[str, dict[str, float]]:
  """Ranked lists (best first) -> a run dict. Duplicates keep their first (best) rank.

  Without scores, rank r gets score -r so the order is unambiguous. With scores, they must be
  non-increasing down the list, otherwise the written run would re-sort differently.
  """
  run = {}
  for qid, items in ranked.items():
    s = scores[qid] if scores is not None else [-float(i) for i in range(len(items))]
    if len(s) != len(items):
      raise ValueError(f"query {qid}: {len(items)} items but {len(s)} scores")
    q: dict[str, float] = {}
    prev = math.inf
    for d, v in zip(items, s):
      v = float(v)
      if d in q:
        continue
      if v > prev:
        raise ValueError(f"query {qid}: scores must be best first, got {v} after {prev}")
      prev = v
      q[d] = v
    run[qid] = q
  return run


def qrels_from_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, dict[str, int]]:
  """(query_id, relevant item id) pairs -> binary qrels."""
  qrels: dict[str, dict[str, int]] = {}
  for qid, item in pairs:
    qrels.setdefault(str(qid), {})[str(item)] = 1
  return qrels
