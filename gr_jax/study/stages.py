"""The stages of a study plan: thin calls into the library packages, in dependency order.

Every stage carries the description of its inputs (`Stage.inputs`): the resolved config it runs
with and the fingerprints of the stages it reads from, so a changed config reruns exactly the
stages it reaches (gr_jax.study.runner).
"""

from __future__ import annotations

import json
import math
import os
import shutil

import ml_collections

from gr_jax.study import tune
from gr_jax.study.plan import STUDY_ONLY_KEYS, DataSpec, Plan, Point, RunSpec
from gr_jax.study.runner import Stage

# Keys of a run config that say nothing about its result (where files go, how often to log).
_NOT_INPUTS = ("log_every_steps",)


def eval_subdir(split: str, decoder: str) -> str:
  """eval/<subdir>/ of one decoder's results: the paper's beam search keeps the plain split name."""
  return split if decoder == "beam" else f"{split}_{decoder}"


def mean_rule_subdir(split: str, decoder: str) -> str:
  """eval/<subdir>/ of a converged multi-task run's one-checkpoint results: every task at the best
  checkpoint by the MEAN of its tasks' validation metric (reported beside the per-task one)."""
  return f"{eval_subdir(split, decoder)}_mean_rule"


# Baselines whose result depends on the run seed. On a dataset shared by every seed they run once
# per study seed, each paired with the same seed of Gen_R+S; bm25 and the popularity baselines are
# deterministic and run once.
TRAINED_BASELINES = ("sasrec", "bert4rec", "biencoder")


def baselines_dir(plan: Plan, point: Point, data: DataSpec | None = None) -> str:
  """`baselines/<point>/<data>/`: the baselines of one dataset ("seed<k>" or "shared")."""
  data = data or point.datasets[0]
  return os.path.join(plan.workdir, "baselines", point.name, data.key)


def baseline_run_dir(plan: Plan, point: Point, data: DataSpec, name: str, seed: int) -> str:
  """The run directory of baseline `name` trained with `seed` on `data` (plan.py's layout):
  `<baselines_dir>/<name>/`, or `<baselines_dir>/<name>/seed<k>/` for a trained baseline of the
  shared dataset (one run per study seed). A per-seed dataset's baselines all ran with its seed, a
  deterministic baseline of the shared dataset once (`seed` is then not read)."""
  d = os.path.join(baselines_dir(plan, point, data), name)
  if is_shared(data) and name in TRAINED_BASELINES:
    return os.path.join(d, f"seed{int(seed)}")
  return d


def is_shared(data: DataSpec) -> bool:
  """The dataset is shared by every seed (real data), not seed k's own ("seed<k>")."""
  return data.key == "shared"


def dataset_seed(data: DataSpec) -> int:
  """The study seed of a per-seed dataset "seed<k>" (plan.py): its baselines train with it."""
  return int(data.key[len("seed") :])


def baseline_splits(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The splits every baseline is evaluated on: the study's (`eval.split`, where Gen_R+S is
  compared with them) and valid, where the best baseline of a task is chosen (never on test)."""
  split = str(config.eval.split)
  return (split,) if split == "valid" else (split, "valid")


def analysis_dir(plan: Plan, point: Point) -> str:
  return os.path.join(plan.workdir, "analysis", point.name)


# ----------------------------------------------------------------------------------- budgets


def joint_epoch_steps(config: ml_collections.ConfigDict, data_dir: str) -> int:
  """Optimizer steps of `train.num_epochs` epochs over BOTH tasks' training data (Gen_R+S)."""
  from gr_jax.training import data_adapter

  cfg = ml_collections.ConfigDict(config.to_dict())
  with cfg.ignore_type():
    cfg.data.tasks = ("search", "rec")
    cfg.data.processed_dir = data_dir
  data = data_adapter.open_dataset(cfg, data_dir)
  return int(cfg.train.num_epochs) * max(1, int(data.train_loader(cfg).steps_per_epoch))


