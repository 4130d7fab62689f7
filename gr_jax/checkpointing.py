"""Orbax checkpoints of a run: `<workdir>/checkpoints/<step>/{params,opt_state,data,config,meta,
checksums,metrics}`.

- `params` and `opt_state`: array pytrees (restored straight into sharded abstract targets, so a
  checkpoint written on one mesh shape restores on another).
- `checksums`: two 32-bit sums per array (plain and position-weighted, over the raw bits, computed
  on the devices at save time: exact integer arithmetic, so independent of the mesh). Restore
  recomputes and compares them: flipped bytes that still decode are caught, not trained on.
- `data`: the training iterator's state (JSON), `config`: the resolved run config, `meta`: the step
  and every finite metric given to `save`; `metrics` (Orbax's own item): the same metrics when they
  hold `checkpoint.best_metric`, which Orbax ranks for retention and `best_step`.
- Retention is Orbax's preservation policy: the last `checkpoint.keep` steps, plus (with
  `checkpoint.keep_best`) the best by `checkpoint.best_metric` (`checkpoint.best_mode` min | max)
  and the best by each further metric the trainer names (`Checkpointer(also_best=...)`: a
  multi-task run selected per task keeps its best step for each task's validation metric too).
  "Best" is the first step with the best value (ties keep the earlier step, as the trainer's
  early stopping counts them), for retention, `best_step` and `restore_for_inference` alike.
- Named steps (`restore_for_inference`, `evaluate --step`): "best" = by `checkpoint.best_metric`;
  "best_<task>" (best_search, best_rec) = by that task's share of it (`task_metric`:
  val/recall@30 -> val/search/recall@30), which a run selected per task saved.
  Orbax writes each step to a temporary directory and renames it when complete, so an interrupted
  save never shows up as a step; a step whose files were damaged later fails to restore or to
  verify and is skipped with a warning in favour of the previous one (resume and inference alike).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from gr_jax import workdir as workdir_lib
from gr_jax.model import build as build_lib
from gr_jax.model import partitioning
from gr_jax.schema import TASKS

log = logging.getLogger(__name__)

ITEMS = ("params", "opt_state", "data", "config", "meta", "checksums")
BEST_MODES = ("min", "max")
# The named steps `restore_for_inference` takes besides an integer and None (the latest).
BEST_STEPS = ("best",) + tuple(f"best_{t}" for t in TASKS)

# Config fields that change the shapes or structure of what is saved, or how the data iterator
# state is interpreted: a checkpoint written with other values cannot be resumed.
_MUST_MATCH = (
  "model.preset",
  "model.overrides",
  "model.param_dtype",
  "data.tasks",
  "data.encoder_len",
  "data.decoder_len",
  "train.batch_size",
)

# Orbax warnings that say nothing to a user of this package: read-only managers are how inference
# reads a run (once per restore), and a save without the ranked metric is expected (no validation
# at that step, or a non-finite value).
_SILENCED = ("Given directory is read only", "Requested `tracked_metric`; did not provide metrics")


class ConfigMismatchError(ValueError):
  """The config of a run does not match the checkpoint it would resume from."""


class NoCheckpointError(FileNotFoundError):
  pass


class CheckpointCorruptError(NoCheckpointError):
  """A checkpoint's arrays do not restore, or differ from the checksums written with them."""


class _QuietOrbax(logging.Filter):
  # Orbax logs every save/restore step at INFO through absl; keep its warnings and errors only.
  def filter(self, record: logging.LogRecord) -> bool:
    if "orbax" not in record.pathname:
      return True
    if record.levelno < logging.WARNING:
      return False
    try:
      msg = record.getMessage()
    except Exception:  # pylint: disable=broad-except
      return True
    return not msg.startswith(_SILENCED)


def quiet_orbax_logs() -> None:
  for name in ("absl", ""):
    logger = logging.getLogger(name)
    if not any(isinstance(f, _QuietOrbax) for f in logger.filters):
      logger.addFilter(_QuietOrbax())
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    if not any(isinstance(f, _QuietOrbax) for f in handler.filters):
      handler.addFilter(_QuietOrbax())


