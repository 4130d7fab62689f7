"""Checkpoint and dataset reliability: array checksums with fallback to the previous checkpoint
(resume, inference, evaluate), retention by Orbax's policies with a configurable best metric, the
dataset identity check of train and evaluate, and the workdir lock around train()."""

import glob
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

import tiny_config
from tests.training.conftest import REPO
from gr_jax.data import prepare
from gr_jax.data.dataset import DatasetMismatchError
from gr_jax import checkpointing
from gr_jax.training import loop


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("reliable"))
  summary = loop.train(tiny_config.make(tiny_dataset), workdir)
  assert checkpointing.all_steps(workdir)[-2:] == [18, 24]
  return workdir, summary


def _copy(src, tmp_path, name="run"):
  dst = str(tmp_path / name)
  shutil.copytree(src, dst)
  return dst


def _silently_corrupt_params(workdir, step):
  """Rewrites the params of `step` with one value changed, in a valid Orbax layout: the damage
  restores without an error (as flipped bytes in an uncompressed chunk do)."""
  item = os.path.join(checkpointing.checkpoint_dir(workdir), str(step), "params")
  ckptr = ocp.StandardCheckpointer()
  params = ckptr.restore(item)
  leaves, treedef = jax.tree.flatten(params)
  bad = np.array(leaves[0], copy=True)
  bad.reshape(-1)[0] += 1.0
  leaves[0] = bad
  ckptr.save(item + ".new", jax.tree.unflatten(treedef, leaves))
  ckptr.wait_until_finished()
  shutil.rmtree(item)
  os.rename(item + ".new", item)


def _flip_bytes(workdir, step, n=64):
  """Flips `n` bytes in the middle of the largest file of the step's params (the tester's case)."""
  files = [
    p
    for p in glob.glob(
      os.path.join(checkpointing.checkpoint_dir(workdir), str(step), "params", "**", "*"),
      recursive=True,
    )
    if os.path.isfile(p)
  ]
  path = max(files, key=os.path.getsize)
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    mid = len(data) // 2
    for i in range(mid, min(mid + n, len(data))):
      data[i] ^= 0xFF
    f.seek(0)
    f.write(data)


def _one_item_decoder(model, config, catalog):
  def decode(enc):
    b = enc.shape[0]
    seqs = np.stack([np.full((b, 1), catalog.token_offset), np.ones((b, 1))], -1)
    return seqs.astype(np.int32), np.zeros((b, 1), np.float32)

  return decode


# ----------------------------------------------------------------------------------- checksums


@pytest.mark.slow
def test_silently_damaged_newest_checkpoint_falls_back_everywhere(
  run, tiny_dataset, tmp_path, caplog
):
  src, _ = run
  workdir = _copy(src, tmp_path)
  _silently_corrupt_params(workdir, 24)
  from gr_jax.evaluation import evaluator

  caplog.set_level(logging.WARNING)
  # Inference (latest): the previous checkpoint, with a warning that names the damaged one.
  _, _, step = checkpointing.restore_for_inference(workdir)
  assert step == 18
  assert any(
    "checkpoints/24" in r.getMessage() and "previous" in r.getMessage() for r in caplog.records
  )
  # Asked for explicitly: a one-line error naming the step and the array, no traceback.
  with pytest.raises(checkpointing.CheckpointCorruptError, match=r"checkpoints/24/params: 1 "):
    checkpointing.restore_for_inference(workdir, 24)
  # Evaluate falls back too, and nothing logged carries a traceback.
  caplog.clear()
  out = evaluator.evaluate(workdir, "test", decode_fn_factory=_one_item_decoder)
  assert out["info"]["step"] == 18
  assert any("checkpoints/24" in r.getMessage() for r in caplog.records)
  assert not any(r.exc_info for r in caplog.records)
  # Training resumes from the previous checkpoint and recomputes the same losses.
  caplog.clear()
  summary = loop.train(tiny_config.make(tiny_dataset), workdir)
  assert summary["resumed_from"] == 18 and summary["step"] == 24
  assert any(
    "checkpoints/24" in r.getMessage() and "previous" in r.getMessage() for r in caplog.records
  )
  assert [(r["step"], r["loss"]) for r in _records(workdir)] == [
    (r["step"], r["loss"]) for r in _records(src)
  ]


