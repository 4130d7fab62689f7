"""Dense bi-encoder baseline (DPR-style two towers): search, rec, or one model for both.

Towers.
- Input tower: the gr-jax T5 *encoder* (`config.baselines.biencoder.preset` + `overrides`, trained
  from scratch), mean-pooled over the non-padding tokens (EOS included), then an optional linear
  projection without bias (`projection_dim`; 0 = none, the embedding is the pooled d_model vector,
  as DPR's default `projection_dim=0` and the sentence-transformers Transformer + Pooling stack).
  Search inputs are the tokenised queries and rec inputs the item-token histories, both exactly the
  `encoder_input_ids` the generative model reads (same token layout: text tokens, then item ID
  tokens after `catalog.token_offset`, one per history item with atomic IDs or its code tokens
  with semantic IDs; the embedding has rows for the catalogue's `num_id_tokens` ID tokens only
  when "rec" is trained). The tower reads histories as tokens, so it needs no item indices. Only
  `T5.encode` is used: the T5 is built with one decoder layer and tied embeddings so the unused
  decoder costs little (its few parameters get no gradient; AdamW only decays them).
- Item tower: `item_tower="embedding"` (default): a learned table `[num_items, dim]`, separate from
  the encoder's item-token rows. `item_tower="text"`: the same encoder (and projection) over the
  item's catalogue text, its title plus the string values of its metadata (`bm25.metadata_text`:
  numbers such as the simulator's cluster labels are left out), tokenised with the dataset's
  tokenizer to `item_text_len` tokens. A dataset whose catalogue has no item text refuses it.

Similarity: `cosine` (both sides L2-normalised; sentence-transformers' MultipleNegativesRanking
loss) or `dot` (DPR). Training logits are similarity / `temperature`; written scores are the plain
similarity (the same ranking).

Loss.
- `in_batch` (default; DPR, MNRL): softmax cross-entropy of each input over the batch's target
  items. An in-batch candidate is masked (not a negative) when it is the row's own target held by
  another row, or the target of another row with identical encoder input (another relevant item
  of the same query); padding rows of the last batch are neither queries nor candidates.
- `full`: softmax over the whole catalogue (embedding tower only: one `[B, num_items]` matmul per
  step, cheap for atomic catalogues up to ~10^5 items; the text tower would have to encode every
  item at every step). Other relevant items of the same query are negatives there, as in the
  generative model's and SASRec's cross-entropy.

Tasks (`tasks`): "search", "rec" or "search,rec". With both, one model trains on the union of the
two tasks' training examples (shuffled together) and is evaluated on each task. That joint model
is what semantic IDs can embed items with: `item_embeddings(run_dir_or_result, dataset)` returns
the `[num_items, dim]` item vectors in catalogue order (the ones the scores are taken against).

Inference: every catalogue item is scored for every query by one `[Q, dim] x [dim, num_items]`
matmul on the device; the top `max(config.eval.ks)` are kept in the metrics' tie order
(`common.top_k`). Validation Recall@K (`config.eval.ks`, counting items scored strictly higher than
the target, per valid row) of each trained task is logged every `eval_every_steps`; the result is
the final step (sequential.py does no validation-based selection either).

Optimisation (the pieces of sequential.py): AdamW (optax's scale_by_adam + decoupled decay, the
learning rate applied by the step) with global-norm clipping and a linear warm-up over
`warmup_fraction` of the run followed by linear decay to 0 (sentence-transformers' WarmupLinear,
DPR's schedule); a jitted pure step of (params, opt_state, batch, step) with dropout
from `fold_in(key(seed), step)` and epoch permutations from numpy `(seed, epoch)`; Orbax
checkpoints of params, optimizer state and step, so a killed run restarted in the same directory
ends with bitwise the parameters of an uninterrupted one (on CPU); `metrics.jsonl` with the loss
every `log_every_steps` and the validation records. Input rows are cut to the longest non-padding
length found in the trained tasks' splits (padding is masked in attention and left out of the mean,
so the cut changes nothing but the cost). `data.task_prefix` (added by the training pipeline, off
by default) is not applied: the bi-encoder's inputs are the processed splits' rows as stored.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from gr_jax.baselines import common
from gr_jax.evaluation import runs as runs_lib
from gr_jax.model import T5, T5Config
from gr_jax.schema import TASKS

log = logging.getLogger(__name__)

NAME = "biencoder"
ITEM_TOWERS = ("embedding", "text")
LOSSES = ("in_batch", "full")
SIMILARITIES = ("cosine", "dot")
_NEG = -1e9  # logit of a masked in-batch candidate (finite: an all-masked padding row stays so)


# -------------------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class Settings:
  """The section's model and loss choices, checked (hashable: a cache key of the jitted steps)."""

  tasks: tuple[str, ...]
  item_tower: str
  projection_dim: int
  similarity: str
  temperature: float
  loss: str
  item_text_len: int


