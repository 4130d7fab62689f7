"""Cold start: items added after training get semantic IDs without retraining.

The quantiser (`COLD_START_FILE`, written by prepare beside catalog.json for every semantic
dataset; `cold_start_arrays`): the RQ-KMeans codebooks [levels, K, D], the embedding kind, the
normalisation flag and, for content embeddings, the fitted TF-IDF vocabulary, idf and SVD
components as plain arrays (no pickle). `ColdStartModel` reads it back; a new item is embedded as
the catalogue was (content: its text through `ContentEmbedder.embed`, NumPy; file: the user's
vector; search | rec | joint are refused, a new item has no trained bi-encoder vector), and
`cold_start_codes` gives it the residual-nearest code per level (`rq_kmeans.quantise`, the
assignment arithmetic of RQ-KMeans) and the smallest disambiguation code its tuple does not use
yet. No token is added: the model's ID vocabulary (levels x codebook_size + num_disambiguation)
stays the one it was trained with, so a new item on a tuple whose disambiguation codes are all
taken (or on any taken tuple when the catalogue has no disambiguation code) cannot get a distinct
ID: a DataError saying so. `data.semantic.reserve_disambiguation` = R keeps R spare codes per tuple
at prepare. A new item's disambiguation code beyond its tuple's prepared ones was never a training
target after that prefix, so a trained model gives it little probability: cold start makes the
item decodable, under the prefix its content chose, not as likely as a trained item.

`add_items(dataset_dir, items_path, out_dir, embeddings_path=None)` (the library behind
`python -m gr_jax.add_items`) reads a processed semantic-ID dataset and a JSON-lines file of new
items and writes a NEW processed dataset directory whose catalogue is the old one with the new
items appended:
  1. the dataset is verified (sha256 of every file against its manifest) and its quantiser read
     from `COLD_START_FILE`, which prepare writes for every semantic dataset: the
     RQ-KMeans codebooks, the normalisation flag and, for content embeddings, the fitted TF-IDF +
     SVD map as plain arrays;
  2. each new item is embedded as prepare embedded the catalogue: content -- its text (title, then
     the string values of its other fields, `item_embeddings.item_text`) through the stored map;
     file -- its row of the user's .npy (`embeddings_path`, rows in the items file's order, the
     catalogue's dimension). Bi-encoder embeddings (search | rec | joint) are refused: their item
     vectors were trained per catalogue item, and a new item has none;
  3. `cold_start_codes` gives each one the residual-nearest code per level (the
     arithmetic of rq_kmeans's assignment) and the next free disambiguation code of its tuple.
     Only the tokens the model already has are used (the ID vocabulary, levels x codebook_size +
     num_disambiguation, is unchanged), so a tuple whose disambiguation codes are all taken is a
     DataError naming the item's line (prepare with data.semantic.reserve_disambiguation > 0 to
     keep spare codes);
  4. the new directory gets every file of the old one unchanged (tokenizer, splits, quantiser)
     except catalog.json (old items keep their indices and codes; new items follow, in file
     order) and manifest.json: the old manifest with `num_items`, the sha256 `files` and a
     `cold_start` list (one entry per add_items run: base dataset and its manifest's sha256, the
     input files and their sha256, the new item ids, their first index, how many joined a tuple of
     an existing item). It is written to `.<name>.tmp-<pid>-*` beside `out_dir` and renamed into
     place, so an interrupted run leaves no directory that looks complete; the old dataset is only
     read.
The manifest keeps the old `config_hash`: the IDs come from that data config's quantiser, and a
checkpoint trained on the old dataset is evaluated on the new one by pointing its run config at
it (`python -m gr_jax.evaluate --workdir RUN --config.data.processed_dir=OUT`): the decoder's prefix
trie, built from the catalogue, then holds the new items too. Running again with the same inputs
and output is a no-op; an output directory holding anything else is an error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import uuid
from typing import Any, Mapping, Sequence

import numpy as np

from gr_jax.data import item_embeddings
from gr_jax.data.catalog import ItemCatalog
from gr_jax.data.errors import BadRows, DataError
from gr_jax.data.item_embeddings import BIENCODER_TASKS, ContentEmbedder, item_text, normalize_rows
from gr_jax.data.rq_kmeans import quantise
from gr_jax.data.semantic_ids import SemanticIds

log = logging.getLogger(__name__)


# What prepare stores beside catalog.json (semantic datasets only) so that an item added after
# training gets an ID from its embedding with the trained tokens (`add_items`, below).
COLD_START_FILE = "semantic_ids.npz"
COLD_START_FORMAT = 1
# Embedding kinds a new item can be embedded with after prepare: content (its text through the
# stored TF-IDF + SVD map) and file (the user brings its vector, as for the catalogue).
COLD_START_EMBEDDINGS = ("content", "file")


def cold_start_arrays(ids: SemanticIds, sc) -> dict[str, np.ndarray]:
  """The arrays of COLD_START_FILE: the codebooks float32 [levels, K, D], the embedding kind and
  normalisation, and for content embeddings the fitted map (`ContentEmbedder.arrays`)."""
  if ids.codebooks is None:
    raise ValueError("cold_start_arrays: these SemanticIds carry no codebooks")
  # Scalars as 1-element arrays: prepare.save_npz writes contiguous (at least 1-d) arrays.
  out = {
    "format": np.asarray([COLD_START_FORMAT], np.int32),
    "embedding": np.asarray([str(sc.embedding)], dtype=str),
    "normalize": np.asarray([bool(sc.get("normalize", True))]),
    "codebooks": np.asarray(ids.codebooks, np.float32),
  }
  if ids.content is not None:
    out.update(ids.content.arrays())
  return out


@dataclasses.dataclass
class ColdStartModel:
  """A prepared semantic dataset's quantiser, read back from COLD_START_FILE (`load`)."""

  embedding: str
  normalize: bool
  codebooks: np.ndarray  # float32 [levels, K, D]
  content: ContentEmbedder | None
  source: str = "<cold start>"

  @classmethod
  def load(cls, path: str) -> "ColdStartModel":
    if not os.path.isfile(path):
      raise DataError(
        path,
        0,
        COLD_START_FILE,
        "missing: the dataset was prepared before cold start stored its quantiser "
        "(or is not a semantic-ID dataset); prepare it again into a new directory",
      )
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
    for key in ("format", "embedding", "normalize", "codebooks"):
      if key not in arrays:
        raise DataError(path, 0, key, f"missing from {COLD_START_FILE}")
    scalar = {k: arrays[k].reshape(-1)[0].item() for k in ("format", "embedding", "normalize")}
    if scalar["format"] != COLD_START_FORMAT:
      raise DataError(
        path, 0, "format", f"expected format {COLD_START_FORMAT}, got {scalar['format']}"
      )
    books = arrays["codebooks"]
    if books.ndim != 3 or books.dtype != np.float32:
      raise DataError(path, 0, "codebooks", f"expected float32 [levels, K, D], got {books.shape}")
    kind = str(scalar["embedding"])
    content = None
    if kind == "content":
      keys = ("content_vocabulary", "content_idf", "content_components")
      for key in keys:
        if key not in arrays:
          raise DataError(path, 0, key, f"missing from {COLD_START_FILE} of content embeddings")
      content = ContentEmbedder(*(arrays[k] for k in keys))
      if content.components.shape[0] != books.shape[2]:
        raise DataError(
          path,
          0,
          "content_components",
          f"{content.components.shape[0]} SVD dimensions, codebooks of {books.shape[2]}",
        )
    return cls(kind, bool(scalar["normalize"]), books, content, source=path)

  @property
  def dim(self) -> int:
    return int(self.codebooks.shape[2])

  def check_supported(self) -> None:
    """DataError unless new items can be embedded as the catalogue's were."""
    if self.embedding in BIENCODER_TASKS:
      raise DataError(
        self.source,
        0,
        "embedding",
        f"{self.embedding!r}: these semantic IDs quantise the item vectors of a bi-encoder "
        "trained on the catalogue's items, and an item added after training has no trained "
        f"vector; cold start supports the embedding sources {COLD_START_EMBEDDINGS} "
        "(prepare with data.semantic.embedding='content', or 'file' with your own encoder)",
      )
    if self.embedding not in COLD_START_EMBEDDINGS:
      raise DataError(
        self.source,
        0,
        "embedding",
        f"expected one of {COLD_START_EMBEDDINGS}, got {self.embedding!r}",
      )

  def embed_text(
    self, titles: Sequence[str], metadata: Sequence[Mapping[str, Any]]
  ) -> tuple[np.ndarray, np.ndarray]:
    """Content: float32 [n, d] vectors of new items' text (`item_text`, as prepare embeds the
    catalogue), before normalisation, and how many known words each text holds."""
    self.check_supported()
    if self.content is None:
      raise DataError(
        self.source,
        0,
        "embedding",
        f"{self.embedding!r} embeddings come from the user: give the new items' vectors",
      )
    return self.content.embed([item_text(t, m) for t, m in zip(titles, metadata)])

  def codes(
    self,
    embeddings: np.ndarray,
    existing_codes: np.ndarray,
    *,
    num_disambiguation: int,
    new_ids: Sequence[str] | None = None,
    existing_ids: Sequence[str] | None = None,
    source: str = "<new items>",
    lines: Sequence[int] | None = None,
  ) -> np.ndarray:
    """`cold_start_codes` with this dataset's codebooks and normalisation."""
    self.check_supported()
    return cold_start_codes(
      self.codebooks,
      embeddings,
      existing_codes,
      num_disambiguation=num_disambiguation,
      normalize=self.normalize,
      new_ids=new_ids,
      existing_ids=existing_ids,
      source=source,
      lines=lines,
    )


