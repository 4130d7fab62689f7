"""bench/gpu_matrix.sh end to end at tiny shapes (SMOKE=1) on the CPU: every row runs, nothing
fails, the records and the summary come out. The GPU run is one device call with no second try, so
its plumbing is checked here, where it costs nothing."""

import json
import os
import subprocess
import sys
import tarfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_gpu_matrix_runs_every_row_at_tiny_shapes(tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  env = {
    **os.environ,
    "SMOKE": "1",
    "SKIP_WHEELS": "1",
    "OUT": str(tmp_path),
    "PY": sys.executable,
    "BUDGET_S": "1200",
    "JAX_PLATFORMS": "cpu",
    "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
  }
  proc = subprocess.run(
    ["bash", os.path.join(REPO, "bench", "gpu_matrix.sh")],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=1500,
  )
  log = (tmp_path / "gpu_matrix.log").read_text()
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "FAILED" not in log and "SKIP (budget)" not in log, log[-5000:]
  assert log.count("=== [") == 12  # every row started
  recs = [json.loads(line) for line in (tmp_path / "gpu_matrix.jsonl").read_text().splitlines()]
  kinds = {(r["kind"], r["impl"]) for r in recs}
  assert {
    ("train", "gr_jax_trainer"),
    ("train", "gr_jax_fast"),
    ("train", "hf_eager"),
    ("decode", "gr_jax_beam_search"),
    ("decode", "hf_generate"),
  } <= kinds
  head = [
    r
    for r in recs
    if r["kind"] == "train" and r["impl"] == "gr_jax_trainer" and r["num_items"] == 0
  ][:2]
  assert [r["dropout_prng"] for r in head] == ["rbg", "threefry2x32"]  # row 1 measures both
  assert sorted(
    r["num_beams"] for r in recs if r["kind"] == "decode" and r["impl"] == "gr_jax_beam_search"
  ) == [30, 60]
  assert any(r["kind"] == "train" and r.get("remat") for r in recs)
  assert any("--xla_gpu_enable_triton_gemm=false" in r.get("xla_flags", "") for r in recs)
  assert sum(r["kind"] == "compare" for r in recs) >= 5
  assert "done in" in log and "compare decode" in log  # the summary table printed
  with tarfile.open(tmp_path / "trace_headline.tgz") as tar:  # the headline's profile
    names = tar.getnames()
  for prng in ("rbg", "threefry2x32"):
    assert any(f"trace_headline/trainer_{prng}/" in n and n.endswith(".xplane.pb") for n in names)