def checkpoint_dir(workdir: str) -> str:
  # A gs:// (or other non-local) workdir stays as given: Orbax writes there through epath.
  return os.path.join(workdir_lib.absolute(workdir), "checkpoints")


def _metric_fn(metric: str, mode: str) -> Callable[[Any], float]:
  # A checkpoint without the metric (an older run, another best_metric) ranks last instead of
  # failing Orbax's sort.
  worst = math.inf if mode == "min" else -math.inf

  def get(metrics) -> float:
    value = metrics.get(metric) if isinstance(metrics, dict) else None
    return worst if value is None else float(value)

  return get


def _check_mode(mode: str) -> str:
  if mode not in BEST_MODES:
    raise ValueError(f"config.checkpoint.best_mode: expected 'min' or 'max', got {mode!r}")
  return mode


def task_metric(metric: str, task: str) -> str:
  """One task's share of a validation metric, as the validation decoder names it:
  "val/recall@30" -> "val/search/recall@30"."""
  head, sep, name = metric.partition("/")
  return f"{head}/{task}/{name}" if sep else f"{task}/{metric}"


def _finite_value(metrics, metric: str) -> float | None:
  value = metrics.get(metric) if isinstance(metrics, dict) else None
  if value is None:
    return None
  try:
    value = float(value)
  except (TypeError, ValueError):
    return None
  return value if math.isfinite(value) else None


def rank_steps(entries, metric: str, mode: str) -> list[int]:
  """The steps of `entries` ((step, metrics dict or None) pairs) that have a finite `metric`,
  best first; among equal values the earlier step first (the trainer's early stopping counts a
  tie as no improvement, so its best is the first step that reached the value)."""
  ranked = []
  for step, metrics in entries:
    value = _finite_value(metrics, metric)
    if value is not None:
      ranked.append((-value if mode == "max" else value, int(step)))
  return [s for _, s in sorted(ranked)]


@dataclasses.dataclass(frozen=True)
class _KeepBest:
  """Orbax preservation policy: keep the one best step by `metric` (`rank_steps`' order). Orbax's
  own BestN keeps the latest of equal values, which is not the step the trainer selected."""

  metric: str
  mode: str

  def should_preserve(self, checkpoints, *, context) -> list[bool]:
    del context
    ranked = rank_steps([(cp.step, cp.metrics) for cp in checkpoints], self.metric, self.mode)
    return [bool(ranked) and cp.step == ranked[0] for cp in checkpoints]


def _manager(
  workdir: str,
  *,
  read_only: bool = False,
  async_save: bool = False,
  keep: int | None = None,
  keep_best: bool = False,
  best_metric: str = "val/loss",
  best_mode: str = "min",
  also_best: tuple[str, ...] = (),
):
  """An Orbax CheckpointManager whose retention is Orbax's preservation policy: the latest `keep`
  steps, plus with `keep_best` the single best by `best_metric` and by each of `also_best` (same
  mode) (read-only: keeps everything)."""
  cm = ocp.checkpoint_managers
  policies = [cm.LatestN(n=None if read_only else keep)]
  if keep_best and not read_only:
    for metric in dict.fromkeys((best_metric, *also_best)):
      policies.append(_KeepBest(metric, _check_mode(best_mode)))
  options = ocp.CheckpointManagerOptions(
    # best_fn makes Orbax write the `metrics` item and answer best_step(); which steps are kept
    # is decided by the preservation policy alone.
    best_fn=_metric_fn(best_metric, best_mode),
    best_mode=_check_mode(best_mode),
    preservation_policy=cm.AnyPreservationPolicy(policies),
    save_interval_steps=0 if read_only else 1,  # read-only: no "setting it to 0" warning
    create=not read_only,
    read_only=read_only,
    # Leftovers of saves interrupted by a crash (Orbax never lists them as steps).
    cleanup_tmp_directories=not read_only,
    enable_async_checkpointing=async_save,
  )
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=ITEMS)


# ------------------------------------------------------------------------------------- checksums


