"""SASRec and BERT4Rec baselines in Flax NNX, trained on the rec leave-last-out splits.

One network, two ways of using it:
- SASRec (Kang & McAuley, ICDM 2018): causal self-attention; at every position the hidden state
  predicts the next item. Loss `ce` (ours, default): full softmax cross-entropy over the whole
  catalogue at every position; `bce` (the paper's): one uniformly sampled negative per position
  against the positive with a sigmoid loss (uniform sampling may hit the positive, p = 1/n).
- BERT4Rec (Sun et al., CIKM 2019): bidirectional attention, masked-item training: each item of a
  training window is replaced by [MASK] with probability `mask_ratio` (at least one per window: the
  most recent item when none was drawn), and the softmax over the catalogue predicts it. At
  inference a [MASK] is appended after the history and its position scores the items.

Layout. Item index i is token i + 1; 0 is padding and n + 1 is [MASK]. Sequences are LEFT-padded
(right-aligned), as in the SASRec code: the most recent item always sits at the last position, so
inference reads position L - 1 and learned position embeddings count from the left of the window.
Attention never looks at padded keys (finite -1e9 bias, so an all-padding row stays finite; its
output is never used). Blocks are pre-LayerNorm (attention, then point-wise feed-forward) with
dropout on the embeddings, the attention probabilities and both residual branches; output logits
are dot products with the item embedding table (tied, as in both papers), plus a per-item bias for
BERT4Rec.

Training data. The rec train split holds every prefix of every session as a row (history -> next
item). Sessions are rebuilt by chaining rows: row j + 1 continues row j when its history is row
j's history plus row j's target (dropping the oldest item once the history reached the dataset's
`max_history`). Each rebuilt sequence is cut from its most recent end into windows of `max_len + 1`
items for SASRec (inputs = first max_len, targets = last max_len: every training target is predicted
exactly once) and of `max_len` items for BERT4Rec. Valid and test rows are used as they are: their
history (the last max_len items, minus one for the [MASK] of BERT4Rec) -> a score per item. Every
history is read as item indices by `ItemCatalog.histories`, so a dataset with semantic IDs (each
history item spelt as its code tokens) gives these models the same item sequences as atomic IDs.

Reproducibility. The train step is a pure jitted function of (params, opt_state, batch, step):
dropout, masking and negatives are drawn from `fold_in(key(seed), step)`, and the batch of step s
comes from the permutation of epoch s // steps_per_epoch drawn with numpy from (seed, epoch). Orbax
checkpoints hold params, optimizer state and the step, so a killed run that is started again
resumes from its last checkpoint and ends with the same parameters as an uninterrupted run (on CPU;
bitwise). The run directory gets `config.json`, `checkpoints/<step>/`, `metrics.jsonl` (training
loss every `log_every_steps`, validation Recall@K of `config.eval.ks` every `eval_every_steps` on
the rec valid split, counting items scored strictly higher than the target) and, from
`run_sequential`, `eval/<split>/`.

Model selection (section fields `select_best`, `patience`; off by default: the final step is the
result). On, the decode with the best validation Recall@max(eval.ks) is kept (strictly better only:
ties keep the earlier step), training stops after `patience` decodes without improvement (0: only
the step cap ends it), and `eval/<split>/` scores the best step's parameters. Every checkpoint then
also holds those parameters and the selection state (best value and step, decodes since), so a
killed run resumes to the same selection and stopping step, and a finished run is reloaded, not
trained on. metrics.jsonl's valid records add `best_step` and `evals_since_best`, the last one
`stopped_early` (patience ended it) and `capped` (the step cap came first); the summary and
metrics.json info repeat them with `best_valid` and `best_epoch`. Selection reads only the valid
split: the evaluated split is read after training returns.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from gr_jax import workdir as workdir_lib
from gr_jax.baselines import common
from gr_jax.baselines.common import MetricsLog as _Metrics
from gr_jax.baselines.common import blocks as _blocks
from gr_jax.baselines.common import plain as _plain
from gr_jax.baselines.common import ranks_fn as _ranks_fn
from gr_jax.baselines.common import score_inputs, validation_recall
from gr_jax.evaluation import runs as runs_lib
from gr_jax.training.early_stopping import EarlyStopping

log = logging.getLogger(__name__)

KINDS = ("sasrec", "bert4rec")
LOSSES = ("ce", "bce")
_NEG = -1e9  # attention bias of masked keys (finite: an all-padding row must not give NaN)
_CKPT_ITEMS = ("params", "opt_state", "meta")
# With select_best every checkpoint also holds the best validation step's parameters: retention
# (the 2 newest) may delete that step's own checkpoint, and a resumed run must still end with them.
_CKPT_ITEMS_SELECT = _CKPT_ITEMS + ("best_params",)


# ------------------------------------------------------------------------------------------- data


def rebuild_sequences(
  hists: Sequence[np.ndarray], targets: np.ndarray, max_history: int
) -> list[np.ndarray]:
  """Sessions from prefix rows (module doc): each row (history, target) extends the previous one or
  starts a new sequence. Returns item-index sequences, oldest first."""
  seqs: list[list[int]] = []
  prev_h, prev_t = None, None
  for h, t in zip(hists, np.asarray(targets).tolist()):
    h = h.tolist()
    cont = False
    if prev_h is not None and max_history >= 2:
      grown = prev_h + [prev_t]
      if len(h) == len(grown) and len(h) <= max_history:
        cont = h == grown
      elif len(prev_h) == max_history and len(h) == max_history:
        cont = h == grown[1:]
    if cont:
      seqs[-1].append(t)
    else:
      seqs.append(h + [t])
    prev_h, prev_t = h, t
  return [np.asarray(s, np.int64) for s in seqs]


def windows(seqs: Sequence[np.ndarray], length: int, overlap: int) -> np.ndarray:
  """int32 `[M, length]` of tokens (item + 1), left-padded with 0, cut from each sequence's end.

  Consecutive windows of one sequence share `overlap` items (1 for SASRec: a window's first item is
  only an input, so it must also be the previous window's last target).
  """
  rows = []
  step = length - overlap
  for s in seqs:
    s = np.asarray(s, np.int64) + 1
    end = len(s)
    while True:
      start = max(0, end - length)
      w = np.zeros([length], np.int32)
      w[length - (end - start) :] = s[start:end]
      rows.append(w)
      if start == 0 or end - start <= overlap:
        break
      end -= step
      if end <= overlap:
        break
  return np.stack(rows) if rows else np.zeros([0, length], np.int32)


def inference_inputs(
  hists: Sequence[np.ndarray], max_len: int, kind: str, num_items: int
) -> np.ndarray:
  """int32 `[N, max_len]`: the last items of each history (tokens), left-padded; BERT4Rec ends with
  [MASK] (n + 1), so it sees max_len - 1 items."""
  keep = max_len - 1 if kind == "bert4rec" else max_len
  out = np.zeros([len(hists), max_len], np.int32)
  for r, h in enumerate(hists):
    h = np.asarray(h[max(0, len(h) - keep) :] if keep > 0 else h[:0], np.int64) + 1
    out[r, keep - len(h) : keep] = h
    if kind == "bert4rec":
      out[r, -1] = num_items + 1
  return out


def max_history_of(dataset, *splits_arrays) -> int:
  """The history cap prepare used: the manifest's `rec_max_history`, else the longest history."""
  m = getattr(dataset, "manifest", None) or {}
  if "rec_max_history" in m:
    return int(m["rec_max_history"])
  return max(
    [len(h) for a in splits_arrays for h in dataset.catalog.histories(a["encoder_input_ids"])] + [1]
  )


# ------------------------------------------------------------------------------------------ model


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout with an explicit key (None or rate 0: identity, i.e. eval mode)."""
  if key is None or rate <= 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


class Block(nnx.Module):
  """Pre-LN transformer block: x + Attn(LN(x)), then x + FFN(LN(x))."""

  def __init__(self, d: int, heads: int, ffn: int, dropout: float, activation: str, rngs: nnx.Rngs):
    if d % heads:
      raise ValueError(f"hidden_size {d} is not divisible by num_heads {heads}")
    self.heads, self.dropout, self.activation = heads, dropout, activation
    self.ln1 = nnx.LayerNorm(d, epsilon=1e-8, rngs=rngs)
    self.qkv = nnx.Linear(d, 3 * d, rngs=rngs)
    self.out = nnx.Linear(d, d, rngs=rngs)
    self.ln2 = nnx.LayerNorm(d, epsilon=1e-8, rngs=rngs)
    self.ff1 = nnx.Linear(d, ffn, rngs=rngs)
    self.ff2 = nnx.Linear(ffn, d, rngs=rngs)

  def __call__(self, x: jax.Array, bias: jax.Array, key: jax.Array | None) -> jax.Array:
    """x `[B, L, D]`, bias `[B, 1, L, L]` (0 or -1e9) -> `[B, L, D]`."""
    b, l, d = x.shape
    ks = jax.random.split(key, 4) if key is not None else [None] * 4
    q, k, v = jnp.split(self.qkv(self.ln1(x)), 3, axis=-1)  # 3 x [B, L, D]
    split = lambda t: t.reshape(b, l, self.heads, d // self.heads)  # [B, L, H, Dh]
    q, k, v = split(q), split(k), split(v)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d // self.heads) + bias  # [B,H,L,L]
    probs = _dropout(jax.nn.softmax(logits, axis=-1), self.dropout, ks[0])
    att = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, l, d)  # [B, L, D]
    x = x + _dropout(self.out(att), self.dropout, ks[1])
    act = jax.nn.gelu if self.activation == "gelu" else jax.nn.relu
    h = _dropout(act(self.ff1(self.ln2(x))), self.dropout, ks[2])  # [B, L, F]
    return x + _dropout(self.ff2(h), self.dropout, ks[3])


class SequentialRecommender(nnx.Module):
  """Item + learned position embeddings, attention blocks, final LN, tied item-output logits."""

  def __init__(
    self,
    num_items: int,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    ffn_size: int,
    max_len: int,
    dropout: float,
    causal: bool,
    rngs: nnx.Rngs,
  ):
    self.num_items, self.max_len, self.causal, self.dropout = num_items, max_len, causal, dropout
    self.hidden_size = hidden_size
    # rows: 0 padding, 1..n items, n + 1 [MASK] (unused by SASRec, kept so both share one layout)
    self.item_emb = nnx.Embed(num_items + 2, hidden_size, rngs=rngs)
    self.pos_emb = nnx.Embed(max_len, hidden_size, rngs=rngs)
    act = "relu" if causal else "gelu"  # SASRec: ReLU; BERT4Rec: GELU
    self.blocks = nnx.List(
      [Block(hidden_size, num_heads, ffn_size, dropout, act, rngs) for _ in range(num_layers)]
    )
    self.final_ln = nnx.LayerNorm(hidden_size, epsilon=1e-8, rngs=rngs)
    # BERT4Rec's output layer has a bias per item; SASRec scores are plain dot products.
    self.out_bias = nnx.Param(jnp.zeros([num_items])) if not causal else None

  def __call__(self, tokens: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """tokens int32 `[B, L]` (L <= max_len) -> hidden states `[B, L, D]`; key None = eval."""
    b, l = tokens.shape
    x = self.item_emb(tokens)  # [B, L, D]
    if self.causal:
      x = x * math.sqrt(self.hidden_size)  # SASRec scales item embeddings (Transformer style)
    x = x + self.pos_emb(jnp.arange(self.max_len - l, self.max_len))[None]  # right-aligned
    valid = tokens != 0  # [B, L]
    ks = jax.random.split(key, len(self.blocks) + 1) if key is not None else None
    x = _dropout(x, self.dropout, ks[-1] if ks is not None else None) * valid[..., None]
    allowed = valid[:, None, None, :]  # [B, 1, 1, L] keys
    if self.causal:
      allowed = allowed & jnp.tril(jnp.ones([l, l], bool))[None, None]  # [B, 1, L, L]
    bias = jnp.where(allowed, 0.0, _NEG).astype(x.dtype)
    for i, blk in enumerate(self.blocks):
      x = blk(x, bias, ks[i] if ks is not None else None)
    return self.final_ln(x)

  def item_logits(self, h: jax.Array) -> jax.Array:
    """`[..., D]` -> scores of every item `[..., n]`."""
    table = self.item_emb.embedding[1 : self.num_items + 1]  # [n, D]
    logits = h @ table.T
    return logits + self.out_bias[...] if self.out_bias is not None else logits


def _arch(cfg) -> tuple:
  """Architecture knobs of a config section, hashable (a cache key)."""
  return (
    int(cfg.hidden_size),
    int(cfg.num_layers),
    int(cfg.num_heads),
    int(cfg.ffn_size),
    int(cfg.max_len),
    float(cfg.dropout),
  )


def _build(kind: str, num_items: int, arch: tuple, rngs: nnx.Rngs) -> SequentialRecommender:
  hidden, layers, heads, ffn, max_len, dropout = arch
  return SequentialRecommender(
    num_items,
    hidden_size=hidden,
    num_layers=layers,
    num_heads=heads,
    ffn_size=ffn,
    max_len=max_len,
    dropout=dropout,
    causal=kind == "sasrec",
    rngs=rngs,
  )


def build_model(kind: str, cfg, num_items: int, seed: int) -> SequentialRecommender:
  """An eagerly initialised model (tests, inspection); training uses `init_params`."""
  if kind not in KINDS:
    raise ValueError(f"sequential baseline must be one of {KINDS}, got {kind!r}")
  return _build(kind, num_items, _arch(cfg), nnx.Rngs(seed))


@functools.lru_cache(maxsize=16)
def _init_fn(kind: str, num_items: int, arch: tuple):
  """(graphdef, jitted seed -> params pure dict): one compiled initialiser per architecture (eager
  init compiles every initialiser op on its own: seconds on CPU)."""
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: _build(kind, num_items, arch, nnx.Rngs(0))))
  init = jax.jit(
    lambda seed: nnx.to_pure_dict(
      nnx.state(_build(kind, num_items, arch, nnx.Rngs(params=jax.random.key(seed))))
    )
  )
  return graphdef, init


def init_params(kind: str, cfg, num_items: int, seed: int):
  """(graphdef, initial params as a pure dict of arrays)."""
  if kind not in KINDS:
    raise ValueError(f"sequential baseline must be one of {KINDS}, got {kind!r}")
  graphdef, init = _init_fn(kind, num_items, _arch(cfg))
  return graphdef, init(jnp.asarray(seed, jnp.uint32))


# ------------------------------------------------------------------------------------------- loss


def _ce(logits: jax.Array, target_idx: jax.Array, w: jax.Array) -> jax.Array:
  """Weighted mean softmax cross-entropy: logits `[B, L, n]`, target_idx / w `[B, L]`."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [B, L, n]
  nll = -jnp.take_along_axis(logp, target_idx[..., None], axis=-1)[..., 0]  # [B, L]
  return jnp.sum(nll * w) / jnp.maximum(jnp.sum(w), 1.0)


def sasrec_loss(
  model: SequentialRecommender,
  window: jax.Array,
  key: jax.Array,
  loss: str,
) -> jax.Array:
  """Next-item loss. window int32 `[B, max_len + 1]` (left-padded tokens): inputs = [:, :-1],
  next items = [:, 1:]."""
  inputs, targets = window[:, :-1], window[:, 1:]  # [B, L]
  w = ((inputs != 0) & (targets != 0)).astype(jnp.float32)  # [B, L]
  k_drop, k_neg = jax.random.split(key)
  h = model(inputs, k_drop)  # [B, L, D]
  tgt = jnp.maximum(targets - 1, 0)  # item index; padded positions have weight 0
  if loss == "ce":
    return _ce(model.item_logits(h), tgt, w)
  # bce: positive and one uniform negative per position (the paper's objective)
  neg = jax.random.randint(k_neg, tgt.shape, 0, model.num_items)  # [B, L]
  table = model.item_emb.embedding[1 : model.num_items + 1]  # [n, D]
  pos_logit = jnp.sum(h * table[tgt], -1)  # [B, L]
  neg_logit = jnp.sum(h * table[neg], -1)  # [B, L]
  per = -(jax.nn.log_sigmoid(pos_logit) + jax.nn.log_sigmoid(-neg_logit))  # [B, L]
  return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)


