"""Data: item catalogue, tokenizer, simulator, loaders, prepare (raw -> processed), grain pipeline.

Public API (BUILD_NOTES.md "Processed dataset"):
  TASKS = ("search", "rec")                  task_id 0 and 1 in batches (gr_jax/schema.py)
  prepare_dataset(config, out_dir) -> out_dir
  ProcessedDataset(dir)                      rec / search rows built on demand (HistoryRows, QueryRows)
  cold_start.add_items(dataset, items, out)  semantic IDs for items added after training
  make_train_loader(...), steps_per_epoch(...), make_eval_batches(...)   (gr_jax.data.pipeline)
  ItemCatalog, TextTokenizer, DataError
"""

from gr_jax.data.catalog import ItemCatalog
from gr_jax.data.dataset import ProcessedDataset
from gr_jax.data.errors import DataError
from gr_jax.data.pipeline import make_eval_batches, make_train_loader, steps_per_epoch
from gr_jax.data.prepare import prepare_dataset
from gr_jax.data.tokenizer import TextTokenizer
from gr_jax.schema import TASKS

__all__ = [
  "TASKS",
  "DataError",
  "ItemCatalog",
  "ProcessedDataset",
  "TextTokenizer",
  "make_eval_batches",
  "make_train_loader",
  "prepare_dataset",
  "steps_per_epoch",
]
