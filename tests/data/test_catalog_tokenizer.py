"""ItemCatalog and the SentencePiece tokenizer (checked against transformers' T5Tokenizer)."""

import itertools
import json
import os

import numpy as np
import pytest

from gr_jax.data import DataError, ItemCatalog, TextTokenizer, prepare_dataset
from gr_jax.data.tokenizer import train_tokenizer
from tests.data.conftest import tiny_config

CORPUS = [
  f"{a} {b} music"
  for a in ("rock", "jazz", "chill", "happy", "sad", "dance")
  for b in ("morning", "night", "party", "study", "workout")
] * 3


def test_catalog_tokens_roundtrip_and_save(tmp_path):
  cat = ItemCatalog(
    ["a", "b", "c"], token_offset=100, titles=["A", "B", "C"], metadata=[{"x": 1}, {}, {}]
  )
  np.testing.assert_array_equal(cat.item_tokens([0, 2]), [[100], [102]])
  np.testing.assert_array_equal(cat.tokens_to_item([[101], [99], [103]]), [1, -1, -1])
  assert cat.index("c") == 2 and cat.item_id(1) == "b" and cat.num_id_tokens == 3
  cat.save(tmp_path / "c.json")
  back = ItemCatalog.load(str(tmp_path / "c.json"))
  assert back.to_dict() == cat.to_dict()
  with pytest.raises(KeyError, match="'zz'"):
    cat.index("zz")


def test_catalog_rejects_duplicates_and_bad_files(tmp_path):
  with pytest.raises(DataError, match="duplicate item id 'a'"):
    ItemCatalog(["a", "b", "a"], token_offset=0)
  p = tmp_path / "c.json"
  p.write_text(json.dumps({"id_scheme": "atomic", "item_ids": ["a"]}))
  with pytest.raises(DataError, match="token_offset"):
    ItemCatalog.load(str(p))


def test_trained_tokenizer_is_deterministic_with_t5_ids(tmp_path):
  a, b = train_tokenizer(CORPUS, 60), train_tokenizer(CORPUS, 60)
  assert a.model_proto == b.model_proto
  assert (a.sp.pad_id(), a.sp.eos_id(), a.sp.unk_id(), a.sp.bos_id()) == (0, 1, 2, -1)
  ids = a.encode_padded(["rock night music", "x"], 24)
  assert ids.shape == (2, 24) and ids.dtype == np.int32
  assert ids[0, list(ids[0]).index(1) + 1 :].sum() == 0
  assert a.decode(ids[0]) == "rock night music"
  # Tiny corpora with a vocabulary larger than they support still train (hard_vocab_limit off).
  small = train_tokenizer(["ab cd", "cd ef"], 500)
  assert small.piece_size < 500
  with pytest.raises(DataError):
    train_tokenizer(["  ", ""], 50)


def test_tokenizer_matches_transformers_t5(tmp_path):
  transformers = pytest.importorskip("transformers")
  tok = train_tokenizer(CORPUS, 60)
  tok.save(str(tmp_path / "tk"))
  hf = transformers.T5Tokenizer(
    vocab_file=str(tmp_path / "tk" / "spiece.model"), extra_ids=0, legacy=True
  )
  for text in ["rock night music", "jazz  party", "unknownword study"]:
    want = hf(text)["input_ids"]  # HF appends </s>
    got = tok.encode(text) + [1]
    assert got == want, text
  assert hf.pad_token_id == 0 and hf.eos_token_id == 1 and hf.unk_token_id == 2


def test_hf_directory_vocab_size_wins(tmp_path):
  tok = train_tokenizer(CORPUS, 60)
  d = tmp_path / "hf"
  os.makedirs(d)
  (d / "spiece.model").write_bytes(tok.model_proto)
  (d / "config.json").write_text(json.dumps({"vocab_size": 128}))
  loaded = TextTokenizer.load(str(d))
  assert loaded.text_vocab_size == 128 and loaded.piece_size == tok.piece_size
  with pytest.raises(DataError, match="spiece.model"):
    TextTokenizer.load(str(tmp_path))


def _semantic_catalog(n, token_offset=100, seed=0):
  """n items with unique 2-level codes (codebook 4) plus a disambiguation code where needed."""
  rng = np.random.default_rng(seed)
  pairs = rng.integers(0, 4, size=(n, 2))
  seen: dict[tuple, int] = {}
  dis = []
  for p in map(tuple, pairs.tolist()):
    dis.append(seen.get(p, 0))
    seen[p] = dis[-1] + 1
  codes = np.concatenate([pairs, np.asarray(dis)[:, None]], axis=1)
  return ItemCatalog(
    [f"i{i}" for i in range(n)],
    token_offset=token_offset,
    id_scheme="semantic",
    codes=codes,
    levels=2,
    codebook_size=4,
    num_disambiguation=max(dis) + 1,
  )


