"""`reproduce` prints its estimated wall time before the first stage (`reproduce.estimate_time`),
from a train step timed on this machine; the estimate changes no file and no stage fingerprint."""

import os
import re

import pytest

from gr_jax.study import build_plan, estimate, run_plan, runner
from gr_jax.study import stages as stages_lib
from gr_jax.study.plan import MODEL_TASKS
from tests.study.test_end_to_end import tiny_study
from tests.study.test_plan import load_config


def _tiny_plan(tmp_path, **reproduce):
  config = tiny_study(load_config("quickstart", "seeds=1"))
  config.reproduce.update(reproduce)
  return build_plan(config, str(tmp_path / "study"))


@pytest.mark.slow
def test_reproduce_prints_a_measured_estimate_before_any_stage(tmp_path, monkeypatch):
  plan = _tiny_plan(tmp_path)
  assert plan.config.reproduce.estimate_time  # on by default
  ran = []
  monkeypatch.setattr(runner, "run_stages", lambda stages, workdir, printer: ran.append(stages))
  lines = []
  run_plan(plan, printer=lines.append)
  assert len(lines) == 1 and len(ran) == 1  # printed before the stages were handed on
  m = re.match(r"\[plan\] estimated wall time (\d+)m(\d\d)s for (\d+) stage\(s\): train ", lines[0])
  assert m, lines[0]
  total = 60 * int(m.group(1)) + int(m.group(2))
  assert int(m.group(3)) == len(ran[0])
  assert re.search(r"6 run\(s\), \d+ steps x [\d.]+ s/step measured", lines[0]), lines[0]
  # Nothing was written: no dataset, run, marker or report.
  assert not os.path.exists(plan.workdir) or not os.listdir(plan.workdir)

  est = estimate.estimate(plan, ran[0])
  # The steps follow the budgets from the simulated data's training examples (before prepare).
  counts = estimate.dataset_counts(plan.points[0].datasets[0])
  assert counts["search"] > 0 and counts["rec"] > 0
  batch = int(plan.config.train.batch_size)
  epochs = int(plan.config.train.num_epochs)
  own = {k: sum(counts[t] for t in ts) // batch * epochs for k, ts in MODEL_TASKS.items()}
  # epochs: each model's own data; matched_steps: the joint model's steps for all three.
  assert est["train_steps"] == sum(own.values()) + 3 * own["joint"]
  # Plausible for seconds-per-run tiny models: a step well under a second, the whole study (6 runs,
  # 12 evaluations, baselines, analyses) between half a minute and an hour.
  assert 0 < est["step_s"] < 1.0 and est["compile_s"] > 0
  assert 30 <= total <= 3600 and abs(est["total_s"] - total) < 1 + 0.2 * total


def test_estimate_is_skippable_and_changes_no_fingerprint_or_run_config(tmp_path, monkeypatch):
  on = _tiny_plan(tmp_path)
  off = _tiny_plan(tmp_path, estimate_time=False)

  def boom(*a, **k):
    raise AssertionError("measured although reproduce.estimate_time=False")

  monkeypatch.setattr(estimate, "measure_train_step", boom)
  monkeypatch.setattr(runner, "run_stages", lambda stages, workdir, printer: None)
  lines = []
  run_plan(off, printer=lines.append)
  assert lines == []
  # The flag is no input of any stage and stays out of the runs' configs (config.json).
  fps = lambda plan: [(s.id, s.fingerprint) for s in stages_lib.stages_for(plan)]
  assert fps(on) == fps(off)
  for plan in (on, off):
    assert all("estimate_time" not in r.config.reproduce for r in plan.runs)
    assert all("estimate_time" not in p.config.reproduce for p in plan.points)


def test_a_failed_estimate_is_a_warning_not_the_end_of_the_study(tmp_path, monkeypatch):
  plan = _tiny_plan(tmp_path)

  def fail(*a, **k):
    raise ValueError("no device")

  monkeypatch.setattr(estimate, "measure_train_step", fail)
  ran = []
  monkeypatch.setattr(runner, "run_stages", lambda stages, workdir, printer: ran.append(1))
  lines = []
  run_plan(plan, printer=lines.append)
  assert lines == [] and ran == [1]
