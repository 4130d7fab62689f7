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

TASKS = ("search", "rec")
ARRAY_KEYS = ("encoder_input_ids", "target_item", "query_id")


class ProcessedDataset:
  """`.manifest`, `.catalog`, `.tokenizer`, `.split(task, split)`, `.text_vocab_size`, `.num_items`."""

  def __init__(self, directory: str, *, verify: bool = False):
    self.directory = os.path.abspath(directory)
    manifest = os.path.join(self.directory, "manifest.json")
    if not os.path.exists(manifest):
      raise DataError(manifest, 0, "manifest.json",
                      "not a processed dataset (missing manifest; run gr_jax.prepare first)")
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

  def verify(self) -> None:
    """Checks every file's sha256 against the manifest."""
    from gr_jax.data.prepare import sha256_file
    for rel, digest in self.manifest.get("files", {}).items():
      path = os.path.join(self.directory, rel)
      if not os.path.exists(path) or sha256_file(path) != digest:
        raise DataError(path, 0, "sha256", "file missing or changed since prepare")

  def __repr__(self) -> str:
    return (f"ProcessedDataset({self.directory!r}, items={self.num_items}, "
            f"text_vocab={self.text_vocab_size})")
