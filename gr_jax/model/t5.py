"""T5 encoder-decoder as Flax NNX modules (T5 v1.0 and v1.1 / flan-t5).

Numerics follow Hugging Face `T5ForConditionalGeneration` in eval mode, so weights imported with
`gr_jax.model.hf_import` give the same logits:
  * RMS layer norm (no mean, no bias), pre-norm residual blocks, no biases anywhere.
  * Attention logits are NOT scaled by 1/sqrt(d_kv) (T5 folds that into the query init).
  * One relative-position bias table per stack (bidirectional buckets in the encoder, causal in the
    decoder), used by every self-attention layer of that stack; cross-attention has none.
  * v1.0 (`feed_forward_proj="relu"`, tied embeddings): logits = (h * d_model**-0.5) @ E^T.
    v1.1 (`"gated-gelu"`, untied): logits = h @ W_lm, with gelu = tanh approximation (HF gelu_new).

Parameter layout (every parameter carries logical axis names in its `out_sharding` metadata; see
`param_logical_axes` and `gr_jax.training.partitioning.LOGICAL_AXIS_RULES`):
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

Dropout is driven by an explicit `dropout_rng` key (no nnx.Rngs state is consumed at call time),
so a train step is a pure function of (params, batch, key). Each dropout site folds a fixed integer
into the key, so the masks are reproducible and independent across sites and layers.

Attention (`attention_impl`): plain einsums (default; HF-equal), or `jax.nn.dot_product_attention`
(scale 1, relative-position bias, bool padding mask, `is_causal` in the decoder), so that a fused
kernel (cuDNN) can be used on GPU. The fused path serves the encoder and the non-cached decoder
(beams folded into the batch for self-attention and into the query axis for cross-attention, so the
per-query K/V is still never tiled); the cached `decode_step` always uses einsums.

Compute dtype (`dtype`) and parameter dtype (`param_dtype`) are separate: parameters are cast to
`dtype` at use; RMS norm statistics, softmax and the output logits are float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array

# Additive mask value: large enough that exp() underflows to exactly 0 in float32, small enough
# that adding a relative-position bias or a second mask never overflows to -inf.
NEG_INF = -1e9

_FEED_FORWARD = ("relu", "gated-gelu", "gated-relu", "gelu")
_ATTENTION_IMPLS = ("einsum", "dot_product_attention", "cudnn", "auto")


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyper-parameters of a T5 model (field names follow Hugging Face's T5Config)."""

  vocab_size: int = 32128  # text vocabulary (rows of the embedding before item tokens)
  num_item_tokens: int = 0  # atomic item tokens appended after the text vocabulary
  d_model: int = 512
  d_kv: int = 64  # per-head dimension
  d_ff: int = 2048
  num_heads: int = 8
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  dropout_rate: float = 0.1
  layer_norm_epsilon: float = 1e-6
  feed_forward_proj: str = "relu"  # relu (v1.0) | gated-gelu (v1.1 / flan) | gated-relu | gelu
  tie_word_embeddings: bool = True
  pad_token_id: int = 0
  eos_token_id: int = 1
  decoder_start_token_id: int = 0
  dtype: str = "float32"  # compute dtype
  param_dtype: str = "float32"  # storage dtype of parameters
  remat: bool = False  # wrap every layer in nnx.remat
  # How attention scores are computed (no parameters involved; see `T5._attention_mode`):
  # einsum | dot_product_attention (jax.nn.dot_product_attention, JAX picks the kernel) |
  # cudnn (the same, forcing cuDNN's fused kernel: GPU, bf16/fp16 only) | auto
  # (dot_product_attention on GPU unless attention dropout is live, einsum elsewhere).
  attention_impl: str = "einsum"

  def __post_init__(self):
    # Normalise dtypes to their names so the config stays hashable and JSON-friendly.
    object.__setattr__(self, "dtype", jnp.dtype(self.dtype).name)
    object.__setattr__(self, "param_dtype", jnp.dtype(self.param_dtype).name)
    if self.feed_forward_proj not in _FEED_FORWARD:
      raise ValueError(
          f"T5Config.feed_forward_proj: expected one of {_FEED_FORWARD}, got "
          f"{self.feed_forward_proj!r}")
    for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_encoder_layers",
                 "num_decoder_layers", "relative_attention_num_buckets",
                 "relative_attention_max_distance"):
      if int(getattr(self, name)) <= 0:
        raise ValueError(f"T5Config.{name}: expected a positive integer, got {getattr(self, name)!r}")
    if self.attention_impl not in _ATTENTION_IMPLS:
      raise ValueError(
          f"T5Config.attention_impl: expected one of {_ATTENTION_IMPLS}, got "
          f"{self.attention_impl!r}")
    if self.num_item_tokens < 0:
      raise ValueError(f"T5Config.num_item_tokens: expected >= 0, got {self.num_item_tokens}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"T5Config.dropout_rate: expected in [0, 1), got {self.dropout_rate}")

  @property
  def total_vocab_size(self) -> int:
    return self.vocab_size + self.num_item_tokens

  @property
  def is_gated(self) -> bool:
    return self.feed_forward_proj.startswith("gated-")

  @property
  def activation(self):
    act = self.feed_forward_proj.split("-")[-1]
    if act == "relu":
      return jax.nn.relu
    # HF maps "gated-gelu" to gelu_new (tanh approximation) but plain "gelu" to the exact erf form.
    return lambda x: jax.nn.gelu(x, approximate=self.is_gated)

  @classmethod
  def from_preset(cls, name: str, **overrides) -> "T5Config":
    if name not in PRESETS:
      raise ValueError(f"unknown T5 preset {name!r}; expected one of {sorted(PRESETS)}")
    fields = dict(PRESETS[name])
    unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"T5Config.from_preset({name!r}): unknown override fields {sorted(unknown)}")
    fields.update(overrides)
    return cls(**fields)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


