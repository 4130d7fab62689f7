"""Resumable stage runner: markers, skipping, a failing stage reruns, progress with ETA."""

import os

import jax
import jax.numpy as jnp
import pytest

from gr_jax.study import runner


def make_stages(log, fail_on=None):
  def fn(name):
    def run():
      if name == fail_on:
        raise RuntimeError(f"stage {name} failed")
      log.append(name)

    return run

  return [
    runner.Stage(f"s{i}", "train" if i % 2 else "evaluate", f"stage {i}", fn(f"s{i}"))
    for i in range(4)
  ]


def test_second_invocation_skips_finished_stages(tmp_path):
  log, lines = [], []
  out = runner.run_stages(make_stages(log), str(tmp_path), lines.append)
  assert out == {"ran": 4, "skipped": 0}
  assert log == ["s0", "s1", "s2", "s3"]
  assert all(os.path.exists(tmp_path / "stages" / f"s{i}.json") for i in range(4))
  log.clear()
  out = runner.run_stages(make_stages(log), str(tmp_path), lines.append)
  assert out == {"ran": 0, "skipped": 4}
  assert log == []


def test_interrupted_stage_runs_again(tmp_path):
  log = []
  with pytest.raises(RuntimeError, match="s2"):
    runner.run_stages(make_stages(log, fail_on="s2"), str(tmp_path), lambda s: None)
  assert log == ["s0", "s1"]
  assert not os.path.exists(tmp_path / "stages" / "s2.json")
  log.clear()
  runner.run_stages(make_stages(log), str(tmp_path), lambda s: None)
  assert log == ["s2", "s3"]


def test_progress_lines_count_stages_and_give_an_eta(tmp_path):
  lines = []
  runner.run_stages(make_stages([]), str(tmp_path), lines.append)
  assert lines[0].startswith("[stage 1/4]")
  assert "ETA" not in lines[0]  # nothing measured yet
  assert "ETA" in lines[2]
  assert lines[-1].startswith("[plan] 4 stage(s) run")


def test_changed_inputs_rerun_the_stage_and_reset_its_outputs(tmp_path):
  """A stage is skipped only when the fingerprint of its inputs is unchanged (a stale marker of
  another config reruns it, after its reset removed the old outputs), and the line says so."""
  log, resets = [], []

  def stages(value):
    return [
      runner.Stage(
        "a",
        "train",
        "stage a",
        lambda: log.append("a"),
        inputs={"lr": value},
        reset=lambda: resets.append("a"),
      ),
      runner.Stage("b", "evaluate", "stage b", lambda: log.append("b"), inputs={"k": 1}),
    ]

  runner.run_stages(stages(0.1), str(tmp_path), lambda s: None)
  lines = []
  out = runner.run_stages(stages(0.1), str(tmp_path), lines.append)
  assert out == {"ran": 0, "skipped": 2} and resets == []
  lines.clear()
  out = runner.run_stages(stages(0.2), str(tmp_path), lines.append)
  assert out == {"ran": 1, "skipped": 1} and resets == ["a"] and log == ["a", "b", "a"]
  assert any("inputs changed" in line for line in lines)


def test_compiled_programs_are_released_when_mappings_crowd(monkeypatch, tmp_path):
  """Past a share of the kernel's memory-mapping limit the runner drops jax's in-memory compiled
  programs between stages (a long study in one process once died of "Cannot allocate memory" in
  LLVM); below it, nothing is dropped."""
  f = jax.jit(lambda x: x * 2 + 1)
  f(jnp.ones(3))
  assert f._cache_size() == 1  # pylint: disable=protected-access
  assert not runner.release_compiled_programs_if_crowded(share=1.0)
  assert f._cache_size() == 1  # pylint: disable=protected-access
  assert runner.release_compiled_programs_if_crowded(share=0.0)
  assert f._cache_size() == 0  # pylint: disable=protected-access
  # Where /proc does not say (another OS), nothing happens.
  monkeypatch.setattr(runner, "_map_count", lambda: None)
  assert not runner.release_compiled_programs_if_crowded(share=0.0)
  calls = []
  monkeypatch.setattr(runner, "release_compiled_programs_if_crowded", lambda: calls.append(1))
  runner.run_stages(
    [runner.Stage("a", "train", "a", lambda: None), runner.Stage("b", "train", "b", lambda: None)],
    str(tmp_path),
    printer=lambda s: None,
  )
  assert calls == [1, 1]  # checked after every stage
