"""The T5 network (Flax NNX): `Encoder` and `Decoder` stacks and `T5`, the
T5ForConditionalGeneration-equivalent model with beam-aware decoding entry points.

Numerics follow Hugging Face `T5ForConditionalGeneration` in eval mode, so weights imported with
`gr_jax.model.hf_import` give the same logits:
  * RMS layer norm (no mean, no bias), pre-norm residual blocks, no biases anywhere.
  * Attention logits are NOT scaled by 1/sqrt(d_kv) (T5 folds that into the query init).
  * One relative-position bias table per stack (bidirectional buckets in the encoder, causal in the
    decoder), used by every self-attention layer of that stack; cross-attention has none.
  * v1.0 (`feed_forward_proj="relu"`, tied embeddings): logits = (h * d_model**-0.5) @ E^T.
    v1.1 (`"gated-gelu"`, untied): logits = h @ W_lm, with gelu = tanh approximation (HF gelu_new).

Parameter layout (logical axis names in brackets; see `param_logical_axes`):
  shared.embedding                [vocab, embed]
  {encoder,decoder}.relpos_bias.embedding [relpos_buckets, heads]
  *.{q,k,v}                       [embed, heads, kv]      *.o [heads, kv, embed]
  *.mlp.wi / wi_0 / wi_1          [embed, mlp]            *.mlp.wo [mlp, embed]
  *.norm.scale                    [embed]
  lm_head.kernel (untied only)    [embed, vocab]

Atomic item vocabulary: `num_item_tokens` rows are appended after the `vocab_size` text rows of the
input embedding (and of the output projection when untied); item index `i` is token
`vocab_size + i`. Random init draws all rows the same way. When importing a pretrained checkpoint
the new rows are drawn from N(mean, std) of the pretrained text rows (column-wise mean, global std),
so item tokens start at the scale of real words (see `hf_import.extend_rows`).

Attention (`T5Config.attention_impl`, resolved once when the config is built): plain einsums
(HF-equal) or `jax.nn.dot_product_attention` (a fused kernel such as cuDNN's on GPU) for the encoder
and the non-cached decoder; the cached `decode_step` always uses einsums.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from gr_jax.model.config import T5Config
from gr_jax.model.layers import (
  DecoderLayer,
  Embed,
  EncoderLayer,
  LMHead,
  RelativePositionBias,
  RMSNorm,
  dropout,
  mask_bias,
  sub_key,
  output_projection,
)

Array = jax.Array


def _apply(layer, remat: bool, *args):
  """`layer(*args)`, rematerialised (activations recomputed in the backward pass) when `remat`."""
  if remat:
    return nnx.remat(lambda l, *a: l(*a))(layer, *args)
  return layer(*args)


class Encoder(nnx.Module):
  """Embedded tokens -> encoded sequence: dropout, self-attention layers, final norm, dropout."""

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.relpos_bias = RelativePositionBias(cfg, bidirectional=True, rngs=rngs)
    self.layers = nnx.List([EncoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_encoder_layers)])
    self.final_norm = RMSNorm(cfg)

  def __call__(self, x: Array, mask: Array, key: Array | None = None) -> Array:
    """x [B, L, D] embedded tokens; mask [B, L] (1 = real token); key: the stack's dropout key
    (None = deterministic) -> encoded [B, L, D] (compute dtype)."""
    rate = self.cfg.dropout_rate
    pos = jnp.arange(x.shape[1], dtype=jnp.int32)
    bias = self.relpos_bias(pos, pos)[None]  # [1, H, L, L]
    keep = mask.astype(bool)[:, None, None, :]  # [B, 1, 1, L]
    if self.cfg.attention_impl == "einsum":
      # Padding folded into the bias once for the whole stack ([B, H, L, L]); the fused kernels
      # take the boolean mask instead. (Same values either way; this order of the additions is
      # the one the relative-position gradient has always been summed in.)
      bias, keep = bias + mask_bias(keep), None
    x = dropout(x, rate, key, 0)
    for i, layer in enumerate(self.layers):
      x = _apply(layer, self.cfg.remat, x, bias, keep, sub_key(key, i + 2))
    return dropout(self.final_norm(x), rate, key, 1)


class Decoder(nnx.Module):
  """Embedded decoder tokens over beams -> decoder outputs, with cross-attention to the encoder."""

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.relpos_bias = RelativePositionBias(cfg, bidirectional=False, rngs=rngs)
    self.layers = nnx.List([DecoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_decoder_layers)])
    self.final_norm = RMSNorm(cfg)

  def cross_kv(self, encoded: Array) -> tuple[tuple[Array, Array], ...]:
    """encoded [B, L, D] -> per layer (k, v), each [B, L, H, Dh]; computed once per query."""
    return tuple(
      (layer.cross_attn.project(encoded, "k"), layer.cross_attn.project(encoded, "v"))
      for layer in self.layers
    )

  def __call__(self, x: Array, cross_kv, encoder_mask: Array, key: Array | None = None) -> Array:
    """x [B, N, T, D] embedded tokens of N beams per query; cross_kv from `cross_kv`;
    encoder_mask [B, L] -> decoder outputs [B, N, T, D] (compute dtype), causal over T."""
    rate = self.cfg.dropout_rate
    pos = jnp.arange(x.shape[2], dtype=jnp.int32)
    relpos = self.relpos_bias(pos, pos)  # [H, T, T]
    cross_mask = encoder_mask.astype(bool)[:, None, None, None, :]  # [B, 1, 1, 1, L]
    x = dropout(x, rate, key, 0)
    for i, (layer, (ck, cv)) in enumerate(zip(self.layers, cross_kv)):
      x, _ = _apply(layer, self.cfg.remat, x, relpos, ck, cv, cross_mask, sub_key(key, i + 2))
    return dropout(self.final_norm(x), rate, key, 1)

  def init_cache(self, batch: int, num_beams: int, max_len: int) -> dict:
    """Self-attention KV cache: {"layer_i": {"k", "v": zeros [B, N, max_len, H, Dh]}}."""
    cfg = self.cfg
    shape = (batch, num_beams, max_len, cfg.num_heads, cfg.d_kv)
    return {
      f"layer_{i}": {"k": jnp.zeros(shape, cfg.dtype), "v": jnp.zeros(shape, cfg.dtype)}
      for i in range(cfg.num_decoder_layers)
    }

  def step(
    self, x: Array, position: Array, cache: dict, cross_kv, encoder_mask: Array
  ) -> tuple[Array, dict]:
    """One decoding step (deterministic): x [B, N, 1, D] embedded tokens at `position` (int32
    scalar, may be traced) -> (outputs [B, N, 1, D], cache with position's keys/values)."""
    max_len = cache["layer_0"]["k"].shape[2]
    key_pos = jnp.arange(max_len, dtype=jnp.int32)
    relpos = self.relpos_bias(position[None], key_pos)  # [H, 1, S]
    cross_mask = encoder_mask.astype(bool)[:, None, None, None, :]  # [B, 1, 1, 1, L]
    new_cache = {}
    for i, (layer, (ck, cv)) in enumerate(zip(self.layers, cross_kv)):
      x, new_cache[f"layer_{i}"] = layer(
        x, relpos, ck, cv, cross_mask, None, cache[f"layer_{i}"], position
      )
    return self.final_norm(x), new_cache


class T5(nnx.Module):
  """T5ForConditionalGeneration-equivalent network with beam-aware decoding entry points."""

  def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
    self.config = config
    self.shared = Embed(config, rngs=rngs)
    self.encoder = Encoder(config, rngs=rngs)
    self.decoder = Decoder(config, rngs=rngs)
    if not config.tie_word_embeddings:
      self.lm_head = LMHead(config, rngs=rngs)

  # --------------------------------------------------------------------------- encoder

  def encode(
    self,
    encoder_input_ids: Array,
    encoder_mask: Array | None = None,
    *,
    deterministic: bool = True,
    dropout_rng: Array | None = None,
  ) -> Array:
    """encoder_input_ids [B, L] -> encoded [B, L, D] (compute dtype)."""
    if encoder_mask is None:
      encoder_mask = encoder_input_ids != self.config.pad_token_id
    key = self._dropout_key(deterministic, dropout_rng, 0)
    return self.encoder(self.shared(encoder_input_ids), encoder_mask, key)

  def cross_kv(self, encoded: Array) -> tuple[tuple[Array, Array], ...]:
    """encoded [B, L, D] -> per decoder layer (k, v), each [B, L, H, Dh]; once per query."""
    return self.decoder.cross_kv(encoded)

  # --------------------------------------------------------------------------- decoder

  def decode(
    self,
    decoder_input_ids: Array,
    cross_kv,
    encoder_mask: Array,
    *,
    deterministic: bool = True,
    dropout_rng: Array | None = None,
  ) -> Array:
    """decoder_input_ids [B, N, T] (N beams per query) -> float32 logits [B, N, T, V]."""
    return self._logits(
      self.decode_hidden(
        decoder_input_ids,
        cross_kv,
        encoder_mask,
        deterministic=deterministic,
        dropout_rng=dropout_rng,
      )
    )

  def decode_hidden(
    self,
    decoder_input_ids: Array,
    cross_kv,
    encoder_mask: Array,
    *,
    deterministic: bool = True,
    dropout_rng: Array | None = None,
  ) -> Array:
    """decoder_input_ids [B, N, T] -> decoder outputs [B, N, T, D] (compute dtype) before the
    output projection: `decode(...)` is `hidden @ lm_head_weights()` (see `lm_head_weights`)."""
    key = self._dropout_key(deterministic, dropout_rng, 1)
    return self.decoder(self.shared(decoder_input_ids), cross_kv, encoder_mask, key)

  def init_cache(self, batch: int, num_beams: int, max_len: int) -> dict:
    """Self-attention KV cache: {"layer_i": {"k", "v": zeros [B, N, max_len, H, Dh]}}."""
    return self.decoder.init_cache(batch, num_beams, max_len)

  def decode_step(
    self, tokens: Array, position: Array, cache: dict, cross_kv, encoder_mask: Array
  ) -> tuple[Array, dict]:
    """One decoding step at `position` (int32 scalar, may be traced).

    tokens [B, N] -> (float32 logits [B, N, V], cache with position's keys/values written).
    Equals the last position of `decode` on the full prefix.
    """
    position = jnp.asarray(position, jnp.int32)
    x, cache = self.decoder.step(
      self.shared(tokens[..., None]), position, cache, cross_kv, encoder_mask
    )  # [B, N, 1, D]
    return self._logits(x)[:, :, 0, :], cache

  # --------------------------------------------------------------------------- full model

  def __call__(
    self,
    encoder_input_ids: Array,
    decoder_input_ids: Array,
    *,
    encoder_mask: Array | None = None,
    deterministic: bool = True,
    dropout_rng: Array | None = None,
    return_hidden: bool = False,
  ) -> Array:
    """encoder_input_ids [B, L], decoder_input_ids [B, T] -> float32 logits [B, T, V], or with
    `return_hidden` the decoder outputs [B, T, D] before the output projection (a loss over a
    large vocabulary can then work chunk by chunk from `lm_head_weights()`)."""
    if encoder_mask is None:
      encoder_mask = encoder_input_ids != self.config.pad_token_id
    encoded = self.encode(
      encoder_input_ids, encoder_mask, deterministic=deterministic, dropout_rng=dropout_rng
    )
    hidden = self.decode_hidden(
      decoder_input_ids[:, None, :],
      self.cross_kv(encoded),
      encoder_mask,
      deterministic=deterministic,
      dropout_rng=dropout_rng,
    )[:, 0]  # [B, T, D]
    return hidden if return_hidden else self._logits(hidden)  # [B, T, D] or [B, T, V]

  def token_embeddings(self) -> Array:
    """The input embedding table [total_vocab, D] (param dtype), shared by encoder and decoder;
    item `i`'s row is `vocab_size + i`."""
    return self.shared.embedding[...]

  def lm_head_weights(self) -> tuple[Array, float]:
    """The output projection as `(w, scale)`: logits = (hidden @ w-as-[D, V]) * scale.

    Tied embeddings (v1.0): w = the shared embedding [V, D] and scale = d_model ** -0.5 (Mesh-TF
    rescaling); untied (v1.1): w = lm_head.kernel [D, V] and scale = 1.0. `lm_head_vocab_axis`
    says which axis is the vocabulary. w is the stored parameter (param dtype): callers cast it
    (or chunks of it) to the compute dtype, as `_logits` does.
    """
    if self.config.tie_word_embeddings:
      return self.shared.embedding[...], self.config.d_model**-0.5
    return self.lm_head.kernel[...], 1.0

  @property
  def lm_head_vocab_axis(self) -> int:
    """The vocabulary axis of `lm_head_weights()[0]`: 0 when tied ([V, D]), 1 when untied."""
    return 0 if self.config.tie_word_embeddings else 1

  # --------------------------------------------------------------------------- internals

  def _logits(self, x: Array) -> Array:
    """x [..., D] -> float32 logits [..., total_vocab]."""
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    if cfg.tie_word_embeddings:
      # Mesh-TF rescaling for a tied output layer (HF does the same).
      x = x * (cfg.d_model**-0.5)
      w = self.shared.embedding[...].astype(dtype)
      return output_projection(x.astype(dtype), w, "...d,vd->...v")
    w = self.lm_head.kernel[...].astype(dtype)
    return output_projection(x.astype(dtype), w, "...d,dv->...v")

  def _dropout_key(self, deterministic: bool, dropout_rng: Array | None, stack: int):
    if deterministic:
      return None
    if dropout_rng is None:
      raise ValueError("T5: deterministic=False needs an explicit dropout_rng key")
    return jax.random.fold_in(dropout_rng, stack)


# ------------------------------------------------------------------------------------ utilities


def param_logical_axes(model: nnx.Module):
  """Pytree like `nnx.state(model, nnx.Param)` whose leaves are logical axis-name tuples."""
  state = nnx.state(model, nnx.Param)
  return jax.tree.map(
    lambda v: tuple(v.get_metadata()["out_sharding"]),
    state,
    is_leaf=lambda v: isinstance(v, nnx.Variable),
  )


def count_params(model: nnx.Module) -> int:
  return sum(int(math.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