def parse_tasks(value) -> tuple[str, ...]:
  """ "search" | "rec" | "search,rec" (or a sequence of task names) -> tasks in TASKS order."""
  parts = [str(p).strip() for p in (value.split(",") if isinstance(value, str) else value)]
  parts = [p for p in parts if p]
  bad = [p for p in parts if p not in TASKS]
  if not parts or bad or len(set(parts)) != len(parts):
    raise ValueError(
      f"baselines.biencoder.tasks={value!r}: expected 'search', 'rec' or 'search,rec'"
    )
  return tuple(t for t in TASKS if t in parts)


def settings_of(cfg) -> Settings:
  """Settings of a `baselines.biencoder` section, with errors naming the knob."""
  s = Settings(
    tasks=parse_tasks(cfg.tasks),
    item_tower=str(cfg.item_tower),
    projection_dim=int(cfg.projection_dim),
    similarity=str(cfg.similarity),
    temperature=float(cfg.temperature),
    loss=str(cfg.loss),
    item_text_len=int(cfg.item_text_len),
  )
  for knob, value, allowed in (
    ("item_tower", s.item_tower, ITEM_TOWERS),
    ("similarity", s.similarity, SIMILARITIES),
    ("loss", s.loss, LOSSES),
  ):
    if value not in allowed:
      raise ValueError(f"baselines.biencoder.{knob}={value!r}: expected one of {allowed}")
  if s.loss == "full" and s.item_tower != "embedding":
    raise ValueError(
      "baselines.biencoder.loss='full' needs item_tower='embedding' (the text "
      "tower would encode the whole catalogue at every step); use 'in_batch'"
    )
  if not s.temperature > 0:
    raise ValueError(f"baselines.biencoder.temperature={s.temperature}: expected > 0")
  if s.projection_dim < 0 or s.item_text_len < 2:
    raise ValueError(
      "baselines.biencoder: projection_dim must be >= 0 and item_text_len >= 2, "
      f"got {s.projection_dim} and {s.item_text_len}"
    )
  return s


def encoder_config(cfg, dataset, tasks: Sequence[str]) -> T5Config:
  """The T5Config of the input tower: preset + overrides, the dataset's vocabulary (item-token rows
  only when rec histories are encoded), the section's dropout, one decoder layer (unused)."""
  overrides = dict(common.plain(cfg.get("overrides", {})) or {})
  cat = dataset.catalog
  overrides.update(
    vocab_size=int(cat.token_offset),
    num_item_tokens=int(cat.num_id_tokens) if "rec" in tasks else 0,
    dropout_rate=float(cfg.dropout),
    num_decoder_layers=1,
    tie_word_embeddings=True,
  )
  return T5Config.from_preset(str(cfg.preset), **overrides)


# ------------------------------------------------------------------------------------------ model