def cold_start_codes(
  codebooks: np.ndarray,
  embeddings,
  existing_codes: np.ndarray,
  *,
  num_disambiguation: int,
  normalize: bool,
  new_ids: Sequence[str] | None = None,
  existing_ids: Sequence[str] | None = None,
  source: str = "<new items>",
  lines: Sequence[int] | None = None,
) -> np.ndarray:
  """Semantic IDs of items added after training, with the trained tokens only: int32 [M, T].

  codebooks float32 [L, K, D] (the prepared dataset's, COLD_START_FILE); embeddings [M, D] of the
  new items in the catalogue's embedding space (normalised here when `normalize`, as prepare
  does); existing_codes int [N, T] the catalogue's codes, T = L (+1 with num_disambiguation > 0).

  Each new item gets `quantise`'s code per level, then, when the catalogue has a disambiguation
  code, the smallest one not yet used by its tuple (among existing items and the new items before
  it, in order). An existing item's ID never changes. The model's vocabulary has
  num_disambiguation such codes: a tuple that every one of them names already (or, without the
  column, any taken tuple) leaves no distinct ID, a DataError naming the item (its `lines` entry
  of `source`) and what to do.
  """
  books = np.asarray(codebooks, np.float32)
  levels, nd = int(books.shape[0]), int(num_disambiguation)
  existing = np.asarray(existing_codes, np.int64)
  width = levels + (1 if nd else 0)
  if existing.ndim != 2 or existing.shape[1] != width:
    raise ValueError(
      f"cold_start_codes: expected existing codes [N, {width}] for {levels} levels and "
      f"num_disambiguation={nd}, got {list(existing.shape)}"
    )
  emb = np.asarray(embeddings, np.float32)
  if emb.ndim != 2 or emb.shape[1] != books.shape[2]:
    raise DataError(
      source,
      0,
      "embedding",
      f"expected new item vectors [num_new_items, {books.shape[2]}] (the catalogue's "
      f"embedding dimension), got {list(emb.shape)}",
    )
  if not np.isfinite(emb).all():
    row = int(np.flatnonzero(~np.isfinite(emb).all(1))[0])
    raise DataError(source, _line(lines, row), "embedding", "expected finite numbers")
  if normalize:
    emb = normalize_rows(emb)
  codes, _ = quantise(books, emb)  # [M, L]
  m = len(codes)
  if m == 0:
    return np.zeros((0, width), np.int32)
  # Only the tuples new items land on matter: group existing and new rows by tuple once.
  _, inv = np.unique(
    np.concatenate([existing[:, :levels], codes.astype(np.int64)]), axis=0, return_inverse=True
  )
  inv = inv.reshape(-1)
  inv_old, inv_new = inv[: len(existing)], inv[len(existing) :]
  mine = np.flatnonzero(np.isin(inv_old, inv_new))
  used: dict[int, set] = {}
  holders: dict[int, list] = {}
  old_dis = existing[:, levels] if nd else np.zeros(len(existing), np.int64)
  for i in mine.tolist():
    used.setdefault(int(inv_old[i]), set()).add(int(old_dis[i]))
    holders.setdefault(int(inv_old[i]), []).append(i)
  dis = np.zeros(m, np.int64)
  for j in range(m):
    group = int(inv_new[j])
    taken = used.setdefault(group, set())
    d = 0
    while d in taken:
      d += 1
    if d >= max(nd, 1):
      held = holders.get(group, [])
      names = [
        repr(existing_ids[i]) if existing_ids is not None else f"index {i}" for i in held[:3]
      ]
      earlier = [
        f"new {new_ids[k]!r}" if new_ids is not None else f"new row {k}"
        for k in np.flatnonzero(inv_new[:j] == group)[:3].tolist()
      ]
      who = ", ".join(names + earlier) + (" ..." if len(held) > 3 else "")
      item = repr(new_ids[j]) if new_ids is not None else f"row {j}"
      fix = (
        f"all {nd} disambiguation codes of the model's vocabulary are taken"
        if nd
        else "this catalogue has no disambiguation code (no tuple was shared at prepare)"
      )
      raise DataError(
        source,
        _line(lines, j),
        "item",
        f"new item {item}: its code tuple {tuple(int(c) for c in codes[j])} is already used by "
        f"{len(taken)} item(s) ({who}) and {fix}, so it cannot get a distinct ID with the "
        "trained tokens; prepare the dataset with data.semantic.reserve_disambiguation > 0 "
        "(spare codes per tuple; the model must then be trained on that dataset), or add "
        "this item in a retraining",
      )
    taken.add(d)
    dis[j] = d
  out = np.concatenate([codes, dis[:, None]], 1) if nd else codes
  return out.astype(np.int32)