@pytest.mark.slow
def test_flipped_bytes_fall_back_and_the_cli_prints_no_traceback(
  run, subprocess_env, tmp_path, caplog
):
  src, _ = run
  workdir = _copy(src, tmp_path)
  _flip_bytes(workdir, 24)
  caplog.set_level(logging.WARNING)
  _, _, step = checkpointing.restore_for_inference(workdir)
  assert step == 18
  assert any("checkpoints/24" in r.getMessage() for r in caplog.records)
  proc = subprocess.run(
    [sys.executable, "-m", "gr_jax.evaluate", "--workdir", workdir, "--step", "24"],
    env=subprocess_env(1),
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 1
  assert "Traceback" not in proc.stderr and "checkpoints/24" in proc.stderr
  assert "Given directory is read only" not in proc.stderr


# ----------------------------------------------------------------------------------- retention


def _tiny_state():
  sh = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  state = {
    "step": jnp.zeros((), jnp.int32),
    "params": {
      "w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3),
      "b": jnp.ones((3,), jnp.bfloat16),
    },
    "opt_state": {"count": jnp.array(3, jnp.int32), "mu": jnp.zeros((2, 3))},
  }
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), state)
  return state, abstract


def _ck_config(**fields):
  c = ml_collections.ConfigDict(
    {
      "checkpoint": {
        "keep": 1,
        "keep_best": True,
        "best_metric": "val/recall@30",
        "best_mode": "max",
        "async_save": False,
      }
    }
  )
  c.checkpoint.update(fields)
  return c


def test_retention_and_best_step_follow_the_configured_metric(tmp_path):
  workdir = str(tmp_path)
  config = _ck_config()
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config.to_dict(), f)
  state, abstract = _tiny_state()
  ckpt = checkpointing.Checkpointer(workdir, config)
  recall = {5: 0.1, 10: 0.5, 15: 0.3, 20: None, 25: 0.2}
  for step, r in recall.items():
    ckpt.save(
      step,
      state,
      data_state={"epoch": step},
      config={},
      metrics={"val/loss": 10.0 - step / 10, "val/recall@30": r},
    )
  assert ckpt.best_step() == 10
  ckpt.close()
  # Orbax kept the latest and the best by recall (max); steps without it are not "best".
  assert checkpointing.all_steps(workdir) == [10, 25]
  assert checkpointing.best_step(workdir) == 10  # the run's config.json names the metric
  assert checkpointing.best_step(workdir, metric="val/loss", mode="min") == 25
  assert checkpointing.best_step(workdir, metric="val/nope") is None
  # The kept checkpoints restore and verify.
  ckpt = checkpointing.Checkpointer(workdir, config)
  restored, data_state, step = ckpt.restore_latest(abstract, {})
  ckpt.close()
  assert step == 25 and data_state == {"epoch": 25}
  np.testing.assert_array_equal(
    np.asarray(restored["params"]["w"]), np.asarray(state["params"]["w"])
  )


def test_retention_keeps_the_best_step_of_every_tracked_metric(tmp_path):
  """A joint run selected per task keeps its best search, best rec and best mean steps (and the
  latest); ties keep the earlier step, as the trainer's early stopping counts them."""
  workdir = str(tmp_path)
  config = _ck_config()
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config.to_dict(), f)
  state, _ = _tiny_state()
  per_task = ("val/search/recall@30", "val/rec/recall@30")
  ckpt = checkpointing.Checkpointer(workdir, config, also_best=per_task)
  values = {  # step: (search, rec); the mean is their average
    5: (0.1, 0.2),
    10: (0.5, 0.1),  # best search
    15: (0.3, 0.4),  # best mean (0.35)
    20: (0.5, 0.2),  # ties search's best: not kept for it
    25: (0.2, 0.45),  # best rec
    30: (0.1, 0.1),  # latest
  }
  for step, (search, rec) in values.items():
    ckpt.save(
      step,
      state,
      data_state={},
      config={},
      metrics={
        "val/search/recall@30": search,
        "val/rec/recall@30": rec,
        "val/recall@30": (search + rec) / 2,
      },
    )
  assert ckpt.best_step() == 15 and ckpt.best_step("val/search/recall@30") == 10
  ckpt.close()
  assert checkpointing.all_steps(workdir) == [10, 15, 25, 30]
  assert checkpointing.best_step(workdir) == 15
  assert checkpointing.best_step(workdir, task="search") == 10
  assert checkpointing.best_step(workdir, task="rec") == 25
  assert checkpointing.step_metric(workdir, "best_rec") == ("val/rec/recall@30", "max")


