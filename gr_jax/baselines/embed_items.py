"""Item embeddings of bi-encoder semantic IDs (data.semantic.embedding = search | rec | joint): the
step before prepare, so that prepare (gr_jax/data) trains no model.

`embed_items(config, workdir, out)` (the library behind `python -m gr_jax.embed_items`):
  a. The config's data is prepared with atomic IDs (`item_embeddings.atomic_data_config`) into
     `<workdir>/atomic-<hash12>/`, a complete, verified, reusable atomic dataset. Catalogue order
     and splits do not depend on the ID scheme in prepare (items: loader order, then sorted; search
     split by held-out distinct query with split_seed; rec leave-last-out), so its rows are the
     semantic dataset's; prepare checks it (`item_embeddings.BiencoderFile`).
  b. The bi-encoder trains in `<workdir>/<kind>-<hash12>/` (its run directory: config.json,
     metrics.jsonl, Orbax checkpoints; locked while in use, resumed or just reloaded when it is
     there) with `config.baselines.biencoder`, `tasks` replaced by the kind's, seed
     `data.semantic.seed` (a data setting: runs with other seeds share the dataset), for the
     section's budget (num_steps, else num_epochs). It sees the atomic dataset through
     `TrainSplitsOnly`: the training splits, and empty valid and test splits, so no held-out row
     reaches its parameters, its input length or its per-epoch validation (which logs 0.0 in its
     metrics.jsonl).
  c. After training, Recall@K (`item_embeddings.BIENCODER_RECALL_KS`) of each trained task on the
     atomic dataset's valid rows is measured for the manifest (ranking as the bi-encoder's own
     validation: items scored strictly above the target): a diagnostic that selects nothing.
  d. Every item's vector, in catalogue order (float32 [N, dim], as the bi-encoder scores it), goes
     to `out` (.npy) and a description beside it (`item_embeddings.description_path`: the kind, the
     `embedding_key` of the settings that made it, digests of the catalogue order and of the
     examples, the array's sha256 and the manifest's `embedding_info`). Prepare reads the pair as
     `data.semantic.embedding_file`.
Running it again reuses the atomic dataset and the trained run and writes the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from gr_jax import workdir_lock
from gr_jax.baselines import biencoder, common
from gr_jax.data import item_embeddings as ie
from gr_jax.data import prepare
from gr_jax.data.dataset import ProcessedDataset
from gr_jax.data.errors import DataError
from gr_jax.data.raw import SPLITS
from gr_jax.schema import TASKS

log = logging.getLogger(__name__)


def check_config(config) -> ml_collections.ConfigDict:
  """`item_embeddings.biencoder_config(config)`, the bi-encoder's own settings checked too: a
  DataError naming the knob before any work."""
  bc = ie.biencoder_config(config)
  try:
    biencoder.settings_of(bc.baselines.biencoder)
  except (ValueError, TypeError) as e:
    raise DataError(
      "<config>",
      0,
      "baselines.biencoder",
      f"data.semantic.embedding={config.data.semantic.embedding!r} trains this bi-encoder: {e}",
    ) from None
  return bc


def cache_dir(dataset_dir: str) -> str:
  """The embed workdir a study keeps beside a dataset: `<parent>/.<name>.semantic-biencoder`."""
  dataset_dir = os.path.abspath(dataset_dir)
  parent, name = os.path.dirname(dataset_dir), os.path.basename(dataset_dir)
  return os.path.join(parent, f".{name}.semantic-biencoder")


class TrainSplitsOnly:
  """A processed dataset as the semantic-ID bi-encoder sees it: its catalogue, tokenizer and
  training splits; its valid and test splits are empty (0 rows of the training arrays' shapes).

  `train_biencoder` reads valid/test for its input length and its periodic validation: through
  this view neither sees a held-out row.
  """

  def __init__(self, dataset):
    self._dataset = dataset
    self.catalog = dataset.catalog

  @property
  def tokenizer(self):
    return self._dataset.tokenizer

  @property
  def num_items(self) -> int:
    return int(self.catalog.num_items)

  def split(self, task: str, split: str) -> dict[str, np.ndarray]:
    arrays = self._dataset.split(task, "train")
    if split == "train":
      return arrays
    if split in ("valid", "test"):
      return {k: v[:0] for k, v in arrays.items()}
    raise KeyError(f"split must be train, valid or test; got {split!r}")


def _trim_columns(ids: np.ndarray) -> np.ndarray:
  """int32 rows cut after the last column that holds a token in any row (padding masked anyway)."""
  ids = np.asarray(ids, np.int32)
  nz = np.flatnonzero(ids.any(axis=0))
  return ids[:, : int(nz[-1]) + 1 if len(nz) else 1]


def biencoder_valid_recall(
  result, dataset, items: np.ndarray, ks: Sequence[int], batch: int
) -> dict[str, dict[str, float]]:
  """Recall@K of a trained bi-encoder (`biencoder.TrainResult`) on each trained task's VALID rows
  of `dataset`, against the item vectors `items` [n, dim] (as scored): the share of rows with
  fewer than K items scored strictly above their target, as the bi-encoder's own validation."""
  graphdef, cosine = result.graphdef, result.settings.similarity == "cosine"

  def scores(pair, ids):
    params, table = pair
    q = nnx.merge(graphdef, params).embed(ids)  # [B, dim], eval mode
    if cosine:
      q = q * jax.lax.rsqrt(jnp.maximum(jnp.sum(q * q, axis=-1, keepdims=True), 1e-12))
    return q @ table.T  # [B, n]

  ranks = common.ranks_fn(scores)
  table = jnp.asarray(items)
  out = {}
  for task in result.settings.tasks:
    arrays = dataset.split(task, "valid")
    out[task] = common.validation_recall(
      ranks,
      (result.params, table),
      _trim_columns(arrays["encoder_input_ids"]),
      np.asarray(arrays["target_item"], np.int32),
      tuple(int(k) for k in ks),
      int(batch),
    )
  return out


def _stored_examples(dataset_dir: str) -> dict:
  """Every split of a processed dataset as stored (read from its files, not through
  ProcessedDataset.split: only digested here, never seen by the bi-encoder)."""
  out: dict = {}
  for task in TASKS:
    for split in SPLITS:
      with np.load(os.path.join(dataset_dir, task, f"{split}.npz")) as z:
        out.setdefault(task, {})[split] = {k: z[k] for k in z.files}
  return out


def embed_items(config, workdir: str, out: str) -> dict:
  """Trains (or reloads) the bi-encoder of `config`'s bi-encoder kind in `workdir` and writes its
  item vectors to `out` and their description beside it (module doc, steps a-d). Returns the
  description."""
  bc = check_config(config)  # before any work
  kind = str(config.data.semantic.embedding)
  if not str(out).endswith(".npy"):
    raise DataError(str(out), 0, "out", "expected a file name ending in .npy")
  workdir = os.path.abspath(workdir)
  data = ie.atomic_data_config(config)
  atomic_hash = prepare.config_hash(data)
  atomic_dir = os.path.join(workdir, f"atomic-{atomic_hash[:12]}")
  log.info("item embeddings (%s): atomic dataset for the bi-encoder in %s", kind, atomic_dir)
  prepare.prepare_dataset(data, atomic_dir)  # a no-op when it is there
  dataset = ProcessedDataset(atomic_dir, verify=True)
  # The atomic dataset's files too: rebuilt from changed raw data, it needs a new bi-encoder.
  key = ie.json_digest(
    {
      "atomic_config_hash": atomic_hash,
      "atomic_files": ie.json_digest(dataset.manifest["files"]),
      "config": ie.jsonable(bc),
    }
  )
  run_dir = os.path.join(workdir, f"{kind}-{key[:12]}")
  view = TrainSplitsOnly(dataset)
  section = bc.baselines.biencoder
  log.info(
    "item embeddings (%s): training the bi-encoder (tasks %s) in %s", kind, section.tasks, run_dir
  )
  with workdir_lock.hold(run_dir, purpose="semantic-ID bi-encoder"):
    result = biencoder.train_biencoder(bc, view, run_dir)
  batch = int(section.eval_batch_size)
  emb = biencoder.item_embeddings(result, view, batch_size=batch)  # [N, dim], catalogue order
  if not np.isfinite(emb).all():
    raise DataError(
      run_dir,
      0,
      "data.semantic.embedding",
      f"{kind!r}: the bi-encoder's item embeddings are not finite",
    )
  recall = biencoder_valid_recall(result, dataset, emb, ie.BIENCODER_RECALL_KS, batch)
  summary = result.summary
  info = {
    "dim": int(emb.shape[1]),
    "biencoder": {
      "tasks": list(result.settings.tasks),
      "seed": int(bc.seed),
      "settings": ie.jsonable(section),
      "steps": int(summary["steps"]),
      "steps_per_epoch": int(summary["steps_per_epoch"]),
      "train_examples": dict(summary["train_examples"]),
      "input_len": int(summary["input_len"]),
      "valid_recall": recall,
      "valid_rows": {
        t: int(len(dataset.split(t, "valid")["target_item"])) for t in result.settings.tasks
      },
      "trained_on": "train splits only; valid_recall measured after training",
    },
    "atomic_dataset": {"config_hash": atomic_hash, "dir": atomic_dir},
    "run_dir": run_dir,
  }
  log.info(
    "item embeddings (%s): bi-encoder %d steps, valid recall %s",
    kind,
    info["biencoder"]["steps"],
    json.dumps(recall),
  )
  description = {
    "written_by": "gr_jax.embed_items",
    "embedding": kind,
    "embedding_key": ie.embedding_key(config),
    "item_ids_sha256": ie.item_ids_digest(dataset.catalog.item_ids),
    "examples_sha256": ie.examples_digests(_stored_examples(atomic_dir)),
    "embedding_info": info,
  }
  ie.save_biencoder_embeddings(out, emb, description)
  log.info("item embeddings (%s): %s [%d, %d]", kind, out, emb.shape[0], emb.shape[1])
  with open(ie.description_path(out)) as f:
    return json.load(f)
