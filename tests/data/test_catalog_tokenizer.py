"""ItemCatalog and the SentencePiece tokenizer (checked against transformers' T5Tokenizer)."""

import json
import os

import numpy as np
import pytest

from gr_jax.data import DataError, ItemCatalog, TextTokenizer
from gr_jax.data.tokenizer import train_tokenizer

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
