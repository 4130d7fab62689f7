"""Model selection on validation (the study's `converged` budget): validation decodes, early
stopping, the best checkpoint, and the rule that nothing reads the test split before selection."""

import json
import os

import pytest

import tiny_config
from gr_jax.evaluation import evaluator
from gr_jax.training import checkpointing
from gr_jax.training import loop


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _selection_config(tiny_dataset, **overrides):
  return tiny_config.make(
    tiny_dataset,
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
    **overrides,
  )


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
  sel = loop._Selection(patience=2)  # pylint: disable=protected-access
  for step, value in [(1, 0.1), (2, 0.3), (3, 0.3), (4, 0.2)]:
    sel.update(step, value)
  assert (sel.best, sel.best_step, sel.since_best, sel.converged) == (0.3, 2, 2, True)
  never = loop._Selection(patience=0)  # pylint: disable=protected-access
  for step in range(10):
    never.update(step, 0.0)
  assert not never.converged
