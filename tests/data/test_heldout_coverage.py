"""data.heldout_coverage_rule: held-out targets that both task-specific models were trained on.

Under the default ("trained_in_both") every source's prepared dataset keeps a search valid/test
pair or a rec valid/test target only if its item is a training target of both tasks; the paper's
rule ("paper") keeps them all, as prepare did before the knob. Checked for each source: the
simulator (tiny configs), MovieLens (ml-latest-small, where the paper's rule leaves 28% of the
search test pairs on items that only rec trains), and synthetic JSONL logs and MPD slices.
"""

import json
import os

import numpy as np
import pytest

from gr_jax.data import ProcessedDataset, prepare, prepare_dataset
from gr_jax.data.errors import DataError
from tests.data.conftest import DATA, tiny_config
from tests.data.test_loaders import _cfg, _mpd_slice, _playlist, _write_jsonl

ML = os.path.join(DATA, "ml-latest-small")
TASKS = ("search", "rec")
HELDOUT = ("valid", "test")
COVERAGE_KEYS = [f"{t}_{s}_in_{o}_train" for t in TASKS for s in HELDOUT for o in TASKS]
DROP_KEYS = [f"{t}_{s}_dropped_not_trained_in_both" for t in TASKS for s in HELDOUT] + [
  f"search_{s}_queries_dropped_not_trained_in_both" for s in HELDOUT
]


# ---------------------------------------------------------------------- synthetic raw data
def _jsonl_logs(d):
  """Zipf-skewed search log and sessions over 40 items; prepare holds out 10% + 10% of the
  queries, so some held-out queries target items that no training query has."""
  rng = np.random.default_rng(0)
  items = [{"item": f"t{i}", "title": f"track {i}"} for i in range(40)]
  search = [
    {"query": f"query {k}", "item": f"t{int(t) % 40}"}
    for k in range(120)
    for t in rng.zipf(1.5, int(rng.integers(1, 4)))
  ]
  sessions = [
    {"user": f"u{u}", "items": [f"t{int(t) % 40}" for t in rng.zipf(1.4, int(rng.integers(3, 10)))]}
    for u in range(80)
  ]
  return _write_jsonl(d, search=search, sessions=sessions, items=items)


def _mpd_slices(d):
  """Two slices of 60 playlists with Zipf-skewed tracks (as test_real_data_leaks.py's)."""
  rng = np.random.default_rng(0)
  for start in (0, 1000):
    _mpd_slice(
      d,
      start,
      [
        _playlist(
          start + k,
          f"list {start + k}",
          [f"s:{int(t)}" for t in rng.zipf(1.4, int(rng.integers(3, 12))) % 40],
        )
        for k in range(60)
      ],
    )
  return d


def _config(source, tmp_path, **sim):
  if source == "simulate":
    return tiny_config(**sim)
  if source == "movielens":
    return _cfg("movielens", ML, tokenizer__vocab_size=800)
  if source == "jsonl":
    return _cfg("jsonl", _jsonl_logs(tmp_path / "raw"), tokenizer__vocab_size=300)
  return _cfg("mpd", _mpd_slices(tmp_path / "raw"), tokenizer__vocab_size=300)


# Each source's default prepared dataset, and whether the paper's rule gives it held-out targets
# that are not training targets of both tasks (the simulator's default never does, by design).
CASES = [
  ("simulate", {}, False),
  ("simulate", {"heldout_in_both": False}, True),  # held-out targets drawn from every item
  ("movielens", {}, True),
  ("jsonl", {}, True),
  ("mpd", {}, True),
]
IDS = ["simulate", "simulate_any_heldout", "movielens", "jsonl", "mpd"]


def _prepared(source, tmp_path, rule=None, **sim):
  c = _config(source, tmp_path, **sim)
  if rule is not None:
    c.data.heldout_coverage_rule = rule
  return ProcessedDataset(prepare_dataset(c, str(tmp_path / f"ds_{rule or 'default'}")))


def _trained(ds):
  sets = [set(ds.split(t, "train")["target_item"].tolist()) for t in TASKS]
  return sets[0] & sets[1]


