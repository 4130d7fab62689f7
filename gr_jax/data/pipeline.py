"""Input pipeline on grain: mixed-task training batches and padded evaluation batches.

Training (`make_train_loader`):
  * Pool: the training examples of the chosen tasks; `data.item_cap` keeps at most that many
    training examples per target item in task `data.item_cap_task` (a fixed subset chosen by seed:
    the paper's 5/10/50/500 analysis).
  * Mixing. `data.task_ratio == 0` (paper): the tasks' examples are concatenated and globally
    shuffled each epoch (permutation seeded by (seed, epoch)). `0 < task_ratio < 1`: every batch
    holds round(task_ratio * batch_size) search rows and the rest rec rows, each task read from its
    own endless stream of seeded permutations (a task that runs out starts a new permutation); an
    "epoch" is then the same number of examples as the concatenation.
  * Epochs drop the last incomplete batch, so every step has the same shapes (no recompiles) and
    steps_per_epoch = pool_size // batch_size.
  * Sharding: each global batch is cut into process_count contiguous slices of
    batch_size // process_count rows; process p takes slice p, so the processes together see every
    example of the global batch exactly once.
  * State: grain's MapDataset over global step numbers; the iterator state is {"next_index": step}
    plus a fingerprint of what determines the stream, all JSON, for orbax's JsonSave. Restoring it
    reproduces the following batches exactly (they are a pure function of seed and step).

Batches (BUILD_NOTES.md): encoder_input_ids int32 [B, Le]; decoder_input_ids int32 [B, Ld]
(`[0, <item>]`); decoder_target_ids int32 [B, Ld] (`[<item>, </s>]`); decoder_weights f32 [B, Ld];
task_id int32 [B] (0 search, 1 rec). With semantic IDs the target is `<c1> ... <cL> [<d>] </s>`
and Ld is the dataset's (tokens_per_item + 1), not data.decoder_len.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Iterator, Sequence

import grain
import numpy as np

from gr_jax.data.dataset import ProcessedDataset, RowsView
from gr_jax.data.tokenizer import EOS_ID
from gr_jax.schema import BATCH_KEYS, TASKS

TRAIN_KEYS = BATCH_KEYS  # kept for callers of the old name


def _check_shapes(dataset: ProcessedDataset, dc) -> tuple[int, int]:
  le, ld = int(dc.encoder_len), int(dc.decoder_len)
  if dataset.catalog.id_scheme != "atomic":
    # Semantic IDs fix the decoder length (codes + EOS): prepare wrote it to the manifest.
    ld = dataset.decoder_len
  if le != dataset.encoder_len:
    raise ValueError(
      f"data.encoder_len={le} but the processed dataset {dataset.directory} was "
      f"built with {dataset.encoder_len}; prepare it again or match the config"
    )
  if ld < dataset.catalog.tokens_per_item + 1:
    raise ValueError(
      f"data.decoder_len={ld} cannot hold an item ID of "
      f"{dataset.catalog.tokens_per_item} tokens plus EOS"
    )
  return le, ld


# Task prefixes (data.task_prefix, ours; off by default as in the paper): T5's own convention of a
# text instruction before the input ("summarize: ..."), so a pretrained tokenizer and model read it
# as text and no vocabulary entries are added. The prefix is applied here, after `prepare`, so one
# processed dataset serves runs with and without it.
TASK_PREFIX_TEXT = {"search": "search:", "rec": "recommend:"}


def task_prefix_ids(tokenizer, task: str) -> np.ndarray:
  """Token ids of the task's prefix text (no EOS)."""
  if task not in TASK_PREFIX_TEXT:
    raise ValueError(f"unknown task {task!r}; expected one of {tuple(TASK_PREFIX_TEXT)}")
  ids = np.asarray(tokenizer.encode(TASK_PREFIX_TEXT[task]), np.int32)
  other = [
    np.asarray(tokenizer.encode(t), np.int32).tolist()
    for k, t in TASK_PREFIX_TEXT.items()
    if k != task
  ]
  if ids.size == 0 or ids.tolist() in other:
    raise ValueError(
      f"data.task_prefix: the tokenizer encodes {TASK_PREFIX_TEXT[task]!r} to "
      f"{ids.tolist()}, which does not tell the tasks apart"
    )
  return ids


