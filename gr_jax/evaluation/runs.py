"""TREC run and qrels files.

run:   `qid Q0 item rank score tag`, one line per retrieved item, written in rank order (the
       metrics' order: score descending, item id descending on ties); scores are written with
       `repr` so they read back bit-identical and the ranking does not change on a round trip.
qrels: `qid 0 item relevance`.
Readers raise `RunFormatError` naming the file, line and field on bad input.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import uuid
from typing import Mapping

from etils import epath

from gr_jax import workdir as workdir_lib
from gr_jax.evaluation import metrics as metrics_lib

# General file writing lives in gr_jax.workdir; re-exported because run files are written here.
from gr_jax.workdir import json_text as _json_text
from gr_jax.workdir import write_json, write_text  # noqa: F401

from gr_jax import workdir_lock


class RunFormatError(ValueError):
  """A malformed run or qrels line (message names file, line and field)."""


def _check_id(value: str, what: str) -> None:
  if not value or any(c.isspace() for c in value):
    raise ValueError(f"{what} {value!r} is empty or contains whitespace; TREC files cannot hold it")


def format_run(run: Mapping[str, Mapping[str, float]], tag: str = "gr_jax") -> str:
  _check_id(tag, "run tag")
  lines = []
  for qid in sorted(run):
    _check_id(str(qid), "query id")
    scores = run[qid]
    for rank, item in enumerate(metrics_lib.rank_items(scores), start=1):
      _check_id(str(item), "item id")
      lines.append(f"{qid} Q0 {item} {rank} {float(scores[item])!r} {tag}")
  return "\n".join(lines) + ("\n" if lines else "")


def write_run(path: str, run: Mapping[str, Mapping[str, float]], tag: str = "gr_jax") -> None:
  write_text(path, format_run(run, tag))


def read_run(path: str) -> dict[str, dict[str, float]]:
  """`{qid: {item: score}}`. Ranks in the file are ignored (trec_eval re-sorts by score too)."""
  run: dict[str, dict[str, float]] = {}
  with epath.Path(path).open() as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      parts = line.split()
      if len(parts) != 6:
        raise RunFormatError(
          f"{path}:{lineno}: expected 6 fields 'qid Q0 item rank score tag', got {len(parts)}"
        )
      qid, _, item, rank, score, _ = parts
      try:
        int(rank)
      except ValueError:
        raise RunFormatError(
          f"{path}:{lineno}: field 'rank' must be an integer, got {rank!r}"
        ) from None
      try:
        value = float(score)
      except ValueError:
        raise RunFormatError(
          f"{path}:{lineno}: field 'score' must be a number, got {score!r}"
        ) from None
      if math.isnan(value):
        raise RunFormatError(f"{path}:{lineno}: field 'score' is NaN")
      q = run.setdefault(qid, {})
      if item in q:
        raise RunFormatError(f"{path}:{lineno}: field 'item' {item!r} repeated for query {qid!r}")
      q[item] = value
  return run


def format_qrels(qrels: Mapping[str, Mapping[str, int]]) -> str:
  lines = []
  for qid in sorted(qrels):
    _check_id(str(qid), "query id")
    for item in sorted(qrels[qid]):
      _check_id(str(item), "item id")
      lines.append(f"{qid} 0 {item} {int(qrels[qid][item])}")
  return "\n".join(lines) + ("\n" if lines else "")


def write_qrels(path: str, qrels: Mapping[str, Mapping[str, int]]) -> None:
  write_text(path, format_qrels(qrels))


def read_qrels(path: str) -> dict[str, dict[str, int]]:
  qrels: dict[str, dict[str, int]] = {}
  with epath.Path(path).open() as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      parts = line.split()
      if len(parts) != 4:
        raise RunFormatError(
          f"{path}:{lineno}: expected 4 fields 'qid 0 item relevance', got {len(parts)}"
        )
      qid, _, item, rel = parts
      try:
        qrels.setdefault(qid, {})[item] = int(rel)
      except ValueError:
        raise RunFormatError(
          f"{path}:{lineno}: field 'relevance' must be an integer, got {rel!r}"
        ) from None
  return qrels


def read_json(path: str):
  try:
    return json.loads(epath.Path(path).read_text())
  except json.JSONDecodeError as e:
    raise RunFormatError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def eval_dir(workdir: str, split: str) -> str:
  return os.path.join(workdir, "eval", split)


def write_eval_outputs(
  out_dir: str, task_results: Mapping[str, dict], extra: Mapping | None = None, tag: str = "gr_jax"
) -> dict:
  """Writes `{task}.run`, `{task}.qrels`, `metrics.json`, `per_query.json` as `out_dir`.

  task_results: `{task: {"run": run, "qrels": qrels, "means": {...}, "per_query": {...}}}`.
  metrics.json holds task -> metric -> mean at its top level, plus whatever `extra` adds (under keys
  that are not task names). Returns the metrics.json object.

  The directory is committed as one unit (see `commit_dir`): a reader sees the previous complete
  set of files or the new one, never a mix from two evaluations. It is replaced as a whole, so
  files of an earlier evaluation that this one does not write (e.g. a task no longer evaluated)
  are gone afterwards.
  """
  # Everything is formatted before the disk is touched: a bad id or a key collision leaves the
  # previous evaluation as it was.
  files: dict[str, str] = {}
  summary: dict = {}
  per_query: dict = {}
  for task, r in task_results.items():
    _check_id(str(task), "task name")
    files[f"{task}.run"] = format_run(r["run"], tag)
    files[f"{task}.qrels"] = format_qrels(r["qrels"])
    summary[task] = dict(r["means"])
    per_query[task] = r["per_query"]
  for k, v in (extra or {}).items():
    if k in summary:
      raise ValueError(f"extra key {k!r} collides with a task name in metrics.json")
    summary[k] = v
  files["metrics.json"] = _json_text(summary)
  files["per_query.json"] = _json_text(per_query)
  commit_dir(out_dir, files)
  return summary


# Sibling names used while committing `<parent>/<base>`: `.<base>.tmp.<host>.<pid>.<random>` holds
# the new files, `.<base>.old.<host>.<pid>.<random>` the previous directory during the swap.
_STAGING_KINDS = ("tmp", "old")


def _staging_name(base: str, kind: str) -> str:
  return f".{base}.{kind}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def _remove_stale_staging(parent: str, base: str) -> None:
  """Removes staging dirs left by a killed writer on this host (its pid no longer runs).

  Another host's or a live process's staging dir is left alone: it may be mid-commit.
  """
  host = socket.gethostname()
  for kind in _STAGING_KINDS:
    prefix = f".{base}.{kind}."
    for name in os.listdir(parent):
      if not name.startswith(prefix):
        continue
      owner, _, _rand = name[len(prefix) :].rpartition(".")  # "host.pid", "random"
      owner_host, _, pid = owner.rpartition(".")
      if owner_host == host and pid.isdigit() and not workdir_lock.pid_alive(int(pid)):
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def commit_dir(out_dir: str, files: Mapping[str, str]) -> None:
  """Makes `out_dir` hold exactly `files` (name -> text), replacing the whole directory at once.

  The files are written into a temporary sibling directory first; then the old directory is moved
  aside, the new one renamed into place and the old one removed. A failure while writing leaves
  the old directory untouched and removes the temporary one; a failure between the two renames
  moves the old directory back. Between the two renames (two syscalls) `out_dir` briefly does not
  exist, so a reader sees the old set, the new set or no directory, never a mix. A writer killed
  mid-commit leaves a hidden `.<name>.tmp.*` / `.<name>.old.*` sibling, removed by the next commit
  on the same host.
  """
  for name in files:
    if not name or os.sep in name or "/" in name or name in (".", ".."):
      raise ValueError(f"{out_dir}: file name {name!r} must be a plain name inside the directory")
  if not workdir_lib.is_local(out_dir):
    _commit_remote(out_dir, files)
    return
  out_dir = os.path.normpath(os.path.abspath(out_dir))
  parent, base = os.path.split(out_dir)
  os.makedirs(parent, exist_ok=True)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise NotADirectoryError(f"{out_dir} exists and is not a directory; expected an eval directory")
  _remove_stale_staging(parent, base)
  tmp = os.path.join(parent, _staging_name(base, "tmp"))
  os.mkdir(tmp)
  try:
    for name, text in files.items():
      with open(os.path.join(tmp, name), "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())  # the rename below must not publish files still in the page cache
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  old = None
  try:
    if os.path.exists(out_dir):
      old = os.path.join(parent, _staging_name(base, "old"))
      os.rename(out_dir, old)
    os.rename(tmp, out_dir)
  except BaseException:
    if old is not None and not os.path.exists(out_dir):
      os.rename(old, out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def _commit_remote(out_dir: str, files: Mapping[str, str]) -> None:
  """`commit_dir` on an object store, which has no directory rename: the old files are deleted and
  each new one uploaded (an object appears whole when its upload completes), metrics.json last, so
  a reader that finds metrics.json finds the complete set."""
  d = epath.Path(out_dir)
  if d.exists():
    d.rmtree()
  d.mkdir(parents=True, exist_ok=True)
  for name in sorted(files, key=lambda n: n == "metrics.json"):
    (d / name).write_text(files[name])


def resolve_eval_dir(run_dir: str, split: str = "test") -> str:
  """`run_dir/eval/<split>`, or `run_dir` itself when it is an eval directory (has metrics.json)."""
  d = eval_dir(run_dir, split)
  if not epath.Path(d).is_dir() and epath.Path(run_dir, "metrics.json").exists():
    return run_dir
  return d


def load_eval(run_dir: str, split: str = "test") -> tuple[dict, dict]:
  """(metrics.json, per_query.json) of a run directory's evaluation (or an eval dir itself).

  A missing per_query.json reads as `{}` here (summaries only need metrics.json); the significance
  tests use `gr_jax.analysis.stats`, which requires it.
  """
  d = resolve_eval_dir(run_dir, split)
  mpath = os.path.join(d, "metrics.json")
  if not os.path.exists(mpath):
    raise FileNotFoundError(
      f"{run_dir}: no {os.path.join('eval', split, 'metrics.json')}; "
      f"run `python -m gr_jax.evaluate --workdir {run_dir} --split {split}` first"
    )
  qpath = os.path.join(d, "per_query.json")
  per_query = read_json(qpath) if os.path.exists(qpath) else {}
  return read_json(mpath), per_query


def split_queries(arrays: Mapping, source: str = "<split>"):
  """Unique queries of a split: (query ids as strings, index of each query's first example).

  Examples sharing a `query_id` are one query (their encoder inputs are equal); it is decoded once.
  """
  import numpy as np

  for key in ("query_id", "target_item"):
    if key not in arrays:
      raise RunFormatError(
        f"{source}: field {key!r} missing; expected arrays query_id, target_item"
      )
  qid = np.asarray(arrays["query_id"])
  _, first = np.unique(qid, return_index=True)
  first = np.sort(first)  # keep file order: deterministic batches
  return [str(int(q)) for q in qid[first]], first


def qrels_from_split(
  arrays: Mapping, item_ids, source: str = "<split>"
) -> dict[str, dict[str, int]]:
  """Binary qrels: every target_item of a query_id is relevant (ids as catalogue id strings)."""
  import numpy as np

  qid = np.asarray(arrays["query_id"])
  target = np.asarray(arrays["target_item"])
  if qid.shape != target.shape:
    raise RunFormatError(f"{source}: query_id {qid.shape} and target_item {target.shape} differ")
  n = len(item_ids)
  bad = (target < 0) | (target >= n)
  if bad.any():
    i = int(np.argmax(bad))
    raise RunFormatError(
      f"{source}: field 'target_item' row {i} is {int(target[i])}; "
      f"expected an item index in [0, {n})"
    )
  qrels: dict[str, dict[str, int]] = {}
  for q, t in zip(qid.tolist(), target.tolist()):
    qrels.setdefault(str(q), {})[item_ids[t]] = 1
  return qrels
