"""H2: does joint training regularise item representations? Item-pair co-occurrence in predictions.

- Prediction co-occurrence of a pair {i, j} = the number of queries whose top-K list holds both.
- Change from a task-specific model to the joint model: delta = c_joint - c_specific, per pair.
- Related pairs come from the *other* task's training data: for search predictions, pairs that
  co-occur in rec sessions (a target and the last `window` items of its history); for rec
  predictions, pairs relevant to the same search query. H2 predicts that the joint model's added
  co-occurrence falls on related pairs more often than their base rate.
- `h2_summary` reports the total positive change, the share of it on related pairs, the share of
  related pairs among all pairs predicted by either model (base rate), and their ratio (lift).
Pairs are encoded as int64 `i * n + j` over item indices (i < j) so counting is a NumPy unique.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from gr_jax.evaluation import metrics as metrics_lib


def _pair_codes(idx: np.ndarray, n: int) -> np.ndarray:
  """All unordered pairs of distinct indices in one list -> int64 codes i * n + j, i < j."""
  idx = np.unique(idx)
  if idx.size < 2:
    return np.zeros([0], np.int64)
  i, j = np.triu_indices(idx.size, k=1)
  return idx[i].astype(np.int64) * n + idx[j]


def prediction_cooccurrence(
  run: Mapping[str, Mapping[str, float]], item_index: Mapping[str, int], k: int = 30
) -> dict[int, int]:
  """Pair code -> number of queries whose top-k lists contain both items."""
  n = len(item_index)
  codes = []
  for scores in run.values():
    top = [item_index[d] for d in metrics_lib.rank_items(scores)[:k] if d in item_index]
    codes.append(_pair_codes(np.asarray(top, np.int64), n))
  if not codes:
    return {}
  u, c = np.unique(np.concatenate(codes), return_counts=True)
  return dict(zip(u.tolist(), c.tolist()))


def session_pairs(
  histories: Sequence[np.ndarray] | np.ndarray,
  targets: np.ndarray,
  num_items: int,
  window: int = 10,
) -> set[int]:
  """Pairs (target, one of the last `window` history items). histories: one item-index array per
  row (`ItemCatalog.histories`), or `[N, L]` item indices padded with -1."""
  codes = []
  for h, t in zip(histories, np.asarray(targets)):
    h = np.asarray(h, np.int64)
    h = h[h >= 0][-window:]
    items = np.concatenate([h, [t]]).astype(np.int64)
    # Only pairs with the target: earlier pairs are the targets of earlier examples already.
    a = np.minimum(items[:-1], t)
    b = np.maximum(items[:-1], t)
    keep = a != b
    codes.append(a[keep] * num_items + b[keep])
  return set(np.concatenate(codes).tolist()) if codes else set()


def query_pairs(query_items: Iterable[Sequence[int]], num_items: int) -> set[int]:
  """Pairs of items relevant to the same query (each element: the item indices of one query)."""
  out: set[int] = set()
  for items in query_items:
    out.update(_pair_codes(np.asarray(list(items), np.int64), num_items).tolist())
  return out


def query_pairs_from_split(arrays: Mapping, num_items: int) -> set[int]:
  """Pairs relevant to the same query in a search split (`query_id`, `target_item`)."""
  groups: dict[int, list[int]] = {}
  for q, t in zip(
    np.asarray(arrays["query_id"]).tolist(), np.asarray(arrays["target_item"]).tolist()
  ):
    groups.setdefault(q, []).append(t)
  return query_pairs(groups.values(), num_items)


def h2_summary(specific: Mapping[int, int], joint: Mapping[int, int], related: set[int]) -> dict:
  """How much of the co-occurrence the joint model adds falls on related pairs."""
  pairs = set(specific) | set(joint)
  delta = {p: joint.get(p, 0) - specific.get(p, 0) for p in pairs}
  pos = {p: d for p, d in delta.items() if d > 0}
  pos_total = float(sum(pos.values()))
  pos_related = float(sum(d for p, d in pos.items() if p in related))
  base_rate = (sum(1 for p in pairs if p in related) / len(pairs)) if pairs else float("nan")
  share = pos_related / pos_total if pos_total > 0 else float("nan")
  rel_pairs = [p for p in pairs if p in related]
  return {
    "pairs": len(pairs),
    "cooc_specific": int(sum(specific.values())),
    "cooc_joint": int(sum(joint.values())),
    "positive_change": pos_total,
    "positive_change_on_related": pos_related,
    "share_on_related": share,
    "related_base_rate": base_rate,
    "lift": share / base_rate
    if base_rate and base_rate == base_rate and base_rate > 0
    else float("nan"),
    "mean_delta_related": float(np.mean([delta[p] for p in rel_pairs]))
    if rel_pairs
    else float("nan"),
    "mean_delta_unrelated": float(np.mean([delta[p] for p in pairs if p not in related]))
    if len(rel_pairs) < len(pairs)
    else float("nan"),
  }


def decode_pair(code: int, num_items: int) -> tuple[int, int]:
  return int(code) // num_items, int(code) % num_items


def related_pairs(dataset, task: str, window: int = 10) -> set[int]:
  """Pairs related in the task *other* than `task`, from its training split (see module doc)."""
  n = dataset.catalog.num_items
  if task == "search":  # rec sessions relate items
    arrays = dataset.split("rec", "train")
    # Either ID scheme: a semantic history item is several code tokens (ItemCatalog.histories).
    hist = dataset.catalog.histories(arrays["encoder_input_ids"])
    return session_pairs(hist, arrays["target_item"], n, window)
  if task == "rec":  # search queries relate items
    return query_pairs_from_split(dataset.split("search", "train"), n)
  raise ValueError(f"task must be 'search' or 'rec', got {task!r}")


def h2_from_runs(
  specific_dirs: Sequence[str],
  joint_dirs: Sequence[str],
  dataset,
  task: str,
  split: str = "test",
  k: int = 30,
  window: int = 10,
) -> dict:
  """H2 summary of the task-specific model vs the joint one, pooled over seeds.

  Seeds are pooled by summing co-occurrence counts over each model's run directories (both models
  should have the same number of seeds so the totals compare).
  """
  import os
  from gr_jax.evaluation import runs as runs_lib

  index = {d: i for i, d in enumerate(dataset.catalog.item_ids)}

  def pooled(dirs):
    total: dict[int, int] = {}
    for d in dirs:
      run = runs_lib.read_run(os.path.join(runs_lib.eval_dir(d, split), f"{task}.run"))
      for p, c in prediction_cooccurrence(run, index, k).items():
        total[p] = total.get(p, 0) + c
    return total

  if len(specific_dirs) != len(joint_dirs):
    raise ValueError(
      f"{len(specific_dirs)} task-specific runs vs {len(joint_dirs)} joint runs; "
      "pooling needs the same number of seeds"
    )
  rel = related_pairs(dataset, task, window)
  out = h2_summary(pooled(specific_dirs), pooled(joint_dirs), rel)
  out.update({"task": task, "k": k, "num_related_pairs": len(rel), "seeds": len(joint_dirs)})
  return out
