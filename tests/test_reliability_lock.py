"""The per-workdir lock: a second process fails at once naming the holder; a dead holder's lock is
taken over (gr_jax/workdir_lock.py)."""

import logging
import os
import signal
import subprocess
import sys

import pytest

from gr_jax import workdir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_HOLDER = """
import sys
from gr_jax import workdir_lock
lock = workdir_lock.WorkdirLock(sys.argv[1], purpose="test")
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()  # hold until the parent says so (or kills us)
lock.release()
"""


def _holder(workdir):
  """A child process that holds the workdir lock until its stdin gets a line."""
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.Popen(
    [sys.executable, "-c", _HOLDER, str(workdir)],
    env=env,
    text=True,
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
  )
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_second_process_fails_at_once_naming_workdir_and_pid(tmp_path):
  proc = _holder(tmp_path)
  try:
    with pytest.raises(workdir_lock.WorkdirLockedError) as e:
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
    msg = str(e.value)
    assert str(tmp_path) in msg and f"pid {proc.pid}" in msg and "\n" not in msg
  finally:
    proc.stdin.write("done\n")
    proc.stdin.flush()
    assert proc.wait(timeout=60) == 0
  # Released cleanly: the next holder gets it without a word about a dead process.
  lock = workdir_lock.WorkdirLock(str(tmp_path))
  lock.acquire()
  lock.release()


def test_lock_of_a_killed_process_is_taken_over_with_a_log_line(tmp_path, caplog):
  proc = _holder(tmp_path)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait(timeout=60)
  with caplog.at_level(logging.WARNING, logger="gr_jax.workdir_lock"):
    with workdir_lock.hold(str(tmp_path)):
      with open(tmp_path / workdir_lock.LOCK_NAME) as f:
        assert f'"pid": {os.getpid()}' in f.read()
  assert any(
    f"pid {proc.pid}" in r.getMessage() and "no longer running" in r.getMessage()
    for r in caplog.records
  )


def test_same_process_second_lock_is_refused_and_release_reopens(tmp_path):
  with workdir_lock.hold(str(tmp_path)):
    with pytest.raises(workdir_lock.WorkdirLockedError, match=f"pid {os.getpid()}"):
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  with workdir_lock.hold(str(tmp_path)):
    pass
  with open(tmp_path / workdir_lock.LOCK_NAME) as f:
    assert f.read() == ""  # an empty file: released cleanly


@pytest.mark.slow
def test_train_binary_on_a_held_workdir_exits_1_with_one_line(tmp_path):
  proc = _holder(tmp_path / "run")
  try:
    env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    out = subprocess.run(
      [
        sys.executable,
        "-m",
        "gr_jax.train",
        "--config",
        os.path.join(REPO, "configs", "base.py"),
        "--workdir",
        str(tmp_path / "run"),
      ],
      env=env,
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
    )
  finally:
    proc.stdin.write("done\n")
    proc.stdin.flush()
    proc.wait(timeout=60)
  assert out.returncode == 1, out.stderr[-2000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and f"pid {proc.pid}" in errors[0] and str(tmp_path / "run") in errors[0]
  assert "Traceback" not in out.stderr
  assert not os.path.exists(tmp_path / "run" / "config.json")
  assert not os.path.exists(tmp_path / "run" / "data")  # nothing was prepared
