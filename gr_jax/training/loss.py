"""Softmax cross-entropy over a large vocabulary without materialising the logits.

With atomic item IDs the output vocabulary is text + items (100k-1M tokens), so the `[tokens,
vocab]` float32 logits and their gradient dominate a train step's memory (T5-base, batch 128,
decoder 2, 1M items: 2 x 1 GB). `chunked_token_cross_entropy` works from the decoder's final
hidden states and the output projection instead: an online log-sum-exp over vocabulary chunks
forward (keeping only per-token running max, sum, target logit and argmax), and a custom VJP that
recomputes each chunk's logits in the backward pass. Peak extra memory is `tokens x chunk_size`
float32 per chunk.

It lives in `gr_jax/training` (not the model) because it is a loss: it consumes targets and token
weights, which the network never sees; the model only exposes its hidden states and output
projection (`T5.decode_hidden`, `T5.lm_head_weights`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Finite, so a padded column gives exp() = 0 rather than NaN, and a running max never is -inf.
NEG_INF = -1e30


def _chunk_bounds(vocab: int, chunk: int, c):
  """Start row of chunk `c` and the first row it owns. The last chunk is shifted back so that it
  ends at `vocab` (no padded copy of the projection); rows it shares with the previous chunk are
  masked out (they were already counted)."""
  own = c * chunk
  start = jnp.minimum(own, vocab - chunk)
  return start, own


def _chunk_logits(hidden, proj, c, *, chunk, vocab, scale, vocab_axis):
  """float32 logits `[N, chunk]` of chunk `c`; columns owned by an earlier chunk -> NEG_INF."""
  start, own = _chunk_bounds(vocab, chunk, c)
  w = jax.lax.dynamic_slice_in_dim(proj, start, chunk, axis=vocab_axis).astype(hidden.dtype)
  spec = "nd,vd->nv" if vocab_axis == 0 else "nd,dv->nv"
  logits = jnp.einsum(spec, hidden, w, preferred_element_type=jnp.float32) * scale
  col = start + jnp.arange(chunk)  # [chunk] global token ids
  return jnp.where(col[None, :] >= own, logits, NEG_INF), start, own


def _check(hidden, proj, targets, chunk_size, vocab_axis):
  if hidden.ndim != 2 or targets.shape != hidden.shape[:1]:
    raise ValueError(
      f"chunked_token_cross_entropy: expected hidden [N, D] and targets [N], got "
      f"{hidden.shape} and {targets.shape}"
    )
  if vocab_axis not in (0, 1) or proj.ndim != 2 or proj.shape[1 - vocab_axis] != hidden.shape[1]:
    raise ValueError(
      f"chunked_token_cross_entropy: projection {proj.shape} with vocab_axis="
      f"{vocab_axis} does not match hidden size {hidden.shape[1]}"
    )
  if chunk_size < 1:
    raise ValueError(f"chunked_token_cross_entropy: chunk_size must be >= 1, got {chunk_size}")


def chunked_token_cross_entropy(
  hidden: jax.Array,
  proj: jax.Array,
  targets: jax.Array,
  *,
  chunk_size: int = 8192,
  logit_scale: float = 1.0,
  vocab_axis: int = 0,
) -> tuple[jax.Array, jax.Array]:
  """Per-token cross-entropy and argmax of `softmax(hidden @ proj * logit_scale)`, chunked.

  Args:
    hidden: `[N, D]` decoder outputs (compute dtype; matmuls accumulate in float32).
    proj: the output projection, `[V, D]` (`vocab_axis=0`, a tied embedding) or `[D, V]`
      (`vocab_axis=1`, an untied lm head); any float dtype, each chunk is cast to hidden's dtype.
    targets: `[N]` int target token ids in [0, V).
    chunk_size: vocabulary entries per chunk (clipped to V).
    logit_scale: multiplies the logits (T5 with tied embeddings: d_model ** -0.5).
    vocab_axis: which axis of `proj` is the vocabulary.

  Returns:
    (`ce` float32 `[N]` = logsumexp(logits) - logits[target], differentiable w.r.t. hidden and
    proj; `pred` int32 `[N]` = argmax(logits), first index among ties like `jnp.argmax`).
  """
  _check(hidden, proj, targets, chunk_size, vocab_axis)
  chunk = int(min(chunk_size, proj.shape[vocab_axis]))
  return _chunked_ce(
    hidden, proj, targets.astype(jnp.int32), chunk, float(logit_scale), int(vocab_axis)
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _chunked_ce(hidden, proj, targets, chunk, scale, vocab_axis):
  (ce, pred), _ = _fwd(hidden, proj, targets, chunk, scale, vocab_axis)
  return ce, pred


def _fwd(hidden, proj, targets, chunk, scale, vocab_axis):
  vocab = proj.shape[vocab_axis]
  num_chunks = -(-vocab // chunk)
  n = hidden.shape[0]

  def body(carry, c):
    m, s, tgt, best = carry  # running max, sum of exp(. - m), target logit, argmax; all [N]
    logits, start, _ = _chunk_logits(
      hidden, proj, c, chunk=chunk, vocab=vocab, scale=scale, vocab_axis=vocab_axis
    )  # [N, chunk]
    c_max = logits.max(axis=-1)  # [N]
    c_arg = start + jnp.argmax(logits, axis=-1).astype(jnp.int32)
    # Strictly greater: an equal maximum in a later chunk keeps the earlier (smaller) index.
    best = jnp.where(c_max > m, c_arg, best)
    m_new = jnp.maximum(m, c_max)
    s = s * jnp.exp(m - m_new) + jnp.exp(logits - m_new[:, None]).sum(axis=-1)
    local = targets - start
    # Owned columns only: a target in the overlap of the shifted last chunk was taken earlier.
    in_chunk = (targets >= c * chunk) & (local < chunk)
    picked = jnp.take_along_axis(logits, jnp.clip(local, 0, chunk - 1)[:, None], axis=-1)[:, 0]
    tgt = jnp.where(in_chunk, picked, tgt)
    return (m_new, s, tgt, best), None

  init = (
    jnp.full((n,), NEG_INF, jnp.float32),
    jnp.zeros((n,), jnp.float32),
    jnp.zeros((n,), jnp.float32),
    jnp.zeros((n,), jnp.int32),
  )
  (m, s, tgt, pred), _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
  lse = m + jnp.log(s)  # [N]
  return (lse - tgt, pred), (hidden, proj, targets, lse)


def _bwd(chunk, scale, vocab_axis, res, cotangents):
  hidden, proj, targets, lse = res
  g = cotangents[0].astype(jnp.float32)  # [N]; the argmax output has no gradient
  vocab = proj.shape[vocab_axis]
  num_chunks = -(-vocab // chunk)

  def body(carry, c):
    d_hidden, d_proj = carry  # [N, D] float32, like proj (param dtype)
    logits, start, _ = _chunk_logits(
      hidden, proj, c, chunk=chunk, vocab=vocab, scale=scale, vocab_axis=vocab_axis
    )  # [N, chunk]
    probs = jnp.exp(logits - lse[:, None])  # masked columns: exp(-1e30) = 0
    onehot = (start + jnp.arange(chunk))[None, :] == targets[:, None]
    onehot = onehot & (targets[:, None] >= c * chunk)  # owned columns only (see _fwd)
    d_logits = (probs - onehot.astype(jnp.float32)) * (g * scale)[:, None]  # [N, chunk]
    w = jax.lax.dynamic_slice_in_dim(proj, start, chunk, axis=vocab_axis).astype(hidden.dtype)
    d_logits = d_logits.astype(hidden.dtype)
    if vocab_axis == 0:
      d_hidden = d_hidden + jnp.einsum("nv,vd->nd", d_logits, w, preferred_element_type=jnp.float32)
      d_w = jnp.einsum("nv,nd->vd", d_logits, hidden, preferred_element_type=jnp.float32)
    else:
      d_hidden = d_hidden + jnp.einsum("nv,dv->nd", d_logits, w, preferred_element_type=jnp.float32)
      d_w = jnp.einsum("nv,nd->dv", d_logits, hidden, preferred_element_type=jnp.float32)
    # Add (not overwrite): the shifted last chunk overlaps the previous one, where its d_w is 0.
    old = jax.lax.dynamic_slice_in_dim(d_proj, start, chunk, axis=vocab_axis)
    d_proj = jax.lax.dynamic_update_slice_in_dim(
      d_proj, old + d_w.astype(d_proj.dtype), start, axis=vocab_axis
    )
    return (d_hidden, d_proj), None

  init = (jnp.zeros(hidden.shape, jnp.float32), jnp.zeros(proj.shape, proj.dtype))
  (d_hidden, d_proj), _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
  return d_hidden.astype(hidden.dtype), d_proj, None


_chunked_ce.defvjp(lambda *a: _fwd(*a), _bwd)


def chunked_cross_entropy(
  hidden: jax.Array,
  proj: jax.Array,
  targets: jax.Array,
  weights: jax.Array,
  chunk_size: int = 8192,
  logit_scale: float = 1.0,
  vocab_axis: int = 0,
) -> jax.Array:
  """Scalar float32 `sum_n weights[n] * ce[n]` (see `chunked_token_cross_entropy`)."""
  ce, _ = chunked_token_cross_entropy(
    hidden, proj, targets, chunk_size=chunk_size, logit_scale=logit_scale, vocab_axis=vocab_axis
  )
  return jnp.sum(weights.astype(jnp.float32) * ce)
