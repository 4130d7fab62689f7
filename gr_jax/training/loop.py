"""The trainer: `train(config, workdir) -> summary`.

One call prepares the dataset when needed, resolves the config (vocab sizes from the dataset),
builds or resumes the sharded train state, and runs the jitted step for `train.num_steps` steps (or
`train.num_epochs` epochs), with periodic validation, metrics.jsonl + TensorBoard, a progress line
and Orbax checkpoints. Running the same command again on the same workdir resumes from the newest
checkpoint that restores; on CPU the resumed run is bitwise the uninterrupted one (same data order
from the restored iterator state, same dropout keys from `fold_in(seed_key, step)`).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath

from gr_jax import workdir as workdir_lib
from gr_jax.schema import TASKS
from gr_jax import checkpointing
from gr_jax.training import data_adapter
from gr_jax.training.early_stopping import EarlyStopping
from gr_jax.model import partitioning
from gr_jax.model import build as build_lib
from gr_jax.training import state as state_lib
from gr_jax.training import step as step_lib

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN/inf loss; the last good checkpoint is kept."""


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) the run in `workdir`; returns a summary dict (see `_Trainer.run`)."""
  from gr_jax import workdir_lock  # pylint: disable=g-import-not-at-top

  config = ml_collections.ConfigDict(config.to_dict())
  partitioning.maybe_initialize_distributed(config)
  workdir = workdir_lib.absolute(workdir)  # local paths only: gs://... stays a URL
  # One process per run directory, for the whole call: a second `train` on it fails at once
  # (process 0 holds the lock for all processes of a multi-host run).
  with workdir_lock.hold(workdir, enabled=jax.process_index() == 0, purpose="train"):
    return _train_locked(config, workdir)


def _train_locked(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  checkpointing.quiet_orbax_logs()
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  data = data_adapter.open_dataset(config, workdir)
  config, model_config = build_lib.resolve_model(
    config,
    text_vocab_size=data.text_vocab_size,
    num_item_tokens=data.num_item_tokens,
    token_offset=data.token_offset,
    where=data.path,
  )
  with config.unlocked():
    config.data.processed_dir = data.path
    if getattr(getattr(data.dataset, "catalog", None), "id_scheme", "atomic") != "atomic":
      # Semantic IDs fix the decoder length (ID tokens + EOS, the manifest's): record that one.
      config.data.decoder_len = int(data.dataset.decoder_len)
    if config.train.get("select_metric", ""):
      # Model selection on validation: the best checkpoint is the best validation decode.
      config.checkpoint.best_metric = "val/" + str(config.train.select_metric)
      config.checkpoint.best_mode = "max"
      config.checkpoint.keep_best = True
  mesh = partitioning.make_mesh(int(config.mesh.data), int(config.mesh.model))
  with jax.set_mesh(mesh):
    return _Trainer(config, model_config, workdir, data, mesh).run()


def is_selection_step(train: ml_collections.ConfigDict, steps_per_epoch: int, step: int) -> bool:
  """Whether the run validates (decodes the valid split) after optimizer step `step` (1-based),
  its epoch over its own training data being `steps_per_epoch` steps.

  train.select_evals_per_epoch = N > 0: N decodes per epoch of the run's own data, at the steps
  ceil(k * steps_per_epoch / N), k = 1, 2, ...: the first within the first epoch, exactly N per
  epoch (every step when an epoch has fewer than N steps), so `patience` decodes are the same
  span of own epochs for every model kind (docs/study_design.md "Fair comparison"). Else every
  train.select_every_steps steps, 0 = once per epoch.
  """
  per_epoch = int(train.get("select_evals_per_epoch", 0))
  every = int(train.get("select_every_steps", 0))
  if per_epoch < 0 or every < 0:
    raise ValueError(
      "config.train.select_evals_per_epoch and select_every_steps must be >= 0, got "
      f"{per_epoch} and {every}"
    )
  spe = max(1, int(steps_per_epoch))
  if per_epoch > 0:
    return (step * per_epoch) // spe > ((step - 1) * per_epoch) // spe
  return step % (every or spe) == 0


def _is_main() -> bool:
  return jax.process_index() == 0


class _Trainer:
  """State of one train() call (kept in an object only to keep `run` readable)."""

  def __init__(self, config, model_config, workdir, data, mesh):
    self.config, self.model_config, self.workdir = config, model_config, workdir
    self.data, self.mesh = data, mesh
    t = config.train
    self.batch_size = int(t.batch_size)
    if self.batch_size % jax.process_count():
      raise ValueError(
        f"config.train.batch_size={self.batch_size} is not divisible by the "
        f"{jax.process_count()} processes"
      )
    self.loader = data.train_loader(config)
    self.steps_per_epoch = max(1, int(self.loader.steps_per_epoch))
    if int(t.num_steps) > 0:
      self.total_steps = int(t.num_steps)
    else:
      self.total_steps = int(t.num_epochs) * self.steps_per_epoch
    if self.total_steps <= 0:
      raise ValueError("config.train: nothing to do (num_steps and num_epochs are both 0)")
    self.log_every = max(1, int(t.log_every_steps))
    self.eval_every = int(t.eval_every_steps) or self.steps_per_epoch
    self.ckpt_every = max(1, int(config.checkpoint.every_steps))
    # Model selection (train.select_metric): decode the valid split at `is_selection_step`,
    # checkpoint the new bests, keep them, stop after `patience` decodes without improvement.
    self.select_metric = str(t.get("select_metric", "") or "")
    is_selection_step(t, self.steps_per_epoch, 1)  # a bad schedule fails before any work
    self.patience = int(t.get("patience", 0))
    self._validation_decoder = None
    if self.patience < 0:
      raise ValueError("config.train.patience must be >= 0")
    # A multi-task run selected per task (train.select_per_task) also tracks each task's share of
    # the selection metric: its best checkpoint per task is kept, and it stops only when no task
    # has improved for `patience` decodes.
    tasks = tuple(str(x) for x in config.data.tasks)
    per_task = self.select_metric and bool(t.get("select_per_task", False)) and len(tasks) > 1
    self.select_tasks = tasks if per_task else ()
    self.config_dict = config.to_dict()

  # ------------------------------------------------------------------------------ setup helpers

  def _write_config(self):
    if _is_main():
      workdir_lib.write_text(
        f"{self.workdir}/config.json", json.dumps(self.config_dict, indent=2, sort_keys=True)
      )

  def _metrics_file(self, resumed_step: int):
    """metrics.jsonl (`workdir.MetricsLog`: lines past the resumed step dropped), main process."""
    if not _is_main():
      return None
    return workdir_lib.MetricsLog(f"{self.workdir}/metrics.jsonl", resumed_step)

  def _tensorboard(self):
    if not _is_main():
      return None
    if not workdir_lib.is_local(self.workdir):
      # tensorboardX writes through local files only; metrics.jsonl holds the same scalars.
      log.info(
        "no TensorBoard events for a non-local workdir (%s): see metrics.jsonl", self.workdir
      )
      return None
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

    return SummaryWriter(os.path.join(self.workdir, "tensorboard"))

  def _flops_per_example(self) -> float | None:
    """Analytic training FLOPs of one example (`gr_jax.model.flops`, the one counter)."""
    from gr_jax.model import flops  # pylint: disable=g-import-not-at-top

    enc, dec = int(self.config.data.encoder_len), int(self.config.data.decoder_len)
    return flops.train_flops_per_example(self.model_config, enc, dec)

  def _peak_tflops(self) -> float | None:
    """The chip's dense bf16 peak from the one table (`gr_jax.model.flops`); None = no MFU."""
    from gr_jax.model import flops  # pylint: disable=g-import-not-at-top

    override = float(self.config.train.get("peak_tflops", 0.0) or 0.0)
    return flops.peak_tflops(jax.devices()[0].device_kind, override)

  # ------------------------------------------------------------------------------------ the run

  def run(self) -> dict[str, Any]:
    config, mesh = self.config, self.mesh
    t0 = time.time()
    tx, schedule = state_lib.make_optimizer(config, self.total_steps)
    parts, abstract_params = build_lib.build_model(config, mesh, abstract=True)
    shardings = state_lib.state_shardings(parts, tx, mesh, abstract_params)
    abstract_state = state_lib.abstract_train_state(abstract_params, tx, shardings)

    selection = _Selections(self.select_metric, self.select_tasks, self.patience)
    bests = _PendingBests(abstract_state, shardings)
    ckpt = checkpointing.Checkpointer(
      self.workdir, config, also_best=tuple(f"val/{k}" for k in selection.task_keys)
    )
    try:
      restored = ckpt.restore_latest(abstract_state, self.config_dict)
    except Exception:
      ckpt.close()
      raise
    if restored is not None:
      state, data_state, start_step = restored
      self.loader.set_state(data_state)
      log.info("resumed from %s/%d", checkpointing.checkpoint_dir(self.workdir), start_step)
    else:
      _, params = build_lib.build_model(config, mesh)
      state = state_lib.create_train_state(params, tx, shardings)
      start_step = 0
    # Only now: a config refused by the checkpoint must not overwrite the run's config.json.
    self._write_config()
    n_params = build_lib.num_params(state["params"])
    log.info(
      "model: %s, %.2fM parameters; mesh %s; %d steps (%d per epoch), global batch %d",
      config.model.preset,
      n_params / 1e6,
      dict(mesh.shape),
      self.total_steps,
      self.steps_per_epoch,
      self.batch_size,
    )

    batch_sh = partitioning.batch_sharding(mesh)
    train_step, rng = step_lib.run_train_step(
      config, parts, tx, schedule, shardings, batch_sh, mesh
    )
    eval_step = step_lib.make_eval_step(parts, shardings["params"], batch_sh, mesh)

    if start_step >= self.total_steps:
      log.info("the run in %s is already complete (step %d)", self.workdir, start_step)
    last: dict[str, Any] = {}
    metrics_f = self._metrics_file(start_step)
    if metrics_f is not None and start_step:
      last = _last_record(f"{self.workdir}/metrics.jsonl") or {}
    tb = self._tensorboard()
    flops = self._flops_per_example()
    peak = self._peak_tflops()
    pending: list[dict] = []  # device metrics since the last host sync
    window_start, window_examples = time.time(), 0
    last_val: dict[str, float] = {}
    last_good_ckpt = start_step if restored is not None else None
    throughput = None
    selection.replay(f"{self.workdir}/metrics.jsonl", start_step)
    if selection.converged:
      log.info(
        "the run in %s stopped early at step %d (%s)",
        self.workdir,
        start_step,
        selection.describe(),
      )
    try:
      for step in range(start_step, self.total_steps):
        if selection.converged:
          break
        batch = self.data.to_global(_train_keys(next(self.loader)), batch_sh, self.batch_size)
        state, m = train_step(state, batch, rng)
        pending.append(m)
        window_examples += self.batch_size
        if step == start_step:
          # Throughput and ETA leave out the first step (compilation).
          jax.block_until_ready(m)
          window_start, window_examples = time.time(), 0
        done = step + 1
        is_last = done == self.total_steps
        do_eval = done % self.eval_every == 0 or is_last
        do_select = bool(self.select_metric) and (
          is_selection_step(config.train, self.steps_per_epoch, done) or is_last
        )
        # A save that happens whatever validation says (the period, the last step, an early stop);
        # do_ckpt adds the saves that a new best asks for.
        must_save = done % self.ckpt_every == 0 or is_last
        do_ckpt = must_save
        if not (done % self.log_every == 0 or do_eval or do_ckpt or do_select):
          continue
        # ---- host sync: reduce the window's metric sums
        sums = jax.tree.map(
          lambda *xs: np.sum(np.stack([np.asarray(x) for x in xs]), 0), *jax.device_get(pending)
        )
        last_lr = float(np.asarray(jax.device_get(pending[-1]["learning_rate"])))
        grad_norm = float(np.asarray(jax.device_get(pending[-1]["grad_norm"])))
        losses = [float(p["loss_sum"]) for p in jax.device_get(pending)]
        bad = [i for i, x in enumerate(losses) if not math.isfinite(x)]
        if bad:
          first_bad = done - len(losses) + bad[0] + 1
          where = (
            f"{checkpointing.checkpoint_dir(self.workdir)}/{last_good_ckpt}"
            if last_good_ckpt is not None
            else "none was written"
          )
          raise NonFiniteLossError(
            f"non-finite training loss at step {first_bad} (config.train.learning_rate="
            f"{config.train.learning_rate}); stopped without saving. Last good checkpoint: "
            f"{where}. Lower the learning rate or enable config.train.grad_clip_norm."
          )
        pending = []
        elapsed = time.time() - window_start
        throughput = window_examples / max(elapsed, 1e-9) if window_examples else None
        rec = {
          "step": done,
          **step_lib.summarize(sums, TASKS),
          "learning_rate": last_lr,
          "grad_norm": grad_norm,
          "epoch": done / self.steps_per_epoch,
          "examples_per_s": throughput,
        }
        mfu = None
        if flops and peak and throughput:
          mfu = flops * throughput / (peak * 1e12 * jax.device_count())
          rec["mfu"] = mfu
        saved: dict[str, float | None] = {}
        if do_select:
          decoded = self._validate_decode(parts, state["params"])
          rec.update({f"val/{k}": v for k, v in decoded.items()})
          improved = selection.update(done, decoded)
          rec.update(selection.since_best_record())
          if selection.converged or is_last:
            # How the run ended: patience ran out (converged) or the step cap came first.
            rec["capped"] = not selection.converged
          saved = {f"val/{k}": decoded[k] for k in selection.keys}
          # A decode is checkpointed when it is a new best of a tracked metric (retention keeps
          # it) or ends the run (a rerun finds it stopped); any other would be replaced by the
          # next save, so it is not written.
          must_save = must_save or selection.converged
          do_ckpt = must_save or improved
        if do_eval or (do_ckpt and config.checkpoint.keep_best):
          last_val = self._validate(eval_step, state["params"], batch_sh)
          rec.update({f"val/{k}": v for k, v in last_val.items()})
        last = rec
        self._log(rec, done, mfu, metrics_f, tb)
        if do_ckpt:
          val = last_val.get("loss") if (do_eval or config.checkpoint.keep_best) else None
          saved["val/loss"] = val
          data_state = self.loader.get_state()
          if not must_save and bests.defer:
            # Early in a run nearly every decode is a new best that the next one replaces:
            # held on the host until a save that must happen (`_PendingBests`).
            bests.hold(done, state, data_state, saved, selection)
          else:
            bests.flush(ckpt, self.config_dict, selection)
            ckpt.save(done, state, data_state=data_state, config=self.config_dict, metrics=saved)
            last_good_ckpt = done
        window_start, window_examples = time.time(), 0
    finally:
      if metrics_f is not None:
        metrics_f.close()
      if tb is not None:
        tb.close()
      ckpt.close()
    final_step = int(jax.device_get(state["step"]))
    stopped_early = selection.converged and final_step < self.total_steps
    if stopped_early:
      log.info(
        "stopped early at step %d: validation %s has not improved for %d decodes (%s)",
        final_step,
        " nor ".join(selection.stop_keys),
        self.patience,
        selection.describe(),
      )
    elif self.select_metric and final_step >= self.total_steps and not selection.converged:
      log.warning(
        "stopped at the step cap (%d) before validation converged (%s): capped, not converged",
        self.total_steps,
        selection.describe(),
      )
    summary = {
      "workdir": self.workdir,
      "step": final_step,
      "resumed_from": start_step or None,
      "loss": last.get("loss"),
      "val_loss": last_val.get("loss", last.get("val/loss")),
      "best_step": checkpointing.best_step(self.workdir),
      "num_params": n_params,
      "examples_per_s": throughput,
      "wall_s": time.time() - t0,
      "select_metric": self.select_metric or None,
      "best_val_selected": selection.best(self.select_metric) if self.select_metric else None,
      "stopped_early": bool(stopped_early),
      # Selection ended by the step cap while a tracked metric was still improving within
      # `patience` decodes: the run did not converge (None: no selection).
      "capped": (not selection.converged) if self.select_metric else None,
      # Per task (train.select_per_task): each task's best validation value and its step, the
      # checkpoint `evaluate --step best_<task>` restores.
      "best_steps_per_task": {
        t: selection.best_step(f"{t}/{self.select_metric}") for t in self.select_tasks
      },
      "best_val_per_task": {
        t: selection.best(f"{t}/{self.select_metric}") for t in self.select_tasks
      },
    }
    summary.update({k: v for k, v in last.items() if k.startswith(("loss/", "val/"))})
    log.info(
      "done: %s", json.dumps({k: summary[k] for k in ("step", "loss", "val_loss", "best_step")})
    )
    return summary

  # ------------------------------------------------------------------------------------- pieces

  def _validate(self, eval_step, params, batch_sh) -> dict[str, float]:
    total = None
    for batch in self.data.eval_batches(self.config):
      sums = jax.device_get(
        eval_step(params, self.data.to_global(_train_keys(batch), batch_sh, self.batch_size))
      )
      total = sums if total is None else jax.tree.map(np.add, total, sums)
    if total is None:
      return {}
    return step_lib.summarize(total, TASKS)

  def _validate_decode(self, parts, params) -> dict[str, float]:
    """Validation metrics by decoding the valid split with the run's decoder (never test)."""
    if self._validation_decoder is None:  # built at the first decode: reads the split once
      from gr_jax.evaluation import evaluator  # pylint: disable=g-import-not-at-top

      self._validation_decoder = evaluator.validation_decoder(
        self.config, self.data.path, max_queries=int(self.config.train.get("select_max_queries", 0))
      )
    return self._validation_decoder(build_lib.merge(parts, params))

  def _log(self, rec, done, mfu, metrics_f, tb):
    if metrics_f is not None:
      metrics_f.write(rec)
    if tb is not None:
      for k, v in rec.items():
        if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
          tb.add_scalar(k, v, done)
      tb.flush()
    eps = rec["examples_per_s"]
    speed = (
      "compiling"
      if eps is None
      else (
        f"{eps:.1f} ex/s ETA {_hms((self.total_steps - done) * self.batch_size / max(eps, 1e-9))}"
      )
    )
    tasks = " ".join(f"{t} {rec[f'loss/{t}']:.4f}" for t in TASKS if f"loss/{t}" in rec)
    val = f" val {rec['val/loss']:.4f}" if "val/loss" in rec else ""
    mfu_s = f" MFU {100 * mfu:.1f}%" if mfu is not None else ""
    log.info(
      "step %d/%d (epoch %.2f) loss %.4f [%s]%s lr %.2e | %s%s",
      done,
      self.total_steps,
      rec["epoch"],
      rec["loss"],
      tasks,
      val,
      rec["learning_rate"],
      speed,
      mfu_s,
    )


