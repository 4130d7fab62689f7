"""Per-model tuning on validation: a grid of settings per model kind, chosen by a fixed rule.

(docs/study_design.md "Tuning discipline"; the knobs: configs/base.py `reproduce.tune`.) Asked
for with `python -m gr_jax.reproduce ... --tune` (or `reproduce.tune.run=True`), the tuning stages
train every model kind of `reproduce.models` at every grid point with each tuning seed, evaluate
them on the VALID split only and write `<workdir>/tuning/tuning.json`. With `reproduce.tune.use`
the study's runs of each model kind take that kind's chosen values (plan.build_plan reads the
file); the report prints the whole grid whenever the file exists.

Layout under the study's workdir:

  tuning/data/<data>/                          the tuning seeds' datasets ("seed<k>" or "shared")
  tuning/runs/<grid point>/<model>/seed<k>/    a tuning run (evaluated on valid only)
  tuning/tuning.json                           grid, rule, every point's numbers, chosen values
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from typing import Any, Callable

import ml_collections

from gr_jax import config_check
from gr_jax.study import plan as plan_lib
from gr_jax.study import runner

TUNING_FILE = os.path.join("tuning", "tuning.json")
RULE = (
  "per model kind, the grid point with the highest mean validation {metric} over the tuning "
  "seeds of the model's own task (Gen_R+S: the mean of its two tasks); the points within "
  "{tolerance} of that best count as tied, and the first of them in grid order is chosen"
)


def tuning_path(workdir: str) -> str:
  return os.path.join(workdir, TUNING_FILE)


def recorded_path(config: ml_collections.ConfigDict) -> str:
  """reproduce.tune.recorded: a tuning.json written by an earlier run of this tuning ("" = none)."""
  return str(config.reproduce.get("tune", {}).get("recorded", "") or "")


def tuning_source(config: ml_collections.ConfigDict, workdir: str) -> str | None:
  """The tuning.json the study reads: the workdir's own (written by --tune) when it exists, else
  the config's recorded one (reproduce.tune.recorded), else None. A recorded path that does not
  exist is an error, never a silent fallback to the config's values."""
  own = tuning_path(workdir)
  if os.path.exists(own):
    return own
  recorded = recorded_path(config)
  if not recorded:
    return None
  if not os.path.isfile(recorded):
    raise FileNotFoundError(
      f"reproduce.tune.recorded = {recorded}: no such file (a tuning.json written by an earlier "
      f"`--tune` run); run the tuning in this workdir with --tune, or set "
      "--config.reproduce.tune.recorded=''"
    )
  return recorded


def metric(config: ml_collections.ConfigDict) -> str:
  return f"recall@{max(int(k) for k in config.eval.ks)}"


def settings(config: ml_collections.ConfigDict) -> dict:
  """The tuning's settings (JSON values), checked: the grid, the tuning seeds (never study
  seeds), the budget, the decoder, the tolerance and the metric."""
  config_check.validate_tune(config)  # ConfigError (a ValueError) naming the key
  t = config.reproduce.tune
  fields = [str(f) for f in t.grid_fields]
  values = [list(v) for v in t.grid_values]
  seeds = [int(s) for s in t.seeds]
  return json.loads(
    json.dumps(
      {
        "grid": {"fields": fields, "values": values},
        "seeds": seeds,
        "budget": str(t.budget),
        "decoder": str(t.decoder),
        "tolerance": float(t.tolerance),
        "metric": metric(config),
      }
    )
  )


def grid_points(s: dict) -> list[dict[str, Any]]:
  """Every combination of the grid's values, in grid order (the first field varies slowest)."""
  fields = s["grid"]["fields"]
  return [dict(zip(fields, combo)) for combo in itertools.product(*s["grid"]["values"])]


def point_label(values: dict[str, Any]) -> str:
  return plan_lib.point_name("tune", values)


