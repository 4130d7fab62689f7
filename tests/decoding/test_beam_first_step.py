"""Step 0 of beam search runs the decoder once per query ([B, 1]) and broadcasts its logits and
cache to the beams, instead of running it on num_beams identical beams.

- With a step_fn whose rows do not depend on how many beams it is given (a logits table), the
  search is bitwise the per-beam one (`first_step_once=False`, the loop as it was).
- With a T5, the [B, 1] decoder step may differ from the [B, N] one in the last bits (XLA:CPU
  compiles a matrix-vector product, e.g. one position's cross-attention, to another kernel than a
  GEMM over N rows): the same sequences, scores within 1e-6.
- The decoder is really traced on [B, 1] at step 0 (fails on a search that runs it per beam).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tables import TableLM, run_table_search, table_spec, table_step_fn

from gr_jax.decoding import (
  AtomicItemConstraint,
  PrefixTrieConstraint,
  beam_search,
  beam_search_core,
  exclusion_mask,
  sequences_to_items,
  trace_count,
)
from gr_jax.model import T5, T5Config

EOS = 1
TEXT_VOCAB = 40
NUM_ITEMS = 16  # item tokens [TEXT_VOCAB, TEXT_VOCAB + NUM_ITEMS)


make_spec = table_spec


def run_core(table, dp, constraint=None, *, first, **kw):
  return run_table_search(table, dp, 1.0, constraint, first_step_once=first, **kw)


def assert_same_search(table, dp, constraint=None, **kw):
  once = run_core(table, dp, constraint, first=True, **kw)
  per_beam = run_core(table, dp, constraint, first=False, **kw)
  for got, want in zip(once, per_beam):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  return once


CORE_CASES = [  # (batch, num_beams, groups, diversity_penalty, cache, one_hot)
  (1, 4, 1, 0.0, True, False),
  (3, 6, 3, 0.5, False, False),
  (2, 8, 4, 0.7, True, True),
]


@pytest.mark.parametrize("b,n,g,dp,cache,one_hot", CORE_CASES)
def test_core_first_step_once_is_bitwise_the_per_beam_search(b, n, g, dp, cache, one_hot):
  v, l = 7, 4
  spec = make_spec(v, n, g, l, n)
  lengths = set()
  for seed in range(2):
    lm = TableLM(seed, b, v, l, eos_bias=3.0)
    seqs, _ = assert_same_search(lm.table, dp, spec=spec, use_cache=cache, one_hot=one_hot)
    lengths |= set((np.asarray(seqs) != 0).sum(-1).ravel().tolist())
  assert len(lengths) >= 2, lengths  # hypotheses end at several steps, not only at step 0


TRIE_ITEMS = np.array(
  [[2, 3, 4], [2, 3, 5], [2, 6, -1], [7, -1, -1], [7, 8, 2], [8, 8, 8], [3, 2, -1]]
)

CONSTRAINT_CASES = [  # (item IDs, batch, num_beams, groups, diversity_penalty, exclude)
  ("atomic", 1, 8, 4, 0.5, False),
  ("atomic", 3, 8, 1, 0.0, True),
  ("trie", 1, 6, 3, 0.4, True),
  ("trie", 3, 6, 1, 0.0, False),
]


@pytest.mark.parametrize("kind,b,n,g,dp,exclude", CONSTRAINT_CASES)
def test_core_first_step_once_with_item_constraints(kind, b, n, g, dp, exclude):
  if kind == "atomic":
    # One-token items (the paper's IDs): fewer items than 2S candidates, so step 0's top-k also
    # takes ranks from the beams that start at -1e9.
    v, l = 12, 2
    con = AtomicItemConstraint(token_offset=4, num_items=8, eos_id=EOS)
    lm = TableLM(3, b, v, l)
  else:  # multi-token (semantic) items through the prefix trie
    v, l = 9, 4
    con = PrefixTrieConstraint.from_sequences(TRIE_ITEMS, eos_id=EOS)
    lm = TableLM(5, b, v, l, scale=1.5)
  if exclude:
    con = con.excluding(exclusion_mask([[1, 3]] + [[]] * (b - 1), con.num_items))
  seqs, sc = assert_same_search(lm.table, dp, con, spec=make_spec(v, n, g, l, n), use_cache=True)
  found = sequences_to_items(np.asarray(seqs), con, np.asarray(sc))
  assert all(found)
  if exclude:
    assert not {1, 3} & set(found[0])


def test_core_traces_step_fn_on_one_beam_per_query_at_step_0():
  b, n, v, l = 3, 6, 7, 4
  lm = TableLM(0, b, v, l)
  inner = table_step_fn(jnp.asarray(lm.table), l)
  seen = []

  def step_fn(tokens, t, seqs, cache):
    seen.append((tokens.shape, seqs.shape, cache.shape))
    return inner(tokens, t, seqs, cache)

  spec = make_spec(v, n, 3, l, n)
  cache = jnp.zeros((b, n), jnp.float32)
  # The default search (no first_step_once argument), traced afresh.
  jax.jit(lambda: beam_search_core(step_fn, cache, b, spec, 0.5, 1.0)).lower()
  assert seen[0] == ((b, 1), (b, 1, l), (b, 1)), seen
  assert seen[1:] == [((b, n), (b, n, l), (b, n))], seen


# ------------------------------------------------------------------------------ a T5


@pytest.fixture(scope="module")
def model():
  cfg = T5Config.from_preset(
    "tiny", vocab_size=TEXT_VOCAB, num_item_tokens=NUM_ITEMS, num_encoder_layers=1
  )
  return T5(cfg, rngs=nnx.Rngs(7))


def _inputs(b, seed=0, length=9):
  ids = np.random.default_rng(seed).integers(3, TEXT_VOCAB, (b, length)).astype(np.int32)
  ids[:, -1] = EOS
  ids[0, 6:] = 0  # a padded query
  return ids


def _semantic_trie():
  # Two or three item tokens per item, one code that a longer code continues.
  rng = np.random.default_rng(1)
  codes = rng.integers(0, 4, (12, 3)) + TEXT_VOCAB + 4 * np.arange(3)
  codes = np.unique(codes, axis=0)
  codes[:2, 2] = -1
  codes = np.unique(codes, axis=0)
  return PrefixTrieConstraint.from_sequences(codes, eos_id=EOS)


MODEL_CASES = [  # (name, batch, num_beams, groups, diversity_penalty, max_new, cache, exclude)
  ("atomic", 1, 8, 4, 0.5, 2, True, False),
  ("atomic", 3, 8, 4, 0.5, 2, True, True),
  ("semantic", 2, 6, 3, 0.4, 4, True, False),
  ("semantic", 1, 6, 3, 0.4, 4, False, True),
  ("none", 3, 4, 1, 0.0, 3, True, False),
]


@pytest.mark.parametrize("kind,b,n,g,dp,l,cache,exclude", MODEL_CASES)
def test_model_first_step_once_matches_per_beam(model, kind, b, n, g, dp, l, cache, exclude):
  ids = _inputs(b, seed=b)
  kw = dict(
    num_beams=n,
    num_beam_groups=g,
    diversity_penalty=dp,
    max_new_tokens=l,
    num_return_sequences=n,
    use_cache=cache,
    one_hot_gather=not cache,
  )
  if kind == "atomic":
    kw["constraint"] = AtomicItemConstraint(TEXT_VOCAB, NUM_ITEMS, EOS)
  elif kind == "semantic":
    kw["constraint"] = _semantic_trie()
  if exclude:
    kw["exclude_items"] = exclusion_mask([[0, 2, 5]] + [[]] * (b - 1), kw["constraint"].num_items)
  once = [np.asarray(x) for x in beam_search(model, ids, **kw)]
  per_beam = [np.asarray(x) for x in beam_search(model, ids, first_step_once=False, **kw)]
  np.testing.assert_array_equal(once[0], per_beam[0])
  # Last-bit differences of the [B, 1] decoder step only (see the module docstring).
  np.testing.assert_allclose(once[1], per_beam[1], rtol=1e-6, atol=1e-6)
  assert np.isfinite(once[1]).any()
  if "constraint" in kw:
    found = sequences_to_items(once[0], kw["constraint"], once[1])
    assert all(found)
    if exclude:
      assert not {0, 2, 5} & set(found[0])


@pytest.mark.parametrize("cache", [True, False])
def test_model_decoder_runs_once_per_query_at_step_0(model, monkeypatch, cache):
  b, n, l = 2, 10, 3
  calls = []
  decode_step, decode = T5.decode_step, T5.decode

  def recording_step(self, tokens, position, kv_cache, cross_kv, encoder_mask):
    calls.append((tokens.shape, kv_cache["layer_0"]["k"].shape[:2]))
    return decode_step(self, tokens, position, kv_cache, cross_kv, encoder_mask)

  def recording_decode(self, decoder_input_ids, *args, **kwargs):
    calls.append((decoder_input_ids.shape,))
    return decode(self, decoder_input_ids, *args, **kwargs)

  monkeypatch.setattr(T5, "decode_step", recording_step)
  monkeypatch.setattr(T5, "decode", recording_decode)
  before = trace_count()
  # A shape no other test searches, so the search is traced here and the calls are recorded.
  beam_search(
    model,
    _inputs(b),
    num_beams=n,
    num_beam_groups=5,
    diversity_penalty=0.3,
    max_new_tokens=l,
    num_return_sequences=7,
    use_cache=cache,
  )
  assert trace_count() == before + 1
  if cache:
    assert calls == [((b, 1), (b, 1)), ((b, n), (b, n))], calls
  else:
    assert calls == [((b, 1, l),), ((b, n, l),)], calls
