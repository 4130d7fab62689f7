"""Data: item catalogue, tokenizer, simulator, loaders, prepare (raw -> processed), grain pipeline.

Public API (BUILD_NOTES.md "Processed dataset"):
  TASKS = ("search", "rec")                  task_id 0 and 1 in batches
  prepare_dataset(config, out_dir) -> out_dir
  ProcessedDataset(dir)
  make_train_loader(...), steps_per_epoch(...), make_eval_batches(...)   (gr_jax.data.pipeline)
  ItemCatalog, TextTokenizer, DataError
"""

TASKS = ("search", "rec")

from gr_jax.data.catalog import ItemCatalog  # noqa: E402
from gr_jax.data.dataset import ProcessedDataset  # noqa: E402
from gr_jax.data.errors import DataError  # noqa: E402
from gr_jax.data.pipeline import make_eval_batches, make_train_loader, steps_per_epoch  # noqa: E402
from gr_jax.data.prepare import prepare_dataset  # noqa: E402
from gr_jax.data.tokenizer import TextTokenizer  # noqa: E402
