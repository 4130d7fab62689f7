"""In-process tests of train(): learning, outputs, resume after a damaged checkpoint, errors."""

import glob
import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

import tiny_config
from gr_jax import checkpointing
from gr_jax.training import loop
from tests import numerics


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def joint_run(tiny_dataset, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("joint"))
  summary = loop.train(tiny_config.make(tiny_dataset), workdir)
  return workdir, summary


@pytest.mark.slow
def test_loss_decreases_and_run_outputs(joint_run, tiny_dataset):
  workdir, summary = joint_run
  recs = _records(workdir)
  assert [r["step"] for r in recs] == [4, 6, 8, 12, 16, 18, 20, 24]
  for r in recs:
    assert {"step", "loss", "loss/search", "loss/rec", "accuracy/search"} <= set(r)
  assert recs[-1]["loss"] < 0.7 * recs[0]["loss"]
  assert summary["step"] == 24 and summary["resumed_from"] is None
  assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
  with open(os.path.join(workdir, "config.json")) as f:
    cfg = json.load(f)
  from gr_jax.data.dataset import ProcessedDataset

  ds = ProcessedDataset(tiny_dataset)
  assert cfg["model"]["overrides"]["vocab_size"] == ds.text_vocab_size
  assert cfg["model"]["overrides"]["num_item_tokens"] == ds.num_items
  # Retention: the last 2 checkpoints plus the best by validation loss.
  val = {r["step"]: r["val/loss"] for r in recs if "val/loss" in r and r["step"] % 6 == 0}
  kept = checkpointing.all_steps(workdir)
  best = min(val, key=val.get)
  assert set(kept) == {18, 24} | {best}
  assert checkpointing.best_step(workdir) == best == summary["best_step"]


@pytest.mark.slow
def test_restore_for_inference_reproduces_validation_loss(joint_run, tiny_dataset):
  workdir, summary = joint_run
  model, config, step = checkpointing.restore_for_inference(workdir)
  assert step == 24 and config.model.overrides.d_model == 32
  from gr_jax.data.dataset import ProcessedDataset
  from gr_jax.data.pipeline import make_eval_batches

  ds = ProcessedDataset(tiny_dataset)
  total, count = 0.0, 0.0
  for task in ("search", "rec"):
    for b in make_eval_batches(ds, task, "valid", 16):
      logits = np.asarray(model(b["encoder_input_ids"], b["decoder_input_ids"]), np.float64)
      logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
      logp -= logits.max(-1, keepdims=True)
      nll = -np.take_along_axis(logp, b["decoder_target_ids"][..., None], -1)[..., 0]
      total += float((nll * b["decoder_weights"]).sum())
      count += float(b["decoder_weights"].sum())
  # float64 NumPy recomputation vs the jitted float32 eval step summed over batches.
  numerics.assert_close_f32(
    total / count, summary["val_loss"], n_terms=int(count) * logits.shape[-1]
  )
  with pytest.raises(checkpointing.NoCheckpointError, match="no checkpoint for step 7"):
    checkpointing.restore_for_inference(workdir, step=7)


def test_restore_for_inference_without_checkpoint(tmp_path):
  with pytest.raises(checkpointing.NoCheckpointError, match="no checkpoint"):
    checkpointing.restore_for_inference(str(tmp_path))


@pytest.mark.slow
def test_damaged_latest_checkpoint_is_skipped(joint_run, tiny_dataset, tmp_path, caplog):
  src, _ = joint_run
  workdir = str(tmp_path / "run")
  shutil.copytree(src, workdir)
  # Damage the newest checkpoint's parameter files (as a full disk or a bad copy would).
  for path in glob.glob(
    os.path.join(workdir, "checkpoints", "24", "params", "**", "*"), recursive=True
  ):
    if os.path.isfile(path):
      with open(path, "wb") as f:
        f.write(b"\0garbage")
  # ...and leave an unfinished save behind, as a crash during Orbax's write would.
  tmp_save = os.path.join(workdir, "checkpoints", "30.orbax-checkpoint-tmp-1234")
  os.makedirs(os.path.join(tmp_save, "params"))
  with caplog.at_level(logging.WARNING):
    summary = loop.train(tiny_config.make(tiny_dataset), workdir)
  assert any(
    "checkpoints/24" in r.getMessage() and "previous" in r.getMessage() for r in caplog.records
  )
  assert summary["resumed_from"] == 18 and summary["step"] == 24
  assert not os.path.exists(tmp_save) and 30 not in checkpointing.all_steps(workdir)
  # Metrics of the steps after 18 were recomputed identically.
  want = [(r["step"], r["loss"]) for r in _records(src)]
  got = [(r["step"], r["loss"]) for r in _records(workdir)]
  assert got == want  # bitwise: same data order and dropout keys after the resume