def budget_config(plan: Plan, run: RunSpec, data_dir: str) -> ml_collections.ConfigDict:
  """The run's config with its training budget resolved (docs/study_design.md "Fair
  comparison"): epochs leaves `train.num_epochs` over the model's own data; matched_steps gives
  every model the joint model's step count; converged trains with model selection in the
  model's OWN epochs (`converged_schedule`). With `train.num_steps` > 0 the step budgets start
  from that count instead of the joint model's epochs."""
  r = plan.config.reproduce
  cfg = ml_collections.ConfigDict(run.config.to_dict())
  if run.budget == "epochs":
    return cfg
  if run.budget == "matched_steps":
    # A fixed train.num_steps (> 0) already gives every model the same steps; it is then the
    # reference instead of the joint model's epochs.
    with cfg.ignore_type():
      cfg.train.num_steps = int(cfg.train.num_steps) or joint_epoch_steps(cfg, data_dir)
    return cfg
  return converged_config(cfg, r)


def converged_config(
  cfg: ml_collections.ConfigDict, r: ml_collections.ConfigDict
) -> ml_collections.ConfigDict:
  """A run config under the converged budget, every quantity in the model's own epochs (its own
  training data's steps per epoch, which the trainer counts):

  - validation decodes `reproduce.converged_evals_per_epoch` times per own epoch
    (train.select_evals_per_epoch), the first within the first epoch, so the decodes bracket a
    best that comes early (a task-specific model's epochs are short);
  - a step cap of `reproduce.converged_max_factor` x train.num_epochs own epochs (x
    train.num_steps steps when that is set), a safety net that patience should reach first;
  - the warm-up of the model's epochs run (the same number of steps: its fraction is rescaled to
    the longer cap), so a converged run is the epochs run continued or cut short by validation
    (with the constant schedule; a decaying one decays over the cap), whatever the cap;
  - early stopping after `reproduce.patience` decodes without improvement, per task for a
    multi-task run (train.select_per_task: it stops when neither task improves, keeps each task's
    best checkpoint and its mean-rule one).
  """
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  t = cfg.train
  factor = float(r.converged_max_factor)
  with cfg.ignore_type():
    if int(t.num_steps) > 0:
      reference = int(t.num_steps)
      t.num_steps = max(1, int(math.ceil(factor * reference)))
      cap = int(t.num_steps)
    else:
      reference = int(t.num_epochs)
      t.num_epochs = max(1, int(math.ceil(factor * reference)))
      cap = int(t.num_epochs)
    t.warmup_fraction = float(t.warmup_fraction) * reference / cap
    t.select_metric = f"recall@{max(int(k) for k in cfg.eval.ks)}"
    t.select_evals_per_epoch = int(r.converged_evals_per_epoch)
    t.select_every_steps = 0
    t.select_per_task = len(cfg.data.tasks) > 1  # a task-specific model selects on its task
    t.patience = int(r.patience)
  return cfg


# ------------------------------------------------------------------------------------ stages


def _prepare(data: DataSpec) -> None:
  """Prepares a dataset; bi-encoder semantic IDs first get their item embeddings (the
  gr_jax.embed_items step) in a cache beside it, whose trained bi-encoder a rerun reuses. The
  file is a product of this stage, not an input: the stage's fingerprint and the runs' configs
  do not name it (the data hash does not either)."""
  from gr_jax.baselines import embed_items
  from gr_jax.data import item_embeddings
  from gr_jax.data.prepare import prepare_dataset

  config = data.config
  if item_embeddings.is_biencoder_kind(config):
    cache = embed_items.cache_dir(data.data_dir)
    out = os.path.join(cache, f"item_embeddings-{config.data.semantic.embedding}.npy")
    embed_items.embed_items(config, cache, out)
    config = ml_collections.ConfigDict(config.to_dict())
    with config.ignore_type():
      config.data.semantic.embedding_file = out
  prepare_dataset(config, data.data_dir)


