"""Shared pieces of the trained and lexical baselines: full-catalogue top-K, run directories, and
the training plumbing of the trained ones (metrics.jsonl, Orbax checkpoints, blocked scoring).

Every baseline scores *all* items of the catalogue for each query and keeps the top
`K = max(config.eval.ks)`. The cut is taken in the metrics' own order (score descending, ties by
item id descending, `gr_jax.evaluation.metrics.rank_items`), so the K items written are exactly the
first K of the full ranking the metrics would make: no tie straddling rank K can change a value.
With `config.eval.exclude_seen` a rec query's own history items are scored -inf before the cut
(`exclude_seen_scores`) and never written: the K best remaining items, in the unmasked order.
"""

from __future__ import annotations

import functools
import json
import math
import os
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gr_jax.evaluation import metrics as metrics_lib
from gr_jax import workdir as workdir_lib
from gr_jax.evaluation import runs as runs_lib


def tie_order(item_ids: Sequence[str]) -> np.ndarray:
  """int64 `[num_items]`: 0 for the item the metrics put first among equal scores (largest id)."""
  order = sorted(range(len(item_ids)), key=lambda i: item_ids[i], reverse=True)
  rank = np.empty(len(item_ids), np.int64)
  rank[np.asarray(order, np.int64)] = np.arange(len(item_ids))
  return rank


def top_k(scores: np.ndarray, k: int, ties: np.ndarray) -> np.ndarray:
  """Indices `[Q, min(k, n)]` of each row's best items in metric order (see module doc).

  scores: float `[Q, n]`; ties: `tie_order(...)` `[n]`.
  """
  scores = np.asarray(scores)
  q, n = scores.shape
  k = min(int(k), n)
  out = np.zeros([q, k], np.int64)
  if k == 0:
    return out
  # k-th largest score of each row: every item at or above it is a candidate, then an exact sort
  # of the (few) candidates by (score desc, tie rank asc) picks the first k.
  kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]  # [Q]
  for r in range(q):
    cand = np.flatnonzero(scores[r] >= kth[r])  # [C >= k]
    order = np.lexsort((ties[cand], -scores[r, cand]))  # last key is primary
    out[r] = cand[order[:k]]
  return out


def run_from_top_k(
  query_ids: Sequence[str], idx: np.ndarray, scores: np.ndarray, item_ids: Sequence[str]
) -> dict[str, dict[str, float]]:
  """`{qid: {item_id: score}}` from top-K indices `[Q, K]` and the full score rows `[Q, n]`;
  excluded items (score -inf) are left out."""
  run = {}
  for r, qid in enumerate(query_ids):
    run[qid] = {
      item_ids[int(i)]: float(scores[r, int(i)]) for i in idx[r] if np.isfinite(scores[r, int(i)])
    }
  return run


def exclude_seen(config) -> bool:
  """`config.eval.exclude_seen` (False when the config predates it)."""
  return bool(config.eval.get("exclude_seen", False))


def query_histories(catalog, arrays: Mapping, rows) -> list[np.ndarray]:
  """Each query's history items (item indices) for the split rows `rows` (its first example)."""
  from gr_jax.data.dataset import query_histories as read  # pylint: disable=g-import-not-at-top

  return read(arrays, rows, catalog)