@pytest.mark.slow
def test_async_checkpoints_equal_sync_ones_and_resume(joint_run, tiny_dataset, tmp_path):
  """checkpoint.async_save=True: the same losses, the same kept steps (last 2 + best), the same
  saved parameters as the synchronous run, and a resume from them continues bitwise the same."""
  src, sync_summary = joint_run
  workdir = str(tmp_path / "async")
  summary = loop.train(tiny_config.make(tiny_dataset, checkpoint__async_save=True), workdir)
  want = [(r["step"], r["loss"]) for r in _records(src)]
  assert [(r["step"], r["loss"]) for r in _records(workdir)] == want
  assert checkpointing.all_steps(workdir) == checkpointing.all_steps(src)
  assert summary["best_step"] == sync_summary["best_step"]
  for step in checkpointing.all_steps(src):
    a, _, _ = checkpointing.restore_for_inference(workdir, step)
    b, _, _ = checkpointing.restore_for_inference(src, step)
    for x, y in zip(
      jax.tree.leaves(nnx.state(a, nnx.Param)), jax.tree.leaves(nnx.state(b, nnx.Param))
    ):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # Resume from an async checkpoint: drop the newest, train again with async saves.
  shutil.rmtree(os.path.join(workdir, "checkpoints", "24"))
  with open(os.path.join(workdir, "metrics.jsonl"), "w"):
    pass
  again = loop.train(tiny_config.make(tiny_dataset, checkpoint__async_save=True), workdir)
  assert again["resumed_from"] == 18 and again["step"] == 24
  assert [(r["step"], r["loss"]) for r in _records(workdir)] == [x for x in want if x[0] > 18]


def test_config_mismatch_is_a_clear_error(joint_run, tiny_dataset, tmp_path):
  src, _ = joint_run
  workdir = str(tmp_path / "run")
  shutil.copytree(src, workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    before = f.read()
  config = tiny_config.make(tiny_dataset, model__overrides__d_model=48)
  with pytest.raises(
    checkpointing.ConfigMismatchError, match=r"model.overrides.d_model: checkpoint 32, config 48"
  ):
    loop.train(config, workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    assert f.read() == before  # the refused config did not overwrite the run's


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["search", "rec"])
def test_single_task_models_train(kind, tiny_dataset, tmp_path):
  # Gen_S and Gen_R: the same config but data.tasks (the joint kind is `joint_run`).
  config = tiny_config.make(
    tiny_dataset,
    f"tasks={kind}",
    train__num_steps=8,
    checkpoint__every_steps=8,
    train__eval_every_steps=8,
  )
  summary = loop.train(config, str(tmp_path))
  recs = _records(str(tmp_path))
  other = "rec" if kind == "search" else "search"
  assert all(f"loss/{kind}" in r and f"loss/{other}" not in r for r in recs)
  assert recs[-1]["loss"] < recs[0]["loss"]
  assert np.isfinite(summary["val_loss"])


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_dataset, tmp_path):
  config = tiny_config.make(
    tiny_dataset,
    train__learning_rate=1e30,
    train__warmup_fraction=0.0,
    train__grad_clip_norm=0.0,
    checkpoint__every_steps=1,
    train__log_every_steps=1,
    model__dropout_rate=0.0,
  )
  with pytest.raises(loop.NonFiniteLossError, match=r"non-finite training loss at step (\d+)") as e:
    loop.train(config, str(tmp_path))
  bad = int(e.value.args[0].split("at step ")[1].split()[0])
  steps = checkpointing.all_steps(str(tmp_path))
  assert steps and max(steps) == bad - 1
  assert f"checkpoints/{bad - 1}" in str(e.value)
  assert all(np.isfinite(r["loss"]) for r in _records(str(tmp_path)))
