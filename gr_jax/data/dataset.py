"""ProcessedDataset: read access to a directory written by `prepare_dataset`."""

from __future__ import annotations

import collections
import json
import os

import numpy as np

from gr_jax.data.catalog import ItemCatalog
from gr_jax.data.errors import DataError
from gr_jax.data.raw import SPLITS
from gr_jax.data.tokenizer import TextTokenizer
from gr_jax.schema import TASKS

ARRAY_KEYS = ("encoder_input_ids", "target_item", "query_id")


class DatasetMismatchError(DataError):
  """A processed dataset is not the one its manifest (or the run's config) says it is."""


# (path, size, mtime_ns) -> sha256: a process verifies the same large npz files only once.
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _cached_sha256(path: str) -> str:
  from gr_jax.data.prepare import sha256_file  # pylint: disable=g-import-not-at-top

  st = os.stat(path)
  key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
  if key not in _SHA_CACHE:
    _SHA_CACHE[key] = sha256_file(path)
  return _SHA_CACHE[key]


def _flat(d, prefix: str = "") -> dict:
  out = {}
  for k, v in (d or {}).items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _resolved_decoder_len_hash(config, manifest: dict) -> str | None:
  """A semantic-ID dataset's hash of `config` as prepared, when the config's data.decoder_len is
  the manifest's (ID tokens + EOS) rather than the prepared value: the trainer records the
  length it used in the run's config.json, and prepare ignores data.decoder_len for semantic
  IDs, so both values name the same dataset. None when that does not apply."""
  from gr_jax.data import prepare  # pylint: disable=g-import-not-at-top

  prepared = (manifest.get("config") or {}).get("decoder_len")
  if manifest.get("id_scheme", "atomic") == "atomic" or prepared is None:
    return None
  d = prepare.dataset_config(config)
  if d.get("decoder_len") != manifest.get("decoder_len"):
    return None
  d["decoder_len"] = prepared
  return prepare.hash_dataset_config(d)


def verify_dataset(directory: str, config=None, *, require_manifest: bool = True) -> dict | None:
  """Checks that `directory` holds the dataset its manifest.json describes; returns the manifest.

  - every file listed in the manifest exists and has the recorded sha256 (hashes are cached per
    (path, size, mtime) within the process);
  - with `config` (a run config with `.data`, or the data section itself): its data section hashes
    (as `prepare` hashes it, pipeline-only knobs left out) to the manifest's `config_hash`.
  Raises DatasetMismatchError naming the dataset dir, the file or field, and both values. Without a
  manifest: an error, or (require_manifest=False, hand-made test datasets) None.
  """
  from gr_jax.data import prepare  # pylint: disable=g-import-not-at-top

  directory = os.path.abspath(directory)
  manifest_path = os.path.join(directory, "manifest.json")
  if not os.path.exists(manifest_path):
    if not require_manifest:
      return None
    raise DatasetMismatchError(
      manifest_path,
      0,
      "manifest.json",
      "not a processed dataset (missing manifest; run gr_jax.prepare)",
    )
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
  except ValueError as e:
    raise DatasetMismatchError(manifest_path, 0, "manifest.json", f"not valid JSON ({e})") from None
  files = manifest.get("files")
  if not isinstance(files, dict) or not files:
    raise DatasetMismatchError(
      manifest_path, 0, "files", "expected the sha256 of every dataset file"
    )
  for rel, digest in sorted(files.items()):
    path = os.path.join(directory, rel)
    if not os.path.isfile(path):
      raise DatasetMismatchError(path, 0, "sha256", f"listed in {manifest_path} but missing")
    got = _cached_sha256(path)
    if got != digest:
      raise DatasetMismatchError(
        path,
        0,
        "sha256",
        f"file changed since prepare: sha256 {got[:16]}..., manifest says "
        f"{str(digest)[:16]}... (re-run gr_jax.prepare into a new directory)",
      )
  if config is not None:
    want, have = prepare.config_hash(config), manifest.get("config_hash")
    if want != have and _resolved_decoder_len_hash(config, manifest) == have:
      want = have
    if want != have:
      ours, theirs = _flat(prepare.dataset_config(config)), _flat(manifest.get("config"))
      diffs = [
        f"data.{k}: run config {ours.get(k)!r}, dataset {theirs.get(k)!r}"
        # Top-level fields first: `source` says more than the 20 sim knobs it drops.
        for k in sorted(set(ours) | set(theirs), key=lambda k: (k.count("."), k))
        if ours.get(k) != theirs.get(k)
      ]
      detail = "; ".join(diffs[:5]) + (f"; ... {len(diffs) - 5} more" if len(diffs) > 5 else "")
      raise DatasetMismatchError(
        manifest_path,
        0,
        "config_hash",
        f"the dataset in {directory} was prepared from another data config (hash "
        f"{str(have)[:12]}, the run config's is {want[:12]}): {detail or 'see manifest config'}",
      )
  return manifest


class ProcessedDataset:
  """`.manifest`, `.catalog`, `.tokenizer`, `.split(task, split)`, `.text_vocab_size`, `.num_items`."""

  def __init__(self, directory: str, *, verify: bool = False):
    self.directory = os.path.abspath(directory)
    manifest = os.path.join(self.directory, "manifest.json")
    if not os.path.exists(manifest):
      raise DataError(
        manifest,
        0,
        "manifest.json",
        "not a processed dataset (missing manifest; run gr_jax.prepare first)",
      )
    with open(manifest) as f:
      self.manifest = json.load(f)
    if verify:
      self.verify()
    self.catalog = ItemCatalog.load(os.path.join(self.directory, "catalog.json"))
    self._tokenizer = None
    self._cache: dict[tuple[str, str], dict[str, np.ndarray]] = {}

  @property
  def tokenizer(self) -> TextTokenizer:
    if self._tokenizer is None:
      self._tokenizer = TextTokenizer.load(os.path.join(self.directory, "tokenizer"))
    return self._tokenizer

  @property
  def text_vocab_size(self) -> int:
    return int(self.catalog.token_offset)

  @property
  def num_items(self) -> int:
    return self.catalog.num_items

  @property
  def encoder_len(self) -> int:
    return int(self.manifest["encoder_len"])

  @property
  def decoder_len(self) -> int:
    return int(self.manifest["decoder_len"])

  def split(self, task: str, split: str) -> dict[str, np.ndarray]:
    """Arrays of one task split: encoder_input_ids [N, Le], target_item [N], query_id [N]."""
    if task not in TASKS or split not in SPLITS:
      raise KeyError(f"task must be one of {TASKS} and split one of {SPLITS}; got {task}/{split}")
    key = (task, split)
    if key not in self._cache:
      path = os.path.join(self.directory, task, f"{split}.npz")
      with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
      for k in ARRAY_KEYS:
        if k not in arrays:
          raise DataError(path, 0, k, "missing array in a processed split")
      self._cache[key] = arrays
    return self._cache[key]

  def qrels(self, task: str, split: str) -> dict[int, list[int]]:
    """query_id -> sorted relevant item indices."""
    arrays = self.split(task, split)
    out = collections.defaultdict(set)
    for q, t in zip(arrays["query_id"].tolist(), arrays["target_item"].tolist()):
      out[q].add(t)
    return {q: sorted(v) for q, v in sorted(out.items())}

  def verify(self, config=None) -> None:
    """Checks every file's sha256 against the manifest (and `config`'s data hash, if given)."""
    verify_dataset(self.directory, config)

  def __repr__(self) -> str:
    return (
      f"ProcessedDataset({self.directory!r}, items={self.num_items}, "
      f"text_vocab={self.text_vocab_size})"
    )
