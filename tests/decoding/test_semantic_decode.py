"""Decoding semantic IDs: the catalogue's prefix trie in beam search, the evaluator's constraint and
decode length, and a tiny prepare -> train -> evaluate run with `data.id_scheme=semantic`."""

import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gr_jax.data.catalog import ItemCatalog
from gr_jax.decoding import (
  AtomicItemConstraint,
  PrefixTrieConstraint,
  SearchSpec,
  beam_search_core,
  sequences_to_items,
)
from gr_jax.evaluation import evaluator

EOS = 1
TRAINING_TESTS = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training"
)


def _catalog(num_items=60, levels=2, k=4, offset=10, seed=0):
  """A semantic catalogue with colliding tuples, disambiguated as prepare does."""
  from gr_jax.data import semantic_ids  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  codes = rng.integers(0, k, size=(num_items, levels))
  dis = semantic_ids.disambiguate(codes)
  nd = int(dis.max()) + 1
  assert nd > 1  # 60 items on 16 tuples: collisions for sure
  return ItemCatalog(
    [f"i{i}" for i in range(num_items)],
    token_offset=offset,
    id_scheme="semantic",
    codes=np.concatenate([codes, dis[:, None]], 1),
    levels=levels,
    codebook_size=k,
    num_disambiguation=nd,
  )


def test_beam_search_with_the_catalogue_trie_returns_only_catalogue_items():
  cat = _catalog()
  con = PrefixTrieConstraint.from_catalog(cat, eos_id=EOS)
  assert PrefixTrieConstraint.from_catalog(cat, eos_id=EOS) is con  # built once per catalogue
  tpi = cat.tokens_per_item
  v = cat.token_offset + cat.num_id_tokens + 3  # a few unused tokens after the item tokens
  rng = np.random.default_rng(1)
  bigram = jnp.asarray(rng.normal(size=(v, v)).astype(np.float32) * 3.0)  # [V, V] logits

  def step_fn(tokens, t, seqs, cache):
    del t, seqs
    return bigram[tokens], cache  # [B, N, V]

  b, n, g, r = 3, 8, 4, 8
  spec = SearchSpec(
    num_beams=n,
    num_beam_groups=g,
    vocab_size=v,
    max_new_tokens=tpi + 1,
    num_return_sequences=r,
    eos_id=EOS,
    pad_id=0,
    decoder_start_id=0,
    early_stopping=False,
  )
  seqs, scores = jax.jit(
    lambda c: beam_search_core(step_fn, None, b, spec, 0.5, 1.0, constraint=c)
  )(con)
  seqs, scores = np.asarray(seqs), np.asarray(scores)
  assert seqs.shape == (b, r, tpi + 1) and np.isfinite(scores).all()
  for q in range(b):
    for j in range(r):
      item = con.to_items(seqs[q, j])
      assert item is not None and seqs[q, j, tpi] == EOS
      # The trie and the catalogue agree: the ID tokens name exactly this one item.
      assert cat.tokens_to_item(seqs[q, j, :tpi]) == item
      np.testing.assert_array_equal(cat.item_tokens(item), seqs[q, j, :tpi])
  assert sequences_to_items(seqs, cat, scores) == sequences_to_items(seqs, con, scores)


def test_evaluator_constraint_and_decode_length_follow_the_scheme():
  cat = _catalog()
  con = evaluator.item_constraint(cat, EOS)
  assert isinstance(con, PrefixTrieConstraint) and con.depth == cat.tokens_per_item
  assert evaluator.decode_length(cat, 2) == cat.tokens_per_item + 1
  assert evaluator.decode_length(cat, 9) == cat.tokens_per_item + 1
  atomic = ItemCatalog(["a", "b"], token_offset=10)
  assert isinstance(evaluator.item_constraint(atomic, EOS), AtomicItemConstraint)
  assert evaluator.decode_length(atomic, 2) == 2
  # A mapped sequence is one item; a prefix, a wrong order or a missing EOS is none.
  tokens = cat.item_tokens(5)
  assert con.to_items(np.append(tokens, [EOS, 0])) == 5
  assert con.to_items(np.append(tokens[:-1], [EOS, 0])) is None
  assert con.to_items(tokens[::-1].copy()) is None
  assert con.to_items(tokens) is None


def test_topk_exact_is_refused_for_semantic_ids():
  class Model:
    config = ml_collections.ConfigDict({"eos_token_id": EOS, "pad_token_id": 0})

  config = ml_collections.ConfigDict(
    {"decode": {"method": "topk_exact", "num_return_sequences": 4, "max_new_tokens": 2}}
  )
  with pytest.raises(evaluator.EvaluationError, match="topk_exact.*atomic.*decode.method=beam"):
    evaluator.make_decode_fn(Model(), config, _catalog())


@pytest.mark.slow
def test_prepare_train_evaluate_with_semantic_ids(tmp_path):
  """Tiny end to end: every returned sequence spells one catalogue item."""
  from gr_jax.data import ProcessedDataset, prepare_dataset  # pylint: disable=g-import-not-at-top
  from gr_jax.training import loop  # pylint: disable=g-import-not-at-top

  sys.path.insert(0, TRAINING_TESTS)
  import tiny_config  # pylint: disable=g-import-not-at-top

  base = tiny_config.get_config()
  base.data.id_scheme = "semantic"
  base.data.semantic.update(
    {"levels": 2, "codebook_size": 4, "content_dim": 16, "kmeans_iters": 10}
  )
  data_dir = prepare_dataset(base, str(tmp_path / "data"))
  ds = ProcessedDataset(data_dir)
  cat = ds.catalog
  tpi = cat.tokens_per_item
  config = tiny_config.make(
    data_dir,
    train__num_steps=4,
    train__eval_every_steps=4,
    checkpoint__every_steps=4,
    decode__num_beams=4,
    decode__num_beam_groups=2,
    decode__num_return_sequences=4,
    decode__batch_size=16,
  )
  config.data.id_scheme = "semantic"
  config.data.semantic = base.data.semantic
  summary = loop.train(config, str(tmp_path / "run"))
  assert np.isfinite(summary["loss"])

  seen = []

  def factory(model, cfg, catalog):
    # The model's ID vocabulary is the catalogue's: levels x codebook size + disambiguation.
    assert model.config.num_item_tokens == catalog.num_id_tokens == cat.num_id_tokens
    decode = evaluator.make_decode_fn(model, cfg, catalog)

    def wrapped(enc):
      seqs, scores = decode(enc)
      seen.append((np.asarray(seqs), np.asarray(scores)))
      return seqs, scores

    return wrapped

  out = evaluator.evaluate(str(tmp_path / "run"), "test", decode_fn_factory=factory)
  assert set(out) >= {"search", "rec"}
  con = evaluator.item_constraint(cat, EOS)
  n_seqs = 0
  for seqs, scores in seen:
    assert seqs.shape[-1] == tpi + 1  # max_new_tokens from the scheme, not decode's 2
    for seq, sc in zip(seqs.reshape(-1, tpi + 1), scores.reshape(-1)):
      if not np.isfinite(sc):
        continue
      item = con.to_items(seq)
      assert item is not None and seq[tpi] == EOS
      assert cat.tokens_to_item(seq[:tpi]) == item
      n_seqs += 1
  assert n_seqs > 0
  with pytest.raises(evaluator.EvaluationError, match="topk_exact"):
    evaluator.evaluate(str(tmp_path / "run"), "test", overrides={"decode.method": "topk_exact"})
