"""Kill -9 a running `python -m gr_jax.train`, rerun the same command: bitwise the same run."""

import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from tests.training.conftest import REPO, losses, run_train, train_command
from gr_jax import checkpointing

FLAGS = (
  "--config.train.num_steps=72",
  "--config.checkpoint.every_steps=6",
  "--config.train.eval_every_steps=24",
)


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tiny_dataset, subprocess_env, tmp_path):
  env = subprocess_env(1)
  ref = tmp_path / "uninterrupted"
  run_train(env, ref, tiny_dataset, *FLAGS)

  work = tmp_path / "killed"
  proc = subprocess.Popen(
    train_command(work, tiny_dataset, *FLAGS),
    env=env,
    cwd=REPO,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 300
  while not os.path.isdir(work / "checkpoints" / "12"):  # Orbax renames a step dir when complete
    assert proc.poll() is None, "the run ended before it could be killed"
    assert time.time() < deadline, "no checkpoint 12 within 300 s"
    time.sleep(0.02)
  os.kill(proc.pid, signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL
  at_kill = checkpointing.all_steps(str(work))
  assert 12 in at_kill and 72 not in at_kill

  summary = run_train(env, work, tiny_dataset, *FLAGS)  # the very same command again
  assert summary["resumed_from"] == max(at_kill) and summary["step"] == 72
  assert losses(work) == losses(ref)  # every logged loss, bitwise
  ref_model, _, _ = checkpointing.restore_for_inference(str(ref))
  got_model, _, _ = checkpointing.restore_for_inference(str(work))
  from flax import nnx

  ref_params = nnx.to_pure_dict(nnx.state(ref_model, nnx.Param))
  got_params = nnx.to_pure_dict(nnx.state(got_model, nnx.Param))
  jax.tree.map(
    lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), ref_params, got_params
  )