def add_task_prefix(encoder_input_ids: np.ndarray, task: str, tokenizer) -> np.ndarray:
  """`[N, Le]` rows of `tokens, EOS, 0...` -> `prefix, tokens', EOS, 0...` of the same length.

  When the row no longer fits, search rows drop their last query tokens (as the tokenizer's own
  truncation does) and rec rows drop their oldest items (as `data.max_history` does)."""
  enc = np.asarray(encoder_input_ids, np.int32)
  prefix = task_prefix_ids(tokenizer, task)
  n_rows, le = enc.shape
  room = le - len(prefix) - 1  # content tokens that fit beside prefix and EOS
  if room < 1:
    raise ValueError(
      f"data.task_prefix: the {task} prefix takes {len(prefix)} tokens, which leaves "
      f"no room in data.encoder_len={le}"
    )
  n_content = np.maximum((enc != 0).sum(axis=1) - 1, 0)  # padding is 0, content never is; - EOS
  keep = np.minimum(n_content, room)  # [N]
  first = np.zeros_like(keep) if task == "search" else n_content - keep  # rec: the newest items
  cols = np.arange(room)
  kept = np.take_along_axis(enc, np.minimum(first[:, None] + cols, le - 1), axis=1)  # [N, room]
  out = np.zeros_like(enc)
  out[:, : len(prefix)] = prefix
  out[:, len(prefix) : len(prefix) + room] = np.where(cols < keep[:, None], kept, 0)
  out[np.arange(n_rows), len(prefix) + keep] = EOS_ID
  return out


def decoder_arrays(catalog, target_item: np.ndarray, decoder_len: int):
  """(decoder_input_ids, decoder_target_ids, decoder_weights) for item indices `[N]`."""
  n = len(target_item)
  tpi = catalog.tokens_per_item
  target = np.zeros((n, decoder_len), np.int32)  # [N, Ld]
  valid = target_item >= 0
  target[:, :tpi] = np.where(valid[:, None], catalog.item_tokens(np.maximum(target_item, 0)), 0)
  target[:, tpi] = np.where(valid, EOS_ID, 0)
  inputs = np.zeros_like(target)  # [N, Ld]; 0 = decoder start
  inputs[:, 1:] = target[:, :-1]
  weights = (target != 0).astype(np.float32)  # [N, Ld]
  return inputs, target, weights


