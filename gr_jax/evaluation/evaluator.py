"""Checkpoint-based evaluation: decode every query of a split, write TREC runs, qrels and metrics.

`evaluate(workdir, split, step, overrides)`:
1. restores the model and its config from the run directory (`restore_for_inference`): the
   latest, a given or the best-validation checkpoint, or with `step="best_per_task"` each task's
   own best-validation checkpoint (a multi-task run selected per task);
2. for each task the model was trained on (`config.data.tasks`), loads `<dataset>/<task>/<split>.npz`
   from the run's processed dataset (`data.processed_dir`, else `<workdir>/data`), keeps each
   `query_id` once (its first example's encoder input) and collects every `target_item` of the
   query as its qrels;
3. decodes fixed-shape batches (the last one padded with copies of a real row, so one compiled
   program serves all batches) with the decoder `decode.method` names, restricted to item tokens:
   "beam" (the config's diverse beam search, the paper's) or "topk_exact" (the K most probable
   items of the first decoder step, `gr_jax.decoding.topk`); an item is kept at its best rank,
   invalid / non-finite hypotheses are dropped, missing ranks count as non-relevant; with
   `eval.exclude_seen` each rec query's own history items (as stored in the split) are excluded
   from its ranking by both decoders (`exclude_items`), so its K best remaining items are ranked;
4. writes `eval/<out_subdir or split>/{task}.run`, `{task}.qrels`, `metrics.json` (task -> metric
   -> mean at its top level, plus an `info` section with the decode method, `exclude_seen` and, per
   task, the mean number of distinct valid items per returned list) and `per_query.json` (task ->
   metric -> query -> value).
An evaluation never replaces another decoder's results: when `eval/<out_subdir or split>/`
already holds a metrics.json whose `info.decode_method` differs from this one's, `evaluate`
refuses before decoding and names `--out_subdir` (e.g. `test_topk_exact`, the study's name).
"""

from __future__ import annotations

import logging
import math
import json
import os
import time
from typing import Any, Callable, Mapping

import ml_collections
import numpy as np
from etils import epath

from gr_jax import checkpointing
from gr_jax import workdir as workdir_lib
from gr_jax.data.dataset import ProcessedDataset
from gr_jax.data.errors import DataError
from gr_jax.evaluation import metrics as metrics_lib
from gr_jax.evaluation import runs as runs_lib
from gr_jax.schema import TASKS

log = logging.getLogger(__name__)

DECODE_METHODS = ("beam", "topk_exact")
# decode.* fields added after some runs were trained: a run's saved config that lacks one decoded
# with this value (and overrides of the field must still work on it).
DECODE_DEFAULTS = {"method": "beam", "use_cache": True, "one_hot_gather": False}
# eval.* fields added after some runs were trained, likewise (no run excluded seen items before).
EVAL_DEFAULTS = {"exclude_seen": False}


class EvaluationError(RuntimeError):
  """Something the evaluation needs is missing or does not match; the message is one line."""


def apply_overrides(
  config: ml_collections.ConfigDict, overrides: Mapping[str, Any] | None
) -> ml_collections.ConfigDict:
  """Copy of config with dotted-path overrides (`{"decode.num_beams": 8}`) applied."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in (overrides or {}).items():
    node = config
    parts = key.split(".")
    for p in parts[:-1]:
      if p not in node:
        raise EvaluationError(f"override {key!r}: config has no section {p!r}")
      node = node[p]
    if parts[-1] not in node:
      raise EvaluationError(f"override {key!r}: config has no field {parts[-1]!r}")
    old = node[parts[-1]]
    if isinstance(old, (tuple, list)) and not isinstance(value, (tuple, list)):
      # "1,5,10" from a command line -> (1, 5, 10), typed like the default's elements.
      cast = type(old[0]) if old else str
      value = tuple(cast(v) for v in str(value).split(","))
    elif isinstance(old, (tuple, list)):
      value = tuple(value)
    try:
      node[parts[-1]] = value
    except TypeError as e:
      raise EvaluationError(f"override {key!r}={value!r}: {e}") from None
  return config


def with_decode_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Copy of config whose decode (eval) section has every field of DECODE_DEFAULTS
  (EVAL_DEFAULTS): old run configs."""
  config = ml_collections.ConfigDict(config.to_dict())
  for section, defaults in (("decode", DECODE_DEFAULTS), ("eval", EVAL_DEFAULTS)):
    if section not in config:
      config[section] = ml_collections.ConfigDict()
    for key, value in defaults.items():
      if key not in config[section]:
        config[section][key] = value
  return config