def _leaf_checksum(x: jax.Array) -> jax.Array:
  """[2] uint32: the sum of the array's raw bits as uint32 words and the sum weighted by
  2 * (linear index) + 1 (odd, so any single changed word changes it). Integer sums wrap exactly,
  so the result does not depend on the sharding or the reduction order."""
  if x.dtype == jnp.bool_:
    u = x.astype(jnp.uint32)
  else:
    width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    u = jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)  # 8 bytes: trailing dim 2
  idx = jnp.zeros(u.shape, jnp.uint32)
  stride = 1
  for d in reversed(range(u.ndim)):  # linear index without a reshape (keeps the sharding)
    idx = idx + jax.lax.broadcasted_iota(jnp.uint32, u.shape, d) * jnp.uint32(stride % (1 << 32))
    stride *= u.shape[d]
  plain = jnp.sum(u, dtype=jnp.uint32)
  weighted = jnp.sum(u * (idx * jnp.uint32(2) + jnp.uint32(1)), dtype=jnp.uint32)
  return jnp.stack([plain, weighted])


_checksum_leaves = jax.jit(lambda leaves: [_leaf_checksum(x) for x in leaves])


def tree_checksums(tree) -> dict[str, str]:
  """{key path: 16 hex digits} for every array of `tree` (computed on its devices)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  if not flat:
    return {}
  sums = jax.device_get(_checksum_leaves([x for _, x in flat]))
  return {
    jax.tree_util.keystr(kp): f"{int(s[0]):08x}{int(s[1]):08x}" for (kp, _), s in zip(flat, sums)
  }


def _verify_checksums(tree, saved: dict[str, str] | None, where: str) -> None:
  """Raises CheckpointCorruptError when `tree` differs from the checksums saved with it."""
  if saved is None:
    log.warning("%s: written without checksums (an older checkpoint); not verified", where)
    return
  got = tree_checksums(tree)
  if set(got) != set(saved):
    odd = sorted(set(got) ^ set(saved))
    raise CheckpointCorruptError(
      f"{where}: arrays {odd[:3]} are not in both the checkpoint's checksums and the restored tree"
    )
  bad = [k for k in got if got[k] != saved[k]]
  if bad:
    raise CheckpointCorruptError(
      f"{where}: {len(bad)} array(s) differ from the checksums written at save time, e.g. "
      f"{bad[0]}: checksum {got[bad[0]]}, saved {saved[bad[0]]}"
    )


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
      "Use the same config to resume, or a new --workdir for a new run."
    )


def _norm(v):
  return list(v) if isinstance(v, (list, tuple)) else v


# -------------------------------------------------------------------------------------- the manager


class Checkpointer:
  """Save / resume for one run directory (every process calls every method: Orbax is collective)."""

  def __init__(
    self, workdir: str, config: ml_collections.ConfigDict, also_best: tuple[str, ...] = ()
  ):
    """`also_best`: metrics (ranked in `checkpoint.best_mode` like `checkpoint.best_metric`)
    whose best step is kept too, e.g. each task's validation metric of a run selected per task."""
    quiet_orbax_logs()
    self.workdir = workdir
    ck = config.checkpoint
    self.keep = max(1, int(ck.keep))
    self.keep_best = bool(ck.keep_best)
    self.best_metric = str(ck.get("best_metric", "val/loss"))
    self.best_mode = _check_mode(str(ck.get("best_mode", "min")))
    self.also_best = tuple(str(m) for m in also_best)
    self.async_save = bool(ck.get("async_save", False))
    self.manager = _manager(
      workdir,
      async_save=self.async_save,
      keep=self.keep,
      keep_best=self.keep_best,
      best_metric=self.best_metric,
      best_mode=self.best_mode,
      also_best=self.also_best,
    )

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(
    self,
    step: int,
    state: dict,
    *,
    data_state: Any,
    config: dict,
    metrics: dict[str, float] | None = None,
  ) -> None:
    """Writes checkpoint `step`; `metrics` (e.g. {"val/loss": 2.1}) are kept with it, and the
    step is ranked by `checkpoint.best_metric` and the `also_best` metrics that they hold (finite
    values only)."""
    finite = {
      str(k): float(v)
      for k, v in (metrics or {}).items()
      if v is not None and math.isfinite(float(v))
    }
    ranked = finite if any(m in finite for m in (self.best_metric, *self.also_best)) else None
    meta = {"step": int(step), "metrics": finite}
    checksums = {
      "params": tree_checksums(state["params"]),
      "opt_state": tree_checksums(state["opt_state"]),
    }
    if step in self.manager.all_steps():
      # Left by an earlier attempt whose checkpoint failed to restore (we resumed before it).
      self.manager.wait_until_finished()
      log.warning("replacing checkpoint %s/%d", checkpoint_dir(self.workdir), step)
      self.manager.delete(step)
    # Orbax applies the preservation policy (last N + best) as part of the save.
    self.manager.save(
      step,
      args=ocp.args.Composite(
        params=ocp.args.StandardSave(state["params"]),
        opt_state=ocp.args.StandardSave(state["opt_state"]),
        data=ocp.args.JsonSave(_encode_data_state(data_state)),
        config=ocp.args.JsonSave(config),
        meta=ocp.args.JsonSave(meta),
        checksums=ocp.args.JsonSave(checksums),
      ),
      metrics=ranked,
      force=True,
    )
    if not self.async_save:
      self.manager.wait_until_finished()

  def restore_latest(self, abstract_state: dict, config: dict):
    """(state, data_state, step) from the newest checkpoint that restores and verifies, or None
    if there is none.

    A damaged checkpoint (unreadable, or arrays that differ from their saved checksums) is skipped
    with a warning naming it, and the previous one is tried; a config mismatch is an error.
    """
    steps = self.steps()
    for step in reversed(steps):
      where = os.path.join(checkpoint_dir(self.workdir), str(step))
      try:
        saved_config = self.manager.restore(
          step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
        ).config
      except Exception as e:  # pylint: disable=broad-except
        log.warning(
          "checkpoint %s is unreadable (%s: %s); trying the previous one",
          where,
          type(e).__name__,
          _short(e),
        )
        continue
      check_config_compatible(saved_config, config, where)
      try:
        items = dict(
          params=ocp.args.StandardRestore(abstract_state["params"]),
          opt_state=ocp.args.StandardRestore(abstract_state["opt_state"]),
          data=ocp.args.JsonRestore(),
        )
        if _has_item(where, "checksums"):
          items["checksums"] = ocp.args.JsonRestore()
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        _check_restored(restored.params, abstract_state["params"], where)
        _check_restored(restored.opt_state, abstract_state["opt_state"], where)
        saved = restored["checksums"] if "checksums" in items else None
        _verify_checksums(
          restored.params, None if saved is None else saved.get("params", {}), f"{where}/params"
        )
        _verify_checksums(
          restored.opt_state,
          None if saved is None else saved.get("opt_state", {}),
          f"{where}/opt_state",
        )
      except Exception as e:  # pylint: disable=broad-except
        log.warning(
          "checkpoint %s failed to restore or verify (%s: %s); trying the previous one",
          where,
          type(e).__name__,
          _short(e),
        )
        continue
      state = {
        "step": jax.device_put(
          jax.numpy.asarray(step, jax.numpy.int32), abstract_state["step"].sharding
        ),
        "params": restored.params,
        "opt_state": restored.opt_state,
      }
      return state, _decode_data_state(restored.data), step
    if steps:
      raise NoCheckpointError(
        f"{checkpoint_dir(self.workdir)}: none of the checkpoints {steps} "
        "could be restored (see the warnings above)"
      )
    return None

  def best_step(self, metric: str | None = None) -> int | None:
    """The kept step that is best by `metric` (default `checkpoint.best_metric`; None when none
    has it)."""
    self.manager.wait_until_finished()
    return _best_of(self.manager, metric or self.best_metric, self.best_mode)

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _has_item(step_dir: str, item: str) -> bool:
  # Checkpoints written before an item existed (e.g. `checksums`) are still restorable.
  return epath.Path(step_dir, item).is_dir()


