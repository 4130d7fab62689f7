"""T5 layers (Flax NNX): norms, relative position bias, projections, one attention function, the
feed-forward block, encoder and decoder layers, the shared embedding and the untied output head.

Numerics follow Hugging Face `T5ForConditionalGeneration` in eval mode (see `network.py`). Every
parameter carries logical axis names in its `out_sharding` metadata
(`gr_jax.model.partitioning.LOGICAL_AXIS_RULES` maps them onto a mesh).

Dropout is driven by explicit keys (no nnx.Rngs state is consumed at call time), so a train step
is a pure function of (params, batch, key). Each dropout site folds a fixed integer into its key,
so masks are reproducible and independent across sites and layers.

Compute dtype (`dtype`) and parameter dtype (`param_dtype`) are separate: parameters are cast to
`dtype` at use; RMS norm statistics, softmax and the output logits are float32.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.extend
import jax.numpy as jnp
from flax import nnx

from gr_jax.model.config import T5Config

Array = jax.Array

# Additive mask value: large enough that exp() underflows to exactly 0 in float32, small enough
# that adding a relative-position bias or a second mask never overflows to -inf.
NEG_INF = -1e9


def _param(rngs: nnx.Rngs, shape, std: float, axes: tuple[str, ...], dtype) -> nnx.Param:
  """A normal(0, std) parameter annotated with logical axis names (no eager sharding)."""
  assert len(shape) == len(axes), (shape, axes)
  value = std * jax.random.normal(rngs.params(), shape, jnp.float32)
  return nnx.Param(value.astype(dtype), out_sharding=axes, eager_sharding=False)


# Dropout decides with 16 random bits per element: keep when they fall below
# round((1 - rate) * 2^16). Kept values are scaled by 2^16 / threshold, the inverse of the keep
# probability actually drawn, so the expectation is exact (rate 0.1 keeps 58982/65536 = 0.899994
# of the elements).
_MASK_BITS = 16


def _keep_threshold(rate: float) -> tuple[int, float]:
  """(threshold on the 16-bit draws, scale of the kept values) for dropout `rate`."""
  threshold = min(max(int(round((1.0 - rate) * (1 << _MASK_BITS))), 1), 1 << _MASK_BITS)
  return threshold, (1 << _MASK_BITS) / threshold


def _is_threefry(key: Array) -> bool:
  return str(jax.random.key_impl(key)) == "threefry2x32"


def _threefry_multiplier(key: Array, rate: float, shape: tuple[int, ...], dtype) -> Array:
  """The dropout decision of `rate` from a threefry `key` as a multiplier of `shape` (0 where
  dropped, 2^16 / threshold where kept), not yet materialised (see `dropout_multiplier`)."""
  threshold, scale = _keep_threshold(rate)
  n = math.prod(shape)
  words = jax.extend.random.threefry_2x32(
    jax.random.key_data(key), jax.lax.iota(jnp.uint32, (n + 1) // 2)
  )  # [ceil(n/2)] uint32: low and high halves are two draws each
  keep = jnp.concatenate([(words & 0xFFFF) < threshold, (words >> 16) < threshold])
  return jnp.where(keep[:n].reshape(shape), scale, 0.0).astype(dtype)


def dropout_multiplier(key: Array, rate: float, shape: tuple[int, ...], dtype) -> Array:
  """The dropout mask of `rate` drawn from a threefry `key`, as a multiplier of `shape`: 0 where
  dropped, 2^16 / threshold where kept.

  Made for XLA:CPU, where jax's default (`jax.random.bernoulli` under the partitionable threefry)
  was ~30% of a T5-small train step (BUILD_NOTES, issue 19). One threefry2x32 call here makes two
  32-bit words and each word two 16-bit draws: 4 elements per call, against 1 per call there (it
  XORs its two words into one). The multiplier is materialised in the compute dtype behind an
  optimization barrier, so the backward pass multiplies by it instead of regenerating the bits;
  as a bool or uint8 mask, the select it feeds slowed the backward fusions by as much as the
  generation cost.
  """
  return jax.lax.optimization_barrier(_threefry_multiplier(key, rate, shape, dtype))


def dropout(x: Array, rate: float, key: Array | None, site: int) -> Array:
  """Inverted dropout; `key is None` means deterministic. `site` separates call sites.

  threefry keys (the CPU default) use `dropout_multiplier`; other generators (rbg, the default on
  accelerators, where XLA fuses and recomputes the bits cheaply) draw the same 16-bit decision
  through `jax.random.bits` and select."""
  if key is None or rate == 0.0:
    return x
  key = jax.random.fold_in(key, site)
  if _is_threefry(key):
    return x * dropout_multiplier(key, rate, x.shape, x.dtype)
  threshold, scale = _keep_threshold(rate)
  keep = jax.random.bits(key, x.shape, jnp.uint16) < threshold
  return jnp.where(keep, x * jnp.asarray(scale, x.dtype), 0)


def relu_dropout(x: Array, rate: float, key: Array | None, site: int) -> Array:
  """`dropout(relu(x), rate, key, site)`, the same values (up to the sign of zeros).

  With a threefry key, relu(x) * m == x * (m * [x > 0]) for a multiplier m >= 0, so one
  materialised multiplier carries both the ReLU and the dropout: the backward pass is one
  multiply by it. Separately, the ReLU's select and the dropout's multiply meet in the
  transposed copy that feeds the weight gradient, reading three strided inputs; on XLA:CPU that
  was ~6% of a T5-small train step at batch 32 (BUILD_NOTES, issue 19)."""
  if key is None or rate == 0.0 or not _is_threefry(key):
    return dropout(jax.nn.relu(x), rate, key, site)
  mult = _threefry_multiplier(jax.random.fold_in(key, site), rate, x.shape, x.dtype)
  return x * jax.lax.optimization_barrier(jnp.where(x > 0, mult, jnp.zeros_like(mult)))


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
  spec = spec.replace("...", "ABCEFGHIJ"[: x.ndim - 1])  # explicit batch letters: dw sums over them
  ins, out = spec.split("->")
  x_spec, w_spec = ins.split(",")
  g = g.astype(x.dtype)  # bf16 operands, float32 accumulation
  dx = jnp.einsum(f"{out},{w_spec}->{x_spec}", g, w, preferred_element_type=jnp.float32)
  dw = jnp.einsum(f"{x_spec},{out}->{w_spec}", x, g, preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_low_precision_projection.defvjp(_low_precision_projection_fwd, _low_precision_projection_bwd)


def sub_key(key: Array | None, i: int) -> Array | None:
  return None if key is None else jax.random.fold_in(key, i)


def relative_position_bucket(
  relative_position: Array, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> Array:
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


class RMSNorm(nnx.Module):
  """T5 layer norm: x / rms(x) * scale, statistics in float32, no bias or mean subtraction."""

  def __init__(self, cfg: T5Config):
    self.eps = cfg.layer_norm_epsilon
    self.dtype = jnp.dtype(cfg.dtype)
    self.scale = nnx.Param(
      jnp.ones((cfg.d_model,), cfg.param_dtype), out_sharding=("embed",), eager_sharding=False
    )

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
    self.embedding = _param(
      rngs,
      (cfg.relative_attention_num_buckets, cfg.num_heads),
      cfg.d_model**-0.5,
      ("relpos_buckets", "heads"),
      cfg.param_dtype,
    )

  def __call__(self, query_pos: Array, key_pos: Array) -> Array:
    """query_pos [Q], key_pos [K] (int) -> float32 bias [heads, Q, K]."""
    rel = key_pos[None, :] - query_pos[:, None]  # [Q, K]
    buckets = relative_position_bucket(
      rel,
      bidirectional=self.bidirectional,
      num_buckets=self.num_buckets,
      max_distance=self.max_distance,
    )
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
    self.q = _param(rngs, (d, h, k), (d * k) ** -0.5, ("embed", "heads", "kv"), pd)
    self.k = _param(rngs, (d, h, k), d**-0.5, ("embed", "heads", "kv"), pd)
    self.v = _param(rngs, (d, h, k), d**-0.5, ("embed", "heads", "kv"), pd)
    self.o = _param(rngs, (h, k, d), (h * k) ** -0.5, ("heads", "kv", "embed"), pd)

  def project(self, x: Array, which: str) -> Array:
    """x [..., D] -> [..., H, Dh] with kernel `which` in {q, k, v}."""
    w = getattr(self, which)[...].astype(self.dtype)
    return jnp.einsum("...d,dhk->...hk", x.astype(self.dtype), w)

  def output(self, ctx: Array) -> Array:
    """ctx [..., H, Dh] -> [..., D]."""
    return jnp.einsum("...hk,hkd->...d", ctx, self.o[...].astype(self.dtype))


def mask_bias(mask: Array) -> Array:
  """bool/int keep-mask (1 = attend) -> float32 additive bias of the same shape."""
  return jnp.where(mask.astype(bool), 0.0, NEG_INF).astype(jnp.float32)


def attention(
  q: Array,
  k: Array,
  v: Array,
  *,
  impl: str,
  bias: Array | None = None,
  mask: Array | None = None,
  causal: bool = False,
  dropout_rate: float = 0.0,
  key: Array | None = None,
  site: int = 0,
) -> Array:
  """T5 dot-product attention (logits not scaled: the query init carries 1/sqrt(d_kv)).

  q [*lead, T, H, Dh]; k, v [*lead, S, H, Dh], or [B, S, H, Dh] shared by the N beams of
  q [B, N, T, H, Dh] (cross-attention: per-query keys are broadcast, never tiled).
  bias: float32 relative-position bias broadcastable to [*lead, H, T, S];
  mask: bool keep-mask (True = attend) broadcastable to [*lead, H, T, S];
  causal: query t sees keys s <= t (T == S). Returns [*lead, T, H, Dh] in q's dtype.

  impl "einsum": float32 softmax over additive masks, then attention-probability dropout at `site`
  of `key`. "dot_product_attention" / "cudnn": `jax.nn.dot_product_attention` (JAX's choice of
  kernel / cuDNN's fused one), float32 softmax in the kernel, no attention-probability dropout.
  """
  shared_kv = k.ndim == q.ndim - 1
  if impl != "einsum":
    return _fused_attention(q, k, v, impl, bias=bias, mask=mask, causal=causal, shared_kv=shared_kv)
  dtype = q.dtype
  if shared_kv:
    scores = jnp.einsum("bnqhd,bkhd->bnhqk", q, k.astype(dtype))
  else:
    scores = jnp.einsum("...qhd,...khd->...hqk", q, k.astype(dtype))
  scores = scores.astype(jnp.float32)
  if bias is not None:
    scores = scores + bias
  if causal:
    t, s = scores.shape[-2:]
    scores = scores + mask_bias(jnp.arange(s)[None, :] <= jnp.arange(t)[:, None])
  if mask is not None:
    scores = scores + mask_bias(mask)
  probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
  probs = dropout(probs, dropout_rate, key, site)
  if shared_kv:
    return jnp.einsum("bnhqk,bkhd->bnqhd", probs, v.astype(dtype))
  return jnp.einsum("...hqk,...khd->...qhd", probs, v.astype(dtype))


def _fused_attention(q, k, v, impl, *, bias, mask, causal, shared_kv):
  """`attention` through `jax.nn.dot_product_attention`, whose operands are [batch, len, H, Dh]:
  leading axes are folded into the batch, or, for keys shared by beams, beams into the query axis
  (one [B, S, H, Dh] K/V serves every beam)."""
  dtype = q.dtype
  shape = q.shape
  if shared_kv:
    b, n, t = shape[:3]
    q = q.reshape((b, n * t) + shape[3:])
    if mask is not None:
      mask = mask.reshape((b, 1, 1, mask.shape[-1]))
  else:
    q = q.reshape((-1,) + shape[-3:])
    k = k.reshape((-1,) + k.shape[-3:])
    v = v.reshape((-1,) + v.shape[-3:])
    if mask is not None:
      mask = mask.reshape((-1,) + mask.shape[-3:])
  if bias is not None:
    # The kernels want one dtype (bf16 bias when computing in bf16) and a 4-d bias.
    bias = bias.reshape((-1,) + bias.shape[-3:]).astype(dtype)
  ctx = jax.nn.dot_product_attention(
    q,
    k.astype(dtype),
    v.astype(dtype),
    bias=bias,
    mask=mask,
    scale=1.0,
    is_causal=causal,
    implementation="cudnn" if impl == "cudnn" else None,
  )
  return ctx.reshape(shape)


class MLP(nnx.Module):
  """T5 feed-forward: wo(act(wi x)) for v1.0, wo(act(wi_0 x) * wi_1 x) for gated variants."""

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    d, f, pd = cfg.d_model, cfg.d_ff, cfg.param_dtype
    self.dtype = jnp.dtype(cfg.dtype)
    self.gated = cfg.is_gated
    self.act = cfg.activation
    self.relu = cfg.feed_forward_proj == "relu"
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
      h = dropout(h, self.rate, key, 0)
    elif self.relu:
      h = relu_dropout(x @ self.wi[...].astype(self.dtype), self.rate, key, 0)  # [..., F]
    else:
      h = dropout(self.act(x @ self.wi[...].astype(self.dtype)), self.rate, key, 0)
    return h @ self.wo[...].astype(self.dtype)


class EncoderLayer(nnx.Module):
  """Pre-norm self-attention and feed-forward blocks with residuals."""

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    self.impl = cfg.attention_impl
    self.rate = cfg.dropout_rate
    self.attn_norm = RMSNorm(cfg)
    self.attn = Attention(cfg, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg)
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x: Array, bias: Array, mask: Array | None, key: Array | None) -> Array:
    """x [B, L, D]; bias float32 [1 or B, H, L, L]; mask bool [B, 1, 1, L] (True = real token)
    or None when the bias already holds the padding mask."""
    y = self.attn_norm(x)
    q, k, v = (self.attn.project(y, w) for w in ("q", "k", "v"))  # [B, L, H, Dh]
    ctx = attention(
      q, k, v, impl=self.impl, bias=bias, mask=mask, dropout_rate=self.rate, key=key, site=0
    )  # [B, L, H, Dh]
    x = x + dropout(self.attn.output(ctx), self.rate, key, 1)
    x = x + dropout(self.mlp(self.mlp_norm(x), sub_key(key, 2)), self.rate, key, 3)
    return x


class DecoderLayer(nnx.Module):
  """Pre-norm causal self-attention, cross-attention and feed-forward blocks, over beams."""

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    self.impl = cfg.attention_impl
    self.rate = cfg.dropout_rate
    self.self_attn_norm = RMSNorm(cfg)
    self.self_attn = Attention(cfg, rngs=rngs)
    self.cross_attn_norm = RMSNorm(cfg)
    self.cross_attn = Attention(cfg, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg)
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(
    self,
    x: Array,
    relpos: Array,
    cross_k: Array,
    cross_v: Array,
    cross_mask: Array,
    key: Array | None,
    cache: dict | None = None,
    position: Array | None = None,
  ):
    """x [B, N, T, D] (N beams per query); relpos float32 [H, T, S]; cross_k/v [B, L, H, Dh]
    shared by the N beams of a query; cross_mask bool [B, 1, 1, 1, L]. Returns (x, cache).

    Without a cache the self-attention is causal over the T positions (S = T). With a cache
    {"k", "v": [B, N, S, H, Dh]} (S = max length, T = 1) this is one decoding step at `position`:
    its keys/values are written into the cache and the query sees keys 0..position (einsums).
    """
    y = self.self_attn_norm(x)
    q, k, v = (self.self_attn.project(y, w) for w in ("q", "k", "v"))  # [B, N, T, H, Dh]
    if cache is None:
      ctx = attention(
        q, k, v, impl=self.impl, bias=relpos, causal=True, dropout_rate=self.rate, key=key, site=0
      )
    else:
      k = jax.lax.dynamic_update_slice_in_dim(
        cache["k"], k.astype(cache["k"].dtype), position, axis=2
      )  # [B, N, S, H, Dh]
      v = jax.lax.dynamic_update_slice_in_dim(
        cache["v"], v.astype(cache["v"].dtype), position, axis=2
      )
      cache = {"k": k, "v": v}
      seen = jnp.arange(k.shape[2]) <= position  # [S]
      ctx = attention(
        q, k, v, impl="einsum", bias=relpos, mask=seen, dropout_rate=self.rate, key=key, site=0
      )
    x = x + dropout(self.self_attn.output(ctx), self.rate, key, 1)

    y = self.cross_attn_norm(x)
    q = self.cross_attn.project(y, "q")  # [B, N, T, H, Dh]
    ctx = attention(
      q,
      cross_k,
      cross_v,
      impl=self.impl if cache is None else "einsum",
      mask=cross_mask,
      dropout_rate=self.rate,
      key=key,
      site=2,
    )  # [B, N, T, H, Dh]
    x = x + dropout(self.cross_attn.output(ctx), self.rate, key, 3)

    x = x + dropout(self.mlp(self.mlp_norm(x), sub_key(key, 4)), self.rate, key, 5)
    return x, cache


class Embed(nnx.Module):
  """Shared token embedding [total_vocab, D] used by encoder, decoder and (tied) output."""

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    self.dtype = jnp.dtype(cfg.dtype)
    self.embedding = _param(
      rngs, (cfg.total_vocab_size, cfg.d_model), 1.0, ("vocab", "embed"), cfg.param_dtype
    )

  def __call__(self, ids: Array) -> Array:
    return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)


class LMHead(nnx.Module):
  """Untied output projection [D, total_vocab]."""

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    # t5x init (fan-in variance scaling), so from-scratch logits start at unit scale. HF draws
    # std 1.0 here, which only matters for random init: imported checkpoints overwrite it.
    self.kernel = _param(
      rngs,
      (cfg.d_model, cfg.total_vocab_size),
      cfg.d_model**-0.5,
      ("embed", "vocab"),
      cfg.param_dtype,
    )