class _PendingBests:
  """New-best checkpoints held in host memory until a save that must happen.

  Under model selection nearly every early decode is a new best, and each save costs about half a
  second on a CPU (Orbax) while the next new best replaces it. So a save that is due only to a new
  best is held here as a host copy, and written (before the save that forces it, in step order)
  by `flush` while it is still the best of some tracked metric; one that stopped being a best is
  dropped unwritten, as retention would have deleted it. What ends up on disk is what immediate
  saves leave (retention keeps the latest and each metric's best). A run killed in between
  resumes from its last written checkpoint and retrains to the same bests (its metrics.jsonl is
  cut back to that step). Only for one process and a state of at most `MAX_BYTES`: a larger or
  multi-host state is saved at once, as before.
  """

  MAX_BYTES = 256 << 20

  def __init__(self, abstract_state, shardings):
    size = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(abstract_state))
    self.defer = jax.process_count() == 1 and size <= self.MAX_BYTES
    self.shardings = shardings
    self.held: dict[int, tuple] = {}  # step -> (host state, data state, metrics)

  def hold(self, step, state, data_state, metrics, selection) -> None:
    self.held[int(step)] = (jax.device_get(state), copy.deepcopy(data_state), dict(metrics))
    self._drop_replaced(selection)

  def _drop_replaced(self, selection) -> None:
    bests = {selection.best_step(k) for k in selection.keys}
    for step in [s for s in self.held if s not in bests]:
      del self.held[step]

  def flush(self, ckpt, config_dict, selection) -> None:
    self._drop_replaced(selection)
    for step in sorted(self.held):
      host, data_state, metrics = self.held.pop(step)
      state = jax.device_put(host, self.shardings)
      ckpt.save(step, state, data_state=data_state, config=config_dict, metrics=metrics)