def _step_metrics(manager, step: int):
  try:
    return manager.metrics(step)
  except Exception:  # pylint: disable=broad-except  (a damaged metrics file: not ranked)
    return None


def _best_of(manager, metric: str, mode: str) -> int | None:
  ranked = rank_steps(
    [(s, _step_metrics(manager, s)) for s in sorted(manager.all_steps())], metric, mode
  )
  return ranked[0] if ranked else None


def _short(e: Exception) -> str:
  s = str(e).splitlines()[0] if str(e) else ""
  return s[:300]


def _check_restored(restored, abstract, where: str) -> None:
  got = jax.tree_util.tree_flatten_with_path(restored)[0]
  exp = jax.tree_util.tree_flatten_with_path(abstract)[0]
  if len(got) != len(exp):
    raise ValueError(f"{where}: {len(got)} arrays, expected {len(exp)}")
  for (kp, a), (_, b) in zip(got, exp):
    if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
      raise ValueError(
        f"{where}: {jax.tree_util.keystr(kp)} is {a.shape} {a.dtype}, expected {b.shape} {b.dtype}"
      )


# ------------------------------------------------------------------------------------ read helpers


def all_steps(workdir: str) -> list[int]:
  d = epath.Path(checkpoint_dir(workdir))
  if not d.is_dir():
    return []
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit())


