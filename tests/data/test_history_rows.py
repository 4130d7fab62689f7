"""Rec splits stored as sessions + offsets (`dataset.HistoryRows`) against a plain-Python reference
of the leave-last-out rows, the array behaviour consumers rely on, and the old stored format."""

import os
import types

import numpy as np
import pytest

from gr_jax.data import DataError, ProcessedDataset, prepare_dataset
from gr_jax.data import dataset as dataset_lib
from gr_jax.data import raw as raw_lib
from gr_jax.data.catalog import ItemCatalog
from gr_jax.data.dataset import HISTORY_KEYS, HistoryRows, QueryRows
from gr_jax.data.prepare import _rec_arrays, save_npz
from tests.data.conftest import tiny_config

EOS = 1


def _sessions(seed=0, n_items=15, n=25):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, n_items, size=int(rng.integers(3, 11))) for _ in range(n)]


def _semantic(n):
  # Two levels of 4 codes + a disambiguation code: 3 tokens per item, every tuple distinct.
  codes = np.stack([np.arange(n) % 4, (np.arange(n) // 4) % 4, np.arange(n) // 16], 1)
  return ItemCatalog(
    [f"i{i}" for i in range(n)],
    token_offset=50,
    id_scheme="semantic",
    codes=codes,
    levels=2,
    codebook_size=4,
    num_disambiguation=int(codes[:, 2].max()) + 1,
  )


def _reference_rows(sessions, catalog, enc_len, max_hist):
  """Per split, rows written out one example at a time from the leave-last-out rule."""
  out = {"train": [], "valid": [], "test": []}
  for s in sessions:
    n = len(s)
    targets = {"train": range(1, n - 2), "valid": [n - 2], "test": [n - 1]}
    for split, positions in targets.items():
      for t in positions:
        hist = s[max(0, t - max_hist) : t]
        toks = [int(x) for h in hist for x in catalog.item_tokens(np.asarray([h]))[0]]
        row = toks + [EOS] + [0] * (enc_len - len(toks) - 1)
        out[split].append((row, int(s[t])))
  return out


@pytest.mark.parametrize("scheme", ["atomic", "semantic"])
def test_rows_equal_the_leave_last_out_reference(scheme):
  sessions = _sessions()
  cat = ItemCatalog([f"i{i}" for i in range(16)], token_offset=50) if scheme == "atomic" else None
  cat = cat or _semantic(16)
  enc_len, max_hist = (6, 5) if scheme == "atomic" else (13, 4)
  dc = types.SimpleNamespace(encoder_len=enc_len, max_history=max_hist)
  arrays = _rec_arrays(np.concatenate(sessions), [len(s) for s in sessions], cat, dc)
  want = _reference_rows(sessions, cat, enc_len, max_hist)
  for split, rows in want.items():
    a = arrays[split]
    got = HistoryRows(*(a[k] for k in HISTORY_KEYS), cat, enc_len)
    assert got.shape == (len(rows), enc_len)
    np.testing.assert_array_equal(np.asarray(got), np.asarray([r for r, _ in rows], np.int32))
    np.testing.assert_array_equal(a["target_item"], [t for _, t in rows])
    assert [h.tolist() for h in got.item_histories()] == [
      h.tolist() for h in cat.histories(np.asarray(got))
    ]


def test_a_split_file_holds_no_later_target():
  """history_items of train and valid are every session without its last two items; test's
  without its last: the valid/test targets are not in the training file at all."""
  sessions = _sessions(seed=3)
  cat = ItemCatalog([f"i{i}" for i in range(16)], token_offset=50)
  dc = types.SimpleNamespace(encoder_len=8, max_history=7)
  arrays = _rec_arrays(np.concatenate(sessions), [len(s) for s in sessions], cat, dc)
  for split, drop in (("train", 2), ("valid", 2), ("test", 1)):
    want = np.concatenate([s[: len(s) - drop] for s in sessions])
    np.testing.assert_array_equal(arrays[split]["history_items"], want)


def test_behaves_as_an_int32_array():
  sessions = _sessions(seed=5)
  cat = ItemCatalog([f"i{i}" for i in range(16)], token_offset=50)
  dc = types.SimpleNamespace(encoder_len=7, max_history=6)
  a = _rec_arrays(np.concatenate(sessions), [len(s) for s in sessions], cat, dc)["train"]
  rows = HistoryRows(*(a[k] for k in HISTORY_KEYS), cat, 7)
  dense = np.asarray(rows)
  assert rows.dtype == np.int32 and dense.dtype == np.int32 and len(rows) == len(dense)
  idx = np.asarray([3, 0, -1, 3])
  np.testing.assert_array_equal(rows[idx], dense[idx])
  np.testing.assert_array_equal(rows[2], dense[2])
  np.testing.assert_array_equal(rows[-2], dense[-2])
  np.testing.assert_array_equal(rows[5:1:-2], dense[5:1:-2])
  np.testing.assert_array_equal(rows[:, :3], dense[:, :3])
  np.testing.assert_array_equal(rows[4, 1:], dense[4, 1:])
  mask = dense[:, 0] > 55
  np.testing.assert_array_equal(rows[mask], dense[mask])
  np.testing.assert_array_equal(rows[dense > 1], dense[dense > 1])
  np.testing.assert_array_equal(rows == EOS, dense == EOS)
  np.testing.assert_array_equal(np.stack(list(rows)), dense)
  np.testing.assert_array_equal(np.asarray(rows.take(idx)), dense[idx])
  assert rows.astype(np.int64).dtype == np.int64
  with pytest.raises(IndexError):
    rows[np.asarray([len(rows)])]
  with pytest.raises(IndexError):
    rows[np.ones(len(rows) + 1, bool)]


def test_out_of_range_offsets_name_the_file():
  cat = ItemCatalog([f"i{i}" for i in range(4)], token_offset=50)
  with pytest.raises(DataError, match=r"rec/train\.npz.*row 1: history items \[2, 5\) of 4"):
    HistoryRows(np.arange(4), [0, 2], [2, 3], cat, 6, source="rec/train.npz")
  with pytest.raises(DataError, match="must fit encoder_len 3 with EOS"):
    HistoryRows(np.arange(4), [0], [3], cat, 3, source="rec/train.npz")


def test_prepared_rec_splits_are_sessions_and_offsets_and_old_rows_still_load(tmp_path):
  out = prepare_dataset(tiny_config(), str(tmp_path / "ds"))
  ds = ProcessedDataset(out)
  with np.load(os.path.join(out, "rec", "train.npz")) as z:
    assert set(z.files) == set(HISTORY_KEYS) | {"target_item", "query_id"}
  rows = ds.split("rec", "train")["encoder_input_ids"]
  assert isinstance(rows, HistoryRows)
  # A dataset prepared before the change stores the rows themselves; it reads the same.
  dense = {k: v for k, v in ds.split("rec", "train").items() if k not in HISTORY_KEYS}
  dense["encoder_input_ids"] = np.asarray(rows)
  save_npz(os.path.join(out, "rec", "train.npz"), dense)
  old = ProcessedDataset(out).split("rec", "train")
  assert isinstance(old["encoder_input_ids"], np.ndarray)
  np.testing.assert_array_equal(old["encoder_input_ids"], np.asarray(rows))


def test_block_size_does_not_change_rows(monkeypatch):
  sessions = _sessions(seed=9, n=60)
  cat = ItemCatalog([f"i{i}" for i in range(16)], token_offset=50)
  dc = types.SimpleNamespace(encoder_len=6, max_history=5)
  a = _rec_arrays(np.concatenate(sessions), [len(s) for s in sessions], cat, dc)["train"]
  rows = HistoryRows(*(a[k] for k in HISTORY_KEYS), cat, 6)
  whole = np.asarray(rows)
  monkeypatch.setattr(dataset_lib, "HISTORY_BLOCK_ROWS", 7)
  assert len(rows) > 7
  np.testing.assert_array_equal(np.asarray(rows), whole)
  np.testing.assert_array_equal(np.stack(list(rows)), whole)


@pytest.mark.parametrize("items_in_both", [True, False])
@pytest.mark.parametrize("min_len", [3, 4])
def test_heldout_interactions_match_the_filtered_sessions(items_in_both, min_len):
  """The early-stopping scan equals filtering every session in full, then taking its last two."""
  rng = np.random.default_rng(min_len)
  sessions = [
    (f"u{u}", [f"i{x}" for x in rng.integers(0, 12, size=int(rng.integers(1, 12)))])
    for u in range(80)
  ]
  search_items = {f"i{x}" for x in range(0, 12, 2)}
  want = set()
  for user, items in sessions:
    kept = [i for i in items if i in search_items] if items_in_both else items
    if len(kept) >= min_len:
      want |= {(user, kept[-1]), (user, kept[-2])}
  got = raw_lib.heldout_interactions(sessions, search_items, items_in_both, min_len)
  assert got == want and want


def test_search_rows_are_one_stored_row_per_distinct_query(tmp_path):
  out = prepare_dataset(tiny_config(), str(tmp_path / "ds"))
  ds = ProcessedDataset(out)
  stored_rows = {}
  for split in ("train", "valid", "test"):
    with np.load(os.path.join(out, "search", f"{split}.npz")) as z:
      assert set(z.files) == {"query_tokens", "query_id", "target_item"}
      tokens, qid = z["query_tokens"], z["query_id"]
    assert len(tokens) == len(np.unique(qid)) and len(qid) >= len(tokens)
    stored_rows[split] = (len(tokens), len(qid))
    rows = ds.split("search", split)["encoder_input_ids"]
    assert isinstance(rows, QueryRows) and rows.shape == (len(qid), tokens.shape[1])
    np.testing.assert_array_equal(np.asarray(rows), tokens[qid])
    idx = np.asarray([len(qid) - 1, 0, 2])
    np.testing.assert_array_equal(rows[idx], tokens[qid[idx]])
    np.testing.assert_array_equal(np.asarray(rows.take(idx)), tokens[qid[idx]])
  assert stored_rows["train"][0] < stored_rows["train"][1]  # queries with several items
  with pytest.raises(DataError, match=r"s\.npz.*query ids must index the 2 stored queries"):
    QueryRows(np.zeros((2, 4), np.int32), [0, 2], source="s.npz")


def test_catalog_reads_stored_histories_as_it_reads_their_tokens(tmp_path):
  ds = ProcessedDataset(prepare_dataset(tiny_config(), str(tmp_path / "ds")))
  for split in ("train", "valid", "test"):
    rows = ds.split("rec", split)["encoder_input_ids"]
    stored = ds.catalog.histories(rows)  # this catalogue's rows: the stored item indices
    parsed = ds.catalog.histories(np.asarray(rows))  # the token rows, parsed
    assert [h.tolist() for h in stored] == [h.tolist() for h in parsed] and len(stored)
    assert all(h.dtype == np.int64 for h in stored)