def exclude_seen_scores(scores: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
  """float `[Q, n]` score rows with row q's items `histories[q]` set to -inf (a copy)."""
  scores = np.array(scores, dtype=np.result_type(scores, np.float32), copy=True)
  for r, h in enumerate(histories):
    scores[r, np.asarray(h, np.int64)] = -np.inf
  return scores


def write_config(out_dir: str, config, name: str) -> None:
  """`config.json` of a baseline run: the whole resolved config plus which baseline it is."""
  d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  d = dict(d, baseline=name)
  os.makedirs(out_dir, exist_ok=True)
  workdir_lib.write_text(
    os.path.join(out_dir, "config.json"),
    json.dumps(d, indent=2, sort_keys=True, default=list) + "\n",
  )


def evaluate_and_write(
  out_dir: str,
  split: str,
  task: str,
  run: Mapping,
  arrays: Mapping,
  item_ids: Sequence[str],
  ks: Sequence[int],
  name: str,
  info: Mapping | None = None,
) -> dict:
  """Metrics of one task's run against the split's qrels, written as `eval/<split>/` of `out_dir`.

  Returns the metrics.json object (`{task: {metric: mean}, "info": {...}}`).
  """
  return evaluate_and_write_tasks(out_dir, split, {task: (run, arrays)}, item_ids, ks, name, info)


def evaluate_and_write_tasks(
  out_dir: str,
  split: str,
  runs: Mapping[str, tuple[Mapping, Mapping]],
  item_ids: Sequence[str],
  ks: Sequence[int],
  name: str,
  info: Mapping | None = None,
) -> dict:
  """`evaluate_and_write` for several tasks at once: `runs` is `{task: (run, split arrays)}`.

  The eval directory is committed as one unit, so a model evaluated on two tasks must write both
  here in one call (a second call would replace the first task's files).
  """
  results = {}
  for task, (run, arrays) in runs.items():
    qrels = runs_lib.qrels_from_split(arrays, item_ids, f"{task}/{split}.npz")
    means, pq = metrics_lib.evaluate_run(qrels, run, ks)
    results[task] = {"run": run, "qrels": qrels, "means": means, "per_query": pq}
  extra = {
    "info": dict(
      info or {},
      model=name,
      split=split,
      ks=list(ks),
      metric_note="recall@K is Recall; equals Success@K with one target per query",
    )
  }
  return runs_lib.write_eval_outputs(runs_lib.eval_dir(out_dir, split), results, extra, tag=name)


# -------------------------------------------------------------------- training plumbing (trained)


def plain(x):
  """A config section (or value) as plain JSON-able dicts and lists (a checkpoint fingerprint)."""
  if hasattr(x, "to_dict"):
    x = x.to_dict()
  if isinstance(x, dict):
    return {k: plain(v) for k, v in x.items()}
  return list(x) if isinstance(x, tuple) else x


def blocks(n: int, size: int):
  """`(start, end)` of consecutive blocks of `size` rows covering `n` rows."""
  for s in range(0, n, size):
    yield s, min(n, s + size)


def score_inputs(scores_fn, params, tokens: np.ndarray, batch: int) -> np.ndarray:
  """float32 `[N, n]` scores of all items for input rows `[N, L]` (fixed-shape padded blocks).

  scores_fn: jitted `(params, tokens [batch, L]) -> [batch, n]`.
  """
  out = []
  for s, e in blocks(len(tokens), batch):
    blk = np.zeros([batch, tokens.shape[1]], np.int32)  # one compiled shape for every block
    blk[: e - s] = tokens[s:e]
    out.append(np.asarray(scores_fn(params, jnp.asarray(blk)))[: e - s])
  return np.concatenate(out) if out else np.zeros([0, 0], np.float32)


@functools.lru_cache(maxsize=16)
def ranks_fn(scores_fn):
  """Jitted `(params, tokens [B, L], targets [B]) -> items scored strictly above the target [B]`."""

  @jax.jit
  def ranks(params, tokens, targets):
    s = scores_fn(params, tokens)  # [B, n]
    t = jnp.take_along_axis(s, targets[:, None], axis=1)  # [B, 1]
    return jnp.sum(s > t, axis=1)  # [B]

  return ranks


# Where a baseline's validation only logs (its result is the final step), the default period is
# once per epoch but at most this many decodes in a run (the quickstart's bi-encoder has 2-step
# epochs, and 1,000 validations were three quarters of its 30 s).
MAX_DEFAULT_VALIDATIONS = 20


def validation_period(
  eval_every_steps: int, steps_per_epoch: int, total_steps: int, *, selects: bool = False
) -> int:
  """Steps between validation decodes: `eval_every_steps`, or 0 = once per epoch; when the
  validation only logs (`selects` False), at most `MAX_DEFAULT_VALIDATIONS` in the run. A run that
  selects its best decode (`select_best`) validates every epoch whatever its length: patience
  counts decodes, so a capped period would stretch it (10 decodes = 100 epochs in a 200-epoch run).
  The last step always validates."""
  if int(eval_every_steps) > 0:
    return int(eval_every_steps)
  if selects:
    return int(steps_per_epoch)
  return max(int(steps_per_epoch), math.ceil(int(total_steps) / MAX_DEFAULT_VALIDATIONS))


def validation_recall(
  ranks, params, tokens: np.ndarray, targets: np.ndarray, ks: Sequence[int], batch: int
) -> dict[str, float]:
  """Recall@K over rows (one target each, as in the rec splits), from `ranks_fn` on device."""
  got = []
  for s, e in blocks(len(tokens), batch):
    blk = np.zeros([batch, tokens.shape[1]], np.int32)  # one compiled shape for every block
    tb = np.zeros([batch], np.int32)
    blk[: e - s], tb[: e - s] = tokens[s:e], targets[s:e]
    got.append(np.asarray(ranks(params, jnp.asarray(blk), jnp.asarray(tb)))[: e - s])
  r = np.concatenate(got) if got else np.zeros([0], np.int64)
  return {f"recall@{k}": float(np.mean(r < k)) if len(r) else 0.0 for k in ks}


def log_loss(metrics, name: str, step: int, loss, steps_per_epoch: int) -> None:
  """A training-loss line of metrics.jsonl; a non-finite loss stops the run (naming `name`)."""
  loss = float(loss)
  if not math.isfinite(loss):
    raise FloatingPointError(f"{name}: non-finite training loss at step {step}")
  metrics.write({"step": step, "loss": loss, "epoch": (step - 1) // steps_per_epoch})


def log_progress(
  logger,
  name: str,
  step: int,
  total: int,
  steps_per_epoch: int,
  loss,
  examples: int,
  seconds: float,
  timed_steps: int,
) -> None:
  """The trainer's progress line (gr_jax/training/loop.py) for a baseline's training loop:
  `<name>: step i/n (epoch e) loss x | ex/s ETA h:mm:ss`. `examples` and `seconds` count the
  `timed_steps` steps after the first (compiling) one, without validation and saves; the ETA is
  the remaining steps at their mean time ("compiling" before any step is timed)."""
  if timed_steps > 0 and seconds > 0:
    eta = (total - step) * seconds / timed_steps
    speed = f"{examples / seconds:.1f} ex/s ETA {_hms(eta)}"
  else:
    speed = "compiling"
  logger.info(
    "%s: step %d/%d (epoch %.2f) loss %.4f | %s",
    name,
    step,
    total,
    step / max(1, steps_per_epoch),
    float(loss),
    speed,
  )


def _hms(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# metrics.jsonl of a trained baseline: the trainer's own (resume truncation; local or gs://).
MetricsLog = workdir_lib.MetricsLog


class Checkpoints:
  """Orbax checkpoints `<workdir>/checkpoints/<step>/` of (params, optimizer state, meta).

  meta holds the step and a fingerprint (config section, data sizes): a run directory written by
  another config or dataset refuses to resume instead of silently mixing the two.
  """

  _ITEMS = ("params", "opt_state", "meta")

  def __init__(self, workdir: str, name: str, fingerprint: Mapping, keep: int = 2):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

    self._ocp = ocp
    self.workdir, self.name = workdir, name
    self.fingerprint = json.loads(json.dumps(fingerprint))
    self.mngr = ocp.CheckpointManager(
      os.path.join(workdir_lib.absolute(workdir), "checkpoints"),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
      item_names=self._ITEMS,
    )

  def latest_step(self) -> int | None:
    return self.mngr.latest_step()

  def restore(self, params, opt_state=None):
    """`(params, opt_state, step)` of the newest checkpoint (targets, concrete or abstract, give the
    structure; opt_state None: params only, opt_state comes back None), or None when there is
    none. Raises ValueError when it was written under another fingerprint."""
    ocp, latest = self._ocp, self.mngr.latest_step()
    if latest is None:
      return None
    meta = self.mngr.restore(latest, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    if meta.get("fingerprint") != self.fingerprint:
      raise ValueError(
        f"{self.workdir}/checkpoints/{latest} was written by another {self.name} "
        "config or dataset; use a new out_dir for a new run"
      )
    items = {"params": ocp.args.StandardRestore(params)}
    if opt_state is not None:
      items["opt_state"] = ocp.args.StandardRestore(opt_state)
    got = self.mngr.restore(latest, args=ocp.args.Composite(**items))
    return got.params, got.opt_state if opt_state is not None else None, int(latest)

  def save(self, step: int, params, opt_state) -> None:
    """Writes step `step` (synchronously); a step already saved is left as it is."""
    if step in self.mngr.all_steps():
      return
    ocp = self._ocp
    self.mngr.save(
      step,
      args=ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        opt_state=ocp.args.StandardSave(opt_state),
        meta=ocp.args.JsonSave({"step": step, "fingerprint": self.fingerprint}),
      ),
      force=True,
    )
    self.mngr.wait_until_finished()

  def close(self) -> None:
    self.mngr.close()
