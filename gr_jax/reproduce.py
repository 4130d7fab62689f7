"""Reproduces the study from one command: data, Gen_S / Gen_R / Gen_R+S per seed, evaluation from
checkpoints, statistics, H1/H2 analyses, report.

  python -m gr_jax.reproduce --config configs/quickstart.py --workdir runs/quickstart

Resumable: run the same command again and finished stages are skipped, interrupted ones continue.
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config (configs/*.py[:arg]).",
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the whole study.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from gr_jax import runtime
  from gr_jax.study import build_plan, run_plan
  workdir = os.path.abspath(_WORKDIR.value)
  runtime.setup(workdir)
  plan = build_plan(_CONFIG.value, workdir)
  logging.info("study %s: %d point(s), %d run(s)", _CONFIG.value.name, len(plan.points),
               len(plan.runs))
  report = run_plan(plan)
  print(f"\nReport: {report}")
  summary = os.path.join(workdir, "summary.txt")
  if os.path.exists(summary):
    with open(summary) as f:
      print(f.read())


def run():
  app.run(main)


if __name__ == "__main__":
  run()