def _examples(ds, task, split, keep=None):
  """A held-out split as comparable examples: search {query row: targets}, rec [(history,
  target)] in order; only targets in `keep` when given."""
  a = ds.split(task, split)
  rows = np.asarray(a["encoder_input_ids"])
  targets = a["target_item"].tolist()
  ok = [keep is None or t in keep for t in targets]
  if task == "rec":
    return [(tuple(rows[k].tolist()), t) for k, t in enumerate(targets) if ok[k]]
  out = {}
  for k, t in enumerate(targets):
    if ok[k]:
      out.setdefault(tuple(rows[k].tolist()), []).append(t)
  return out


@pytest.mark.parametrize("source,sim,paper_uncovered", CASES, ids=IDS)
def test_heldout_targets_are_training_targets_of_both_tasks(tmp_path, source, sim, paper_uncovered):
  ds = _prepared(source, tmp_path, **sim)
  trained = _trained(ds)
  for task in TASKS:
    for split in HELDOUT:
      targets = set(ds.split(task, split)["target_item"].tolist())
      assert targets <= trained, (task, split, sorted(targets - trained))
  overlap = ds.manifest["overlap"]
  assert all(overlap[k] in (1.0, None) for k in COVERAGE_KEYS), overlap
  assert ds.manifest["heldout_coverage_rule"] == "trained_in_both"
  counts = ds.manifest["counts"]
  assert set(DROP_KEYS) <= set(counts)
  dropped = sum(counts[k] for k in DROP_KEYS if "queries" not in k)
  assert (dropped > 0) == paper_uncovered

  # The paper's rule: the same catalogue, tokenizer and training splits, every held-out example;
  # the default's held-out splits are exactly its examples whose target both tasks train.
  paper = _prepared(source, tmp_path, "paper", **sim)
  assert paper.manifest["heldout_coverage_rule"] == "paper"
  ours, theirs = ds.manifest["files"], paper.manifest["files"]
  assert ours.keys() == theirs.keys()
  heldout_files = {f"{t}/{s}.npz" for t in TASKS for s in HELDOUT}
  assert {f: h for f, h in ours.items() if f not in heldout_files} == {
    f: h for f, h in theirs.items() if f not in heldout_files
  }
  assert _trained(paper) == trained
  for task in TASKS:
    for split in HELDOUT:
      n_paper = len(paper.split(task, split)["target_item"])
      n_ours = len(ds.split(task, split)["target_item"])
      assert counts[f"{task}_{split}_dropped_not_trained_in_both"] == n_paper - n_ours
      assert _examples(ds, task, split) == _examples(paper, task, split, keep=trained)
  shares = [paper.manifest["overlap"][k] for k in COVERAGE_KEYS]
  assert (min(s for s in shares if s is not None) < 1.0) == paper_uncovered
  if not paper_uncovered:  # nothing to drop: the very same files
    assert ours == theirs


def test_rule_is_one_pass_to_its_fixed_point(tmp_path):
  # Dropping held-out examples changes no training split, so a second pass drops nothing.
  ds = _prepared("movielens", tmp_path)
  arrays = {
    t: {s: dict(np.load(os.path.join(ds.directory, t, f"{s}.npz"))) for s in ("train",) + HELDOUT}
    for t in TASKS
  }
  assert set(prepare.keep_heldout_trained_in_both(arrays).values()) == {0}


# ml-latest-small under the paper's rule with tests/data's MovieLens config, as prepare made it
# before the rule existed (main 8659059): counts, coverage and the rec files' bytes (the search
# files depend on the trained tokenizer as well).
ML_PAPER_SPLITS = {
  "search": {
    "train": {"examples": 1336, "queries": 236},
    "valid": {"examples": 162, "queries": 29},
    "test": {"examples": 126, "queries": 29},
  },
  "rec": {
    "train": {"examples": 28222, "queries": 28222},
    "valid": {"examples": 603, "queries": 603},
    "test": {"examples": 603, "queries": 603},
  },
}
ML_PAPER_SEARCH_TRAIN_SHARES = {"valid": 0.7839506172839507, "test": 0.7222222222222222}
ML_PAPER_REC_FILES = {
  "rec/train.npz": "cb658e30c72cbe6ad5d44aaedb23bba61a20290c5b69ea29226c3914547424d5",
  "rec/valid.npz": "6f7de92f826856f7270386a1808267afb7e9c4450bb4f71eedf7e82eb5de414e",
  "rec/test.npz": "1f648474f5d8a452ff1e5ad845ba1f153ac84c5b02146ccb14ec84b857e07f8a",
}


