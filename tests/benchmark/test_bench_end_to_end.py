"""One tiny measurement through the trainer's real step (and the fast step): valid records."""

import json
import os
import subprocess
import sys

import pytest

from gr_jax.bench import protocol
from gr_jax.bench import train_bench
from gr_jax.model import flops

_TINY = {
  "d_model": 16,
  "d_kv": 4,
  "d_ff": 32,
  "num_heads": 2,
  "num_encoder_layers": 1,
  "num_decoder_layers": 1,
}


@pytest.mark.slow
def test_tiny_train_measurement_emits_a_json_record_and_fast_step_agrees():
  pytest.importorskip("gr_jax.training.step")
  recs = [
    train_bench.train_benchmark(
      preset="tiny",
      batch_size=4,
      encoder_len=8,
      decoder_len=2,
      num_items=40,
      impl=impl,
      warmup=0,
      repeats=1,
      steps_per_repeat=1,
      chunk_size=128,
      model_overrides=_TINY,
    )
    for impl in ("trainer", "fast")
  ]
  for rec in recs:
    line = json.dumps(rec)
    back = json.loads(line)
    for f in protocol.RECORD_FIELDS:
      assert f in back, f
    assert back["kind"] == "train" and back["examples_per_s"] > 0
    assert back["tokens_per_s"] == pytest.approx(back["examples_per_s"] * 10)
    assert back["mfu"] is None  # CPU: no peak known, so no made-up MFU
    assert back["flops_per_example"] > 0
    assert back["xla_bytes_accessed_per_step"] > 0  # XLA's byte count, for the step's byte floor
  # Same init, batch, dropout keys and update: the chunked loss must equal the trainer's loss.
  assert recs[1]["loss"] == pytest.approx(recs[0]["loss"], rel=1e-4)


@pytest.mark.slow
def test_memory_mode_accounts_for_the_state_and_reports_xla_costs():
  """--modes=memory compiles for abstract shapes: arguments hold at least the float32 params and
  both AdamW moments; XLA's FLOPs are at least the analytic matmul count."""
  rec = train_bench.compiled_train_memory(
    preset="tiny", batch_size=4, encoder_len=8, decoder_len=2, num_items=40, dtype="float32"
  )
  n = rec["num_params"]
  assert n > 0 and rec["compiled_argument_bytes"] >= 3 * 4 * n
  assert rec["compiled_temp_bytes"] > 0 and rec["xla_bytes_accessed"] > 0
  from gr_jax.model import T5Config

  cfg = T5Config.from_preset("tiny", num_item_tokens=40)
  analytic = flops.train_flops_per_example(cfg, 8, 2) * 4
  assert rec["xla_flops"] >= 0.9 * analytic


@pytest.mark.slow
def test_binary_interleaves_two_settings_and_runs_the_data_mode(tmp_path):
  """`python -m gr_jax.bench` end to end from outside the repository (so nothing is found by
  path): two train settings timed interleaved give a paired compare line; the data mode takes
  its defaults from --config."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  out = tmp_path / "bench.jsonl"
  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]),
  }
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "gr_jax.bench",
      "--modes=train,data",
      "--preset=tiny",
      "--batch_size=2",
      "--encoder_len=8",
      "--decoder_len=2",
      "--impl=trainer,full",
      "--warmup=0",
      "--repeats=2",
      "--steps_per_repeat=1",
      f"--out={out}",
      f"--config={os.path.join(repo, 'configs', 'base.py')}",
      "--data_users=300",
      "--data_items=100",
      "--data_batches=3",
    ],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  recs = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["kind"] for r in recs] == ["train", "train", "compare", "data"]
  assert [r["impl"] for r in recs[:2]] == ["gr_jax_trainer", "gr_jax_full"]
  assert all(r["interleaved"] and len(r["step_times_s"]) == 2 for r in recs[:2])
  cmp = recs[2]
  assert cmp["impl"] == "gr_jax_full" and cmp["vs_impl"] == "gr_jax_trainer"
  assert cmp["paired"] and cmp["pairs"] == 2
  assert cmp["ratio_min"] <= cmp["ratio"] <= cmp["ratio_max"]
  for r in recs:
    assert "load_avg_1m" in r and r["cpu_model"], r["kind"]
  assert recs[3]["pipeline_concat"]["examples_per_s"] > 0