def test_histories_round_trip_rec_rows_of_both_schemes():
  import types

  from gr_jax.data.dataset import HISTORY_KEYS, HistoryRows
  from gr_jax.data.prepare import _rec_arrays  # the real leave-last-out layout

  n = 12
  rng = np.random.default_rng(1)
  sessions = [rng.integers(0, n, size=int(rng.integers(4, 9))) for _ in range(20)]
  atomic = ItemCatalog([f"i{i}" for i in range(n)], token_offset=100)
  sem = _semantic_catalog(n)
  assert sem.tokens_per_item == 3 and sem.num_disambiguation > 1

  # The same 5-item history cap for both: 6 and 16 encoder tokens (5 x tokens_per_item + EOS).
  def token_rows(cat, enc_len):
    # The encoder rows as tokens (np.asarray builds them), read back by histories().
    dc = types.SimpleNamespace(encoder_len=enc_len, max_history=5)
    split_arrays = _rec_arrays(np.concatenate(sessions), [len(x) for x in sessions], cat, dc)
    return {
      s: np.asarray(HistoryRows(*(a[k] for k in HISTORY_KEYS), cat, enc_len))
      for s, a in split_arrays.items()
    }

  rows = {"atomic": token_rows(atomic, 6), "semantic": token_rows(sem, 16)}
  for split in ("train", "valid", "test"):
    a = atomic.histories(rows["atomic"][split])
    s = sem.histories(rows["semantic"][split])
    assert [h.tolist() for h in a] == [h.tolist() for h in s]
    assert all(h.dtype == np.int64 for h in a + s)
  # Test rows: each session's last item is the target; the history is the 5 items before it.
  want = [list(x[:-1][-5:]) for x in sessions]
  assert [h.tolist() for h in sem.histories(rows["semantic"]["test"])] == want
  # Inverse of item_tokens: spelling histories as tokens and reading them back round-trips.
  ids = np.zeros([len(want), 16], np.int32)
  for r, h in enumerate(want):
    ids[r, : 3 * len(h)] = sem.item_tokens(np.asarray(h, np.int64)).reshape(-1)
    ids[r, 3 * len(h)] = 1  # EOS
  assert [h.tolist() for h in sem.histories(ids)] == want
  # Text tokens (a task prefix) sit below token_offset and are not history items.
  prefixed = np.concatenate([np.full([len(ids), 2], 7, np.int32), ids], axis=1)
  assert [h.tolist() for h in sem.histories(prefixed)] == want
  assert atomic.histories(np.zeros([0, 6], np.int32)) == []


def test_histories_refuse_rows_that_spell_no_item():
  sem = _semantic_catalog(12)
  tok = sem.item_tokens([3, 5])  # [2, 3]
  with pytest.raises(DataError, match="row 1 holds 2 ID tokens, not whole semantic item IDs of 3"):
    sem.histories([list(tok[0]) + [1, 0], list(tok[1][:2]) + [1, 0, 0]])
  free = next(
    t
    for t in itertools.product(range(4), range(4), range(sem.num_disambiguation))
    if sem.tokens_to_item(np.asarray(t) + sem._position_offsets()) < 0
  )  # a well-formed code tuple that no item has
  bad = np.asarray(free) + sem._position_offsets()
  with pytest.raises(DataError, match="row 1 holds ID tokens that name no item"):
    sem.histories([list(tok[0]) + [1, 0, 0, 0], list(tok[1]) + list(bad) + [1]])
  atomic = ItemCatalog(["a", "b"], token_offset=100)
  with pytest.raises(DataError, match="row 0 .* name no item of this 2-item atomic catalogue"):
    atomic.histories([[100, 102, 1]])  # token 102 would be a third item
  # Atomic rows read with a semantic catalogue (or the reverse) are refused, not misread.
  with pytest.raises(DataError, match="encoder_input_ids"):
    sem.histories([[100, 101, 1, 0]])


def test_semantic_tokens_to_item_matches_a_tuple_lookup():
  sem = _semantic_catalog(40, seed=3)
  table = {tuple(r): i for i, r in enumerate(sem.item_tokens(np.arange(40)).tolist())}
  rng = np.random.default_rng(0)
  lo, hi = sem.token_offset - 2, sem.token_offset + sem.num_id_tokens + 2
  tokens = rng.integers(lo, hi, size=(500, 3))
  tokens[::2] = sem.item_tokens(rng.integers(0, 40, size=250))  # half of them real IDs
  want = [table.get(tuple(r), -1) for r in tokens.tolist()]
  np.testing.assert_array_equal(sem.tokens_to_item(tokens), want)
  np.testing.assert_array_equal(sem.tokens_to_item(tokens.reshape(50, 10, 3)).reshape(-1), want)


def test_encode_padded_counts_the_texts_it_cuts():
  tok = train_tokenizer(CORPUS, 60)
  texts = ["rock night music", "x"]
  full = [len(ids) for ids in tok.sp.encode(texts)]  # tokens without EOS
  cut: dict[str, int] = {}
  tok.encode_padded(texts, 24, max_tokens=full[0] + 1, truncated=cut)  # EOS fits: nothing cut
  assert cut == {"texts": 0}
  ids = tok.encode_padded(texts, 24, max_tokens=full[0], truncated=cut)  # one token short
  assert cut == {"texts": 1}  # added to the running count
  assert (ids[0] != 0).sum() == full[0] and ids[0, full[0] - 1] == 1  # cut, EOS kept


def test_prepare_counts_cut_queries_in_the_manifest(tmp_path):
  whole = prepare_dataset(tiny_config(), str(tmp_path / "whole"))
  assert json.load(open(f"{whole}/manifest.json"))["counts"]["search_queries_truncated"] == 0
  config = tiny_config()
  config.data.max_query_tokens = 2  # one word + EOS: every longer query is cut
  short = prepare_dataset(config, str(tmp_path / "short"))
  assert json.load(open(f"{short}/manifest.json"))["counts"]["search_queries_truncated"] > 0
