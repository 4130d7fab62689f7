"""Raw data -> processed dataset directory.

  python -m gr_jax.prepare --config configs/movielens.py --workdir runs/ml \
      --config.data.path=/path/to/ml-latest-small

Writes to `data.processed_dir`, or `<workdir>/data` when that is empty. Atomic and idempotent: a
complete dataset of the same data config is reused; one of another config is an error.
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

from gr_jax import runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)")
_WORKDIR = flags.DEFINE_string(
  "workdir",
  None,
  "run directory; the dataset goes to <workdir>/data unless --config.data.processed_dir is set",
)


def output_dir(config, workdir: str) -> str:
  return config.data.processed_dir or os.path.join(workdir, "data")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  runtime.validate_config(config)  # before any work (and before the heavy imports)
  from gr_jax import workdir  # pylint: disable=g-import-not-at-top

  # gs://... is refused in one line here, not written under ./gs:/ by os.path.
  workdir.local_dir(
    output_dir(config, _WORKDIR.value), "the processed dataset", workdir.DATASET_REMEDY
  )
  from gr_jax.data import ProcessedDataset, prepare_dataset  # pylint: disable=g-import-not-at-top

  out = prepare_dataset(config, output_dir(config, _WORKDIR.value))
  ds = ProcessedDataset(out)
  m = ds.manifest
  logging.info("dataset %s: %d items, splits %s", out, ds.num_items, json.dumps(m["splits"]))
  print(
    json.dumps(
      {
        "dataset": out,
        "num_items": ds.num_items,
        "splits": m["splits"],
        "popularity_kl": m["popularity_kl"],
        "skipped_rows": m["skipped_rows"]["total"],
      },
      indent=1,
    )
  )


def run():
  flags.mark_flags_as_required(["config", "workdir"])
  runtime.run_app(main, path_hint=lambda: output_dir(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  run()
