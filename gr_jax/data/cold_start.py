"""Cold start: items added after training get semantic IDs without retraining.

`add_items(dataset_dir, items_path, out_dir, embeddings_path=None)` (the library behind
`python -m gr_jax.add_items`) reads a processed semantic-ID dataset and a JSON-lines file of new
items and writes a NEW processed dataset directory whose catalogue is the old one with the new
items appended:
  1. the dataset is verified (sha256 of every file against its manifest) and its quantiser read
     from `semantic_ids.COLD_START_FILE`, which prepare writes for every semantic dataset: the
     RQ-KMeans codebooks, the normalisation flag and, for content embeddings, the fitted TF-IDF +
     SVD map as plain arrays;
  2. each new item is embedded as prepare embedded the catalogue: content -- its text (title, then
     the string values of its other fields, `semantic_ids.item_text`) through the stored map;
     file -- its row of the user's .npy (`embeddings_path`, rows in the items file's order, the
     catalogue's dimension). Bi-encoder embeddings (search | rec | joint) are refused: their item
     vectors were trained per catalogue item, and a new item has none;
  3. `semantic_ids.cold_start_codes` gives each one the residual-nearest code per level (the
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
from typing import Any

import numpy as np

from gr_jax.data import semantic_ids
from gr_jax.data.catalog import ItemCatalog
from gr_jax.data.errors import BadRows, DataError

log = logging.getLogger(__name__)


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
  emb = semantic_ids.load_npy_array(path, field)
  if emb.ndim != 2 or emb.shape != (num_items, dim):
    raise DataError(
      path,
      0,
      field,
      f"expected shape [{num_items}, {dim}] (one row per new item in the items file's order, "
      f"the catalogue's embedding dimension), got {list(emb.shape)}",
    )
  semantic_ids.check_real_finite(emb, path, field)
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
  model = semantic_ids.ColdStartModel.load(os.path.join(dataset_dir, semantic_ids.COLD_START_FILE))
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
  _, resid = semantic_ids.quantise(
    model.codebooks, semantic_ids.normalize_rows(emb) if model.normalize else emb
  )
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