def _unit(x: jax.Array) -> jax.Array:
  """Rows scaled to unit L2 norm (a zero row stays zero)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


class BiEncoder(nnx.Module):
  """T5 encoder + mean pooling (+ projection) for inputs; an item table or that tower for items."""

  def __init__(
    self,
    t5_config: T5Config,
    num_items: int,
    *,
    projection_dim: int,
    item_tower: str,
    rngs: nnx.Rngs,
  ):
    self.pad_id = int(t5_config.pad_token_id)
    self.t5 = T5(t5_config, rngs=rngs)
    d = int(t5_config.d_model)
    self.dim = int(projection_dim) or d
    self.proj = nnx.Linear(d, self.dim, use_bias=False, rngs=rngs) if projection_dim else None
    self.item_emb = (
      nnx.Param(
        jax.random.normal(rngs.params(), (num_items, self.dim), jnp.float32) * self.dim**-0.5
      )
      if item_tower == "embedding"
      else None
    )

  def embed(self, ids: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """ids int32 `[B, L]` (pad 0) -> float32 `[B, dim]`; key None = eval mode (no dropout)."""
    mask = ids != self.pad_id  # [B, L]
    h = self.t5.encode(ids, mask, deterministic=key is None, dropout_rng=key)  # [B, L, D]
    m = mask[..., None].astype(jnp.float32)  # [B, L, 1]
    pooled = jnp.sum(h.astype(jnp.float32) * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
    return self.proj(pooled) if self.proj is not None else pooled  # [B, dim]

  def items(
    self, idx: jax.Array, item_tokens: jax.Array, key: jax.Array | None = None
  ) -> jax.Array:
    """Item vectors `[B, dim]` of item indices `[B]` (before any normalisation)."""
    if self.item_emb is not None:
      return self.item_emb[...][idx]
    return self.embed(item_tokens[idx], key)


def _vectors(x: jax.Array, similarity: str) -> jax.Array:
  return _unit(x) if similarity == "cosine" else x


def _build(
  t5_config: T5Config, num_items: int, projection_dim: int, item_tower: str, rngs: nnx.Rngs
) -> BiEncoder:
  return BiEncoder(
    t5_config, num_items, projection_dim=projection_dim, item_tower=item_tower, rngs=rngs
  )


@functools.lru_cache(maxsize=16)
def _init_fn(t5_config: T5Config, num_items: int, projection_dim: int, item_tower: str):
  """(graphdef, jitted seed -> params pure dict), one compiled initialiser per architecture."""
  build = functools.partial(_build, t5_config, num_items, projection_dim, item_tower)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))))
  init = jax.jit(
    lambda seed: nnx.to_pure_dict(nnx.state(build(nnx.Rngs(params=jax.random.key(seed)))))
  )
  return graphdef, init


# ------------------------------------------------------------------------------------------- loss


def batch_loss(
  model: BiEncoder,
  s: Settings,
  ids: jax.Array,
  targets: jax.Array,
  groups: jax.Array,
  valid: jax.Array,
  item_tokens: jax.Array,
  key: jax.Array | None,
) -> jax.Array:
  """Mean softmax cross-entropy of a batch (module doc).

  ids int32 `[B, L]`; targets / groups (id of the row's encoder input) int32 `[B]`; valid bool
  `[B]` (False: padding row); item_tokens int32 `[n, Lt]` (text tower; a dummy otherwise); key:
  dropout (None: eval mode).
  """
  k_in, k_item = jax.random.split(key) if key is not None else (None, None)
  q = _vectors(model.embed(ids, k_in), s.similarity)  # [B, d]
  if s.loss == "full":
    cand = _vectors(model.item_emb[...], s.similarity)  # [n, d]
    logits = (q @ cand.T) / s.temperature  # [B, n]
    pos = targets
  else:
    cand = _vectors(model.items(targets, item_tokens, k_item), s.similarity)  # [B, d]
    logits = (q @ cand.T) / s.temperature  # [B, B]
    b = ids.shape[0]
    eye = jnp.eye(b, dtype=bool)
    clash = (targets[:, None] == targets[None, :]) | (groups[:, None] == groups[None, :])
    logits = jnp.where((clash & ~eye) | ~valid[None, :], _NEG, logits)
    pos = jnp.arange(b)
  nll = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, pos[:, None], 1)[:, 0]
  w = valid.astype(jnp.float32)
  return jnp.sum(nll * w) / jnp.maximum(jnp.sum(w), 1.0)


# -------------------------------------------------------------------------------------- training


def learning_rate_at(step: int, peak: float, warmup: int, total: int) -> float:
  """Learning rate of update `step` (0-based): linear warm-up from 0 over `warmup` steps, then
  linear decay to 0 at `total` (sentence-transformers' WarmupLinear)."""
  if step < warmup:
    return peak * step / warmup
  return peak * max(0.0, (total - step) / max(1, total - warmup))


def _optimizer(weight_decay: float, clip: float) -> optax.GradientTransformation:
  """AdamW without its learning rate (the step multiplies the updates by `learning_rate_at`, so
  one compiled step serves every schedule): clip, Adam, decoupled decay, descent."""
  parts = [optax.clip_by_global_norm(clip)] if clip > 0 else []
  return optax.chain(
    *parts, optax.scale_by_adam(), optax.add_decayed_weights(weight_decay), optax.scale(-1.0)
  )


@functools.lru_cache(maxsize=16)
def _train_step_fn(graphdef, s: Settings, weight_decay: float, clip: float):
  """Jitted `(params, opt_state, ids, targets, groups, valid, item_tokens, step, lr, base_key) ->
  (params, opt_state, loss)`."""
  tx = _optimizer(weight_decay, clip)

  def loss_fn(p, ids, targets, groups, valid, item_tokens, key):
    return batch_loss(nnx.merge(graphdef, p), s, ids, targets, groups, valid, item_tokens, key)

  @jax.jit
  def train_step(p, o, ids, targets, groups, valid, item_tokens, step, lr, base_key):
    key = jax.random.fold_in(base_key, step)  # dropout of this step
    value, grads = jax.value_and_grad(loss_fn)(p, ids, targets, groups, valid, item_tokens, key)
    updates, o = tx.update(grads, o, p)
    updates = jax.tree.map(lambda u: u * lr, updates)
    return optax.apply_updates(p, updates), o, value

  return train_step


@functools.lru_cache(maxsize=16)
def _embed_fn(graphdef, similarity: str):
  """Jitted `(params, ids [B, L]) -> vectors [B, dim]` as scored (eval mode)."""

  @jax.jit
  def embed(params, ids):
    return _vectors(nnx.merge(graphdef, params).embed(ids), similarity)

  return embed


@functools.lru_cache(maxsize=16)
def _table_fn(graphdef, similarity: str):
  """Jitted `params -> item table [n, dim]` as scored (embedding tower)."""
  return jax.jit(lambda params: _vectors(nnx.merge(graphdef, params).item_emb[...], similarity))


@functools.lru_cache(maxsize=16)
def _scores_fn(graphdef, similarity: str):
  """Jitted `((params, items [n, dim]), ids [B, L]) -> scores of every item [B, n]`: one matmul."""

  @jax.jit
  def scores(pair, ids):
    params, items = pair
    return _vectors(nnx.merge(graphdef, params).embed(ids), similarity) @ items.T

  return scores


def item_text_tokens(dataset, length: int) -> np.ndarray:
  """int32 `[num_items, <= length]`: each item's title + metadata text, tokenised (EOS, padding)."""
  from gr_jax.baselines.bm25 import metadata_text  # pylint: disable=g-import-not-at-top

  cat = dataset.catalog
  texts = [
    " ".join(p for p in (cat.titles[i], metadata_text(cat.metadata[i])) if p)
    for i in range(cat.num_items)
  ]
  if not any(t.strip() for t in texts):
    raise ValueError(
      "baselines.biencoder.item_tower='text': the catalogue has no item text "
      "(titles or string metadata); use item_tower='embedding'"
    )
  return _trim(dataset.tokenizer.encode_padded(texts, int(length)))


def _trim(ids: np.ndarray, length: int | None = None) -> np.ndarray:
  """Rows cut to `length` columns (default: the longest non-padding row)."""
  ids = np.asarray(ids, np.int32)
  if length is None:
    nz = np.flatnonzero(ids.any(axis=0))
    length = int(nz[-1]) + 1 if len(nz) else 1
  return ids[:, :length]


# Rows read per block when a pass goes over a whole split: a split's encoder rows may be stored
# compactly (`dataset.RowsView`; ML-25M's rec rows would be 6.4 GB as one array).
_ROW_BLOCK = 1 << 16


def _width(rows) -> int:
  """Columns up to the last non-padding one over `rows` (an array or a RowsView), block by block."""
  width = 0
  for st, e in common.blocks(len(rows), _ROW_BLOCK):
    nz = np.flatnonzero(np.asarray(rows[st:e]).any(axis=0))
    if len(nz):
      width = max(width, int(nz[-1]) + 1)
  return width


def input_len(dataset, tasks: Sequence[str]) -> int:
  """Longest non-padding encoder input over the trained tasks' train, valid and test splits."""
  out = 1
  for t in tasks:
    for split in ("train", "valid", "test"):
      out = max(out, _width(dataset.split(t, split)["encoder_input_ids"]))
  return out


def item_matrix(graphdef, params, s: Settings, item_tokens: np.ndarray, batch: int) -> jax.Array:
  """Item vectors `[n, dim]` on the device, as scored (normalised for cosine), catalogue order."""
  if s.item_tower == "embedding":
    return _table_fn(graphdef, s.similarity)(params)
  embed = _embed_fn(graphdef, s.similarity)
  out = []
  for st, e in common.blocks(len(item_tokens), batch):
    blk = np.zeros([batch, item_tokens.shape[1]], np.int32)  # one compiled shape for every block
    blk[: e - st] = item_tokens[st:e]
    out.append(embed(params, jnp.asarray(blk))[: e - st])
  return jnp.concatenate(out)


@dataclasses.dataclass
class TrainResult:
  """What `train_biencoder` returns: the network, final params, settings and a summary dict."""

  graphdef: object
  params: dict
  settings: Settings
  item_tokens: np.ndarray  # text tower: `[n, Lt]`; embedding tower: a `[1, 1]` dummy
  summary: dict

  @property
  def model(self) -> BiEncoder:
    return nnx.merge(self.graphdef, self.params)


def _section(config):
  cfg = config.baselines[NAME]
  return cfg, settings_of(cfg)


class _TrainRows:
  """The union of the tasks' training examples, rows read on demand: global row i is row
  i - offsets[k] of task k's split; row `len(self)` (and beyond) is the all-padding row."""

  def __init__(self, dataset, tasks: Sequence[str], length: int):
    self.length = int(length)
    self.parts, targets, self.counts = [], [], {}
    for t in tasks:
      a = dataset.split(t, "train")
      self.parts.append(a["encoder_input_ids"])  # an array or a RowsView
      targets.append(np.asarray(a["target_item"], np.int32))
      self.counts[t] = len(targets[-1])
    self.offsets = np.cumsum([0] + [len(x) for x in targets])
    self.targets = np.concatenate(targets)

  def __len__(self) -> int:
    return len(self.targets)

  def rows(self, idx) -> np.ndarray:
    """int32 `[len(idx), length]`: the rows at global indices idx (cut to `length`)."""
    idx = np.asarray(idx, np.int64)
    out = np.zeros([len(idx), self.length], np.int32)
    part = np.searchsorted(self.offsets, idx, side="right") - 1
    for k, rows in enumerate(self.parts):
      sel = np.flatnonzero(part == k)
      if len(sel):
        r = np.asarray(rows[idx[sel] - self.offsets[k]], np.int32)[:, : self.length]
        out[sel, : r.shape[1]] = r
    return out


def _input_groups(data: _TrainRows) -> np.ndarray:
  """int32 `[N]`: equal ids for equal encoder rows (the loss only compares them).

  Without holding every row: two polynomial hashes (uint64, wrapping) per row, block by block,
  grouped by np.unique; then an exact check that each row equals its group's first row. A hash
  collision (distinct rows, equal hashes) is vanishingly unlikely; should the check find one, the
  groups are recomputed exactly from the materialised rows.
  """
  n = len(data)
  if n == 0:
    return np.zeros([0], np.int32)
  primes = np.array([1_000_003, 998_244_353], np.uint64)
  keys = np.zeros([n, 2], np.uint64)
  for st, e in common.blocks(n, _ROW_BLOCK):
    blk = data.rows(np.arange(st, e)).astype(np.uint64)
    h = np.zeros([e - st, 2], np.uint64)
    for j in range(blk.shape[1]):
      h = h * primes + blk[:, j : j + 1] + np.uint64(1)  # wraps mod 2^64
    keys[st:e] = h
  _, first, groups = np.unique(keys, axis=0, return_index=True, return_inverse=True)
  groups = groups.reshape(-1)
  for st, e in common.blocks(n, _ROW_BLOCK):
    if not np.array_equal(data.rows(np.arange(st, e)), data.rows(first[groups[st:e]])):
      log.warning("%s: input-row hash collision; grouping the materialised rows instead", NAME)
      all_rows = data.rows(np.arange(n))
      groups = np.unique(all_rows, axis=0, return_inverse=True)[1].reshape(-1)
      break
  return groups.astype(np.int32)


def _fingerprint(config, cfg, dataset, counts: dict, length: int) -> dict:
  return {
    "kind": NAME,
    "seed": int(config.seed),
    "section": common.plain(cfg),
    "num_items": int(dataset.catalog.num_items),
    "train_examples": counts,
    "input_len": int(length),
  }


def train_biencoder(
  config, dataset, workdir: str, *, step_callback: Callable[[int], None] | None = None
) -> TrainResult:
  """Trains (or resumes, or just reloads when finished) the bi-encoder in `workdir`.

  step_callback(step) runs after each step once its checkpoint (if due) is written; tests use it to
  interrupt a run.
  """
  cfg, s = _section(config)
  seed = int(config.seed)
  ks = tuple(int(k) for k in config.eval.ks)
  n = dataset.catalog.num_items
  batch = int(cfg.batch_size)
  eval_batch = max(1, int(cfg.eval_batch_size))

  # ---- data
  length = input_len(dataset, s.tasks)
  train_rows = _TrainRows(dataset, s.tasks, length)
  counts = train_rows.counts
  num = len(train_rows)
  if num == 0:
    raise ValueError(f"{NAME}: no training example in the {'+'.join(s.tasks)} train split(s)")
  # last row: batch padding (never a query nor a candidate; `_TrainRows.rows` gives it zeros)
  targets = np.concatenate([train_rows.targets, np.zeros([1], np.int32)])
  groups = np.concatenate([_input_groups(train_rows), np.full([1], -1, np.int32)])
  steps_per_epoch = max(1, math.ceil(num / batch))
  total = int(cfg.num_steps) or int(cfg.num_epochs) * steps_per_epoch
  eval_every = common.validation_period(cfg.eval_every_steps, steps_per_epoch, total)
  ckpt_every = max(1, int(cfg.checkpoint_every_steps))
  log_every = max(1, int(cfg.log_every_steps))
  item_tokens = (
    item_text_tokens(dataset, s.item_text_len)
    if s.item_tower == "text"
    else np.zeros([1, 1], np.int32)
  )
  item_tokens_dev = jnp.asarray(item_tokens)
  valid = {}
  for t in s.tasks:
    a = dataset.split(t, "valid")
    valid[t] = (_trim(a["encoder_input_ids"], length), np.asarray(a["target_item"], np.int32))

  perms: dict[int, np.ndarray] = {}  # the current epoch's permutation only

  def batch_of(step: int):
    epoch, pos = divmod(step, steps_per_epoch)
    if epoch not in perms:
      perms.clear()
      perms[epoch] = np.random.default_rng([seed, epoch]).permutation(num)
    idx = perms[epoch][pos * batch : (pos + 1) * batch]
    idx = np.concatenate([idx, np.full([batch - len(idx)], num)])  # pad -> the padding row
    return train_rows.rows(idx), targets[idx], groups[idx], idx < num

  # ---- model, optimizer, pure train step
  t5_config = encoder_config(cfg, dataset, s.tasks)
  graphdef, init = _init_fn(t5_config, n, s.projection_dim, s.item_tower)
  # Committed to the device like restored checkpoints are, so that a fresh and a resumed run call
  # the jitted step with the same argument signature (an uncommitted array would recompile it).
  params = jax.device_put(init(jnp.asarray(seed, jnp.uint32)), jax.devices()[0])
  peak, warmup = float(cfg.learning_rate), int(round(float(cfg.warmup_fraction) * total))
  wd, clip = float(cfg.weight_decay), float(cfg.grad_clip_norm)
  opt_state = jax.device_put(_optimizer(wd, clip).init(params), jax.devices()[0])
  base_key = jax.random.key(seed)
  train_step = _train_step_fn(graphdef, s, wd, clip)
  scores_fn = _scores_fn(graphdef, s.similarity)
  ranks = common.ranks_fn(scores_fn)

  # ---- checkpoints: resume from the newest one
  os.makedirs(workdir, exist_ok=True)
  common.write_config(workdir, config, NAME)
  ckpt = common.Checkpoints(workdir, NAME, _fingerprint(config, cfg, dataset, counts, length))
  step = 0
  restored = ckpt.restore(params, opt_state)
  if restored is not None:
    params, opt_state, step = restored
    log.info("%s: resumed from step %d", NAME, step)
  metrics = common.MetricsLog(os.path.join(workdir, "metrics.jsonl"), step)

  # ---- loop (throughput = training examples / loop time without validation and saves, from the
  # end of the first, compiling, step)
  t0, t_other, examples = time.perf_counter(), 0.0, 0
  last_valid = None
  first_step = step
  while step < total:
    b_ids, b_tgt, b_grp, b_ok = batch_of(step)
    params, opt_state, loss = train_step(
      params,
      opt_state,
      jnp.asarray(b_ids),
      jnp.asarray(b_tgt),
      jnp.asarray(b_grp),
      jnp.asarray(b_ok),
      item_tokens_dev,
      jnp.asarray(step, jnp.int32),
      jnp.asarray(learning_rate_at(step, peak, warmup, total), jnp.float32),
      base_key,
    )
    step += 1
    if step == first_step + 1:  # the first step compiles: time the steady state from here
      jax.block_until_ready(params)
      t0, t_other, examples = time.perf_counter(), 0.0, 0
    else:
      examples += int(b_ok.sum())
    if step % log_every == 0 or step == total:
      common.log_loss(metrics, NAME, step, loss, steps_per_epoch)
      common.log_progress(
        log,
        NAME,
        step,
        total,
        steps_per_epoch,
        loss,
        examples,
        time.perf_counter() - t0 - t_other,
        step - first_step - 1,
      )
    ts = time.perf_counter()
    if step % eval_every == 0 or step == total:
      items = item_matrix(graphdef, params, s, item_tokens, eval_batch)
      last_valid = {}
      for t, (v_ids, v_tgt) in valid.items():
        last_valid[t] = common.validation_recall(
          ranks, (params, items), v_ids, v_tgt, ks, eval_batch
        )
        metrics.write({"step": step, "split": "valid", "task": t, **last_valid[t]})
    if step % ckpt_every == 0 or step == total:
      ckpt.save(step, params, opt_state)
    t_other += time.perf_counter() - ts
    if step_callback is not None:
      step_callback(step)
  ckpt.save(step, params, opt_state)  # a finished run that is reloaded has it already: no-op
  ckpt.close()
  jax.block_until_ready(params)
  t_train = time.perf_counter() - t0 - t_other
  summary = {
    "kind": NAME,
    "tasks": list(s.tasks),
    "item_tower": s.item_tower,
    "loss": s.loss,
    "similarity": s.similarity,
    "dim": _dim(t5_config, s),
    "steps": step,
    "resumed_from": first_step,
    "steps_per_epoch": steps_per_epoch,
    "train_examples": counts,
    "input_len": length,
    "valid": last_valid,
    "train_examples_per_second": round(examples / t_train, 1) if examples else None,
  }
  return TrainResult(graphdef, params, s, item_tokens, summary)


def _dim(t5_config: T5Config, s: Settings) -> int:
  return s.projection_dim or int(t5_config.d_model)


# ------------------------------------------------------------------------------- item embeddings


def load_run(run_dir: str, dataset) -> TrainResult:
  """The newest checkpoint of a bi-encoder run directory (its config.json gives the model); the
  dataset must be the one it was trained on (checked against the checkpoint's fingerprint)."""
  config = ml_collections.ConfigDict(runs_lib.read_json(os.path.join(run_dir, "config.json")))
  cfg, s = _section(config)
  length = input_len(dataset, s.tasks)
  counts = _TrainRows(dataset, s.tasks, length).counts
  t5_config = encoder_config(cfg, dataset, s.tasks)
  graphdef, init = _init_fn(t5_config, dataset.catalog.num_items, s.projection_dim, s.item_tower)
  target = jax.eval_shape(init, jnp.asarray(int(config.seed), jnp.uint32))
  ckpt = common.Checkpoints(run_dir, NAME, _fingerprint(config, cfg, dataset, counts, length))
  try:
    restored = ckpt.restore(target)
  finally:
    ckpt.close()
  if restored is None:
    raise FileNotFoundError(f"{run_dir}: no bi-encoder checkpoint under checkpoints/")
  params, _, step = restored
  item_tokens = (
    item_text_tokens(dataset, s.item_text_len)
    if s.item_tower == "text"
    else np.zeros([1, 1], np.int32)
  )
  return TrainResult(graphdef, params, s, item_tokens, {"kind": NAME, "steps": step})


def item_embeddings(source, dataset, *, batch_size: int = 256) -> np.ndarray:
  """float32 `[num_items, dim]`: every item's vector in catalogue order, as the model scores it
  (L2-normalised with cosine similarity). `source`: a run directory or a `TrainResult`."""
  res = source if isinstance(source, TrainResult) else load_run(os.fspath(source), dataset)
  items = item_matrix(res.graphdef, res.params, res.settings, res.item_tokens, int(batch_size))
  return np.asarray(items, np.float32)


# ------------------------------------------------------------------------------- run directories


def run_biencoder(
  config,
  dataset,
  out_dir: str,
  split: str = "test",
  *,
  step_callback: Callable[[int], None] | None = None,
) -> dict:
  """Trains (resuming) the bi-encoder in `out_dir`, scores every item for every `<task>/<split>`
  query of each trained task and writes `out_dir/eval/<split>/`. Returns the metrics.json object."""
  cfg, s = _section(config)
  res = train_biencoder(config, dataset, out_dir, step_callback=step_callback)
  cat = dataset.catalog
  ks = tuple(int(k) for k in config.eval.ks)
  ties = common.tie_order(cat.item_ids)
  eval_batch = max(1, int(cfg.eval_batch_size))
  length = res.summary["input_len"]
  t0 = time.perf_counter()
  items = item_matrix(res.graphdef, res.params, s, res.item_tokens, eval_batch)
  scores_fn = _scores_fn(res.graphdef, s.similarity)
  task_runs, num_queries = {}, {}
  for t in s.tasks:
    arrays = dataset.split(t, split)
    qids, first = runs_lib.split_queries(arrays, f"{t}/{split}.npz")
    tokens = _trim(arrays["encoder_input_ids"][first], length)  # [Q, L]
    # eval.exclude_seen: a rec query's own history items are not ranked (search: nothing to drop)
    seen = None
    if t == "rec" and common.exclude_seen(config):
      seen = common.query_histories(cat, arrays, first)
    run: dict[str, dict[str, float]] = {}
    for st, e in common.blocks(len(qids), eval_batch):
      scores = common.score_inputs(scores_fn, (res.params, items), tokens[st:e], eval_batch)
      if seen is not None:
        scores = common.exclude_seen_scores(scores, seen[st:e])
      idx = common.top_k(scores, max(ks), ties)  # [b, K]
      run.update(common.run_from_top_k(qids[st:e], idx, scores, cat.item_ids))
    task_runs[t] = (run, arrays)
    num_queries[t] = len(qids)
  secs = time.perf_counter() - t0
  info = dict(
    res.summary,
    num_queries=num_queries,
    eval_queries_per_second=round(sum(num_queries.values()) / max(secs, 1e-9), 1),
    exclude_seen=common.exclude_seen(config),
  )
  return common.evaluate_and_write_tasks(out_dir, split, task_runs, cat.item_ids, ks, NAME, info)


__all__ = [
  "BiEncoder",
  "Settings",
  "TrainResult",
  "batch_loss",
  "encoder_config",
  "input_len",
  "item_embeddings",
  "item_text_tokens",
  "load_run",
  "parse_tasks",
  "run_biencoder",
  "settings_of",
  "train_biencoder",
]
