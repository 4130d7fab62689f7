"""Decode benchmark: `gr_jax.decoding.beam_search` on a random-init model, one record per shape."""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import numpy as np
from flax import nnx

from gr_jax.bench import protocol
from gr_jax.bench import train_bench
from gr_jax.model import flops as flops_lib


def prepare_decode(
  *,
  preset: str = "small",
  batch_size: int = 8,
  encoder_len: int = 64,
  num_beams: int = 30,
  num_beam_groups: int = 1,
  diversity_penalty: float = 0.0,
  num_return_sequences: int | None = None,
  max_new_tokens: int = 2,
  num_items: int = 0,
  dtype: str = "float32",
  seed: int = 0,
  model_overrides: dict | None = None,
  peak_tflops_override: float = 0.0,
) -> protocol.Side:
  """Builds and compiles one jitted beam search over a batch of random queries (eval mode, no
  dropout): one side to time."""
  from gr_jax.decoding import beam_search  # pylint: disable=g-import-not-at-top

  if not callable(beam_search):  # the package did not re-export it: take it from the module
    beam_search = beam_search.beam_search
  from gr_jax.bench import hf_reference  # pylint: disable=g-import-not-at-top (numpy only)
  from gr_jax.model import T5, T5Config  # pylint: disable=g-import-not-at-top

  ov = dict(model_overrides or {})
  ov.update(num_item_tokens=int(num_items), dtype=dtype, param_dtype="float32", dropout_rate=0.0)
  config = T5Config.from_preset(preset, **ov)
  model = T5(config, rngs=nnx.Rngs(seed))
  host = hf_reference.random_batch(config, batch_size, encoder_len, 2, seed)
  ids = jax.device_put(host["encoder_input_ids"])
  num_return = num_return_sequences or num_beams
  last = {}

  def window():
    last["out"] = beam_search(
      model,
      ids,
      encoder_mask=ids != 0,
      num_beams=num_beams,
      num_beam_groups=num_beam_groups,
      diversity_penalty=diversity_penalty,
      max_new_tokens=max_new_tokens,
      num_return_sequences=num_return,
    )
    return last["out"]

  t0 = time.perf_counter()
  jax.block_until_ready(window())  # compiles
  compile_s = time.perf_counter() - t0

  def finish(times: list[float], warmup_s: float) -> dict[str, Any]:
    seqs, _ = last["out"]
    dev = jax.devices()[0]
    return protocol.make_record(
      kind="decode",
      impl="gr_jax_beam_search",
      step_times_s=times,
      batch_size=batch_size,
      encoder_len=encoder_len,
      decoder_len=max_new_tokens,
      num_items=num_items,
      dtype=dtype,
      device_kind=dev.device_kind,
      num_devices=1,
      flops_per_example=0.0,
      peak_tflops=flops_lib.peak_tflops(dev.device_kind, peak_tflops_override),
      warmup_s=warmup_s,
      peak_memory_bytes=train_bench._device_peak_bytes(dev),  # pylint: disable=protected-access
      extra={
        "preset": preset,
        "num_beams": num_beams,
        "num_beam_groups": num_beam_groups,
        "num_return_sequences": num_return,
        "compile_s": compile_s,
        "output_shape": list(np.shape(seqs)),
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
      },
    )

  return protocol.Side(f"gr_jax_beam_search_{num_beams}", window, 1, finish=finish)


def decode_benchmark(*, warmup: int = 1, repeats: int = 3, **kwargs) -> dict[str, Any]:
  """`prepare_decode(**kwargs)` timed alone (no other side); returns its record."""
  make = functools.partial(prepare_decode, **kwargs)
  return protocol.measure([make], warmup=warmup, repeats=repeats)[0]
