"""What the trainer needs from `gr_jax.data`, in one place.

`open_dataset` prepares the processed dataset when the run has none, opens it, and wraps the
pipeline's train loader and eval batches; `to_global` turns a host batch into global jax.Arrays
laid out by the batch sharding (every process may hold either the whole global batch or only its
own rows).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Iterable

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from gr_jax import workdir as workdir_lib

log = logging.getLogger(__name__)


def _has_dataset(path: str) -> bool:
  return bool(path) and os.path.exists(os.path.join(path, "manifest.json"))


def ensure_dataset(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The processed dataset dir of a run: `data.processed_dir`, or `<workdir>/data`, prepared by
  process 0 when missing (the others wait for it).

  A non-local workdir (gs://...) needs `data.processed_dir` on a local disk, because the dataset
  is memory-mapped; there every process prepares its own copy when it is missing (preparation is
  deterministic, so the hosts' copies are the same files).
  """
  path = workdir_lib.local_dir(
    workdir_lib.processed_dir(config, workdir), "the processed dataset", workdir_lib.DATASET_REMEDY
  )
  per_host = not workdir_lib.is_local(workdir)
  if config.data.processed_dir and not per_host and not _has_dataset(path):
    raise FileNotFoundError(
      f"config.data.processed_dir={path}: no manifest.json there (run "
      "`python -m gr_jax.prepare` first, or leave it empty)"
    )
  # prepare_dataset is a no-op when the same data config is already there, and an error when
  # another one is, or when its raw files changed since (raw_changed="error"): a resumed run never
  # trains on silently different data.
  from gr_jax.data.prepare import prepare_dataset  # pylint: disable=g-import-not-at-top

  if per_host:
    log.info("preparing the dataset into %s (this host's copy)", path)
    prepare_dataset(config, path, raw_changed="error")
  elif not config.data.processed_dir:
    if jax.process_index() == 0:
      log.info("preparing the dataset into %s", path)
      prepare_dataset(config, path, raw_changed="error")
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("gr_jax_prepare_dataset")
  return path


@dataclasses.dataclass
class DataSource:
  """The processed dataset of a run and the batch streams the trainer reads from it."""

  path: str
  dataset: Any  # gr_jax.data.dataset.ProcessedDataset

  @property
  def text_vocab_size(self) -> int:
    return int(self.dataset.text_vocab_size)

  @property
  def num_item_tokens(self) -> int:
    cat = getattr(self.dataset, "catalog", None)
    n = getattr(cat, "num_id_tokens", None)
    return int(n if n is not None else self.dataset.num_items)

  @property
  def token_offset(self) -> int:
    cat = getattr(self.dataset, "catalog", None)
    off = getattr(cat, "token_offset", None)
    return int(off) if off is not None else self.text_vocab_size

  def train_loader(self, config):
    """This process's share of every global batch (`batch_size // process_count` rows), endless:
    the trainer stops at its step count. Iterator state: `get_state()` / `set_state()` (JSON)."""
    from gr_jax.data import pipeline  # pylint: disable=g-import-not-at-top

    return pipeline.make_train_loader(
      self.dataset,
      config.data,
      tasks=tuple(config.data.tasks),
      batch_size=int(config.train.batch_size),
      seed=int(config.seed),
      num_epochs=None,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )

  def eval_batches(self, config, split: str = "valid") -> Iterable[dict[str, np.ndarray]]:
    """Validation batches of every trained task (padding rows have zero decoder weights)."""
    from gr_jax.data import pipeline  # pylint: disable=g-import-not-at-top

    for task in config.data.tasks:
      yield from pipeline.make_eval_batches(
        self.dataset,
        task,
        split,
        int(config.train.batch_size),
        data_config=config.data,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
      )

  @staticmethod
  def to_global(batch: dict[str, np.ndarray], sharding, global_batch_size: int):
    return to_global(batch, sharding, global_batch_size)


def open_dataset(config: ml_collections.ConfigDict, workdir: str) -> DataSource:
  """The run's processed dataset, checked against its manifest (file hashes) and against the run
  config (data hash): a run never trains on data other than its config describes."""
  # pylint: disable-next=g-import-not-at-top
  from gr_jax.data.dataset import ProcessedDataset, verify_dataset

  path = ensure_dataset(config, workdir)
  verify_dataset(path, config)
  return DataSource(path, ProcessedDataset(path))


def to_global(
  batch: dict[str, np.ndarray], sharding, global_batch_size: int
) -> dict[str, jax.Array]:
  """Host batch -> global arrays. A batch of `global_batch_size` rows is the whole global batch
  (each process keeps the rows its devices own); a smaller one is this process's share."""
  out = {}
  for k, x in batch.items():
    x = np.asarray(x)
    if jax.process_count() == 1 or x.shape[0] == global_batch_size:
      if jax.process_count() == 1:
        out[k] = jax.device_put(x, sharding)
      else:
        out[k] = jax.make_array_from_callback(x.shape, sharding, lambda idx, x=x: x[idx])
    else:
      out[k] = jax.make_array_from_process_local_data(sharding, x)
  return out
