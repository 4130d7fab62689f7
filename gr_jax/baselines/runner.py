"""One entry point for the trained and lexical baselines: BM25 (search), SASRec and BERT4Rec (rec),
the dense bi-encoder (search, rec, or both: `config.baselines.biencoder.tasks`).

`run_baseline(name, config, data_dir, out_dir, split)` writes `out_dir` as a run directory in the
layout every model uses (`config.json`, `checkpoints/` for the trained ones, `metrics.jsonl`,
`eval/<split>/{task}.run`, `{task}.qrels`, `metrics.json`, `per_query.json`) and returns the
metrics.json object. `out_dir` IS the run directory (the study passes `<baselines>/<name>`).
Rankings are full: every catalogue item is scored, the top `max(config.eval.ks)` are written.
Settings come from `config.baselines.<name>`, the cut-offs from `config.eval.ks`, the seed from
`config.seed`.
"""

from __future__ import annotations

from gr_jax.data.dataset import ProcessedDataset

# The tasks each baseline can be evaluated on; the bi-encoder's configured ones: `baseline_tasks`.
BASELINE_TASKS = {
  "bm25": ("search",),
  "sasrec": ("rec",),
  "bert4rec": ("rec",),
  "biencoder": ("search", "rec"),
}


def baseline_tasks(name: str, config) -> tuple[str, ...]:
  """The tasks baseline `name` trains and evaluates under `config` (its eval files' tasks)."""
  if name not in BASELINE_TASKS:
    raise ValueError(f"unknown baseline {name!r}; expected one of {sorted(BASELINE_TASKS)}")
  if name == "biencoder":
    from gr_jax.baselines.biencoder import parse_tasks  # pylint: disable=g-import-not-at-top

    return parse_tasks(config.baselines.biencoder.tasks)
  return BASELINE_TASKS[name]


def run_baseline(name: str, config, data_dir: str, out_dir: str, split: str) -> dict:
  """Runs baseline `name` (a key of BASELINE_TASKS) on the processed dataset `data_dir`."""
  if name not in BASELINE_TASKS:
    raise ValueError(f"unknown baseline {name!r}; expected one of {sorted(BASELINE_TASKS)}")
  dataset = ProcessedDataset(data_dir)
  if name == "bm25":
    from gr_jax.baselines import bm25  # pylint: disable=g-import-not-at-top

    return bm25.run_bm25(config, dataset, out_dir, split)
  if name == "biencoder":
    from gr_jax.baselines import biencoder  # pylint: disable=g-import-not-at-top

    return biencoder.run_biencoder(config, dataset, out_dir, split)
  from gr_jax.baselines import sequential  # pylint: disable=g-import-not-at-top

  return sequential.run_sequential(name, config, dataset, out_dir, split)
