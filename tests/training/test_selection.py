"""Model selection on validation (the study's `converged` budget): validation decodes, early
stopping, the best checkpoint, and the rule that nothing reads the test split before selection;
the decode schedule in each model's own epochs, per-task selection of the joint model, and the
`capped` record of a run that the step cap ended."""

import json
import os
import types

import pytest

import tiny_config
from gr_jax.evaluation import evaluator
from gr_jax.study import plan as plan_lib
from gr_jax.study import stages
from gr_jax import checkpointing
from gr_jax.training import data_adapter
from gr_jax.training import loop
from gr_jax.training.early_stopping import EarlyStopping
from gr_jax.training import state as state_lib


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _selection_config(tiny_dataset, **overrides):
  fields = dict(
    train__num_steps=60,
    train__select_metric="recall@8",
    train__select_every_steps=6,
    train__patience=2,
    train__learning_rate=0.02,
    decode__num_beams=8,
    decode__num_beam_groups=4,
    decode__num_return_sequences=8,
    eval__ks=(1, 8),
    checkpoint__every_steps=1000,
  )
  fields.update(overrides)
  return tiny_config.make(tiny_dataset, **fields)


@pytest.fixture(scope="module")
def selected_run(tiny_dataset, tmp_path_factory):
  """A run with model selection, recording every split the evaluator's loader reads meanwhile."""
  reads = []
  original = evaluator.load_split

  def spy(data_dir, task, split, *args):
    reads.append(split)
    return original(data_dir, task, split, *args)

  evaluator.load_split = spy
  try:
    workdir = str(tmp_path_factory.mktemp("selected"))
    summary = loop.train(_selection_config(tiny_dataset), workdir)
  finally:
    evaluator.load_split = original
  return workdir, summary, reads


@pytest.mark.slow
def test_selection_decodes_only_the_valid_split(selected_run):
  _, _, reads = selected_run
  assert reads and set(reads) == {"valid"}


def test_validation_decodes_logged_and_early_stopping(selected_run):
  workdir, summary, _ = selected_run
  recs = [r for r in _records(workdir) if "val/recall@8" in r]
  assert [r["step"] for r in recs][:2] == [6, 12]
  for r in recs:
    assert {"val/search/recall@8", "val/rec/recall@8", "val/evals_since_best"} <= set(r)
    # The selection metric is the mean over the run's tasks.
    assert r["val/recall@8"] == pytest.approx(
      (r["val/search/recall@8"] + r["val/rec/recall@8"]) / 2
    )
  values = [r["val/recall@8"] for r in recs]
  best_i = max(range(len(values)), key=lambda i: (values[i], -i))  # first of the best
  if summary["stopped_early"]:
    # Stopped after `patience` decodes without improvement, before the step cap.
    assert len(values) - 1 - best_i == 2 and summary["step"] < 60
  else:
    assert summary["step"] == 60
  assert summary["best_val_selected"] == pytest.approx(values[best_i])
  # The best checkpoint is the best validation decode, kept by Orbax's policy.
  assert checkpointing.best_step(workdir) == recs[best_i]["step"]


def test_rerun_of_a_stopped_run_does_not_train_on(selected_run, tiny_dataset):
  workdir, summary, _ = selected_run
  before = _records(workdir)
  again = loop.train(_selection_config(tiny_dataset), workdir)
  assert again["step"] == summary["step"]
  assert _records(workdir) == before  # nothing trained, nothing logged


@pytest.mark.slow
def test_evaluate_best_uses_the_selected_checkpoint_and_says_so(selected_run, tmp_path):
  workdir, _, _ = selected_run
  best = checkpointing.best_step(workdir)
  metrics = evaluator.evaluate(workdir, split="test", step="best")
  info = metrics["info"]
  assert info["step"] == best
  assert info["selected_by"] == {
    "split": "valid",
    "metric": "val/recall@8",
    "mode": "max",
    "step": best,
  }


def test_early_stopping_logic():
  sel = EarlyStopping(patience=2)
  for step, value in [(1, 0.1), (2, 0.3), (3, 0.3), (4, 0.2)]:
    sel.update(step, value)
  assert (sel.best, sel.best_step, sel.since_best, sel.converged) == (0.3, 2, 2, True)
  never = EarlyStopping(patience=0)
  for step in range(10):
    never.update(step, 0.0)
  assert not never.converged