_V10 = dict(vocab_size=32128, d_kv=64, feed_forward_proj="relu", tie_word_embeddings=True)
_V11 = dict(vocab_size=32128, d_kv=64, feed_forward_proj="gated-gelu", tie_word_embeddings=False)

# Match the config.json of t5-{small,base,large} and google/flan-t5-{small,base,large}.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab_size=512, d_model=32, d_kv=8, d_ff=64, num_heads=4, num_encoder_layers=2,
                 num_decoder_layers=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "small": dict(_V10, d_model=512, d_ff=2048, num_heads=8, num_encoder_layers=6,
                  num_decoder_layers=6),
    "base": dict(_V10, d_model=768, d_ff=3072, num_heads=12, num_encoder_layers=12,
                 num_decoder_layers=12),
    "large": dict(_V10, d_model=1024, d_ff=4096, num_heads=16, num_encoder_layers=24,
                  num_decoder_layers=24),
    "flan-t5-small": dict(_V11, d_model=512, d_ff=1024, num_heads=6, num_encoder_layers=8,
                          num_decoder_layers=8),
    "flan-t5-base": dict(_V11, d_model=768, d_ff=2048, num_heads=12, num_encoder_layers=12,
                         num_decoder_layers=12),
    "flan-t5-large": dict(_V11, d_model=1024, d_ff=2816, num_heads=16, num_encoder_layers=24,
                          num_decoder_layers=24),
}


# ------------------------------------------------------------------------------------ helpers


def _param(rngs: nnx.Rngs, shape, std: float, axes: tuple[str, ...], dtype) -> nnx.Param:
  """A normal(0, std) parameter annotated with logical axis names (no eager sharding)."""
  assert len(shape) == len(axes), (shape, axes)
  value = std * jax.random.normal(rngs.params(), shape, jnp.float32)
  return nnx.Param(value.astype(dtype), out_sharding=axes, eager_sharding=False)


