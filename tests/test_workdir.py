"""Run-directory paths and atomic writes (gr_jax/workdir.py).

No non-local filesystem works here without network: etils.epath knows gs://, s3://, az:// and
hf:// only (no `memory://`), each through a cloud client. So a whole training run on a remote
workdir is a manual check, on a machine with credentials for a bucket:

  python -m gr_jax.train --config configs/quickstart.py --workdir gs://BUCKET/gr_jax/quickstart \
      --config.train.num_steps=20 --config.data.processed_dir=/local/prepared/data

It must leave `checkpoints/` with Orbax steps under gs://BUCKET/gr_jax/quickstart and no local
directory named `gs:` in the cwd. The tests below check the parts that decide this: paths are
absolutised only when local, the checkpoint directory of a URL workdir stays a URL, and the
atomic writers send URL paths through epath (here onto a directory through epath's mocking
helper, which routes the gs:// backend to functions of the test).
"""

from __future__ import annotations

import json
import os

import ml_collections
import pytest
from etils.epath import testing as epath_testing

from gr_jax import workdir
from gr_jax.evaluation import runs


def test_only_local_paths_are_made_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert workdir.absolute("runs/a") == os.path.join(str(tmp_path), "runs", "a")
  assert workdir.absolute("/x/y") == "/x/y"
  assert workdir.absolute("file:///x/y") == "/x/y"
  for url in ("gs://bucket/run", "s3://bucket/a/b", "az://c/d", "hf://x/y"):
    assert workdir.absolute(url) == url
    assert not workdir.is_local(url)
  assert workdir.is_local("runs/a") and workdir.is_local("file:///x")


def test_checkpoint_dir_keeps_a_url_workdir():
  from gr_jax import checkpointing

  assert checkpointing.checkpoint_dir("gs://bucket/run") == "gs://bucket/run/checkpoints"
  assert checkpointing.checkpoint_dir("/abs/run") == "/abs/run/checkpoints"
  assert not os.path.exists("gs:")  # nothing local was created on the way


def test_processed_dir_default_and_explicit():
  c = ml_collections.ConfigDict({"data": {"processed_dir": ""}})
  assert workdir.processed_dir(c, "gs://b/run") == "gs://b/run/data"
  assert workdir.processed_dir(c, "/w") == "/w/data"
  c.data.processed_dir = "/prepared"
  assert workdir.processed_dir(c, "/w") == "/prepared"
  old = ml_collections.ConfigDict({"data": {"tasks": ("rec",)}})  # a config from before the field
  assert workdir.processed_dir(old, "/w") == "/w/data"


def test_local_write_is_atomic_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "sub" / "metrics.json"
  workdir.write_json(str(path), {"b": 1, "a": [1, 2]})
  assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
  assert path.read_text() == workdir.json_text({"b": 1, "a": [1, 2]})
  assert os.listdir(path.parent) == ["metrics.json"]

  class Unserialisable:
    pass

  with pytest.raises(TypeError):
    workdir.write_json(str(path), {"x": Unserialisable()})  # fails before touching the file
  workdir.write_text(str(path), "new")
  assert path.read_text() == "new" and os.listdir(path.parent) == ["metrics.json"]


def test_interrupted_local_write_keeps_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "config.json"
  path.write_text("old")

  def boom(src, dst):
    raise OSError("disk full")

  monkeypatch.setattr(os, "replace", boom)
  with pytest.raises(OSError, match="disk full"):
    workdir.write_text(str(path), "new")
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["config.json"]  # the temporary file was removed


def test_url_paths_are_written_through_epath(tmp_path):
  root = tmp_path / "bucket_store"

  def local(path):
    path = os.fspath(path)
    assert path.startswith("gs://"), path  # only the URL writes come here
    return os.path.join(root, path[len("gs://") :])

  def makedirs(original, path, exist_ok=False):
    return original(local(path), exist_ok=exist_ok)

  def open_(original, path, mode):
    return original(local(path), mode)

  with epath_testing.mock_epath(makedirs=makedirs, open=open_):
    runs.write_json("gs://bucket/run/eval/test/metrics.json", {"recall@30": 0.5})
    workdir.write_text("gs://bucket/run/notes.txt", "hello")
  assert json.loads((root / "bucket/run/eval/test/metrics.json").read_text()) == {"recall@30": 0.5}
  assert (root / "bucket/run/notes.txt").read_text() == "hello"
  assert not os.path.exists("gs:")


def test_runs_reexports_the_one_writer():
  assert runs.write_json is workdir.write_json and runs.write_text is workdir.write_text


@pytest.mark.parametrize(
  "args",
  [
    ["--workdir", "gs://bucket/x"],
    ["--workdir", "runs/x", "--config.data.processed_dir=gs://bucket/x/data"],
    ["--workdir", "s3://bucket/x"],
  ],
  ids=["gs_workdir", "gs_processed_dir", "s3_workdir"],
)
def test_prepare_refuses_an_object_store_dataset_and_writes_nothing_local(tmp_path, args):
  # Was: exit 0 in 2 s with the dataset under ./gs:/bucket/x/data of the cwd.
  from tests.test_binaries_config import REPO, TINY, env, one_line_error

  import subprocess
  import sys

  proc = subprocess.run(
    [sys.executable, "-m", "gr_jax.prepare", "--config", f"{REPO}/configs/base.py", *args, *TINY],
    cwd=tmp_path,
    env=env(),
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  line = one_line_error(proc)
  assert "://bucket/x/data: the processed dataset must be on a local disk" in line, line
  assert "--config.data.processed_dir" in line, line
  assert os.listdir(tmp_path) == [], os.listdir(tmp_path)


def test_dataset_library_calls_refuse_url_paths(tmp_path, monkeypatch):
  from gr_jax.data import cold_start, prepare_dataset
  from tests.data.conftest import tiny_config

  monkeypatch.chdir(tmp_path)
  with pytest.raises(workdir.NotLocalError, match=r"^gs://b/ds: the processed dataset must"):
    prepare_dataset(tiny_config(), "gs://b/ds")
  with pytest.raises(workdir.NotLocalError, match=r"^gs://b/new: --out"):
    cold_start.add_items(str(tmp_path), str(tmp_path / "items.jsonl"), "gs://b/new")
  config = tiny_config()
  config.data.source = "jsonl"
  config.data.path = "gs://b/raw"
  from gr_jax.data import DataError

  with pytest.raises(DataError, match=r"^gs://b/raw: field 'data.path': raw data is read from a"):
    prepare_dataset(config, str(tmp_path / "ds"))
  assert os.listdir(tmp_path) == []
