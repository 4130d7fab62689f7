"""Exact top-K decoding for atomic item IDs: one decoder step, the K most probable item tokens.

With one vocabulary token per item, the whole ranking is decided at the first decoder step: the
item's probability is the first step's softmax over the vocabulary (the EOS that follows only
rescales it, and beam search's diversity groups re-pick the same items). `topk_exact` therefore
encodes each query once, runs ONE cached decoder step from the decoder start token (the same
`decode_step` and full-vocabulary log-softmax that beam search uses at its first step), and returns
the K highest item tokens, best first, in beam search's output format:
  sequences int32 [B, K, max_new_tokens] = `<item> </s> pad ...`, scores float32 [B, K] = the
  item's log-probability (normalised over the whole vocabulary, text tokens included).
Ties keep the lower item index first (`lax.top_k` is stable), so the order is deterministic.
`exclude_items` (bool [B, num_items], `eval.exclude_seen`) sets those items' scores to -inf before
the top-K: each query gets its K best remaining items, in the unmasked order.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
from flax import nnx

from gr_jax.decoding.beam_search import _shard_batch
from gr_jax.decoding.constraints import AtomicItemConstraint

Array = jax.Array

# Number of times the model function has been traced (= jit cache misses); tests use it to check
# that batches of one shape reuse one compiled program.
_TRACES = {"model_topk": 0}


def trace_count() -> int:
  return _TRACES["model_topk"]


def check_topk_args(num_return_sequences: int, num_items: int, max_new_tokens: int) -> None:
  """Raises ValueError (naming the decode.* knob) when the top-K request cannot be served."""
  k = num_return_sequences
  if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
    raise ValueError(f"topk_exact: decode.num_return_sequences must be an int >= 1, got {k!r}")
  if k > num_items:
    raise ValueError(
      f"topk_exact: decode.num_return_sequences={k} exceeds the number of items "
      f"({num_items}); the exact top-K returns distinct items only"
    )
  if max_new_tokens < 2:
    raise ValueError(
      f"topk_exact: decode.max_new_tokens must be >= 2 (<item> </s>), got {max_new_tokens!r}"
    )


@functools.partial(
  jax.jit,
  static_argnames=(
    "graphdef",
    "k",
    "token_offset",
    "num_items",
    "max_new_tokens",
    "eos_id",
    "pad_id",
    "start_id",
  ),
)
def _model_topk(
  graphdef,
  params,
  encoder_input_ids,
  encoder_mask,
  exclude_items,
  *,
  k,
  token_offset,
  num_items,
  max_new_tokens,
  eos_id,
  pad_id,
  start_id,
):
  _TRACES["model_topk"] += 1
  model = nnx.merge(graphdef, params)
  b = encoder_input_ids.shape[0]
  encoded = model.encode(encoder_input_ids, encoder_mask)  # [B, Le, D]
  ckv = model.cross_kv(encoded)
  # One "beam" per query and beam search's cache length, so the step is the very computation of
  # beam search's first step (its cache beyond position 0 is masked out).
  cache = model.init_cache(b, 1, max_new_tokens)
  start = jnp.full((b, 1), start_id, jnp.int32)  # [B, 1]
  logits, _ = model.decode_step(start, jnp.int32(0), cache, ckv, encoder_mask)  # [B, 1, V]
  # Normalise over the full vocabulary (text tokens included), as beam search does before masking.
  logp = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)  # [B, V]
  item_logp = jax.lax.slice_in_dim(logp, token_offset, token_offset + num_items, axis=1)  # [B, I]
  if exclude_items is not None:  # -inf: after every remaining item (dropped by the evaluator)
    item_logp = jnp.where(exclude_items, -jnp.inf, item_logp)
  scores, idx = jax.lax.top_k(item_logp, k)  # [B, K] each, descending, ties: lower index first
  tokens = idx.astype(jnp.int32) + token_offset  # [B, K]
  seqs = jnp.full((b, k, max_new_tokens), pad_id, jnp.int32)  # [B, K, L]
  seqs = seqs.at[:, :, 0].set(tokens).at[:, :, 1].set(eos_id)
  return seqs, scores


def topk_exact(
  model,
  encoder_input_ids,
  *,
  encoder_mask=None,
  num_return_sequences: int,
  max_new_tokens: int = 2,
  constraint: AtomicItemConstraint | None = None,
  exclude_items=None,
) -> tuple[Array, Array]:
  """The K = num_return_sequences most probable items of each query (atomic item IDs only).

  model: a `gr_jax.model.T5` whose item tokens follow its text vocabulary.
  encoder_input_ids int [B, Le] (0-padded); encoder_mask [B, Le] (default ids != pad).
  constraint: the `AtomicItemConstraint` naming the item tokens (default: the model's
    `num_item_tokens` tokens from `vocab_size`); any other constraint is an error.
  exclude_items: None, or bool [B, num_items]: items query b must not return (scored -inf before
    the top-K, so the K best remaining items come back; default: the constraint's `excluded`).
  Returns (sequences int32 [B, K, max_new_tokens]: item token, EOS, pad after; scores float32
  [B, K]: the item's first-step log-probability), best first, like `beam_search`.
  """
  cfg = model.config
  if constraint is None:
    if cfg.num_item_tokens < 1:
      raise ValueError(
        "topk_exact: the model has no item tokens (num_item_tokens=0); decode."
        "method='topk_exact' needs atomic item IDs"
      )
    constraint = AtomicItemConstraint(cfg.vocab_size, cfg.num_item_tokens, cfg.eos_token_id)
  if not isinstance(constraint, AtomicItemConstraint):
    raise ValueError(
      f"topk_exact: needs atomic item IDs (an AtomicItemConstraint), got "
      f"{type(constraint).__name__}; use decode.method='beam' for multi-token IDs"
    )
  constraint.check_vocab(cfg.total_vocab_size, cfg.eos_token_id)
  k = num_return_sequences
  k = int(k) if isinstance(k, numbers.Integral) else k  # NumPy ints from configs are fine
  check_topk_args(k, constraint.num_items, int(max_new_tokens))
  ids = jnp.asarray(encoder_input_ids, jnp.int32)
  if ids.ndim != 2:
    raise ValueError(
      f"topk_exact: encoder_input_ids must be [batch, length], got shape {ids.shape}"
    )
  mask = ids != cfg.pad_token_id if encoder_mask is None else jnp.asarray(encoder_mask)
  if mask.shape != ids.shape:
    raise ValueError(
      f"topk_exact: encoder_mask shape {mask.shape} != encoder_input_ids shape {ids.shape}"
    )
  if exclude_items is None:
    exclude_items = constraint.excluded
  if exclude_items is not None:
    exclude_items = jnp.asarray(exclude_items, bool)
    if exclude_items.shape != (ids.shape[0], constraint.num_items):
      raise ValueError(
        f"topk_exact: exclude_items must be bool [batch={ids.shape[0]}, num_items="
        f"{constraint.num_items}], got shape {tuple(exclude_items.shape)}"
      )
  graphdef, params = nnx.split(model)
  ids, mask = _shard_batch(params, ids, mask)
  return _model_topk(
    graphdef,
    params,
    ids,
    mask,
    exclude_items,
    k=k,
    token_offset=constraint.token_offset,
    num_items=constraint.num_items,
    max_new_tokens=int(max_new_tokens),
    eos_id=cfg.eos_token_id,
    pad_id=cfg.pad_token_id,
    start_id=cfg.decoder_start_token_id,
  )
