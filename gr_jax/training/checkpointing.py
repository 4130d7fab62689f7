"""Orbax checkpoints of a run: `<workdir>/checkpoints/<step>/{params,opt_state,data,config,meta}`.

- `params` and `opt_state`: array pytrees (restored straight into sharded abstract targets, so a
  checkpoint written on one mesh shape restores on another).
- `data`: the training iterator's state (JSON), `config`: the resolved run config, `meta`: step and
  the validation loss used to pick the best checkpoint.
- Retention: the last `checkpoint.keep` steps plus (with `checkpoint.keep_best`) the one with the
  lowest validation loss. Orbax writes each step to a temporary directory and renames it when
  complete, so an interrupted save never shows up as a step; a step whose files were damaged later
  fails to restore and is skipped with a warning in favour of the previous one.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

ITEMS = ("params", "opt_state", "data", "config", "meta")

# Config fields that change the shapes or structure of what is saved, or how the data iterator
# state is interpreted: a checkpoint written with other values cannot be resumed.
_MUST_MATCH = ("model.preset", "model.overrides", "model.param_dtype", "data.tasks",
               "data.encoder_len", "data.decoder_len", "train.batch_size")


class ConfigMismatchError(ValueError):
  """The config of a run does not match the checkpoint it would resume from."""


class NoCheckpointError(FileNotFoundError):
  pass


class _QuietOrbax(logging.Filter):
  # Orbax logs every save/restore step at INFO through absl; keep its warnings and errors only.
  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or "orbax" not in record.pathname


def quiet_orbax_logs() -> None:
  for name in ("absl", ""):
    logger = logging.getLogger(name)
    if not any(isinstance(f, _QuietOrbax) for f in logger.filters):
      logger.addFilter(_QuietOrbax())
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    if not any(isinstance(f, _QuietOrbax) for f in handler.filters):
      handler.addFilter(_QuietOrbax())


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def _manager(workdir: str, *, read_only: bool = False, async_save: bool = False):
  options = ocp.CheckpointManagerOptions(
      max_to_keep=None,  # retention (last N + best) is ours: Orbax has no "last N plus best"
      create=not read_only, read_only=read_only,
      # Leftovers of saves interrupted by a crash (Orbax never lists them as steps).
      cleanup_tmp_directories=not read_only,
      enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=ITEMS)


# ------------------------------------------------------------------------------- JSON conversions


def _encode_data_state(data_state: Any) -> dict:
  if data_state is None:
    return {"kind": "none"}
  if isinstance(data_state, bytes):
    return {"kind": "bytes", "value": base64.b64encode(data_state).decode("ascii")}
  json.dumps(data_state)  # fails loudly if the iterator state is not JSON-serialisable
  return {"kind": "json", "value": data_state}


def _decode_data_state(blob: dict) -> Any:
  kind = blob.get("kind")
  if kind == "none":
    return None
  if kind == "bytes":
    return base64.b64decode(blob["value"])
  return blob["value"]


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flat(v, key + "."))
    else:
      out[key] = list(v) if isinstance(v, tuple) else v
  return out


def check_config_compatible(saved: dict, current: dict, where: str) -> None:
  """Raises ConfigMismatchError listing every field in `_MUST_MATCH` that differs."""
  s, c = _flat(saved), _flat(current)
  diffs = []
  for field in _MUST_MATCH:
    keys = sorted({k for k in list(s) + list(c) if k == field or k.startswith(field + ".")})
    for k in keys:
      if _norm(s.get(k)) != _norm(c.get(k)):
        diffs.append(f"{k}: checkpoint {s.get(k)!r}, config {c.get(k)!r}")
  if diffs:
    raise ConfigMismatchError(
        f"{where}: the checkpoint was written with a different config ({'; '.join(diffs)}). "
        "Use the same config to resume, or a new --workdir for a new run.")


def _norm(v):
  return list(v) if isinstance(v, (list, tuple)) else v


# -------------------------------------------------------------------------------------- the manager


class Checkpointer:
  """Save / resume for one run directory (every process calls every method: Orbax is collective)."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    quiet_orbax_logs()
    self.workdir = workdir
    self.keep = max(1, int(config.checkpoint.keep))
    self.keep_best = bool(config.checkpoint.keep_best)
    self.async_save = bool(config.checkpoint.get("async_save", False))
    self.manager = _manager(workdir, async_save=self.async_save)

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: dict, *, data_state: Any, config: dict,
           val_loss: float | None = None) -> None:
    meta = {"step": int(step), "val_loss": _finite_or_none(val_loss)}
    if self.async_save:
      # The previous async save must be complete before it can count for retention.
      self.manager.wait_until_finished()
      self._prune()
    if step in self.manager.all_steps():
      # Left by an earlier attempt whose checkpoint failed to restore (we resumed before it).
      log.warning("replacing checkpoint %s/%d", checkpoint_dir(self.workdir), step)
      self.manager.delete(step)
    self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state["params"]),
        opt_state=ocp.args.StandardSave(state["opt_state"]),
        data=ocp.args.JsonSave(_encode_data_state(data_state)),
        config=ocp.args.JsonSave(config),
        meta=ocp.args.JsonSave(meta)), force=True)
    if not self.async_save:
      self.manager.wait_until_finished()
      self._prune()

  def _prune(self) -> None:
    steps = self.steps()
    keep = set(steps[-self.keep:])
    if self.keep_best:
      best = _best_of(self.workdir, steps)
      if best is not None:
        keep.add(best)
    for s in steps:
      if s not in keep:
        self.manager.delete(s)

  def restore_latest(self, abstract_state: dict, config: dict):
    """(state, data_state, step) from the newest checkpoint that restores, or None if there is none.

    A damaged checkpoint is skipped with a warning (the previous one is tried); a config mismatch
    is an error.
    """
    steps = self.steps()
    for step in reversed(steps):
      where = os.path.join(checkpoint_dir(self.workdir), str(step))
      try:
        saved_config = self.manager.restore(
            step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
      except Exception as e:  # pylint: disable=broad-except
        log.warning("checkpoint %s is unreadable (%s: %s); trying the previous one", where,
                    type(e).__name__, _short(e))
        continue
      check_config_compatible(saved_config, config, where)
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_state["params"]),
            opt_state=ocp.args.StandardRestore(abstract_state["opt_state"]),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore()))
        _check_restored(restored.params, abstract_state["params"], where)
        _check_restored(restored.opt_state, abstract_state["opt_state"], where)
      except Exception as e:  # pylint: disable=broad-except
        log.warning("checkpoint %s failed to restore (%s: %s); trying the previous one", where,
                    type(e).__name__, _short(e))
        continue
      state = {"step": jax.device_put(jax.numpy.asarray(step, jax.numpy.int32),
                                      abstract_state["step"].sharding),
               "params": restored.params, "opt_state": restored.opt_state}
      return state, _decode_data_state(restored.data), step
    if steps:
      raise NoCheckpointError(f"{checkpoint_dir(self.workdir)}: none of the checkpoints {steps} "
                              "could be restored (see the warnings above)")
    return None

  def close(self) -> None:
    self.manager.wait_until_finished()
    if self.async_save:
      self._prune()
    self.manager.close()


