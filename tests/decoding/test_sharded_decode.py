"""Beam search on a multi-device mesh: queries split over the "data" axis, params sharded over
"model", the same sequences and scores as on one device (8 fake CPU devices in a subprocess)."""

import json
import os
import subprocess
import sys

import pytest

from tests import numerics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = r"""
import json, sys
import jax, numpy as np
from flax import nnx
sys.path.insert(0, sys.argv[1])
import tiny_config
from gr_jax.decoding import AtomicItemConstraint, beam_search
from gr_jax.model import partitioning
from gr_jax.model import build as build_lib
from gr_jax.training import state as state_lib

cfg = tiny_config.get_config()
cfg, _ = build_lib.resolve_model(cfg, text_vocab_size=50, num_item_tokens=40)
rng = np.random.default_rng(0)
ids = rng.integers(3, 50, (8, 12)).astype(np.int32)
ids[:, 9:] = 0
ids[5, 4:] = 0
con = AtomicItemConstraint(token_offset=50, num_items=40, eos_id=1)
out = {}
for data, model_axis in [(1, 1), (4, 2), (8, 1), (2, 4)]:
  devices = jax.devices()[:data * model_axis]
  mesh = partitioning.make_mesh(data, model_axis, devices=devices)
  parts, params = build_lib.build_model(cfg, mesh)
  model = nnx.merge(parts.graphdef, params, parts.rest)
  with jax.set_mesh(mesh):
    seqs, scores = beam_search(model, ids, num_beams=6, num_beam_groups=3, diversity_penalty=0.25,
                               max_new_tokens=2, num_return_sequences=6, constraint=con)
  out[f"{data}x{model_axis}"] = {
      "seqs": np.asarray(seqs).tolist(), "scores": np.asarray(scores).tolist(),
      "rows_per_device": seqs.sharding.shard_shape(seqs.shape)[0],
      "devices": len(seqs.sharding.device_set)}
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_sharded_beam_search_equals_one_device():
  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
    "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
  }
  proc = subprocess.run(
    [sys.executable, "-c", SCRIPT, os.path.join(REPO, "tests", "training")],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.split("RESULT", 1)[1])
  ref = out["1x1"]
  for name, data in [("4x2", 4), ("8x1", 8), ("2x4", 2)]:
    got = out[name]
    assert got["devices"] == 8, name
    assert got["rows_per_device"] == 8 // data, name  # each device searched its own queries
    assert got["seqs"] == ref["seqs"], name
    for a, b in zip(got["scores"], ref["scores"]):
      # Scores: two log-softmax steps over 90 tokens after a forward whose batch is split over
      # devices (other fusions, so other summation orders): float32 accuracy for those terms.
      numerics.assert_close_f32(a, b, n_terms=2 * 90 * 64, err_msg=name)
