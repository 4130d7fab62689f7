"""raw data -> processed dataset directory (BUILD_NOTES.md "Processed dataset").

`prepare_dataset(config, out_dir)` loads the configured source into a `RawData`, then, the same for
every source:
  1. keeps the items present in both tasks (`data.items_in_both_tasks`, paper), removing the others
     from query pairs and sessions, and drops sessions shorter than `data.min_session_len` (counted);
  2. splits search by held-out distinct query (`search_valid_fraction`/`search_test_fraction`,
     seeded by `split_seed`), or with `data.search_split=within_item` by held-out (query, item)
     pair within each item, unless the loader fixed the split, and rec leave-last-out per session
     (last item test, second-to-last valid, every earlier prefix a training example);
  2b. keeps a held-out example of either task (search valid/test pair, rec valid/test target) only
     if its item is a training target of both tasks (`data.heldout_coverage_rule`
     = "trained_in_both", the default; "paper" keeps them all: `keep_heldout_trained_in_both`),
     the dropped ones counted in the manifest;
  3. tokenises (a Hugging Face spiece.model, or a SentencePiece model trained on the training query
     text and item titles) and writes fixed-width int32 arrays;
  4. writes catalog.json, the manifest (counts, overlap, popularity KL, skipped rows, sha256 of every
     file, config and its hash) and renames the temporary directory into place.
With `data.id_scheme=semantic` the catalogue carries each item's semantic ID (RQ-KMeans codes of
item embeddings, gr_jax/data/semantic_ids.py), rec histories spell every item's code tokens, the
manifest's decoder_len is the ID length + EOS and `semantic_ids` holds the quantiser's diagnostics.
With `data.semantic.embedding` = search | rec | joint the item embeddings are the vectors of a dense
bi-encoder trained on the same data with atomic IDs: prepare trains no model, it reads the file
`python -m gr_jax.embed_items` wrote (`data.semantic.embedding_file`, checked by
`item_embeddings.BiencoderFile`); the `baselines.biencoder` settings enter the config hash, so
those datasets are prepared and verified from the whole run config, not its data section.
The rename is the commit: an interrupted run leaves only a `.<name>.tmp-*` directory beside the
target, never a directory that looks complete. Writes are byte-deterministic (fixed zip timestamps).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import uuid
import zipfile
from typing import Any

import numpy as np

from gr_jax import workdir as workdir_lib
from gr_jax import workdir_lock
from gr_jax.data.divergence import kl_divergence
from gr_jax.data import catalog as catalog_lib
from gr_jax.data import dataset as dataset_lib
from gr_jax.data import tokenizer as tokenizer_lib
from gr_jax.data.errors import DataError
from gr_jax.data.raw import SPLIT_CODE, SPLITS, PairColumns, RawData, pair_columns
from gr_jax.schema import TASKS

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
# Knobs that only the pipeline reads: changing them must not invalidate a processed dataset, so one
# dataset serves Gen_S, Gen_R and Gen_R+S runs alike.
# `worker_count` is a retired knob, listed so that configs saved while it existed hash the same.
PIPELINE_ONLY_KEYS = (
  "processed_dir",
  "tasks",
  "task_ratio",
  "task_prefix",
  "item_cap",
  "item_cap_task",
  "shuffle",
  "worker_count",
)
KL_SMOOTHING = 0.5  # additive (Jeffreys) smoothing of the empirical popularities in the KL
# data.heldout_coverage_rule: which held-out examples a dataset keeps (keep_heldout_trained_in_both).
# A config without the knob (saved before it existed) prepared its dataset under "paper".
HELDOUT_COVERAGE_RULES = ("trained_in_both", "paper")
# data.search_split: how the search pairs a loader left unassigned are split (_assign_search_splits).
# A config without the knob (saved before it existed) split by query.
SEARCH_SPLITS = ("by_query", "within_item")


# ---------------------------------------------------------------------- config helpers
def data_config_of(config):
  """Accepts a full experiment config (with .data) or the data section itself."""
  return config.data if "data" in config else config


def _plain(x):
  if hasattr(x, "to_dict"):
    x = x.to_dict()
  if isinstance(x, dict):
    return {str(k): _plain(v) for k, v in sorted(x.items())}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  return x


def dataset_config(config) -> dict:
  """The part of the data config that determines the processed dataset's content."""
  d = _plain(data_config_of(config))
  for k in PIPELINE_ONLY_KEYS:
    d.pop(k, None)
  if d.get("source") != "simulate":
    d.pop("sim", None)  # simulator knobs do not affect real-data datasets
  drop_unread_sim_knobs(d)
  if d.get("id_scheme", "atomic") == "atomic":
    # Atomic datasets hash as they did before semantic IDs existed: their files are unchanged.
    d.pop("id_scheme", None)
    d.pop("semantic", None)
  elif _biencoder_kind(d):
    # Semantic IDs from bi-encoder embeddings depend on the bi-encoder's settings too (read from
    # the whole run config; a data section alone is refused there).
    from gr_jax.data import item_embeddings  # pylint: disable=g-import-not-at-top

    d["semantic"]["biencoder"] = item_embeddings.biencoder_fingerprint(config)
    if "embedding_file" in d["semantic"]:
      # Where the embeddings file lies says nothing its content does not (BiencoderFile pins it
      # to these settings), so runs need not name it; "" is what every such config hashed with.
      d["semantic"]["embedding_file"] = ""
  if d.get("heldout_coverage_rule") == "paper":
    # The paper's rule hashes as datasets did before the knob existed: their files are its files.
    d.pop("heldout_coverage_rule")
  if d.get("search_split") == "by_query":
    # Likewise the split by query: every dataset prepared before the knob keeps its hash.
    d.pop("search_split")
  return d