def _capped_indices(targets: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
  """Indices keeping at most `cap` examples per target item (a seeded random subset)."""
  perm = rng.permutation(len(targets))
  order = perm[np.argsort(targets[perm], kind="stable")]  # grouped by item, random within
  sorted_t = targets[order]
  group_start = np.searchsorted(sorted_t, sorted_t, side="left")
  rank = np.arange(len(order)) - group_start
  return np.sort(order[rank < cap])


def training_pool(dataset: ProcessedDataset, dc, tasks: Sequence[str], seed: int):
  """Per task: (encoder_input_ids, target_item) of the training examples after the item cap."""
  pool = {}
  cap, cap_task = int(getattr(dc, "item_cap", 0) or 0), getattr(dc, "item_cap_task", "") or ""
  for task in tasks:
    if task not in TASKS:
      raise ValueError(f"unknown task {task!r}; expected some of {TASKS}")
    arrays = dataset.split(task, "train")
    enc, tgt = arrays["encoder_input_ids"], arrays["target_item"]
    if cap > 0 and task == cap_task:
      keep = _capped_indices(tgt, cap, np.random.default_rng([int(seed), 7919]))
      # Rows stored compactly (rec sessions + offsets, search query rows) stay so: built per batch.
      enc, tgt = (enc.take(keep) if isinstance(enc, RowsView) else enc[keep]), tgt[keep]
    pool[task] = (enc, tgt)
  return pool


def steps_per_epoch(
  dataset: ProcessedDataset, data_config, *, tasks: Sequence[str], batch_size: int, seed: int = 0
) -> int:
  """Full global batches per epoch (the last incomplete batch is dropped)."""
  pool = training_pool(dataset, data_config, tasks, seed)
  return sum(len(t) for _, t in pool.values()) // int(batch_size)


class TrainLoader:
  """Iterable of training batches with exact, JSON-serialisable iterator state."""

  def __init__(
    self,
    dataset: ProcessedDataset,
    dc,
    *,
    tasks: Sequence[str],
    batch_size: int,
    seed: int,
    num_epochs: int | None,
    process_index: int = 0,
    process_count: int = 1,
  ):
    self.le, self.ld = _check_shapes(dataset, dc)
    self.catalog = dataset.catalog
    self.tasks = tuple(tasks)
    if not self.tasks:
      raise ValueError("make_train_loader: no task given")
    if batch_size % process_count:
      raise ValueError(f"batch_size {batch_size} is not divisible by process_count {process_count}")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    self.batch_size, self.seed = int(batch_size), int(seed)
    self.process_index, self.process_count = int(process_index), int(process_count)
    self.per_process = self.batch_size // self.process_count
    self.shuffle = bool(getattr(dc, "shuffle", True))
    self.ratio = float(getattr(dc, "task_ratio", 0.0) or 0.0)
    if not 0.0 <= self.ratio <= 1.0:
      raise ValueError(f"data.task_ratio must be in [0, 1], got {self.ratio}")
    pool = training_pool(dataset, dc, self.tasks, self.seed)
    # Task prefixes are added per batch (`_batch`), so rows stored as sessions + offsets are
    # never built for the whole pool at once.
    self.task_prefix = bool(getattr(dc, "task_prefix", False))
    self.tokenizer = dataset.tokenizer if self.task_prefix else None
    self.enc = {t: pool[t][0] for t in self.tasks}
    self.tgt = {t: pool[t][1] for t in self.tasks}
    self.pool_size = sum(len(v) for v in self.tgt.values())
    self.steps_per_epoch = self.pool_size // self.batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(
        f"{self.pool_size} training examples for tasks {self.tasks} cannot fill one "
        f"batch of {self.batch_size}"
      )
    self.mixed = self.ratio > 0 and len(self.tasks) == 2
    if self.mixed:
      n_search = int(round(self.ratio * self.batch_size))
      self.rows = {"search": n_search, "rec": self.batch_size - n_search}
      for t in self.tasks:
        if self.rows[t] and not len(self.tgt[t]):
          raise ValueError(f"task_ratio asks for {t} rows but {t} has no training examples")
    else:
      # Concatenation: one pool in TASKS order (the encoder rows stay per task; `_pool_start`
      # [task id]: where the task's rows begin in the pool).
      self._pool_start = np.zeros(len(TASKS), np.int64)
      for t, start in zip(self.tasks, np.cumsum([0] + [len(self.tgt[t]) for t in self.tasks])):
        self._pool_start[TASKS.index(t)] = start
      self.all_tgt = np.concatenate([self.tgt[t] for t in self.tasks])
      self.all_task = np.concatenate(
        [np.full(len(self.tgt[t]), TASKS.index(t), np.int32) for t in self.tasks]
      )
    self.num_epochs = num_epochs
    self.total_steps = (
      self.steps_per_epoch * int(num_epochs) if num_epochs else np.iinfo(np.int64).max // 2
    )
    self._perm_cache: dict = {}
    # grain's reader threads ask for the same epoch permutation at once: without the lock each
    # drew its own (16 x 200 MB for ML-25M's 25M-example pool on the first batch).
    self._perm_lock = threading.Lock()
    blob = json.dumps(
      [
        dataset.manifest.get("config_hash"),
        self.tasks,
        self.batch_size,
        self.seed,
        self.process_index,
        self.process_count,
        self.shuffle,
        self.ratio,
        self.pool_size,
        getattr(dc, "item_cap", 0),
        getattr(dc, "item_cap_task", ""),
      ]
      + (["task_prefix"] if self.task_prefix else [])
    )  # old states stay valid
    self.fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:16]
    self._ds = grain.MapDataset.range(self.total_steps).map(self._batch)
    self._iter = None

  # ---------------------------------------------------------------- index logic
  def _perm(self, key: tuple, n: int) -> np.ndarray:
    with self._perm_lock:
      return self._perm_locked(key, n)

  def _perm_locked(self, key: tuple, n: int) -> np.ndarray:
    if key not in self._perm_cache:
      if len(self._perm_cache) > 8:
        self._perm_cache.clear()
      rng = np.random.default_rng([self.seed, *key])
      self._perm_cache[key] = rng.permutation(n) if self.shuffle else np.arange(n)
    return self._perm_cache[key]

  def _stream(self, task: str, start: int, count: int) -> np.ndarray:
    """Positions [start, start+count) of the task's endless stream of permutations."""
    n = len(self.tgt[task])
    pos = np.arange(start, start + count, dtype=np.int64)
    cycles, offsets = pos // n, pos % n
    out = np.empty(count, np.int64)
    for c in np.unique(cycles):
      sel = cycles == c
      out[sel] = self._perm((TASKS.index(task), 1, int(c)), n)[offsets[sel]]
    return out

  def global_rows(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(task_id [B], example index within its task's pool [B]) of global batch `step`."""
    if self.mixed:
      parts_t, parts_i = [], []
      for t in self.tasks:
        k = self.rows[t]
        parts_i.append(self._stream(t, step * k, k))
        parts_t.append(np.full(k, TASKS.index(t), np.int32))
      task, idx = np.concatenate(parts_t), np.concatenate(parts_i)
      # Interleave the tasks so that each process's slice keeps the ratio (on average).
      order = np.random.default_rng([self.seed, 2, step]).permutation(self.batch_size)
      return task[order], idx[order]
    epoch, b = divmod(step, self.steps_per_epoch)
    perm = self._perm((0, epoch), self.pool_size)
    rows = perm[b * self.batch_size : (b + 1) * self.batch_size]
    return self.all_task[rows], rows

  def _batch(self, step: int) -> dict[str, np.ndarray]:
    task, idx = self.global_rows(int(step))
    lo = self.process_index * self.per_process
    task, idx = task[lo : lo + self.per_process], idx[lo : lo + self.per_process]
    if not self.mixed:  # concatenated pool index -> index within the row's task
      idx = idx - self._pool_start[task]
    enc = np.zeros((self.per_process, self.le), np.int32)
    tgt = np.zeros(self.per_process, np.int32)
    for t in self.tasks:
      sel = task == TASKS.index(t)
      if sel.any():
        rows = np.asarray(self.enc[t][idx[sel]], np.int32)
        enc[sel] = add_task_prefix(rows, t, self.tokenizer) if self.task_prefix else rows
        tgt[sel] = self.tgt[t][idx[sel]]
    dec_in, dec_tgt, weights = decoder_arrays(self.catalog, tgt, self.ld)
    return {
      "encoder_input_ids": enc,
      "decoder_input_ids": dec_in,
      "decoder_target_ids": dec_tgt,
      "decoder_weights": weights,
      "task_id": task.astype(np.int32),
    }

  # ---------------------------------------------------------------- iteration and state
  def _ensure_iter(self):
    if self._iter is None:
      self._iter = iter(self._ds.to_iter_dataset())
    return self._iter

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    it = self._ensure_iter()
    while True:
      try:
        yield next(it)
      except StopIteration:
        return

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._ensure_iter())

  def __len__(self) -> int:
    return int(self.total_steps)

  def get_state(self) -> dict:
    state = dict(self._ensure_iter().get_state())
    return {"grain": state, "fingerprint": self.fingerprint}

  def set_state(self, state: dict) -> None:
    if state.get("fingerprint") != self.fingerprint:
      raise ValueError(
        f"iterator state was saved by a different pipeline (fingerprint "
        f"{state.get('fingerprint')} != {self.fingerprint}): seed, batch size, "
        "tasks, sharding or dataset changed"
      )
    self._ensure_iter().set_state(dict(state["grain"]))


def make_train_loader(
  dataset: ProcessedDataset,
  data_config,
  *,
  tasks: Sequence[str],
  batch_size: int,
  seed: int,
  num_epochs: int | None,
  process_index: int = 0,
  process_count: int = 1,
) -> TrainLoader:
  """Training batches for this process (batch_size // process_count rows each); see module doc.

  num_epochs=None (or 0) repeats forever (the trainer stops at train.num_steps).
  """
  return TrainLoader(
    dataset,
    data_config,
    tasks=tasks,
    batch_size=batch_size,
    seed=seed,
    num_epochs=num_epochs,
    process_index=process_index,
    process_count=process_count,
  )


def make_eval_batches(
  dataset: ProcessedDataset,
  task: str,
  split: str,
  batch_size: int,
  *,
  data_config=None,
  unique_queries: bool = False,
  process_index: int = 0,
  process_count: int = 1,
) -> list[dict[str, np.ndarray]]:
  """Evaluation batches in split order, the last padded with weight-0 rows.

  Keys: the five training keys plus `query_id` int32 [B] (-1 on padding), `target_item` int32 [B]
  (-1 on padding) and `weight` float32 [B] (0 on padding; decoder_weights are 0 there too).
  unique_queries=True keeps one row per query_id (for decoding: the query's relevant items are
  `dataset.qrels(task, split)`); target_item is then the query's first relevant item.
  Padding rows copy the first row's encoder input so no row is fully masked.
  `data_config.task_prefix` adds the task prefix as in training (`add_task_prefix`).
  With process_count > 1 every global batch of batch_size rows is sliced as in training.
  """
  arrays = dataset.split(task, split)
  enc, tgt, qid = arrays["encoder_input_ids"], arrays["target_item"], arrays["query_id"]
  if data_config is not None and getattr(data_config, "task_prefix", False):
    enc = add_task_prefix(np.asarray(enc), task, dataset.tokenizer)
  if unique_queries:
    _, first = np.unique(qid, return_index=True)
    first = np.sort(first)
    enc, tgt, qid = enc[first], tgt[first], qid[first]
  n = len(tgt)
  if batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} is not divisible by process_count {process_count}")
  per = batch_size // process_count
  task_id = TASKS.index(task)
  batches = []
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    pad = batch_size - (stop - start)
    b_enc = np.concatenate([enc[start:stop], np.repeat(enc[:1], pad, axis=0)])  # [B, Le]
    b_tgt = np.concatenate([tgt[start:stop], np.full(pad, -1, np.int32)])  # [B]
    b_qid = np.concatenate([qid[start:stop], np.full(pad, -1, np.int32)])  # [B]
    weight = np.concatenate([np.ones(stop - start, np.float32), np.zeros(pad, np.float32)])
    dec_in, dec_tgt, dec_w = decoder_arrays(dataset.catalog, b_tgt, dataset.decoder_len)
    batch = {
      "encoder_input_ids": b_enc.astype(np.int32),
      "decoder_input_ids": dec_in,
      "decoder_target_ids": dec_tgt,
      "decoder_weights": dec_w,
      "task_id": np.full(batch_size, task_id, np.int32),
      "query_id": b_qid.astype(np.int32),
      "target_item": b_tgt.astype(np.int32),
      "weight": weight,
    }
    lo = process_index * per
    batches.append({k: v[lo : lo + per] for k, v in batch.items()})
  return batches
