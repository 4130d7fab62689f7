"""Input edge cases behind the binaries: MPD symlink loops, stale prepare temp dirs, TFDS never
downloading, Hugging Face index entries outside the model directory."""

import json
import os
import subprocess
import sys
import types

import pytest

from tests.test_binaries_config import REPO, TINY, env, run_binary

if REPO not in sys.path:
  sys.path.insert(0, REPO)

from configs import base  # noqa: E402


def _slice(path, pids):
  playlists = [
    {
      "pid": pid,
      "name": f"list {pid}",
      "tracks": [
        {
          "pos": k,
          "track_uri": f"spotify:track:{pid % 3}{k}",
          "track_name": f"t{k}",
          "artist_name": "a",
          "album_name": "b",
        }
        for k in range(4)
      ],
    }
    for pid in pids
  ]
  path.write_text(json.dumps({"playlists": playlists}))


def _slice_files_in_subprocess(root):
  code = (
    "import json, sys\nfrom gr_jax.data import mpd\nprint(json.dumps(mpd.slice_files(sys.argv[1])))"
  )
  proc = subprocess.run(
    [sys.executable, "-c", code, str(root)],
    cwd=REPO,
    env=env(),
    capture_output=True,
    text=True,
    timeout=60,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout)


@pytest.mark.slow
def test_mpd_dotdot_link_reads_each_slice_once(tmp_path):
  root = tmp_path / "mpd"
  (root / "data").mkdir(parents=True)
  _slice(root / "data" / "mpd.slice.0-999.json", [1, 2])
  os.symlink("..", root / "data" / "loop")  # data/loop/data/loop/... : the same directory again
  files = _slice_files_in_subprocess(root)
  assert files == [str(root / "data" / "mpd.slice.0-999.json")]


@pytest.mark.slow
def test_mpd_two_links_do_not_hang(tmp_path):
  # Timed out (or walked tens of thousands of paths) before slice discovery tracked realpaths.
  root = tmp_path / "mpd"
  (root / "a").mkdir(parents=True)
  (root / "b").mkdir()
  _slice(root / "a" / "mpd.slice.0-999.json", [1, 2])
  _slice(root / "b" / "mpd.slice.1000-1999.json", [3, 4])
  os.symlink(os.path.join("..", "b"), root / "a" / "to_b")
  os.symlink(os.path.join("..", "a"), root / "b" / "to_a")
  files = _slice_files_in_subprocess(root)
  assert [os.path.basename(f) for f in files] == [
    "mpd.slice.0-999.json",
    "mpd.slice.1000-1999.json",
  ]


@pytest.mark.slow
def test_mpd_prepare_through_a_link_loop(tmp_path):
  root = tmp_path / "mpd"
  (root / "data").mkdir(parents=True)
  _slice(root / "data" / "mpd.slice.0-999.json", list(range(1, 13)))
  os.symlink("..", root / "data" / "loop")
  proc = run_binary(
    "prepare",
    "--config",
    os.path.join(REPO, "configs", "base.py"),
    "--workdir",
    str(tmp_path / "run"),
    "--config.data.source=mpd",
    f"--config.data.path={root}",
    "--config.data.tokenizer.vocab_size=60",
    "--config.data.search_valid_fraction=0.2",
    "--config.data.search_test_fraction=0.2",
  )
  assert "duplicate pid" not in proc.stderr, proc.stderr[-2000:]
  assert proc.returncode == 0, proc.stderr[-2000:]


# ------------------------------------------------------------------------ stale temp dirs
def _dead_pid():
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


