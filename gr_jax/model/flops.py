"""Analytic FLOPs of T5 per example, device peaks and MFU: the one place all three live.

MFU (model FLOPs utilisation) = useful model FLOPs per second / the device's dense peak. The useful
FLOPs are the analytic count below (never what XLA happened to run, which includes
rematerialisation and padding); the peak is the vendor's dense bf16 number whatever dtype the run
used, so MFU numbers are comparable across runs. The trainer and the benchmarks both use
`train_flops_per_example`, `peak_tflops` and `mfu` from here.

Counted: every matrix multiply, at 2 FLOPs per multiply-add, with the shapes our network runs
(dense attention over the padded lengths, no skipping of masked positions, as the hardware does):

  encoder layer (L = encoder_len):  q,k,v,o projections 2·L·D·4HK, scores and context 2·2·L²·HK,
                                    MLP 2·L·D·F·(2 or 3 matrices for relu / gated)
  decoder layer (T = decoder_len):  self-attention as above with T, cross-attention q,o on T tokens
                                    (2·T·D·2HK), cross k,v on the L encoder outputs (2·L·D·2HK,
                                    counted on the decoder side since they are decoder weights),
                                    scores and context 2·2·T·L·HK, MLP as above on T
  output projection:                2·T·D·V (V = text + item vocabulary)

Not counted (well under 1% at these sizes): norms, softmax, activations, dropout, the embedding
gather, relative-position bias lookup, the loss.

Training = 3 × forward: the backward pass of each matmul A·B needs dA and dB, two matmuls of the
same size (every matmul here has both operands needing a gradient: weights, or activations that
lead back to the trainable embedding). The usual 6·N·tokens rule would count every parameter for
every token; in an encoder-decoder the encoder weights only see L tokens and the decoder weights T
(plus cross k,v on L), so 6·N·(L+T) = 96.3 GFLOP overstates T5-base at L=64, T=8 about 2.2x.

T5-base (D 768, HK 768, F 3072, V 32128, 12+12 layers) at L=64, T=8: forward 14.84 GFLOP
(encoder 11.02, decoder 3.81 of which 0.40 output projection and 1.81 cross k,v), training
44.51 GFLOP per example (encoder 33.07, decoder 11.44).
"""

from __future__ import annotations

from typing import Any


def _attention_proj(tokens: int, cfg) -> int:
  return 2 * tokens * cfg.d_model * cfg.num_heads * cfg.d_kv  # one of q, k, v, o


def _attention_core(q_len: int, k_len: int, cfg) -> int:
  return 2 * 2 * q_len * k_len * cfg.num_heads * cfg.d_kv  # scores + probs @ values


def _mlp(tokens: int, cfg) -> int:
  n_mats = 3 if cfg.feed_forward_proj.startswith("gated-") else 2
  return 2 * tokens * cfg.d_model * cfg.d_ff * n_mats


def forward_flops(cfg, encoder_len: int, decoder_len: int, *, num_beams: int = 1) -> dict[str, int]:
  """Forward matmul FLOPs for one example: {"encoder", "decoder", "total"}.

  With `num_beams` > 1 the decoder runs `num_beams` sequences against one encoding; the cross
  k,v projections are computed once per example (shared by beams) as in `T5.cross_kv`.
  """
  L, T, n = int(encoder_len), int(decoder_len), int(num_beams)
  vocab = cfg.vocab_size + cfg.num_item_tokens
  enc_layer = 4 * _attention_proj(L, cfg) + _attention_core(L, L, cfg) + _mlp(L, cfg)
  encoder = cfg.num_encoder_layers * enc_layer
  dec_layer_per_beam = (
    4 * _attention_proj(T, cfg)
    + _attention_core(T, T, cfg)  # self
    + 2 * _attention_proj(T, cfg)
    + _attention_core(T, L, cfg)  # cross q,o
    + _mlp(T, cfg)
  )
  cross_kv = 2 * _attention_proj(L, cfg)  # once per example
  logits = 2 * T * cfg.d_model * vocab
  decoder = cfg.num_decoder_layers * (n * dec_layer_per_beam + cross_kv) + n * logits
  return {"encoder": encoder, "decoder": decoder, "total": encoder + decoder}


def train_flops(cfg, encoder_len: int, decoder_len: int) -> dict[str, int]:
  """Training (forward + backward) FLOPs per example: 3 x forward, per stack and total."""
  return {k: 3 * v for k, v in forward_flops(cfg, encoder_len, decoder_len).items()}


def train_flops_per_example(cfg, encoder_len: int, decoder_len: int) -> float:
  """Total training FLOPs of one example (what MFU divides by)."""
  return float(train_flops(cfg, encoder_len, decoder_len)["total"])


def inference_flops_per_example(
  cfg, encoder_len: int, decoder_len: int, num_beams: int = 1
) -> float:
  """Forward FLOPs of scoring `num_beams` decoder sequences of `decoder_len` for one query."""
  return float(forward_flops(cfg, encoder_len, decoder_len, num_beams=num_beams)["total"])


def summary(cfg, encoder_len: int, decoder_len: int) -> dict[str, Any]:
  fwd = forward_flops(cfg, encoder_len, decoder_len)
  return {
    "forward": fwd,
    "train": train_flops(cfg, encoder_len, decoder_len),
    "encoder_len": encoder_len,
    "decoder_len": decoder_len,
  }


# ------------------------------------------------------------------------------ peaks and MFU

# Dense (no sparsity) bf16 peak per chip in TFLOP/s, from vendor data sheets. Matched against
# `jax.Device.device_kind` (or torch's device name) by case-insensitive substring, first match
# wins, so more specific names come first ("h100 pcie" before "h100", "gh200" before "h200").
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
  ("h100 pcie", 756.0),
  ("h100 nvl", 835.0),
  ("h100", 989.4),  # SXM5, e.g. "NVIDIA H100 80GB HBM3"
  ("gh200", 989.4),
  ("h200", 989.4),
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
    override: a positive value wins (config `train.peak_tflops`, bench `--peak_tflops`), for
      chips not in the table.
  """
  if override and override > 0:
    return float(override)
  kind = str(device_kind).lower()
  for needle, tflops in PEAK_BF16_TFLOPS:
    if needle in kind:
      return tflops
  return None


def mfu(
  flops_per_example: float, examples_per_s: float, peak: float | None, num_devices: int = 1
) -> float | None:
  """Fraction of the peak used: flops/example * examples/s / (peak TFLOP/s * 1e12 * devices).

  None when there is no peak (unknown chip) or no FLOP count, rather than a made-up number.
  """
  if peak is None or peak <= 0 or flops_per_example <= 0:
    return None
  if num_devices < 1:
    raise ValueError(f"num_devices must be >= 1, got {num_devices}")
  return flops_per_example * examples_per_s / (peak * 1e12 * num_devices)
