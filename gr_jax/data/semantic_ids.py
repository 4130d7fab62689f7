"""Semantic item IDs: item embeddings -> RQ-KMeans code tuples -> a unique token sequence per item.

(Penha et al., RecSys 2025, "Semantic IDs for joint generative search and recommendation".)

Pipeline (`build_semantic_ids`, called by `prepare` when `data.id_scheme == "semantic"`):
  1. Item embeddings `[N, D]` from `data.semantic.embedding`:
       content: TF-IDF of each item's text (its title and the string values of its metadata) reduced
         by truncated SVD (scikit-learn). Item text is catalogue metadata, not interactions, so it
         may inform the IDs of every item without leaking held-out data. Numeric metadata (the
         simulator's latent cluster labels) is not text and is left out, as in the BM25 baseline.
       file: an .npy float array `[num_items, D]` the user brings, rows in catalogue order (the
         `item_ids` order of catalog.json).
       search | rec | joint: bi-encoder embeddings trained on the task(s); not implemented yet.
  2. RQ-KMeans (`rq_kmeans`, JAX): level l clusters the residual left by levels < l into
     `codebook_size` centroids (k-means++ initialisation, Lloyd iterations, optionally a balanced
     assignment that gives every code floor(N/K) or ceil(N/K) items). Deterministic for a seed.
  3. Disambiguation (`disambiguate`): items sharing a full code tuple get a final code 0, 1, ... in
     catalogue order. When any tuple is shared, every item carries that extra code (0 when its
     tuple is unique), so all IDs have the same length and no ID is a prefix of another.
  4. Diagnostics for the manifest (`diagnostics`): codebook use and code entropy per level,
     collision rate, largest collision group.

The catalogue (`ItemCatalog`, id_scheme "semantic") turns codes into tokens: level l, code c is
token `token_offset + l * codebook_size + c`; disambiguation code d is
`token_offset + levels * codebook_size + d`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gr_jax.data.errors import DataError

EMBEDDINGS = ("content", "file", "search", "rec", "joint")
# Embedding sources the issue names but whose bi-encoder training is not built yet.
NOT_IMPLEMENTED = ("search", "rec", "joint")
_SRC = "<config>"


@dataclasses.dataclass
class SemanticIds:
  """Codes of every item: `codes` int32 [N, levels (+1 with disambiguation)]."""
  codes: np.ndarray
  levels: int
  codebook_size: int
  num_disambiguation: int  # 0 = no disambiguation code; else codes[:, -1] < num_disambiguation
  info: dict  # manifest diagnostics

  @property
  def tokens_per_item(self) -> int:
    return self.levels + (1 if self.num_disambiguation else 0)

  @property
  def num_id_tokens(self) -> int:
    return self.levels * self.codebook_size + self.num_disambiguation


# ---------------------------------------------------------------------------------- embeddings
def item_text(title: str, metadata: Mapping[str, Any]) -> str:
  """An item's content text: its title, then the string values of its metadata in key order."""
  parts = [str(title or "")]
  for key in sorted(metadata or {}):
    v = metadata[key]
    if isinstance(v, str):
      parts.append(v)
    elif isinstance(v, (list, tuple)):
      parts.extend(x for x in v if isinstance(x, str))
  return " ".join(p for p in parts if p)


def content_embeddings(texts: Sequence[str], dim: int, seed: int) -> tuple[np.ndarray, dict]:
  """TF-IDF of `texts` reduced by truncated SVD: float32 [N, d] with d <= dim, and its info."""
  # pylint: disable=g-import-not-at-top
  from sklearn.decomposition import TruncatedSVD
  from sklearn.feature_extraction.text import TfidfVectorizer
  if int(dim) < 1:
    raise DataError(_SRC, 0, "data.semantic.content_dim", f"must be >= 1, got {dim}")
  # One-character words count: simulated and real titles hold short tokens (years, "ii", ...).
  vec = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b", lowercase=True, sublinear_tf=True)
  try:
    tfidf = vec.fit_transform(list(texts))  # sparse [N, W]
  except ValueError:
    raise DataError(_SRC, 0, "data.semantic.embedding",
                    "content: no item has any text (titles or string metadata); use "
                    "embedding='file' for this dataset") from None
  n, w = tfidf.shape
  # TruncatedSVD needs fewer components than features (and than rows to be meaningful).
  d = min(int(dim), w - 1, n - 1)
  if d < 1:
    raise DataError(_SRC, 0, "data.semantic.embedding",
                    f"content: {n} items and {w} distinct words leave no SVD dimension")
  svd = TruncatedSVD(n_components=d, algorithm="randomized", n_iter=7, random_state=int(seed))
  emb = svd.fit_transform(tfidf).astype(np.float32)  # [N, d]
  empty = int((tfidf.getnnz(axis=1) == 0).sum())
  info = {"tfidf_words": int(w), "dim": int(d), "items_without_text": empty,
          "svd_explained_variance": float(svd.explained_variance_ratio_.sum())}
  return emb, info


