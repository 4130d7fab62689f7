"""Train-step kernels the benchmark measures; both now live in their owning modules.

- `chunked_cross_entropy`: `gr_jax.training.loss` (softmax cross-entropy over a large vocabulary
  from the decoder's hidden states, never materialising the `[tokens, vocab]` logits; the train
  step uses it with `config.train.loss_impl`). Re-exported here, not duplicated.
- `t5_attention`: T5 attention (no 1/sqrt(d) scaling, additive relative-position bias and mask)
  through `jax.nn.dot_product_attention`; the model's `attention_impl="dot_product_attention"`
  path makes the same call. `reference_t5_attention` is the einsum definition both must match.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gr_jax.training.loss import NEG_INF, chunked_cross_entropy  # noqa: F401  (re-export)

__all__ = ["chunked_cross_entropy", "reference_t5_attention", "t5_attention"]


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
