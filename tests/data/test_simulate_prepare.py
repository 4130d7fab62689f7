"""Simulator determinism and sweeps; prepare: atomicity, idempotence, layout, split logic."""

import collections
import os

import numpy as np
import pytest

from gr_jax.data import DataError, ProcessedDataset, prepare_dataset
from gr_jax.data import prepare as prepare_lib
from gr_jax.data import raw as raw_lib
from gr_jax.data import simulate
from gr_jax.data.prepare import sha256_file
from tests.data.conftest import tiny_config


def _tree_bytes(root):
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      p = os.path.join(d, f)
      out[os.path.relpath(p, root)] = open(p, "rb").read()
  return out


def test_same_seed_identical_bytes_other_seed_differs(tmp_path):
  a = prepare_dataset(tiny_config(), str(tmp_path / "a"))
  b = prepare_dataset(tiny_config(), str(tmp_path / "b"))
  assert _tree_bytes(a) == _tree_bytes(b)
  c = prepare_dataset(tiny_config(seed=1), str(tmp_path / "c"))
  assert _tree_bytes(a)["search/train.npz"] != _tree_bytes(c)["search/train.npz"]


def test_s1_kl_increases_along_sweep():
  kls = []
  for f in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0):
    c = tiny_config(setting="S1", shuffle_fraction=f, num_items=200)
    kls.append(simulate.simulate(c.data.sim).stats["kl_search_rec_true"])
  assert kls[0] == 0.0
  assert all(b > a for a, b in zip(kls, kls[1:])), kls


def test_s1_kl_empirical_tracks_true(tmp_path):
  """The manifest's empirical KL (training targets) grows with the generator's KL too."""
  emp = []
  for f in (0.0, 0.5, 1.0):
    c = tiny_config(
      setting="S1", shuffle_fraction=f, num_items=100, queries_per_item=20, num_users=400
    )
    c.data.items_in_both_tasks = False
    emp.append(
      ProcessedDataset(prepare_dataset(c, str(tmp_path / f"s1_{f}"))).manifest["popularity_kl"][
        "search_rec"
      ]
    )
  assert emp[0] < emp[1] < emp[2], emp


def test_s1_inputs_carry_no_item_signal():
  raw = simulate.simulate(tiny_config(setting="S1").data.sim)
  titles = set(" ".join(raw.titles).split())
  assert not any(set(q.split()) & titles for q, _, _ in raw.search_pairs)


def test_s2_realised_statistics_follow_knob():
  # S3's own mechanism is tested in test_simulate_design.py (it no longer sweeps agreement).
  agree = [
    simulate.simulate(tiny_config(setting="S2", agreement=a).data.sim).stats
    for a in (0.0, 0.5, 1.0)
  ]
  assert [s["agreement_clusters"] for s in agree] == [0.0, 0.5, 1.0]
  items = [s["agreement_items"] for s in agree]
  assert items[0] < items[1] < items[2] == 1, items
  same = [s["session_pairs_same_content"] for s in agree]
  assert same[0] < same[1] < same[2], same
  s2 = simulate.simulate(tiny_config(setting="S2").data.sim)
  assert len(s2.sessions) == tiny_config().data.sim.s2_num_users


def test_default_sessions_stay_in_cluster_and_queries_use_item_words():
  c = tiny_config(stay_in_cluster=1.0)
  raw = simulate.simulate(c.data.sim)
  cl = {i: m["rec_cluster"] for i, m in zip(raw.items, raw.metadata)}
  assert all(len({cl[i] for i in items}) == 1 for _, items in raw.sessions)
  # Repeats are redrawn (best effort): rare even inside small Zipf clusters.
  repeats = sum(len(items) - len(set(items)) for _, items in raw.sessions)
  assert repeats < 0.05 * sum(len(items) for _, items in raw.sessions), repeats
  words = {}
  for i, t in zip(raw.items, raw.titles):
    words[i] = set(t.split())
  # Queries draw from cluster words plus the item's own words, never another item's words.
  others = set().union(*words.values())
  for q, i, _ in raw.search_pairs:
    assert not (set(q.split()) & (others - words[i]))


def test_layout_manifest_and_hashes(tiny_dataset):
  ds = tiny_dataset
  m = ds.manifest
  for rel, digest in m["files"].items():
    assert sha256_file(os.path.join(ds.directory, rel)) == digest
  assert set(m["files"]) >= {
    "catalog.json",
    "tokenizer/spiece.model",
    "search/train.npz",
    "rec/test.npz",
  }
  assert m["config_hash"] == prepare_lib.config_hash(tiny_config())
  for task in ("search", "rec"):
    for split in ("train", "valid", "test"):
      a = ds.split(task, split)
      assert a["encoder_input_ids"].dtype == np.int32
      assert a["encoder_input_ids"].shape == (len(a["target_item"]), 16)
      assert m["splits"][task][split]["examples"] == len(a["target_item"])
      assert ((a["encoder_input_ids"] == 1).sum(1) == 1).all()  # exactly one EOS per row
  assert ds.text_vocab_size == ds.tokenizer.text_vocab_size
  rec = ds.split("rec", "train")["encoder_input_ids"]
  hist = rec[rec > 1]
  assert (hist >= ds.text_vocab_size).all() and (hist < ds.text_vocab_size + ds.num_items).all()


