"""Exact top-K decoder vs a brute-force NumPy top-K of the model's first-step logits."""

import jax
import numpy as np
import pytest
from flax import nnx

from gr_jax.decoding import (
  AtomicItemConstraint,
  PrefixTrieConstraint,
  sequences_to_items,
  topk_exact,
)
from gr_jax.decoding import topk as topk_lib
from gr_jax.model import T5, T5Config

TEXT_VOCAB = 40
NUM_ITEMS = 16
# Item indices whose output-projection columns are zeroed: their logits are exactly 0 for every
# query, so they tie exactly with each other (whatever the summation order).
TIED = (2, 5, 6, 11, 13)


@pytest.fixture(scope="module")
def model():
  m = T5(
    T5Config.from_preset("tiny", vocab_size=TEXT_VOCAB, num_item_tokens=NUM_ITEMS), rngs=nnx.Rngs(3)
  )
  kernel = m.lm_head.kernel[...]  # [D, V] (tiny is untied)
  cols = np.asarray(TIED) + TEXT_VOCAB
  m.lm_head.kernel[...] = kernel.at[:, cols].set(0.0)
  return m


def _inputs(b=5, length=9, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, TEXT_VOCAB, (b, length)).astype(np.int32)
  ids[:, -1] = 1
  ids[1, 4:] = 0  # a padded query: the mask must reach the encoder and cross-attention
  ids[1, 3] = 1
  return ids


def _brute_force(model, ids, k):
  """NumPy top-K of the full forward pass's first decoder position (independent of decode_step)."""
  start = np.full((ids.shape[0], 1), model.config.decoder_start_token_id, np.int32)
  logits = np.asarray(model(ids, start), np.float64)[:, 0]  # [B, V]
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))  # log-softmax over the whole vocab
  item = logp[:, TEXT_VOCAB : TEXT_VOCAB + NUM_ITEMS]  # [B, I]
  order = np.argsort(-item, axis=1, kind="stable")[:, :k]  # ties: lower item index first
  return order, np.take_along_axis(item, order, axis=1), item


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 7, NUM_ITEMS])
def test_matches_brute_force_topk(model, k):
  ids = _inputs()
  want_idx, want_sc, item = _brute_force(model, ids, k)
  # The comparison is not fragile: distinct item log-probs are far apart next to float error.
  for row in item:
    gaps = np.diff(np.unique(row))
    assert gaps.min() > 1e-4
  seqs, scores = topk_exact(model, ids, num_return_sequences=k, max_new_tokens=3)
  seqs, scores = np.asarray(seqs), np.asarray(scores)
  assert seqs.shape == (5, k, 3) and seqs.dtype == np.int32
  assert scores.shape == (5, k) and scores.dtype == np.float32
  np.testing.assert_array_equal(seqs[..., 0], want_idx + TEXT_VOCAB)
  assert (seqs[..., 1] == model.config.eos_token_id).all()
  assert (seqs[..., 2:] == model.config.pad_token_id).all()
  np.testing.assert_allclose(scores, want_sc, rtol=0, atol=2e-5)
  # The evaluator's sequence-to-item mapping reads the output unchanged.
  con = AtomicItemConstraint(TEXT_VOCAB, NUM_ITEMS, model.config.eos_token_id)
  assert sequences_to_items(seqs, con, scores) == want_idx.tolist()


@pytest.mark.slow
def test_ties_are_ordered_by_item_index_and_cut_deterministically(model):
  ids = _inputs(seed=1)
  _, _, item = _brute_force(model, ids, NUM_ITEMS)
  # Every query has the tie group; cut K inside it for query 0 so tie-breaking decides membership.
  tied = item[:, list(TIED)]
  assert (tied == tied[:, :1]).all()
  first = int((item[0] > item[0, TIED[0]]).sum())  # rank of the tie group's first member
  k = first + 2
  want_idx, _, _ = _brute_force(model, ids, k)
  seqs, scores = topk_exact(model, ids, num_return_sequences=k)
  got = np.asarray(seqs)[..., 0] - TEXT_VOCAB
  np.testing.assert_array_equal(got, want_idx)
  assert got[0, first : first + 2].tolist() == list(TIED[:2])  # lower indices of the group win
  assert np.asarray(scores)[0, first] == np.asarray(scores)[0, first + 1]  # an exact tie
  # Deterministic: a second call (and a reordered batch) gives the same lists.
  again = np.asarray(topk_exact(model, ids[::-1], num_return_sequences=k)[0])[::-1, :, 0]
  np.testing.assert_array_equal(again - TEXT_VOCAB, want_idx)


@pytest.mark.slow
def test_one_compiled_program_per_shape(model):
  ids = _inputs()
  topk_exact(model, ids, num_return_sequences=4)
  before = topk_lib.trace_count()
  topk_exact(model, _inputs(seed=5), num_return_sequences=4)
  assert topk_lib.trace_count() == before
  jaxpr = str(jax.make_jaxpr(lambda x: topk_exact(model, x, num_return_sequences=4))(ids))
  assert "callback" not in jaxpr and "top_k" in jaxpr


def test_errors(model):
  ids = _inputs()
  with pytest.raises(
    ValueError,
    match=r"decode\.num_return_sequences=17 exceeds the number of "
    r"items \(16\)",
  ):
    topk_exact(model, ids, num_return_sequences=NUM_ITEMS + 1)
  with pytest.raises(ValueError, match=r"decode\.num_return_sequences must be an int >= 1"):
    topk_exact(model, ids, num_return_sequences=0)
  with pytest.raises(ValueError, match=r"decode\.max_new_tokens must be >= 2"):
    topk_exact(model, ids, num_return_sequences=3, max_new_tokens=1)
  trie = PrefixTrieConstraint.from_sequences(np.array([[5, 6], [5, 7]]), eos_id=1)
  with pytest.raises(ValueError, match="atomic item IDs"):
    topk_exact(model, ids, num_return_sequences=2, constraint=trie)
  no_items = T5(T5Config.from_preset("tiny", vocab_size=TEXT_VOCAB), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="no item tokens"):
    topk_exact(no_items, ids, num_return_sequences=2)