def _line(lines: Sequence[int] | None, row: int) -> int:
  return int(lines[row]) if lines is not None else 0


# ---------------------------------------------------------------------------------- add_items


@dataclasses.dataclass
class NewItems:
  """The items of a new-items JSON-lines file, in file order, with the line of each."""

  path: str
  item_ids: list[str]
  titles: list[str]
  metadata: list[dict[str, Any]]
  lines: list[int]


def read_new_items(path: str, catalog: ItemCatalog | None = None) -> NewItems:
  """`{"item": id, "title": text, ...}` per line (the jsonl source's items file: other fields are
  metadata; content embeddings read their string values). DataError naming file, line and field
  for bad JSON, a missing or non-id `item`, a non-string `title`, an id listed twice or already in
  `catalog`, or a file without items."""
  from gr_jax.data import textio  # pylint: disable=g-import-not-at-top

  if not os.path.isfile(path):
    raise DataError(path, 0, "items", "file not found (expected JSON lines of new items)")
  out = NewItems(path, [], [], [], [])
  first: dict[str, int] = {}
  for line, obj in textio.iter_jsonl(path, BadRows(skip=False)):
    if "item" not in obj:
      raise DataError(path, line, "item", 'missing; expected {"item": id, "title": text, ...}')
    item = textio.as_id(obj["item"])
    if item is None:
      raise DataError(
        path, line, "item", f"expected a string or integer id, got {json.dumps(obj['item'])}"
      )
    problem = textio.id_problem(item)
    if problem is not None:
      raise DataError(path, line, "item", problem)
    title = obj.get("title", "")
    if not isinstance(title, str):
      raise DataError(path, line, "title", f"expected a string, got {json.dumps(title)}")
    if item in first:
      raise DataError(
        path, line, "item", f"duplicate item id {item!r} (first on line {first[item]})"
      )
    if catalog is not None and item in catalog:
      raise DataError(
        path,
        line,
        "item",
        f"item id {item!r} is already in the catalogue (index {catalog.index(item)}); "
        "cold start adds new items only",
      )
    meta = {k: v for k, v in obj.items() if k not in ("item", "title")}
    bad_value = textio.non_finite_path(meta)
    if bad_value is not None:
      raise DataError(
        path, line, bad_value, "expected a finite number or text, got NaN or Infinity"
      )
    first[item] = line
    out.item_ids.append(item)
    out.titles.append(title)
    out.metadata.append(meta)
    out.lines.append(line)
  if not out.item_ids:
    raise DataError(path, 0, "item", "no items in the file")
  return out


