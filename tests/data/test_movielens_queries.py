"""The MovieLens study's search side with power (issue 26 item 4): `data.search_split`.

configs/movielens.py splits the tag pairs within each movie ("within_item"): every movie keeps one
training pair, 20% + 20% of the pairs are held out, each held-out (tag, movie) pair its own query.
On ml-latest-small that gives 325 test queries where the split by distinct tag ("by_query", the
base default) gave 28: the 294 distinct tags cannot give 300. Checked here: the count, determinism
given data.split_seed, that no held-out pair is a training pair, the leak and coverage invariants,
and that every by_query dataset keeps its bytes and its hash.
"""

import json
import os

import ml_collections
import numpy as np
import pytest

from configs import movielens as movielens_config
from gr_jax import config_check
from gr_jax.data import ProcessedDataset, movielens, prepare, prepare_dataset
from gr_jax.data.errors import DataError
from gr_jax.data.raw import SPLIT_CODE, PairColumns, pair_columns
from tests.data.conftest import DATA, tiny_config
from tests.data.test_loaders import _cfg
from tests.data.test_real_data_leaks import (
  _actual_heldout,
  _check_heldout_not_in_history,
  _check_no_tag_leak,
  _tag_rows,
)

ML = os.path.join(DATA, "ml-latest-small")
HELDOUT = ("valid", "test")
pytestmark = pytest.mark.skipif(not os.path.isdir(ML), reason="needs ml-latest-small")


def _ml_config(**data):
  c = movielens_config.get_config()
  c.data.path = ML
  for k, v in data.items():
    c.data[k] = v
  return c


@pytest.fixture(scope="module")
def ml_within(tmp_path_factory):
  """configs/movielens.py's dataset on ml-latest-small (a prepare takes a few seconds)."""
  return ProcessedDataset(prepare_dataset(_ml_config(), str(tmp_path_factory.mktemp("ml") / "ds")))


def _pairs(ds, split):
  """(query row tokens, target item) of a search split, one per example."""
  a = ds.split("search", split)
  rows = np.asarray(a["encoder_input_ids"])
  return [(tuple(r), t) for r, t in zip(rows.tolist(), a["target_item"].tolist())]


def test_default_movielens_config_has_300_test_queries(ml_within):
  m = ml_within.manifest
  assert m["config"]["search_split"] == "within_item"
  search = m["splits"]["search"]
  assert search["test"]["queries"] >= 300 and search["valid"]["queries"] >= 300
  info = m["search_split"]
  assert info["design"] == "within_item"
  for split in ("train",) + HELDOUT:
    assert info[split]["queries"] == search[split]["queries"]
    assert info[split]["pairs"] == search[split]["examples"]
  for split in HELDOUT:
    # One relevant movie per held-out query; a tag may be the query of several of them.
    qid = ml_within.split("search", split)["query_id"]
    assert len(np.unique(qid)) == len(qid) == info[split]["queries"]
    assert info[split]["query_texts"] < info[split]["queries"]
    assert 0 < info[split]["queries_text_in_train"] <= info[split]["queries"]
  assert m["config"]["movielens"]["query_sources"] == ["tags"]


def test_no_heldout_pair_is_a_training_pair(ml_within):
  train = set(_pairs(ml_within, "train"))
  search_trained = {t for _, t in train}
  rec_trained = set(ml_within.split("rec", "train")["target_item"].tolist())
  for split in HELDOUT:
    held = _pairs(ml_within, split)
    assert not set(held) & train, split
    # Each held-out movie was trained under another tag, by both tasks.
    assert {t for _, t in held} <= search_trained & rec_trained
  assert not set(_pairs(ml_within, "valid")) & set(_pairs(ml_within, "test"))


def test_split_pairs_partition_the_loader_pairs():
  # At the pair level: every loader pair in exactly one split, every item with a training pair,
  # exact held-out counts, and held-out pairs never a training (text, item).
  c = _ml_config()
  raw = movielens.load(c.data)
  pairs = prepare._normalised_pairs(pair_columns(raw.search_pairs))
  pairs, _ = prepare._filter_items(pairs, raw.sessions, c.data, {})
  out = prepare._assign_search_splits(pairs, c.data)
  texts = [(out.queries[q], out.items[i]) for q, i in zip(out.query.tolist(), out.item.tolist())]
  assert sorted(texts) == sorted(
    (pairs.queries[q], pairs.items[i]) for q, i in zip(pairs.query.tolist(), pairs.item.tolist())
  )
  by_split = {
    s: {p for p, k in zip(texts, out.split.tolist()) if k == SPLIT_CODE[s]} for s in SPLIT_CODE if s
  }
  assert sum(len(v) for v in by_split.values()) == len(texts) == len(set(texts))
  assert {i for _, i in by_split["train"]} == set(pairs.items[i] for i in pairs.item.tolist())
  for split in HELDOUT:
    assert len(by_split[split]) == round(0.2 * len(texts))
  assert len(set(out.query[out.split != SPLIT_CODE["train"]].tolist())) == 2 * round(
    0.2 * len(texts)
  )


def test_within_item_split_is_deterministic(ml_within, tmp_path):
  again = ProcessedDataset(prepare_dataset(_ml_config(), str(tmp_path / "again")))
  assert again.manifest["files"] == ml_within.manifest["files"]
  assert again.manifest["search_split"] == ml_within.manifest["search_split"]
  other = ProcessedDataset(prepare_dataset(_ml_config(split_seed=1), str(tmp_path / "seed1")))
  assert _pairs(other, "test") != _pairs(ml_within, "test")
  assert (
    other.manifest["splits"]["search"]["test"] == ml_within.manifest["splits"]["search"]["test"]
  )


