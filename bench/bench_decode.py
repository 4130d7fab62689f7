"""Decode benchmark: gr_jax diverse beam search vs Hugging Face `generate` on the same model.

Library function `run_decode_benchmark(...)` (the bench binary calls it) returns a list of dicts,
one per implementation: queries/s (median of `repeats` timed calls after a warm-up/compile call),
compile seconds, shapes. Both sides decode the same random T5 (built with transformers, loaded by
`gr_jax.model.load_hf_checkpoint`) with the atomic item constraint (HF: the same mask through
`prefix_allowed_tokens_fn`), so their outputs can be compared too (`agree` = identical sequences).

  .venv/bin/python bench/bench_decode.py --batch_size 16 --num_beams 60 --num_beam_groups 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _hf_model(text_vocab, num_items, d_model, d_ff, num_layers, num_heads, seed):
  import torch
  import transformers
  torch.manual_seed(seed)
  cfg = transformers.T5Config(vocab_size=text_vocab + num_items, d_model=d_model,
                              d_kv=d_model // num_heads, d_ff=d_ff, num_layers=num_layers,
                              num_decoder_layers=num_layers, num_heads=num_heads,
                              decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                              dropout_rate=0.0, feed_forward_proj="gated-gelu",
                              tie_word_embeddings=False)
  return transformers.T5ForConditionalGeneration(cfg).eval()


def _time(fn, repeats):
  t0 = time.perf_counter()
  fn()  # compile / warm-up
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return first, statistics.median(times), times


def run_decode_benchmark(*, batch_size=16, encoder_len=32, text_vocab=512, num_items=2000,
                         d_model=64, d_ff=128, num_layers=2, num_heads=4, num_beams=60,
                         num_beam_groups=30, num_return_sequences=30, diversity_penalty=0.25,
                         length_penalty=1.0, max_new_tokens=2, repeats=3, compare_hf=True,
                         impls=("cache", "recompute"), seed=0) -> list[dict]:
  import jax
  import jax.numpy as jnp

  from gr_jax.decoding import AtomicItemConstraint, beam_search
  from gr_jax.model import load_hf_checkpoint

  hf = _hf_model(text_vocab, num_items, d_model, d_ff, num_layers, num_heads, seed)
  with tempfile.TemporaryDirectory() as d:
    hf.save_pretrained(d)
    model = load_hf_checkpoint(d)
  rng = np.random.default_rng(seed)
  ids = rng.integers(2, text_vocab, size=(batch_size, encoder_len)).astype(np.int64)
  ids[:, -1] = 1
  con = AtomicItemConstraint(token_offset=text_vocab, num_items=num_items, eos_id=1)
  common = {"batch_size": batch_size, "encoder_len": encoder_len, "vocab": text_vocab + num_items,
            "num_items": num_items, "d_model": d_model, "num_layers": num_layers,
            "num_beams": num_beams, "num_beam_groups": num_beam_groups,
            "num_return_sequences": num_return_sequences, "max_new_tokens": max_new_tokens,
            "device": jax.devices()[0].device_kind, "platform": platform.machine()}
  results, outputs = [], {}
  for impl in impls:
    def run(impl=impl):
      out = beam_search(model, ids, num_beams=num_beams, num_beam_groups=num_beam_groups,
                        diversity_penalty=diversity_penalty, length_penalty=length_penalty,
                        max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences,
                        constraint=con, use_cache=impl == "cache")
      out = jax.block_until_ready(out)
      outputs[impl] = np.asarray(out[0])
      return out
    first, med, times = _time(run, repeats)
    results.append(dict(common, impl=f"gr_jax_{impl}", compile_plus_first_s=first,
                        median_s=med, queries_per_s=batch_size / med))
  if compare_hf:
    import torch

    def allowed(batch_id, prefix):
      del batch_id
      return list(range(text_vocab, text_vocab + num_items)) if len(prefix) == 1 else [1]

    def run_hf():
      with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(ids != 0),
                          num_beams=num_beams, num_beam_groups=num_beam_groups,
                          diversity_penalty=diversity_penalty, length_penalty=length_penalty,
                          max_new_tokens=max_new_tokens, do_sample=False,
                          num_return_sequences=num_return_sequences,
                          prefix_allowed_tokens_fn=allowed, return_dict_in_generate=True,
                          output_scores=True)
      outputs["hf"] = out.sequences.numpy()[:, 1:].reshape(batch_size, num_return_sequences, -1)
      return out
    first, med, times = _time(run_hf, repeats)
    results.append(dict(common, impl="hf_torch", compile_plus_first_s=first, median_s=med,
                        queries_per_s=batch_size / med, torch_threads=torch.get_num_threads()))
    for r in results[:-1]:
      mine = outputs[r["impl"].removeprefix("gr_jax_")]
      r["agree_with_hf"] = bool(np.array_equal(mine[..., :outputs["hf"].shape[-1]], outputs["hf"]))
      r["speedup_vs_hf"] = r["queries_per_s"] / results[-1]["queries_per_s"]
  return results


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--num_items", type=int, default=2000)
  p.add_argument("--num_beams", type=int, default=60)
  p.add_argument("--num_beam_groups", type=int, default=30)
  p.add_argument("--num_return_sequences", type=int, default=30)
  p.add_argument("--d_model", type=int, default=64)
  p.add_argument("--num_layers", type=int, default=2)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--no_hf", action="store_true")
  a = p.parse_args()
  for r in run_decode_benchmark(batch_size=a.batch_size, num_items=a.num_items,
                                num_beams=a.num_beams, num_beam_groups=a.num_beam_groups,
                                num_return_sequences=a.num_return_sequences, d_model=a.d_model,
                                num_layers=a.num_layers, repeats=a.repeats,
                                compare_hf=not a.no_hf):
    print(json.dumps(r))


if __name__ == "__main__":
  main()