def _raw_fingerprint(data: DataSpec) -> dict[str, str]:
  """{raw file: sha256} of a dataset's raw inputs (gr_jax.data.raw_inputs); the dataset's manifest,
  when there is one, spares re-reading large unchanged files and stands in for missing ones."""
  from gr_jax.data import raw_inputs

  manifest = None
  try:
    with open(os.path.join(data.data_dir, "manifest.json")) as f:
      manifest = json.load(f)
  except (OSError, ValueError):
    pass
  return raw_inputs.fingerprint(data.config, manifest)


def _train(plan: Plan, run: RunSpec, data_dir: str) -> None:
  from gr_jax.training.loop import train

  train(budget_config(plan, run, data_dir), run.run_dir)


def _evaluate(run: RunSpec, split: str, decoder: str) -> None:
  from gr_jax.evaluation.evaluator import PER_TASK, evaluate

  # The study's protocol, also for runs trained before the field existed.
  overrides = {"decode.method": decoder, "eval.exclude_seen": _exclude_seen(run.config)}
  if run.budget != "converged":  # the final step
    evaluate(run.run_dir, split=split, overrides=overrides, out_subdir=eval_subdir(split, decoder))
    return
  # Each task at its own best-validation checkpoint, as the task-specific models are selected:
  # Gen_R+S's search at its best search step, its rec at its best rec step.
  evaluate(
    run.run_dir,
    split=split,
    step=PER_TASK,
    overrides=overrides,
    out_subdir=eval_subdir(split, decoder),
  )
  if len(run.config.data.tasks) > 1:
    # The one-checkpoint rule (the mean over the tasks), reported beside the per-task one.
    evaluate(
      run.run_dir,
      split=split,
      step="best",
      overrides=overrides,
      out_subdir=mean_rule_subdir(split, decoder),
    )


def _exclude_seen(config) -> bool:
  return bool(config.eval.get("exclude_seen", False))


def _eval_inputs(config) -> dict:
  """The eval section as stage inputs; `exclude_seen` only when set, so the stages of a study
  made before the field existed keep their fingerprints."""
  d = config.eval.to_dict()
  if not d.get("exclude_seen", False):
    d.pop("exclude_seen", None)
  return d


def _baselines(plan: Plan, point: Point, data: DataSpec) -> None:
  """The baselines stage of one dataset: its popularity baselines and, of `reproduce.baselines`,
  every one for a per-seed dataset (trained with its seed k) and bm25 for the shared dataset (its
  trained baselines: one stage per seed, `_seed_baselines`). Each is evaluated on
  `baseline_splits`: the study's split and valid."""
  from gr_jax.baselines.popularity import write_popularity_runs
  from gr_jax.data.dataset import ProcessedDataset

  out = baselines_dir(plan, point, data)
  dataset = ProcessedDataset(data.data_dir)
  for split in baseline_splits(plan.config):
    write_popularity_runs(
      dataset,
      out,
      split,
      tuple(plan.config.eval.ks),
      mix_weight=float(plan.config.eval.pop_mix_weight),
      exclude_seen=_exclude_seen(plan.config),
    )
  names = list(plan.config.reproduce.get("baselines", ()))
  if is_shared(data):
    # Deterministic: one run stands for every seed (it runs with the dataset config's seed).
    _run_baselines(plan, point, data, [n for n in names if n not in TRAINED_BASELINES], None)
  else:
    _run_baselines(plan, point, data, names, dataset_seed(data))


def _seed_baselines(plan: Plan, point: Point, data: DataSpec, seed: int) -> None:
  """The trained baselines of the shared dataset with study seed `seed`, each in
  `<name>/seed<k>/`."""
  names = [n for n in plan.config.reproduce.get("baselines", ()) if n in TRAINED_BASELINES]
  _run_baselines(plan, point, data, names, seed)