@pytest.mark.slow
def test_prepare_removes_temp_dirs_of_killed_runs(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  stale = run / f".data.tmp-{_dead_pid()}-deadbeef"
  (stale / "search").mkdir(parents=True)
  (stale / "search" / "train.npz").write_bytes(b"half written")
  # A prepare of the same destination still running keeps its temp dir.
  live_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
  try:
    live = run / f".data.tmp-{live_proc.pid}-0123abcd"
    live.mkdir()
    other = run / f".other.tmp-{_dead_pid()}-feedf00d"  # another destination's: not ours
    other.mkdir()
    proc = run_binary(
      "prepare", "--config", os.path.join(REPO, "configs", "base.py"), "--workdir", str(run), *TINY
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not stale.exists()
    assert live.exists() and other.exists()
    assert (run / "data" / "manifest.json").exists()
  finally:
    live_proc.kill()
    live_proc.wait()


def test_temp_dir_of_a_reused_pid_is_stale(tmp_path):
  from gr_jax.data import prepare as prep

  out = tmp_path / "data"
  # This process is alive, but a directory last written before it started is from another run.
  old = tmp_path / f".data.tmp-{os.getpid()}-00000000"
  old.mkdir()
  os.utime(old, (1_000_000, 1_000_000))
  mine = tmp_path / f".data.tmp-{os.getpid()}-11111111"
  mine.mkdir()
  removed = prep.remove_stale_tmp_dirs(str(out))
  assert removed == [str(old)] and mine.exists()


# ------------------------------------------------------------------------ changed raw data
@pytest.mark.slow
def test_prepare_rerun_on_changed_raw_data_rebuilds_and_says_why(tmp_path):
  # Was: exit 0 and the dataset of the old sessions.jsonl kept.
  raw = tmp_path / "logs"
  raw.mkdir()
  (raw / "items.jsonl").write_text(
    "".join(f'{{"item": "t{i}", "title": "t {i}"}}\n' for i in range(6))
  )
  (raw / "search.jsonl").write_text(
    "".join(f'{{"query": "q {i % 3}", "item": "t{i}"}}\n' for i in range(6))
  )
  sessions = raw / "sessions.jsonl"
  sessions.write_text(
    '{"user": 1, "items": ["t0", "t1", "t2", "t3"]}\n{"user": 2, "items": ["t4", "t5", "t0"]}\n'
  )
  args = [
    "--config",
    os.path.join(REPO, "configs", "base.py"),
    "--workdir",
    str(tmp_path / "run"),
    "--config.data.source=jsonl",
    f"--config.data.path={raw}",
    "--config.data.search_valid_fraction=0.0",
    "--config.data.search_test_fraction=0.0",
    # Every session's rec test row (with 2-3 sessions, none of them is a rec training target).
    "--config.data.heldout_coverage_rule=paper",
  ]
  proc = run_binary("prepare", *args)
  assert proc.returncode == 0, proc.stderr[-2000:]
  manifest = tmp_path / "run" / "data" / "manifest.json"
  assert json.loads(manifest.read_text())["splits"]["rec"]["test"]["examples"] == 2
  proc = run_binary("prepare", *args)
  assert proc.returncode == 0 and "rebuilding" not in proc.stderr, proc.stderr[-2000:]
  with open(sessions, "a") as f:
    f.write('{"user": 3, "items": ["t5", "t4", "t3"]}\n')
  proc = run_binary("prepare", *args)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if "rebuilding" in l]
  assert len(lines) == 1 and f"{sessions} changed since the dataset" in lines[0], proc.stderr
  assert json.loads(manifest.read_text())["splits"]["rec"]["test"]["examples"] == 3


# ------------------------------------------------------------------------ tfds never downloads
@pytest.fixture
def fake_tfds(monkeypatch):
  calls = []

  def load(name, **kwargs):
    calls.append((name, kwargs))
    if kwargs.get("download", True):
      raise AssertionError("the test's fake would have downloaded")
    raise AssertionError(f"Dataset {name}: could not find data in {kwargs.get('data_dir')}.")

  module = types.ModuleType("tensorflow_datasets")
  module.load = load
  module.as_numpy = lambda ds: ds
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
  return calls


def _tfds_config(path):
  c = base.get_config()
  c.data.source = "tfds_movielens"
  c.data.path = str(path)
  return c.data


def test_tfds_loads_without_download_and_names_data_dir(tmp_path, fake_tfds):
  from gr_jax.data import tfds_movielens
  from gr_jax.data.errors import DataError

  with pytest.raises(DataError) as e:
    tfds_movielens.load(_tfds_config(tmp_path))
  assert fake_tfds and fake_tfds[0][1]["download"] is False
  assert fake_tfds[0][1]["data_dir"] == str(tmp_path)
  msg = str(e.value)
  assert msg.startswith(str(tmp_path)) and "nothing is downloaded" in msg and "\n" not in msg


def test_tfds_missing_data_dir(tmp_path, fake_tfds):
  from gr_jax.data import tfds_movielens
  from gr_jax.data.errors import DataError

  with pytest.raises(DataError, match="TFDS data_dir not found"):
    tfds_movielens.load(_tfds_config(tmp_path / "absent"))
  assert not fake_tfds


# ------------------------------------------------------------------------ HF index paths
def _index(model_dir, fname):
  model_dir.mkdir(exist_ok=True)
  (model_dir / "model.safetensors.index.json").write_text(
    json.dumps({"metadata": {}, "weight_map": {"shared.weight": fname}})
  )


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "nested_dotdot"])
def test_hf_index_refuses_files_outside_the_model_dir(tmp_path, kind):
  pytest.importorskip("jax")
  from gr_jax.model import hf_import

  outside = tmp_path / "secret.safetensors"
  outside.write_bytes(b"x")
  model = tmp_path / "model"
  model.mkdir()
  if kind == "dotdot":
    fname = "../secret.safetensors"
  elif kind == "absolute":
    fname = str(outside)
  else:
    (model / "sub").mkdir()
    fname = "sub/../../secret.safetensors"
  _index(model, fname)
  with pytest.raises(hf_import.CheckpointError) as e:
    hf_import._TensorSource(str(model))  # pylint: disable=protected-access
  msg = str(e.value)
  assert "model.safetensors.index.json" in msg and "shared.weight" in msg and fname in msg
  assert "inside the model directory" in msg


def test_hf_index_accepts_hf_cache_symlinked_shards(tmp_path):
  # The Hugging Face cache's snapshot files are symlinks into ../../blobs: a name inside the
  # directory is fine wherever the link points.
  pytest.importorskip("jax")
  from gr_jax.model import hf_import

  blob = tmp_path / "blobs" / "abc123"
  blob.parent.mkdir()
  blob.write_bytes(b"x")
  model = tmp_path / "snapshots" / "rev"
  model.mkdir(parents=True)
  os.symlink(os.path.join("..", "..", "blobs", "abc123"), model / "model-00001.safetensors")
  _index(model, "model-00001.safetensors")
  src = hf_import._TensorSource(str(model))  # pylint: disable=protected-access
  assert "shared.weight" in src


def test_hf_index_inside_names_still_checked_for_existence(tmp_path):
  pytest.importorskip("jax")
  from gr_jax.model import hf_import

  model = tmp_path / "model"
  _index(model, "model-00001-of-00002.safetensors")
  with pytest.raises(hf_import.CheckpointError, match="missing file"):
    hf_import._TensorSource(str(model))  # pylint: disable=protected-access
