"""Decode benchmark: `gr_jax.decoding.beam_search` on a random-init model, one record per shape.

`first_step_comparison` times the search with step 0 run once per query (the default) against
step 0 run on every beam (`first_step_once=False`), interleaved, at the paper's settings by
default (60 beams in 30 groups, one-token item IDs under the item constraint):

  python -m gr_jax.bench --modes=first_step --preset=tiny --batch_size=8 --num_beams=60 \\
      --num_beam_groups=30 --num_return_sequences=30 --num_items=2000
"""

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
  item_constraint: bool = False,
  first_step_once: bool = True,
) -> protocol.Side:
  """Builds and compiles one jitted beam search over a batch of random queries (eval mode, no
  dropout): one side to time.

  item_constraint: decode only the `num_items` atomic item tokens, then EOS (one-token item IDs).
  first_step_once: False runs the decoder's step 0 on every beam (the comparison's baseline).
  """
  from gr_jax.decoding import beam_search  # pylint: disable=g-import-not-at-top

  if not callable(beam_search):  # the package did not re-export it: take it from the module
    beam_search = beam_search.beam_search
  from gr_jax.bench import hf_reference  # pylint: disable=g-import-not-at-top (numpy only)
  from gr_jax.decoding import AtomicItemConstraint  # pylint: disable=g-import-not-at-top
  from gr_jax.model import T5, T5Config  # pylint: disable=g-import-not-at-top

  ov = dict(model_overrides or {})
  ov.update(num_item_tokens=int(num_items), dtype=dtype, param_dtype="float32", dropout_rate=0.0)
  config = T5Config.from_preset(preset, **ov)
  model = T5(config, rngs=nnx.Rngs(seed))
  host = hf_reference.random_batch(config, batch_size, encoder_len, 2, seed)
  ids = jax.device_put(host["encoder_input_ids"])
  num_return = num_return_sequences or num_beams
  constraint = None
  if item_constraint:
    if num_items < 1:
      raise ValueError("prepare_decode: item_constraint needs num_items >= 1")
    constraint = AtomicItemConstraint(config.vocab_size, num_items, config.eos_token_id)
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
      constraint=constraint,
      first_step_once=first_step_once,
    )
    return last["out"]

  # The baseline gets its own impl name, so a compare record says which side is which.
  impl = "gr_jax_beam_search" if first_step_once else "gr_jax_beam_search_step0_per_beam"
  t0 = time.perf_counter()
  jax.block_until_ready(window())  # compiles
  compile_s = time.perf_counter() - t0

  def finish(times: list[float], warmup_s: float) -> dict[str, Any]:
    seqs, _ = last["out"]
    dev = jax.devices()[0]
    return protocol.make_record(
      kind="decode",
      impl=impl,
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
        "diversity_penalty": diversity_penalty,
        "item_constraint": item_constraint,
        "first_step_once": first_step_once,
        "compile_s": compile_s,
        "output_shape": list(np.shape(seqs)),
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
      },
    )

  return protocol.Side(f"{impl}_{num_beams}", window, 1, finish=finish)


def decode_benchmark(*, warmup: int = 1, repeats: int = 3, **kwargs) -> dict[str, Any]:
  """`prepare_decode(**kwargs)` timed alone (no other side); returns its record."""
  make = functools.partial(prepare_decode, **kwargs)
  return protocol.measure([make], warmup=warmup, repeats=repeats)[0]


def first_step_comparison(
  *,
  preset: str = "small",
  batch_size: int = 8,
  encoder_len: int = 64,
  num_beams: int = 60,
  num_beam_groups: int = 30,
  diversity_penalty: float = 0.25,
  num_return_sequences: int | None = 30,
  max_new_tokens: int = 2,
  num_items: int = 2000,
  warmup: int = 1,
  repeats: int = 3,
  interleave: bool = True,
  **kwargs,
) -> list[dict[str, Any]]:
  """Step 0 once per query against once per beam, timed interleaved (`protocol.measure`), on the
  same model, queries and item constraint. Returns [once record, per-beam record, compare record
  (ratio = examples/s once / per beam)]; the compare record also says whether both sides returned
  the same sequences."""
  common = dict(
    preset=preset,
    batch_size=batch_size,
    encoder_len=encoder_len,
    num_beams=num_beams,
    num_beam_groups=num_beam_groups,
    diversity_penalty=diversity_penalty,
    num_return_sequences=num_return_sequences,
    max_new_tokens=max_new_tokens,
    num_items=num_items,
    item_constraint=num_items > 0,
    **kwargs,
  )
  last = {}  # first_step_once -> that side's latest (sequences, scores)

  def make(first_step_once):
    side = prepare_decode(first_step_once=first_step_once, **common)
    window = side.window

    def keep_output():
      last[first_step_once] = window()
      return last[first_step_once]

    side.window = keep_output
    return side

  once, per_beam = protocol.measure(
    [functools.partial(make, True), functools.partial(make, False)],
    warmup=warmup,
    repeats=repeats,
    interleave=interleave,
  )
  (seqs_a, scores_a), (seqs_b, scores_b) = (
    [np.asarray(x) for x in last[flag]] for flag in (True, False)
  )
  cmp = protocol.compare(once, per_beam)
  cmp["num_beam_groups"] = num_beam_groups
  cmp["same_sequences"] = bool(np.array_equal(seqs_a, seqs_b))
  # Last-bit differences of the [B, 1] decoder step (see gr_jax.decoding.beam_search); equal
  # entries count 0, so -inf scores of empty slots on both sides are no NaN.
  diff = np.abs(scores_a - scores_b, where=scores_a != scores_b, out=np.zeros_like(scores_a))
  cmp["max_score_diff"] = float(diff.max())
  return [once, per_beam, cmp]