def _dropout(x: Array, rate: float, key: Array | None, site: int) -> Array:
  """Inverted dropout; `key is None` means deterministic. `site` separates call sites."""
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(jax.random.fold_in(key, site), 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def output_projection(x: Array, w: Array, spec: str) -> Array:
  """float32 logits of the output layer from compute-dtype `x` and `w` (einsum `spec`).

  Autodiff of a dot with float32 output would run both backward matmuls in float32 (the float32
  cotangent promotes `w` and `x`), which for T5-base is ~100 GFLOP per batch-128 step off the bf16
  tensor cores, and 8x that with 1M items. Here the cotangent is cast to the compute dtype first
  (as torch autocast does), accumulating in float32. In float32 compute it is plain autodiff."""
  if x.dtype == jnp.float32 and w.dtype == jnp.float32:
    return jnp.einsum(spec, x, w, preferred_element_type=jnp.float32)
  return _low_precision_projection(x, w, spec)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _low_precision_projection(x: Array, w: Array, spec: str) -> Array:
  return jnp.einsum(spec, x, w, preferred_element_type=jnp.float32)


def _low_precision_projection_fwd(x, w, spec):
  return _low_precision_projection(x, w, spec), (x, w)


def _low_precision_projection_bwd(spec, res, g):
  x, w = res
  spec = spec.replace("...", "ABCEFGHIJ"[:x.ndim - 1])  # explicit batch letters: dw sums over them
  ins, out = spec.split("->")
  x_spec, w_spec = ins.split(",")
  g = g.astype(x.dtype)  # bf16 operands, float32 accumulation
  dx = jnp.einsum(f"{out},{w_spec}->{x_spec}", g, w, preferred_element_type=jnp.float32)
  dw = jnp.einsum(f"{x_spec},{out}->{w_spec}", x, g, preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_low_precision_projection.defvjp(_low_precision_projection_fwd, _low_precision_projection_bwd)


def _sub_key(key: Array | None, i: int) -> Array | None:
  return None if key is None else jax.random.fold_in(key, i)


def relative_position_bucket(relative_position: Array, *, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Array:
  """T5 bucketing of (key - query) offsets: exact for small offsets, log-spaced up to max_distance."""
  rel = relative_position.astype(jnp.int32)
  bucket = jnp.zeros_like(rel)
  if bidirectional:
    num_buckets //= 2
    bucket = bucket + (rel > 0).astype(jnp.int32) * num_buckets
    rel = jnp.abs(rel)
  else:
    # Causal: only keys at or before the query matter; future offsets fall in bucket 0.
    rel = -jnp.minimum(rel, 0)
  max_exact = num_buckets // 2
  is_small = rel < max_exact
  # max(rel, 1) keeps log() finite on the small branch, which is discarded by the where below.
  rel_f = jnp.maximum(rel, 1).astype(jnp.float32)
  large = max_exact + (
      jnp.log(rel_f / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
  ).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return bucket + jnp.where(is_small, rel, large)


# ------------------------------------------------------------------------------------ modules


class RMSNorm(nnx.Module):
  """T5 layer norm: x / rms(x) * scale, statistics in float32, no bias or mean subtraction."""

  def __init__(self, cfg: T5Config):
    self.eps = cfg.layer_norm_epsilon
    self.dtype = jnp.dtype(cfg.dtype)
    self.scale = nnx.Param(jnp.ones((cfg.d_model,), cfg.param_dtype), out_sharding=("embed",),
                           eager_sharding=False)

  def __call__(self, x: Array) -> Array:
    xf = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(xf), axis=-1, keepdims=True)
    y = (xf * jax.lax.rsqrt(var + self.eps)).astype(self.dtype)
    return y * self.scale[...].astype(self.dtype)


class RelativePositionBias(nnx.Module):
  """Learned bias per (bucket, head), added to the self-attention logits of a whole stack."""

  def __init__(self, cfg: T5Config, *, bidirectional: bool, rngs: nnx.Rngs):
    self.bidirectional = bidirectional
    self.num_buckets = cfg.relative_attention_num_buckets
    self.max_distance = cfg.relative_attention_max_distance
    self.embedding = _param(rngs, (cfg.relative_attention_num_buckets, cfg.num_heads),
                            cfg.d_model**-0.5, ("relpos_buckets", "heads"), cfg.param_dtype)

  def __call__(self, query_pos: Array, key_pos: Array) -> Array:
    """query_pos [Q], key_pos [K] (int) -> float32 bias [heads, Q, K]."""
    rel = key_pos[None, :] - query_pos[:, None]  # [Q, K]
    buckets = relative_position_bucket(rel, bidirectional=self.bidirectional,
                                       num_buckets=self.num_buckets, max_distance=self.max_distance)
    values = jnp.take(self.embedding[...].astype(jnp.float32), buckets, axis=0)  # [Q, K, H]
    return jnp.transpose(values, (2, 0, 1))  # [H, Q, K]


class Attention(nnx.Module):
  """Multi-head attention projections. The score computation lives in the layers, which know the
  shapes (encoder [B, L], decoder [B, N, T], cross-attention broadcast over beams)."""

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    d, h, k = cfg.d_model, cfg.num_heads, cfg.d_kv
    pd = cfg.param_dtype
    self.dtype = jnp.dtype(cfg.dtype)
    # HF/Mesh-TF init: the query carries the 1/sqrt(d_kv) scale that the scores omit.
    self.q = _param(rngs, (d, h, k), (d * k)**-0.5, ("embed", "heads", "kv"), pd)
    self.k = _param(rngs, (d, h, k), d**-0.5, ("embed", "heads", "kv"), pd)
    self.v = _param(rngs, (d, h, k), d**-0.5, ("embed", "heads", "kv"), pd)
    self.o = _param(rngs, (h, k, d), (h * k)**-0.5, ("heads", "kv", "embed"), pd)

  def project(self, x: Array, which: str) -> Array:
    """x [..., D] -> [..., H, Dh] with kernel `which` in {q, k, v}."""
    w = getattr(self, which)[...].astype(self.dtype)
    return jnp.einsum("...d,dhk->...hk", x.astype(self.dtype), w)

  def output(self, ctx: Array) -> Array:
    """ctx [..., H, Dh] -> [..., D]."""
    return jnp.einsum("...hk,hkd->...d", ctx, self.o[...].astype(self.dtype))


def _softmax_dropout(scores: Array, dtype, rate: float, key: Array | None, site: int) -> Array:
  """float32 softmax over the last axis, cast to the compute dtype, then attention dropout."""
  probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(dtype)
  return _dropout(probs, rate, key, site)


def _fused_attention(q: Array, k: Array, v: Array, mode: str, *, bias: Array | None = None,
                     mask: Array | None = None, is_causal: bool = False) -> Array:
  """`jax.nn.dot_product_attention` with T5's conventions (scale 1, additive bias, bool mask).

  q [B, T, H, Dh], k/v [B, S, H, Dh], bias [1 or B, H, T, S], mask [B, 1, 1, S] (True = attend)
  -> [B, T, H, Dh]. mode "dpa" lets JAX choose the kernel, "cudnn" forces the fused one. The
  softmax is float32 in either kernel; attention-probability dropout is not available here.
  """
  dtype = q.dtype
  if bias is not None:
    bias = bias.astype(dtype)  # the kernels want one dtype (bf16 bias when computing in bf16)
  return jax.nn.dot_product_attention(
      q, k.astype(dtype), v.astype(dtype), bias=bias, mask=mask, scale=1.0, is_causal=is_causal,
      implementation="cudnn" if mode == "cudnn" else None)


class MLP(nnx.Module):
  """T5 feed-forward: wo(act(wi x)) for v1.0, wo(act(wi_0 x) * wi_1 x) for gated variants."""

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    d, f, pd = cfg.d_model, cfg.d_ff, cfg.param_dtype
    self.dtype = jnp.dtype(cfg.dtype)
    self.gated = cfg.is_gated
    self.act = cfg.activation
    self.rate = cfg.dropout_rate
    if self.gated:
      self.wi_0 = _param(rngs, (d, f), d**-0.5, ("embed", "mlp"), pd)
      self.wi_1 = _param(rngs, (d, f), d**-0.5, ("embed", "mlp"), pd)
    else:
      self.wi = _param(rngs, (d, f), d**-0.5, ("embed", "mlp"), pd)
    self.wo = _param(rngs, (f, d), f**-0.5, ("mlp", "embed"), pd)

  def __call__(self, x: Array, key: Array | None) -> Array:
    x = x.astype(self.dtype)
    if self.gated:
      h = self.act(x @ self.wi_0[...].astype(self.dtype)) * (x @ self.wi_1[...].astype(self.dtype))
    else:
      h = self.act(x @ self.wi[...].astype(self.dtype))  # [..., F]
    h = _dropout(h, self.rate, key, 0)
    return h @ self.wo[...].astype(self.dtype)


class EncoderLayer(nnx.Module):

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    self.dtype = jnp.dtype(cfg.dtype)
    self.rate = cfg.dropout_rate
    self.attn_norm = RMSNorm(cfg)
    self.attn = Attention(cfg, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg)
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x: Array, bias: Array, mask: Array | None, key: Array | None, *,
               attn: str = "einsum") -> Array:
    """x [B, L, D]. attn "einsum": bias [B, H, L, L] float32 (relative position + padding mask),
    mask None; otherwise bias [1, H, L, L] (relative position) and mask [B, 1, 1, L] bool."""
    y = self.attn_norm(x)
    q = self.attn.project(y, "q")  # [B, L, H, Dh]
    k = self.attn.project(y, "k")
    v = self.attn.project(y, "v")
    if attn == "einsum":
      scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) + bias  # [B, H, L, L]
      probs = _softmax_dropout(scores, self.dtype, self.rate, key, 0)
      ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v)  # [B, L, H, Dh]
    else:
      ctx = _fused_attention(q, k, v, attn, bias=bias, mask=mask)  # [B, L, H, Dh]
    x = x + _dropout(self.attn.output(ctx), self.rate, key, 1)
    x = x + _dropout(self.mlp(self.mlp_norm(x), _sub_key(key, 2)), self.rate, key, 3)
    return x


