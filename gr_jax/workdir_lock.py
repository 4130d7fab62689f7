"""One process at a time per workdir: an exclusive `fcntl.flock` on `<workdir>/.gr_jax.lock`.

`train()` holds the lock of its run directory and `reproduce` the lock of its study directory for
their whole duration, so a second process on the same directory fails at once instead of
interleaving checkpoints and config.json with the first. The lock file holds the holder's pid,
host and start time for the error message. The kernel drops a flock when its holder dies, so a lock
left by a killed process is simply taken over (with a log line naming the dead pid).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
from typing import Iterator

log = logging.getLogger(__name__)

LOCK_NAME = ".gr_jax.lock"


class WorkdirLockedError(RuntimeError):
  """Another live process holds the workdir's lock (the message is one line)."""


def pid_alive(pid: int) -> bool:
  """Whether a process with this pid exists on this host (another user's counts as alive)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # exists, owned by someone else
  return True


def _read_holder(fd: int) -> dict:
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    blob = os.read(fd, 4096)
    return json.loads(blob.decode()) if blob.strip() else {}
  except (OSError, ValueError):
    return {}


class WorkdirLock:
  """An exclusive, non-blocking workdir lock; `acquire()` raises WorkdirLockedError when held."""

  def __init__(self, workdir: str, *, purpose: str = ""):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_NAME)
    self.purpose = purpose
    self._fd: int | None = None

  def acquire(self) -> None:
    if self._fd is not None:
      raise RuntimeError(f"{self.path}: this lock object is already held")
    os.makedirs(self.workdir, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = _read_holder(fd)
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise
      who = (
        f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since "
        f"{holder.get('started', '?')}"
        if holder
        else "another process"
      )
      raise WorkdirLockedError(
        f"{self.workdir} is in use by {who} (lock {self.path}); wait for it to finish or use "
        "another --workdir"
      ) from None
    # A holder that released the lock cleanly truncated the file: content here means it died.
    previous = _read_holder(fd)
    pid = previous.get("pid")
    if isinstance(pid, int) and pid != os.getpid():
      alive = previous.get("host") == socket.gethostname() and pid_alive(pid)
      log.warning(
        "%s: taking over the lock left by pid %d on %s (%s)",
        self.workdir,
        pid,
        previous.get("host", "?"),
        "pid reused by another process" if alive else "no longer running",
      )
    body = json.dumps(
      {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "purpose": self.purpose,
      }
    )
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, body.encode())
    os.fsync(fd)
    self._fd = fd

  def release(self) -> None:
    if self._fd is None:
      return
    fd, self._fd = self._fd, None
    try:
      os.ftruncate(fd, 0)  # an empty file says "released cleanly" to the next holder
    finally:
      fcntl.flock(fd, fcntl.LOCK_UN)
      os.close(fd)

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


@contextlib.contextmanager
def hold(workdir: str, *, enabled: bool = True, purpose: str = "") -> Iterator[None]:
  """Holds the workdir lock for the `with` body (a no-op when not `enabled`, e.g. on the
  non-primary processes of a multi-host run, which share process 0's workdir)."""
  if not enabled:
    yield
    return
  from gr_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  if not workdir_lib.is_local(workdir):
    # flock needs a local file; object stores have no equivalent that Orbax also honours.
    logging.getLogger(__name__).warning(
      "%s is not on a local disk: it is not locked; do not start a second job on it", workdir
    )
    yield
    return
  with WorkdirLock(workdir, purpose=purpose):
    yield