def read_new_embeddings(path: str, num_items: int, dim: int) -> np.ndarray:
  """The new items' vectors of a `file`-embedding dataset: .npy float [num_items, dim], rows in
  the items file's order."""
  field = "embeddings"
  if not os.path.isfile(path):
    raise DataError(path, 0, field, "file not found (expected an .npy array)")
  emb = item_embeddings.load_npy_array(path, field)
  if emb.ndim != 2 or emb.shape != (num_items, dim):
    raise DataError(
      path,
      0,
      field,
      f"expected shape [{num_items}, {dim}] (one row per new item in the items file's order, "
      f"the catalogue's embedding dimension), got {list(emb.shape)}",
    )
  item_embeddings.check_real_finite(emb, path, field)
  return emb.astype(np.float32)


def _entry_key(entry: dict) -> tuple:
  return tuple(
    entry.get(k) for k in ("base_manifest_sha256", "items_file_sha256", "embeddings_file_sha256")
  )


def _existing(out_dir: str, key: tuple) -> bool:
  """True when out_dir already holds this very extension; raises when it holds anything else."""
  if not os.path.exists(out_dir):
    return False
  path = os.path.join(out_dir, "manifest.json")
  have = None
  if os.path.isfile(path):
    try:
      with open(path) as f:
        runs = json.load(f).get("cold_start") or [{}]
      have = _entry_key(runs[-1])
    except (ValueError, AttributeError, TypeError, IndexError):
      have = None  # a damaged manifest: not this extension (the error below)
  if have != key:
    raise DataError(
      out_dir,
      0,
      "--out",
      "exists and is not this extension of the dataset (other inputs, or not a dataset); "
      "choose a new directory (cold start never overwrites one)",
    )
  # The same extension, but is it intact? A damaged catalog.json must not be reported as done.
  from gr_jax.data.dataset import DatasetMismatchError, verify_dataset  # pylint: disable=g-import-not-at-top

  try:
    verify_dataset(out_dir)
  except DatasetMismatchError as e:
    raise DataError(
      out_dir,
      0,
      "--out",
      f"holds this extension but is damaged ({e}); remove the directory and rerun",
    ) from None
  return True


