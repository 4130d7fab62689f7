"""Every binary fails on bad input with one line and exit code 1 (runtime.main_guard); --verbose
or GR_JAX_VERBOSE=1 shows the traceback; a full disk names the path and the free space; evaluate
takes --config.a.b=value overrides on the run's config.json."""

import errno
import json
import os
import socket
import subprocess
import sys

import pytest

from tests.test_binaries_config import REPO, TINY, env, one_line_error, run_binary

if REPO not in sys.path:
  sys.path.insert(0, REPO)

BASE = os.path.join(REPO, "configs", "base.py")


def _bad_jsonl(tmp_path):
  raw = tmp_path / "logs"
  raw.mkdir()
  (raw / "items.jsonl").write_text('{"item": 1, "title": "one"}\n{"item": 2, "title": "two"}\n')
  (raw / "sessions.jsonl").write_text('{"user": 1, "items": [1, 2, 1]}\n')
  (raw / "search.jsonl").write_text('{"query": "one", "item": 1}\n{"query": 5, "item": 2}\n')
  return raw


@pytest.mark.slow
def test_prepare_data_error_is_one_line_without_traceback(tmp_path):
  raw = _bad_jsonl(tmp_path)
  proc = run_binary(
    "prepare",
    "--config",
    BASE,
    "--workdir",
    str(tmp_path / "run"),
    "--config.data.source=jsonl",
    f"--config.data.path={raw}",
  )
  line = one_line_error(proc)
  assert "search.jsonl:2" in line, line
  assert proc.returncode == 1


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag", "env"])
def test_verbose_shows_the_traceback(tmp_path, how):
  raw = _bad_jsonl(tmp_path)
  args = [
    "--config",
    BASE,
    "--workdir",
    str(tmp_path / "run"),
    "--config.data.source=jsonl",
    f"--config.data.path={raw}",
  ]
  if how == "flag":
    proc = run_binary("prepare", *args, "--verbose")
  else:
    proc = run_binary("prepare", *args, extra_env={"GR_JAX_VERBOSE": "1"})
  assert proc.returncode == 1
  assert "Traceback" in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith("error: ")


def test_main_guard_passes_bugs_through():
  from gr_jax import runtime

  def buggy(argv):
    raise ZeroDivisionError("a bug, not bad input")

  with pytest.raises(ZeroDivisionError):
    runtime.main_guard(buggy)(["x"])


def test_main_guard_one_line_for_project_errors(capsys):
  from gr_jax import runtime
  from gr_jax.data.errors import DataError

  def bad(argv):
    raise DataError("a.csv", 3, "movieId", "expected an integer,\n got 'x'")

  with pytest.raises(SystemExit) as e:
    runtime.main_guard(bad)(["x"])
  assert e.value.code == 1
  err = capsys.readouterr().err
  assert err == "error: a.csv:3: field 'movieId': expected an integer, got 'x'\n"


def test_main_guard_disk_full_names_path_and_free_space(tmp_path, capsys):
  from gr_jax import runtime

  target = tmp_path / "run" / "checkpoints" / "7" / "params"

  def full(argv):
    try:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    except OSError as e:  # libraries (Orbax, zipfile) re-wrap it: the chain is searched
      raise RuntimeError("save failed") from e

  with pytest.raises(SystemExit) as e:
    runtime.main_guard(full)(["x"])
  assert e.value.code == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(f"error: {target}: no space left on device"), err
  assert " free of " in err[0] and str(tmp_path) in err[0]


_ENOSPC_PREPARE = """
import errno, os, sys
import gr_jax.data.prepare as p
def full(path, arrays):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
p.save_npz = full
from gr_jax import prepare
sys.argv = ["prepare"] + sys.argv[1:]
prepare.run()
"""


def test_prepare_disk_full_is_one_line_and_keeps_nothing_half_written(tmp_path):
  proc = _run_code(_ENOSPC_PREPARE, "--config", BASE, "--workdir", str(tmp_path / "run"), *TINY)
  line = one_line_error(proc)
  assert "no space left on device" in line and "search/train.npz" in line, line
  assert " free of " in line
  # The temp directory is removed and nothing looks like a finished dataset.
  assert os.listdir(tmp_path / "run") == []


