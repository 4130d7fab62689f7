"""Hugging Face PyTorch T5 on the same shapes: the baseline every gr-jax number is compared to.

torch and transformers are imported only when a Hugging Face side is built (`--compare_hf`);
`random_batch` is numpy only and feeds the gr-jax sides too. gr_jax itself never depends on torch
or transformers (they are test/bench extras). Works with transformers 4.56 (this
machine) and 5.x (the GPU image): only long-stable arguments are used.
"""

from __future__ import annotations

import functools
import resource
from typing import Any

import numpy as np

from gr_jax.bench import protocol
from gr_jax.model import flops as flops_lib


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # a clear message instead of a bare traceback
    raise ImportError("--compare_hf needs torch and transformers (pip install -e '.[test]')") from e
  return torch, transformers


def hf_config(config, dropout_rate: float | None = None):
  """`transformers.T5Config` with the shapes of a `gr_jax.model.T5Config` (item tokens included).

  The text and item vocabularies are one embedding in both implementations, so the HF model's
  `vocab_size` is our `total_vocab_size`.
  """
  _, transformers = _torch()
  vocab = getattr(config, "total_vocab_size", None) or config.vocab_size
  enc_layers = getattr(config, "num_encoder_layers", None) or config.num_layers
  return transformers.T5Config(
    vocab_size=int(vocab),
    d_model=config.d_model,
    d_kv=config.d_kv,
    d_ff=config.d_ff,
    num_heads=config.num_heads,
    num_layers=enc_layers,
    num_decoder_layers=config.num_decoder_layers,
    relative_attention_num_buckets=config.relative_attention_num_buckets,
    relative_attention_max_distance=config.relative_attention_max_distance,
    dropout_rate=config.dropout_rate if dropout_rate is None else dropout_rate,
    layer_norm_epsilon=config.layer_norm_epsilon,
    feed_forward_proj=config.feed_forward_proj,
    tie_word_embeddings=config.tie_word_embeddings,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
  )


def _sync(torch, device: str) -> None:
  if device.startswith("cuda"):
    torch.cuda.synchronize()


def _peak_memory(torch, device: str) -> int:
  if device.startswith("cuda"):
    return int(torch.cuda.max_memory_allocated())
  # CPU: the process's peak resident set (Linux reports KiB); shared with JAX in one process, so
  # it bounds both from above rather than measuring either alone.
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _device_name(torch, device: str) -> str:
  if device.startswith("cuda"):
    return torch.cuda.get_device_name()
  return "cpu"


def random_batch(
  config, batch_size: int, encoder_len: int, decoder_len: int, seed: int = 0, num_items: int = 0
) -> dict[str, np.ndarray]:
  """Fixed-shape synthetic batch in the training-batch layout of BUILD_NOTES (numpy, int32).

  Encoder tokens are random non-special ids (no padding, the worst case); decoder targets are item
  tokens when the model has items, else text tokens, then EOS; inputs are targets shifted right.
  """
  rng = np.random.default_rng(seed)
  vocab = int(config.vocab_size)
  total = int(getattr(config, "total_vocab_size", vocab))
  enc = rng.integers(3, total, size=(batch_size, encoder_len), dtype=np.int64).astype(np.int32)
  lo, hi = (vocab, total) if num_items > 0 else (3, vocab)
  targets = rng.integers(lo, hi, size=(batch_size, decoder_len), dtype=np.int64).astype(np.int32)
  targets[:, -1] = 1  # </s>
  dec_in = np.concatenate([np.zeros((batch_size, 1), np.int32), targets[:, :-1]], axis=1)
  return {
    "encoder_input_ids": enc,
    "decoder_input_ids": dec_in,
    "decoder_target_ids": targets,
    "decoder_weights": np.ones((batch_size, decoder_len), np.float32),
    "task_id": np.zeros((batch_size,), np.int32),
  }