def _best_settings(workdir: str, metric: str | None, mode: str | None) -> tuple[str, str]:
  """The run's `checkpoint.best_metric` / `best_mode` (from its config.json) unless given."""
  ck = {}
  try:
    ck = json.loads(epath.Path(workdir, "config.json").read_text()).get("checkpoint", {}) or {}
  except (OSError, ValueError):
    pass
  metric = metric or ck.get("best_metric") or "val/loss"
  mode = _check_mode(mode or ck.get("best_mode") or "min")
  return str(metric), mode


def best_step(
  workdir: str, *, metric: str | None = None, mode: str | None = None, task: str | None = None
) -> int | None:
  """The kept checkpoint that is best by `metric` (default: the run's checkpoint.best_metric,
  "val/loss", lowest first unless best_mode is "max"; with `task`, that task's share of it,
  `task_metric`), from the metrics saved with each step; None when no checkpoint has it."""
  if not all_steps(workdir):
    return None
  metric, mode = _best_settings(workdir, metric, mode)
  if task:
    metric = task_metric(metric, task)
  quiet_orbax_logs()
  manager = _manager(workdir, read_only=True, best_metric=metric, best_mode=mode)
  try:
    return _best_of(manager, metric, mode)
  finally:
    manager.close()


def step_metric(workdir: str, step: str) -> tuple[str, str]:
  """(metric, mode) that ranks a named step of BEST_STEPS in this run: "best" ->
  checkpoint.best_metric; "best_<task>" -> that task's share of it (`task_metric`)."""
  if step not in BEST_STEPS:
    raise ValueError(
      f"step {step!r}: expected an integer, None (the latest) or one of {BEST_STEPS}"
    )
  metric, mode = _best_settings(workdir, None, None)
  if step != "best":
    metric = task_metric(metric, step[len("best_") :])
  return metric, mode


def latest_step(workdir: str) -> int | None:
  steps = all_steps(workdir)
  return steps[-1] if steps else None


def _candidates(manager, steps: list[int], step, metric: str, mode: str, where: str) -> list[int]:
  """Steps to try, in order: the asked-for one first, then (latest / best only) its fallbacks."""
  if step is None:
    return sorted(steps, reverse=True)
  if step in BEST_STEPS:
    best = rank_steps([(s, _step_metrics(manager, s)) for s in steps], metric, mode)
    if not best:
      source = (
        "checkpoint.best_metric"
        if step == "best"
        else "one task's share of checkpoint.best_metric, saved by a run selected per task "
        "(train.select_per_task)"
      )
      raise NoCheckpointError(
        f"{where}: no checkpoint has the metric {metric!r} ({step!r}: {source}; have steps {steps})"
      )
    # After the ranked ones, the newest of the others: "best" still gives a model if all ranked
    # checkpoints are damaged.
    return best + [s for s in sorted(steps, reverse=True) if s not in best]
  step = int(step)
  if step not in steps:
    raise NoCheckpointError(f"{where}: no checkpoint for step {step} (have {steps})")
  return [step]