def bert4rec_loss(
  model: SequentialRecommender, window: jax.Array, key: jax.Array, mask_ratio: float
) -> jax.Array:
  """Masked-item loss. window int32 `[B, max_len]`: random items -> [MASK], a softmax over the
  catalogue predicts them."""
  k_mask, k_drop = jax.random.split(key)
  valid = window != 0  # [B, L]
  masked = (jax.random.uniform(k_mask, window.shape) < mask_ratio) & valid  # [B, L]
  # A window with nothing masked would teach nothing: mask its most recent item (the last slot,
  # never padding with left padding) -- also the exact inference situation.
  none = ~jnp.any(masked, axis=1, keepdims=True)  # [B, 1]
  last = (jnp.arange(window.shape[1]) == window.shape[1] - 1)[None]  # [1, L]
  masked = masked | (none & last & valid)
  inputs = jnp.where(masked, model.num_items + 1, window)  # [B, L]
  h = model(inputs, k_drop)  # [B, L, D]
  return _ce(model.item_logits(h), jnp.maximum(window - 1, 0), masked.astype(jnp.float32))


# -------------------------------------------------------------------------------------- training


@dataclasses.dataclass
class TrainResult:
  """What `train_sequential` returns: the model (the final step's params; with `select_best` the
  best validation step's) and a summary dict."""

  model: SequentialRecommender
  summary: dict


