"""Data benchmarks: prepare on ml-latest-small and on a simulated 1M-interaction set, and the
training pipeline's throughput (target >= 20,000 examples/s on one CPU core).

  .venv/bin/python bench/bench_data.py [--ml DIR] [--users 125000] [--batches 2000]
Prints one JSON object; numbers go to BUILD_NOTES.md with the date and machine.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import base  # noqa: E402
from gr_jax.data import ProcessedDataset, make_train_loader, prepare_dataset  # noqa: E402


def _time_prepare(config, out):
  t = time.perf_counter()
  ds = ProcessedDataset(prepare_dataset(config, out))
  return time.perf_counter() - t, ds


def _time_pipeline(ds, config, batches, batch_size=128, ratio=0.0):
  config.data.task_ratio = ratio
  loader = make_train_loader(ds, config.data, tasks=("search", "rec"), batch_size=batch_size,
                             seed=0, num_epochs=None)
  it = iter(loader)
  next(it)  # first batch builds the epoch permutation
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  dt = time.perf_counter() - t
  return {"batches_per_s": batches / dt, "examples_per_s": batches * batch_size / dt,
          "batch_size": batch_size, "task_ratio": ratio}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--ml", default=os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))), "shared", "data", "ml-latest-small"))
  ap.add_argument("--users", type=int, default=125000)  # x session_len 8 = 1M interactions
  ap.add_argument("--items", type=int, default=5000)
  ap.add_argument("--batches", type=int, default=2000)
  args = ap.parse_args()
  out = {"machine": platform.platform(), "cpus": os.cpu_count()}
  with tempfile.TemporaryDirectory() as tmp:
    if os.path.exists(args.ml):
      c = base.get_config()
      c.data.source, c.data.path = "movielens", args.ml
      c.data.tokenizer.vocab_size = 2000
      dt, ds = _time_prepare(c, os.path.join(tmp, "ml"))
      out["prepare_ml_latest_small_s"] = dt
      out["ml_latest_small"] = {"items": ds.num_items, "splits": ds.manifest["splits"]}
    c = base.get_config()
    s = c.data.sim
    s.num_items, s.num_clusters, s.num_users, s.session_len = args.items, 250, args.users, 8
    s.eval_queries = 2000
    dt, ds = _time_prepare(c, os.path.join(tmp, "sim"))
    out["prepare_sim_s"] = dt
    out["sim"] = {"interactions": args.users * 8, "items": ds.num_items,
                  "train_examples": {t: ds.manifest["splits"][t]["train"]["examples"]
                                     for t in ("search", "rec")}}
    out["pipeline_concat"] = _time_pipeline(ds, c, args.batches)
    out["pipeline_ratio_0.5"] = _time_pipeline(ds, c, args.batches, ratio=0.5)
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