# ----------------------------------------------------------- selection in each model's own units


@pytest.mark.parametrize("kind", ["search", "rec", "joint"])
def test_converged_schedule_is_in_each_models_own_epochs(tiny_dataset, tmp_path, kind):
  """The study's converged budget on the tiny world: every model kind is decoded on validation at
  least `converged_evals_per_epoch` times per epoch of ITS OWN training data, the first decode
  within its first epoch (so an early best is bracketed), its cap is in its own epochs, and its
  warm-up is its epochs run's."""
  config = tiny_config.make(tiny_dataset, f"tasks={kind}", train__num_steps=0, train__num_epochs=4)
  config.reproduce.converged_max_factor = 2.5
  config.reproduce.converged_evals_per_epoch = 2
  config.reproduce.patience = 3
  plan = plan_lib.Plan(workdir=str(tmp_path), config=config, points=())
  run = plan_lib.RunSpec(
    point="default",
    model=kind,
    seed=0,
    run_dir=str(tmp_path / kind),
    config=config,
    budget="converged",
  )
  resolved = stages.budget_config(plan, run, tiny_dataset)
  data = data_adapter.open_dataset(resolved, tiny_dataset)
  own = int(data.train_loader(resolved).steps_per_epoch)  # search 3, rec 3, joint 6
  decodes = [s for s in range(1, 10 * own + 1) if loop.is_selection_step(resolved.train, own, s)]
  assert decodes[0] < own  # the first decode before the model's first own epoch ends
  per_epoch = [sum(1 for s in decodes if e * own < s <= (e + 1) * own) for e in range(10)]
  assert per_epoch == [2] * 10  # as many per own epoch as configured
  # The cap: 2.5 x 4 epochs of the model's own data (10 own epochs), not the joint model's steps.
  assert (resolved.train.num_steps, resolved.train.num_epochs) == (0, 10)
  # The epochs run's warm-up (and, constant schedule, its whole learning-rate curve).
  epochs_lr = state_lib.make_schedule(config, 4 * own)
  converged_lr = state_lib.make_schedule(resolved, 10 * own)
  for step in range(4 * own):
    assert float(converged_lr(step)) == pytest.approx(float(epochs_lr(step)))
  t = resolved.train
  assert (t.select_metric, t.patience, t.select_per_task) == ("recall@30", 3, kind == "joint")


def test_per_task_selection_logic(tmp_path):
  """Gen_R+S selected per task: each task's best is tracked on its own, the mean rule's beside
  them, and the run stops only when NEITHER task has improved for `patience` decodes."""
  sel = loop._Selections("recall@8", ("search", "rec"), patience=2)  # pylint: disable=protected-access
  decodes = [
    (3, 0.1, 0.2),
    (6, 0.4, 0.2),  # search improves; rec ties: no improvement
    (9, 0.3, 0.3),  # rec improves
    (12, 0.4, 0.25),  # neither task improves (search ties), the mean does (0.325)
    (15, 0.2, 0.1),  # neither: search 3 decodes without improvement, rec 2
  ]
  improved, stopped = [], []
  lines = []
  for step, s, r in decodes:
    values = {"search/recall@8": s, "rec/recall@8": r, "recall@8": (s + r) / 2}
    lines.append({"step": step, **{f"val/{k}": v for k, v in values.items()}})
    improved.append(sel.update(step, values))
    stopped.append(sel.converged)
  assert improved == [True, True, True, True, False]
  assert stopped == [False, False, False, False, True]  # at 12 rec's patience had not run out
  assert (sel.best_step("search/recall@8"), sel.best("search/recall@8")) == (6, 0.4)
  assert (sel.best_step("rec/recall@8"), sel.best("rec/recall@8")) == (9, 0.3)
  assert sel.best_step("recall@8") == 12 and sel.best("recall@8") == pytest.approx(0.325)
  assert sel.since_best_record() == {
    "val/evals_since_best": 1,
    "val/search/evals_since_best": 3,
    "val/rec/evals_since_best": 2,
  }
  # The mean rule alone (a run not selected per task) would not have stopped at 15.
  mean_only = loop._Selections("recall@8", (), patience=2)  # pylint: disable=protected-access
  for line in lines:
    mean_only.update(line["step"], {"recall@8": line["val/recall@8"]})
  assert not mean_only.converged
  # A resumed run replays metrics.jsonl up to its checkpoint and stops where this one did.
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps(line) + "\n" for line in lines))
  replayed = loop._Selections("recall@8", ("search", "rec"), patience=2)  # pylint: disable=protected-access
  replayed.replay(str(path), 12)
  assert not replayed.converged and replayed.best_step("rec/recall@8") == 9
  replayed.replay(str(path), 0)  # nothing replayed for a fresh run
  replayed = loop._Selections("recall@8", ("search", "rec"), patience=2)  # pylint: disable=protected-access
  replayed.replay(str(path), 15)
  assert replayed.converged and replayed.describe() == sel.describe()


