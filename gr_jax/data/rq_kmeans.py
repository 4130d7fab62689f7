"""RQ-KMeans in JAX: the k-means kernel behind semantic IDs (`gr_jax.data.semantic_ids`).

`rq_kmeans` quantises item embeddings [N, D] level by level: level l clusters the residual left by
levels < l into `codebook_size` centroids (k-means++ initialisation, Lloyd iterations, optionally a
balanced assignment that gives every code floor(N/K) or ceil(N/K) items). Deterministic for a seed.
Large catalogues fit on a seeded sample per level (`fit_rows`) and run Lloyd steps on row blocks
(`CHUNK_ENTRIES`). `quantise` gives new rows their codes under fitted codebooks with the same
assignment arithmetic (cold start, `gr_jax.data.cold_start`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from gr_jax.data.errors import DataError

_SRC = "<config>"


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


# Above this many [N, K] distance entries (64 MB of float32), plain k-means works on row blocks:
# the one-piece [N, K] distances and one-hot matrices would be 10 GB each at 10M items x 256 codes.
# Up to it (65,536 items at 256 codes per level; every test) the one-piece path runs unchanged, so
# those codes stay bit for bit what they were. Above it centroid sums are added block by block,
# a different float order: codes equal the one-piece path's except for near-ties. Balanced
# assignment keeps the one-piece path (its greedy pass is sequential over all N anyway).
CHUNK_ENTRIES = 1 << 24


def _row_block(n: int, k: int) -> int:
  """Rows per block of the blocked Lloyd step; n = one block (the one-piece path)."""
  return n if n * k <= CHUNK_ENTRIES else max(1, CHUNK_ENTRIES // k)


def _assign_sums_blocked(x, cent, rows: int):
  """Nearest centroid of every row, and the per-cluster sums and counts, in blocks of `rows`.

  One pass over x per Lloyd step. The last block is clamped to end at row N (dynamic_slice would
  clamp it anyway); rows it shares with the previous block get their (identical) assignment
  written twice but are counted once.
  """
  n, d = x.shape
  k = cent.shape[0]

  def body(i, carry):
    assign, sums, counts = carry
    start = i * rows
    lo = jnp.minimum(start, n - rows)
    xb = jax.lax.dynamic_slice_in_dim(x, lo, rows)  # [rows, D]
    a = jnp.argmin(_sq_dists(xb, cent), 1).astype(jnp.int32)
    fresh = (lo + jnp.arange(rows)) >= start  # [rows] not counted by an earlier block
    # One-hot matmul, as `_update`: no float scatter-add (not deterministic on GPU).
    onehot = jax.nn.one_hot(a, k, dtype=x.dtype) * fresh[:, None].astype(x.dtype)
    sums = sums + jnp.matmul(onehot.T, xb, precision=jax.lax.Precision.HIGHEST)
    counts = counts + jnp.sum(onehot, 0)
    return jax.lax.dynamic_update_slice_in_dim(assign, a, lo, 0), sums, counts

  init = (jnp.zeros((n,), jnp.int32), jnp.zeros((k, d), x.dtype), jnp.zeros((k,), x.dtype))
  return jax.lax.fori_loop(0, -(-n // rows), body, init)


def _update_blocked(x, cent, rows: int):
  """`_update(x, _assign(x, cent, False), cent)` without [N, K] intermediates."""
  assign, sums, counts = _assign_sums_blocked(x, cent, rows)
  means = sums / jnp.maximum(counts, 1.0)[:, None]
  empty = counts == 0

  def reseed(means):
    # `_update`'s rule (farthest points first); the [N] sort runs only when a cluster emptied.
    err = jnp.sum((x - cent[assign]) ** 2, 1)  # [N]
    far = jnp.argsort(-err, stable=True)
    rank = jnp.cumsum(empty) - 1
    return jnp.where(empty[:, None], x[far[jnp.clip(rank, 0, x.shape[0] - 1)]], means)

  return jax.lax.cond(jnp.any(empty), reseed, lambda m: m, means)


@functools.partial(jax.jit, static_argnames=("k", "iters", "balanced"))
def kmeans(
  x: jax.Array, key: jax.Array, *, k: int, iters: int, balanced: bool = False
) -> tuple[jax.Array, jax.Array]:
  """k-means++ then `iters` Lloyd steps: x [N, D] -> (centroids [k, D], assignment [N])."""
  cent, _ = kmeans_plus_plus(x, key, k)
  rows = _row_block(int(x.shape[0]), k)
  if rows < x.shape[0] and not balanced:  # large catalogue: row blocks (see CHUNK_ENTRIES)
    cent = jax.lax.fori_loop(0, iters, lambda _, c: _update_blocked(x, c, rows), cent)
    return cent, _nearest(x, cent)

  def step(_, cent):
    return _update(x, _assign(x, cent, balanced), cent)

  cent = jax.lax.fori_loop(0, iters, step, cent)
  return cent, _assign(x, cent, balanced)


def check_quantiser(n: int, *, levels: int, codebook_size: int, iters: int) -> None:
  """DataError naming the knob unless RQ-KMeans can quantise `n` items with these settings."""
  if int(levels) < 1 or int(codebook_size) < 2 or int(iters) < 0:
    raise DataError(
      _SRC,
      0,
      "data.semantic",
      f"need levels >= 1, codebook_size >= 2 and "
      f"kmeans_iters >= 0, got {levels}, {codebook_size}, {iters}",
    )
  if int(codebook_size) > n:
    raise DataError(
      _SRC,
      0,
      "data.semantic.codebook_size",
      f"{codebook_size} codes per level but only {n} items: every code needs an "
      "item; lower data.semantic.codebook_size",
    )


# Jitted so that XLA fuses the gather into the subtraction: op by op, `cent[assign]` is one more
# [N, D] array (5 GB at 10M x 128). Same arithmetic per element, so the same values.
@jax.jit
def _subtract_codes(resid, cent, assign):
  return resid - cent[assign]


@jax.jit
def _mean_sq_norm_fused(resid):
  return jnp.mean(jnp.sum(resid * resid, 1))


def _mean_sq_norm(resid, codebook_size: int):
  # Fusing changes the float reduction order: only large catalogues (the blocked path) take it,
  # so smaller ones keep their recorded residual_mse bit for bit.
  if _row_block(int(resid.shape[0]), codebook_size) < resid.shape[0]:
    return _mean_sq_norm_fused(resid)
  return jnp.mean(jnp.sum(resid * resid, 1))


@dataclasses.dataclass
class RQResult:
  codes: np.ndarray  # int32 [N, L]
  codebooks: np.ndarray  # float32 [L, K, D]
  residual_mse: list  # L + 1 values: mean squared norm of the residual before level 0, after each
  fit_items: int  # rows each level's k-means fitted on (N, or the `fit_rows` sample)


def _nearest(x, cent) -> jax.Array:
  """Nearest centroid of every row of x (row blocks for large x, as the blocked Lloyd step)."""
  n, k = int(x.shape[0]), int(cent.shape[0])
  rows = _row_block(n, k)
  if rows < n:
    return _assign_sums_blocked(x, cent, rows)[0]
  return _assign(x, cent, False)


def fit_rows(n: int, codebook_size: int, max_points_per_code: int, seed: int) -> np.ndarray | None:
  """The rows each level's k-means fits on: all (None) up to max_points_per_code x codebook_size
  items, else that many rows drawn without replacement (a function of the seed), sorted.

  FAISS trains its k-means the same way (`max_points_per_centroid`, 256 by default): centroids
  from 256 points each are as good as from all of them, and the fit then costs the same for 100k
  or 10M items; every item is still assigned to its nearest code."""
  m = int(max_points_per_code) * int(codebook_size)
  if int(max_points_per_code) <= 0 or n <= m:
    return None
  rng = np.random.default_rng([int(seed), 0x5EED])
  return np.sort(rng.choice(n, size=m, replace=False)).astype(np.int32)


def rq_kmeans(
  x,
  *,
  levels: int,
  codebook_size: int,
  seed: int = 0,
  iters: int = 50,
  balanced: bool = False,
  max_points_per_code: int = 0,
) -> RQResult:
  """Residual-quantisation k-means: level l clusters what levels < l left unexplained.

  max_points_per_code > 0: each level fits its centroids on at most that many rows per code
  (`fit_rows`; the same rows at every level), then assigns every row to its nearest centroid.
  Balanced assignment needs every row in the fit, so it ignores the cap."""
  if not (isinstance(x, jax.Array) and x.dtype == jnp.float32):
    # A float32 jax.Array is used as is: no second [N, D] copy through the host.
    x = jnp.asarray(np.asarray(x, np.float32))
  if x.ndim != 2:
    raise ValueError(f"rq_kmeans: expected embeddings [N, D], got shape {tuple(x.shape)}")
  n = int(x.shape[0])
  check_quantiser(n, levels=levels, codebook_size=codebook_size, iters=iters)
  key = jax.random.PRNGKey(int(seed))
  resid = x
  del x  # at 10M x 128 each [N, D] copy is 5 GB: keep only the current residual alive
  codes, books = [], []
  sample = None if balanced else fit_rows(n, codebook_size, max_points_per_code, seed)
  mse = [float(_mean_sq_norm(resid, codebook_size))]
  for level in range(int(levels)):
    cent, assign = kmeans(
      resid if sample is None else resid[sample],
      jax.random.fold_in(key, level),
      k=int(codebook_size),
      iters=int(iters),
      balanced=bool(balanced),
    )
    if sample is not None:
      assign = _nearest(resid, cent)
    resid = _subtract_codes(resid, cent, assign)  # [N, D]
    codes.append(np.asarray(assign, np.int32))
    books.append(np.asarray(cent, np.float32))
    mse.append(float(_mean_sq_norm(resid, codebook_size)))
  fit_items = n if sample is None else len(sample)
  return RQResult(np.stack(codes, 1), np.stack(books, 0), mse, fit_items)


def quantise(codebooks: np.ndarray, x) -> tuple[np.ndarray, np.ndarray]:
  """Residual nearest-centroid codes of x [M, D] under fitted codebooks [L, K, D]: int32 [M, L],
  and the squared norm of each row's final residual float32 [M].

  rq_kmeans's assignment step, with its arithmetic (`_nearest`, `_subtract_codes`): level l takes
  the centroid nearest to what levels < l left. Re-quantising the rows rq_kmeans fitted gives
  their codes (up to float ties), unless the fit was balanced: balanced codes are not nearest."""
  books = np.asarray(codebooks, np.float32)
  x = np.asarray(x, np.float32)
  if books.ndim != 3 or x.ndim != 2 or x.shape[1] != books.shape[2]:
    raise ValueError(
      f"quantise: expected codebooks [L, K, D] and x [M, D], got {books.shape} and {x.shape}"
    )
  resid = jnp.asarray(x)
  codes = []
  for level in range(books.shape[0]):
    cent = jnp.asarray(books[level])  # [K, D]
    assign = _nearest(resid, cent) if len(x) else jnp.zeros((0,), jnp.int32)
    resid = _subtract_codes(resid, cent, assign)  # [M, D]
    codes.append(np.asarray(assign, np.int32))
  err = np.asarray(jnp.sum(resid * resid, 1), np.float32)
  return np.stack(codes, 1).reshape(len(x), books.shape[0]), err