def test_best_mode_is_checked(tmp_path):
  with pytest.raises(ValueError, match=r"config.checkpoint.best_mode: expected 'min' or 'max'"):
    checkpointing.Checkpointer(str(tmp_path), _ck_config(best_mode="lowest"))


def test_checksums_are_independent_of_the_sharding():
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  x = jnp.arange(4 * 6, dtype=jnp.float32).reshape(4, 6)
  sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  a = checkpointing.tree_checksums({"x": x, "y": x.astype(jnp.bfloat16)})
  b = checkpointing.tree_checksums({"x": sharded, "y": sharded.astype(jnp.bfloat16)})
  assert a == b
  moved = checkpointing.tree_checksums({"x": x.at[3, 5].add(1e-6), "y": x.astype(jnp.bfloat16)})
  swapped = checkpointing.tree_checksums({"x": x[::-1], "y": x.astype(jnp.bfloat16)})
  assert moved["['x']"] != a["['x']"] and swapped["['x']"] != a["['x']"]


# ------------------------------------------------------------------------------ dataset identity


def _changed_copy(tiny_dataset, tmp_path):
  data = str(tmp_path / "data_copy")
  shutil.copytree(tiny_dataset, data)
  path = os.path.join(data, "search", "test.npz")
  with np.load(path) as z:
    arrays = {k: z[k] for k in z.files}
  arrays["target_item"] = arrays["target_item"][::-1].copy()  # same shape, other answers
  prepare.save_npz(path, arrays)
  return data


def test_train_refuses_a_changed_dataset_file(tiny_dataset, tmp_path):
  data = _changed_copy(tiny_dataset, tmp_path)
  with pytest.raises(DatasetMismatchError, match=r"search/test.npz: field 'sha256'.*manifest says"):
    loop.train(tiny_config.make(data), str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_train_refuses_a_dataset_of_another_data_config(tiny_dataset, tmp_path):
  with pytest.raises(
    DatasetMismatchError, match=r"config_hash.*data.sim.num_items: run config 50, dataset 40"
  ):
    loop.train(tiny_config.make(tiny_dataset, data__sim__num_items=50), str(tmp_path / "a"))
  with pytest.raises(
    DatasetMismatchError, match=r"data.source: run config 'movielens', dataset 'simulate'"
  ):
    loop.train(
      tiny_config.make(tiny_dataset, data__source="movielens", data__path="/raw"),
      str(tmp_path / "b"),
    )
  # Pipeline-only knobs (tasks, task_prefix, item caps) share one dataset.
  from gr_jax.data.dataset import verify_dataset

  verify_dataset(
    tiny_dataset, tiny_config.make(tiny_dataset, "tasks=search", data__task_prefix=True)
  )


def test_evaluate_refuses_a_changed_test_split(run, tiny_dataset, tmp_path):
  src, _ = run
  from gr_jax.evaluation import evaluator

  data = _changed_copy(tiny_dataset, tmp_path)
  with pytest.raises(ValueError, match=r"search/test.npz: field 'sha256'"):
    evaluator.evaluate(
      src, "test", overrides={"data.processed_dir": data}, decode_fn_factory=_one_item_decoder
    )


# ------------------------------------------------------------------------------------- the lock


def test_train_on_a_workdir_held_by_another_process_fails_at_once(tiny_dataset, tmp_path):
  from gr_jax import workdir_lock

  holder = subprocess.Popen(
    [
      sys.executable,
      "-c",
      "import sys; from gr_jax import workdir_lock as w; "
      "l = w.WorkdirLock(sys.argv[1]); l.acquire(); print('locked', flush=True); "
      "sys.stdin.readline()",
      str(tmp_path),
    ],
    env=dict(os.environ, PYTHONPATH=REPO),
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(workdir_lock.WorkdirLockedError, match=rf"pid {holder.pid}"):
      loop.train(tiny_config.make(tiny_dataset), str(tmp_path))
  finally:
    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.wait(timeout=60)
  assert not os.path.exists(tmp_path / "config.json")