def restore_for_inference(workdir: str, step: int | str | None = None, *, mesh=None):
  """(model, config, step) for evaluation: the params of `step` (an int, None = the latest, or a
  named step of BEST_STEPS: "best", "best_search", "best_rec", see `step_metric`) placed on `mesh`
  (default: all devices, data-parallel).

  The params are verified against the checksums saved with them. For the latest or the best step,
  a checkpoint that fails to restore or verify is skipped with a warning naming it, for the
  previous one (the next best); an explicitly asked-for step raises CheckpointCorruptError. Either
  way the error is one line: no Orbax traceback reaches the user.
  """
  quiet_orbax_logs()
  root = checkpoint_dir(workdir)
  steps = all_steps(workdir)
  if not steps:
    raise NoCheckpointError(f"{root}: no checkpoint (train this workdir first)")
  if step in BEST_STEPS:
    metric, mode = step_metric(workdir, step)
  else:
    metric, mode = _best_settings(workdir, None, None)
  manager = _manager(workdir, read_only=True, best_metric=metric, best_mode=mode)
  try:
    order = _candidates(manager, steps, step, metric, mode, root)
    cfg_path = epath.Path(workdir, "config.json")
    run_config = json.loads(cfg_path.read_text()) if cfg_path.exists() else None
    built: dict[str, Any] = {}
    failures = []
    for s in order:
      where = os.path.join(root, str(s))
      try:
        saved = manager.restore(s, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
      except Exception as e:  # pylint: disable=broad-except
        failures.append(f"{where}: unreadable config ({type(e).__name__}: {_short(e)})")
        _warn_fallback(failures[-1], s, order)
        continue
      if run_config is not None:
        check_config_compatible(saved, run_config, f"{where} vs {cfg_path}")
      config = ml_collections.ConfigDict(saved)
      key = json.dumps(saved, sort_keys=True, default=str)
      if key not in built:
        if mesh is None:
          mesh = partitioning.make_mesh(data=-1, model=1)
        built[key] = build_lib.build_model(_no_init_from(config), mesh, abstract=True)
      parts, abstract_params = built[key]
      try:
        items = {"params": ocp.args.StandardRestore(abstract_params)}
        if _has_item(where, "checksums"):
          items["checksums"] = ocp.args.JsonRestore()
        restored = manager.restore(s, args=ocp.args.Composite(**items))
        _check_restored(restored.params, abstract_params, where)
        saved_sums = restored["checksums"] if "checksums" in items else None
        _verify_checksums(
          restored.params,
          None if saved_sums is None else saved_sums.get("params", {}),
          f"{where}/params",
        )
      except Exception as e:  # pylint: disable=broad-except
        msg = (
          str(e)
          if isinstance(e, CheckpointCorruptError)
          else (f"{where}: params failed to restore ({type(e).__name__}: {_short(e)})")
        )
        failures.append(" ".join(msg.split()))
        _warn_fallback(failures[-1], s, order)
        continue
      model = build_lib.merge(parts, restored.params)
      return model, config, s
  finally:
    manager.close()
  if len(order) == 1:
    raise CheckpointCorruptError(failures[0])
  raise CheckpointCorruptError(
    f"{root}: no checkpoint of {order} restores and verifies (first: {failures[0]})"
  )


def _warn_fallback(failure: str, step: int, order: list[int]) -> None:
  i = order.index(step)
  if i + 1 < len(order):
    log.warning("checkpoint %s; using the previous one (step %d) instead", failure, order[i + 1])


def verify_dataset_of(config, data_dir: str) -> None:
  """Checks that `data_dir` is the dataset a restored run `config` was trained on: every file's
  sha256 against its manifest and the config's data hash against the manifest's (DataError, a
  ValueError, naming the file or field and both values). A directory without manifest.json (a
  hand-made dataset) is not checked."""
  from gr_jax.data.dataset import verify_dataset  # pylint: disable=g-import-not-at-top

  verify_dataset(data_dir, config, require_manifest=False)


def _no_init_from(config):
  # The architecture is fully in model.overrides of a resolved config: no need for the HF dir.
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.init_from = ""
  return config