def dataset_dir(workdir: str, config) -> str:
  path = workdir_lib.processed_dir(config, workdir)
  if not os.path.exists(os.path.join(path, "catalog.json")):
    raise EvaluationError(
      f"{workdir}: processed dataset {path} has no catalog.json "
      "(set data.processed_dir or run gr_jax.prepare)"
    )
  return path


def load_split(data_dir: str, task: str, split: str, dataset=None) -> dict[str, np.ndarray]:
  """A processed split's arrays, read through `ProcessedDataset.split` (the one split reader;
  `dataset`: that directory's already open ProcessedDataset, else one is opened); its DataError
  (a missing split or field, named with the file) becomes this module's EvaluationError."""
  try:
    return (dataset or ProcessedDataset(data_dir)).split(task, split)
  except DataError as e:
    raise EvaluationError(str(e)) from e


def item_constraint(catalog, eos_id: int):
  """The decoder's item constraint, which also maps sequences back to items.

  (docs/study_design.md "Inference".) Atomic IDs: one item token, then EOS. Semantic IDs: the device-side prefix trie of every item's
  code tokens, then EOS (built once per catalogue object); a finished sequence names one item.
  """
  from gr_jax.decoding.constraints import AtomicItemConstraint, PrefixTrieConstraint

  scheme = getattr(catalog, "id_scheme", "atomic")
  if scheme == "atomic":
    return AtomicItemConstraint.from_catalog(catalog, eos_id=eos_id)
  if scheme == "semantic":
    return PrefixTrieConstraint.from_catalog(catalog, eos_id=eos_id)
  raise EvaluationError(
    f"item id scheme {scheme!r}: the evaluator supports 'atomic' and 'semantic'"
  )


def decode_length(catalog, max_new_tokens: int) -> int:
  """Decoder steps: decode.max_new_tokens for atomic IDs; an ID's tokens + EOS for semantic IDs
  (fewer steps cannot finish an ID, and after EOS the trie allows nothing more)."""
  if getattr(catalog, "id_scheme", "atomic") == "atomic":
    return int(max_new_tokens)
  need = int(catalog.tokens_per_item) + 1
  if int(max_new_tokens) != need:
    log.info(
      "decode.max_new_tokens=%d replaced by %d: semantic IDs are %d code tokens + EOS",
      int(max_new_tokens),
      need,
      need - 1,
    )
  return need


def make_decode_fn(model, config, catalog) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
  """`(encoder_input_ids [B, L], exclude=None)` -> (sequences `[B, R, T]`, scores `[B, R]`) as
  NumPy; `exclude` (bool `[B, num_items]`) names items each query may not return.

  The decoder is `config.decode.method`: "beam" (diverse beam search) or "topk_exact".
  """
  de = config.decode
  method = de.get("method", DECODE_DEFAULTS["method"])
  if method not in DECODE_METHODS:
    raise EvaluationError(f"decode.method={method!r}: expected one of {DECODE_METHODS}")
  scheme = getattr(catalog, "id_scheme", "atomic")
  if method == "topk_exact" and scheme != "atomic":
    raise EvaluationError(
      f"decode.method='topk_exact' ranks the items of one decoder step and needs atomic item "
      f"IDs; this dataset's IDs are {scheme!r} (several tokens each): use decode.method=beam"
    )
  constraint = item_constraint(catalog, model.config.eos_token_id)
  max_new_tokens = decode_length(catalog, de.max_new_tokens)
  pad = model.config.pad_token_id

  if method == "topk_exact":
    from gr_jax.decoding.topk import check_topk_args, topk_exact

    try:  # fail before any decoding, in the words of the config
      check_topk_args(de.num_return_sequences, catalog.num_items, de.max_new_tokens)
    except ValueError as e:
      raise EvaluationError(str(e)) from None

    def decode(enc: np.ndarray, exclude: np.ndarray | None = None):
      seqs, scores = topk_exact(
        model,
        enc,
        encoder_mask=enc != pad,
        num_return_sequences=de.num_return_sequences,
        max_new_tokens=de.max_new_tokens,
        constraint=constraint,
        exclude_items=exclude,
      )
      return np.asarray(seqs), np.asarray(scores)

    return decode

  from gr_jax.decoding.beam_search import beam_search

  use_cache = de.get("use_cache", DECODE_DEFAULTS["use_cache"])
  one_hot_gather = de.get("one_hot_gather", DECODE_DEFAULTS["one_hot_gather"])

  def decode(enc: np.ndarray, exclude: np.ndarray | None = None):
    seqs, scores = beam_search(
      model,
      enc,
      encoder_mask=enc != pad,
      num_beams=de.num_beams,
      num_beam_groups=de.num_beam_groups,
      diversity_penalty=de.diversity_penalty,
      length_penalty=de.length_penalty,
      max_new_tokens=max_new_tokens,
      num_return_sequences=de.num_return_sequences,
      early_stopping=de.early_stopping,
      constraint=constraint,
      use_cache=use_cache,
      one_hot_gather=one_hot_gather,
      exclude_items=exclude,
    )
    return np.asarray(seqs), np.asarray(scores)

  return decode