_ENOSPC_TRAIN = """
import errno, os, sys
from gr_jax.training import loop
def full(config, workdir):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(workdir, "checkpoints"))
loop.train = full
from gr_jax import train
sys.argv = ["train"] + sys.argv[1:]
train.run()
"""


@pytest.mark.slow
def test_train_disk_full_is_one_line(tmp_path):
  proc = _run_code(_ENOSPC_TRAIN, "--config", BASE, "--workdir", str(tmp_path / "run"), *TINY)
  line = one_line_error(proc)
  assert f"{tmp_path / 'run' / 'checkpoints'}: no space left on device" in line, line


def _run_code(code, *args):
  import subprocess

  return subprocess.run(
    [sys.executable, "-c", code, *args],
    cwd=REPO,
    env=env(),
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )


# ------------------------------------------------------------------------ evaluate --config.*
def _run_dir(tmp_path):
  from configs import base

  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text(json.dumps(base.get_config().to_dict()))
  return run


@pytest.mark.slow
def test_evaluate_takes_config_overrides(tmp_path):
  run = _run_dir(tmp_path)
  # A valid override is accepted (absl does not see it), then the missing checkpoint is reported.
  proc = run_binary(
    "evaluate",
    f"--workdir={run}",
    "--config.decode.method=topk_exact",
    "--config.decode.num_return_sequences",
    "100",
    "--out_subdir=test_topk",
  )
  line = one_line_error(proc)
  assert "no checkpoint" in line, line


@pytest.mark.parametrize(
  "override,key",
  [
    ("--config.decode.num_beam_groups=7", "decode.num_beams"),
    ("--config.decode.method=greedy", "decode.method"),
    ("--config.eval.ks=1,0", "eval.ks"),
  ],
)
def test_evaluate_validates_overrides_on_the_run_config(tmp_path, override, key):
  run = _run_dir(tmp_path)
  line = one_line_error(run_binary("evaluate", f"--workdir={run}", override))
  assert f"config key {key} = " in line, line


def test_evaluate_unknown_field_is_one_line(tmp_path):
  run = _run_dir(tmp_path)
  line = one_line_error(run_binary("evaluate", f"--workdir={run}", "--config.decode.beams=3"))
  assert "decode.beams" in line and "no field 'beams'" in line, line
  assert "did you mean --config.decode.num_beams?" in line, line


def test_split_config_overrides():
  from gr_jax import evaluate

  rest, over = evaluate.split_config_overrides(
    [
      "evaluate",
      "--workdir=r",
      "--config.decode.method=topk_exact",
      "--config.eval.ks",
      "(1, 10)",
      "--config.decode.use_cache=false",
      "--step",
      "best",
    ]
  )
  assert rest == ["evaluate", "--workdir=r", "--step", "best"]
  assert over == {"decode.method": "topk_exact", "eval.ks": (1, 10), "decode.use_cache": False}


def test_evaluate_step_takes_every_named_step_of_the_evaluator():
  from gr_jax import evaluate

  assert evaluate.parse_step("") is None and evaluate.parse_step("12") == 12
  for name in ("best", "best_search", "best_rec", "best_per_task"):
    assert evaluate.parse_step(name) == name
  with pytest.raises(ValueError, match="--step 'bets': expected an integer, one of best"):
    evaluate.parse_step("bets")


def test_evaluate_unknown_set_key_names_the_closest_key_in_its_spelling(tmp_path):
  from gr_jax import evaluate

  run = _run_dir(tmp_path)
  with pytest.raises(ValueError) as e:
    evaluate.checked_overrides(str(run), {"decode.length_penalty": 0.5}, {"decode.beams": 3})
  assert str(e.value) == (
    "--set decode.beams: no such config key (no field 'beams' in 'decode'); "
    "did you mean --set decode.num_beams?"
  )
  # --config.* wins over --set for the same key; both are returned for the evaluation.
  got = evaluate.checked_overrides(
    str(run), {"decode.length_penalty": 0.5}, {"decode.length_penalty": 2.0, "eval.ks": (1, 5)}
  )
  assert got == {"decode.length_penalty": 0.5, "eval.ks": (1, 5)}


# ------------------------------------------------------------ object-store paths without network
def _closed_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]  # nothing listens once the socket is closed


_PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _no_network(port) -> dict:
  """Env of a machine whose object store does not answer: gcsfs's endpoint is a closed port."""
  e = env(STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{port}")
  for k in _PROXIES:
    e.pop(k, None)
  return e


def _run_in(cwd, args, environ):
  return subprocess.run(
    [sys.executable, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300
  )


def test_unreachable_object_store_is_one_located_error(tmp_path, monkeypatch):
  from gr_jax import evaluate, workdir

  port = _closed_port()
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
  for k in _PROXIES:
    monkeypatch.delenv(k, raising=False)
  with pytest.raises(workdir.UnreachableError) as e:
    workdir.reachable("gs://bucket/run", "the run directory")
  msg = str(e.value)
  assert msg.startswith(
    "gs://bucket/run: the run directory is on an object store that cannot be reached"
  ), msg
  assert f"127.0.0.1:{port}" in msg and "\n" not in msg, msg
  assert workdir.reachable("runs/x", "x") == os.path.abspath("runs/x")
  assert workdir.reachable("az://c/d", "x") == "az://c/d"  # no endpoint known: not probed
  with pytest.raises(workdir.UnreachableError, match="the run directory \\(--workdir\\)"):
    evaluate.checked_overrides("gs://bucket/run", {})
  # A local run whose dataset is given as a URL: refused before any work, naming the remedy.
  run = _run_dir(tmp_path)
  with pytest.raises(workdir.NotLocalError) as e:
    evaluate.checked_overrides(str(run), {"data.processed_dir": "gs://bucket/data"})
  assert str(e.value).startswith("gs://bucket/data: the processed dataset must be on a local disk")
  assert "--config.data.processed_dir" in str(e.value)


def test_evaluate_unreachable_workdir_stops_at_once(tmp_path):
  # Was a minute of gcsfs retries, a logged traceback and "run directory does not exist".
  proc = _run_in(
    tmp_path,
    ["-m", "gr_jax.evaluate", "--workdir=gs://gr-jax-test/run", "--config.decode.num_beams=4"],
    _no_network(_closed_port()),
  )
  line = one_line_error(proc)
  assert line.startswith(
    "error: gs://gr-jax-test/run: the run directory (--workdir) is on an object store that "
    "cannot be reached from this machine (127.0.0.1:"
  ), line
  assert os.listdir(tmp_path) == [], "nothing written locally (no ./gs: directory)"


_STATS_URLS = """
import sys
from gr_jax import stats
try:
  stats.parse_groups(["joint=runs/a,gs://bucket/b"])
except ValueError as e:
  print(e)
sys.argv = ["stats"] + sys.argv[1:]
stats.run()
"""


def test_stats_refuses_url_runs_and_an_unreachable_out(tmp_path):
  proc = _run_in(
    tmp_path,
    ["-c", _STATS_URLS, "--runs=joint=a", "--out=gs://gr-jax-test/stats"],
    _no_network(_closed_port()),
  )
  assert proc.stdout.strip() == (
    "gs://bucket/b: --runs joint: a run directory must be on a local disk; object-store paths "
    "(gs://) are not supported here; copy its eval/ directory to a local disk"
  ), proc.stdout
  line = one_line_error(proc)
  assert line.startswith(
    "error: gs://gr-jax-test/stats: --out (the stats directory) is on an object store that "
    "cannot be reached"
  ), line
  assert os.listdir(tmp_path) == []


def test_add_items_error_is_one_line(tmp_path):
  proc = run_binary(
    "add_items",
    "--dataset=gs://bucket/data",
    f"--items={tmp_path / 'new.jsonl'}",
    f"--out={tmp_path / 'out'}",
  )
  line = one_line_error(proc)
  assert line.startswith("error: gs://bucket/data: --dataset (a processed dataset) must be on a"), (
    line
  )
  assert not os.path.exists(tmp_path / "out")


def test_reproduce_refuses_a_url_study_directory(tmp_path):
  # Ran the whole study under ./gs:/bucket/study and exited 0.
  config = os.path.join(REPO, "configs", "quickstart.py")
  args = ["-m", "gr_jax.reproduce", "--config", config, "--workdir=gs://bucket/study"]
  proc = _run_in(tmp_path, args, env())
  line = one_line_error(proc)
  assert line.startswith(
    "error: gs://bucket/study: the study directory (--workdir) must be on a local disk"
  ), line
  assert os.listdir(tmp_path) == []
