"""The study's estimated wall time, printed before its first stage (`reproduce.estimate_time`).

  estimate = sum over the stages still to run of
    train:      optimizer steps x the measured seconds of one train step, + the measured compile
                once (the runs of a study share compiled programs through the persistent cache)
                + RUN_S per run (start, validation loss, checkpoints)
    evaluate:   EVAL_S (a fixed allowance per evaluation: a converged multi-task run's stage
                evaluates twice, per task and by the mean rule), + VALID_DECODE_S per validation
                decode of a converged run (its decodes up to the step cap, at the schedule of
                stages.converged_config: reproduce.converged_evals_per_epoch per own epoch)
    baselines:  BASELINE_S per trained baseline (SASRec, BERT4Rec, bi-encoder), BM25_S for BM25
    prepare, analyse, report: PREPARE_S, ANALYSE_S, REPORT_S

The train step is the trainer's own (gr_jax/training/step.py, the study's model shape: preset,
batch, encoder and decoder length, vocabulary), jitted and run on a synthetic batch on this machine:
one compile, then steps until MEASURE_S seconds or MEASURE_STEPS steps. The steps of a run follow
its budget as gr_jax/study/stages.py resolves it (epochs over the model's own training examples,
the joint model's steps for matched_steps, the step cap of a converged run in its own epochs: an
upper bound, as its decodes are), from
the training examples of the prepared dataset's manifest, or before prepare from the raw data
(simulated data: the simulator; real data: one read of the raw files), counted as prepare splits
them. Nothing is written: the study's files are the same with and without the estimate.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Callable

import numpy as np

from gr_jax.study import runner
from gr_jax.study.plan import DataSpec, Plan, RunSpec

# Allowances in seconds (CPU, the project's 2 cores): rough, from the stage timings of the
# quickstart and MovieLens studies; the train steps are what is measured.
EVAL_S = 15.0
# One validation decode of a converged run (100 valid queries per task, the quickstart's beam
# search: about 0.2 s per task measured after compilation, plus its checkpoint and validation
# loss when it is a new best).
VALID_DECODE_S = 0.5
RUN_S = 5.0
BASELINE_S = 60.0
BM25_S = 5.0
PREPARE_S = 10.0
ANALYSE_S = 30.0
REPORT_S = 10.0
TRAINED_BASELINES = ("sasrec", "bert4rec", "biencoder")
MEASURE_S = 3.0  # timed steps after the compile, at most this long
MEASURE_STEPS = 5


# ---------------------------------------------------------------------------- training examples
def dataset_counts(data: DataSpec) -> dict:
  """{"search": n, "rec": n} training examples and "num_items", "text_vocab" of one dataset: the
  manifest's when it is prepared, else counted from the raw data as prepare would split it."""
  try:
    with open(os.path.join(data.data_dir, "manifest.json")) as f:
      m = json.load(f)
    return {
      "search": int(m["splits"]["search"]["train"]["examples"]),
      "rec": int(m["splits"]["rec"]["train"]["examples"]),
      "num_items": int(m["num_items"]),
      "text_vocab": int(m["text_vocab_size"]),
    }
  except (OSError, ValueError, KeyError):
    pass
  from gr_jax.data import prepare  # pylint: disable=g-import-not-at-top
  from gr_jax.data.raw import SPLIT_CODE, pair_columns  # pylint: disable=g-import-not-at-top

  dc = data.config.data
  raw = prepare.load_raw(dc)
  pairs = pair_columns(raw.search_pairs)
  unassigned = int((pairs.split == SPLIT_CODE[""]).sum())
  held = float(dc.search_valid_fraction) + float(dc.search_test_fraction)
  search = int((pairs.split == SPLIT_CODE["train"]).sum()) + int(unassigned * max(0.0, 1 - held))
  if bool(dc.get("items_in_both_tasks", True)):  # prepare keeps the items of both tasks only
    searched = pairs.item_set()
    lengths = [sum(1 for i in items if i in searched) for _, items in raw.sessions]
  else:
    lengths = [len(items) for _, items in raw.sessions]
  lengths = np.asarray(lengths, np.int64)
  lengths = lengths[lengths >= int(dc.min_session_len)]
  return {
    "search": search,
    "rec": int(np.maximum(lengths - 3, 0).sum()),  # leave-last-out: targets 1 .. n-3
    "num_items": len(pairs.items) or len(raw.items),
    "text_vocab": int(dc.tokenizer.vocab_size),
  }


