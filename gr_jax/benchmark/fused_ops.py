"""Fast kernels for the train step, written here so the model and step owners can adopt them.

- `chunked_cross_entropy`: softmax cross-entropy over a large vocabulary (atomic item IDs: 100k-1M
  tokens) from the decoder's final hidden states, never materialising the `[tokens, vocab]` logits
  or their gradient at once: an online log-sum-exp over vocabulary chunks forward, and a
  recompute-per-chunk backward (custom VJP).
- `t5_attention`: T5 attention (no 1/sqrt(d) scaling, additive relative-position bias and mask)
  through `jax.nn.dot_product_attention`, which picks cuDNN's fused flash kernel on GPU when asked.

Both are pure functions with float32 softmax statistics whatever the input dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

NEG_INF = -1e30  # finite, so masked rows give exp() = 0 rather than NaN


def _pad_vocab(embedding: jax.Array, chunk: int) -> tuple[jax.Array, int]:
  vocab = embedding.shape[0]
  num_chunks = -(-vocab // chunk)
  pad = num_chunks * chunk - vocab
  if pad:
    embedding = jnp.pad(embedding, ((0, pad), (0, 0)))
  return embedding.reshape(num_chunks, chunk, embedding.shape[-1]), vocab  # [C, chunk, D]


def _chunk_logits(hidden, emb_chunk, c, chunk, vocab, scale):
  # [N, chunk] in float32; padded vocabulary columns are pushed to NEG_INF.
  logits = jnp.einsum("nd,vd->nv", hidden, emb_chunk,
                      preferred_element_type=jnp.float32) * scale
  col = c * chunk + jnp.arange(chunk)
  return jnp.where(col[None, :] < vocab, logits, NEG_INF)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def chunked_cross_entropy(hidden: jax.Array, embedding: jax.Array, targets: jax.Array,
                          weights: jax.Array, chunk_size: int = 8192,
                          logit_scale: float = 1.0) -> jax.Array:
  """Weighted sum of token cross-entropies of `softmax(hidden @ embedding.T * logit_scale)`.

  Args:
    hidden: `[N, D]` decoder outputs (any float dtype; the matmuls accumulate in float32).
    embedding: `[V, D]` output projection (the tied embedding or the lm head, rows = tokens).
    targets: `[N]` int target token ids in [0, V).
    weights: `[N]` float32 per-token weights (0 for padding).
    chunk_size: vocabulary rows per chunk; peak extra memory is `N * chunk_size` float32.
    logit_scale: multiplies the logits (T5 with tied embeddings uses d_model ** -0.5).

  Returns:
    scalar float32: `sum_n weights[n] * (logsumexp(logits[n]) - logits[n, targets[n]])`.
  """
  loss, _ = _ce_fwd(hidden, embedding, targets, weights, chunk_size, logit_scale)
  return loss


def _lse_and_target(hidden, embedding, targets, chunk_size, logit_scale):
  chunks, vocab = _pad_vocab(embedding, chunk_size)  # [C, chunk, D]
  n = hidden.shape[0]

  def body(carry, xs):
    m, s, tgt = carry  # running max [N], running sum of exp [N], target logit [N]
    emb_chunk, c = xs
    logits = _chunk_logits(hidden, emb_chunk, c, chunk_size, vocab, logit_scale)  # [N, chunk]
    m_new = jnp.maximum(m, logits.max(axis=-1))
    s = s * jnp.exp(m - m_new) + jnp.exp(logits - m_new[:, None]).sum(axis=-1)
    local = targets - c * chunk_size
    in_chunk = (local >= 0) & (local < chunk_size)
    picked = jnp.take_along_axis(logits, jnp.clip(local, 0, chunk_size - 1)[:, None],
                                 axis=-1)[:, 0]
    tgt = jnp.where(in_chunk, picked, tgt)
    return (m_new, s, tgt), None

  init = (jnp.full((n,), NEG_INF, jnp.float32), jnp.zeros((n,), jnp.float32),
          jnp.zeros((n,), jnp.float32))
  (m, s, tgt), _ = jax.lax.scan(body, init, (chunks, jnp.arange(chunks.shape[0])))
  return m + jnp.log(s), tgt  # [N], [N]


def _ce_fwd(hidden, embedding, targets, weights, chunk_size, logit_scale):
  lse, tgt = _lse_and_target(hidden, embedding, targets, chunk_size, logit_scale)
  weights = weights.astype(jnp.float32)
  loss = jnp.sum(weights * (lse - tgt))
  return loss, (hidden, embedding, targets, weights, lse)


def _ce_bwd(chunk_size, logit_scale, res, g):
  hidden, embedding, targets, weights, lse = res
  chunks, vocab = _pad_vocab(embedding, chunk_size)
  coef = (g * weights).astype(jnp.float32)  # [N]

  def body(d_hidden, xs):
    emb_chunk, c = xs
    logits = _chunk_logits(hidden, emb_chunk, c, chunk_size, vocab, logit_scale)  # [N, chunk]
    probs = jnp.exp(logits - lse[:, None])
    local = targets - c * chunk_size
    onehot = (jnp.arange(chunk_size)[None, :] == local[:, None]).astype(jnp.float32)
    d_logits = (probs - onehot) * coef[:, None] * logit_scale  # [N, chunk]
    d_hidden = d_hidden + jnp.einsum("nv,vd->nd", d_logits.astype(emb_chunk.dtype), emb_chunk,
                                     preferred_element_type=jnp.float32)
    d_emb = jnp.einsum("nv,nd->vd", d_logits.astype(hidden.dtype), hidden,
                       preferred_element_type=jnp.float32)  # [chunk, D]
    return d_hidden, d_emb.astype(embedding.dtype)

  d_hidden, d_emb = jax.lax.scan(
      body, jnp.zeros(hidden.shape, jnp.float32), (chunks, jnp.arange(chunks.shape[0])))
  d_emb = d_emb.reshape(-1, embedding.shape[-1])[:vocab]  # [V, D]
  return d_hidden.astype(hidden.dtype), d_emb, None, None


chunked_cross_entropy.defvjp(_ce_fwd, _ce_bwd)


def t5_attention(query: jax.Array, key: jax.Array, value: jax.Array, *,
                 bias: jax.Array | None = None, mask: jax.Array | None = None,
                 implementation: str | None = None) -> jax.Array:
  """T5 attention: `softmax(q k^T + bias) v`, no scaling (T5 folds it into the init).

  Args:
    query: `[B, Lq, H, Dh]`; key, value: `[B, Lk, H, Dh]`.
    bias: `[1 or B, H, Lq, Lk]` relative-position bias (added before the softmax).
    mask: `[B or 1, 1 or H, Lq, Lk]` bool, True = attend.
    implementation: None lets JAX choose, "xla" the portable path, "cudnn" the fused flash kernel
      (GPU, bf16/fp16 inputs; raises where unsupported, so the caller can fall back).

  Returns:
    `[B, Lq, H, Dh]` in the query's dtype.
  """
  if bias is not None:
    bias = bias.astype(query.dtype)
  return jax.nn.dot_product_attention(query, key, value, bias=bias, mask=mask, scale=1.0,
                                      implementation=implementation)


def reference_t5_attention(query, key, value, *, bias=None, mask=None):
  """Plain einsum attention with a float32 softmax: the definition `t5_attention` must match."""
  scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
  if bias is not None:
    scores = scores + bias.astype(jnp.float32)
  if mask is not None:
    scores = jnp.where(mask, scores, NEG_INF)
  probs = jax.nn.softmax(scores, axis=-1).astype(value.dtype)  # [B, H, Lq, Lk]
  return jnp.einsum("bhqk,bkhd->bqhd", probs, value)