def add_items(
  dataset_dir: str, items_path: str, out_dir: str, *, embeddings_path: str | None = None
) -> str:
  """Writes the dataset at `dataset_dir` with the items of `items_path` added to `out_dir` (module
  doc); returns out_dir. `embeddings_path`: the new items' vectors, for `file` embeddings only."""
  # pylint: disable=g-import-not-at-top
  from gr_jax.data import prepare
  from gr_jax.data.dataset import verify_dataset

  from gr_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  dataset_dir = workdir_lib.local_dir(dataset_dir, "--dataset (a processed dataset)")
  out_dir = workdir_lib.local_dir(out_dir, "--out (a processed dataset)")
  if out_dir == dataset_dir:
    raise DataError(out_dir, 0, "--out", "must be a new directory, not the dataset itself")
  manifest = verify_dataset(dataset_dir)  # every file as prepared, before anything is derived
  for path, field in ((items_path, "items"), (embeddings_path, "embeddings")):
    if path and not os.path.isfile(path):
      raise DataError(path, 0, field, "file not found")
  key = (
    prepare.sha256_file(os.path.join(dataset_dir, "manifest.json")),
    prepare.sha256_file(items_path),
    prepare.sha256_file(embeddings_path) if embeddings_path else None,
  )
  if _existing(out_dir, key):
    return out_dir

  cat_path = os.path.join(dataset_dir, "catalog.json")
  catalog = ItemCatalog.load(cat_path)
  if catalog.codes is None:
    raise DataError(
      cat_path,
      0,
      "id_scheme",
      f"{catalog.id_scheme!r} IDs give every item its own trained token, and a new item has "
      "none; cold start needs a dataset prepared with data.id_scheme='semantic'",
    )
  model = ColdStartModel.load(os.path.join(dataset_dir, COLD_START_FILE))
  model.check_supported()  # bi-encoder IDs: refused before reading the items
  items = read_new_items(items_path, catalog)
  m = len(items.item_ids)
  known = None
  if model.embedding == "content":
    if embeddings_path:
      raise DataError(
        embeddings_path,
        0,
        "embeddings",
        "this dataset's IDs come from content embeddings: new items are embedded from their "
        "text; --embeddings is for datasets prepared with data.semantic.embedding='file'",
      )
    emb, known = model.embed_text(items.titles, items.metadata)
  else:
    if not embeddings_path:
      raise DataError(
        model.source,
        0,
        "embedding",
        f"this dataset's IDs come from the user's embedding file: give the new items' vectors "
        f"(--embeddings, an .npy [{m}, {model.dim}] in the items file's order)",
      )
    emb = read_new_embeddings(embeddings_path, m, model.dim)
  codes = model.codes(
    emb,
    catalog.codes,
    num_disambiguation=catalog.num_disambiguation,
    new_ids=items.item_ids,
    existing_ids=catalog.item_ids,
    source=items_path,
    lines=items.lines,
  )
  extended = catalog.with_items(
    items.item_ids, titles=items.titles, metadata=items.metadata, codes=codes, source=items_path
  )
  levels = catalog.levels
  old_tuples = {tuple(r) for r in catalog.codes[:, :levels].tolist()}
  joined = sum(tuple(r) in old_tuples for r in codes[:, :levels].tolist())
  _, resid = quantise(model.codebooks, normalize_rows(emb) if model.normalize else emb)
  entry = {
    "base_dataset": dataset_dir,
    "base_manifest_sha256": key[0],
    "base_num_items": catalog.num_items,
    "items_file": os.path.abspath(items_path),
    "items_file_sha256": key[1],
    "embeddings_file": os.path.abspath(embeddings_path) if embeddings_path else None,
    "embeddings_file_sha256": key[2],
    "embedding": model.embedding,
    "added": m,
    "first_index": catalog.num_items,
    "item_ids": items.item_ids,
    # New items on a tuple an existing item has: they use a disambiguation code beyond the
    # tuple's trained ones (a token never a target for that prefix).
    "joined_existing_tuples": int(joined),
    # Content: new items whose text shares no word with the catalogue get the zero vector's
    # code (an ID, but not one their content chose).
    "items_without_known_words": None if known is None else int((known == 0).sum()),
    # Mean squared norm of the new items' final residual, against the catalogue's last
    # `semantic_ids.residual_mse` entry: how well the old codebooks fit the new items.
    "residual_mse": float(resid.mean()),
  }
  if known is not None and (known == 0).any():
    log.warning(
      "cold start: %d of %d new items share no word with the catalogue's text (first: %r)",
      int((known == 0).sum()),
      m,
      items.item_ids[int(np.flatnonzero(known == 0)[0])],
    )
  _write(dataset_dir, manifest, extended, entry, out_dir, key)
  return out_dir


