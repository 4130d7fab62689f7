"""Train (or resume) one run: `python -m gr_jax.train --config configs/x.py[:arg] --workdir DIR`.

Thin on purpose: flags, device/config logging, then `gr_jax.training.loop.train`, which tests and
the reproduce driver call directly. Overrides: `--config.train.num_steps=N` (> 0 overrides
epochs), `--config.checkpoint.every_steps=N`, `--config.seed=S`, `--config.mesh.data=D
--config.mesh.model=M`. Running the same command again resumes from the last checkpoint; a second
process on a workdir that a running one holds fails at once (gr_jax.workdir_lock).
"""

from __future__ import annotations

import json

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from gr_jax import runtime

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "experiment config file (path.py[:arg])", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, config.json)")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.validate_config(_CONFIG.value)  # before any work: no step is trained on nonsense
  import jax  # pylint: disable=g-import-not-at-top  (after absl parsed XLA/JAX flags)
  from gr_jax.model import partitioning  # pylint: disable=g-import-not-at-top
  from gr_jax.training import loop  # pylint: disable=g-import-not-at-top
  from gr_jax.workdir_lock import WorkdirLockedError  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  # Before anything touches the backend (jax.devices below included).
  partitioning.maybe_initialize_distributed(config)
  logging.info(
    "jax %s, %d process(es), devices: %s", jax.__version__, jax.process_count(), jax.devices()
  )
  logging.info("config:\n%s", config)
  try:
    summary = loop.train(config, _WORKDIR.value)
  except (loop.NonFiniteLossError, ValueError, OSError, WorkdirLockedError) as e:
    logging.error("%s", e)  # also in the log file; main_guard prints the one line and exits 1
    raise
  print(json.dumps(summary, default=str))


def run() -> None:
  """Console-script entry point (`gr-jax-train`)."""
  flags.mark_flags_as_required(["config", "workdir"])
  runtime.run_app(main, path_hint=lambda: _WORKDIR.value)


if __name__ == "__main__":
  run()
