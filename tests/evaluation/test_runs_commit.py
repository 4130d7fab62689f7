"""eval/<split>/ is committed as one unit: a failed or killed write never leaves a mix of files."""

import os
import socket
import subprocess
import sys

import pytest

from gr_jax.evaluation import runs


def _results(value: float, tasks=("search", "rec")):
  out = {}
  for t in tasks:
    run = {"q1": {"a": value, "b": value / 2}, "q2": {"b": value}}
    qrels = {"q1": {"a": 1}, "q2": {"c": 1}}
    out[t] = {
      "run": run,
      "qrels": qrels,
      "means": {"recall@30": value},
      "per_query": {"recall@30": {"q1": value, "q2": 0.0}},
    }
  return out


def _snapshot(d):
  return {name: (d / name).read_bytes() for name in sorted(os.listdir(d))}


def _parent_entries(d):
  return sorted(os.listdir(d.parent))


def test_write_eval_outputs_round_trip_and_replaces_whole_dir(tmp_path):
  d = tmp_path / "run" / "eval" / "test"
  summary = runs.write_eval_outputs(str(d), _results(0.5), {"info": {"step": 1}}, tag="t1")
  assert summary == {"search": {"recall@30": 0.5}, "rec": {"recall@30": 0.5}, "info": {"step": 1}}
  assert sorted(os.listdir(d)) == [
    "metrics.json",
    "per_query.json",
    "rec.qrels",
    "rec.run",
    "search.qrels",
    "search.run",
  ]
  assert runs.read_json(str(d / "metrics.json")) == summary
  assert runs.read_run(str(d / "search.run")) == _results(0.5)["search"]["run"]
  assert runs.read_qrels(str(d / "rec.qrels")) == _results(0.5)["rec"]["qrels"]
  # A second evaluation of one task: the stale rec files of the first one are gone with it.
  runs.write_eval_outputs(str(d), _results(0.25, tasks=("search",)), tag="t2")
  assert sorted(os.listdir(d)) == ["metrics.json", "per_query.json", "search.qrels", "search.run"]
  assert runs.read_json(str(d / "metrics.json")) == {"search": {"recall@30": 0.25}}
  assert _parent_entries(d) == ["test"]  # no staging directory left behind


def test_failure_while_writing_keeps_the_old_directory(tmp_path, monkeypatch):
  d = tmp_path / "eval" / "test"
  runs.write_eval_outputs(str(d), _results(0.5))
  before = _snapshot(d)
  calls = []

  def failing_fsync(fd):
    calls.append(fd)
    if len(calls) == 3:  # two files written, the third one fails: a torn set if written in place
      raise OSError("disk full (simulated)")

  monkeypatch.setattr(runs.os, "fsync", failing_fsync)
  with pytest.raises(OSError, match="simulated"):
    runs.write_eval_outputs(str(d), _results(0.75))
  assert len(calls) == 3
  assert _snapshot(d) == before
  assert _parent_entries(d) == ["test"]


def test_failure_on_the_swap_restores_the_old_directory(tmp_path, monkeypatch):
  d = tmp_path / "eval" / "test"
  runs.write_eval_outputs(str(d), _results(0.5))
  before = _snapshot(d)
  real_rename = os.rename

  def failing_rename(src, dst):
    if os.path.basename(src).startswith(".test.tmp."):  # renaming the new set into place
      raise OSError("rename failed (simulated)")
    return real_rename(src, dst)

  monkeypatch.setattr(runs.os, "rename", failing_rename)
  with pytest.raises(OSError, match="simulated"):
    runs.write_eval_outputs(str(d), _results(0.75))
  assert _snapshot(d) == before
  assert _parent_entries(d) == ["test"]


def test_bad_input_touches_nothing(tmp_path):
  d = tmp_path / "eval" / "test"
  runs.write_eval_outputs(str(d), _results(0.5))
  before = _snapshot(d)
  bad = _results(0.75)
  bad["rec"]["qrels"] = {"q 1": {"a": 1}}  # whitespace in an id: not writable as TREC
  with pytest.raises(ValueError, match="query id"):
    runs.write_eval_outputs(str(d), bad)
  with pytest.raises(ValueError, match="collides"):
    runs.write_eval_outputs(str(d), _results(0.75), {"search": 1})
  assert _snapshot(d) == before
  assert _parent_entries(d) == ["test"]


def test_first_write_creates_parents(tmp_path):
  d = tmp_path / "a" / "b" / "eval" / "valid"
  runs.write_eval_outputs(str(d), _results(0.5, tasks=("rec",)))
  assert runs.load_eval(str(tmp_path / "a" / "b"), "valid")[0]["rec"] == {"recall@30": 0.5}


def test_stale_staging_of_a_dead_writer_is_removed(tmp_path):
  d = tmp_path / "eval" / "test"
  d.parent.mkdir(parents=True)
  host = socket.gethostname()
  dead = subprocess.run(
    [sys.executable, "-c", "import os; print(os.getpid())"],
    capture_output=True,
    text=True,
    check=True,
  )
  dead_pid = int(dead.stdout)
  stale = [f".test.tmp.{host}.{dead_pid}.0000aaaa", f".test.old.{host}.{dead_pid}.0000bbbb"]
  # Possibly mid-commit: a live process on this host, or any process on another host.
  kept = [
    f".test.tmp.{host}.{os.getppid()}.0000cccc",
    f".test.tmp.otherhost.{dead_pid}.0000dddd",
    ".other.tmp.x.1.2",
  ]
  for name in stale + kept:
    (d.parent / name).mkdir()
    (d.parent / name / "metrics.json").write_text("{}")
  runs.write_eval_outputs(str(d), _results(0.5))
  assert _parent_entries(d) == sorted(kept + ["test"])


def test_commit_dir_rejects_paths_as_names(tmp_path):
  with pytest.raises(ValueError, match="plain name"):
    runs.commit_dir(str(tmp_path / "x"), {"../escape": "no"})
  assert not (tmp_path / "x").exists()