def _steps_per_epoch(run: RunSpec, counts: dict) -> int:
  batch = max(1, int(run.config.train.batch_size))
  return max(1, sum(int(counts[task]) for task in run.config.data.tasks) // batch)


def run_steps(plan: Plan, run: RunSpec, counts: dict) -> int:
  """Optimizer steps of a run under its budget (`stages.budget_config`'s rule; a converged run's
  step cap, in its own epochs)."""
  t = run.config.train
  batch = max(1, int(t.batch_size))

  def epochs(tasks) -> int:
    per_epoch = max(1, sum(int(counts[task]) for task in tasks) // batch)
    return int(t.num_epochs) * per_epoch

  if run.budget == "epochs":
    return int(t.num_steps) or epochs(run.config.data.tasks)
  if run.budget == "matched_steps":
    return int(t.num_steps) or epochs(("search", "rec"))
  factor = float(plan.config.reproduce.converged_max_factor)
  if int(t.num_steps) > 0:
    return max(1, math.ceil(factor * int(t.num_steps)))
  cap_epochs = max(1, math.ceil(factor * int(t.num_epochs)))
  return cap_epochs * _steps_per_epoch(run, counts)


def validation_decodes(plan: Plan, run: RunSpec, counts: dict) -> int:
  """Validation decodes of a converged run up to its step cap (an upper bound: patience usually
  stops it earlier): converged_evals_per_epoch per epoch of its own data (every step when an
  epoch is shorter; gr_jax/training/loop.py `is_selection_step`), and one at the last step; 0
  for the other budgets."""
  if run.budget != "converged":
    return 0
  per_epoch = int(plan.config.reproduce.converged_evals_per_epoch)
  own = _steps_per_epoch(run, counts)
  steps = run_steps(plan, run, counts)
  if per_epoch >= own:
    return steps
  last_decodes = (steps * per_epoch) // own > ((steps - 1) * per_epoch) // own
  return (steps * per_epoch) // own + (0 if last_decodes else 1)


# ---------------------------------------------------------------------------- the measured step
def measure_train_step(config, text_vocab: int, num_item_tokens: int) -> tuple[float, float]:
  """(seconds per train step, seconds of the first call: compile + one step) of the trainer's
  jitted step at this config's shapes, on a synthetic batch (no file is written)."""
  import jax  # pylint: disable=g-import-not-at-top

  from gr_jax.model import partitioning  # pylint: disable=g-import-not-at-top
  from gr_jax.model import build as build_lib
  from gr_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  from gr_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top

  cfg, model_config = build_lib.resolve_model(
    config, text_vocab_size=int(text_vocab), num_item_tokens=max(1, int(num_item_tokens))
  )
  batch_size = int(cfg.train.batch_size)
  enc_len = int(cfg.data.encoder_len)
  dec_len = _decoder_len(cfg)
  mesh = partitioning.make_mesh(int(cfg.mesh.data), int(cfg.mesh.model))
  with jax.set_mesh(mesh):
    tx, schedule = state_lib.make_optimizer(cfg, 1000)
    parts, abstract_params = build_lib.build_model(cfg, mesh, abstract=True)
    shardings = state_lib.state_shardings(parts, tx, mesh, abstract_params)
    # Constant weights of the right shapes: the step's time does not depend on their values, and
    # the model's jitted random init (or a Hugging Face read) would cost as much as the step.
    params = jax.tree.map(
      lambda a: jax.device_put(np.zeros(a.shape, a.dtype), a.sharding), abstract_params
    )
    state = state_lib.create_train_state(params, tx, shardings)
    batch_sh = partitioning.batch_sharding(mesh)
    step, rng = step_lib.run_train_step(cfg, parts, tx, schedule, shardings, batch_sh, mesh)
    vocab = int(model_config.vocab_size)
    total = vocab + max(1, int(num_item_tokens))
    r = np.random.default_rng(0)
    targets = r.integers(vocab, total, size=(batch_size, dec_len)).astype(np.int32)
    targets[:, -1] = 1  # </s>
    host = {
      "encoder_input_ids": r.integers(3, total, size=(batch_size, enc_len)).astype(np.int32),
      "decoder_input_ids": np.concatenate(
        [np.zeros((batch_size, 1), np.int32), targets[:, :-1]], axis=1
      ),
      "decoder_target_ids": targets,
      "decoder_weights": np.ones((batch_size, dec_len), np.float32),
      "task_id": np.zeros((batch_size,), np.int32),
    }
    batch = {k: jax.device_put(host[k], batch_sh) for k in step_lib.BATCH_KEYS}
    t0 = time.perf_counter()
    state, metrics = step(state, batch, rng)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - t0
    times = []
    while len(times) < MEASURE_STEPS and sum(times) < MEASURE_S:
      t0 = time.perf_counter()
      state, metrics = step(state, batch, rng)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - t0)
  return float(np.median(times)), first


def _decoder_len(cfg) -> int:
  if str(cfg.data.get("id_scheme", "atomic")) == "semantic":
    return int(cfg.data.semantic.levels) + 2  # codes, a disambiguation code where needed, EOS
  return int(cfg.data.decoder_len)


# ---------------------------------------------------------------------------- the estimate
def _safe(stage_id: str) -> str:
  return "".join(ch if ch.isalnum() or ch in "._-=" else "_" for ch in stage_id)


def estimate(plan: Plan, stages: list[runner.Stage]) -> dict:
  """Seconds per stage kind of the stages not yet done, and what they rest on."""
  todo = [s for s in stages if runner.status(plan.workdir, s) != "done"]
  ids = {s.id for s in todo}
  counts = {}
  for point in plan.points:
    for data in point.datasets:
      counts[(point.name, data.key)] = dataset_counts(data)
  runs = [
    r for r in plan.runs if _safe(f"train__{r.point}__{r.budget}__{r.model}__seed{r.seed}") in ids
  ]
  out = {
    "stages": len(todo),
    "seconds": {},
    "train_runs": len(runs),
    "train_steps": 0,
    "validation_decodes": 0,
  }
  if runs:
    first = runs[0]
    c = counts[(first.point, first.data)]
    step_s, first_s = measure_train_step(first.config, c["text_vocab"], c["num_items"])
    steps = [run_steps(plan, r, counts[(r.point, r.data)]) for r in runs]
    out.update(train_steps=sum(steps), step_s=step_s, compile_s=first_s)
    out["seconds"]["train"] = sum(steps) * step_s + first_s + len(runs) * RUN_S
  by_id = {s.id: s for s in todo}
  evals = 0
  for r in plan.runs:
    for decoder in plan.config.reproduce.get("decoders", ("beam",)):
      if _safe(f"evaluate__{r.point}__{r.budget}__{r.model}__seed{r.seed}__{decoder}") in by_id:
        evals += 2 if r.budget == "converged" and len(r.config.data.tasks) > 1 else 1
  decodes = sum(validation_decodes(plan, r, counts[(r.point, r.data)]) for r in runs)
  out["evaluations"] = evals
  out["validation_decodes"] = decodes
  out["seconds"]["evaluate"] = evals * EVAL_S + decodes * VALID_DECODE_S
  names = list(plan.config.reproduce.get("baselines", ()))
  per_baselines = sum(BASELINE_S for n in names if n in TRAINED_BASELINES) + BM25_S * (
    "bm25" in names
  )
  fixed = {"baselines": per_baselines, "prepare": PREPARE_S, "analyse": ANALYSE_S}
  fixed["report"] = REPORT_S
  for kind, secs in fixed.items():
    n = sum(1 for s in todo if s.kind == kind)
    if n:
      out["seconds"][kind] = n * secs
  out["total_s"] = sum(out["seconds"].values())
  return out


def estimate_line(est: dict) -> str:
  """One line: the total, then what it rests on."""
  fmt = runner._format_seconds  # pylint: disable=protected-access
  parts = []
  if est.get("train_runs"):
    parts.append(
      f"train {fmt(est['seconds']['train'])} = {est['train_runs']} run(s), "
      f"{est['train_steps']} steps x {est['step_s']:.3f} s/step measured"
      f" + {est['compile_s']:.0f} s compile + {RUN_S:.0f} s per run"
    )
  if est.get("evaluations"):
    parts.append(f"{est['evaluations']} evaluation(s) x {EVAL_S:.0f} s")
  if est.get("validation_decodes"):
    parts.append(
      f"at most {est['validation_decodes']} validation decode(s) x {VALID_DECODE_S:.1f} s "
      "(converged runs counted to their step cap: an upper bound)"
    )
  others = [k for k in ("baselines", "prepare", "analyse", "report") if k in est["seconds"]]
  if others:
    parts.append(
      " + ".join(f"{k} {fmt(est['seconds'][k])}" for k in others) + " (fixed allowances)"
    )
  detail = "; ".join(parts) if parts else "nothing left to run"
  return f"[plan] estimated wall time {fmt(est['total_s'])} for {est['stages']} stage(s): {detail}"


def print_estimate(
  plan: Plan, stages: list[runner.Stage], printer: Callable[[str], None] = print
) -> dict | None:
  """Prints the estimate's line; a failure to estimate is a warning, never the study's end."""
  from absl import logging  # pylint: disable=g-import-not-at-top

  t0 = time.perf_counter()
  try:
    est = estimate(plan, stages)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("no wall-time estimate: %s: %s", type(e).__name__, e)
    return None
  printer(estimate_line(est))
  logging.info("wall-time estimate took %.1fs", time.perf_counter() - t0)
  return est