def _per_task_config(tiny_dataset, **overrides):
  """Gen_R+S under the converged budget's selection: per task, decoded twice per own epoch."""
  fields = dict(
    train__num_steps=0,
    train__num_epochs=6,  # 36 steps (6 per epoch of the joint data)
    train__select_evals_per_epoch=2,
    train__select_per_task=True,
    train__select_max_queries=20,
  )
  fields.update(overrides)
  return _selection_config(tiny_dataset, **fields)


@pytest.fixture(scope="module")
def per_task_run(tiny_dataset, tmp_path_factory):
  """A joint run selected per task with a patience it never reaches: it ends at the step cap."""
  workdir = str(tmp_path_factory.mktemp("per_task"))
  summary = loop.train(_per_task_config(tiny_dataset, train__patience=100), workdir)
  return workdir, summary


def test_per_task_run_tracks_and_keeps_each_tasks_best(per_task_run):
  workdir, summary = per_task_run
  recs = [r for r in _records(workdir) if "val/recall@8" in r]
  steps = [r["step"] for r in recs]
  assert steps == list(range(3, 37, 3))  # twice per epoch of its own data (6 steps)
  best = {}
  for key, task in (("recall@8", None), ("search/recall@8", "search"), ("rec/recall@8", "rec")):
    values = [r[f"val/{key}"] for r in recs]
    best_i = max(range(len(values)), key=lambda i: (values[i], -i))  # first of the best
    best[task] = steps[best_i]
    # The checkpoint kept for each task is its first best validation decode.
    assert checkpointing.best_step(workdir, task=task) == steps[best_i], key
  assert summary["best_steps_per_task"] == {"search": best["search"], "rec": best["rec"]}
  assert summary["best_step"] == best[None]
  # Retention keeps all three best steps beside the latest one.
  assert set(best.values()) | {36} <= set(checkpointing.all_steps(workdir))
  for r in recs:
    assert {"val/search/evals_since_best", "val/rec/evals_since_best"} <= set(r)


def test_joint_run_is_evaluated_at_each_tasks_best(per_task_run):
  workdir, summary = per_task_run
  best = summary["best_steps_per_task"]
  per_task = evaluator.evaluate(workdir, split="test", step="best_per_task", out_subdir="per_task")
  info = per_task["info"]
  assert info["steps"] == best
  assert info["selected_by"] == {
    "split": "valid",
    "per_task": {
      t: {"metric": f"val/{t}/recall@8", "mode": "max", "step": best[t]} for t in ("search", "rec")
    },
  }
  # Each task's numbers are those of its own best checkpoint.
  for task in ("search", "rec"):
    alone = evaluator.evaluate(workdir, split="test", step=f"best_{task}", out_subdir=task)
    assert alone["info"]["step"] == best[task]
    assert alone[task] == per_task[task]


def test_capped_records_how_a_run_ended(per_task_run, tiny_dataset, tmp_path):
  workdir, summary = per_task_run
  # Patience never ran out: the step cap ended the run.
  assert summary["capped"] is True and not summary["stopped_early"] and summary["step"] == 36
  assert _records(workdir)[-1]["capped"] is True
  # A run whose validation never improves (no learning) stops after `patience` decodes.
  flat = loop.train(
    _per_task_config(tiny_dataset, train__patience=2, train__learning_rate=0.0), str(tmp_path)
  )
  assert flat["capped"] is False and flat["stopped_early"] and flat["step"] == 9
  last = _records(str(tmp_path))[-1]
  assert last["step"] == 9 and last["capped"] is False
  assert last["val/search/evals_since_best"] == last["val/rec/evals_since_best"] == 2