def drop_unread_sim_knobs(data: dict) -> dict:
  """Removes, in place, simulator knobs that the data config's setting does not read, so that
  datasets (their hash) and study stages (their fingerprints) made before such a knob existed
  keep theirs: `sim.s1_cover_all_items` counts only for setting S1 with the knob on. `data`: a
  plain data section. Returns it."""
  sim = data.get("sim")
  if isinstance(sim, dict) and not (sim.get("setting") == "S1" and sim.get("s1_cover_all_items")):
    sim.pop("s1_cover_all_items", None)
  return data


def _biencoder_kind(d: dict) -> bool:
  """Whether a plain data config asks for semantic IDs of bi-encoder embeddings (the kinds of
  item_embeddings.BIENCODER_TASKS, not imported here: hashing an atomic config imports no more)."""
  return d.get("id_scheme") == "semantic" and str((d.get("semantic") or {}).get("embedding")) in (
    "search",
    "rec",
    "joint",
  )


def config_hash(config) -> str:
  return hash_dataset_config(dataset_config(config))


def hash_dataset_config(d: dict) -> str:
  """The manifest's `config_hash` of a `dataset_config` dict."""
  return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  """np.savez layout with fixed zip timestamps, so equal arrays give equal bytes."""
  with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
    for name in sorted(arrays):
      info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
      with zf.open(info, "w", force_zip64=True) as f:
        np.lib.format.write_array(f, np.ascontiguousarray(arrays[name]), allow_pickle=False)


# ---------------------------------------------------------------------- loading
def load_raw(dc) -> RawData:
  """Dispatches on data.source."""
  source = dc.source
  if source == "simulate":
    from gr_jax.data import simulate

    return simulate.simulate(dc.sim)
  if source != "simulate" and not dc.path:
    raise DataError("<config>", 0, "data.path", f"source {source!r} needs the raw data location")
  if not workdir_lib.is_local(str(dc.path)):
    raise DataError(
      str(dc.path),
      0,
      "data.path",
      "raw data is read from a local disk; object-store paths are not supported here (copy "
      "the files to a local directory first)",
    )
  if source == "movielens":
    from gr_jax.data import movielens

    return movielens.load(dc)
  if source == "mpd":
    from gr_jax.data import mpd

    return mpd.load(dc)
  if source == "jsonl":
    from gr_jax.data import jsonl

    return jsonl.load(dc)
  if source == "tfds_movielens":
    from gr_jax.data import tfds_movielens

    return tfds_movielens.load(dc)
  raise DataError(
    "<config>",
    0,
    "data.source",
    f"expected simulate | movielens | mpd | jsonl | tfds_movielens, got {source!r}",
  )


# ---------------------------------------------------------------------- processing
def _normalise_query(q: str) -> str:
  return " ".join(str(q).split())


def _merged(values: list) -> tuple[list, np.ndarray]:
  """(distinct values in first-seen order, int32 map old index -> new index)."""
  index: dict = {}
  remap = np.fromiter((index.setdefault(v, len(index)) for v in values), np.int32, len(values))
  return list(index), remap


def _normalised_pairs(pairs: PairColumns) -> PairColumns:
  """Queries normalised (once per distinct text), item ids as strings; texts or ids that become
  equal become one."""
  queries, q_map = _merged([_normalise_query(q) for q in pairs.queries])
  items, i_map = _merged([str(i) for i in pairs.items])
  return PairColumns(queries, items, q_map[pairs.query], i_map[pairs.item], pairs.split)


def _filter_items(pairs: PairColumns, raw_sessions, dc, counts: dict) -> tuple[PairColumns, list]:
  """Applies items_in_both_tasks and min_session_len; returns (pairs, sessions) to keep."""
  if int(dc.min_session_len) < 3:
    raise DataError(
      "<config>",
      0,
      "data.min_session_len",
      "must be >= 3: leave-last-out needs a "
      f"train target, a valid and a test item, got {dc.min_session_len}",
    )
  search_items = pairs.item_set()
  rec_items = {i for _, items in raw_sessions for i in items}
  both = search_items & rec_items
  keep = both if dc.items_in_both_tasks else (search_items | rec_items)
  counts.update(
    items_in_search=len(search_items), items_in_rec=len(rec_items), items_in_both=len(both)
  )
  kept_item = np.fromiter((i in keep for i in pairs.items), bool, len(pairs.items))
  n_raw = len(pairs)
  pairs = pairs.select(kept_item[pairs.item])
  counts["search_pairs_removed_item_filter"] = n_raw - len(pairs)
  sessions, removed_items, short = [], 0, 0
  for user, items in raw_sessions:
    kept = [i for i in items if i in keep]
    removed_items += len(items) - len(kept)
    if len(kept) < int(dc.min_session_len):
      short += 1
      continue
    sessions.append((user, kept))
  counts["session_items_removed_item_filter"] = removed_items
  counts["sessions_dropped_too_short"] = short
  return pairs, sessions


def search_split_design(dc) -> str:
  """`data.search_split`, checked; "by_query" for a config saved before the knob."""
  design = str(dc.get("search_split", "by_query"))
  if design not in SEARCH_SPLITS:
    raise DataError(
      "<config>",
      0,
      "data.search_split",
      f"expected one of {' | '.join(SEARCH_SPLITS)}, got {design!r}",
    )
  return design


