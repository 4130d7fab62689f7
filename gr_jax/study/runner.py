"""Runs a study plan stage by stage, resumably, with progress for the whole plan.

Each finished stage leaves a marker `stages/<id>.json` (written atomically after the stage's own
outputs) holding the fingerprint of its inputs (the resolved config it ran with, and the
fingerprints of the stages it reads from), so a second invocation skips it only when nothing it
depends on changed; a stage whose inputs changed is reset (its outputs removed) and rerun, and the
progress line says so. An interrupted stage simply runs again (training resumes from its last
checkpoint by itself). The ETA averages the measured duration of finished stages of
the same kind (train, evaluate, ...), falling back to the mean over all kinds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Callable

from absl import logging

from gr_jax.study.plan import Plan


@dataclasses.dataclass
class Stage:
  id: str  # unique and file-name safe, e.g. "train__default__joint__seed1"
  kind: str  # prepare | train | evaluate | baselines | analyse | report
  describe: str  # one line for the progress display
  fn: Callable[[], object]
  inputs: Any = None  # JSON-able description of everything the stage's result depends on
  reset: Callable[[], None] | None = None  # removes the outputs of an earlier, stale run

  @property
  def fingerprint(self) -> str:
    text = json.dumps(self.inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _marker_path(workdir: str, stage_id: str) -> str:
  return os.path.join(workdir, "stages", stage_id + ".json")


def read_marker(workdir: str, stage_id: str) -> dict | None:
  try:
    with open(_marker_path(workdir, stage_id)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def is_done(workdir: str, stage_id: str) -> bool:
  return os.path.exists(_marker_path(workdir, stage_id))


def status(workdir: str, stage: Stage) -> str:
  """ "new" (never finished), "done" (finished with the same inputs) or "stale" (inputs changed)."""
  marker = read_marker(workdir, stage.id)
  if marker is None:
    return "new"
  return "done" if marker.get("fingerprint") == stage.fingerprint else "stale"


def _write_marker(workdir: str, stage: Stage, seconds: float) -> None:
  from gr_jax.workdir import write_json

  write_json(
    _marker_path(workdir, stage.id),
    {
      "stage": stage.id,
      "kind": stage.kind,
      "seconds": round(seconds, 3),
      "fingerprint": stage.fingerprint,
      "inputs": stage.inputs,
      "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    },
  )


def _format_seconds(s: float) -> str:
  s = int(round(s))
  return (
    f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
  )


class Progress:
  """Progress line for the whole plan: stage i of n, elapsed, ETA."""

  def __init__(self, stages: list[Stage], workdir: str, printer: Callable[[str], None] = print):
    self.stages = stages
    self.workdir = workdir
    self.print = printer
    self.durations: dict[str, list[float]] = {}
    self.start = time.time()
    # Durations of stages finished by an earlier invocation feed the ETA too.
    for s in stages:
      if is_done(workdir, s.id):
        with open(_marker_path(workdir, s.id)) as f:
          self.durations.setdefault(s.kind, []).append(float(json.load(f).get("seconds", 0.0)))

  def eta(self, remaining: list[Stage]) -> float | None:
    every = [d for ds in self.durations.values() for d in ds]
    if not every:
      return None
    fallback = sum(every) / len(every)
    total = 0.0
    for s in remaining:
      ds = self.durations.get(s.kind)
      total += sum(ds) / len(ds) if ds else fallback
    return total

  def record(self, stage: Stage, seconds: float) -> None:
    self.durations.setdefault(stage.kind, []).append(seconds)


def run_stages(stages: list[Stage], workdir: str, printer: Callable[[str], None] = print) -> dict:
  """Runs the stages in order, skipping finished ones. Returns counts of run and skipped stages."""
  progress = Progress(stages, workdir, printer)
  n = len(stages)
  ran = skipped = 0
  for i, stage in enumerate(stages, start=1):
    state = status(workdir, stage)
    if state == "done":
      skipped += 1
      printer(f"[stage {i}/{n}] {stage.describe}: done earlier, skipped")
      continue
    if state == "stale":
      printer(f"[stage {i}/{n}] {stage.describe}: its inputs changed since it ran; rerunning")
      os.remove(_marker_path(workdir, stage.id))
      if stage.reset is not None:
        stage.reset()
    eta = progress.eta(stages[i - 1 :])
    eta_text = f", ETA {_format_seconds(eta)}" if eta is not None else ""
    elapsed = _format_seconds(time.time() - progress.start)
    printer(f"[stage {i}/{n}] {stage.describe} (elapsed {elapsed}{eta_text})")
    t0 = time.time()
    stage.fn()
    release_compiled_programs_if_crowded()
    seconds = time.time() - t0
    progress.record(stage, seconds)
    _write_marker(workdir, stage, seconds)
    ran += 1
    logging.info("stage %s finished in %.1fs", stage.id, seconds)
  printer(
    f"[plan] {ran} stage(s) run, {skipped} skipped, "
    f"{_format_seconds(time.time() - progress.start)} in all"
  )
  return {"ran": ran, "skipped": skipped}


# Every compiled XLA:CPU program holds memory mappings, and the kernel refuses new ones past
# vm.max_map_count (65,530 by default): a 10-seed study in one process died there with "LLVM
# compilation error: Cannot allocate memory" at stage 175 of 202 (each seed's dataset has its own
# shapes). Past this share of the limit the in-memory caches are dropped between stages; the
# persistent compilation cache reloads what the next stage needs.
_MAPS_SHARE = 0.5


def _map_count() -> tuple[int, int] | None:
  """(this process's memory mappings, the kernel's limit); None where /proc does not say."""
  try:
    with open("/proc/self/maps", "rb") as f:
      used = sum(1 for _ in f)
    with open("/proc/sys/vm/max_map_count") as f:
      return used, int(f.read().strip())
  except (OSError, ValueError):
    return None


def release_compiled_programs_if_crowded(share: float = _MAPS_SHARE) -> bool:
  """Drops jax's in-memory compiled programs when the process holds more than `share` of the
  kernel's memory-mapping limit; True when it did."""
  counts = _map_count()
  if counts is None or counts[0] <= share * counts[1]:
    return False
  import gc

  import jax

  jax.clear_caches()
  gc.collect()
  after = _map_count()
  logging.info(
    "memory mappings %d of %d: compiled programs released (%s now)",
    counts[0],
    counts[1],
    after[0] if after else "?",
  )
  return True


def run_plan(plan: Plan, printer: Callable[[str], None] = print) -> str:
  """Runs every stage of the plan and returns the path of report.md."""
  from gr_jax.study import stages as stage_lib  # Heavy imports (jax) only when running.

  stages = stage_lib.stages_for(plan)
  if plan.config.reproduce.get("estimate_time", False):
    from gr_jax.study import estimate  # pylint: disable=g-import-not-at-top

    estimate.print_estimate(plan, stages, printer)
  run_stages(stages, plan.workdir, printer)
  return os.path.join(plan.workdir, "report.md")
