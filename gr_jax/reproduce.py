"""Reproduces the study from one command: data, Gen_S / Gen_R / Gen_R+S per seed, evaluation from
checkpoints, statistics, H1/H2 analyses, report.

  python -m gr_jax.reproduce --config configs/quickstart.py --workdir runs/quickstart

Resumable: run the same command again and finished stages are skipped, interrupted ones continue.

Per-model tuning on validation (gr_jax/study/tune.py, configs/base.py `reproduce.tune`): `--tune`
(or `--config.reproduce.tune.run=True`) runs the tuning stages first and writes
<workdir>/tuning/tuning.json, then the study; `--tune_only` stops after tuning.json. The study's
runs take each model kind's chosen values only with `--config.reproduce.tune.use=True`.
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from gr_jax import runtime

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config (configs/*.py[:arg]).", lock_config=False
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the whole study.")
_TUNE = flags.DEFINE_bool(
  "tune", False, "Run the per-model tuning on validation (reproduce.tune) before the study."
)
_TUNE_ONLY = flags.DEFINE_bool(
  "tune_only", False, "Run the per-model tuning on validation only (writes tuning/tuning.json)."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.validate_config(_CONFIG.value)  # before the lock, the data and any training
  from gr_jax import workdir as workdir_lib
  from gr_jax import workdir_lock

  # The stages write with local file calls: gs://... would become a local directory named `gs:`.
  workdir = workdir_lib.local_dir(
    _WORKDIR.value, "the study directory (--workdir)", "run the study on a local directory"
  )
  # One reproduce per study directory for the whole run: a second one fails at once instead of
  # training the same runs concurrently (WorkdirLockedError: one line through main_guard).
  lock = workdir_lock.WorkdirLock(workdir, purpose="reproduce")
  lock.acquire()
  try:
    _run_study(workdir)
  finally:
    lock.release()


def _run_study(workdir: str) -> None:
  """Builds and runs the plan (with the study lock held)."""
  from gr_jax.study import build_plan, run_plan
  from gr_jax.study import tune

  runtime.setup(workdir)
  if (
    _TUNE.value
    or _TUNE_ONLY.value
    or bool(_CONFIG.value.reproduce.get("tune", {}).get("run", False))
  ):
    # Before the plan: with reproduce.tune.use the plan reads the tuning.json this writes.
    path = tune.run_tuning(_CONFIG.value, workdir)
    print(f"\nTuning: {path}")
    if _TUNE_ONLY.value:
      return
  plan = build_plan(_CONFIG.value, workdir)
  logging.info(
    "study %s: %d point(s), %d run(s)", _CONFIG.value.name, len(plan.points), len(plan.runs)
  )
  # Bad input, a config error or a diverged run raise; main_guard prints one line the user can
  # act on. Finished stages are kept; fix the cause and rerun the same command to continue.
  report = run_plan(plan)
  print(f"\nReport: {report}")
  summary = os.path.join(workdir, "summary.txt")
  if os.path.exists(summary):
    with open(summary) as f:
      print(f.read())


def run():
  runtime.run_app(
    main,
    path_hint=lambda: _WORKDIR.value,
    note="finished stages are kept: fix the cause and rerun the same command to continue",
  )


if __name__ == "__main__":
  run()
