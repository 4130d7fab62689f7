"""Throughput benchmark binary: train step and beam search, optionally beside Hugging Face.

  python -m gr_jax.bench --preset=small --batch_size=32 --encoder_len=64 --decoder_len=8 \
      --compare_hf --out=bench/results/cpu.jsonl

Prints one JSON line per measurement (and appends them to --out); with --compare_hf also one
"compare" line per pair with the gr-jax / HF examples-per-second ratio.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging

_MODES = flags.DEFINE_list("modes", ["train"], "what to measure: train, decode, memory")
_PRESET = flags.DEFINE_string("preset", "small", "T5 preset (gr_jax.model PRESETS)")
_BATCH = flags.DEFINE_integer("batch_size", 32, "examples (train) or queries (decode) per batch")
_ENC = flags.DEFINE_integer("encoder_len", 64, "encoder tokens")
_DEC = flags.DEFINE_integer("decoder_len", 8, "decoder tokens (train)")
_ITEMS = flags.DEFINE_integer("num_items", 0, "atomic item tokens appended to the vocabulary")
_DTYPE = flags.DEFINE_string("dtype", "", "compute dtype; empty = bfloat16 on GPU/TPU, float32 on CPU")
_IMPL = flags.DEFINE_list("impl", ["trainer"], "train step: trainer (step.py as is) and/or fast")
_REMAT = flags.DEFINE_boolean("remat", False, "rematerialise layers")
_PRNG = flags.DEFINE_list("dropout_prng", ["auto"],
                          "train: dropout PRNGs to measure (auto, threefry2x32, rbg; see "
                          "train.dropout_prng)")
_CHUNK = flags.DEFINE_integer("chunk_size", 16384, "vocabulary chunk of the fast step's loss")
_BEAMS = flags.DEFINE_list("num_beams", ["30"], "decode: beam counts to measure")
_NEW = flags.DEFINE_integer("max_new_tokens", 2, "decode: generated tokens")
_WARMUP = flags.DEFINE_integer("warmup", 2, "untimed windows after compilation")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed windows (the median is reported)")
_STEPS = flags.DEFINE_integer("steps_per_repeat", 2, "train steps per timed window")
_HF = flags.DEFINE_boolean("compare_hf", False, "also run Hugging Face PyTorch on the same shapes")
_HF_COMPILE = flags.DEFINE_boolean("hf_compile", False, "also time HF with torch.compile")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "device peak TFLOP/s for MFU (0 = look up)")
_GPU_FLAGS = flags.DEFINE_boolean("gpu_xla_flags", True, "append the recommended GPU XLA_FLAGS")
_OUT = flags.DEFINE_string("out", "", "append the JSON lines to this file too")
_PROFILE = flags.DEFINE_string("profile_dir", "", "train: JAX profiler trace of one extra window per "
                               "measurement, under <dir>/<impl>_<dropout prng>")


def _emit(rec: dict, out: str) -> None:
  line = json.dumps(rec, sort_keys=False)
  print(line, flush=True)
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:
      f.write(line + "\n")


def _compare(ours: dict, hf: dict) -> dict:
  return {"kind": "compare", "what": ours["kind"], "impl": ours["impl"], "hf_impl": hf["impl"],
          "preset": ours.get("preset"), "batch_size": ours["batch_size"],
          "encoder_len": ours["encoder_len"], "decoder_len": ours["decoder_len"],
          "num_items": ours["num_items"], "num_beams": ours.get("num_beams"),
          "device_kind": ours["device_kind"], "dropout_prng": ours.get("dropout_prng"),
          "gr_jax_examples_per_s": ours["examples_per_s"],
          "hf_examples_per_s": hf["examples_per_s"],
          "ratio": ours["examples_per_s"] / hf["examples_per_s"]}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _GPU_FLAGS.value:
    from gr_jax.benchmark import train_bench as tb_flags  # pylint: disable=g-import-not-at-top
    tb_flags.apply_gpu_xla_flags()  # before the backend starts; ignored by the CPU backend
  import jax  # pylint: disable=g-import-not-at-top
  from gr_jax.benchmark import train_bench  # pylint: disable=g-import-not-at-top
  backend = jax.default_backend()
  dtype = _DTYPE.value or ("float32" if backend == "cpu" else "bfloat16")
  logging.info("devices: %s; dtype %s", jax.devices(), dtype)
  out = _OUT.value
  modes = set(_MODES.value)
  unknown = modes - {"train", "decode", "memory"}
  if unknown:
    raise app.UsageError(f"--modes: expected train, decode, memory; got {sorted(unknown)}")
  from gr_jax.model import T5Config  # pylint: disable=g-import-not-at-top
  model_config = T5Config.from_preset(_PRESET.value, num_item_tokens=_ITEMS.value)
  flops = train_bench.model_flops_per_example(model_config, _ENC.value, _DEC.value)

  if "train" in modes:
    ours = []
    for impl in _IMPL.value:
      for prng in _PRNG.value:
        rec = train_bench.train_benchmark(
            preset=_PRESET.value, batch_size=_BATCH.value, encoder_len=_ENC.value,
            decoder_len=_DEC.value, num_items=_ITEMS.value, dtype=dtype, impl=impl,
            remat=_REMAT.value, warmup=_WARMUP.value, repeats=_REPEATS.value,
            steps_per_repeat=_STEPS.value, chunk_size=_CHUNK.value, dropout_prng=prng,
            peak_tflops_override=_PEAK.value,
            profile_dir=os.path.join(_PROFILE.value, f"{impl}_{prng}") if _PROFILE.value else "")
        _emit(rec, out)
        ours.append(rec)
    if _HF.value:
      from gr_jax.benchmark import hf_reference  # pylint: disable=g-import-not-at-top
      for compile_model in ([False, True] if _HF_COMPILE.value else [False]):
        hf = hf_reference.train_benchmark(
            model_config, batch_size=_BATCH.value, encoder_len=_ENC.value,
            decoder_len=_DEC.value, num_items=_ITEMS.value, warmup=_WARMUP.value,
            repeats=_REPEATS.value, steps_per_repeat=_STEPS.value,
            compile_model=compile_model, dtype=dtype, flops_per_example=flops,
            peak_tflops_override=_PEAK.value)
        hf["preset"] = _PRESET.value
        _emit(hf, out)
        for rec in ours:
          _emit(_compare(rec, hf), out)

  if "decode" in modes:
    from gr_jax.benchmark import decode_bench  # pylint: disable=g-import-not-at-top
    for beams in (int(b) for b in _BEAMS.value):
      rec = decode_bench.decode_benchmark(
          preset=_PRESET.value, batch_size=_BATCH.value, encoder_len=_ENC.value,
          num_beams=beams, max_new_tokens=_NEW.value, num_items=_ITEMS.value, dtype=dtype,
          warmup=_WARMUP.value, repeats=_REPEATS.value, peak_tflops_override=_PEAK.value)
      _emit(rec, out)
      if _HF.value:
        from gr_jax.benchmark import hf_reference  # pylint: disable=g-import-not-at-top
        hf = hf_reference.decode_benchmark(
            model_config, batch_size=_BATCH.value, encoder_len=_ENC.value, num_beams=beams,
            max_new_tokens=_NEW.value, warmup=_WARMUP.value, repeats=_REPEATS.value,
            dtype=dtype, peak_tflops_override=_PEAK.value)
        hf["preset"] = _PRESET.value
        _emit(hf, out)
        _emit(_compare(rec, hf), out)

  if "memory" in modes:
    for impl in _IMPL.value:
      mem = train_bench.compiled_train_memory(
          preset=_PRESET.value, batch_size=_BATCH.value, encoder_len=_ENC.value,
          decoder_len=_DEC.value, num_items=_ITEMS.value, dtype=dtype, impl=impl,
          remat=_REMAT.value, chunk_size=_CHUNK.value)
      mem["kind"] = "memory"
      _emit(mem, out)


def run():
  app.run(main)


if __name__ == "__main__":
  sys.exit(run())