class _Selection(EarlyStopping):
  """Model selection on validation (`select_best`): early stopping on Recall@max(ks) (the T5
  trainer's rule, `EarlyStopping`) plus the best decode's metrics. Its state goes into each
  checkpoint's meta, so a resumed run continues the same count and stops where an uninterrupted
  one would."""

  def __init__(self, metric: str, patience: int, state: dict | None = None):
    state = state or {}
    best = state.get("best")  # None before the first decode
    super().__init__(
      patience,
      best=-math.inf if best is None else float(best),
      best_step=int(state.get("best_step", 0)),
      since_best=int(state.get("since_best", 0)),
    )
    self.metric = metric
    self.best_valid = state.get("best_valid")

  def update(self, step: int, valid: dict) -> bool:
    """Records one decode; True when it is the new best."""
    improved = super().update(step, float(valid[self.metric]))
    if improved:
      self.best_valid = dict(valid)
    return improved

  def state(self) -> dict:
    return {
      "best": self.best if math.isfinite(self.best) else None,
      "best_step": self.best_step,
      "best_valid": self.best_valid,
      "since_best": self.since_best,
    }


def _section(config, kind: str):
  if kind not in KINDS:
    raise ValueError(f"sequential baseline must be one of {KINDS}, got {kind!r}")
  cfg = config.baselines[kind]
  loss = str(cfg.get("loss", "ce"))
  if loss not in LOSSES or (kind == "bert4rec" and loss != "ce"):
    raise ValueError(
      f"baselines.{kind}.loss={loss!r}: expected one of {LOSSES if kind == 'sasrec' else ('ce',)}"
    )
  return cfg