def choose(scores: list[float | None], tolerance: float) -> int:
  """The rule: the index of the first score within `tolerance` of the best (None or NaN: a point
  without a number never wins)."""
  valid = [s for s in scores if s is not None and not math.isnan(s)]
  if not valid:
    raise ValueError("tuning: no grid point has a validation number")
  best = max(valid)
  return next(i for i, s in enumerate(scores) if s in valid and s >= best - tolerance - 1e-12)


def check_sweep(config: ml_collections.ConfigDict) -> None:
  """A sweep may not set a field that tuning sets too (which would win would be unclear)."""
  r = config.reproduce
  if not r.sweep:
    return
  swept = {f for v in r.sweep_values for f in plan_lib.sweep_fields(r.sweep, v)}
  both = sorted(swept & set(r.tune.grid_fields))
  if both:
    raise ValueError(
      f"reproduce.tune.use: the sweep sets {both}, which the tuning grid sets too; drop them "
      "from reproduce.tune.grid_fields or turn tune.use off"
    )


def read_tuning(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """tuning.json of the study (`tuning_source`: the workdir's, else the recorded one), checked
  against the config's tuning settings and models."""
  command = (
    f"python -m gr_jax.reproduce --config <this config> --workdir {workdir} --tune "
    "(or --tune_only to stop after tuning)"
  )
  path = tuning_source(config, workdir)
  if path is None:
    raise FileNotFoundError(
      f"reproduce.tune.use=True needs {tuning_path(workdir)}, which does not exist, and no "
      f"reproduce.tune.recorded file: run the tuning first: {command}"
    )
  with open(path) as f:
    tuning = json.load(f)
  want = settings(config)
  got = {k: tuning.get(k) for k in want}
  if got != want:
    diff = sorted(k for k in want if got[k] != want[k])
    raise ValueError(
      f"reproduce.tune.use=True: {path} was made with other tuning settings ({', '.join(diff)}: "
      f"{ {k: got[k] for k in diff} } in the file, { {k: want[k] for k in diff} } in the "
      f"config); rerun the tuning: {command}, or train every model kind with the config's own "
      "values: --config.reproduce.tune.use=False"
    )
  missing = [m for m in config.reproduce.models if m not in tuning.get("chosen", {})]
  if missing:
    raise ValueError(f"{path} chose no values for model kind(s) {missing}; rerun: {command}")
  return tuning


# ------------------------------------------------------------------------------------ stages


def tuning_runs(config: ml_collections.ConfigDict, workdir: str):
  """(settings, datasets, [(grid point values, RunSpec)]) of the tuning: every model kind of
  reproduce.models x grid point x tuning seed, on the experiment config (no sweep value)."""
  s = settings(config)
  root = os.path.join(workdir, "tuning")
  base = plan_lib.without_study_only_keys(config)
  per_seed = plan_lib.per_seed_data(config)
  datasets = plan_lib.data_configs(base, s["seeds"], per_seed, os.path.join(root, "data"))
  points = grid_points(s)
  names = [point_label(p) for p in points]
  twice = sorted({n for n in names if names.count(n) > 1})
  if twice:
    raise ValueError(f"reproduce.tune: several grid points named {twice} (one directory each)")
  runs = []
  for values, name in zip(points, names):
    for model in config.reproduce.models:
      for i, seed in enumerate(s["seeds"]):
        data = datasets[i] if per_seed else datasets[0]
        cfg = plan_lib.run_config(data, model, seed)
        for field, v in values.items():
          plan_lib.set_dotted(cfg, field, v, "reproduce.tune.grid_fields")
        run = plan_lib.RunSpec(
          point=name,
          model=model,
          seed=int(seed),
          run_dir=os.path.join(root, "runs", name, model, f"seed{seed}"),
          config=cfg,
          budget=s["budget"],
          data=data.key,
        )
        runs.append((values, run))
  return s, datasets, runs


def tune_stages(config: ml_collections.ConfigDict, workdir: str) -> list:
  """The tuning stages: prepare each tuning dataset, train and evaluate (on valid) each tuning
  run, then `tune_select` writes tuning.json. The same stage machinery as the study's (resumable,
  skipped when done, rerun when their inputs change)."""
  from gr_jax.study import stages as st  # pylint: disable=g-import-not-at-top

  s, datasets, runs = tuning_runs(config, workdir)
  plan = plan_lib.Plan(workdir=os.path.join(workdir, "tuning"), config=config, points=())
  r = config.reproduce
  converged = st.converged_inputs(r)
  out, data_fp, eval_fps = [], {}, []
  for data in datasets:
    prep = st.prepare_stage(f"tune_prepare__{data.key}", f"tuning: prepare data ({data.key})", data)
    data_fp[data.key] = prep.fingerprint
    out.append(prep)
  decoder = s["decoder"]
  for _, run in runs:
    data_dir = next(d.data_dir for d in datasets if d.key == run.data)
    tag = f"{run.point}__{run.model}__seed{run.seed}"
    train = st.train_stage(
      plan,
      run,
      data_dir,
      data_fp[run.data],
      converged,
      f"tune_train__{tag}",
      f"tuning: train {run.model} seed {run.seed}, {run.budget} ({run.point})",
    )
    ev = st.evaluate_stage(
      run,
      "valid",
      decoder,
      train.fingerprint,
      f"tune_evaluate__{tag}",
      f"tuning: evaluate {run.model} seed {run.seed}, {decoder} on valid ({run.point})",
    )
    out += [train, ev]
    eval_fps.append(ev.fingerprint)
  path = tuning_path(workdir)
  out.append(
    runner.Stage(
      "tune_select",
      "tune",
      "tuning: choose each model kind's values (tuning.json)",
      lambda: write_tuning(config, workdir),
      inputs={"evaluate": eval_fps, "settings": s, "models": list(r.models)},
      reset=lambda: os.path.exists(path) and os.remove(path),
    )
  )
  for stage in out:
    stage.id = st.safe_stage_id(stage.id)
  return out


def _valid_recall(run: plan_lib.RunSpec, decoder: str, key: str) -> dict[str, float]:
  """{task: validation metric} of one evaluated tuning run."""
  from gr_jax.study import stages as st  # pylint: disable=g-import-not-at-top

  path = os.path.join(run.run_dir, "eval", st.eval_subdir("valid", decoder), "metrics.json")
  with open(path) as f:
    metrics = json.load(f)
  return {task: float(metrics[task][key]) for task in run.config.data.tasks}


def tuning_result(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """tuning.json's content from the evaluated tuning runs (the rule applied per model kind)."""
  s, _, runs = tuning_runs(config, workdir)
  key = s["metric"]
  points = []
  for values in grid_points(s):
    name = point_label(values)
    rec = {"point": name, "values": values, "scores": {}, "per_seed": {}}
    for model in config.reproduce.models:
      mine = [r for v, r in runs if r.point == name and r.model == model]
      per_seed = [_valid_recall(r, s["decoder"], key) for r in mine]
      # Each seed's mean over the model's tasks, then the mean over seeds.
      means = [sum(d.values()) / len(d) for d in per_seed]
      rec["scores"][model] = sum(means) / len(means)
      rec["per_seed"][model] = {f"seed{r.seed}": d for r, d in zip(mine, per_seed)}
    points.append(rec)
  chosen, chosen_point = {}, {}
  for model in config.reproduce.models:
    i = choose([p["scores"][model] for p in points], s["tolerance"])
    chosen[model] = points[i]["values"]
    chosen_point[model] = points[i]["point"]
  return {
    **s,
    "rule": RULE.format(metric=key, tolerance=s["tolerance"]),
    "models": list(config.reproduce.models),
    "points": points,
    "chosen": chosen,
    "chosen_point": chosen_point,
    "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
  }


def write_tuning(config: ml_collections.ConfigDict, workdir: str) -> str:
  from gr_jax.evaluation.runs import write_json  # pylint: disable=g-import-not-at-top

  path = tuning_path(workdir)
  # The stage time travels with the file, so a copy used as reproduce.tune.recorded says it too.
  write_json(path, dict(tuning_result(config, workdir), stage_seconds=_seconds(config, workdir)))
  return path


def run_tuning(
  config: ml_collections.ConfigDict, workdir: str, printer: Callable[[str], None] = print
) -> str:
  """Runs (or resumes) the tuning stages; returns the path of tuning.json."""
  runner.run_stages(tune_stages(config, workdir), workdir, printer)
  return tuning_path(workdir)


# ------------------------------------------------------------------------------------ report


def fingerprint(config: ml_collections.ConfigDict, workdir: str) -> str | None:
  """A hash of the tuning.json the study reads (`tuning_source`; the report stage's input when
  there is one), else None."""
  path = tuning_source(config, workdir)
  if path is None:
    return None
  try:
    with open(path, "rb") as f:
      return hashlib.sha256(f.read()).hexdigest()[:16]
  except OSError:
    return None


def _seconds(config: ml_collections.ConfigDict, workdir: str) -> float:
  """Wall seconds of the tuning's finished stages (the runner's markers of `tune_stages`)."""
  markers = (runner.read_marker(workdir, s.id) for s in tune_stages(config, workdir))
  return sum(float(m.get("seconds", 0.0)) for m in markers if m is not None)


def report_section(config: ml_collections.ConfigDict, workdir: str) -> tuple[dict | None, list]:
  """(report.json "tuning", report.md lines) when the study has a tuning.json (`tuning_source`),
  else (None, [])."""
  path = tuning_source(config, workdir)
  if path is None:
    return None, []
  try:
    with open(path) as f:
      tuning = json.load(f)
  except (OSError, ValueError):
    return None, []
  used = bool(config.reproduce.get("tune", {}).get("use", False))
  own = path == tuning_path(workdir)
  # A recorded file carries its own stage time (the workdir that ran it is elsewhere).
  seconds = _seconds(config, workdir) if own else float(tuning.get("stage_seconds", 0.0))
  source = "workdir" if own else os.path.basename(path)
  tuning = dict(tuning, used=used, seconds=seconds, source=source)
  models = tuning["models"]
  label = plan_lib.MODEL_LABELS
  # A recorded tuning says where it came from and how to rerun it here.
  where = (
    ""
    if own
    else f"recorded in {os.path.basename(path)} (reproduce.tune.recorded; `--tune` reruns it in "
    "this workdir); "
  )
  md = [
    "## Tuning on validation",
    "",
    f"Run at {tuning['run_at']} (UTC; {where}its stages took {tuning['seconds'] / 60:.1f} "
    "minutes, not counted below), tuning "
    f"seeds {tuning['seeds']} (not study seeds), the "
    f"{tuning['budget']} budget, the {tuning['decoder']} decoder, valid split only. Rule: "
    f"{tuning['rule']}. "
    + (
      "The study's runs of each model kind use its chosen values (reproduce.tune.use)."
      if used
      else "The study does not use these values (reproduce.tune.use=False): its runs keep the "
      "config's."
    ),
    "",
    "| "
    + " | ".join(f.rsplit(".", 1)[-1] for f in tuning["grid"]["fields"])
    + " | "
    + " | ".join(f"{label.get(m, m)} valid {tuning['metric']}" for m in models)
    + " |",
    "|" + "---|" * (len(tuning["grid"]["fields"]) + len(models)),
  ]
  for p in tuning["points"]:
    cells = [str(p["values"][f]) for f in tuning["grid"]["fields"]]
    for m in models:
      mark = " (chosen)" if tuning["chosen_point"].get(m) == p["point"] else ""
      cells.append(f"{p['scores'][m]:.4f}{mark}")
    md.append("| " + " | ".join(cells) + " |")
  return tuning, md + [""]