def prepare_train(
  config,
  *,
  batch_size: int,
  encoder_len: int,
  decoder_len: int,
  num_items: int = 0,
  steps_per_repeat: int = 1,
  device: str | None = None,
  compile_model: bool = False,
  dtype: str = "float32",
  learning_rate: float = 2e-3,
  weight_decay: float = 0.01,
  seed: int = 0,
  flops_per_example: float = 0.0,
  peak_tflops_override: float = 0.0,
  preset: str | None = None,
) -> protocol.Side:
  """`T5ForConditionalGeneration` AdamW training steps, built: one side to time.

  A step is forward with labels (HF's own cross-entropy), backward, AdamW update and zeroing the
  gradients; no `.item()` in the loop, so the device queue is never drained except at the timing
  boundaries. `dtype="bfloat16"` uses autocast with float32 master weights, the same recipe as the
  JAX step. torch.compile happens in the first warm-up window.
  """
  torch, transformers = _torch()
  device = device or ("cuda" if torch.cuda.is_available() else "cpu")
  torch.manual_seed(seed)
  model = transformers.T5ForConditionalGeneration(hf_config(config)).to(device)
  model.train()
  fwd = torch.compile(model) if compile_model else model
  optimizer = torch.optim.AdamW(
    model.parameters(), lr=learning_rate, weight_decay=weight_decay, foreach=True
  )
  batch = random_batch(config, batch_size, encoder_len, decoder_len, seed, num_items)
  input_ids = torch.from_numpy(batch["encoder_input_ids"].astype(np.int64)).to(device)
  attention_mask = torch.ones_like(input_ids)
  labels = torch.from_numpy(batch["decoder_target_ids"].astype(np.int64)).to(device)
  use_autocast = dtype == "bfloat16"

  def step():
    with torch.autocast(
      device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=use_autocast
    ):
      loss = fwd(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss

  last = {}

  def window():
    for _ in range(steps_per_repeat):
      last["loss"] = step()

  def finish(times: list[float], warmup_s: float) -> dict[str, Any]:
    final_loss = float(last["loss"].detach().float().cpu())
    name = _device_name(torch, device)
    return _record(
      kind="train",
      impl="hf_compile" if compile_model else "hf_eager",
      times=times,
      batch_size=batch_size,
      encoder_len=encoder_len,
      decoder_len=decoder_len,
      num_items=num_items,
      dtype=dtype,
      device_kind=name,
      flops_per_example=flops_per_example,
      peak=flops_lib.peak_tflops(name, peak_tflops_override),
      warmup_s=warmup_s,
      peak_memory_bytes=_peak_memory(torch, device),
      extra={
        "preset": preset,
        "loss": final_loss,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "steps_per_repeat": steps_per_repeat,
      },
    )

  return protocol.Side(
    "hf_compile" if compile_model else "hf_eager",
    window,
    steps_per_repeat,
    block=lambda _: _sync(torch, device),
    finish=finish,
  )


def prepare_decode(
  config,
  *,
  batch_size: int,
  encoder_len: int,
  num_beams: int,
  num_return_sequences: int | None = None,
  max_new_tokens: int = 2,
  device: str | None = None,
  dtype: str = "float32",
  seed: int = 0,
  peak_tflops_override: float = 0.0,
  preset: str | None = None,
) -> protocol.Side:
  """Plain beam search with `generate(num_beams=...)` (no groups, no constraint): one side."""
  torch, transformers = _torch()
  device = device or ("cuda" if torch.cuda.is_available() else "cpu")
  torch.manual_seed(seed)
  model = transformers.T5ForConditionalGeneration(hf_config(config)).to(device)
  if dtype == "bfloat16":
    model = model.to(torch.bfloat16)
  model.eval()
  batch = random_batch(config, batch_size, encoder_len, 2, seed)
  input_ids = torch.from_numpy(batch["encoder_input_ids"].astype(np.int64)).to(device)
  attention_mask = torch.ones_like(input_ids)
  num_return = num_return_sequences or num_beams
  last = {}

  def window():
    with torch.no_grad():
      last["out"] = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        num_beams=num_beams,
        num_return_sequences=num_return,
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        do_sample=False,
        early_stopping=False,
        length_penalty=1.0,
      )

  def finish(times: list[float], warmup_s: float) -> dict[str, Any]:
    name = _device_name(torch, device)
    return _record(
      kind="decode",
      impl="hf_generate",
      times=times,
      batch_size=batch_size,
      encoder_len=encoder_len,
      decoder_len=max_new_tokens,
      num_items=0,
      dtype=dtype,
      device_kind=name,
      flops_per_example=0.0,
      peak=flops_lib.peak_tflops(name, peak_tflops_override),
      warmup_s=warmup_s,
      peak_memory_bytes=_peak_memory(torch, device),
      extra={
        "preset": preset,
        "num_beams": num_beams,
        "num_return_sequences": num_return,
        "output_shape": list(last["out"].shape),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
      },
    )

  return protocol.Side(
    "hf_generate", window, 1, block=lambda _: _sync(torch, device), finish=finish
  )


def train_benchmark(config, *, warmup: int = 2, repeats: int = 5, **kwargs) -> dict[str, Any]:
  """`prepare_train(config, **kwargs)` timed alone; returns its record."""
  make = functools.partial(prepare_train, config, **kwargs)
  return protocol.measure([make], warmup=warmup, repeats=repeats)[0]


def decode_benchmark(config, *, warmup: int = 1, repeats: int = 3, **kwargs) -> dict[str, Any]:
  """`prepare_decode(config, **kwargs)` timed alone; returns its record."""
  make = functools.partial(prepare_decode, config, **kwargs)
  return protocol.measure([make], warmup=warmup, repeats=repeats)[0]


def _record(
  *,
  kind,
  impl,
  times,
  batch_size,
  encoder_len,
  decoder_len,
  num_items,
  dtype,
  device_kind,
  flops_per_example,
  peak,
  warmup_s,
  peak_memory_bytes,
  extra,
):
  # The same record layout as the JAX side, so the two compare line by line.
  return protocol.make_record(
    kind=kind,
    impl=impl,
    step_times_s=times,
    batch_size=batch_size,
    encoder_len=encoder_len,
    decoder_len=decoder_len,
    num_items=num_items,
    dtype=dtype,
    device_kind=device_kind,
    num_devices=1,
    flops_per_example=flops_per_example,
    peak_tflops=peak,
    warmup_s=warmup_s,
    peak_memory_bytes=peak_memory_bytes,
    extra=extra,
  )