def _run_baselines(plan: Plan, point: Point, data: DataSpec, names, seed: int | None) -> None:
  """Runs each baseline of `names` in its run directory (`baseline_run_dir`) with `seed` (None:
  the dataset config's own), evaluated on each of `baseline_splits`. A trained baseline trains on
  the first split's call; the later calls reload its finished checkpoint and only evaluate
  (gr_jax/baselines: "a finished run is reloaded, not trained on")."""
  from gr_jax.baselines.runner import run_baseline

  for name in names:
    cfg = ml_collections.ConfigDict(data.config.to_dict())
    if seed is not None:
      with cfg.ignore_type():
        cfg.seed = int(seed)
    out = baseline_run_dir(plan, point, data, name, seed)
    for split in baseline_splits(plan.config):
      run_baseline(name, cfg, data.data_dir, out, split)


def _reset_shared_baselines(bdir: str):
  """Removes the outputs of a shared dataset's deterministic baselines stage: everything under
  `bdir` except the trained baselines' `<name>/seed<k>/` runs (their own stages' outputs; the
  files a trained baseline's single run left there before it ran per seed go too)."""

  def remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      os.remove(path)

  def reset() -> None:
    if not os.path.isdir(bdir):
      return
    for entry in os.listdir(bdir):
      path = os.path.join(bdir, entry)
      if entry not in TRAINED_BASELINES or not os.path.isdir(path):
        remove(path)
        continue
      for sub in os.listdir(path):
        if not (sub.startswith("seed") and sub[len("seed") :].isdigit()):
          remove(os.path.join(path, sub))

  return reset


def _analyse(plan: Plan, point: Point) -> None:
  from gr_jax.evaluation.runs import write_json
  from gr_jax.study import analyses

  out = analysis_dir(plan, point)
  os.makedirs(out, exist_ok=True)
  result = analyses.analyse_point(plan, point, out)
  write_json(os.path.join(out, "analysis.json"), result)


def _report(plan: Plan) -> None:
  from gr_jax.study import report

  report.write_report(plan)


def _rmtree(path: str):
  return lambda: shutil.rmtree(path, ignore_errors=True)


def _rmtrees(paths: list[str]):
  return lambda: [shutil.rmtree(p, ignore_errors=True) for p in paths]


def _config_inputs(config: ml_collections.ConfigDict) -> dict:
  """A run config as stage inputs: without the study-level section (its budget knobs are passed
  on separately; sweep values and seeds lists do not change one run), logging periods and
  `eval.exclude_seen` (training never reads it: validation ranks every item, so switching the
  protocol re-evaluates the trained runs without retraining them), and the baselines section
  (a baseline knob reruns the baselines stages only)."""
  d = config.to_dict()
  d["data"] = _data_inputs(config)
  d.pop("reproduce", None)
  # A baseline's settings never change a generative run: the baselines stages fingerprint them.
  d.pop("baselines", None)
  d.get("eval", {}).pop("exclude_seen", None)
  for key in _NOT_INPUTS:
    d.get("train", {}).pop(key, None)
  return d


def _data_inputs(config: ml_collections.ConfigDict) -> dict:
  """A data section as stage inputs, without the simulator knobs its setting does not read (a
  study made before such a knob existed keeps its fingerprints)."""
  from gr_jax.data.prepare import drop_unread_sim_knobs

  return drop_unread_sim_knobs(config.data.to_dict())


def _reproduce_inputs(r: ml_collections.ConfigDict) -> dict:
  """The reproduce section as stage inputs, without the keys that change no file
  (`plan.STUDY_ONLY_KEYS`: a study's stages keep their fingerprints with or without them)."""
  d = r.to_dict()
  for key in STUDY_ONLY_KEYS:
    d.pop(key, None)
  return d


def _run_tag(run: RunSpec) -> str:
  return f"{run.point}__{run.budget}__{run.model}__seed{run.seed}"


