"""The raw inputs of a processed dataset: which files prepare reads, and whether they changed.

Every file a source reads (MovieLens CSVs or their zip, the JSONL logs, MPD slices, a generated
queries file) and a `data.semantic.embedding=file` .npy are recorded in the manifest's
`raw_inputs` as `{absolute path: {"sha256", "bytes", "mtime_ns"}}` (`record`). A rerun of prepare
compares them with the files now (`changed`) and rebuilds the dataset when one differs, saying
which; the study's prepare stage puts the same sha256 (`fingerprint`) into its inputs, so that
`reproduce` reruns every stage downstream of changed raw data.

Cost: a file is hashed (sha256, ~0.5 GB/s) unless it is at least `HASH_ALWAYS_BELOW` bytes and its
size and mtime equal the manifest's record: then the recorded sha256 is trusted (the full MPD is
24 GB of slices; ml-latest-small's 3 MB are always hashed). Hashes are cached per (path, size,
mtime) within the process. A raw file that is missing now (raw data moved away after prepare)
cannot be compared: the dataset is kept, with a warning, and the fingerprint keeps the recorded
sha256. Manifests written before `raw_inputs` existed are compared through their `raw_files`
(sha256 by file name) and the embedding file's sha256 in `semantic_ids.embedding_info`.
"""

from __future__ import annotations

import logging
import os

from gr_jax.data.errors import DataError

log = logging.getLogger(__name__)
HASH_ALWAYS_BELOW = 64 << 20  # bytes; larger files are re-hashed only when size or mtime changed


def _data_config(config):
  return config.data if "data" in config else config


def input_files(config) -> list[str]:
  """Absolute paths of every raw file prepare reads for `config` (a run config or its data
  section), in reading order, without reading them. Simulated data has none; TFDS data is a
  dataset directory that TFDS owns (not listed). DataError when the raw data location itself is
  missing (as loading would report it)."""
  dc = _data_config(config)
  source = str(dc.source)
  files: list[str] = []
  if source not in ("simulate", "tfds_movielens") and dc.path:
    if source == "movielens":
      from gr_jax.data import movielens  # pylint: disable=g-import-not-at-top

      files = movielens.input_files(dc)
    elif source == "jsonl":
      from gr_jax.data import jsonl  # pylint: disable=g-import-not-at-top

      files = jsonl.input_files(dc)
    elif source == "mpd":
      from gr_jax.data import mpd  # pylint: disable=g-import-not-at-top

      files = mpd.input_files(dc)
  semantic = dc.get("semantic") or {}
  if (
    dc.get("id_scheme", "atomic") == "semantic"
    and str(semantic.get("embedding", "")) == "file"
    and semantic.get("embedding_file")
  ):
    files.append(str(semantic["embedding_file"]))
  return list(dict.fromkeys(os.path.abspath(p) for p in files))


def _sha256(path: str, st: os.stat_result, recorded: dict | None) -> str:
  """The file's sha256; a large file unchanged in size and mtime keeps its recorded one."""
  if (
    recorded
    and st.st_size >= HASH_ALWAYS_BELOW
    and recorded.get("bytes") == st.st_size
    and recorded.get("mtime_ns") == st.st_mtime_ns
    and recorded.get("sha256")
  ):
    return str(recorded["sha256"])
  from gr_jax.data.dataset import _cached_sha256  # pylint: disable=g-import-not-at-top

  return _cached_sha256(path)


def record(paths: list[str], known: dict | None = None) -> dict[str, dict]:
  """The manifest's `raw_inputs`: per path its sha256, size and mtime (ns). A path that does not
  exist is left out (loading reports it, naming the file)."""
  out = {}
  for path in paths:
    try:
      st = os.stat(path)
    except FileNotFoundError:
      continue
    out[path] = {
      "sha256": _sha256(path, st, (known or {}).get(path)),
      "bytes": int(st.st_size),
      "mtime_ns": int(st.st_mtime_ns),
    }
  return out


def _legacy_record(manifest: dict, paths: list[str]) -> dict[str, dict]:
  """`raw_inputs` of a manifest written before it existed: sha256 by file name (`raw_files`) and
  the embedding file's (`semantic_ids.embedding_info`); files it does not name are not compared."""
  by_name = manifest.get("raw_files") or {}
  out = {}
  for path in paths:
    if os.path.basename(path) in by_name:
      out[path] = {"sha256": by_name[os.path.basename(path)]}
  info = (manifest.get("semantic_ids") or {}).get("embedding_info") or {}
  if info.get("file") and info.get("sha256"):
    out[os.path.abspath(info["file"])] = {"sha256": info["sha256"]}
  return out


def changed(manifest: dict, config, where: str = "the dataset") -> str | None:
  """One line saying which raw input differs from what `manifest` records (its content, or the
  set of files read), or None when nothing that can be compared changed."""
  try:
    paths = input_files(config)
  except DataError as e:
    log.warning("raw inputs of %s cannot be checked (%s); keeping it", where, e)
    return None
  have = manifest.get("raw_inputs")
  if have is None:
    have = _legacy_record(manifest, paths)
  else:
    added = [p for p in paths if p not in have]
    if added:
      return f"{added[0]} is a raw input now but was not when {where} was prepared"
    gone = [p for p in have if p not in paths]
    if gone:
      return f"{gone[0]} was a raw input of {where} but is not read any more"
  for path in paths:
    entry = have.get(path)
    if entry is None:
      continue
    try:
      st = os.stat(path)
    except OSError:
      log.warning("raw input %s of %s is missing: cannot check it; keeping it", path, where)
      continue
    now = _sha256(path, st, entry)
    if now != entry.get("sha256"):
      return (
        f"{path} changed since {where} was prepared (sha256 {str(entry.get('sha256'))[:12]} "
        f"-> {now[:12]})"
      )
  return None


def fingerprint(config, manifest: dict | None = None) -> dict[str, str]:
  """{path: sha256} of the raw inputs, for a study stage's inputs. `manifest` (the dataset's, when
  it exists) saves hashing large unchanged files and stands in for files missing now."""
  known = (manifest or {}).get("raw_inputs") or {}
  try:
    paths = input_files(config)
  except DataError:
    return {p: str(e.get("sha256")) for p, e in known.items()}
  out = {}
  for path in paths:
    try:
      st = os.stat(path)
    except OSError:
      out[path] = str(known[path]["sha256"]) if path in known else "missing"
      continue
    out[path] = _sha256(path, st, known.get(path))
  return out
