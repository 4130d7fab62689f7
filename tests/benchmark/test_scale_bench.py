"""`--modes=scale` at a tiny catalogue: its records, one ID per item, a trie that accepts exactly
the catalogue, and the blocked k-means path (what makes 10M items fit) against the one-piece one."""

import json

import jax
import numpy as np
import pytest

from gr_jax.bench import cli
from gr_jax.bench import protocol
from gr_jax.bench import scale_bench
from gr_jax.data import rq_kmeans as rq_lib

from tests.benchmark.test_bench_end_to_end import _TINY  # the same tiny T5 shapes

N = 2000


def _walk(trie, seq):
  """Item of a token sequence by the trie's host tables (EOS appended), None when not accepted."""
  return trie.to_items(np.concatenate([seq, [scale_bench.EOS_ID]]))


@pytest.fixture(scope="module")
def scale_run():
  recs = scale_bench.run_scale_benchmark(
    num_items=N,
    parts=("ids", "decode"),
    dim=16,
    clusters=32,
    levels=2,
    codebook_size=16,
    kmeans_iters=3,
    text_vocab=64,
    preset="tiny",
    batch_size=2,
    encoder_len=6,
    num_beams=6,
    num_beam_groups=3,
    num_return_sequences=4,
    warmup=1,
    repeats=1,
    model_overrides=_TINY,
    command="test",
  )
  again, tokens, trie, codes = scale_bench.build_ids_and_trie(
    num_items=N, dim=16, clusters=32, levels=2, codebook_size=16, kmeans_iters=3, text_vocab=64
  )
  return recs, again, tokens, trie, codes


def test_scale_mode_is_registered():
  assert "scale" in cli.MODES


@pytest.mark.slow
def test_ids_record_fields_and_one_id_per_item(scale_run):
  recs, again, _, _, codes = scale_run
  assert [r["kind"] for r in recs] == ["scale_ids", "scale_decode"]
  rec = json.loads(json.dumps(recs[0]))
  for f in ("date", "cpu_model", "load_avg_1m", "command", "host"):
    assert f in rec, f
  assert rec["command"] == "test" and rec["num_items"] == N
  for phase in ("rq_kmeans", "disambiguate", "diagnostics", "trie_build"):
    assert rec[f"{phase}_s"] > 0
    assert rec[f"{phase}_peak_rss_bytes"] > 0
  assert rec["trie_bytes"] == sum(rec["trie_array_bytes"].values()) > 0
  assert rec["id_rows"] == N and rec["ids_unique"]
  assert rec["trie_accepts_exactly_catalogue"] and rec["trie_terminal_nodes"] == N
  # Deterministic for the seed: the second build gives the same codes.
  assert again["trie_bytes"] == rec["trie_bytes"]
  # Independently of the record: every item has exactly one ID row and no two items share one.
  assert codes.shape == (N, rec["tokens_per_item"])
  assert len(np.unique(codes, axis=0)) == N
  assert rec["num_id_tokens"] == 2 * 16 + rec["num_disambiguation"]


def test_trie_accepts_exactly_the_catalogue_ids(scale_run):
  _, _, tokens, trie, _ = scale_run
  assert [_walk(trie, row) for row in tokens] == list(range(N))
  # Nothing else: exactly N complete IDs, and a prefix or an altered ID is refused.
  assert int(np.asarray(trie.arrays["terminal"]).sum()) == N
  assert trie.to_items(np.concatenate([tokens[0, :-1], [scale_bench.EOS_ID]])) is None
  taken = {tuple(r) for r in tokens.tolist()}
  other = tokens[0].copy()
  for tok in range(64, 64 + 2 * 16):
    other[0] = tok
    if tuple(other.tolist()) not in taken:
      assert _walk(trie, other) is None
      break
  report = scale_bench.verify_trie(trie, tokens[::-1].copy())  # rows permuted: items mismatch
  assert not report["trie_accepts_exactly_catalogue"]


def test_decode_record_returns_catalogue_items(scale_run):
  recs, *_ = scale_run
  rec = json.loads(json.dumps(recs[1]))
  for f in protocol.RECORD_FIELDS:
    assert f in rec, f
  assert rec["queries_per_s"] == rec["examples_per_s"] > 0
  assert (rec["num_beams"], rec["num_beam_groups"], rec["num_return_sequences"]) == (6, 3, 4)
  assert rec["decoder_len"] == 4  # 2 levels + disambiguation + EOS
  assert rec["finite_returns"] == rec["returns_spelling_an_item"] > 0


@pytest.mark.slow
def test_memory_part_compares_atomic_and_semantic_vocabularies():
  recs = scale_bench.train_memory(
    num_items=N, num_id_tokens=40, tokens_per_item=3, preset="tiny", batch_size=2, encoder_len=4
  )
  atomic, semantic = recs
  assert (atomic["id_scheme"], semantic["id_scheme"]) == ("atomic", "semantic")
  assert (atomic["item_tokens_in_vocab"], semantic["item_tokens_in_vocab"]) == (N, 40)
  assert (atomic["decoder_len"], semantic["decoder_len"]) == (2, 4)
  assert atomic["param_bytes"] > semantic["param_bytes"] > 0
  assert atomic["compiled_argument_bytes"] >= atomic["param_bytes"]


def _blobs_with_duplicates():
  rng = np.random.default_rng(5)
  x = rng.standard_normal((2999, 8)).astype(np.float32)
  x[:1500] = x[0]  # half the rows identical: Lloyd steps empty clusters, which get re-seeded
  return x


@pytest.mark.slow
@pytest.mark.parametrize("make", [scale_bench.synthetic_embeddings, _blobs_with_duplicates])
def test_blocked_kmeans_matches_the_one_piece_path(monkeypatch, make):
  """Above CHUNK_ENTRIES k-means runs on row blocks (a ragged last block here): same codes, and
  centroids equal up to float summation order."""
  x = make(2999, 8, 16, 1) if make is scale_bench.synthetic_embeddings else make()
  whole = rq_lib.rq_kmeans(x, levels=2, codebook_size=16, seed=0, iters=4)
  monkeypatch.setattr(rq_lib, "CHUNK_ENTRIES", 16 * 700)
  jax.clear_caches()  # kmeans is jitted per shape: trace it again with the small blocks
  try:
    assert rq_lib._row_block(2999, 16) == 700  # pylint: disable=protected-access
    blocked = rq_lib.rq_kmeans(x, levels=2, codebook_size=16, seed=0, iters=4)
  finally:
    monkeypatch.undo()
    jax.clear_caches()
  np.testing.assert_array_equal(blocked.codes, whole.codes)
  np.testing.assert_allclose(blocked.codebooks, whole.codebooks, atol=1e-5)
  np.testing.assert_allclose(blocked.residual_mse, whole.residual_mse, rtol=1e-5)


def test_verify_trie_survives_node_ids_times_vocabulary_beyond_int32():
  """node * vocab_bound overflowed int32 on the 10M-item trie (16M nodes x 1,315 tokens) and the
  check reported 2.6M of 10M paths; large token ids reproduce it with a few nodes."""
  from gr_jax.decoding import PrefixTrieConstraint

  big = 1 << 30  # vocab_bound > 2^30: any node id >= 2 times it leaves int32
  tokens = np.array([[big + 2, big + 5, 7], [big + 2, big + 6, 7], [big + 3, big + 5, 8]], np.int64)
  trie = PrefixTrieConstraint.from_sequences(tokens, eos_id=1)
  report = scale_bench.verify_trie(trie, tokens)
  assert report["trie_paths_found"] == 3
  assert report["trie_accepts_exactly_catalogue"]