def evaluate_stage_id(run: RunSpec, decoder: str) -> str:
  return f"evaluate__{_run_tag(run)}__{decoder}"


def _baseline_stages(
  plan: Plan, point: Point, data: DataSpec, tag: str, data_fingerprint: str
) -> list[Stage]:
  """The baselines stages of one dataset. A per-seed dataset "seed<k>": one stage, every baseline
  trained with seed k. The shared dataset: one stage of the deterministic ones (popularity, bm25:
  no seed in its inputs) and one per study seed of the trained ones (`<name>/seed<k>/`), so a
  changed seeds list runs only the new seeds' baselines. Every stage evaluates on
  `baseline_splits` (the study's split and valid, where the best baseline is chosen)."""
  r = plan.config.reproduce
  which = list(r.get("baselines", ()))
  sections = plan.config.get("baselines", {})
  sections = sections.to_dict() if hasattr(sections, "to_dict") else dict(sections)
  common = {
    "data": data_fingerprint,
    "eval": _eval_inputs(plan.config),
    "splits": list(baseline_splits(plan.config)),
  }
  bdir = baselines_dir(plan, point, data)
  if not is_shared(data):
    seed = dataset_seed(data)
    return [
      Stage(
        f"baselines__{tag}",
        "baselines",
        f"baselines ({point.name}, {data.key})",
        lambda p=point, d=data: _baselines(plan, p, d),
        inputs={**common, "baselines": sections, "which": which, "seed": seed},
        reset=_rmtree(bdir),
      )
    ]
  fixed = [n for n in which if n not in TRAINED_BASELINES]
  trained = [n for n in which if n in TRAINED_BASELINES]
  out = [
    Stage(
      f"baselines__{tag}",
      "baselines",
      f"baselines ({point.name}, {data.key})",
      lambda p=point, d=data: _baselines(plan, p, d),
      inputs={
        **common,
        "baselines": {n: sections[n] for n in fixed if n in sections},
        "which": fixed,
      },
      reset=_reset_shared_baselines(bdir),
    )
  ]
  if not trained:
    return out
  for seed in (int(s) for s in r.seeds):
    out.append(
      Stage(
        f"baselines__{tag}__seed{seed}",
        "baselines",
        f"trained baselines seed {seed} ({point.name}, {data.key})",
        lambda p=point, d=data, k=seed: _seed_baselines(plan, p, d, k),
        inputs={
          **common,
          "baselines": {n: sections[n] for n in trained if n in sections},
          "which": trained,
          "seed": seed,
        },
        # Every trained baseline's seed-k run: one no longer configured goes too.
        reset=_rmtrees([os.path.join(bdir, n, f"seed{seed}") for n in TRAINED_BASELINES]),
      )
    )
  return out


def converged_inputs(r: ml_collections.ConfigDict) -> dict:
  """The reproduce knobs a budget's training reads (the converged budget's only): changing one
  retrains those runs and no other."""
  return {
    k: r.to_dict()[k]
    for k in ("converged_max_factor", "converged_evals_per_epoch", "patience")
    if k in r
  }


def prepare_stage(stage_id: str, describe: str, data: DataSpec) -> Stage:
  """Prepares one dataset."""
  raw = _raw_fingerprint(data)
  return Stage(
    stage_id,
    "prepare",
    describe,
    lambda d=data: _prepare(d),
    # Changed raw files rerun prepare and everything downstream; simulated data has none
    # (its inputs, and so its stages' fingerprints, are as before raw files were covered).
    inputs={"data": _data_inputs(data.config), **({"raw": raw} if raw else {})},
    reset=_rmtree(data.data_dir),
  )