def test_a_run_without_per_task_metrics_evaluates_as_before(selected_run):
  """A run selected on the mean only (as every run before per-task selection): best_per_task
  falls back to its one best checkpoint and says so; best_<task> has nothing to rank."""
  workdir, _, _ = selected_run
  best = checkpointing.best_step(workdir)
  info = evaluator.evaluate(workdir, split="test", step="best_per_task", out_subdir="fallback")[
    "info"
  ]
  assert info["step"] == best and info["steps"] == {"search": best, "rec": best}
  assert info["selected_by"] == {
    "split": "valid",
    "metric": "val/recall@8",
    "mode": "max",
    "step": best,
  }
  with pytest.raises(evaluator.EvaluationError, match="val/search/recall@8"):
    evaluator.evaluate(workdir, split="test", step="best_search", out_subdir="none")


def test_each_tasks_selection_metric_uses_the_same_valid_queries_in_every_model(
  tiny_dataset, monkeypatch
):
  """train.select_max_queries keeps the first N valid queries of each task: Gen_R+S's per-task
  selection metric rests on exactly the queries of the task-specific model's."""
  decoded = []

  def spy(decode_fn, encoder_inputs, query_ids, catalog, batch_size, task="", **kw):
    decoded.append((kind, task, list(query_ids)))
    return {q: {} for q in query_ids}  # nothing retrieved

  monkeypatch.setattr(evaluator, "decode_queries", spy)
  model = types.SimpleNamespace(config=types.SimpleNamespace(eos_token_id=1, pad_token_id=0))
  for kind in ("search", "rec", "joint"):
    config = _selection_config(tiny_dataset, train__select_max_queries=7)
    config.data.tasks = plan_lib.MODEL_TASKS[kind]
    evaluator.validation_decoder(config, tiny_dataset, max_queries=7)(model)
  queries = {(kind, task): ids for kind, task, ids in decoded}
  for task in ("search", "rec"):
    assert len(queries[(task, task)]) == 7
    assert queries[("joint", task)] == queries[(task, task)]


def _checksums(workdir, step):
  with open(
    os.path.join(checkpointing.checkpoint_dir(workdir), str(step), "checksums", "metadata")
  ) as f:
    return json.load(f)


def test_new_bests_held_on_the_host_leave_what_immediate_saves_leave(
  per_task_run, tiny_dataset, tmp_path, monkeypatch
):
  """New-best checkpoints are written only when a save must happen (loop._PendingBests): the
  same steps are on disk, with the same arrays, as when every new best is saved at once, from
  fewer Orbax saves."""
  held_dir, _ = per_task_run
  saves = []
  original = checkpointing.Checkpointer.save

  def counting(self, step, *args, **kwargs):
    saves.append(int(step))
    return original(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpointing.Checkpointer, "save", counting)
  monkeypatch.setattr(loop._PendingBests, "MAX_BYTES", -1)  # pylint: disable=protected-access
  at_once = str(tmp_path / "at_once")
  loop.train(_per_task_config(tiny_dataset, train__patience=100), at_once)
  immediate = list(saves)
  steps = checkpointing.all_steps(held_dir)
  assert steps == checkpointing.all_steps(at_once)
  for step in steps:
    assert _checksums(held_dir, step) == _checksums(at_once, step), step
  timing = ("examples_per_s", "mfu")
  assert [{k: v for k, v in r.items() if k not in timing} for r in _records(held_dir)] == [
    {k: v for k, v in r.items() if k not in timing} for r in _records(at_once)
  ]
  # Held: each best that survived is written once, in step order, before the final save.
  saves.clear()
  monkeypatch.setattr(loop._PendingBests, "MAX_BYTES", 256 << 20)  # pylint: disable=protected-access
  loop.train(_per_task_config(tiny_dataset, train__patience=100), str(tmp_path / "held"))
  assert saves == sorted(saves) and len(saves) < len(immediate)
  assert set(saves) == set(steps)