class _Selections:
  """The run's model selection: one `EarlyStopping` for the selection metric (the mean over the
  run's tasks) and, for a run selected per task, one for each task's share of it ("search/<m>").

  Early stopping: with per-task selection, when no task has improved for `patience` decodes (the
  mean's best is tracked and kept as well, but does not keep the run going); otherwise when the
  metric has not. Rebuilt on resume from metrics.jsonl (its lines up to the resumed step are
  kept), so an interrupted run stops where the uninterrupted one would, and a run that already
  stopped does not train on when rerun.
  """

  def __init__(self, metric: str, tasks: tuple[str, ...], patience: int):
    self.metric = metric
    self.task_keys = tuple(f"{t}/{metric}" for t in tasks) if metric else ()
    self.keys = ((metric,) if metric else ()) + self.task_keys
    self.stop_keys = self.task_keys or self.keys
    self._sel = {k: EarlyStopping(patience) for k in self.keys}

  @property
  def converged(self) -> bool:
    return bool(self.stop_keys) and all(self._sel[k].converged for k in self.stop_keys)

  def update(self, step: int, decoded: dict[str, float]) -> bool:
    """Records one validation decode; True when it is a new best of any tracked metric."""
    improved = False
    for k in self.keys:
      improved |= self._sel[k].update(step, decoded[k])
    return improved

  def best(self, key: str) -> float | None:
    sel = self._sel.get(key)
    return sel.best if sel is not None and sel.best_step else None

  def best_step(self, key: str) -> int | None:
    sel = self._sel.get(key)
    return sel.best_step if sel is not None and sel.best_step else None

  def since_best_record(self) -> dict[str, int]:
    """metrics.jsonl fields: decodes since each tracked metric last improved."""
    out = {"val/evals_since_best": self._sel[self.metric].since_best}
    for k in self.task_keys:
      out[f"val/{k.split('/', 1)[0]}/evals_since_best"] = self._sel[k].since_best
    return out

  def describe(self) -> str:
    return ", ".join(
      f"best {k} {self._sel[k].best:.4f} at step {self._sel[k].best_step}" for k in self.keys
    )

  def replay(self, path: str, upto: int) -> None:
    """Replays the logged validation decodes up to step `upto` (a resumed run)."""
    if not self.keys or not upto:
      return
    for rec in workdir_lib.read_jsonl(path):
      if rec.get("step", 0) <= upto and all(f"val/{k}" in rec for k in self.keys):
        self.update(int(rec["step"]), {k: float(rec[f"val/{k}"]) for k in self.keys})


def _last_record(path: str) -> dict | None:
  records = workdir_lib.read_jsonl(path)
  return records[-1] if records else None


def _train_keys(batch):
  return {k: batch[k] for k in step_lib.BATCH_KEYS}


def _hms(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