def train_stage(
  plan: Plan, run: RunSpec, data_dir: str, data_fp: str, converged: dict, stage_id: str, describe
) -> Stage:
  """Trains one run (`converged`: `converged_inputs`, read by the converged budget only)."""
  return Stage(
    stage_id,
    "train",
    describe,
    lambda rr=run, dd=data_dir: _train(plan, rr, dd),
    inputs={
      "config": _config_inputs(run.config),
      "budget": run.budget,
      "study": converged if run.budget == "converged" else {},
      "data": data_fp,
    },
    reset=_rmtree(run.run_dir),
  )


def evaluate_stage(
  run: RunSpec, split: str, decoder: str, train_fp: str, stage_id: str, describe: str
) -> Stage:
  """Evaluates one trained run on `split` with `decoder`."""
  outs = [os.path.join(run.run_dir, "eval", eval_subdir(split, decoder))]
  if run.budget == "converged" and len(run.config.data.tasks) > 1:
    outs.append(os.path.join(run.run_dir, "eval", mean_rule_subdir(split, decoder)))
  return Stage(
    stage_id,
    "evaluate",
    describe,
    lambda rr=run, dec=decoder: _evaluate(rr, split, dec),
    inputs={
      "train": train_fp,
      "decode": run.config.decode.to_dict(),
      "decoder": decoder,
      "eval": _eval_inputs(run.config),
      # Which checkpoints: the final one, or each task's best-validation one (and the
      # mean rule's beside it).
      "selection": "per_task" if run.budget == "converged" else "final",
    },
    reset=_rmtrees(outs),
  )


def stages_for(plan: Plan) -> list[Stage]:
  """All stages, in an order where every stage's inputs exist when it runs."""
  split = plan.config.eval.split
  r = plan.config.reproduce
  decoders = tuple(r.get("decoders", ("beam",)))
  converged = converged_inputs(r)
  stages: list[Stage] = []
  for point in plan.points:
    data_fp, point_fps = {}, []
    for data in point.datasets:
      tag = f"{point.name}__{data.key}"
      prep = prepare_stage(f"prepare__{tag}", f"prepare data ({point.name}, {data.key})", data)
      data_fp[data.key] = prep.fingerprint
      bases = _baseline_stages(plan, point, data, tag, prep.fingerprint)
      stages += [prep, *bases]
      point_fps += [prep.fingerprint, *(b.fingerprint for b in bases)]
    for run in point.runs:
      train = train_stage(
        plan,
        run,
        point.dataset(run.data).data_dir,
        data_fp[run.data],
        converged,
        f"train__{_run_tag(run)}",
        f"train {run.model} seed {run.seed}, {run.budget} ({point.name})",
      )
      stages.append(train)
      for decoder in decoders:
        ev = evaluate_stage(
          run,
          split,
          decoder,
          train.fingerprint,
          evaluate_stage_id(run, decoder),
          f"evaluate {run.model} seed {run.seed}, {run.budget}, {decoder} on {split} "
          f"({point.name})",
        )
        stages.append(ev)
        point_fps.append(ev.fingerprint)
    stages.append(
      Stage(
        f"analyse__{point.name}",
        "analyse",
        f"statistics and analyses ({point.name})",
        lambda p=point: _analyse(plan, p),
        inputs={"stages": point_fps, "reproduce": _reproduce_inputs(r)},
      )
    )
  # The report prints the tuning grid when the study has a tuning.json, its own or the recorded
  # one (only then an input: a study without tuning keeps its report's fingerprint).
  tuning = tune.fingerprint(plan.config, plan.workdir)
  stages.append(
    Stage(
      "report",
      "report",
      "report",
      lambda: _report(plan),
      inputs={
        "stages": [s.fingerprint for s in stages],
        "reproduce": _reproduce_inputs(r),
        **({"tuning": tuning} if tuning else {}),
      },
    )
  )
  for s in stages:
    s.id = safe_stage_id(s.id)
  return stages


def safe_stage_id(stage_id: str) -> str:
  """Stage ids are file names: keep them safe."""
  return "".join(ch if ch.isalnum() or ch in "._-=" else "_" for ch in stage_id)