def test_leak_and_coverage_invariants_hold(ml_within):
  c = _ml_config()
  raw = movielens.load(c.data)
  heldout = _actual_heldout(raw, ml_within)
  _check_no_tag_leak(raw, _tag_rows(os.path.join(ML, "tags.csv")), heldout)
  _check_heldout_not_in_history(ml_within)
  m = ml_within.manifest
  assert m["heldout_coverage_rule"] == "trained_in_both"
  assert all(v in (1.0, None) for k, v in m["overlap"].items() if k.endswith("_train")), m[
    "overlap"
  ]
  # Every movie keeps a search training pair, so the rule finds nothing to drop here.
  assert not any(v for k, v in m["counts"].items() if "dropped_not_trained_in_both" in k)
  assert m["source_stats"]["search_pairs_dropped_heldout"] > 0


def test_by_query_default_keeps_bytes_and_hash(tiny_dataset_dir, tmp_path):
  # A config saved before the knob has no search_split: it hashes and prepares as the default.
  assert tiny_config().data.search_split == "by_query"
  old = tiny_config()
  del old.data["search_split"]
  assert prepare.config_hash(old) == prepare.config_hash(tiny_config())
  again = prepare_dataset(old, str(tmp_path / "old"))
  with open(os.path.join(tiny_dataset_dir, "manifest.json"), "rb") as f:
    ours = f.read()
  with open(os.path.join(again, "manifest.json"), "rb") as f:
    assert f.read() == ours  # the files' sha256 are in it
  assert "search_split" not in json.loads(ours) and "search_split" not in json.loads(ours)["config"]
  # Real data, split by query: the same assignment with and without the knob.
  c = _cfg("movielens", ML, tokenizer__vocab_size=800)
  raw = movielens.load(c.data)
  pairs = prepare._filter_items(
    prepare._normalised_pairs(pair_columns(raw.search_pairs)), raw.sessions, c.data, {}
  )[0]
  ours = prepare._assign_search_splits(pairs, c.data)
  del c.data["search_split"]
  assert prepare._assign_search_splits(pairs, c.data) == ours
  assert "search_split" not in prepare.dataset_config(c)


def _config(valid, test, seed=0):
  return ml_collections.ConfigDict(
    {
      "search_split": "within_item",
      "search_valid_fraction": valid,
      "search_test_fraction": test,
      "split_seed": seed,
    }
  )


def _toy_pairs(order):
  """Item i has i + 1 pairs (10 items, 55 pairs); item 0 also a loader-fixed training pair."""
  rows = [(f"tag {k}", f"m{i}", "") for i in range(10) for k in range(i + 1)]
  rows = [rows[k] for k in order] + [("fixed", "m0", "train")]
  return PairColumns.from_tuples(rows)


def _assignment(pairs):
  return sorted(
    (pairs.queries[q], pairs.items[i], s)
    for q, i, s in zip(pairs.query.tolist(), pairs.item.tolist(), pairs.split.tolist())
  )


def test_within_item_on_toy_pairs():
  pairs = _toy_pairs(range(55))
  out = prepare._assign_search_splits(pairs, _config(0.2, 0.2))
  split = out.split.tolist()
  assert split.count(SPLIT_CODE["valid"]) == split.count(SPLIT_CODE["test"]) == 11
  train_items = {out.items[i] for i, s in zip(out.item.tolist(), split) if s == SPLIT_CODE["train"]}
  assert train_items == {f"m{i}" for i in range(10)}
  # Item 0's one open pair may be held out: the loader already gave it a training pair.
  shuffled = _toy_pairs(np.random.default_rng(3).permutation(55).tolist())
  assert _assignment(prepare._assign_search_splits(shuffled, _config(0.2, 0.2))) == _assignment(out)
  assert _assignment(prepare._assign_search_splits(pairs, _config(0.2, 0.2, 1))) != _assignment(out)
  # A repeated search (the same (query, item) twice) is one pair: its rows share split and query.
  repeated = PairColumns.from_tuples(list(_toy_pairs(range(55))) + [("tag 3", "m9", "")] * 2)
  rows = [k for k, (q, i, _) in enumerate(repeated) if (q, i) == ("tag 3", "m9")]
  splits = set()
  for seed in range(10):
    out = prepare._assign_search_splits(repeated, _config(0.2, 0.2, seed))
    assert len({(out.split[k], out.query[k]) for k in rows}) == 1 and len(rows) == 3
    splits.add(int(out.split[rows[0]]))
  assert splits != {SPLIT_CODE["train"]}  # held out under some seeds
  # 55 pairs, 9 anchors: at most 46 held out.
  prepare._assign_search_splits(pairs, _config(0.42, 0.42))
  with pytest.raises(DataError, match="within_item.*lower them"):
    prepare._assign_search_splits(pairs, _config(0.45, 0.45))


def test_unknown_design_refused(tmp_path):
  assert config_check.SEARCH_SPLITS == prepare.SEARCH_SPLITS
  c = tiny_config()
  c.data.search_split = "within-item"
  with pytest.raises(config_check.ConfigError, match="search_split"):
    config_check.validate(c)
  with pytest.raises(DataError, match="search_split"):
    prepare_dataset(c, str(tmp_path / "bad"))
