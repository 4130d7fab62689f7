"""The converged budget in each model's own units (no training, seconds): the evaluate stage takes
each task's best-validation checkpoint and, for Gen_R+S, the mean rule's beside it; the estimate
follows the own-epoch schedule; the converged knobs retrain only converged runs; the report says
how each result was selected and counts the runs that hit the step cap."""

import json
import math
import os

import numpy as np

from gr_jax.analysis import stats
from gr_jax.evaluation import runs
from gr_jax.study import estimate, report
from gr_jax.study import plan as plan_lib
from gr_jax.study import stages as stage_lib
from tests.study import fabricate
from tests.study.test_plan import load_config


def _plan(tmp_path, config=None, **reproduce):
  config = config or load_config("quickstart", "seeds=1")
  config.reproduce.update(reproduce)
  return plan_lib.build_plan(config, str(tmp_path / "study"))


def test_converged_runs_are_evaluated_per_task_with_the_mean_rule_beside(tmp_path, monkeypatch):
  from gr_jax.evaluation import evaluator

  plan = _plan(tmp_path)
  calls = []
  monkeypatch.setattr(
    evaluator,
    "evaluate",
    lambda run_dir, **kw: calls.append((run_dir, kw.get("step"), kw["out_subdir"])),
  )
  for run in plan.runs:
    calls.clear()
    stage_lib._evaluate(run, "test", "topk_exact")  # pylint: disable=protected-access
    if run.budget == "epochs":
      expected = [(run.run_dir, None, "test_topk_exact")]
    else:  # each task at its own best validation step; Gen_R+S's mean rule beside it
      expected = [(run.run_dir, "best_per_task", "test_topk_exact")]
      if run.model == "joint":
        expected.append((run.run_dir, "best", "test_topk_exact_mean_rule"))
    assert calls == expected, run.run_dir
  # Rerunning a converged joint evaluation resets both of its directories.
  stage = next(
    s
    for s in stage_lib.stages_for(plan)
    if s.kind == "evaluate" and "__converged__joint__" in s.id and s.id.endswith("__beam")
  )
  joint = next(r for r in plan.runs if r.budget == "converged" and r.model == "joint")
  dirs = [os.path.join(joint.run_dir, "eval", sub) for sub in ("test", "test_mean_rule")]
  for d in dirs:
    os.makedirs(d)
  stage.reset()
  assert not any(os.path.exists(d) for d in dirs)


def test_estimate_counts_converged_runs_in_their_own_epochs(tmp_path):
  plan = _plan(tmp_path, budgets=("converged",))
  r = plan.config.reproduce
  # The quickstart's batch of 64: own steps per epoch search 3, rec 8, joint 12.
  counts = {"search": 240, "rec": 540, "num_items": 80, "text_vocab": 512}
  own = {"search": 3, "rec": 8, "joint": 12}
  cap_epochs = math.ceil(float(r.converged_max_factor) * int(plan.config.train.num_epochs))
  for run in plan.runs:
    assert estimate.run_steps(plan, run, counts) == cap_epochs * own[run.model], run.model
    decodes = estimate.validation_decodes(plan, run, counts)
    assert decodes == cap_epochs * int(r.converged_evals_per_epoch), run.model


def test_converged_knobs_retrain_only_converged_runs(tmp_path):
  before = _plan(tmp_path)
  after = _plan(tmp_path, patience=7, converged_evals_per_epoch=3, converged_max_factor=4.0)
  fingerprint = lambda plan: {s.id: s.fingerprint for s in stage_lib.stages_for(plan)}  # noqa: E731
  old, new = fingerprint(before), fingerprint(after)
  trains = [sid for sid in old if sid.startswith("train__")]
  assert trains
  for sid in trains:
    assert (old[sid] != new[sid]) == ("__converged__" in sid), sid


# ------------------------------------------------------------------------------ the report


