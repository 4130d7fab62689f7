"""Sharded training gives the 1-device losses: 8 fake CPU devices (data=4 x model=2), a checkpoint
restored onto another mesh shape, and a 2-process jax.distributed run (gloo) on localhost."""

import json
import os
import shutil
import socket
import subprocess

import pytest

from tests.training.conftest import REPO, losses, run_train, train_command

from tests import numerics

FLAGS = ("--config.train.num_steps=12", "--config.checkpoint.every_steps=6")


# Training losses of two meshes: the gradient all-reduce sums shards in another order, so the runs
# agree to float32 accuracy of a reduction over a batch's tokens x the vocabulary (16 x 2 tokens,
# 128 text + 40 item tokens), not to the bit.
_LOSS_TERMS = 16 * 2 * (128 + 40)


def _close(a, b):
  assert [s for s, _ in a] == [s for s, _ in b]
  numerics.assert_close_f32([x for _, x in a], [x for _, x in b], n_terms=_LOSS_TERMS)


@pytest.fixture(scope="module")
def one_device_run(tiny_dataset, subprocess_env, tmp_path_factory):
  work = tmp_path_factory.mktemp("one_device")
  run_train(subprocess_env(1), work, tiny_dataset, *FLAGS)
  return work


@pytest.mark.slow
def test_eight_devices_data4_model2_match_one_device(
  one_device_run, tiny_dataset, subprocess_env, tmp_path
):
  env = subprocess_env(8)
  mesh = ("--config.mesh.data=4", "--config.mesh.model=2")
  fresh = tmp_path / "fresh"
  run_train(env, fresh, tiny_dataset, *FLAGS, *mesh)
  _close(losses(fresh), losses(one_device_run))
  # The 1-device checkpoint of step 6 restores onto the 4 x 2 mesh and training goes on the same.
  moved = tmp_path / "moved"
  shutil.copytree(one_device_run, moved)
  shutil.rmtree(moved / "checkpoints" / "12")
  summary = run_train(env, moved, tiny_dataset, *FLAGS, *mesh)
  assert summary["resumed_from"] == 6
  _close(losses(moved), losses(one_device_run))


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(one_device_run, tiny_dataset, subprocess_env, tmp_path):
  work = tmp_path / "two_proc"
  port = _free_port()
  procs = []
  for pid in range(2):
    env = subprocess_env(
      1, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES=2, JAX_PROCESS_ID=pid
    )
    procs.append(
      subprocess.Popen(
        train_command(work, tiny_dataset, *FLAGS),
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    )
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-4000:]
  summary = json.loads(outs[0][0].strip().splitlines()[-1])
  assert summary["step"] == 12
  _close(losses(work), losses(one_device_run))
  assert sorted(os.listdir(work / "checkpoints")) == ["12", "6"]