class DecoderLayer(nnx.Module):

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    self.dtype = jnp.dtype(cfg.dtype)
    self.rate = cfg.dropout_rate
    self.d_kv = cfg.d_kv
    self.self_attn_norm = RMSNorm(cfg)
    self.self_attn = Attention(cfg, rngs=rngs)
    self.cross_attn_norm = RMSNorm(cfg)
    self.cross_attn = Attention(cfg, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg)
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x: Array, self_bias: Array, cross_k: Array, cross_v: Array,
               cross_bias: Array, key: Array | None, cache: dict | None = None,
               position: Array | None = None, *, attn: str = "einsum"):
    """One decoder layer over beams.

    x [B, N, T, D]; self_bias [H, T, S] float32 (relative position + causal mask, S = T without a
    cache, S = max_len with one); cross_k/v [B, L, H, Dh] shared by the N beams of a query;
    cross_bias [B, 1, 1, 1, L]; cache {"k", "v": [B, N, max_len, H, Dh]} for one-step decoding at
    `position` (T must be 1). Returns (x, new_cache).

    attn != "einsum" (no cache only): self_bias is the relative position bias [H, T, T] alone (the
    kernel applies the causal mask) and cross_bias the encoder keep-mask [B, 1, 1, L] bool.
    """
    if attn != "einsum":
      return self._fused(x, self_bias, cross_k, cross_v, cross_bias, key, attn), None
    y = self.self_attn_norm(x)
    q = self.self_attn.project(y, "q")  # [B, N, T, H, Dh]
    k = self.self_attn.project(y, "k")
    v = self.self_attn.project(y, "v")
    if cache is not None:
      k = jax.lax.dynamic_update_slice_in_dim(cache["k"], k.astype(cache["k"].dtype), position,
                                              axis=2)  # [B, N, S, H, Dh]
      v = jax.lax.dynamic_update_slice_in_dim(cache["v"], v.astype(cache["v"].dtype), position,
                                              axis=2)
      cache = {"k": k, "v": v}
    scores = jnp.einsum("bnqhd,bnshd->bnhqs", q, k).astype(jnp.float32) + self_bias
    probs = _softmax_dropout(scores, self.dtype, self.rate, key, 0)  # [B, N, H, T, S]
    ctx = jnp.einsum("bnhqs,bnshd->bnqhd", probs, v.astype(self.dtype))
    x = x + _dropout(self.self_attn.output(ctx), self.rate, key, 1)

    y = self.cross_attn_norm(x)
    q = self.cross_attn.project(y, "q")  # [B, N, T, H, Dh]
    # Keys/values are per query: the einsum broadcasts them over the beam axis n (never tiled).
    scores = jnp.einsum("bnqhd,blhd->bnhql", q, cross_k.astype(self.dtype)).astype(jnp.float32)
    probs = _softmax_dropout(scores + cross_bias, self.dtype, self.rate, key, 2)  # [B, N, H, T, L]
    ctx = jnp.einsum("bnhql,blhd->bnqhd", probs, cross_v.astype(self.dtype))
    x = x + _dropout(self.cross_attn.output(ctx), self.rate, key, 3)

    x = x + _dropout(self.mlp(self.mlp_norm(x), _sub_key(key, 4)), self.rate, key, 5)
    return x, cache

  def _fused(self, x, relpos, cross_k, cross_v, cross_mask, key, attn):
    """The layer with `jax.nn.dot_product_attention` (same dropout sites, minus the
    attention-probability ones, which the kernel does not offer)."""
    b, n, t = x.shape[:3]
    y = self.self_attn_norm(x)
    # Beams are independent sequences for self-attention: fold them into the batch.
    q, k, v = (self.self_attn.project(y, w).reshape((b * n, t, -1, self.d_kv))
               for w in ("q", "k", "v"))  # [B*N, T, H, Dh]
    ctx = _fused_attention(q, k, v, attn, bias=relpos[None], is_causal=True)  # [B*N, T, H, Dh]
    ctx = ctx.reshape((b, n) + ctx.shape[1:])  # [B, N, T, H, Dh]
    x = x + _dropout(self.self_attn.output(ctx), self.rate, key, 1)

    y = self.cross_attn_norm(x)
    q = self.cross_attn.project(y, "q")  # [B, N, T, H, Dh]
    # Cross-attention keys/values are per query: fold the beams into the query axis so that one
    # [B, L, H, Dh] K/V serves every beam (never tiled).
    ctx = _fused_attention(q.reshape((b, n * t) + q.shape[3:]), cross_k, cross_v, attn,
                           mask=cross_mask)  # [B, N*T, H, Dh]
    ctx = ctx.reshape((b, n, t) + ctx.shape[2:])  # [B, N, T, H, Dh]
    x = x + _dropout(self.cross_attn.output(ctx), self.rate, key, 3)

    x = x + _dropout(self.mlp(self.mlp_norm(x), _sub_key(key, 4)), self.rate, key, 5)
    return x


