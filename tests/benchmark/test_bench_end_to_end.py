"""One tiny measurement through the trainer's real step (and the fast step): valid records."""

import json
import os
import subprocess
import sys

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


def test_binary_measures_each_dropout_prng(tmp_path):
  """`python -m gr_jax.bench --dropout_prng=threefry2x32,rbg`: one record per generator, each
  saying which one ran, appended to --out."""
  out = tmp_path / "bench.jsonl"
  cmd = [sys.executable, "-m", "gr_jax.bench", "--preset=tiny", "--batch_size=2",
         "--encoder_len=8", "--decoder_len=2", "--warmup=0", "--repeats=1", "--steps_per_repeat=1",
         "--dropout_prng=threefry2x32,rbg", f"--out={out}"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                        env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  recs = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["dropout_prng"] for r in recs] == ["threefry2x32", "rbg"]
  assert all(r["kind"] == "train" and r["examples_per_s"] > 0 for r in recs)
  bad = subprocess.run(cmd[:-2] + ["--dropout_prng=philox"], capture_output=True, text=True,
                       timeout=600, env=env)
  assert bad.returncode != 0 and "train.dropout_prng: expected one of" in bad.stderr