def decode_queries(
  decode_fn,
  encoder_inputs: np.ndarray,
  query_ids,
  catalog,
  batch_size: int,
  task: str = "",
  log_every_s: float = 10.0,
  eos_id: int = 1,
  exclude: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
  """Run dict `{query_id: {item_id: score}}` for the given unique queries.

  A returned sequence counts when it spells an item (`constraint.to_items`: item token then EOS,
  the rule of `gr_jax.decoding.sequences_to_items`) and its score is finite.
  exclude: None, or bool `[Q, num_items]` (row q: items query q may not return), passed to the
  decoder as `decode_fn(batch, exclude=...)`, batch by batch.
  """
  constraint = item_constraint(catalog, eos_id)
  n = encoder_inputs.shape[0]
  run: dict[str, dict[str, float]] = {}
  start = last = time.time()
  for lo in range(0, n, batch_size):
    hi = min(lo + batch_size, n)
    batch = encoder_inputs[lo:hi]
    ex = None if exclude is None else exclude[lo:hi]
    if hi - lo < batch_size:
      # Pad with copies of a real row (an all-pad row would have an empty encoder mask).
      batch = np.concatenate([batch, np.repeat(batch[:1], batch_size - (hi - lo), 0)], 0)
      if ex is not None:
        ex = np.concatenate([ex, np.repeat(ex[:1], batch_size - (hi - lo), 0)], 0)
    # [B, R, T], [B, R]
    seqs, scores = decode_fn(batch) if ex is None else decode_fn(batch, exclude=ex)
    seqs, scores = np.asarray(seqs), np.asarray(scores, np.float64)
    for row in range(hi - lo):
      q: dict[str, float] = {}
      for seq, sc in zip(seqs[row], scores[row].tolist()):
        idx = constraint.to_items(seq)
        if idx is None or not math.isfinite(sc):
          continue
        d = catalog.item_ids[idx]
        if d not in q:  # duplicates keep their best (first) rank
          q[d] = float(sc)
      run[query_ids[lo + row]] = q
    now = time.time()
    if now - last >= log_every_s or hi == n:
      last = now
      log.info(
        "evaluate %s: %d/%d queries, %.1f queries/s", task, hi, n, hi / max(now - start, 1e-9)
      )
  return run


def decode_split(
  decode_fn,
  config,
  data_dir: str,
  catalog,
  arrays: Mapping[str, dict],
  split: str,
  *,
  eos_id: int = 1,
  max_queries: int = 0,
  exclude_seen: bool = False,
) -> tuple[dict, dict]:
  """Decodes every query of `arrays` (task -> split arrays) and scores it against its qrels.

  Returns `(results, info_tasks)`: results[task] = {"run", "qrels", "means", "per_query"} and
  info_tasks[task] = counts, speed and the mean number of distinct items per returned list.
  `max_queries` > 0 keeps the first N queries of each task (the trainer's validation decodes).
  Shared by `evaluate` and the trainer's model selection, so both score the same way.
  `exclude_seen`: rec queries may not return their own history items (`eval.exclude_seen`; the
  trainer's validation decodes leave it off, so one trained run serves both protocols).
  """
  from gr_jax.data import dataset as dataset_lib
  from gr_jax.data import pipeline
  from gr_jax.decoding.constraints import exclusion_mask
  from gr_jax.data.tokenizer import TextTokenizer

  ks = tuple(int(k) for k in config.eval.ks)
  # The same inputs the model was trained on: the task prefix when the run used one.
  prefix_tokenizer = (
    TextTokenizer.load(os.path.join(data_dir, "tokenizer"))
    if config.data.get("task_prefix", False)
    else None
  )
  results, info_tasks = {}, {}
  for t, split_arrays in arrays.items():
    src = os.path.join(data_dir, t, f"{split}.npz")
    qids, first = runs_lib.split_queries(split_arrays, src)
    if max_queries > 0:
      qids, first = qids[:max_queries], first[:max_queries]
    keep = set(qids)
    qrels = {
      q: rel
      for q, rel in runs_lib.qrels_from_split(split_arrays, catalog.item_ids, src).items()
      if q in keep
    }
    enc = np.asarray(split_arrays["encoder_input_ids"][first], np.int32)
    if prefix_tokenizer is not None:
      enc = pipeline.add_task_prefix(enc, t, prefix_tokenizer)
    exclude = None
    if exclude_seen and t == "rec":  # search queries have no history
      hists = dataset_lib.query_histories(split_arrays, first, catalog)
      exclude = exclusion_mask(hists, catalog.num_items)
    t0 = time.time()
    run = decode_queries(
      decode_fn,
      enc,
      qids,
      catalog,
      int(config.decode.batch_size),
      task=t,
      eos_id=eos_id,
      exclude=exclude,
    )
    secs = time.time() - t0
    means, pq = metrics_lib.evaluate_run(qrels, run, ks)
    results[t] = {"run": run, "qrels": qrels, "means": means, "per_query": pq}
    # Beam search often returns fewer distinct items than decode.num_return_sequences (groups
    # re-pick the same items), so "Recall@30" may really be a shallower cut-off: record it.
    distinct = float(np.mean([len(run[q]) for q in qids])) if qids else 0.0
    info_tasks[t] = {
      "num_queries": len(qids),
      "num_examples": int(len(split_arrays["query_id"])),
      "decode_seconds": secs,
      "queries_per_s": len(qids) / max(secs, 1e-9),
      "distinct_items_mean": distinct,
    }
    log.info(
      "%s %s/%s: %s",
      "decode",
      t,
      split,
      {k: round(v, 4) for k, v in means.items() if k.startswith("recall")},
    )
  return results, info_tasks


def validation_decoder(
  config, data_dir: str, *, max_queries: int = 0
) -> Callable[[Any], dict[str, float]]:
  """A function `model -> metrics` that decodes the valid split of the run's tasks with the run's
  decoder (config.decode); the catalogue and the split are read once, here, not at every decode.

  The metrics are `{"<task>/<metric>": mean, ..., "<metric>": mean over the tasks}` for every
  metric of `metrics.evaluate_run` at `config.eval.ks`. The trainer selects checkpoints and stops
  early on these; nothing here reads the test split.
  """
  dataset = ProcessedDataset(data_dir)
  catalog = dataset.catalog
  arrays = {t: load_split(data_dir, t, "valid", dataset) for t in config.data.tasks}
  config = with_decode_defaults(config)

  def metrics(model) -> dict[str, float]:
    decode_fn = make_decode_fn(model, config, catalog)
    results, _ = decode_split(
      decode_fn,
      config,
      data_dir,
      catalog,
      arrays,
      "valid",
      eos_id=model.config.eos_token_id,
      max_queries=max_queries,
    )
    out: dict[str, float] = {}
    for t, r in results.items():
      for name, value in r["means"].items():
        out[f"{t}/{name}"] = float(value)
    for name in next(iter(results.values()))["means"]:
      out[name] = float(np.mean([r["means"][name] for r in results.values()]))
    return out

  return metrics


def _refuse_other_decoder(workdir: str, split: str, out_subdir: str | None, method: str) -> None:
  """EvaluationError when the output directory holds another decoder's results (its metrics.json
  `info.decode_method` is not `method`): they would be replaced silently. An unreadable
  metrics.json, or one without a method, is not protected (nothing to tell apart)."""
  out = runs_lib.eval_dir(workdir, out_subdir or split)
  path = epath.Path(workdir_lib.absolute(out)) / "metrics.json"
  try:
    if not path.exists():
      return
    info = json.loads(path.read_text()).get("info")
  except (OSError, ValueError, AttributeError):
    return
  old = info.get("decode_method") if isinstance(info, dict) else None
  if isinstance(old, str) and old != method:
    raise EvaluationError(
      f"{out} holds the results of decode.method={old}; this evaluation "
      f"(decode.method={method}) would replace them: pass --out_subdir (e.g. --out_subdir "
      f"{split}_{method}) to keep each decoder's results in its own eval/ directory, or delete "
      f"{out} first"
    )


# Named steps of `evaluate` besides an integer and None (the latest): checkpointing's ("best",
# "best_search", "best_rec") and "best_per_task", every task at its own best validation step.
PER_TASK = "best_per_task"


def step_names() -> tuple[str, ...]:
  """The named steps `evaluate` takes: "best", "best_<task>" and "best_per_task"."""
  return checkpointing.BEST_STEPS + (PER_TASK,)


def _step_groups(workdir: str, step, tasks: list[str]) -> list[tuple[Any, list[str]]]:
  """[(checkpoint request, the tasks decoded with it)]: one request for all tasks, or with
  "best_per_task" each task's best checkpoint by its own validation metric ("best_<task>", which
  a multi-task run selected per task saved; a single-task run's "best" is its task's; a
  multi-task run without per-task metrics, e.g. trained before them, falls back to "best", the
  mean over its tasks, and its metrics.json says so in `selected_by`)."""
  if step != PER_TASK:
    return [(step, list(tasks))]
  if len(tasks) < 2:
    return [("best", list(tasks))]
  groups: dict[str, list[str]] = {}
  for t in tasks:
    request = "best"
    if checkpointing.best_step(workdir, task=t) is not None:
      request = f"best_{t}"
    else:
      log.warning(
        "%s: no checkpoint has %s's own validation metric (run not selected per task); %s is "
        "evaluated at the best checkpoint by checkpoint.best_metric",
        workdir,
        t,
        t,
      )
    groups.setdefault(request, []).append(t)
  return list(groups.items())


def _run_tasks(workdir: str) -> list[str]:
  """data.tasks of the run's config.json (empty when it cannot be read: the restore then says why)."""
  try:
    saved = json.loads(epath.Path(workdir_lib.absolute(workdir), "config.json").read_text())
    return [str(t) for t in saved["data"]["tasks"]]
  except (OSError, ValueError, KeyError, TypeError):
    return []


def _restore(workdir: str, step):
  try:
    return checkpointing.restore_for_inference(workdir, step)
  except (FileNotFoundError, checkpointing.ConfigMismatchError) as e:
    raise EvaluationError(" ".join(str(e).split())) from e
  except ValueError as e:  # restored arrays do not fit the config's model
    raise EvaluationError(
      f"{workdir}: checkpoint does not match its config: " + " ".join(str(e).split())
    ) from e


def _check_model_fits(model, catalog, data_dir: str) -> None:
  mc = model.config
  if catalog.token_offset != mc.vocab_size or catalog.num_id_tokens != mc.num_item_tokens:
    raise EvaluationError(
      f"{data_dir}/catalog.json: {catalog.num_items} items from token {catalog.token_offset} "
      f"({catalog.num_id_tokens} {catalog.id_scheme} ID tokens), but "
      f"the checkpoint's model has {mc.num_item_tokens} item tokens from {mc.vocab_size} "
      "(checkpoint from another dataset or config)"
    )


def _selected_by(workdir: str, chosen: dict[str, tuple[Any, int]]) -> dict | None:
  """metrics.json `info.selected_by`: which validation metric chose the checkpoint (never the
  test split: see training.loop), None for the latest or an explicit step. One checkpoint:
  {"split", "metric", "mode", "step"}; one per task: {"split", "per_task": {task: {"metric",
  "mode", "step"}}}."""
  per_task = {}
  for t, (request, step) in chosen.items():
    if request in checkpointing.BEST_STEPS:
      metric, mode = checkpointing.step_metric(workdir, request)
      per_task[t] = {"metric": metric, "mode": mode, "step": int(step)}
  if not per_task:
    return None
  if len({request for request, _ in chosen.values()}) == 1:
    return {"split": "valid", **next(iter(per_task.values()))}
  return {"split": "valid", "per_task": per_task}


def evaluate(
  workdir: str,
  split: str = "test",
  step=None,
  overrides: Mapping[str, Any] | None = None,
  *,
  decode_fn_factory: Callable | None = None,
  out_subdir: str | None = None,
) -> dict:
  """Evaluates a run directory's checkpoint; returns (and writes) the metrics.json object.

  step: None (the latest checkpoint), an integer, "best" (by checkpoint.best_metric: a
    multi-task run's mean over its tasks), "best_search" / "best_rec" (by that task's validation
    metric, saved by a run selected per task) or "best_per_task" (each task decoded with its own
    best checkpoint: Gen_R+S's search at its best search step, its rec at its best rec step).
    metrics.json `info.steps` names each task's step, `info.selected_by` the validation metric.
  overrides: dotted config fields, e.g. `{"decode.num_beams": 8, "eval.ks": (1, 10)}`,
    `{"decode.method": "topk_exact"}` or `{"eval.exclude_seen": True}`.
  decode_fn_factory(model, config, catalog) -> decode_fn replaces the decoder (tests, baselines).
  out_subdir: outputs go to `eval/<out_subdir or split>/`, so one run can hold the results of
    several decoders side by side (e.g. "test" for beam search and "test_topk" for topk_exact).
  """
  if split not in ("test", "valid"):
    raise EvaluationError(f"split must be 'test' or 'valid', got {split!r}")
  if out_subdir is not None and (
    not out_subdir or out_subdir in (".", "..") or os.sep in out_subdir or "/" in out_subdir
  ):
    raise EvaluationError(f"out_subdir must be one directory name, got {out_subdir!r}")
  if isinstance(step, str) and step not in step_names():
    raise EvaluationError(f"step {step!r}: expected an integer, None or one of {step_names()}")
  if not epath.Path(workdir_lib.absolute(workdir)).is_dir():
    raise EvaluationError(f"{workdir}: run directory does not exist")
  groups = _step_groups(workdir, step, _run_tasks(workdir))
  config = catalog = data_dir = None
  tasks: list[str] = []
  arrays: dict = {}
  results, info_tasks, chosen = {}, {}, {}
  for request, group in groups:
    model, run_config, got = _restore(workdir, request)
    if config is None:  # the run's config: the same in every checkpoint of the run
      config = apply_overrides(with_decode_defaults(run_config), overrides)
      _refuse_other_decoder(workdir, split, out_subdir, config.decode.method)
      data_dir = dataset_dir(workdir, config)
      checkpointing.verify_dataset_of(config, data_dir)  # the data the checkpoint was trained on
      dataset = ProcessedDataset(data_dir)
      catalog = dataset.catalog
      tasks = [t for t in config.data.tasks]
      for t in tasks:
        if t not in TASKS:
          raise EvaluationError(f"{workdir}/config.json: data.tasks holds {t!r}; expected {TASKS}")
      arrays = {t: load_split(data_dir, t, split, dataset) for t in tasks}  # all present first
      ks = tuple(int(k) for k in config.eval.ks)
      if config.decode.num_return_sequences < max(ks):
        log.warning(
          "decode.num_return_sequences=%d < max cut-off %d: deeper ranks count as misses",
          config.decode.num_return_sequences,
          max(ks),
        )
    _check_model_fits(model, catalog, data_dir)
    group = [t for t in tasks if t in group] if group else tasks
    factory = decode_fn_factory or make_decode_fn
    decode_fn = factory(model, config, catalog)
    res, inf = decode_split(
      decode_fn,
      config,
      data_dir,
      catalog,
      {t: arrays[t] for t in group},
      split,
      eos_id=model.config.eos_token_id,
      exclude_seen=bool(config.eval.get("exclude_seen", False)),
    )
    results.update(res)
    info_tasks.update(inf)
    chosen.update({t: (request, int(got)) for t in group})
  results = {t: results[t] for t in tasks}  # the run's task order, whatever the groups'
  steps = {t: chosen[t][1] for t in tasks}
  distinct_steps = sorted(set(steps.values()))
  info = {
    "workdir": workdir_lib.absolute(workdir),
    # One checkpoint: its step; one per task (best_per_task): None, see `steps`.
    "step": distinct_steps[0] if len(distinct_steps) == 1 else None,
    "steps": steps,
    "split": split,
    "ks": [int(k) for k in config.eval.ks],
    "selected_by": _selected_by(workdir, {t: chosen[t] for t in tasks}),
    "decode_method": config.decode.method,
    "decode": config.decode.to_dict(),
    # Rec rankings left out each query's own history items (gr_jax.analysis.stats pairs runs
    # only when this matches).
    "exclude_seen": bool(config.eval.get("exclude_seen", False)),
    "tasks": info_tasks,
    "dataset": os.path.abspath(data_dir),
    "metric_note": "recall@K is Recall (share of a query's relevant items in the top K); it "
    "equals Success@K when a query has one relevant item. Ties: score "
    "descending, item id descending (trec_eval).",
  }
  tag = f"{config.get('name', 'gr_jax')}-step{'_'.join(map(str, distinct_steps))}"
  return runs_lib.write_eval_outputs(
    runs_lib.eval_dir(workdir, out_subdir or split),
    results,
    {"info": info},
    tag=tag.replace(" ", "_"),
  )