def _assign_search_splits(pairs: PairColumns, dc) -> PairColumns:
  """Gives loader-unassigned pairs a split by held-out distinct query text (or, with
  `data.search_split="within_item"`, by held-out pair within each item: `_assign_within_item`)."""
  if search_split_design(dc) == "within_item":
    return _assign_within_item(pairs, dc)
  open_rows = pairs.split == 0
  open_queries = _distinct(pairs.query[open_rows])
  if not len(open_queries):
    return pairs
  unassigned = sorted(open_queries.tolist(), key=lambda q: pairs.queries[q])  # by text
  order = np.random.default_rng(int(dc.split_seed)).permutation(len(unassigned))
  n_valid = int(round(float(dc.search_valid_fraction) * len(unassigned)))
  n_test = int(round(float(dc.search_test_fraction) * len(unassigned)))
  split_of = np.zeros(len(pairs.queries), np.int8)
  for rank, idx in enumerate(order.tolist()):
    split_of[unassigned[idx]] = SPLIT_CODE[
      "valid" if rank < n_valid else "test" if rank < n_valid + n_test else "train"
    ]
  split = np.where(open_rows, split_of[pairs.query], pairs.split).astype(np.int8)
  return PairColumns(pairs.queries, pairs.items, pairs.query, pairs.item, split)


def _text_rank(texts: list) -> np.ndarray:
  """Rank of each text in sorted order: an order that does not depend on the loader's."""
  rank = np.empty(len(texts), np.int64)
  rank[sorted(range(len(texts)), key=texts.__getitem__)] = np.arange(len(texts))
  return rank


def _assign_within_item(pairs: PairColumns, dc) -> PairColumns:
  """`data.search_split="within_item"`: splits the loader-unassigned pairs within each item.

  The distinct pairs, sorted by (item id, query text), get one seeded random order (a (query,
  item) pair the loader gives twice, a repeated search, is one pair: its rows share a split). Each
  item keeps its first pair in that order for training (its anchor; none when the loader already
  gave the item a training pair): a held-out pair then always targets an item that Gen_S was
  trained to emit, from other queries. Of the remaining pairs, in the same order, the first
  round(search_valid_fraction x P) go to valid, the next round(search_test_fraction x P) to test
  (P: the distinct unassigned pairs), the rest to training.

  Each held-out pair becomes its own query (a new query entry with the same text), with one
  relevant item, as in Penha et al. 2025, where every generated query belongs to one movie and
  each movie's queries are split. Its text may be a training query of other items, never of this
  one; a split by query text could not reach 300 test queries on ml-latest-small, whose tags give
  294 distinct query texts in all (configs/movielens.py).
  """
  open_rows = np.flatnonzero(pairs.split == 0)
  if not len(open_rows):
    return pairs
  key = pairs.query[open_rows].astype(np.int64) * len(pairs.items) + pairs.item[open_rows]
  _, first_row, row_pair = np.unique(key, return_index=True, return_inverse=True)
  q_of, item_of = pairs.query[open_rows[first_row]], pairs.item[open_rows[first_row]]
  q_rank, i_rank = _text_rank(pairs.queries), _text_rank(pairs.items)
  order = np.lexsort((q_rank[q_of], i_rank[item_of]))  # the distinct pairs by (item, text)
  q_of, item_of = q_of[order], item_of[order]
  row_pair = np.argsort(order)[row_pair.reshape(-1)]  # each open row's pair, in that order
  n = len(order)
  draw = np.random.default_rng(int(dc.split_seed)).permutation(n)  # each pair's place
  by_item = np.lexsort((draw, item_of))  # grouped by item, each group in drawn order
  first = np.ones(n, bool)
  first[1:] = item_of[by_item][1:] != item_of[by_item][:-1]
  trained = np.zeros(len(pairs.items), bool)
  trained[pairs.item[pairs.split == SPLIT_CODE["train"]]] = True
  anchor = np.zeros(n, bool)
  anchor[by_item[first]] = True
  anchor &= ~trained[item_of]
  candidates = np.flatnonzero(~anchor)
  candidates = candidates[np.argsort(draw[candidates])]
  n_valid = int(round(float(dc.search_valid_fraction) * n))
  n_test = int(round(float(dc.search_test_fraction) * n))
  if n_valid + n_test > len(candidates):
    raise DataError(
      "<search pairs>",
      0,
      "data.search_split",
      f"within_item: of {n} pairs, {int(anchor.sum())} stay in training as their item's one "
      f"training pair and {len(candidates)} remain, fewer than the {n_valid} valid + {n_test} "
      "test pairs of data.search_valid_fraction / data.search_test_fraction; lower them, or "
      "split by query (data.search_split='by_query')",
    )
  split_of_pair = np.full(n, SPLIT_CODE["train"], np.int8)
  split_of_pair[candidates[:n_valid]] = SPLIT_CODE["valid"]
  split_of_pair[candidates[n_valid : n_valid + n_test]] = SPLIT_CODE["test"]
  held = np.flatnonzero(split_of_pair != SPLIT_CODE["train"])  # one new query entry each
  new_query = q_of.copy()
  new_query[held] = len(pairs.queries) + np.arange(len(held), dtype=np.int32)
  split, query = pairs.split.copy(), pairs.query.copy()
  split[open_rows] = split_of_pair[row_pair]
  query[open_rows] = new_query[row_pair]
  queries = pairs.queries + [pairs.queries[q] for q in q_of[held].tolist()]
  return PairColumns(queries, pairs.items, query, pairs.item, split)


