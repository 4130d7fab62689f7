"""eval.exclude_seen in both decoders: a query's excluded (history) items leave its ranking, and
nothing else changes: the masked list is the unmasked ranking without them, topped up from
further down."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gr_jax.decoding import (
  AtomicItemConstraint,
  PrefixTrieConstraint,
  SearchSpec,
  beam_search,
  beam_search_core,
  exclusion_mask,
  sequences_to_items,
  topk_exact,
)
from gr_jax.model import T5, T5Config

TEXT_VOCAB = 40
NUM_ITEMS = 16
EOS = 1
# Per query: its history items (a repeat, an empty history, one longer than K, one leaving fewer
# than K items). Query 4 keeps only 3 of the 16 items.
HISTORIES = [[3, 7, 3], [], [0, 1, 2, 4, 5, 6, 8, 9], [15], list(range(13))]


@pytest.fixture(scope="module")
def model():
  cfg = T5Config.from_preset(
    "tiny",
    vocab_size=TEXT_VOCAB,
    num_item_tokens=NUM_ITEMS,
    num_encoder_layers=1,
    num_decoder_layers=1,
  )
  return T5(cfg, rngs=nnx.Rngs(3))


def _inputs(b=len(HISTORIES), length=9, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, TEXT_VOCAB, (b, length)).astype(np.int32)
  ids[:, -1] = EOS
  return ids


def _expected(full, hist, k):
  return [i for i in full if i not in set(hist)][:k]


def test_exclusion_mask():
  m = exclusion_mask([[1, 1, 3], []], 5)
  np.testing.assert_array_equal(m, [[False, True, False, True, False], [False] * 5])
  with pytest.raises(ValueError, match="outside"):
    exclusion_mask([[5]], 5)


@pytest.mark.slow
def test_topk_exact_drops_exactly_the_history_items(model):
  ids = _inputs()
  con = AtomicItemConstraint(TEXT_VOCAB, NUM_ITEMS, EOS)
  k = 6
  full_seqs, full_sc = topk_exact(model, ids, num_return_sequences=NUM_ITEMS)
  full = sequences_to_items(np.asarray(full_seqs), con, np.asarray(full_sc))
  assert all(len(f) == NUM_ITEMS for f in full)
  mask = exclusion_mask(HISTORIES, NUM_ITEMS)
  seqs, sc = topk_exact(model, ids, num_return_sequences=k, exclude_items=mask)
  seqs, sc = np.asarray(seqs), np.asarray(sc)
  got = sequences_to_items(seqs, con, sc)
  for q, hist in enumerate(HISTORIES):
    want = _expected(full[q], hist, k)
    assert got[q] == want, q
    assert len(want) == min(k, NUM_ITEMS - len(set(hist)))  # topped up; query 4: only 3 left
    # The remaining items keep their unmasked scores; the missing ranks are -inf (dropped).
    by_item = dict(zip(full[q], np.asarray(full_sc)[q].tolist()))
    np.testing.assert_allclose(sc[q, : len(want)], [by_item[i] for i in want], atol=1e-6)
    assert np.isneginf(sc[q, len(want) :]).all()


@pytest.mark.slow
def test_beam_search_atomic_drops_exactly_the_history_items(model):
  """A beam per item (exhaustive with one group): the masked ranking is the unmasked one without
  the history items, topped up from further down, with the same scores."""
  ids = _inputs(seed=1)
  con = AtomicItemConstraint(TEXT_VOCAB, NUM_ITEMS, EOS)
  kw = dict(num_beams=NUM_ITEMS, num_return_sequences=NUM_ITEMS, max_new_tokens=2, constraint=con)
  full_seqs, full_sc = beam_search(model, ids, **kw)
  full = sequences_to_items(np.asarray(full_seqs), con, np.asarray(full_sc))
  assert all(sorted(f) == list(range(NUM_ITEMS)) for f in full)
  seqs, sc = beam_search(model, ids, exclude_items=exclusion_mask(HISTORIES, NUM_ITEMS), **kw)
  got = sequences_to_items(np.asarray(seqs), con, np.asarray(sc))
  k = 6
  for q, hist in enumerate(HISTORIES):
    assert got[q][:k] == _expected(full[q], hist, k), q
    assert got[q] == _expected(full[q], hist, NUM_ITEMS), q
    by_item = dict(zip(full[q], np.asarray(full_sc)[q].tolist()))
    np.testing.assert_allclose(
      np.asarray(sc)[q, : len(got[q])], [by_item[i] for i in got[q]], atol=1e-6
    )
  # The paper's diverse groups (4 beams, 2 groups): no history item.
  div = dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, num_return_sequences=4)
  div.update(max_new_tokens=2, constraint=con)
  seqs, sc = beam_search(model, ids, exclude_items=exclusion_mask(HISTORIES, NUM_ITEMS), **div)
  items = sequences_to_items(np.asarray(seqs), con, np.asarray(sc))
  for q, hist in enumerate(HISTORIES):
    assert items[q] and not set(items[q]) & set(hist)


def _trie_search(con, step_fn, b, v, depth, n, r):
  spec = SearchSpec(
    num_beams=n,
    num_beam_groups=1,
    vocab_size=v,
    max_new_tokens=depth + 1,
    num_return_sequences=r,
    eos_id=EOS,
    pad_id=0,
    decoder_start_id=0,
    early_stopping=False,
  )
  seqs, sc = jax.jit(lambda c: beam_search_core(step_fn, None, b, spec, 0.0, 1.0, constraint=c))(
    con
  )
  return sequences_to_items(np.asarray(seqs), con, np.asarray(sc))


@pytest.mark.slow
def test_beam_search_semantic_trie_drops_exactly_the_history_items():
  """Semantic IDs: a beam as wide as the catalogue is exhaustive, so the masked top-R must be the
  unmasked full ranking without the history items. The codes include one-token items (root leaves)
  and a code that a longer code continues (masked at its EOS, the longer one still allowed)."""
  rng = np.random.default_rng(0)
  codes = np.asarray(list(itertools.product(range(3), repeat=3))[:20], np.int64) + 10
  extra = np.full((3, 3), -1, np.int64)
  extra[0, :1] = [20]  # one-token item (a leaf of the root)
  extra[1, :2] = [10, 10]  # a code that the 3-token codes [10, 10, x] continue
  extra[2, :1] = [21]
  seqs = np.concatenate([codes, extra])
  num_items = len(seqs)
  con = PrefixTrieConstraint.from_sequences(seqs, EOS)
  v = 24
  b = 4
  logits = jnp.asarray(rng.normal(size=(b, v, v)).astype(np.float32) * 2.0)  # per-query bigram

  def step_fn(tokens, t, s, cache):
    del t, s
    return logits[jnp.arange(b)[:, None], tokens], cache  # [B, N, V]

  full = _trie_search(con, step_fn, b, v, 3, 32, 32)
  assert all(sorted(f) == list(range(num_items)) for f in full)  # exhaustive
  hists = [[20, 21, 0], [num_items - 2], [1, 2, 3, 4, 5, 6, 7, 8], []]  # 21: [10, 10]
  r = 6
  got = _trie_search(con.excluding(exclusion_mask(hists, num_items)), step_fn, b, v, 3, 32, r)
  for q, hist in enumerate(hists):
    assert got[q] == _expected(full[q], hist, r), q
  # The longer codes through the excluded [10, 10] are still reachable for query 1.
  through = [i for i in range(20) if list(seqs[i, :2]) == [10, 10]]
  assert through and set(through) <= set(full[1]) - set(hists[1])