def file_embeddings(path: str, num_items: int) -> tuple[np.ndarray, dict]:
  """A user's .npy of item embeddings, float [num_items, D] in catalogue order."""
  if not path:
    raise DataError(_SRC, 0, "data.semantic.embedding_file",
                    "embedding='file' needs the path of an .npy array [num_items, dim]")
  if not os.path.isfile(path):
    raise DataError(path, 0, "data.semantic.embedding_file", "file does not exist")
  try:
    emb = np.load(path, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise DataError(path, 0, "data.semantic.embedding_file",
                    f"not a NumPy .npy array ({e})") from None
  if emb.ndim != 2 or emb.shape[0] != num_items or emb.shape[1] < 1:
    raise DataError(path, 0, "data.semantic.embedding_file",
                    f"expected shape [num_items={num_items}, dim] (rows in catalogue order, the "
                    f"item_ids of catalog.json), got {list(emb.shape)}")
  if not np.issubdtype(emb.dtype, np.number) or not np.isfinite(emb).all():
    raise DataError(path, 0, "data.semantic.embedding_file", "expected finite numbers")
  with open(path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  return emb.astype(np.float32), {"dim": int(emb.shape[1]), "file": os.path.abspath(path),
                                  "sha256": digest}


def item_embeddings(sc, titles: Sequence[str], metadata: Sequence[Mapping[str, Any]]
                    ) -> tuple[np.ndarray, dict]:
  """float32 [N, D] embeddings of the catalogue's items from `data.semantic` (`sc`)."""
  kind = str(sc.embedding)
  if kind in NOT_IMPLEMENTED:
    raise NotImplementedError(
        f"data.semantic.embedding={kind!r}: bi-encoder embeddings trained on the {kind} task(s) "
        "are not implemented yet; use 'content' (TF-IDF + SVD of item text) or 'file' (an .npy "
        "of item embeddings in catalogue order)")
  if kind == "content":
    texts = [item_text(t, m) for t, m in zip(titles, metadata)]
    return content_embeddings(texts, int(sc.content_dim), int(sc.seed))
  if kind == "file":
    return file_embeddings(str(sc.embedding_file), len(titles))
  raise DataError(_SRC, 0, "data.semantic.embedding", f"expected one of {EMBEDDINGS}, got {kind!r}")


# ---------------------------------------------------------------------------------- k-means (JAX)
def _sq_dists(x: jax.Array, c: jax.Array) -> jax.Array:
  """Squared Euclidean distances x [N, D] to c [K, D] -> [N, K]."""
  # HIGHEST: no TF32/bf16 passes on accelerators, so assignments do not depend on the backend.
  cross = jnp.matmul(x, c.T, precision=jax.lax.Precision.HIGHEST)  # [N, K]
  d = jnp.sum(x * x, 1)[:, None] - 2.0 * cross + jnp.sum(c * c, 1)[None, :]
  return jnp.maximum(d, 0.0)


@functools.partial(jax.jit, static_argnames=("k",))
def kmeans_plus_plus(x: jax.Array, key: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """k-means++ seeding (Arthur & Vassilvitskii 2007): x [N, D] -> (centroids [k, D], rows [k]).

  The first centroid is a uniform row; each next one a row drawn with probability proportional to
  its squared distance to the nearest centroid chosen so far.
  """
  n, d = x.shape
  key, sub = jax.random.split(key)
  first = jax.random.randint(sub, (), 0, n)
  rows = jnp.zeros((k,), jnp.int32).at[0].set(first)
  cent = jnp.zeros((k, d), x.dtype).at[0].set(x[first])
  d2 = jnp.sum((x - x[first]) ** 2, 1)  # [N] distance to the nearest chosen centroid

  def body(i, carry):
    cent, rows, d2, key = carry
    key, sub = jax.random.split(key)
    # log(0) = -inf: chosen rows (and exact duplicates) are never drawn again while others remain;
    # if every row coincides with a centroid, draw uniformly.
    logits = jnp.where(jnp.sum(d2) > 0, jnp.log(d2), jnp.zeros_like(d2))
    r = jax.random.categorical(sub, logits).astype(jnp.int32)
    cent = cent.at[i].set(x[r])
    rows = rows.at[i].set(r)
    d2 = jnp.minimum(d2, jnp.sum((x - x[r]) ** 2, 1))
    return cent, rows, d2, key

  cent, rows, _, _ = jax.lax.fori_loop(1, k, body, (cent, rows, d2, key))
  return cent, rows


def balanced_assignment(dists: jax.Array) -> jax.Array:
  """Capacity-constrained assignment: dists [N, K] -> cluster [N] with sizes floor/ceil(N/K).

  Greedy: points whose nearest cluster beats their second nearest by the widest margin choose
  first (they lose most by being moved); each takes its nearest cluster with room left. Every
  cluster may hold ceil(N/K) until N mod K of them do, then the rest stop at floor(N/K), so the
  sizes are exactly N mod K clusters of ceil(N/K) and the others floor(N/K).
  """
  n, k = dists.shape
  lo, extra = n // k, n % k
  srt = jnp.sort(dists, axis=1)
  margin = (srt[:, 1] - srt[:, 0]) if k > 1 else jnp.zeros((n,), dists.dtype)
  order = jnp.argsort(-margin, stable=True)  # [N]

  def body(i, carry):
    assign, sizes, n_big = carry
    p = order[i]
    cap = jnp.where(n_big >= extra, lo, lo + 1)
    j = jnp.argmin(jnp.where(sizes < cap, dists[p], jnp.inf)).astype(jnp.int32)
    sizes = sizes.at[j].add(1)
    n_big = n_big + (sizes[j] == lo + 1).astype(jnp.int32)
    return assign.at[p].set(j), sizes, n_big

  init = (jnp.zeros((n,), jnp.int32), jnp.zeros((k,), jnp.int32), jnp.int32(0))
  assign, _, _ = jax.lax.fori_loop(0, n, body, init)
  return assign


def _assign(x, cent, balanced: bool):
  dists = _sq_dists(x, cent)  # [N, K]
  return balanced_assignment(dists) if balanced else jnp.argmin(dists, 1).astype(jnp.int32)


def _update(x, assign, cent):
  """Means of the clusters; an empty cluster is re-seeded with a far-off point."""
  k = cent.shape[0]
  # One-hot matmul rather than a scatter-add: float scatters are not deterministic on GPU.
  onehot = jax.nn.one_hot(assign, k, dtype=x.dtype)  # [N, K]
  sums = jnp.matmul(onehot.T, x, precision=jax.lax.Precision.HIGHEST)  # [K, D]
  counts = jnp.sum(onehot, 0)  # [K]
  means = sums / jnp.maximum(counts, 1.0)[:, None]
  empty = counts == 0
  # Re-seed empty clusters with the points farthest from their centroid (largest error first),
  # so no code stays dead; a fixed rule keeps the run deterministic.
  err = jnp.sum((x - cent[assign]) ** 2, 1)  # [N]
  far = jnp.argsort(-err, stable=True)  # [N]
  rank = jnp.cumsum(empty) - 1  # [K] index of each empty cluster among the empty ones
  reseed = x[far[jnp.clip(rank, 0, x.shape[0] - 1)]]  # [K, D]
  return jnp.where(empty[:, None], reseed, means)


@functools.partial(jax.jit, static_argnames=("k", "iters", "balanced"))
def kmeans(x: jax.Array, key: jax.Array, *, k: int, iters: int, balanced: bool = False
           ) -> tuple[jax.Array, jax.Array]:
  """k-means++ then `iters` Lloyd steps: x [N, D] -> (centroids [k, D], assignment [N])."""
  cent, _ = kmeans_plus_plus(x, key, k)

  def step(_, cent):
    return _update(x, _assign(x, cent, balanced), cent)

  cent = jax.lax.fori_loop(0, iters, step, cent)
  return cent, _assign(x, cent, balanced)


@dataclasses.dataclass
class RQResult:
  codes: np.ndarray  # int32 [N, L]
  codebooks: np.ndarray  # float32 [L, K, D]
  residual_mse: list  # L + 1 values: mean squared norm of the residual before level 0, after each


def rq_kmeans(x, *, levels: int, codebook_size: int, seed: int = 0, iters: int = 50,
              balanced: bool = False) -> RQResult:
  """Residual-quantisation k-means: level l clusters what levels < l left unexplained."""
  x = jnp.asarray(np.asarray(x, np.float32))
  if x.ndim != 2:
    raise ValueError(f"rq_kmeans: expected embeddings [N, D], got shape {tuple(x.shape)}")
  n = int(x.shape[0])
  if int(levels) < 1 or int(codebook_size) < 2 or int(iters) < 0:
    raise DataError(_SRC, 0, "data.semantic", f"need levels >= 1, codebook_size >= 2 and "
                    f"kmeans_iters >= 0, got {levels}, {codebook_size}, {iters}")
  if int(codebook_size) > n:
    raise DataError(_SRC, 0, "data.semantic.codebook_size",
                    f"{codebook_size} codes per level but only {n} items: every code needs an "
                    "item; lower data.semantic.codebook_size")
  key = jax.random.PRNGKey(int(seed))
  resid = x
  codes, books = [], []
  mse = [float(jnp.mean(jnp.sum(resid * resid, 1)))]
  for level in range(int(levels)):
    cent, assign = kmeans(resid, jax.random.fold_in(key, level), k=int(codebook_size),
                          iters=int(iters), balanced=bool(balanced))
    resid = resid - cent[assign]  # [N, D]
    codes.append(np.asarray(assign, np.int32))
    books.append(np.asarray(cent, np.float32))
    mse.append(float(jnp.mean(jnp.sum(resid * resid, 1))))
  return RQResult(np.stack(codes, 1), np.stack(books, 0), mse)


# ---------------------------------------------------------------------------------- IDs
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


def build_semantic_ids(sc, titles: Sequence[str], metadata: Sequence[Mapping[str, Any]]
                       ) -> SemanticIds:
  """Embeds, quantises and disambiguates the catalogue's items (`sc` = config.data.semantic)."""
  emb, emb_info = item_embeddings(sc, titles, metadata)
  if bool(sc.get("normalize", True)):
    # Cosine geometry: k-means on unit vectors clusters by direction, not by text length.
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
  levels, k = int(sc.levels), int(sc.codebook_size)
  rq = rq_kmeans(emb, levels=levels, codebook_size=k, seed=int(sc.seed),
                 iters=int(sc.kmeans_iters), balanced=bool(sc.balanced))
  diag = diagnostics(rq.codes, k)
  dis = disambiguate(rq.codes)
  num_dis = int(dis.max()) + 1 if len(dis) and dis.max() > 0 else 0
  codes = np.concatenate([rq.codes, dis[:, None]], 1) if num_dis else rq.codes
  info = {
      "embedding": str(sc.embedding), "embedding_info": emb_info,
      "normalize": bool(sc.get("normalize", True)), "levels": levels, "codebook_size": k,
      "balanced": bool(sc.balanced), "kmeans_iters": int(sc.kmeans_iters), "seed": int(sc.seed),
      "residual_mse": rq.residual_mse, **diag,
      "num_disambiguation": num_dis, "tokens_per_item": int(codes.shape[1]),
      "num_id_tokens": levels * k + num_dis,
  }
  return SemanticIds(codes.astype(np.int32), levels, k, num_dis, info)