def _optimizer(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
  return optax.adamw(learning_rate, weight_decay=weight_decay)


# The jitted functions are cached per (graph, settings): runs of one process (seeds, tests) that
# share an architecture reuse the compiled programs instead of compiling fresh closures.
@functools.lru_cache(maxsize=16)
def _train_step_fn(
  graphdef, kind: str, loss: str, mask_ratio: float, learning_rate: float, weight_decay: float
):
  """Jitted `(params, opt_state, window [B, W], step, base_key) -> (params, opt_state, loss)`."""
  tx = _optimizer(learning_rate, weight_decay)

  def loss_fn(p, win, key):
    m = nnx.merge(graphdef, p)
    if kind == "sasrec":
      return sasrec_loss(m, win, key, loss)
    return bert4rec_loss(m, win, key, mask_ratio)

  @jax.jit
  def train_step(p, o, win, step, base_key):
    key = jax.random.fold_in(base_key, step)  # dropout / masks / negatives of this step
    value, grads = jax.value_and_grad(loss_fn)(p, win, key)
    updates, o = tx.update(grads, o, p)
    return optax.apply_updates(p, updates), o, value

  return train_step


@functools.lru_cache(maxsize=16)
def _scores_fn(graphdef):
  """Jitted `(params, tokens [B, L]) -> item scores [B, n]` at the last position (eval mode)."""

  @jax.jit
  def scores(params, tokens):
    model = nnx.merge(graphdef, params)
    return model.item_logits(model(tokens)[:, -1])  # [B, n]

  return scores


def train_sequential(
  kind: str, config, dataset, workdir: str, *, step_callback: Callable[[int], None] | None = None
) -> TrainResult:
  """Trains (or resumes, or just reloads when finished) SASRec / BERT4Rec in `workdir`.

  step_callback(step) runs after each step once its checkpoint (if due) is written; tests use it to
  interrupt a run.

  `select_best` (section field, default False: the final step is the result): keep the parameters
  of the validation decode with the best Recall@max(eval.ks) (strictly better only), stop after
  `patience` decodes without improvement (0: never early), and return those parameters. Only the
  rec valid split is read here; the summary records `best_step`, `stopped_early` and `capped`.
  """
  cfg = _section(config, kind)
  seed = int(config.seed)
  ks = tuple(int(k) for k in config.eval.ks)
  select_best = bool(cfg.get("select_best", False))
  patience = int(cfg.get("patience", 0)) if select_best else 0
  if patience < 0:
    raise ValueError(f"baselines.{kind}.patience must be >= 0, got {patience}")
  cat = dataset.catalog
  n = cat.num_items
  max_len = int(cfg.max_len)
  batch = int(cfg.batch_size)
  eval_batch = max(1, int(cfg.get("eval_batch_size", 256)))

  # ---- data
  train = dataset.split("rec", "train")
  valid = dataset.split("rec", "valid")
  cap = max_history_of(dataset, train, valid)
  seqs = rebuild_sequences(cat.histories(train["encoder_input_ids"]), train["target_item"], cap)
  if kind == "sasrec":
    wins = windows([s for s in seqs if len(s) >= 2], max_len + 1, overlap=1)
  else:
    wins = windows(seqs, max_len, overlap=0)
  if len(wins) == 0:
    raise ValueError(f"{kind}: the rec train split yields no training sequence")
  wins = np.concatenate([wins, np.zeros([1, wins.shape[1]], np.int32)])  # last row: batch padding
  num_windows = len(wins) - 1
  steps_per_epoch = max(1, math.ceil(num_windows / batch))
  total = int(cfg.get("num_steps", 0)) or int(cfg.num_epochs) * steps_per_epoch
  eval_every = common.validation_period(
    cfg.get("eval_every_steps", 0), steps_per_epoch, total, selects=select_best
  )
  ckpt_every = max(1, int(cfg.get("checkpoint_every_steps", 200)))
  log_every = max(1, int(cfg.get("log_every_steps", 50)))
  v_tokens = inference_inputs(cat.histories(valid["encoder_input_ids"]), max_len, kind, n)
  v_targets = np.asarray(valid["target_item"], np.int32)

  def batch_of(step: int) -> np.ndarray:
    epoch, pos = divmod(step, steps_per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(num_windows)
    idx = perm[pos * batch : (pos + 1) * batch]
    idx = np.concatenate([idx, np.full([batch - len(idx)], num_windows)])  # pad -> all-0 row
    return wins[idx]  # [B, W]

  # ---- model, optimizer, pure train step
  graphdef, params = init_params(kind, cfg, n, seed)
  opt_state = _optimizer(float(cfg.learning_rate), float(cfg.get("weight_decay", 0.0))).init(params)
  base_key = jax.random.key(seed)
  train_step = _train_step_fn(
    graphdef,
    kind,
    str(cfg.get("loss", "ce")),
    float(cfg.get("mask_ratio", 0.2)),
    float(cfg.learning_rate),
    float(cfg.get("weight_decay", 0.0)),
  )

  ranks_fn = _ranks_fn(_scores_fn(graphdef))

  # ---- checkpoints: resume from the newest one
  os.makedirs(workdir, exist_ok=True)
  common.write_config(workdir, config, kind)
  section = _plain(cfg)
  if not select_best:
    # Selection off is the behaviour before these fields existed: leaving them out of the
    # fingerprint keeps such run directories resumable.
    section = {k: v for k, v in section.items() if k not in ("select_best", "patience")}
  else:
    section["selection_metric"] = f"recall@{max(ks)}"  # another eval.ks selects another step
  fingerprint = {
    "kind": kind,
    "seed": seed,
    "section": section,
    "num_items": n,
    "num_windows": num_windows,
  }
  mngr = ocp.CheckpointManager(
    os.path.join(workdir_lib.absolute(workdir), "checkpoints"),
    options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
    item_names=_CKPT_ITEMS_SELECT if select_best else _CKPT_ITEMS,
  )
  selection = _Selection(f"recall@{max(ks)}", patience) if select_best else None
  best_params = params
  step = 0
  latest = mngr.latest_step()
  if latest is not None:
    meta = mngr.restore(latest, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    if meta.get("fingerprint") != json.loads(json.dumps(fingerprint)):
      raise ValueError(
        f"{workdir}/checkpoints/{latest} was written by another {kind} config or "
        "dataset; use a new out_dir for a new run"
      )
    items = {
      "params": ocp.args.StandardRestore(params),
      "opt_state": ocp.args.StandardRestore(opt_state),
    }
    if select_best:
      items["best_params"] = ocp.args.StandardRestore(params)
    restored = mngr.restore(latest, args=ocp.args.Composite(**items))
    params, opt_state, step = restored.params, restored.opt_state, int(latest)
    if select_best:
      best_params = restored.best_params
      selection = _Selection(selection.metric, patience, meta.get("selection"))
    log.info("%s: resumed from step %d", kind, step)
  metrics = _Metrics(os.path.join(workdir, "metrics.jsonl"), step)

  def save(s: int) -> None:
    if s in mngr.all_steps():
      return
    meta = {"step": s, "fingerprint": fingerprint}
    items = {
      "params": ocp.args.StandardSave(params),
      "opt_state": ocp.args.StandardSave(opt_state),
    }
    if select_best:
      meta["selection"] = selection.state()
      items["best_params"] = ocp.args.StandardSave(best_params)
    mngr.save(s, args=ocp.args.Composite(meta=ocp.args.JsonSave(meta), **items), force=True)
    mngr.wait_until_finished()

  # ---- loop (throughput = training sequences / loop time without validation and saves, from the
  # end of the first, compiling, step)
  t0, t_other, examples = time.perf_counter(), 0.0, 0
  last_valid = None
  first_step = step
  # A run whose patience ran out is finished: reloaded, it does not train on.
  while step < total and not (selection is not None and selection.converged):
    win = batch_of(step)
    params, opt_state, loss = train_step(
      params, opt_state, jnp.asarray(win), jnp.asarray(step, jnp.int32), base_key
    )
    step += 1
    if step == first_step + 1:  # the first step compiles: time the steady state from here
      jax.block_until_ready(params)
      t0, t_other, examples = time.perf_counter(), 0.0, 0
    else:
      examples += int((win != 0).any(1).sum())
    if step % log_every == 0 or step == total:
      common.log_loss(metrics, kind, step, loss, steps_per_epoch)
      common.log_progress(
        log,
        kind,
        step,
        total,
        steps_per_epoch,
        loss,
        examples,
        time.perf_counter() - t0 - t_other,
        step - first_step - 1,
      )
    ts = time.perf_counter()
    ends = step == total
    if step % eval_every == 0 or step == total:
      last_valid = validation_recall(ranks_fn, params, v_tokens, v_targets, ks, eval_batch)
      record = {"step": step, "split": "valid", **last_valid}
      if selection is not None:
        if selection.update(step, last_valid):
          best_params = params  # immutable arrays: a reference is a snapshot
        ends = ends or selection.converged
        record.update(best_step=selection.best_step, evals_since_best=selection.since_best)
        if ends:  # how the run ended, on its last decode (as the T5 trainer records it)
          record.update(
            stopped_early=selection.converged and step < total, capped=not selection.converged
          )
      metrics.write(record)
    if step % ckpt_every == 0 or ends:
      save(step)
    t_other += time.perf_counter() - ts
    if step_callback is not None:
      step_callback(step)
  save(step)  # a finished run that is reloaded has its final checkpoint already: no-op
  mngr.close()
  jax.block_until_ready(params)
  t_train = time.perf_counter() - t0 - t_other
  model = nnx.merge(graphdef, best_params if select_best else params)
  summary = {
    "kind": kind,
    "steps": step,
    "resumed_from": first_step,
    "steps_per_epoch": steps_per_epoch,
    "train_windows": num_windows,
    "train_sequences": len(seqs),
    "valid": last_valid,
    "train_sequences_per_second": round(examples / t_train, 1) if examples else None,
  }
  if selection is not None:
    summary.update(
      select_best=True,
      selection_metric=selection.metric,
      patience=patience,
      best_step=selection.best_step,
      best_epoch=round(selection.best_step / steps_per_epoch, 3),
      best_valid=selection.best_valid,
      evals_since_best=selection.since_best,
      # patience ended the run before the step cap; capped: the cap came first (not converged)
      stopped_early=selection.converged and step < total,
      capped=not selection.converged,
    )
  return TrainResult(model, summary)


# ------------------------------------------------------------------------------- run directories


def run_sequential(
  kind: str,
  config,
  dataset,
  out_dir: str,
  split: str = "test",
  *,
  step_callback: Callable[[int], None] | None = None,
) -> dict:
  """Trains (resuming) SASRec / BERT4Rec in `out_dir`, scores every item for every `rec/<split>`
  query and writes `out_dir/eval/<split>/`. Returns the metrics.json object."""
  cfg = _section(config, kind)
  result = train_sequential(kind, config, dataset, out_dir, step_callback=step_callback)
  cat = dataset.catalog
  arrays = dataset.split("rec", split)
  qids, first = runs_lib.split_queries(arrays, f"rec/{split}.npz")
  tokens = inference_inputs(
    cat.histories(arrays["encoder_input_ids"][first]),
    int(cfg.max_len),
    kind,
    cat.num_items,
  )  # [Q, max_len]
  graphdef, state = nnx.split(result.model)
  params = nnx.to_pure_dict(state)
  scores_fn = _scores_fn(graphdef)
  ks = tuple(int(k) for k in config.eval.ks)
  ties = common.tie_order(cat.item_ids)
  eval_batch = max(1, int(cfg.get("eval_batch_size", 256)))
  # eval.exclude_seen: the query's whole stored history (not only the max_len items read) is out
  seen = common.query_histories(cat, arrays, first) if common.exclude_seen(config) else None
  run: dict[str, dict[str, float]] = {}
  t0 = time.perf_counter()
  for s, e in _blocks(len(qids), eval_batch):
    scores = score_inputs(scores_fn, params, tokens[s:e], eval_batch)  # [b, n]
    if seen is not None:
      scores = common.exclude_seen_scores(scores, seen[s:e])
    idx = common.top_k(scores, max(ks), ties)  # [b, K]
    run.update(common.run_from_top_k(qids[s:e], idx, scores, cat.item_ids))
  secs = time.perf_counter() - t0
  info = dict(
    result.summary,
    num_queries=len(qids),
    eval_queries_per_second=round(len(qids) / max(secs, 1e-9), 1),
    exclude_seen=seen is not None,
  )
  return common.evaluate_and_write(out_dir, split, "rec", run, arrays, cat.item_ids, ks, kind, info)