def _apply(layer, remat: bool, *args, **static):
  """Calls `layer(*args, **static)`, rematerialised when `remat`; `static` (Python values such as
  the attention mode) is closed over, not traced."""
  if remat:
    return nnx.remat(lambda l, *a: l(*a, **static))(layer, *args)
  return layer(*args, **static)


class Encoder(nnx.Module):

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.relpos_bias = RelativePositionBias(cfg, bidirectional=True, rngs=rngs)
    self.layers = nnx.List([EncoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_encoder_layers)])
    self.final_norm = RMSNorm(cfg)


class Decoder(nnx.Module):

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.relpos_bias = RelativePositionBias(cfg, bidirectional=False, rngs=rngs)
    self.layers = nnx.List([DecoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_decoder_layers)])
    self.final_norm = RMSNorm(cfg)


class Embed(nnx.Module):
  """Shared token embedding [total_vocab, D] used by encoder, decoder and (tied) output."""

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    self.dtype = jnp.dtype(cfg.dtype)
    self.embedding = _param(rngs, (cfg.total_vocab_size, cfg.d_model), 1.0, ("vocab", "embed"),
                            cfg.param_dtype)

  def __call__(self, ids: Array) -> Array:
    return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)


class LMHead(nnx.Module):
  """Untied output projection [D, total_vocab]."""

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    # t5x init (fan-in variance scaling), so from-scratch logits start at unit scale. HF draws
    # std 1.0 here, which only matters for random init: imported checkpoints overwrite it.
    self.kernel = _param(rngs, (cfg.d_model, cfg.total_vocab_size), cfg.d_model**-0.5,
                         ("embed", "vocab"), cfg.param_dtype)


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

  def encode(self, encoder_input_ids: Array, encoder_mask: Array | None = None, *,
             deterministic: bool = True, dropout_rng: Array | None = None) -> Array:
    """encoder_input_ids [B, L] -> encoded [B, L, D] (compute dtype)."""
    cfg = self.config
    key = self._dropout_key(deterministic, dropout_rng, 0)
    if encoder_mask is None:
      encoder_mask = encoder_input_ids != cfg.pad_token_id
    length = encoder_input_ids.shape[1]
    pos = jnp.arange(length, dtype=jnp.int32)
    attn = self._attention_mode(key)
    bias = self.encoder.relpos_bias(pos, pos)[None]  # [1, H, L, L]
    if attn == "einsum":
      bias = bias + _mask_bias(encoder_mask)[:, None, None, :]  # [B, H, L, L]
      mask = None
    else:
      mask = encoder_mask.astype(bool)[:, None, None, :]  # [B, 1, 1, L]
    x = _dropout(self.shared(encoder_input_ids), cfg.dropout_rate, key, 0)  # [B, L, D]
    for i, layer in enumerate(self.encoder.layers):
      x = _apply(layer, cfg.remat, x, bias, mask, _sub_key(key, i + 2), attn=attn)
    x = self.encoder.final_norm(x)
    return _dropout(x, cfg.dropout_rate, key, 1)

  def cross_kv(self, encoded: Array) -> tuple[tuple[Array, Array], ...]:
    """encoded [B, L, D] -> per decoder layer (k, v), each [B, L, H, Dh]; once per query."""
    return tuple((layer.cross_attn.project(encoded, "k"), layer.cross_attn.project(encoded, "v"))
                 for layer in self.decoder.layers)

  # --------------------------------------------------------------------------- decoder

  def decode(self, decoder_input_ids: Array, cross_kv, encoder_mask: Array, *,
             deterministic: bool = True, dropout_rng: Array | None = None) -> Array:
    """decoder_input_ids [B, N, T] (N beams per query) -> float32 logits [B, N, T, V]."""
    return self._logits(self.decode_hidden(decoder_input_ids, cross_kv, encoder_mask,
                                           deterministic=deterministic, dropout_rng=dropout_rng))

  def decode_hidden(self, decoder_input_ids: Array, cross_kv, encoder_mask: Array, *,
                    deterministic: bool = True, dropout_rng: Array | None = None) -> Array:
    """decoder_input_ids [B, N, T] -> decoder outputs [B, N, T, D] (compute dtype) before the
    output projection: `decode(...)` is `hidden @ lm_head_weights()` (see `lm_head_weights`)."""
    cfg = self.config
    key = self._dropout_key(deterministic, dropout_rng, 1)
    t = decoder_input_ids.shape[-1]
    pos = jnp.arange(t, dtype=jnp.int32)
    attn = self._attention_mode(key)
    relpos = self.decoder.relpos_bias(pos, pos)  # [H, T, T]
    if attn == "einsum":
      causal = jnp.where(pos[None, :] <= pos[:, None], 0.0, NEG_INF)  # [T, T]
      self_bias = relpos + causal[None]  # [H, T, T]
      cross_bias = _mask_bias(encoder_mask)[:, None, None, None, :]  # [B, 1, 1, 1, L]
    else:
      self_bias = relpos  # the kernel applies the causal mask (is_causal)
      cross_bias = encoder_mask.astype(bool)[:, None, None, :]  # [B, 1, 1, L] keep-mask
    x = _dropout(self.shared(decoder_input_ids), cfg.dropout_rate, key, 0)  # [B, N, T, D]
    for i, (layer, (ck, cv)) in enumerate(zip(self.decoder.layers, cross_kv)):
      x, _ = _apply(layer, cfg.remat, x, self_bias, ck, cv, cross_bias, _sub_key(key, i + 2),
                    attn=attn)
    return _dropout(self.decoder.final_norm(x), cfg.dropout_rate, key, 1)  # [B, N, T, D]

  def init_cache(self, batch: int, num_beams: int, max_len: int) -> dict:
    """Self-attention KV cache: {"layer_i": {"k", "v": zeros [B, N, max_len, H, Dh]}}."""
    cfg = self.config
    shape = (batch, num_beams, max_len, cfg.num_heads, cfg.d_kv)
    return {f"layer_{i}": {"k": jnp.zeros(shape, cfg.dtype), "v": jnp.zeros(shape, cfg.dtype)}
            for i in range(cfg.num_decoder_layers)}

  def decode_step(self, tokens: Array, position: Array, cache: dict, cross_kv,
                  encoder_mask: Array) -> tuple[Array, dict]:
    """One decoding step at `position` (int32 scalar, may be traced).

    tokens [B, N] -> (float32 logits [B, N, V], cache with position's keys/values written).
    Equals the last position of `decode` on the full prefix.
    """
    max_len = cache["layer_0"]["k"].shape[2]
    position = jnp.asarray(position, jnp.int32)
    key_pos = jnp.arange(max_len, dtype=jnp.int32)
    causal = jnp.where(key_pos <= position, 0.0, NEG_INF)[None, :]  # [1, S]
    self_bias = self.decoder.relpos_bias(position[None], key_pos) + causal[None]  # [H, 1, S]
    cross_bias = _mask_bias(encoder_mask)[:, None, None, None, :]  # [B, 1, 1, 1, L]
    x = self.shared(tokens[..., None])  # [B, N, 1, D]
    new_cache = {}
    for i, (layer, (ck, cv)) in enumerate(zip(self.decoder.layers, cross_kv)):
      x, new_cache[f"layer_{i}"] = layer(x, self_bias, ck, cv, cross_bias, None,
                                         cache[f"layer_{i}"], position)
    x = self.decoder.final_norm(x)
    return self._logits(x)[:, :, 0, :], new_cache

  # --------------------------------------------------------------------------- full model

  def __call__(self, encoder_input_ids: Array, decoder_input_ids: Array, *,
               encoder_mask: Array | None = None, deterministic: bool = True,
               dropout_rng: Array | None = None, return_hidden: bool = False) -> Array:
    """encoder_input_ids [B, L], decoder_input_ids [B, T] -> float32 logits [B, T, V], or with
    `return_hidden` the decoder outputs [B, T, D] before the output projection (a loss over a
    large vocabulary can then work chunk by chunk from `lm_head_weights()`)."""
    if encoder_mask is None:
      encoder_mask = encoder_input_ids != self.config.pad_token_id
    encoded = self.encode(encoder_input_ids, encoder_mask, deterministic=deterministic,
                          dropout_rng=dropout_rng)
    hidden = self.decode_hidden(decoder_input_ids[:, None, :], self.cross_kv(encoded),
                                encoder_mask, deterministic=deterministic,
                                dropout_rng=dropout_rng)[:, 0]  # [B, T, D]
    return hidden if return_hidden else self._logits(hidden)  # [B, T, D] or [B, T, V]

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

  def _attention_mode(self, key: Array | None) -> str:
    """"einsum", "dpa" (jax.nn.dot_product_attention, JAX's kernel choice) or "cudnn" for one
    stack's non-cached attention; `key` is the stack's dropout key (None = deterministic).

    The fused kernels have no attention-probability dropout, so "auto" keeps einsum whenever that
    dropout is live (training with dropout_rate > 0): auto never changes the model's math.
    Explicit "dot_product_attention" / "cudnn" skip that dropout site (other dropouts remain).
    """
    impl = self.config.attention_impl
    if impl == "einsum":
      return "einsum"
    if impl == "auto":
      dropout_live = key is not None and self.config.dropout_rate > 0
      return "dpa" if jax.default_backend() == "gpu" and not dropout_live else "einsum"
    return "cudnn" if impl == "cudnn" else "dpa"

  def _dropout_key(self, deterministic: bool, dropout_rng: Array | None, stack: int):
    if deterministic:
      return None
    if dropout_rng is None:
      raise ValueError("T5: deterministic=False needs an explicit dropout_rng key")
    return jax.random.fold_in(dropout_rng, stack)


def _mask_bias(mask: Array) -> Array:
  """[B, L] bool/int (1 = keep) -> float32 additive bias [B, L]."""
  return jnp.where(mask.astype(bool), 0.0, NEG_INF).astype(jnp.float32)


# ------------------------------------------------------------------------------------ utilities


def param_logical_axes(model: nnx.Module):
  """Pytree like `nnx.state(model, nnx.Param)` whose leaves are logical axis-name tuples."""
  state = nnx.state(model, nnx.Param)
  return jax.tree.map(lambda v: tuple(v.get_metadata()["out_sharding"]), state,
                      is_leaf=lambda v: isinstance(v, nnx.Variable))


def count_params(model: nnx.Module) -> int:
  return sum(int(math.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
