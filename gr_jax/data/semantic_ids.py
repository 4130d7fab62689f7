"""Semantic item IDs: item embeddings -> RQ-KMeans code tuples -> a unique token sequence per item.

(Penha et al., RecSys 2025, "Semantic IDs for joint generative search and recommendation".)

Pipeline (`build_semantic_ids`, called by `prepare` when `data.id_scheme == "semantic"`):
  1. Item embeddings `[N, D]` from `data.semantic.embedding` (gr_jax/data/item_embeddings.py):
     content (TF-IDF + SVD of item text), file (the user's .npy), or search | rec | joint (a
     bi-encoder's item vectors, written by `python -m gr_jax.embed_items` and read as a file:
     prepare trains no model). Rows in catalogue order (the `item_ids` order of catalog.json).
  2. RQ-KMeans (gr_jax/data/rq_kmeans.py, JAX): level l clusters the residual left by levels < l
     into `codebook_size` centroids. Deterministic for a seed.
  3. Disambiguation (`disambiguate`): items sharing a full code tuple get a final code 0, 1, ... in
     catalogue order. When any tuple is shared, every item carries that extra code (0 when its
     tuple is unique), so all IDs have the same length and no ID is a prefix of another.
  4. Diagnostics for the manifest (`diagnostics`): codebook use and code entropy per level,
     collision rate, largest collision group.

The catalogue (`ItemCatalog`, id_scheme "semantic") turns codes into tokens: level l, code c is
token `token_offset + l * codebook_size + c`; disambiguation code d is
`token_offset + levels * codebook_size + d`.

Cold start (items added after training): prepare stores the quantiser beside catalog.json
(`gr_jax.data.cold_start`: the codebooks and, for content embeddings, the fitted text -> vector
map), and `python -m gr_jax.add_items` gives a new item the residual-nearest code per level and the
smallest free disambiguation code of its tuple, with the trained tokens only.
`data.semantic.reserve_disambiguation` = R keeps R spare codes per tuple at prepare
(num_disambiguation = largest collision group + R, and every ID then carries the code); R = 0, the
default, leaves every ID as it was.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from gr_jax.data.errors import DataError
from gr_jax.data.item_embeddings import ContentEmbedder, embed_catalogue, normalize_rows
from gr_jax.data.rq_kmeans import check_quantiser, rq_kmeans

log = logging.getLogger(__name__)

_SRC = "<config>"


@dataclasses.dataclass
class SemanticIds:
  """Codes of every item: `codes` int32 [N, levels (+1 with disambiguation)]."""

  codes: np.ndarray
  levels: int
  codebook_size: int
  num_disambiguation: int  # 0 = no disambiguation code; else codes[:, -1] < num_disambiguation
  info: dict  # manifest diagnostics
  # What cold start (`cold_start.ColdStartModel`) needs to give a new item an ID: the RQ-KMeans
  # centroids float32 [levels, K, D] and, for content embeddings, the fitted text -> vector map.
  codebooks: np.ndarray | None = None
  content: "ContentEmbedder | None" = None

  @property
  def tokens_per_item(self) -> int:
    return self.levels + (1 if self.num_disambiguation else 0)

  @property
  def num_id_tokens(self) -> int:
    return self.levels * self.codebook_size + self.num_disambiguation


# data.semantic.codebook_size = 0 ("auto"): the codebook follows the catalogue (codebook_size_for).
AUTO_CODEBOOK_MAX = 256


def codebook_size_for(n: int, levels: int, codebook_size: int) -> int:
  """Codes per level for `n` items: `codebook_size` itself when set (> 0, or < 0 for the error),
  else ("auto", 0) the smallest power of two K with K ** levels >= n, within [2, min(256, n)]:
  just enough code tuples for one per item before disambiguation (78 items, 3 levels: 8)."""
  if int(codebook_size) != 0:
    return int(codebook_size)
  k = 2
  while k < AUTO_CODEBOOK_MAX and k ** max(1, int(levels)) < int(n):
    k *= 2
  return max(2, min(k, int(n)))  # fewer than 2 items: check_quantiser refuses with its message


def disambiguate(codes: np.ndarray) -> np.ndarray:
  """Final code per item [N]: its rank, in catalogue order, among items with its code tuple."""
  codes = np.asarray(codes)
  if len(codes) == 0:
    return np.zeros(0, np.int32)
  _, inv = np.unique(codes, axis=0, return_inverse=True)
  inv = inv.reshape(-1)
  order = np.argsort(inv, kind="stable")  # grouped by tuple, catalogue order within a group
  sorted_inv = inv[order]
  start = np.searchsorted(sorted_inv, sorted_inv, side="left")
  rank = np.empty(len(codes), np.int64)
  rank[order] = np.arange(len(codes)) - start
  return rank.astype(np.int32)


def _entropy_bits(counts: np.ndarray) -> float:
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log2(p)).sum()) if len(p) else 0.0


def diagnostics(codes: np.ndarray, codebook_size: int) -> dict:
  """What the field checks of a semantic ID assignment (codes int [N, L], before disambiguation).

  codebook_use: per level, share of the K codes used by at least one item;
  code_entropy_bits: per level, entropy of the code distribution over items (max log2 K);
  collision_rate: share of items whose full code tuple another item has too;
  largest_collision_group: most items sharing one tuple (1 = all tuples unique).
  """
  codes = np.asarray(codes)
  n, levels = codes.shape
  k = int(codebook_size)
  counts = [np.bincount(codes[:, l], minlength=k) for l in range(levels)]
  _, group = np.unique(codes, axis=0, return_counts=True)
  shared = group[group > 1]
  return {
    "codes_used": [int((c > 0).sum()) for c in counts],
    "codebook_use": [float((c > 0).sum() / k) for c in counts],
    "code_entropy_bits": [_entropy_bits(c) for c in counts],
    "code_entropy_normalized": [_entropy_bits(c) / math.log2(k) for c in counts],
    "distinct_tuples": int(len(group)),
    "colliding_tuples": int(len(shared)),
    "collision_rate": float(shared.sum() / n) if n else 0.0,
    "largest_collision_group": int(group.max()) if n else 0,
    "tuple_entropy_bits": _entropy_bits(group),
  }


def build_semantic_ids(
  sc,
  titles: Sequence[str],
  metadata: Sequence[Mapping[str, Any]],
  *,
  item_ids: Sequence[str] | None = None,
  embedder: Callable[[Sequence[str]], tuple[np.ndarray, dict]] | None = None,
) -> SemanticIds:
  """Embeds, quantises and disambiguates the catalogue's items (`sc` = config.data.semantic;
  `item_ids` and `embedder`: bi-encoder kinds, see `item_embeddings`)."""
  k = codebook_size_for(len(titles), int(sc.levels), int(sc.codebook_size))
  auto = int(sc.codebook_size) == 0
  if auto:
    log.info(
      "semantic IDs: data.semantic.codebook_size=0 (auto): %d codes per level for %d items and "
      "%d levels",
      k,
      len(titles),
      int(sc.levels),
    )
  # Before the embeddings: a bad setting stops before any text is fitted or file read.
  check_quantiser(len(titles), levels=int(sc.levels), codebook_size=k, iters=int(sc.kmeans_iters))
  reserve = int(sc.get("reserve_disambiguation", 0))
  if reserve < 0:
    raise DataError(
      _SRC, 0, "data.semantic.reserve_disambiguation", f"expected >= 0, got {reserve}"
    )
  emb, emb_info, content = embed_catalogue(
    sc, titles, metadata, item_ids=item_ids, embedder=embedder
  )
  if bool(sc.get("normalize", True)):
    emb = normalize_rows(emb)
  levels = int(sc.levels)
  cap = int(sc.get("max_points_per_code", 0))
  rq = rq_kmeans(
    emb,
    levels=levels,
    codebook_size=k,
    seed=int(sc.seed),
    iters=int(sc.kmeans_iters),
    balanced=bool(sc.balanced),
    max_points_per_code=cap,
  )
  diag = diagnostics(rq.codes, k)
  dis = disambiguate(rq.codes)
  num_dis = int(dis.max()) + 1 if len(dis) and dis.max() > 0 else 0
  if reserve:
    # Spare disambiguation codes for cold start (gr_jax.data.cold_start): a later item whose tuple
    # is taken gets the next free one without a new token; every item then carries the column.
    num_dis = max(num_dis, 1) + reserve
  codes = np.concatenate([rq.codes, dis[:, None]], 1) if num_dis else rq.codes
  info = {
    "embedding": str(sc.embedding),
    "embedding_info": emb_info,
    "normalize": bool(sc.get("normalize", True)),
    "levels": levels,
    "codebook_size": k,
    # Only for auto: a dataset with a set codebook_size keeps its manifest as before.
    **({"codebook_size_auto": True} if auto else {}),
    "balanced": bool(sc.balanced),
    "kmeans_iters": int(sc.kmeans_iters),
    "max_points_per_code": cap,
    "fit_items": rq.fit_items,
    "seed": int(sc.seed),
    "residual_mse": rq.residual_mse,
    **diag,
    "num_disambiguation": num_dis,
    "reserve_disambiguation": reserve,
    "tokens_per_item": int(codes.shape[1]),
    "num_id_tokens": levels * k + num_dis,
  }
  return SemanticIds(
    codes.astype(np.int32), levels, k, num_dis, info, codebooks=rq.codebooks, content=content
  )
