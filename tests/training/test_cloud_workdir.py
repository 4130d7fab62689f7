"""A gs:// workdir: the run's own files go through etils.epath, tested against a local GCS emulator.

The emulator (gcp-storage-emulator, in memory) stands in for Cloud Storage; epath reaches it
through gcsfs (STORAGE_EMULATOR_HOST). Orbax's arrays go through tensorstore
(TENSORSTORE_GCS_HTTP_URL), which saves a one-array checkpoint there but fails on a real train
state ("Malformed StorageGeneration" reading an OCDBT manifest, even with one request at a time):
a limit of the emulator, so the whole-run check on real Cloud Storage is the manual one in
launch/README.md. The processed dataset stays local (it is memory-mapped).
"""

import os
import socket
import subprocess
import sys
import time

import json

import pytest
from etils import epath

import tiny_config
from gr_jax import workdir as workdir_lib
from gr_jax import workdir_lock
from gr_jax.evaluation import runs as runs_lib
from gr_jax import checkpointing
from gr_jax.training import loop

BUCKET = "gr-jax-test"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs():
  port = _free_port()
  server = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "gcp_storage_emulator",
      "start",
      "--host=127.0.0.1",
      f"--port={port}",
      "--in-memory",
      f"--default-bucket={BUCKET}",
    ],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 60
  while True:
    try:
      socket.create_connection(("127.0.0.1", port), timeout=1).close()
      break
    except OSError:
      if time.time() > deadline or server.poll() is not None:
        server.kill()
        raise RuntimeError("the GCS emulator did not start")
      time.sleep(0.2)
  url = f"http://127.0.0.1:{port}"
  env = {
    "STORAGE_EMULATOR_HOST": url,
    "TENSORSTORE_GCS_HTTP_URL": url,
    "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
  }
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    yield f"gs://{BUCKET}"
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    server.kill()
    server.wait()


def test_run_files_on_gs(gcs, tmp_path, monkeypatch):
  """config.json, metrics.jsonl (resume truncation, appends), checkpoint listing and the lock."""
  monkeypatch.chdir(tmp_path)  # os.path.abspath("gs://...") would create ./gs: here
  run = f"{gcs}/runs/files"
  assert workdir_lib.absolute(run) == run
  workdir_lib.write_json(f"{run}/config.json", {"a": 1})
  assert json.loads(epath.Path(run, "config.json").read_text()) == {"a": 1}

  log = workdir_lib.MetricsLog(f"{run}/metrics.jsonl", resumed_step=0)
  for step in (2, 4, 6):
    log.write({"step": step, "loss": 1.0 / step})
  assert [r["step"] for r in workdir_lib.read_jsonl(f"{run}/metrics.jsonl")] == [2, 4, 6]
  # A resume at step 4 drops what the interrupted run wrote after its checkpoint.
  log = workdir_lib.MetricsLog(f"{run}/metrics.jsonl", resumed_step=4)
  log.write({"step": 6, "loss": 0.5})
  assert workdir_lib.read_jsonl(f"{run}/metrics.jsonl") == [
    {"step": 2, "loss": 0.5},
    {"step": 4, "loss": 0.25},
    {"step": 6, "loss": 0.5},
  ]

  for step in ("6", "12", "tmp-not-a-step"):
    epath.Path(checkpointing.checkpoint_dir(run), step, "meta").mkdir(parents=True)
    epath.Path(checkpointing.checkpoint_dir(run), step, "meta", "x").write_text("")
  assert checkpointing.all_steps(run) == [6, 12]

  # An eval directory: replaced as a whole, read back with the readers every tool uses.
  out = f"{run}/eval/test"
  runs_lib.commit_dir(out, {"search.run": "q1 Q0 i1 1 2.0 t\n", "metrics.json": "{}\n"})
  runs_lib.commit_dir(out, {"search.run": "q1 Q0 i2 1 3.0 t\n", "metrics.json": '{"a": 1}\n'})
  assert sorted(p.name for p in epath.Path(out).iterdir()) == ["metrics.json", "search.run"]
  assert runs_lib.read_run(f"{out}/search.run") == {"q1": {"i2": 3.0}}
  assert runs_lib.read_json(f"{out}/metrics.json") == {"a": 1}
  assert runs_lib.resolve_eval_dir(run, "test") == out

  with workdir_lock.hold(run, purpose="test"):  # no flock on an object store: a warning
    pass
  assert os.listdir(tmp_path) == []


def test_gs_workdir_needs_a_local_processed_dataset(gcs):
  cfg = tiny_config.make("")
  with pytest.raises(ValueError, match="processed_dir to a local directory"):
    loop.train(cfg, f"{gcs}/runs/no_data")