def _search_split_info(pairs: PairColumns, catalog, arrays, rule: str) -> dict[str, Any]:
  """The manifest's `search_split` (only for designs other than by_query, whose datasets keep
  their bytes): the design and, per split as evaluated (after `data.heldout_coverage_rule`),
  `queries` (one per held-out pair; the distinct training queries), `pairs`, `query_texts` (the
  distinct texts) and, for valid/test, `queries_text_in_train` (held-out queries whose text is
  also a training query, of other items)."""
  present = _distinct(pairs.item)
  cat_index = np.full(len(pairs.items), -1, np.int64)
  cat_index[present] = catalog.indices([pairs.items[k] for k in present.tolist()])
  both = np.intersect1d(*[_distinct(arrays[t]["train"]["target_item"]) for t in TASKS])
  info: dict[str, Any] = {"design": "within_item", "query_unit": "held-out (query, item) pair"}
  train_texts: set = set()
  for split in SPLITS:
    rows = np.flatnonzero(pairs.split == SPLIT_CODE[split])
    if split != "train" and rule == "trained_in_both":
      rows = rows[np.isin(cat_index[pairs.item[rows]], both)]
    if split != "train":  # held out once per distinct pair, as in the split's file
      key = pairs.query[rows].astype(np.int64) * len(pairs.items) + pairs.item[rows]
      rows = rows[np.unique(key, return_index=True)[1]]
    texts = [pairs.queries[q] for q in pairs.query[rows].tolist()]
    info[split] = {
      "queries": int(len(_distinct(pairs.query[rows]))),
      "pairs": int(len(rows)),  # training: every row, repeats included, as the file has them
      "query_texts": len(set(texts)),
    }
    if split == "train":
      train_texts = set(texts)
    else:
      info[split]["queries_text_in_train"] = sum(t in train_texts for t in texts)
  return info


def _first_seen(values: np.ndarray) -> np.ndarray:
  """The distinct values in order of first appearance."""
  uniq, first = np.unique(values, return_index=True)
  return uniq[np.argsort(first, kind="stable")]


def _search_arrays(
  pairs: PairColumns, split, catalog, tokenizer, dc, truncated: dict[str, int] | None = None
) -> dict[str, np.ndarray]:
  rows = np.flatnonzero(pairs.split == SPLIT_CODE[split])
  q, item = pairs.query[rows], pairs.item[rows]
  if split != "train" and len(rows):
    # Duplicate (query, item) rows would duplicate qrels; training keeps them (popularity).
    _, first = np.unique(q.astype(np.int64) * len(pairs.items) + item, return_index=True)
    first.sort()
    q, item = q[first], item[first]
  queries = _first_seen(q)  # query ids in order of first appearance
  local = np.zeros(len(pairs.queries), np.int32)
  local[queries] = np.arange(len(queries), dtype=np.int32)
  present = _distinct(item)
  cat_index = np.zeros(len(pairs.items), np.int32)
  cat_index[present] = catalog.indices([pairs.items[k] for k in present.tolist()])
  texts = [pairs.queries[k] for k in queries.tolist()]
  enc_len = int(dc.encoder_len)
  ids = tokenizer.encode_padded(
    texts, enc_len, min(int(dc.max_query_tokens), enc_len), truncated=truncated
  )
  # One stored row per distinct query (`dataset.QueryRows` expands them on demand).
  return {
    "query_tokens": np.asarray(ids, np.int32).reshape(len(texts), enc_len),
    "target_item": cat_index[item],
    "query_id": local[q],
  }


