"""One tiny measurement through the trainer's real step (and the fast step): valid records."""

import json

import pytest

from gr_jax.benchmark import train_bench

_TINY = {"d_model": 16, "d_kv": 4, "d_ff": 32, "num_heads": 2, "num_encoder_layers": 1,
         "num_decoder_layers": 1}


def test_tiny_train_measurement_emits_a_json_record_and_fast_step_agrees():
  pytest.importorskip("gr_jax.training.step")
  recs = [train_bench.train_benchmark(
      preset="tiny", batch_size=4, encoder_len=8, decoder_len=2, num_items=40, impl=impl,
      warmup=0, repeats=1, steps_per_repeat=1, chunk_size=128, model_overrides=_TINY)
      for impl in ("trainer", "fast")]
  for rec in recs:
    line = json.dumps(rec)
    back = json.loads(line)
    for f in train_bench.RECORD_FIELDS:
      assert f in back, f
    assert back["kind"] == "train" and back["examples_per_s"] > 0
    assert back["tokens_per_s"] == pytest.approx(back["examples_per_s"] * 10)
    assert back["mfu"] is None  # CPU: no peak known, so no made-up MFU
    assert back["flops_per_example"] > 0
  # Same init, batch, dropout keys and update: the chunked loss must equal the trainer's loss.
  assert recs[1]["loss"] == pytest.approx(recs[0]["loss"], rel=1e-4)

