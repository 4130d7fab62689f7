"""Run-directory paths and atomic file writes, on etils.epath (the path layer Orbax uses).

- `is_local(path)` / `absolute(path)`: a local path is made absolute (so a run keeps working when
  the cwd changes); a URL-style path (`gs://bucket/run`, `s3://...`) is returned as given, since
  `os.path.abspath` would turn it into a local directory named `gs:`.
- `processed_dir(config, workdir)`: the processed dataset of a run, `data.processed_dir` or
  `<workdir>/data`.
- `local_dir(path, what, remedy)`: a path that must be on a local disk (a processed dataset is
  memory-mapped; raw data is read with local file calls), made absolute; a URL-style path is a
  `NotLocalError` naming it and what to do, never a local directory named `gs:`.
- `reachable(path, what, remedy)`: `absolute(path)`, after a quick connection to the object store
  of a URL-style path (gs://, s3://, http(s)://): without network, an `UnreachableError` naming
  the path at once, instead of a minute of the cloud client's retries ending in a traceback or a
  misleading "does not exist".
- `write_text(path, text)` / `write_json(path, obj)`: a reader never sees half a file. Locally:
  a temporary sibling, flushed, then renamed over `path` (one syscall). On object stores an object
  only becomes visible whole when its upload completes, so the file is written in place (a rename
  there is a copy plus a delete, and would only double the upload).
"""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
import uuid

from etils import epath

# Prefix of a URL-style path; `file://` is a local path in URL form.
_SCHEME_SEP = "://"


def is_local(path: os.PathLike | str) -> bool:
  """Whether `path` is on the local filesystem (no scheme, or `file://`)."""
  s = os.fspath(path)
  return _SCHEME_SEP not in s or s.startswith("file" + _SCHEME_SEP)


def absolute(path: os.PathLike | str) -> str:
  """`os.path.abspath` for local paths; other filesystems' paths unchanged (already absolute)."""
  s = os.fspath(path)
  if s.startswith("file" + _SCHEME_SEP):
    s = s[len("file" + _SCHEME_SEP) :]
  return os.path.abspath(s) if is_local(s) else s


class NotLocalError(ValueError):
  """A path that must be on a local disk is an object-store URL (gs://, s3://, ...)."""


def local_dir(path: os.PathLike | str, what: str, remedy: str = "") -> str:
  """`absolute(path)` for a local path; NotLocalError (one line: the path, what it is, the
  remedy) for a URL-style one, which `os.path` calls would write under `./gs:/...`."""
  s = os.fspath(path)
  if not is_local(s):
    raise NotLocalError(
      f"{s}: {what} must be on a local disk; object-store paths ({s.split(_SCHEME_SEP)[0]}://) "
      "are not supported here" + (f"; {remedy}" if remedy else "")
    )
  return absolute(s)


class UnreachableError(ConnectionError):
  """The object store of a URL-style path cannot be reached from this machine (no network)."""


# The store behind each scheme, as its client finds it: an emulator / endpoint variable first.
_ENDPOINTS = {
  "gs": (("STORAGE_EMULATOR_HOST",), "https://storage.googleapis.com"),
  "s3": (("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"), "https://s3.amazonaws.com"),
}
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
PROBE_TIMEOUT_S = 5.0


def _endpoint(url: str) -> tuple[str, int] | None:
  """(host, port) of the server holding `url`, or None for a scheme this module does not know."""
  scheme = url.split(_SCHEME_SEP, 1)[0].lower()
  if scheme in ("http", "https"):
    server = url
  elif scheme in _ENDPOINTS:
    names, default = _ENDPOINTS[scheme]
    server = next((os.environ[n] for n in names if os.environ.get(n)), default)
  else:
    return None
  parts = urllib.parse.urlsplit(server if _SCHEME_SEP in server else "http://" + server)
  if not parts.hostname:
    return None
  try:
    port = parts.port
  except ValueError:
    return None
  return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def reachable(path: os.PathLike | str, what: str, remedy: str = "") -> str:
  """`absolute(path)`; for a URL-style path, first one TCP connection to its store (DNS and
  connect, at most PROBE_TIMEOUT_S). UnreachableError (one line: the path, what it is, the store
  and why) when it fails. Unknown schemes, and machines with a proxy set (the client may reach
  the store through it), are not probed: the client's own error speaks there."""
  s = os.fspath(path)
  if is_local(s) or any(os.environ.get(v) for v in _PROXY_VARS):
    return absolute(s)
  server = _endpoint(s)
  if server is None:
    return s
  host, port = server
  try:
    socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
  except OSError as e:
    reason = " ".join((e.strerror or str(e) or type(e).__name__).split())
    raise UnreachableError(
      f"{s}: {what} is on an object store that cannot be reached from this machine ({host}:{port}:"
      f" {reason}); " + (remedy or "check the network, or use a local directory")
    ) from None
  return s


DATASET_REMEDY = (
  "the processed dataset is memory-mapped: set --config.data.processed_dir to a local directory "
  "(the workdir itself may stay on the object store for train and evaluate)"
)


def processed_dir(config, workdir: str) -> str:
  """The run's processed dataset: `data.processed_dir`, or `<workdir>/data` when that is empty.

  `config` is a full experiment config (with `.data`); a config without the field (an old run's
  saved config) uses the default too.
  """
  explicit = config.data.get("processed_dir", "") if "data" in config else ""
  return str(explicit) if explicit else os.path.join(os.fspath(workdir), "data")


def json_text(obj) -> str:
  """The project's JSON file layout: indented, sorted keys, trailing newline (stable diffs)."""
  return json.dumps(obj, indent=1, sort_keys=True) + "\n"


def write_text(path: os.PathLike | str, text: str) -> None:
  """Writes `text` to `path` atomically (see module doc); creates the parent directory."""
  p = epath.Path(absolute(path))
  p.parent.mkdir(parents=True, exist_ok=True)
  if not is_local(p):
    p.write_text(text)
    return
  tmp = p.parent / f".{p.name}.tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}"
  try:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())  # the rename must not publish a file still in the page cache
    os.replace(tmp, p)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: os.PathLike | str, obj) -> None:
  write_text(path, json_text(obj))


def read_jsonl(path: os.PathLike | str) -> list[dict]:
  """The records of a JSON-lines file ([] when it does not exist); a line cut by a kill (the last
  one, half written) is skipped."""
  p = epath.Path(absolute(path))
  if not p.exists():
    return []
  records = []
  for line in p.read_text().splitlines():
    try:
      records.append(json.loads(line))
    except ValueError:
      continue
  return records


class MetricsLog:
  """A run's metrics.jsonl, one JSON record per line, that survives a resume.

  Opening it for a run resumed at `resumed_step` drops the records past that step (written by the
  interrupted run after its last checkpoint; they will be recomputed). Locally records are
  appended and flushed one by one; an object store cannot append, so there the whole file is
  rewritten at each `write` (metrics are logged every few hundred steps: a few kB).
  """

  def __init__(self, path: os.PathLike | str, resumed_step: int):
    self.path = epath.Path(absolute(path))
    self._records = [
      json_line(r) for r in read_jsonl(self.path) if r.get("step", 0) <= resumed_step
    ]
    write_text(self.path, "".join(self._records))

  def write(self, record: dict) -> None:
    line = json_line(record)
    self._records.append(line)
    if is_local(self.path):
      with open(self.path, "a") as f:
        f.write(line)
    else:
      self.path.write_text("".join(self._records))

  def close(self) -> None:
    """Nothing is held open between writes; kept so callers can treat it like a file."""


def json_line(record: dict) -> str:
  return json.dumps(record, sort_keys=True) + "\n"