def rec_history_len(dc, tokens_per_item: int = 1) -> int:
  """Most history items in a rec input: each takes tokens_per_item tokens, EOS takes one."""
  enc_len = int(dc.encoder_len)
  if enc_len - 1 < tokens_per_item:
    raise DataError(
      "<config>",
      0,
      "data.encoder_len",
      f"{enc_len} tokens cannot hold one history item of {tokens_per_item} ID tokens plus EOS",
    )
  return max(1, min(int(dc.max_history), (enc_len - 1) // tokens_per_item))


def _rec_arrays(
  flat: np.ndarray, lengths: np.ndarray, catalog, dc
) -> dict[str, dict[str, np.ndarray]]:
  """Leave-last-out: examples (history, target) per split, histories oldest first.

  Stored as sessions + offsets (`dataset.HistoryRows` builds the encoder rows on demand, each
  history item as its ID tokens): `history_items`, the split's visible prefix of every session
  (training and valid: all but the last two items, test: all but the last), concatenated, so a
  split's file never holds a later split's target; `history_first` / `history_len`, each
  example's oldest history item (flat index) and its number of items (at most
  `rec_history_len`). `flat` int [M]: every session's catalogue indices, concatenated;
  `lengths` int [S]: the sessions' lengths."""
  hist = rec_history_len(dc, catalog.tokens_per_item)
  flat, lengths = np.asarray(flat, np.int64), np.asarray(lengths, np.int64)
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
  session_of = np.repeat(np.arange(len(lengths)), lengths)  # [M]
  pos_in_session = np.arange(len(flat)) - np.repeat(starts, lengths)  # [M]
  out = {}
  for split in SPLITS:
    # Target positions t (within each session) of this split.
    if split == "test":
      sess, pos = np.arange(len(lengths)), lengths - 1
    elif split == "valid":
      sess, pos = np.arange(len(lengths)), lengths - 2
    else:
      n_train = np.maximum(lengths - 3, 0)  # targets 1 .. n-3
      sess = np.repeat(np.arange(len(lengths)), n_train)
      offs = np.arange(int(n_train.sum())) - np.repeat(np.cumsum(n_train) - n_train, n_train)
      pos = offs + 1
    visible = np.maximum(lengths - (1 if split == "test" else 2), 0)  # [S] prefix kept
    keep = pos_in_session < visible[session_of]  # [M]
    kept_starts = np.concatenate([[0], np.cumsum(visible)[:-1]]) if len(visible) else visible
    hist_len = np.minimum(pos, hist)  # [N]
    out[split] = {
      "history_items": flat[keep].astype(np.int32),
      "history_first": (kept_starts[sess] + pos - hist_len).astype(np.int64),
      "history_len": hist_len.astype(np.int32),
      "target_item": flat[starts[sess] + pos].astype(np.int32)
      if len(flat)
      else np.zeros(0, np.int32),
      "query_id": np.arange(len(pos), dtype=np.int32),
    }
  return out


def rec_splits(sessions_idx, catalog, dc) -> dict[str, dict[str, Any]]:
  """Leave-last-out rec splits of sessions (each a sequence of catalogue indices), as
  `ProcessedDataset.split` returns them (encoder_input_ids a `HistoryRows`), without a file."""
  sessions_idx = [np.asarray(s, np.int64) for s in sessions_idx]
  flat = np.concatenate(sessions_idx) if sessions_idx else np.zeros(0, np.int64)
  arrays = _rec_arrays(flat, [len(s) for s in sessions_idx], catalog, dc)
  enc_len = int(dc.encoder_len)
  return {s: dataset_lib.with_stored_rows(a, catalog, enc_len) for s, a in arrays.items()}


def _distinct(ids: np.ndarray) -> np.ndarray:
  """np.unique of non-negative int ids, by counting: ML-25M's 25M rec ids took np.unique ~6 s
  each, a bincount well under one."""
  ids = np.asarray(ids)
  if not len(ids):
    return ids
  return np.flatnonzero(np.bincount(ids))


def _popularity(targets: np.ndarray, num_items: int) -> np.ndarray:
  counts = np.bincount(targets, minlength=num_items).astype(np.float64) + KL_SMOOTHING
  return counts / counts.sum()


def heldout_coverage_rule(dc) -> str:
  """`data.heldout_coverage_rule`, checked; "paper" for a config saved before the knob."""
  rule = str(dc.get("heldout_coverage_rule", "paper"))
  if rule not in HELDOUT_COVERAGE_RULES:
    raise DataError(
      "<config>",
      0,
      "data.heldout_coverage_rule",
      f"expected one of {' | '.join(HELDOUT_COVERAGE_RULES)}, got {rule!r}",
    )
  if rule != "paper" and dc.source == "simulate":
    sim = dc.sim
    side = (
      float(sim.get("search_side_fraction", 0)) > 0 or float(sim.get("rec_side_fraction", 0)) > 0
    )
    if side and str(sim.get("setting", "default")) == "default":
      # The variant exists to test each task on items only the other task trains: this rule
      # would drop exactly those held-out examples, silently making it another dataset.
      raise DataError(
        "<config>",
        0,
        "data.heldout_coverage_rule",
        "the simulator's coverage variant (data.sim.search_side_fraction or "
        f"rec_side_fraction > 0) needs data.heldout_coverage_rule='paper', got {rule!r}",
      )
  return rule


def keep_heldout_trained_in_both(arrays) -> dict[str, int]:
  """The rule `trained_in_both`: drops, in place, every held-out example (search valid/test
  pair, rec valid/test target) whose item is not a training target of BOTH tasks; returns the
  manifest's counts of what it dropped (`<task>_<split>_dropped_not_trained_in_both`, and the
  search queries left without a pair, `search_<split>_queries_dropped_not_trained_in_both`).

  Applied after the splits: `data.items_in_both_tasks` keeps the items with a search pair of ANY
  split, and the search split by query then leaves some of them without a search training pair
  (on ml-latest-small 28% of the search test pairs) while rec trains them, so only the joint
  model was ever trained to emit those targets. Dropping held-out examples changes no training
  split (a rec valid/test row is one example of its session; the session, its training examples
  and the stored histories stay, and search splits by query), so the training targets read here
  are those of the result: one pass is the fixed point. (The loaders' leak rule,
  `raw.search_pairs_without_heldout`, needs rounds because its drops move the held-out
  positions; these do not.) Nothing is dropped when every held-out target is already trained by
  both tasks (the simulator by construction): the arrays are then left as they were.
  """
  trained = [_distinct(arrays[t]["train"]["target_item"]) for t in TASKS]
  both = np.intersect1d(*trained)
  dropped = {}
  for task in TASKS:
    for split in ("valid", "test"):
      a = arrays[task][split]
      keep = np.isin(a["target_item"], both)
      dropped[f"{task}_{split}_dropped_not_trained_in_both"] = int(len(keep) - keep.sum())
      if task == "search":
        queries = _first_seen(a["query_id"][keep])  # the kept queries, in first-seen order
        dropped[f"search_{split}_queries_dropped_not_trained_in_both"] = int(
          len(a["query_tokens"]) - len(queries)
        )
      if keep.all():
        continue
      if task == "search":
        local = np.zeros(len(a["query_tokens"]), np.int32)
        local[queries] = np.arange(len(queries), dtype=np.int32)
        arrays[task][split] = {
          "query_tokens": a["query_tokens"][queries],
          "target_item": a["target_item"][keep],
          "query_id": local[a["query_id"][keep]],
        }
      else:  # the split's stored session prefixes stay: kept rows point into them
        arrays[task][split] = {
          **a,
          "history_first": a["history_first"][keep],
          "history_len": a["history_len"][keep],
          "target_item": a["target_item"][keep],
          "query_id": np.arange(int(keep.sum()), dtype=np.int32),
        }
  return dropped


def heldout_coverage(arrays) -> dict[str, float | None]:
  """Share of each task's valid/test examples whose target is a training target of each task.

  Keys `<task>_<split>_in_<other>_train`. 1.0 everywhere means no held-out target is one that a
  task-specific model never trains (the paper's item filter); below 1, a single-task model is
  tested on items it cannot return, a gain built in for the joint model. None: no examples.
  """
  trained = {t: _distinct(arrays[t]["train"]["target_item"]) for t in TASKS}
  out = {}
  for task in TASKS:
    for split in ("valid", "test"):
      targets = arrays[task][split]["target_item"]
      for other in TASKS:
        out[f"{task}_{split}_in_{other}_train"] = (
          float(np.isin(targets, trained[other]).mean()) if len(targets) else None
        )
  return out


def _make_catalog(item_ids, token_offset: int, titles, metadata, dc, embedder=None, out_dir=None):
  """(ItemCatalog, semantic diagnostics or None) for `data.id_scheme` (`embedder`: bi-encoder
  embeddings, `item_embeddings.BiencoderFile`). Semantic IDs also write, into `out_dir`, what
  cold start needs (`_save_cold_start`); atomic datasets get no new file."""
  scheme = str(dc.get("id_scheme", "atomic"))
  if scheme == "atomic":
    return catalog_lib.ItemCatalog(
      item_ids, token_offset=token_offset, titles=titles, metadata=metadata
    ), None
  if scheme != "semantic":
    raise DataError(
      "<config>", 0, "data.id_scheme", f"expected one of {catalog_lib.ID_SCHEMES}, got {scheme!r}"
    )
  from gr_jax.data import semantic_ids  # pylint: disable=g-import-not-at-top

  # Built from catalogue metadata (or the user's embedding file), or from a bi-encoder trained on
  # the training splits only: never from held-out interactions.
  sem = semantic_ids.build_semantic_ids(
    dc.semantic, titles, metadata, item_ids=item_ids, embedder=embedder
  )
  cat = catalog_lib.ItemCatalog(
    item_ids,
    token_offset=token_offset,
    titles=titles,
    metadata=metadata,
    id_scheme="semantic",
    codes=sem.codes,
    levels=sem.levels,
    codebook_size=sem.codebook_size,
    num_disambiguation=sem.num_disambiguation,
  )
  if out_dir is not None:
    _save_cold_start(out_dir, sem, dc.semantic)
  return cat, sem.info


def _save_cold_start(out_dir: str, sem, sc) -> None:
  """`cold_start.COLD_START_FILE`: the RQ-KMeans codebooks, the normalisation flag and (content
  embeddings) the fitted TF-IDF + SVD map as plain arrays, so that `gr_jax.add_items` can give an
  item added after training an ID without retraining. Listed in the manifest's sha256 like every
  file of the dataset. Bi-encoder embeddings store it too; cold start refuses them on reading
  (a new item has no trained vector)."""
  from gr_jax.data import cold_start  # pylint: disable=g-import-not-at-top

  save_npz(os.path.join(out_dir, cold_start.COLD_START_FILE), cold_start.cold_start_arrays(sem, sc))


def build(raw: RawData, dc, out_dir: str, embedder=None) -> dict[str, Any]:
  """Writes everything but the manifest into out_dir; returns the manifest body.

  `embedder`: when the semantic IDs come from a bi-encoder, what gives its item vectors:
  `embedder(item_ids)` -> (float32 [N, dim] in catalogue order, manifest info) and
  `embedder.check_examples(arrays)` (an `item_embeddings.BiencoderFile`)."""
  counts: dict[str, Any] = {
    "raw_items": len(raw.items),
    "raw_search_pairs": len(raw.search_pairs),
    "raw_sessions": len(raw.sessions),
  }
  # Normalised once per distinct query (an MPD playlist name is the query of each of its tracks);
  # the pairs are columns from here on (`raw.PairColumns`).
  rule = heldout_coverage_rule(dc)
  pairs = _normalised_pairs(pair_columns(raw.search_pairs))
  empty_query = [k for k, q in enumerate(pairs.queries) if not q]
  if empty_query:
    empty = int(np.isin(pairs.query, empty_query).sum())
    raise DataError(
      "<search pairs>",
      0,
      "query",
      f"{empty} empty queries reached prepare; loaders must report them with their line",
    )
  log.info("prepare: %d search pairs, %d sessions: filtering items", len(pairs), len(raw.sessions))
  pairs, sessions = _filter_items(pairs, raw.sessions, dc, counts)
  design = search_split_design(dc)
  pairs = _assign_search_splits(pairs, dc)

  # Catalogue: loader order first, then items only seen in interactions (sorted, deterministic).
  used = pairs.item_set() | {i for _, items in sessions for i in items}
  meta_of = {
    i: (t, m)
    for i, t, m in zip(
      raw.items, raw.titles or [""] * len(raw.items), raw.metadata or [{}] * len(raw.items)
    )
  }
  item_ids = [i for i in raw.items if i in used] + sorted(used - set(raw.items))
  counts["items"] = len(item_ids)
  if not item_ids:
    raise DataError(
      "<dataset>",
      0,
      "items",
      "no item left after filtering "
      f"(items_in_both_tasks={dc.items_in_both_tasks}); check the raw data",
    )

  # Tokenizer.
  if dc.tokenizer.path:
    tok = tokenizer_lib.TextTokenizer.load(dc.tokenizer.path)
  else:
    # The training pairs' queries (one sentence per pair), then the item titles.
    train_q = pairs.query[pairs.split == SPLIT_CODE["train"]]
    titles = [meta_of.get(i, ("", {}))[0] for i in item_ids]
    n_text = len(train_q) + len(titles)
    cap = int(dc.tokenizer.get("max_sentences", 0) or 0)
    counts["tokenizer_sentences"] = n_text
    chosen = np.arange(n_text)
    if 0 < cap < n_text:
      # A seeded uniform sample keeps the text's word frequencies; SentencePiece's time grows
      # with its input (58 s for 10 MPD slices' 1M sentences, hours for the full MPD's 68M).
      keep = np.random.default_rng([int(dc.split_seed), 7177]).choice(n_text, cap, replace=False)
      chosen = np.sort(keep)
      counts["tokenizer_sentences_sampled"] = cap
    n_q = int(np.searchsorted(chosen, len(train_q)))  # the chosen query sentences come first
    text = [pairs.queries[q] for q in train_q[chosen[:n_q]].tolist()]
    text += [titles[k - len(train_q)] for k in chosen[n_q:].tolist()]
    log.info("prepare: training the tokenizer on %d sentences", len(text))
    tok = tokenizer_lib.train_tokenizer(text, int(dc.tokenizer.vocab_size))
  tok.save(os.path.join(out_dir, "tokenizer"))
  cat, semantic_info = _make_catalog(
    item_ids,
    tok.text_vocab_size,
    [meta_of.get(i, ("", {}))[0] for i in item_ids],
    [meta_of.get(i, ("", {}))[1] for i in item_ids],
    dc,
    embedder,
    out_dir=out_dir,
  )
  cat.save(os.path.join(out_dir, "catalog.json"))
  log.info("prepare: %d items in the catalogue; building the splits", cat.num_items)

  truncated: dict[str, int] = {}
  arrays = {
    "search": {s: _search_arrays(pairs, s, cat, tok, dc, truncated) for s in SPLITS},
    "rec": _rec_arrays(
      cat.indices(itertools.chain.from_iterable(items for _, items in sessions)),
      [len(items) for _, items in sessions],
      cat,
      dc,
    ),
  }
  # Queries longer than the encoder takes are cut, never dropped: say how many.
  counts["search_queries_truncated"] = int(truncated.get("texts", 0))
  if counts["search_queries_truncated"]:
    log.warning(
      "prepare: %d distinct search queries are longer than min(data.max_query_tokens=%d, "
      "data.encoder_len=%d) tokens (EOS included) and were cut to fit",
      counts["search_queries_truncated"],
      int(dc.max_query_tokens),
      int(dc.encoder_len),
    )
  if rule == "trained_in_both":
    dropped = keep_heldout_trained_in_both(arrays)
    counts.update(dropped)
    log.info(
      "prepare: held-out examples whose item is not a training target of both tasks dropped "
      "(data.heldout_coverage_rule=trained_in_both): %s",
      ", ".join(f"{k.split('_dropped')[0]} {v}" for k, v in dropped.items()),
    )
    for task in TASKS:
      for split in ("valid", "test"):
        if dropped[f"{task}_{split}_dropped_not_trained_in_both"] and not len(
          arrays[task][split]["target_item"]
        ):
          log.warning(
            "prepare: %s %s has no example left: none of its targets is a training target of "
            "both tasks (data.heldout_coverage_rule='paper' keeps them)",
            task,
            split,
          )
  if embedder is not None:  # the bi-encoder trained on these very examples (with atomic IDs)
    embedder.check_examples(arrays)
  for task in TASKS:
    os.makedirs(os.path.join(out_dir, task), exist_ok=True)
    for split in SPLITS:
      save_npz(os.path.join(out_dir, task, f"{split}.npz"), arrays[task][split])

  # Statistics.
  n = cat.num_items
  split_counts = {
    t: {
      s: {
        "examples": int(len(arrays[t][s]["target_item"])),
        "queries": int(len(_distinct(arrays[t][s]["query_id"]))),
      }
      for s in SPLITS
    }
    for t in TASKS
  }
  train_s = arrays["search"]["train"]["target_item"]
  train_r = arrays["rec"]["train"]["target_item"]
  items_s, items_r = set(_distinct(train_s).tolist()), set(_distinct(train_r).tolist())
  union = items_s | items_r
  p_s, p_r = _popularity(train_s, n), _popularity(train_r, n)
  overlap = {
    "train_items_search": len(items_s),
    "train_items_rec": len(items_r),
    "train_items_both": len(items_s & items_r),
    "jaccard": len(items_s & items_r) / len(union) if union else 0.0,
    **heldout_coverage(arrays),
  }
  return {
    "counts": counts,
    "splits": split_counts,
    "num_items": n,
    "sessions": len(sessions),
    "text_vocab_size": tok.text_vocab_size,
    "tokenizer_pieces": tok.piece_size,
    "encoder_len": int(dc.encoder_len),
    # Semantic IDs fix the decoder length themselves: codes + EOS.
    "decoder_len": (int(dc.decoder_len) if semantic_info is None else cat.tokens_per_item + 1),
    "rec_max_history": rec_history_len(dc, cat.tokens_per_item),
    **(
      {} if semantic_info is None else {"id_scheme": cat.id_scheme, "semantic_ids": semantic_info}
    ),
    "overlap": overlap,
    "heldout_coverage_rule": rule,
    **(
      {} if design == "by_query" else {"search_split": _search_split_info(pairs, cat, arrays, rule)}
    ),
    "popularity_kl": {
      "search_rec": kl_divergence(p_s, p_r),
      "rec_search": kl_divergence(p_r, p_s),
      "smoothing": KL_SMOOTHING,
      "over": "training targets",
    },
    "skipped_rows": raw.bad_rows.to_dict(),
    "source_stats": raw.stats,
  }


def _file_hashes(root: str) -> dict[str, str]:
  out = {}
  for dirpath, _, files in os.walk(root):
    for name in files:
      path = os.path.join(dirpath, name)
      rel = os.path.relpath(path, root)
      if rel != "manifest.json":
        out[rel] = sha256_file(path)
  return dict(sorted(out.items()))


def _existing(out_dir: str, want_hash: str) -> bool:
  """True if out_dir holds a complete dataset of this config; raises if it holds another."""
  if not os.path.exists(out_dir):
    return False
  manifest = os.path.join(out_dir, "manifest.json")
  if not os.path.exists(manifest):
    raise DataError(
      out_dir,
      0,
      "manifest.json",
      "directory exists but is not a complete processed "
      "dataset; remove it or choose another output directory",
    )
  with open(manifest) as f:
    have = json.load(f).get("config_hash")
  if have != want_hash:
    raise DataError(
      manifest,
      0,
      "config_hash",
      f"a dataset of another data config is here "
      f"(hash {str(have)[:12]}, want {want_hash[:12]}); use another directory",
    )
  return True


def _pid_start_time(pid: int) -> float | None:
  """Wall-clock start of a running process (Linux /proc), None when unknown or not running."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime, clock ticks
    with open("/proc/uptime") as f:
      uptime = float(f.read().split()[0])
    import time

    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError):
    return None


def remove_stale_tmp_dirs(out_dir: str) -> list[str]:
  """Removes `.<name>.tmp-<pid>-*` dirs beside out_dir that a killed prepare left behind.

  A temp dir is stale when its pid is not running, or when that pid's process started after the
  dir was last written (the pid was reused). A live prepare of the same destination keeps its own.
  """
  parent, name = os.path.dirname(out_dir), os.path.basename(out_dir)
  prefix = f".{name}.tmp-"
  removed = []
  try:
    entries = os.listdir(parent)
  except OSError:
    return removed
  for entry in entries:
    if not entry.startswith(prefix):
      continue
    pid_text = entry[len(prefix) :].split("-", 1)[0]
    if not pid_text.isdigit():
      continue
    path = os.path.join(parent, entry)
    pid = int(pid_text)
    try:
      mtime = os.stat(path).st_mtime
    except OSError:
      continue  # already gone
    if not workdir_lock.pid_alive(pid):
      stale = True
    else:  # this process's own temp dirs (other threads) are alive and started before them
      started = _pid_start_time(pid)
      stale = started is not None and started > mtime + 1.0
    if stale:
      shutil.rmtree(path, ignore_errors=True)
      removed.append(path)
  return removed


def _biencoder_embedder(config):
  """The bi-encoder item vectors of semantic IDs of search | rec | joint embeddings, from the file
  `gr_jax.embed_items` wrote (checked against the whole run config: data and
  baselines.biencoder; a missing file stops here, before any work); None for other datasets."""
  if not _biencoder_kind(_plain(data_config_of(config))):
    return None
  from gr_jax.data import item_embeddings  # pylint: disable=g-import-not-at-top

  return item_embeddings.BiencoderFile(config)


def _read_manifest(out_dir: str) -> dict:
  with open(os.path.join(out_dir, "manifest.json")) as f:
    return json.load(f)


def prepare_dataset(config, out_dir: str, *, raw_changed: str = "rebuild") -> str:
  """Builds the processed dataset at out_dir (atomic; a no-op when it is already there).

  A dataset of the same config whose raw inputs changed since it was built (`raw_inputs.changed`:
  an edited ratings.csv, a replaced embedding .npy) is rebuilt with a warning saying which file
  changed (`raw_changed="rebuild"`), or is a DataError naming it (`"error"`: train, whose
  checkpoints were trained on the data as it was)."""
  from gr_jax.data import raw_inputs  # pylint: disable=g-import-not-at-top

  if raw_changed not in ("rebuild", "error"):
    raise ValueError(f"raw_changed: expected 'rebuild' or 'error', got {raw_changed!r}")
  dc = data_config_of(config)
  # gs://... through os.path would be a local directory named `gs:` in the cwd.
  out_dir = workdir_lib.local_dir(out_dir, "the processed dataset", workdir_lib.DATASET_REMEDY)
  # The whole config: bi-encoder semantic IDs hash baselines.biencoder too (an atomic or content
  # dataset hashes its data section exactly as before).
  want = config_hash(config)
  replacing = False
  if _existing(out_dir, want):
    manifest = _read_manifest(out_dir)
    why = raw_inputs.changed(manifest, config, where=f"the dataset {out_dir}")
    if why is None and _biencoder_kind(_plain(data_config_of(config))):
      from gr_jax.data import item_embeddings  # pylint: disable=g-import-not-at-top

      why = item_embeddings.biencoder_file_changed(manifest, config)
    if why is None:
      return out_dir
    if raw_changed == "error":
      raise DataError(
        os.path.join(out_dir, "manifest.json"),
        0,
        "raw_inputs",
        f"{why}: rebuild it with python -m gr_jax.prepare (same config and workdir), then "
        "train a new run on it (checkpoints here were trained on the old data)",
      )
    log.warning("prepare: %s; rebuilding it", why)
    replacing = True
  embedder = _biencoder_embedder(config)
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  remove_stale_tmp_dirs(out_dir)  # left by a killed (kill -9) prepare of this destination
  stem = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{os.getpid()}")
  tmp = f"{stem}-{uuid.uuid4().hex[:8]}"
  old = f"{stem}-old-{uuid.uuid4().hex[:8]}"  # a replaced dataset, until the new one is in place
  os.makedirs(tmp)
  try:
    # Hashed before reading: a file edited while prepare runs is seen as changed on the rerun.
    inputs = raw_inputs.record(raw_inputs.input_files(config))
    raw = load_raw(dc)
    body = build(raw, dc, tmp, embedder)
    manifest = {
      "format_version": FORMAT_VERSION,
      "source": dc.source,
      "config_hash": want,
      "config": dataset_config(config),
      **body,
      "raw_files": {
        os.path.basename(p): inputs[os.path.abspath(p)]["sha256"]
        if os.path.abspath(p) in inputs
        else sha256_file(p)
        for p in raw.files
      },
      # Compared on every rerun (raw_inputs.changed): a changed input rebuilds the dataset.
      "raw_inputs": inputs,
      "files": _file_hashes(tmp),
    }
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
      json.dump(manifest, f, indent=1, sort_keys=True)
    try:
      if replacing and os.path.exists(out_dir):
        # Killed between these two renames, a rerun finds no dataset and builds it again; the
        # old one is a stale temp dir by then (remove_stale_tmp_dirs).
        os.rename(out_dir, old)
      os.rename(tmp, out_dir)  # the commit point
    except OSError:
      # Another process finished first: accept its result if it is the same dataset.
      if _existing(out_dir, want) and raw_inputs.changed(_read_manifest(out_dir), config) is None:
        return out_dir
      raise
  finally:
    for path in (tmp, old):
      if os.path.exists(path):
        shutil.rmtree(path, ignore_errors=True)
  return out_dir
