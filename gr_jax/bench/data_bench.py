"""Data benchmarks: `prepare` on ml-latest-small and on a simulated 1M-interaction set, and the
training pipeline's throughput (target >= 20,000 examples/s on one CPU core).

Run through the bench binary with a config file for the data defaults (any configs/*.py; the
binary does not look for the repository's configs/ itself, so it works from an installed wheel):

  python -m gr_jax.bench --modes=data --config=configs/base.py \\
      --data_ml_dir=../shared/data/ml-latest-small --data_users=125000 --data_batches=2000

One "data" record comes out; numbers go to BUILD_NOTES.md with the date and machine.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from typing import Any

import ml_collections

from gr_jax.bench import protocol


def _time_prepare(config, out):
  from gr_jax.data import ProcessedDataset, prepare_dataset  # pylint: disable=g-import-not-at-top

  t = time.perf_counter()
  ds = ProcessedDataset(prepare_dataset(config, out))
  return time.perf_counter() - t, ds


def _time_pipeline(ds, config, batches, batch_size=128, ratio=0.0):
  from gr_jax.data import make_train_loader  # pylint: disable=g-import-not-at-top

  config.data.task_ratio = ratio
  loader = make_train_loader(
    ds, config.data, tasks=("search", "rec"), batch_size=batch_size, seed=0, num_epochs=None
  )
  it = iter(loader)
  next(it)  # first batch builds the epoch permutation
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  dt = time.perf_counter() - t
  return {
    "batches_per_s": batches / dt,
    "examples_per_s": batches * batch_size / dt,
    "batch_size": batch_size,
    "task_ratio": ratio,
  }


def run_data_benchmark(
  config: ml_collections.ConfigDict,
  *,
  ml_dir: str = "",
  users: int = 125000,
  items: int = 5000,
  batches: int = 2000,
) -> dict[str, Any]:
  """Times prepare (ml-latest-small when `ml_dir` exists; a simulated set of `users` sessions of
  8 items) and the train loader on the simulated set; returns one "data" record.

  `config` supplies every data default; it is copied, never changed.
  """
  out: dict[str, Any] = {
    "kind": "data",
    "machine": platform.platform(),
    "cpus": os.cpu_count(),
    **protocol.machine_info(),
  }

  def fresh():
    return ml_collections.ConfigDict(config.to_dict())

  with tempfile.TemporaryDirectory() as tmp:
    if ml_dir and os.path.exists(ml_dir):
      c = fresh()
      c.data.source, c.data.path = "movielens", ml_dir
      c.data.tokenizer.vocab_size = 2000
      dt, ds = _time_prepare(c, os.path.join(tmp, "ml"))
      out["prepare_ml_latest_small_s"] = dt
      out["ml_latest_small"] = {"items": ds.num_items, "splits": ds.manifest["splits"]}
    c = fresh()
    c.data.source = "simulate"
    s = c.data.sim
    # 20 items per cluster and 2,000 held-out queries at the default 5,000 items; scaled down
    # with `items` so that small smoke runs stay valid simulator settings.
    s.num_items, s.num_users, s.session_len = items, users, 8
    s.num_clusters = max(1, min(250, items // 20))
    s.eval_queries = max(1, min(2000, items * 2 // 5))
    dt, ds = _time_prepare(c, os.path.join(tmp, "sim"))
    out["prepare_sim_s"] = dt
    out["sim"] = {
      "interactions": users * 8,
      "items": ds.num_items,
      "train_examples": {
        t: ds.manifest["splits"][t]["train"]["examples"] for t in ("search", "rec")
      },
    }
    out["pipeline_concat"] = _time_pipeline(ds, c, batches)
    out["pipeline_ratio_0.5"] = _time_pipeline(ds, c, batches, ratio=0.5)
  return out
