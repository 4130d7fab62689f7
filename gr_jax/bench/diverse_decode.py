"""Diverse beam search with the atomic item constraint: gr-jax (KV cache and prefix recompute)
beside Hugging Face `generate` on the same small random T5.

Both sides decode one model (built with transformers, loaded by `gr_jax.model.load_hf_checkpoint`)
under the same item constraint (HF: the same mask through `prefix_allowed_tokens_fn`), so their
outputs are compared too (`agree_with_hf` = identical sequences). Run through the bench binary:

  python -m gr_jax.bench --modes=diverse_decode --batch_size=16 --encoder_len=32 \\
      --num_items=2000 --num_beams=60 --num_beam_groups=30 --num_return_sequences=30 \\
      --diversity_penalty=0.25 --compare_hf

Records: one "diverse_decode" record per implementation (examples = queries) and, with
`compare_hf`, one "compare" record per gr-jax implementation against HF (median of per-repeat
ratios; the sides are timed interleaved, see `gr_jax.bench.protocol`).
"""

from __future__ import annotations

import platform
import tempfile
from typing import Any

import numpy as np

from gr_jax.bench import protocol


def _hf_model(text_vocab, num_items, d_model, d_ff, num_layers, num_heads, seed):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)
  cfg = transformers.T5Config(
    vocab_size=text_vocab + num_items,
    d_model=d_model,
    d_kv=d_model // num_heads,
    d_ff=d_ff,
    num_layers=num_layers,
    num_decoder_layers=num_layers,
    num_heads=num_heads,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
    dropout_rate=0.0,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
  )
  return transformers.T5ForConditionalGeneration(cfg).eval()


def run_decode_benchmark(
  *,
  batch_size=16,
  encoder_len=32,
  text_vocab=512,
  num_items=2000,
  d_model=64,
  d_ff=128,
  num_layers=2,
  num_heads=4,
  num_beams=60,
  num_beam_groups=30,
  num_return_sequences=30,
  diversity_penalty=0.25,
  length_penalty=1.0,
  max_new_tokens=2,
  warmup=1,
  repeats=3,
  compare_hf=True,
  impls=("cache", "recompute"),
  seed=0,
) -> list[dict[str, Any]]:
  """Times every implementation interleaved; returns their records, then the compare records."""
  import jax  # pylint: disable=g-import-not-at-top

  # Imported here: the binary's other modes never pay for decoding and checkpoint import.
  from gr_jax.decoding import AtomicItemConstraint  # pylint: disable=g-import-not-at-top
  from gr_jax.decoding import beam_search  # pylint: disable=g-import-not-at-top
  from gr_jax.model import load_hf_checkpoint  # pylint: disable=g-import-not-at-top

  hf = _hf_model(text_vocab, num_items, d_model, d_ff, num_layers, num_heads, seed)
  with tempfile.TemporaryDirectory() as d:
    hf.save_pretrained(d)
    model = load_hf_checkpoint(d)
  rng = np.random.default_rng(seed)
  ids = rng.integers(2, text_vocab, size=(batch_size, encoder_len)).astype(np.int64)
  ids[:, -1] = 1
  con = AtomicItemConstraint(token_offset=text_vocab, num_items=num_items, eos_id=1)
  common = {
    "vocab": text_vocab + num_items,
    "d_model": d_model,
    "num_layers": num_layers,
    "num_beams": num_beams,
    "num_beam_groups": num_beam_groups,
    "num_return_sequences": num_return_sequences,
    "diversity_penalty": diversity_penalty,
    "platform": platform.machine(),
  }
  outputs: dict[str, np.ndarray] = {}
  sides = []
  for impl in impls:

    def run(impl=impl):
      out = beam_search(
        model,
        ids,
        num_beams=num_beams,
        num_beam_groups=num_beam_groups,
        diversity_penalty=diversity_penalty,
        length_penalty=length_penalty,
        max_new_tokens=max_new_tokens,
        num_return_sequences=num_return_sequences,
        constraint=con,
        use_cache=impl == "cache",
      )
      out = jax.block_until_ready(out)
      outputs[impl] = np.asarray(out[0])
      return out

    sides.append(protocol.Side(f"gr_jax_{impl}", run, block=lambda _: None))
  if compare_hf:
    import torch  # pylint: disable=g-import-not-at-top

    def allowed(batch_id, prefix):
      del batch_id
      return list(range(text_vocab, text_vocab + num_items)) if len(prefix) == 1 else [1]

    def run_hf():
      with torch.no_grad():
        out = hf.generate(
          input_ids=torch.tensor(ids),
          attention_mask=torch.tensor(ids != 0),
          num_beams=num_beams,
          num_beam_groups=num_beam_groups,
          diversity_penalty=diversity_penalty,
          length_penalty=length_penalty,
          max_new_tokens=max_new_tokens,
          do_sample=False,
          num_return_sequences=num_return_sequences,
          prefix_allowed_tokens_fn=allowed,
          return_dict_in_generate=True,
          output_scores=True,
        )
      outputs["hf"] = out.sequences.numpy()[:, 1:].reshape(batch_size, num_return_sequences, -1)
      return out

    sides.append(protocol.Side("hf_torch", run_hf, block=lambda _: None))

  times, warm = protocol.interleaved_times(sides, warmup=warmup, repeats=repeats)
  device = jax.devices()[0].device_kind
  recs = []
  for side, t, w in zip(sides, times, warm):
    extra = dict(common)
    if side.name == "hf_torch":
      extra["torch_threads"] = torch.get_num_threads()
    elif compare_hf:
      mine = outputs[side.name.removeprefix("gr_jax_")]
      extra["agree_with_hf"] = bool(
        np.array_equal(mine[..., : outputs["hf"].shape[-1]], outputs["hf"])
      )
    rec = protocol.make_record(
      kind="diverse_decode",
      impl=side.name,
      step_times_s=t,
      batch_size=batch_size,
      encoder_len=encoder_len,
      decoder_len=max_new_tokens,
      num_items=num_items,
      dtype="float32",
      device_kind=device if side.name != "hf_torch" else "cpu",
      num_devices=1,
      flops_per_example=0.0,
      peak_tflops=None,
      warmup_s=w,
      peak_memory_bytes=None,
      extra=extra,
    )
    rec["interleaved"] = len(sides) > 1
    recs.append(rec)
  compares = [protocol.compare(r, recs[-1]) for r in recs[:-1]] if compare_hf else []
  return recs + compares
