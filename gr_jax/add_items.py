"""Cold start: add items to a prepared semantic-ID dataset without retraining.

  python -m gr_jax.add_items --dataset runs/x/data --items new_items.jsonl --out runs/x/data_new

`--items`: JSON lines `{"item": id, "title": text, ...}` (other fields are metadata, as in the
jsonl source's items file). Datasets with `data.semantic.embedding=file` also need
`--embeddings new.npy` (float [new items, dim], rows in the items file's order). Writes a NEW
processed dataset (the old one is only read): the catalogue with the new items appended, each
with a semantic ID from the dataset's stored quantiser, and a manifest recording them
(gr_jax/data/cold_start.py). Evaluate a checkpoint trained on the old dataset on it with
`python -m gr_jax.evaluate --workdir RUN --config.data.processed_dir=<out>`.
"""

from __future__ import annotations

import json

from absl import app, flags

from gr_jax import runtime

_DATASET = flags.DEFINE_string(
  "dataset", None, "processed semantic-ID dataset directory (read only)"
)
_ITEMS = flags.DEFINE_string("items", None, 'JSON lines of new items: {"item": id, "title": ...}')
_OUT = flags.DEFINE_string("out", None, "new dataset directory to write (must not exist)")
_EMBEDDINGS = flags.DEFINE_string(
  "embeddings", None, "file embeddings only: .npy [new items, dim] in the items file's order"
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from gr_jax.data import cold_start  # pylint: disable=g-import-not-at-top

  out = cold_start.add_items(
    _DATASET.value, _ITEMS.value, _OUT.value, embeddings_path=_EMBEDDINGS.value or None
  )
  with open(f"{out}/manifest.json") as f:
    entry = json.load(f)["cold_start"][-1]
  summary = {k: v for k, v in entry.items() if k != "item_ids"}
  print(json.dumps({"dataset": out, **summary}, indent=1))


def run():
  flags.mark_flags_as_required(["dataset", "items", "out"])
  runtime.run_app(main, path_hint=lambda: _OUT.value)


if __name__ == "__main__":
  run()
