"""T5 hyper-parameters (`T5Config`), the named presets, and the one place the attention kernel is
chosen.

Field names follow Hugging Face's T5Config, so a checkpoint's config.json maps onto it
(`gr_jax.model.hf_import.config_from_hf`). The config is frozen and hashable: models and jitted
functions can close over it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

FEED_FORWARD = ("relu", "gated-gelu", "gated-relu", "gelu")
# What a user may ask for; "auto" is resolved when the config is built (see `resolve_attention`).
ATTENTION_IMPLS = ("einsum", "dot_product_attention", "cudnn", "auto")


def resolve_attention(impl: str, *, dropout_rate: float, backend: str | None = None) -> str:
  """The attention kernel a model uses: "einsum", "dot_product_attention" or "cudnn".

  "auto" is `jax.nn.dot_product_attention` on GPU and einsums elsewhere, but einsums whenever the
  model has dropout: the fused kernels have no attention-probability dropout, and auto must never
  change the model's math. Chosen once, here, so the network never asks which backend it runs on.
  """
  if impl not in ATTENTION_IMPLS:
    raise ValueError(f"T5Config.attention_impl: expected one of {ATTENTION_IMPLS}, got {impl!r}")
  if impl != "auto":
    return impl
  backend = jax.default_backend() if backend is None else backend
  return "dot_product_attention" if backend == "gpu" and dropout_rate == 0.0 else "einsum"


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
  # How attention scores are computed (no parameters involved): einsum | dot_product_attention
  # (jax.nn.dot_product_attention, JAX picks the kernel) | cudnn (the same, forcing cuDNN's fused
  # kernel: GPU, bf16/fp16 only) | auto, replaced at construction by `resolve_attention`. The fused
  # kernels skip attention-probability dropout (other dropout sites remain).
  attention_impl: str = "einsum"

  def __post_init__(self):
    # Normalise dtypes to their names so the config stays hashable and JSON-friendly.
    object.__setattr__(self, "dtype", jnp.dtype(self.dtype).name)
    object.__setattr__(self, "param_dtype", jnp.dtype(self.param_dtype).name)
    if self.feed_forward_proj not in FEED_FORWARD:
      raise ValueError(
        f"T5Config.feed_forward_proj: expected one of {FEED_FORWARD}, got "
        f"{self.feed_forward_proj!r}"
      )
    for name in (
      "vocab_size",
      "d_model",
      "d_kv",
      "d_ff",
      "num_heads",
      "num_encoder_layers",
      "num_decoder_layers",
      "relative_attention_num_buckets",
      "relative_attention_max_distance",
    ):
      if int(getattr(self, name)) <= 0:
        raise ValueError(
          f"T5Config.{name}: expected a positive integer, got {getattr(self, name)!r}"
        )
    if self.num_item_tokens < 0:
      raise ValueError(f"T5Config.num_item_tokens: expected >= 0, got {self.num_item_tokens}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"T5Config.dropout_rate: expected in [0, 1), got {self.dropout_rate}")
    object.__setattr__(
      self,
      "attention_impl",
      resolve_attention(self.attention_impl, dropout_rate=float(self.dropout_rate)),
    )

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
    return _gelu_tanh if self.is_gated else _gelu_erf

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


# Module-level (not a lambda per call): the activation is a static attribute of every layer, so
# two models of one architecture must hold the same function for their graphdefs to compare equal,
# and every jit keyed on a graphdef (the beam search, the steps) to be reused instead of retraced.
def _gelu_tanh(x):
  return jax.nn.gelu(x, approximate=True)


def _gelu_erf(x):
  return jax.nn.gelu(x, approximate=False)


_V10 = dict(vocab_size=32128, d_kv=64, feed_forward_proj="relu", tie_word_embeddings=True)
_V11 = dict(vocab_size=32128, d_kv=64, feed_forward_proj="gated-gelu", tie_word_embeddings=False)

# Match the config.json of t5-{small,base,large} and google/flan-t5-{small,base,large}.
PRESETS: dict[str, dict[str, Any]] = {
  "tiny": dict(
    vocab_size=512,
    d_model=32,
    d_kv=8,
    d_ff=64,
    num_heads=4,
    num_encoder_layers=2,
    num_decoder_layers=2,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
  ),
  "small": dict(
    _V10, d_model=512, d_ff=2048, num_heads=8, num_encoder_layers=6, num_decoder_layers=6
  ),
  "base": dict(
    _V10, d_model=768, d_ff=3072, num_heads=12, num_encoder_layers=12, num_decoder_layers=12
  ),
  "large": dict(
    _V10, d_model=1024, d_ff=4096, num_heads=16, num_encoder_layers=24, num_decoder_layers=24
  ),
  "flan-t5-small": dict(
    _V11, d_model=512, d_ff=1024, num_heads=6, num_encoder_layers=8, num_decoder_layers=8
  ),
  "flan-t5-base": dict(
    _V11, d_model=768, d_ff=2048, num_heads=12, num_encoder_layers=12, num_decoder_layers=12
  ),
  "flan-t5-large": dict(
    _V11, d_model=1024, d_ff=2816, num_heads=16, num_encoder_layers=24, num_decoder_layers=24
  ),
}