def test_rec_leave_last_out_matches_brute_force(tmp_path):
  c = tiny_config()
  c.data.max_history = 3
  ds = ProcessedDataset(prepare_dataset(c, str(tmp_path / "d")))
  raw = simulate.simulate(c.data.sim)
  keep = set(ds.catalog.item_ids)
  off = ds.text_vocab_size
  want = {"train": [], "valid": [], "test": []}
  for _, items in raw.sessions:
    s = [ds.catalog.index(i) for i in items if i in keep]
    if len(s) < 3:
      continue
    for t in range(1, len(s) - 2):
      want["train"].append((tuple(s[max(0, t - 3) : t]), s[t]))
    want["valid"].append((tuple(s[max(0, len(s) - 5) : len(s) - 2]), s[-2]))
    want["test"].append((tuple(s[max(0, len(s) - 4) : len(s) - 1]), s[-1]))
  for split, rows in want.items():
    a = ds.split("rec", split)
    got = []
    for e, t in zip(a["encoder_input_ids"], a["target_item"]):
      toks = e[: list(e).index(1)]
      got.append((tuple(int(x) - off for x in toks), int(t)))
    assert got == rows, split


def test_search_splits_and_qrels(tiny_dataset):
  ds = tiny_dataset
  a = ds.split("search", "test")
  qrels = ds.qrels("search", "test")
  tok = ds.tokenizer
  texts = collections.defaultdict(set)
  for e, q in zip(a["encoder_input_ids"], a["query_id"]):
    texts[int(q)].add(tok.decode(e))
  assert all(len(v) == 1 for v in texts.values())  # one text per query id
  assert len(set().union(*texts.values())) == len(qrels)  # and one id per text


def test_held_out_query_split_for_unassigned_pairs(tmp_path):
  raw = simulate.simulate(tiny_config().data.sim)
  dc = tiny_config().data
  pairs = [(q, i, "") for q, i, _ in raw.search_pairs]
  out = prepare_lib._assign_search_splits(raw_lib.PairColumns.from_tuples(pairs), dc)
  by_q = collections.defaultdict(set)
  for q, _, s in out:
    by_q[q].add(s)
  assert all(len(v) == 1 for v in by_q.values())  # a query never straddles splits
  frac = collections.Counter(next(iter(v)) for v in by_q.values())
  assert abs(frac["test"] / len(by_q) - dc.search_test_fraction) < 0.01


def test_prepare_is_atomic_and_idempotent(tmp_path, monkeypatch):
  out = str(tmp_path / "ds")
  calls = []
  real_build = prepare_lib.build

  def failing_build(raw, dc, tmp, *args, **kwargs):
    real_build(raw, dc, tmp, *args, **kwargs)
    calls.append(tmp)
    raise KeyboardInterrupt  # interrupted after writing most files

  monkeypatch.setattr(prepare_lib, "build", failing_build)
  with pytest.raises(KeyboardInterrupt):
    prepare_dataset(tiny_config(), out)
  assert not os.path.exists(out) and os.listdir(tmp_path) == []
  monkeypatch.setattr(prepare_lib, "build", real_build)
  assert prepare_dataset(tiny_config(), out) == out
  mtime = os.path.getmtime(os.path.join(out, "manifest.json"))
  # Same config: returned at once; pipeline-only knobs do not change the dataset identity.
  c = tiny_config()
  c.data.task_ratio = 0.5
  c.data.item_cap = 5
  assert prepare_dataset(c, out) == out
  assert os.path.getmtime(os.path.join(out, "manifest.json")) == mtime
  with pytest.raises(DataError, match="another data config"):
    prepare_dataset(tiny_config(num_items=61), out)
  os.makedirs(tmp_path / "half")
  with pytest.raises(DataError, match="not a complete processed dataset"):
    prepare_dataset(tiny_config(), str(tmp_path / "half"))


def test_tokenizer_trains_on_a_seeded_sample_above_max_sentences(tmp_path):
  full = ProcessedDataset(prepare_dataset(tiny_config(), str(tmp_path / "full")))
  n = full.manifest["counts"]["tokenizer_sentences"]
  assert "tokenizer_sentences_sampled" not in full.manifest["counts"] and n > 100

  def sampled(name):
    c = tiny_config()
    c.data.tokenizer.max_sentences = 100
    return ProcessedDataset(prepare_dataset(c, str(tmp_path / name)))

  a, b = sampled("a"), sampled("b")
  assert a.manifest["counts"]["tokenizer_sentences_sampled"] == 100
  assert a.manifest["config_hash"] != full.manifest["config_hash"]
  with open(os.path.join(a.directory, "tokenizer", "spiece.model"), "rb") as f:
    model_a = f.read()
  with open(os.path.join(b.directory, "tokenizer", "spiece.model"), "rb") as f:
    assert f.read() == model_a  # the sample is seeded
  with open(os.path.join(full.directory, "tokenizer", "spiece.model"), "rb") as f:
    assert f.read() != model_a  # and it is a sample: another model than the full text's