def _write_run(run, values, metric, *, capped, best_steps, mean_rule=None):
  """A fabricated converged run: test results (`values`: task -> per-query values) with the
  evaluator's selection record, config.json, metrics.jsonl ending with the trainer's `capped`,
  and for a joint run its mean-rule results (`mean_rule`: task -> per-query values)."""
  joint = len(values) > 1

  def write(sub, task_values, info):
    d = os.path.join(run.run_dir, "eval", sub)
    pq, summary = {}, {"info": {"decode_method": "beam", "split": "test", **info}}
    for task, vals in task_values.items():
      ids = [f"q{i}" for i in range(len(vals))]
      pq[task] = {metric: {q: float(v) for q, v in zip(ids, vals)}}
      summary[task] = {metric: float(np.mean(vals))}
      runs.write_qrels(os.path.join(d, f"{task}.qrels"), {q: {q: 1} for q in ids})
    runs.write_json(os.path.join(d, "metrics.json"), summary)
    runs.write_json(os.path.join(d, "per_query.json"), pq)

  if joint:
    selected = {
      "split": "valid",
      "per_task": {
        t: {"metric": f"val/{t}/{metric}", "mode": "max", "step": best_steps[t]} for t in values
      },
    }
  else:
    (task,) = values
    selected = {
      "split": "valid",
      "metric": f"val/{metric}",
      "mode": "max",
      "step": best_steps[task],
    }
  write("test", values, {"selected_by": selected, "steps": best_steps, "step": None})
  if mean_rule is not None:
    rule = {"split": "valid", "metric": f"val/{metric}", "mode": "max", "step": 30}
    write("test_mean_rule", mean_rule, {"selected_by": rule, "steps": {}, "step": 30})
  runs.write_json(
    os.path.join(run.run_dir, "config.json"),
    {"seed": run.seed, "train": {"select_metric": metric, "num_steps": 0}},
  )
  last = 90 if capped else 60
  lines = [
    {"step": s, "val/" + metric: 0.3, **{f"val/{t}/{metric}": 0.2 + s / 1000 for t in values}}
    for s in (30, last)
  ]
  lines[-1]["capped"] = capped
  with open(os.path.join(run.run_dir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(line) + "\n" for line in lines)
  return {"run_dir": run.run_dir, "steps": last, "final_loss": 1.0, "best_val_recall": 0.3}


def _converged_report(tmp_path, monkeypatch):
  plan, point, metric = fabricate.quickstart_plan(tmp_path, 3, "converged")
  rng = np.random.default_rng(0)
  groups, training, mean_rule_values = {}, {}, {}
  for run in point.runs:
    n = {"search": 40, "rec": 60}
    tasks = plan_lib.MODEL_TASKS[run.model]
    values = {t: rng.random(n[t]) for t in tasks}
    mean_rule = {t: rng.random(n[t]) for t in tasks} if run.model == "joint" else None
    if mean_rule:
      mean_rule_values[run.seed] = {t: float(np.mean(v)) for t, v in mean_rule.items()}
    capped = run.model == "rec" and run.seed in (0, 1)
    best_steps = {t: 30 + 3 * i for i, t in enumerate(tasks)}
    groups.setdefault(run.model, []).append(run.run_dir)
    training.setdefault(run.model, []).append(
      _write_run(run, values, metric, capped=capped, best_steps=best_steps, mean_rule=mean_rule)
    )
  headline = stats.compare_models(groups, task=["search", "rec"], metric=metric)
  fabricate.write_analysis(
    plan, point, metric, groups, headline, budget="converged", decode="beam", training=training
  )
  # The validation-curve plot reads the prepared datasets, which a fabricated study has not.
  monkeypatch.setattr(report, "validation_curves", lambda plan, point: None)
  md_path = report.write_report(plan)
  with open(os.path.join(plan.workdir, "report.json")) as f:
    rep = json.load(f)
  with open(md_path) as f:
    md = f.read()
  return rep, md, mean_rule_values


def test_report_says_how_each_result_was_selected_and_counts_capped_runs(tmp_path, monkeypatch):
  rep, md, mean_rule_values = _converged_report(tmp_path, monkeypatch)
  rows = {(r["model"], r["task"]): r for r in rep["results"] if not r.get("baseline")}
  assert set(rows) == {("search", "search"), ("rec", "rec"), ("joint", "search"), ("joint", "rec")}
  for (model, task), r in rows.items():
    # Every result at its own task's best validation checkpoint, Gen_R+S's included.
    assert r["selected_by"] == f"best valid recall@30 ({task})", (model, task)
    assert r["capped"] == ([True, True, False] if model == "rec" else [False] * 3)
    step = 33 if (model, task) == ("joint", "rec") else 30
    assert r["selected_steps"] == [step] * 3
  for task in ("search", "rec"):
    rule = rows[("joint", task)]["mean_rule"]
    assert rule["selected_by"] == "best valid recall@30 (mean of tasks)"
    assert rule["per_seed"] == [mean_rule_values[s][task] for s in range(3)]
    assert rule["selected_steps"] == [30] * 3
    assert "mean_rule" not in rows[(task, task)]
  assert "| converged | beam | search | Gen_R+S, mean rule |" in md
  assert "best val (search) (30, 30, 30)" in md and "60 (cap)" not in md and "90 (cap)" in md
  assert "Step cap (converged): 2 of 9 converged runs hit the step cap (Gen_R seeds 0, 1)" in md
  verdicts = {
    line.split(" (converged, beam): ")[0]: line
    for line in md.splitlines()
    if " (converged, beam): " in line
  }
  assert verdicts["- recommendation"].endswith(
    "; 2 of 6 converged runs hit the step cap (Gen_R seeds 0, 1)."
  )
  assert verdicts["- search"].endswith("; 0 of 6 converged runs hit the step cap.")


def test_capped_of_runs_trained_before_the_record(tmp_path):
  """A converged run without the trainer's `capped` record: capped when it reached its step cap
  (train.num_steps); a run without model selection has nothing to cap."""
  d = str(tmp_path)

  def write(select_metric, last_step):
    runs.write_json(
      os.path.join(d, "config.json"),
      {"train": {"select_metric": select_metric, "num_steps": 50}},
    )
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
      f.write(json.dumps({"step": last_step, "val/recall@30": 0.1}) + "\n")

  write("recall@30", 50)
  assert report.run_capped(d) is True
  write("recall@30", 40)
  assert report.run_capped(d) is False
  write("", 50)
  assert report.run_capped(d) is None