def _short(e: Exception) -> str:
  s = str(e).splitlines()[0] if str(e) else ""
  return s[:300]


def _finite_or_none(x):
  if x is None:
    return None
  x = float(x)
  return x if math.isfinite(x) else None


def _check_restored(restored, abstract, where: str) -> None:
  got = jax.tree_util.tree_flatten_with_path(restored)[0]
  exp = jax.tree_util.tree_flatten_with_path(abstract)[0]
  if len(got) != len(exp):
    raise ValueError(f"{where}: {len(got)} arrays, expected {len(exp)}")
  for (kp, a), (_, b) in zip(got, exp):
    if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
      raise ValueError(f"{where}: {jax.tree_util.keystr(kp)} is {a.shape} {a.dtype}, expected "
                       f"{b.shape} {b.dtype}")


# ------------------------------------------------------------------------------------ read helpers


def _read_meta(workdir: str, step: int) -> dict | None:
  path = os.path.join(checkpoint_dir(workdir), str(step), "meta", "metadata")
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _best_of(workdir: str, steps) -> int | None:
  best, best_loss = None, math.inf
  for s in steps:
    meta = _read_meta(workdir, s)
    loss = meta.get("val_loss") if meta else None
    if loss is not None and loss < best_loss:
      best, best_loss = s, loss
  return best


def all_steps(workdir: str) -> list[int]:
  d = checkpoint_dir(workdir)
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def best_step(workdir: str) -> int | None:
  """The kept checkpoint with the lowest validation loss (None when none has one)."""
  return _best_of(workdir, all_steps(workdir))


def latest_step(workdir: str) -> int | None:
  steps = all_steps(workdir)
  return steps[-1] if steps else None


def restore_for_inference(workdir: str, step: int | str | None = None, *, mesh=None):
  """(model, config, step) for evaluation: the params of `step` ("best", an int, or None = latest)
  placed on `mesh` (default: all devices, data-parallel)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from gr_jax.training import partitioning, state as state_lib  # pylint: disable=g-import-not-at-top
  quiet_orbax_logs()
  steps = all_steps(workdir)
  if not steps:
    raise NoCheckpointError(f"{checkpoint_dir(workdir)}: no checkpoint (train this workdir first)")
  if step == "best":
    step = best_step(workdir)
    if step is None:
      raise NoCheckpointError(f"{checkpoint_dir(workdir)}: no checkpoint has a validation loss")
  elif step is None:
    step = steps[-1]
  step = int(step)
  if step not in steps:
    raise NoCheckpointError(f"{checkpoint_dir(workdir)}: no checkpoint for step {step} "
                            f"(have {steps})")
  manager = _manager(workdir, read_only=True)
  try:
    where = os.path.join(checkpoint_dir(workdir), str(step))
    saved = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
    config = ml_collections.ConfigDict(saved)
    cfg_path = os.path.join(workdir, "config.json")
    if os.path.exists(cfg_path):
      with open(cfg_path) as f:
        check_config_compatible(saved, json.load(f), f"{where} vs {cfg_path}")
    if mesh is None:
      mesh = partitioning.make_mesh(data=-1, model=1)
    parts, abstract_params = state_lib.build_model(_no_init_from(config), mesh, abstract=True)
    restored = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))
    _check_restored(restored.params, abstract_params, where)
    model = nnx.merge(parts.graphdef, restored.params, parts.rest)
  finally:
    manager.close()
  return model, config, step


def _no_init_from(config):
  # The architecture is fully in model.overrides of a resolved config: no need for the HF dir.
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.init_from = ""
  return config