def _write(dataset_dir, manifest, catalog, entry, out_dir, key) -> None:
  from gr_jax.data import prepare  # pylint: disable=g-import-not-at-top

  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  prepare.remove_stale_tmp_dirs(out_dir)  # left by a killed run for this destination
  tmp = os.path.join(
    parent, f".{os.path.basename(out_dir)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  )
  os.makedirs(tmp)
  try:
    for rel in manifest["files"]:
      if rel == "catalog.json":
        continue
      dst = os.path.join(tmp, rel)
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      shutil.copyfile(os.path.join(dataset_dir, rel), dst)
    catalog.save(os.path.join(tmp, "catalog.json"))
    # The old manifest (config and its hash, splits, statistics of prepare) with what changed.
    new = dict(manifest)
    new["num_items"] = catalog.num_items
    new["cold_start"] = list(manifest.get("cold_start") or []) + [entry]
    new["files"] = prepare._file_hashes(tmp)  # pylint: disable=protected-access
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
      json.dump(new, f, indent=1, sort_keys=True)
    try:
      os.rename(tmp, out_dir)  # the commit point
    except OSError:
      if _existing(out_dir, key):  # another run wrote the same extension first
        return
      raise
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
  log.info(
    "cold start: %d items added to %s -> %s (%d items)",
    entry["added"],
    dataset_dir,
    out_dir,
    catalog.num_items,
  )
