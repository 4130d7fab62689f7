"""ProcessedDataset: read access to a directory written by `prepare_dataset`."""

from __future__ import annotations

import collections
import json
import os

import numpy as np

from gr_jax.data.catalog import ItemCatalog
from gr_jax.data.errors import DataError
from gr_jax.data.raw import SPLITS
from gr_jax.data.tokenizer import EOS_ID, TextTokenizer
from gr_jax.schema import TASKS

ARRAY_KEYS = ("encoder_input_ids", "target_item", "query_id")
# A rec split stores its histories as sessions + offsets (see HistoryRows) instead of
# encoder_input_ids; datasets prepared before that keep the materialised rows and still load.
HISTORY_KEYS = ("history_items", "history_first", "history_len")
# Rows built per block when many are asked for at once: the int64 temporaries of one block are
# ~4 x 8 bytes x rows x encoder_len (~0.5 GB at 2^18 rows of 64 tokens).
HISTORY_BLOCK_ROWS = 1 << 18


def history_tokens(items, first, length, catalog, encoder_len: int) -> np.ndarray:
  """int32 [n, encoder_len] rec encoder rows: the ID tokens of history items
  items[first : first + length] (oldest first), then EOS, then padding 0."""
  tpi = catalog.tokens_per_item
  cols = np.arange(encoder_len)[None, :]  # [1, Le]
  # Column c holds token c % tpi of history item c // tpi (tpi = 1: one token per item).
  gather = np.minimum(first[:, None] + cols // tpi, max(len(items) - 1, 0))  # [n, Le]
  tokens = catalog.item_tokens(items[gather] if len(items) else gather)  # [n, Le, tpi]
  tokens = np.take_along_axis(
    tokens, np.broadcast_to(cols % tpi, gather.shape)[..., None], axis=-1
  )[..., 0]  # [n, Le]
  n_tok = np.asarray(length, np.int64)[:, None] * tpi  # [n, 1] history tokens
  ids = np.where(cols < n_tok, tokens, 0)
  return np.where(cols == n_tok, EOS_ID, ids).astype(np.int32)


def with_stored_rows(arrays: dict, catalog, encoder_len: int, *, source: str = "<split>") -> dict:
  """`arrays` of a stored split plus `encoder_input_ids` as a `RowsView` when the split stores
  its rows compactly (rec: sessions + offsets; search: one row per distinct query), else as is."""
  if "encoder_input_ids" in arrays:
    return arrays
  if all(k in arrays for k in HISTORY_KEYS):
    rows = HistoryRows(*(arrays[k] for k in HISTORY_KEYS), catalog, encoder_len, source=source)
  elif "query_tokens" in arrays and "query_id" in arrays:
    rows = QueryRows(arrays["query_tokens"], arrays["query_id"], source=source)
  else:
    return arrays
  return {**arrays, "encoder_input_ids": rows}


class RowsView(np.lib.mixins.NDArrayOperatorsMixin):
  """A split's encoder_input_ids [N, Le], int32, stored compactly and built on demand.

  Behaves as a read-only int32 array: `shape`, `len`, indexing by int / slice / index or mask
  arrays (rows built then), `np.asarray` (all rows, in blocks), ufuncs and iteration. `take(idx)`
  subsets without building rows. Subclasses give `__len__`, `encoder_len`, `_rows(idx)`, `_take`.
  """

  dtype = np.dtype(np.int32)
  ndim = 2
  encoder_len: int

  def _rows(self, idx: np.ndarray) -> np.ndarray:
    raise NotImplementedError

  def _take(self, idx: np.ndarray) -> "RowsView":
    raise NotImplementedError

  @property
  def shape(self) -> tuple[int, int]:
    return (len(self), self.encoder_len)

  @property
  def size(self) -> int:
    return self.shape[0] * self.shape[1]

  def _build(self, rows: np.ndarray) -> np.ndarray:
    out = np.zeros((len(rows), self.encoder_len), np.int32)
    for lo in range(0, len(rows), HISTORY_BLOCK_ROWS):
      r = rows[lo : lo + HISTORY_BLOCK_ROWS]
      out[lo : lo + len(r)] = self._rows(r)
    return out

  def _row_index(self, key) -> np.ndarray:
    n = len(self)
    if isinstance(key, slice):
      return np.arange(n)[key]
    idx = np.asarray(key)
    if idx.dtype == bool:
      if idx.shape != (n,):
        raise IndexError(f"boolean index of shape {list(idx.shape)} for {n} rows")
      return np.flatnonzero(idx)
    if not np.issubdtype(idx.dtype, np.integer):
      raise IndexError(f"rows are indexed by integers, slices or masks, got {idx.dtype}")
    if idx.size and (idx.min() < -n or idx.max() >= n):
      raise IndexError(f"row index out of range for {n} rows")
    return np.where(idx < 0, idx + n, idx)

  def __getitem__(self, key):
    if isinstance(key, tuple):
      if not key:
        return np.asarray(self)
      rows = self[key[0]]
      rest = key[1:]
      return rows[rest] if rows.ndim == 1 else rows[(slice(None), *rest)]
    if key is Ellipsis or (isinstance(key, np.ndarray) and key.dtype == np.bool_ and key.ndim == 2):
      return np.asarray(self)[key]  # all rows, or an element mask over them
    idx = self._row_index(key)
    return self._build(idx.reshape(-1)).reshape(*idx.shape, self.encoder_len)

  def take(self, idx) -> "RowsView":
    """The rows `idx`, still stored compactly."""
    return self._take(self._row_index(idx))

  def __array__(self, dtype=None, copy=None):
    out = self._build(np.arange(len(self)))
    return out if dtype is None else out.astype(dtype)

  def astype(self, dtype, copy: bool = True) -> np.ndarray:
    return np.asarray(self).astype(dtype)

  def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
    inputs = tuple(np.asarray(x) if isinstance(x, RowsView) else x for x in inputs)
    return getattr(ufunc, method)(*inputs, **kwargs)

  def __iter__(self):
    for lo in range(0, len(self), HISTORY_BLOCK_ROWS):
      yield from self._build(np.arange(lo, min(lo + HISTORY_BLOCK_ROWS, len(self))))

  def __repr__(self) -> str:
    return f"{type(self).__name__}(rows={len(self)}, encoder_len={self.encoder_len})"


class HistoryRows(RowsView):
  """A rec split's encoder rows from sessions + offsets.

  `items` int [M]: the catalogue indices of the split's visible session prefixes, concatenated
  (a training split's file holds no valid or test target at all); row r's history is
  items[first[r] : first[r] + length[r]], oldest first. Row r is those items' ID tokens, then
  EOS, then padding: the bytes prepare used to store, at a fraction of the size (ML-25M's
  25M training rows of 64 tokens were 6.4 GB; as sessions + offsets ~0.3 GB).
  `item_histories()` reads the histories without tokens.
  """

  def __init__(self, items, first, length, catalog, encoder_len: int, *, source: str = "<rec>"):
    self.items = np.asarray(items)
    self.first = np.asarray(first, np.int64)
    self.length = np.asarray(length, np.int64)
    self.catalog = catalog
    self.encoder_len = int(encoder_len)
    if self.first.shape != self.length.shape or self.first.ndim != 1:
      raise DataError(
        source,
        0,
        "history_first/history_len",
        f"expected two [N] arrays, got {list(self.first.shape)} and {list(self.length.shape)}",
      )
    tpi = catalog.tokens_per_item
    if len(self.first):
      bad = (self.first < 0) | (self.length < 0) | (self.first + self.length > len(self.items))
      bad |= self.length * tpi >= self.encoder_len  # EOS must fit
      if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(
          source,
          0,
          "history_first/history_len",
          f"row {r}: history items [{self.first[r]}, {self.first[r] + self.length[r]}) of "
          f"{len(self.items)} stored, {tpi} tokens each, must fit encoder_len "
          f"{self.encoder_len} with EOS",
        )

  def __len__(self) -> int:
    return len(self.first)

  def _rows(self, idx: np.ndarray) -> np.ndarray:
    return history_tokens(
      self.items, self.first[idx], self.length[idx], self.catalog, self.encoder_len
    )

  def _take(self, idx: np.ndarray) -> "HistoryRows":
    rows = HistoryRows.__new__(HistoryRows)
    rows.items, rows.catalog, rows.encoder_len = self.items, self.catalog, self.encoder_len
    rows.first, rows.length = self.first[idx], self.length[idx]
    return rows

  def item_histories(self) -> list[np.ndarray]:
    """Each row's history as item indices (int64, oldest first), as catalog.histories reads."""
    items = np.asarray(self.items, np.int64)
    return [items[a : a + n] for a, n in zip(self.first.tolist(), self.length.tolist())]


class QueryRows(RowsView):
  """A search split's encoder rows: row r is `query_tokens[query_id[r]]`.

  A query with many relevant items (an MPD playlist name and its ~66 tracks) is stored once:
  the full MPD's 66M search rows of 64 tokens would be 17 GB, its distinct names a few MB."""

  def __init__(self, query_tokens, query_id, *, source: str = "<search>"):
    self.query_tokens = np.asarray(query_tokens, np.int32)
    self.query_id = np.asarray(query_id)
    if self.query_tokens.ndim != 2 or self.query_id.ndim != 1:
      raise DataError(
        source,
        0,
        "query_tokens/query_id",
        f"expected [Q, Le] and [N], got {list(self.query_tokens.shape)} and "
        f"{list(self.query_id.shape)}",
      )
    if len(self.query_id) and (
      self.query_id.min() < 0 or self.query_id.max() >= len(self.query_tokens)
    ):
      raise DataError(
        source,
        0,
        "query_id",
        f"query ids must index the {len(self.query_tokens)} stored queries, got "
        f"[{self.query_id.min()}, {self.query_id.max()}]",
      )
    self.encoder_len = int(self.query_tokens.shape[1])

  def __len__(self) -> int:
    return len(self.query_id)

  def _rows(self, idx: np.ndarray) -> np.ndarray:
    return self.query_tokens[self.query_id[idx]]

  def _take(self, idx: np.ndarray) -> "QueryRows":
    return QueryRows(self.query_tokens, self.query_id[idx])


def query_histories(arrays: dict, rows, catalog) -> list[np.ndarray]:
  """The rec history (item indices, oldest first) of the split rows `rows` (int indices): the
  items of each row's input as stored (HistoryRows: the stored session prefix, without building
  token rows; materialised rows: read back by `catalog.histories`). The items `eval.exclude_seen`
  removes from that query's ranking."""
  enc = arrays["encoder_input_ids"]
  idx = np.asarray(rows, np.int64)
  sub = enc.take(idx) if isinstance(enc, RowsView) else np.asarray(enc)[idx]
  return catalog.histories(sub)


class DatasetMismatchError(DataError):
  """A processed dataset is not the one its manifest (or the run's config) says it is."""


# (path, size, mtime_ns) -> sha256: a process verifies the same large npz files only once.
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _cached_sha256(path: str) -> str:
  from gr_jax.data.prepare import sha256_file  # pylint: disable=g-import-not-at-top

  st = os.stat(path)
  key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
  if key not in _SHA_CACHE:
    _SHA_CACHE[key] = sha256_file(path)
  return _SHA_CACHE[key]


def _flat(d, prefix: str = "") -> dict:
  out = {}
  for k, v in (d or {}).items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _resolved_decoder_len_hash(config, manifest: dict) -> str | None:
  """A semantic-ID dataset's hash of `config` as prepared, when the config's data.decoder_len is
  the manifest's (ID tokens + EOS) rather than the prepared value: the trainer records the
  length it used in the run's config.json, and prepare ignores data.decoder_len for semantic
  IDs, so both values name the same dataset. None when that does not apply."""
  from gr_jax.data import prepare  # pylint: disable=g-import-not-at-top

  prepared = (manifest.get("config") or {}).get("decoder_len")
  if manifest.get("id_scheme", "atomic") == "atomic" or prepared is None:
    return None
  d = prepare.dataset_config(config)
  if d.get("decoder_len") != manifest.get("decoder_len"):
    return None
  d["decoder_len"] = prepared
  return prepare.hash_dataset_config(d)


def verify_dataset(directory: str, config=None, *, require_manifest: bool = True) -> dict | None:
  """Checks that `directory` holds the dataset its manifest.json describes; returns the manifest.

  - every file listed in the manifest exists and has the recorded sha256 (hashes are cached per
    (path, size, mtime) within the process);
  - with `config` (a run config with `.data`, or the data section itself): its data section hashes
    (as `prepare` hashes it, pipeline-only knobs left out) to the manifest's `config_hash`.
  Raises DatasetMismatchError naming the dataset dir, the file or field, and both values. Without a
  manifest: an error, or (require_manifest=False, hand-made test datasets) None.
  """
  from gr_jax.data import prepare  # pylint: disable=g-import-not-at-top

  directory = os.path.abspath(directory)
  manifest_path = os.path.join(directory, "manifest.json")
  if not os.path.exists(manifest_path):
    if not require_manifest:
      return None
    raise DatasetMismatchError(
      manifest_path,
      0,
      "manifest.json",
      "not a processed dataset (missing manifest; run gr_jax.prepare)",
    )
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
  except ValueError as e:
    raise DatasetMismatchError(manifest_path, 0, "manifest.json", f"not valid JSON ({e})") from None
  files = manifest.get("files")
  if not isinstance(files, dict) or not files:
    raise DatasetMismatchError(
      manifest_path, 0, "files", "expected the sha256 of every dataset file"
    )
  for rel, digest in sorted(files.items()):
    path = os.path.join(directory, rel)
    if not os.path.isfile(path):
      raise DatasetMismatchError(path, 0, "sha256", f"listed in {manifest_path} but missing")
    got = _cached_sha256(path)
    if got != digest:
      raise DatasetMismatchError(
        path,
        0,
        "sha256",
        f"file changed since prepare: sha256 {got[:16]}..., manifest says "
        f"{str(digest)[:16]}... (re-run gr_jax.prepare into a new directory)",
      )
  if config is not None:
    want, have = prepare.config_hash(config), manifest.get("config_hash")
    if want != have and _resolved_decoder_len_hash(config, manifest) == have:
      want = have
    if want != have:
      ours, theirs = _flat(prepare.dataset_config(config)), _flat(manifest.get("config"))
      diffs = [
        f"data.{k}: run config {ours.get(k)!r}, dataset {theirs.get(k)!r}"
        # Top-level fields first: `source` says more than the 20 sim knobs it drops.
        for k in sorted(set(ours) | set(theirs), key=lambda k: (k.count("."), k))
        if ours.get(k) != theirs.get(k)
      ]
      detail = "; ".join(diffs[:5]) + (f"; ... {len(diffs) - 5} more" if len(diffs) > 5 else "")
      raise DatasetMismatchError(
        manifest_path,
        0,
        "config_hash",
        f"the dataset in {directory} was prepared from another data config (hash "
        f"{str(have)[:12]}, the run config's is {want[:12]}): {detail or 'see manifest config'}",
      )
  return manifest


class ProcessedDataset:
  """`.manifest`, `.catalog`, `.tokenizer`, `.split(task, split)`, `.text_vocab_size`, `.num_items`."""

  def __init__(self, directory: str, *, verify: bool = False):
    self.directory = os.path.abspath(directory)
    manifest = os.path.join(self.directory, "manifest.json")
    if not os.path.exists(manifest):
      raise DataError(
        manifest,
        0,
        "manifest.json",
        "not a processed dataset (missing manifest; run gr_jax.prepare first)",
      )
    with open(manifest) as f:
      self.manifest = json.load(f)
    if verify:
      self.verify()
    self.catalog = ItemCatalog.load(os.path.join(self.directory, "catalog.json"))
    self._tokenizer = None
    self._cache: dict[tuple[str, str], dict[str, np.ndarray]] = {}

  @property
  def tokenizer(self) -> TextTokenizer:
    if self._tokenizer is None:
      self._tokenizer = TextTokenizer.load(os.path.join(self.directory, "tokenizer"))
    return self._tokenizer

  @property
  def text_vocab_size(self) -> int:
    return int(self.catalog.token_offset)

  @property
  def num_items(self) -> int:
    return self.catalog.num_items

  @property
  def encoder_len(self) -> int:
    return int(self.manifest["encoder_len"])

  @property
  def decoder_len(self) -> int:
    return int(self.manifest["decoder_len"])

  def split(self, task: str, split: str) -> dict[str, np.ndarray]:
    """Arrays of one task split: encoder_input_ids [N, Le], target_item [N], query_id [N].

    encoder_input_ids is a `RowsView` (rows built on demand) when the split was prepared in the
    compact format (rec: `HistoryRows`; search: `QueryRows`); the stored arrays stay beside it."""
    if task not in TASKS or split not in SPLITS:
      raise KeyError(f"task must be one of {TASKS} and split one of {SPLITS}; got {task}/{split}")
    key = (task, split)
    if key not in self._cache:
      path = os.path.join(self.directory, task, f"{split}.npz")
      if not os.path.exists(path):
        folder = os.path.dirname(path)
        names = os.listdir(folder) if os.path.isdir(folder) else []
        have = sorted(f[:-4] for f in names if f.endswith(".npz"))
        raise DataError(
          path, 0, "split", f"split {split!r} of task {task!r} is missing (have {have})"
        )
      with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
      arrays = with_stored_rows(arrays, self.catalog, self.encoder_len, source=path)
      for k in ARRAY_KEYS:
        if k not in arrays:
          raise DataError(path, 0, k, f"missing array in a processed split; expected {ARRAY_KEYS}")
      self._cache[key] = arrays
    return self._cache[key]

  def qrels(self, task: str, split: str) -> dict[int, list[int]]:
    """query_id -> sorted relevant item indices."""
    arrays = self.split(task, split)
    out = collections.defaultdict(set)
    for q, t in zip(arrays["query_id"].tolist(), arrays["target_item"].tolist()):
      out[q].add(t)
    return {q: sorted(v) for q, v in sorted(out.items())}

  def verify(self, config=None) -> None:
    """Checks every file's sha256 against the manifest (and `config`'s data hash, if given)."""
    verify_dataset(self.directory, config)

  def __repr__(self) -> str:
    return (
      f"ProcessedDataset({self.directory!r}, items={self.num_items}, "
      f"text_vocab={self.text_vocab_size})"
    )