def test_paper_rule_reproduces_the_dataset_from_before_the_rule(tmp_path):
  paper = _prepared("movielens", tmp_path, "paper")
  m = paper.manifest
  assert m["splits"] == ML_PAPER_SPLITS and m["num_items"] == 698
  for split, share in ML_PAPER_SEARCH_TRAIN_SHARES.items():
    assert m["overlap"][f"search_{split}_in_search_train"] == pytest.approx(share)
    assert m["overlap"][f"search_{split}_in_rec_train"] == 1.0
  assert {f: m["files"][f] for f in ML_PAPER_REC_FILES} == ML_PAPER_REC_FILES
  assert not any("dropped_not_trained" in k for k in m["counts"])
  # The paper's rule hashes as a config from before the knob did: its old datasets still verify.
  c = _config("movielens", tmp_path)
  c.data.heldout_coverage_rule = "paper"
  old = prepare.dataset_config(c)
  assert "heldout_coverage_rule" not in old and m["config_hash"] == prepare.hash_dataset_config(old)
  c.data.heldout_coverage_rule = "trained_in_both"
  assert prepare.config_hash(c) != m["config_hash"]


def test_paper_rule_hash_keeps_the_biencoder_fingerprint():
  from tests.data.conftest import semantic_tiny_config

  c = semantic_tiny_config(embedding="joint")
  c.data.heldout_coverage_rule = "paper"
  paper = prepare.dataset_config(c)
  assert "heldout_coverage_rule" not in paper and "biencoder" in paper["semantic"]
  c.data.heldout_coverage_rule = "trained_in_both"
  ours = prepare.dataset_config(c)
  assert ours["heldout_coverage_rule"] == "trained_in_both" and "biencoder" in ours["semantic"]


def test_ml_latest_small_default_counts(tmp_path):
  m = _prepared("movielens", tmp_path).manifest
  assert {t: {s: v["examples"] for s, v in m["splits"][t].items()} for t in TASKS} == {
    "search": {"train": 1336, "valid": 127, "test": 91},
    "rec": {"train": 28222, "valid": 550, "test": 546},
  }
  assert m["splits"]["search"]["valid"]["queries"] == m["splits"]["search"]["test"]["queries"] == 28
  assert m["counts"]["search_test_dropped_not_trained_in_both"] == 126 - 91


def test_unknown_rule_and_coverage_variant_refused(tmp_path):
  c = tiny_config()
  c.data.heldout_coverage_rule = "all"
  with pytest.raises(DataError, match="heldout_coverage_rule"):
    prepare_dataset(c, str(tmp_path / "bad"))
  # The simulator's coverage variant tests each task on items only the other one trains.
  c = tiny_config(rec_side_fraction=0.4, heldout_in_both=False)
  with pytest.raises(DataError, match="needs data.heldout_coverage_rule='paper'"):
    prepare_dataset(c, str(tmp_path / "variant"))
  c.data.heldout_coverage_rule = "paper"
  prepare_dataset(c, str(tmp_path / "variant"))


def test_config_check_knows_the_rules():
  from gr_jax import config_check

  assert config_check.HELDOUT_COVERAGE_RULES == prepare.HELDOUT_COVERAGE_RULES
  c = tiny_config()
  c.data.heldout_coverage_rule = "paper "
  with pytest.raises(config_check.ConfigError, match="heldout_coverage_rule"):
    config_check.validate(c)


def test_dropped_counts_are_plain_ints(tmp_path):
  with open(os.path.join(_prepared("mpd", tmp_path).directory, "manifest.json")) as f:
    counts = json.load(f)["counts"]
  assert all(type(counts[k]) is int for k in DROP_KEYS)
