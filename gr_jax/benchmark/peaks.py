"""Device peak throughput and the MFU arithmetic every benchmark record uses.

MFU (model FLOPs utilisation) = useful model FLOPs per second / the device's dense peak. The useful
FLOPs come from the analytic count in `gr_jax.model.flops` (never from what XLA happened to run,
which includes rematerialisation and padding); the peak is the dense bf16 tensor-core number the
vendor publishes, whatever dtype the run used, so MFU numbers are comparable across runs.
"""

from __future__ import annotations

import dataclasses

# Dense (no sparsity) bf16 peak per chip in TFLOP/s, from vendor data sheets. Matched against
# `jax.Device.device_kind` (or torch's device name) by case-insensitive substring, first match wins,
# so more specific names come first.
_PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("h100 pcie", 756.0),
    ("h100 nvl", 835.0),
    ("h100", 989.4),  # SXM5, e.g. "NVIDIA H100 80GB HBM3"
    ("h200", 989.4),
    ("gh200", 989.4),
    ("b200", 2250.0),
    ("a100", 312.0),
    ("l4", 121.0),
    ("tpu v4", 275.0),
    ("tpu v5 lite", 197.0),  # v5e
    ("tpu v5e", 197.0),
    ("tpu v5p", 459.0),
    ("tpu v5", 459.0),
    ("tpu v6 lite", 918.0),  # v6e (Trillium)
    ("tpu v6e", 918.0),
)


def peak_tflops(device_kind: str, override: float = 0.0) -> float | None:
  """Dense bf16 peak of one chip in TFLOP/s; None when unknown (CPUs: no MFU is reported).

  Args:
    device_kind: e.g. `jax.devices()[0].device_kind` ("NVIDIA H100 80GB HBM3", "TPU v4", "cpu").
    override: a positive value wins (config `train.peak_tflops`), for chips not in the table.
  """
  if override and override > 0:
    return float(override)
  kind = device_kind.lower()
  for needle, tflops in _PEAK_BF16_TFLOPS:
    if needle in kind:
      return tflops
  return None


def mfu(flops_per_example: float, examples_per_s: float, peak: float | None,
        num_devices: int = 1) -> float | None:
  """Fraction of the peak used: flops/example * examples/s / (peak TFLOP/s * 1e12 * devices)."""
  if peak is None or peak <= 0 or flops_per_example <= 0:
    return None
  if num_devices < 1:
    raise ValueError(f"num_devices must be >= 1, got {num_devices}")
  return flops_per_example * examples_per_s / (peak * 1e12 * num_devices)


@dataclasses.dataclass(frozen=True)
class T5Dims:
  """The shapes that decide a T5's FLOPs (a subset of `gr_jax.model.T5Config`)."""
  d_model: int
  d_kv: int
  d_ff: int
  num_heads: int
  num_encoder_layers: int
  num_decoder_layers: int
  total_vocab_size: int
  gated: bool = False  # gated-gelu feed-forward has two input projections

  @classmethod
  def from_config(cls, config) -> "T5Dims":
    """From any object with T5Config's field names (ours or Hugging Face's)."""
    vocab = getattr(config, "total_vocab_size", None) or config.vocab_size
    proj = getattr(config, "feed_forward_proj", "relu")
    enc_layers = getattr(config, "num_encoder_layers", None) or config.num_layers  # HF: num_layers
    return cls(config.d_model, config.d_kv, config.d_ff, config.num_heads, enc_layers,
               config.num_decoder_layers, int(vocab), gated=str(proj).startswith("gated"))


def t5_forward_flops(dims: T5Dims, encoder_len: int, decoder_len: int) -> dict[str, float]:
  """Matmul FLOPs of one example's forward pass, encoder and decoder counted separately.

  An independent cross-check of `gr_jax.model.flops` (tests compare the two and XLA's own count);
  element-wise work (norms, softmax, activations) is excluded as is conventional for MFU.
  """
  d, inner, ff = dims.d_model, dims.num_heads * dims.d_kv, dims.d_ff
  ff_in = 2 if dims.gated else 1
  le, ld = encoder_len, decoder_len
  # Per encoder layer: q,k,v,o projections; scores and weighted values; feed-forward.
  enc_layer = (2 * le * d * inner * 4 + 2 * 2 * le * le * inner
               + 2 * le * d * ff * (ff_in + 1))
  # Per decoder layer: causal self-attention (counted dense, as XLA runs it), cross-attention
  # with q,o on decoder tokens and k,v on encoder tokens, feed-forward.
  dec_layer = (2 * ld * d * inner * 4 + 2 * 2 * ld * ld * inner
               + 2 * ld * d * inner * 2 + 2 * le * d * inner * 2 + 2 * 2 * ld * le * inner
               + 2 * ld * d * ff * (ff_in + 1))
  encoder = dims.num_encoder_layers * enc_layer
  decoder = dims.num_decoder_layers * dec_layer + 2 * ld * d * dims.total_vocab_size
  return {"encoder": float(encoder), "decoder": float(decoder), "total": float(encoder + decoder)}


def t5_train_flops(dims: T5Dims, encoder_len: int, decoder_len: int) -> float:
  """Forward + backward (2x forward) matmul FLOPs of one training example."""
  return 3.0 * t5_forward_flops(dims, encoder_len, decoder_len)["total"]
