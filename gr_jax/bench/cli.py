"""The benchmark binary (`python -m gr_jax.bench`, console script `gr-jax-bench`).

  python -m gr_jax.bench --preset=small --batch_size=32 --encoder_len=64 --decoder_len=8 \\
      --compare_hf --out=bench/results/cpu.jsonl

Modes (`--modes`, comma-separated):
  train           the trainer's jitted step (`--impl`, `--dropout_prng`), with --compare_hf
                  beside Hugging Face PyTorch (eager, and torch.compile with --hf_compile)
  decode          plain beam search (`--num_beams`), with --compare_hf beside HF `generate`
  first_step      beam search with step 0 run once per query against once per beam
                  (`decode_bench.first_step_comparison`): --preset, --num_beams (the first),
                  --num_beam_groups, --diversity_penalty, --num_return_sequences, one-token item
                  IDs under the item constraint (--num_items, 0 = 2000), --max_new_tokens
  memory          XLA's memory analysis of the step compiled for abstract shapes (no timing)
  diverse_decode  diverse beam search with the item constraint on a small T5, KV cache and
                  prefix recompute (`gr_jax.bench.diverse_decode`), with --compare_hf beside HF
  data            prepare and input-pipeline throughput (`gr_jax.bench.data_bench`; needs
                  --config for the data defaults)
  scale           a catalogue of --num_items items (`gr_jax.bench.scale_bench`): semantic IDs and
                  the prefix trie from synthetic embeddings, diverse beam search over the trie,
                  train-step memory atomic against semantic (--scale_parts)
  seed_batch      --num_seeds seeds of one model trained as one vmapped jitted step over stacked
                  states against one jitted step per seed in turn (`gr_jax.bench.seed_batch`):
                  the train flags (--config, --preset, shapes, --dtype, the first --dropout_prng;
                  --steps_per_repeat rounds of every seed per window); e.g. the quickstart's model:
                  --config=configs/quickstart.py --preset=tiny --batch_size=64 --encoder_len=16

Prints one JSON line per measurement (and appends them to --out). The sides of a mode are timed
interleaved, repeat by repeat, in this one process (`gr_jax.bench.protocol`), and every pair
(gr-jax vs HF; with several --impl/--dropout_prng settings and no HF, each setting vs the first)
gets a "compare" line: the median of the per-repeat examples/s ratios and their spread.
"""

from __future__ import annotations

import functools
import json
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_MODES = flags.DEFINE_list(
  "modes",
  ["train"],
  "what to measure: train, decode, first_step, memory, diverse_decode, data, scale, seed_batch",
)
_PRESET = flags.DEFINE_string("preset", "small", "T5 preset (gr_jax.model PRESETS)")
_BATCH = flags.DEFINE_integer("batch_size", 32, "examples (train) or queries (decode) per batch")
_ENC = flags.DEFINE_integer("encoder_len", 64, "encoder tokens")
_DEC = flags.DEFINE_integer("decoder_len", 8, "decoder tokens (train)")
_ITEMS = flags.DEFINE_integer("num_items", 0, "atomic item tokens appended to the vocabulary")
_VOCAB = flags.DEFINE_integer(
  "vocab_size",
  0,
  "text vocabulary (0 = the preset's, 32128 for T5); e.g. 352 for the quickstart's SentencePiece",
)
_DTYPE = flags.DEFINE_string(
  "dtype", "", "compute dtype; empty = bfloat16 on GPU/TPU, float32 on CPU"
)
_IMPL = flags.DEFINE_list("impl", ["trainer"], "train step: trainer (step.py as is), fast, full")
_REMAT = flags.DEFINE_boolean("remat", False, "rematerialise layers")
_PRNG = flags.DEFINE_list(
  "dropout_prng",
  ["auto"],
  "train: dropout PRNGs to measure (auto, threefry2x32, rbg; see train.dropout_prng)",
)
_CHUNK = flags.DEFINE_integer("chunk_size", 16384, "vocabulary chunk of the fast step's loss")
_BEAMS = flags.DEFINE_list("num_beams", ["30"], "decode: beam counts to measure")
_GROUPS = flags.DEFINE_integer("num_beam_groups", 30, "diverse_decode, first_step: beam groups")
_DIVERSITY = flags.DEFINE_float(
  "diversity_penalty", 0.25, "diverse_decode, first_step: diversity penalty"
)
_RETURN = flags.DEFINE_integer(
  "num_return_sequences", 30, "diverse_decode, first_step: sequences returned per query"
)
_DIVERSE_D = flags.DEFINE_integer("diverse_d_model", 64, "diverse_decode: model width")
_DIVERSE_LAYERS = flags.DEFINE_integer(
  "diverse_num_layers", 2, "diverse_decode: encoder and decoder layers"
)
_DIVERSE_PRESET = flags.DEFINE_string(
  "diverse_preset",
  "",
  "diverse_decode: take width, depth, heads and text vocabulary from this T5 preset (e.g. small) "
  "instead of --diverse_d_model / --diverse_num_layers",
)
_NEW = flags.DEFINE_integer("max_new_tokens", 2, "decode: generated tokens")
_WARMUP = flags.DEFINE_integer("warmup", 2, "untimed windows after compilation")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed windows (the median is reported)")
_STEPS = flags.DEFINE_integer("steps_per_repeat", 2, "train steps per timed window")
_INTERLEAVE = flags.DEFINE_boolean(
  "interleave",
  True,
  "time the sides of a mode repeat by repeat in turn (A B A B ...); "
  "--nointerleave measures one side at a time (only one alive: less memory), unpaired ratios",
)
_HF = flags.DEFINE_boolean("compare_hf", False, "also run Hugging Face PyTorch on the same shapes")
_HF_COMPILE = flags.DEFINE_boolean("hf_compile", False, "also time HF with torch.compile")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "device peak TFLOP/s for MFU (0 = look up)")
_GPU_FLAGS = flags.DEFINE_boolean("gpu_xla_flags", True, "append the recommended GPU XLA_FLAGS")
_OUT = flags.DEFINE_string("out", "", "append the JSON lines to this file too")
_PROFILE = flags.DEFINE_string(
  "profile_dir",
  "",
  "train: JAX profiler trace of one extra window per measurement, under "
  "<dir>/<impl>_<dropout prng>",
)
_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "optional run config file (configs/*.py): train, memory and seed_batch start from it "
  "instead of the built-in defaults; data takes its data section",
)
_DATA_ML = flags.DEFINE_string(
  "data_ml_dir", "", "data: ml-latest-small directory (empty = skip that part)"
)
_DATA_USERS = flags.DEFINE_integer(
  "data_users", 125000, "data: simulated sessions (x 8 items = interactions)"
)
_DATA_ITEMS = flags.DEFINE_integer("data_items", 5000, "data: simulated catalogue size")
_DATA_BATCHES = flags.DEFINE_integer("data_batches", 2000, "data: timed pipeline batches")
_SCALE_PARTS = flags.DEFINE_list(
  "scale_parts",
  ["ids", "decode", "memory"],
  "scale: ids (RQ-KMeans + trie; always runs), decode (beam search over the trie), memory "
  "(train step compiled for abstract shapes, atomic vs semantic)",
)
_SCALE_DIM = flags.DEFINE_integer("scale_dim", 128, "scale: synthetic embedding width")
_SCALE_MIX = flags.DEFINE_integer(
  "scale_mixture",
  0,
  "scale: Gaussian mixture components of the synthetic embeddings (0 = one per 16 items: with "
  "a fixed 1,024, a million items are ~1,000 near-duplicates per component, which no ID scheme "
  "can tell apart)",
)
# Defaults = configs/base.py's data.semantic (levels, codebook_size, kmeans_iters,
# max_points_per_code).
_SCALE_LEVELS = flags.DEFINE_integer("scale_levels", 3, "scale: RQ-KMeans levels")
_SCALE_K = flags.DEFINE_integer("scale_codebook_size", 256, "scale: codes per level")
_SCALE_ITERS = flags.DEFINE_integer("scale_kmeans_iters", 50, "scale: Lloyd iterations per level")
_SCALE_FIT = flags.DEFINE_integer(
  "scale_max_points_per_code", 256, "scale: k-means fit rows per code (0 = every item)"
)
_SCALE_TEXT = flags.DEFINE_integer(
  "scale_text_vocab", 512, "scale: text vocabulary of the decoding model (item tokens follow)"
)
_SCALE_TRAIN_BATCH = flags.DEFINE_integer(
  "scale_train_batch_size", 128, "scale: train batch of the memory part (configs/base.py's)"
)
_SCALE_SEED = flags.DEFINE_integer("scale_seed", 0, "scale: embeddings, k-means and model seed")
_SEEDS = flags.DEFINE_integer(
  "num_seeds", 10, "seed_batch: seeds (init seeds 0..N-1) trained side by side"
)

MODES = (
  "train",
  "decode",
  "first_step",
  "memory",
  "diverse_decode",
  "data",
  "scale",
  "seed_batch",
)


def _emit(rec: dict, out: str) -> None:
  """Prints one record as a JSON line (and appends it to `out`), machine fields always present."""
  from gr_jax.bench import protocol  # pylint: disable=g-import-not-at-top

  for k, v in protocol.machine_info().items():
    rec.setdefault(k, v)
  line = json.dumps(rec, sort_keys=False)
  print(line, flush=True)
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:
      f.write(line + "\n")


def _train(model_config, dtype: str, out: str) -> None:
  from gr_jax.bench import protocol  # pylint: disable=g-import-not-at-top
  from gr_jax.bench import train_bench  # pylint: disable=g-import-not-at-top
  from gr_jax.model import flops  # pylint: disable=g-import-not-at-top

  factories = []
  for impl in _IMPL.value:
    for prng in _PRNG.value:
      factories.append(
        functools.partial(
          train_bench.prepare_train,
          _CONFIG.value,
          preset=_PRESET.value,
          batch_size=_BATCH.value,
          encoder_len=_ENC.value,
          decoder_len=_DEC.value,
          num_items=_ITEMS.value,
          dtype=dtype,
          impl=impl,
          remat=_REMAT.value,
          steps_per_repeat=_STEPS.value,
          chunk_size=_CHUNK.value,
          dropout_prng=prng,
          model_overrides=_model_overrides(),
          peak_tflops_override=_PEAK.value,
          profile_dir=os.path.join(_PROFILE.value, f"{impl}_{prng}") if _PROFILE.value else "",
        )
      )
  n_ours = len(factories)
  if _HF.value:
    from gr_jax.bench import hf_reference  # pylint: disable=g-import-not-at-top

    fpe = flops.train_flops_per_example(model_config, _ENC.value, _DEC.value)
    for compile_model in [False, True] if _HF_COMPILE.value else [False]:
      factories.append(
        functools.partial(
          hf_reference.prepare_train,
          model_config,
          batch_size=_BATCH.value,
          encoder_len=_ENC.value,
          decoder_len=_DEC.value,
          num_items=_ITEMS.value,
          steps_per_repeat=_STEPS.value,
          compile_model=compile_model,
          dtype=dtype,
          flops_per_example=fpe,
          peak_tflops_override=_PEAK.value,
          preset=_PRESET.value,
        )
      )
  recs = protocol.measure(
    factories, warmup=_WARMUP.value, repeats=_REPEATS.value, interleave=_INTERLEAVE.value
  )
  for rec in recs:
    _emit(rec, out)
  ours, hfs = recs[:n_ours], recs[n_ours:]
  for base in hfs or ours[:1]:  # vs HF; without HF, the other settings vs the first
    for rec in ours:
      if rec is not base:
        _emit(protocol.compare(rec, base), out)


def _decode(model_config, dtype: str, out: str) -> None:
  from gr_jax.bench import decode_bench  # pylint: disable=g-import-not-at-top
  from gr_jax.bench import protocol  # pylint: disable=g-import-not-at-top

  for beams in (int(b) for b in _BEAMS.value):
    factories = [
      functools.partial(
        decode_bench.prepare_decode,
        preset=_PRESET.value,
        batch_size=_BATCH.value,
        encoder_len=_ENC.value,
        num_beams=beams,
        max_new_tokens=_NEW.value,
        num_items=_ITEMS.value,
        dtype=dtype,
        peak_tflops_override=_PEAK.value,
      )
    ]
    if _HF.value:
      from gr_jax.bench import hf_reference  # pylint: disable=g-import-not-at-top

      factories.append(
        functools.partial(
          hf_reference.prepare_decode,
          model_config,
          batch_size=_BATCH.value,
          encoder_len=_ENC.value,
          num_beams=beams,
          max_new_tokens=_NEW.value,
          dtype=dtype,
          peak_tflops_override=_PEAK.value,
          preset=_PRESET.value,
        )
      )
    recs = protocol.measure(
      factories, warmup=_WARMUP.value, repeats=_REPEATS.value, interleave=_INTERLEAVE.value
    )
    for rec in recs:
      _emit(rec, out)
    if len(recs) == 2:
      _emit(protocol.compare(recs[0], recs[1]), out)


def _first_step(dtype: str, out: str) -> None:
  from gr_jax.bench import decode_bench  # pylint: disable=g-import-not-at-top

  beams = int(_BEAMS.value[0])
  for rec in decode_bench.first_step_comparison(
    preset=_PRESET.value,
    batch_size=_BATCH.value,
    encoder_len=_ENC.value,
    num_beams=beams,
    num_beam_groups=_GROUPS.value,
    diversity_penalty=_DIVERSITY.value,
    num_return_sequences=_RETURN.value or beams,
    max_new_tokens=_NEW.value,
    num_items=_ITEMS.value or 2000,
    dtype=dtype,
    warmup=_WARMUP.value,
    repeats=_REPEATS.value,
    interleave=_INTERLEAVE.value,
    model_overrides=_model_overrides(),
    peak_tflops_override=_PEAK.value,
  ):
    _emit(rec, out)


def _memory(dtype: str, out: str) -> None:
  from gr_jax.bench import train_bench  # pylint: disable=g-import-not-at-top

  for impl in _IMPL.value:
    mem = train_bench.compiled_train_memory(
      _CONFIG.value,
      preset=_PRESET.value,
      batch_size=_BATCH.value,
      encoder_len=_ENC.value,
      decoder_len=_DEC.value,
      num_items=_ITEMS.value,
      dtype=dtype,
      impl=impl,
      remat=_REMAT.value,
      chunk_size=_CHUNK.value,
    )
    mem["kind"] = "memory"
    _emit(mem, out)


def _diverse_decode(out: str) -> None:
  from gr_jax.bench import diverse_decode  # pylint: disable=g-import-not-at-top

  beams = int(_BEAMS.value[0])
  shape = dict(
    d_model=_DIVERSE_D.value, d_ff=2 * _DIVERSE_D.value, num_layers=_DIVERSE_LAYERS.value
  )
  if _DIVERSE_PRESET.value:
    from gr_jax.model import T5Config  # pylint: disable=g-import-not-at-top

    p = T5Config.from_preset(_DIVERSE_PRESET.value)
    shape = dict(
      d_model=p.d_model,
      d_ff=p.d_ff,
      num_layers=p.num_encoder_layers,
      num_heads=p.num_heads,
      text_vocab=p.vocab_size,
    )
  for rec in diverse_decode.run_decode_benchmark(
    batch_size=_BATCH.value,
    encoder_len=_ENC.value,
    num_items=_ITEMS.value or 2000,
    **shape,
    num_beams=beams,
    num_beam_groups=_GROUPS.value,
    diversity_penalty=_DIVERSITY.value,
    num_return_sequences=_RETURN.value or beams,
    max_new_tokens=_NEW.value,
    warmup=_WARMUP.value,
    repeats=_REPEATS.value,
    compare_hf=_HF.value,
  ):
    _emit(rec, out)


def _data(out: str) -> None:
  from gr_jax.bench import data_bench  # pylint: disable=g-import-not-at-top

  if _CONFIG.value is None:
    raise app.UsageError(
      "--modes=data needs --config (a config file with the data defaults, e.g. configs/base.py)"
    )
  _emit(
    data_bench.run_data_benchmark(
      _CONFIG.value,
      ml_dir=_DATA_ML.value,
      users=_DATA_USERS.value,
      items=_DATA_ITEMS.value,
      batches=_DATA_BATCHES.value,
    ),
    out,
  )


def _scale(dtype: str, out: str) -> None:
  from gr_jax.bench import scale_bench  # pylint: disable=g-import-not-at-top

  num_items = _ITEMS.value or 1_000_000
  scale_bench.run_scale_benchmark(
    num_items=num_items,
    parts=_SCALE_PARTS.value,
    dim=_SCALE_DIM.value,
    clusters=_SCALE_MIX.value or max(1, num_items // 16),
    levels=_SCALE_LEVELS.value,
    codebook_size=_SCALE_K.value,
    kmeans_iters=_SCALE_ITERS.value,
    max_points_per_code=_SCALE_FIT.value,
    text_vocab=_SCALE_TEXT.value,
    preset=_PRESET.value,
    batch_size=_BATCH.value,
    encoder_len=_ENC.value,
    num_beams=int(_BEAMS.value[0]),
    num_beam_groups=_GROUPS.value,
    diversity_penalty=_DIVERSITY.value,
    num_return_sequences=_RETURN.value or int(_BEAMS.value[0]),
    warmup=_WARMUP.value,
    repeats=_REPEATS.value,
    train_batch_size=_SCALE_TRAIN_BATCH.value,
    train_encoder_len=_ENC.value,
    dtype=dtype,
    seed=_SCALE_SEED.value,
    emit=lambda rec: _emit(rec, out),
  )


def _seed_batch(dtype: str, out: str) -> None:
  from gr_jax.bench import seed_batch  # pylint: disable=g-import-not-at-top

  for rec in seed_batch.seed_batch_comparison(
    _CONFIG.value,
    preset=_PRESET.value,
    batch_size=_BATCH.value,
    encoder_len=_ENC.value,
    decoder_len=_DEC.value,
    num_items=_ITEMS.value,
    num_seeds=_SEEDS.value,
    dtype=dtype,
    warmup=_WARMUP.value,
    repeats=_REPEATS.value,
    interleave=_INTERLEAVE.value,
    steps_per_repeat=_STEPS.value,
    dropout_prng=_PRNG.value[0],
    model_overrides=_model_overrides(),
    peak_tflops_override=_PEAK.value,
  ):
    _emit(rec, out)


def _model_overrides() -> dict:
  return {"vocab_size": _VOCAB.value} if _VOCAB.value else {}


def _model_config(dtype: str):
  """The T5Config the gr-jax train step builds (preset, --config's model section, --vocab_size):
  the Hugging Face side gets the same one, so both sides run the same architecture."""
  from gr_jax.bench import train_bench  # pylint: disable=g-import-not-at-top
  from gr_jax.model import build as build_lib

  config = train_bench.bench_config(
    _CONFIG.value,
    preset=_PRESET.value,
    batch_size=_BATCH.value,
    num_items=_ITEMS.value,
    dtype=dtype,
    model_overrides=_model_overrides(),
  )
  return build_lib.model_config_from(config)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  modes = set(_MODES.value)
  unknown = modes - set(MODES)
  if unknown:
    raise app.UsageError(f"--modes: expected some of {', '.join(MODES)}; got {sorted(unknown)}")
  if _GPU_FLAGS.value:
    from gr_jax.bench import train_bench  # pylint: disable=g-import-not-at-top

    train_bench.apply_gpu_xla_flags()  # before the backend starts; ignored by the CPU backend
  import jax  # pylint: disable=g-import-not-at-top

  backend = jax.default_backend()
  dtype = _DTYPE.value or ("float32" if backend == "cpu" else "bfloat16")
  logging.info("devices: %s; dtype %s", jax.devices(), dtype)
  out = _OUT.value

  model_config = _model_config(dtype)
  if "train" in modes:
    _train(model_config, dtype, out)
  if "decode" in modes:
    _decode(model_config, dtype, out)
  if "first_step" in modes:
    _first_step(dtype, out)
  if "memory" in modes:
    _memory(dtype, out)
  if "diverse_decode" in modes:
    _diverse_decode(out)
  if "data" in modes:
    _data(out)
  if "scale" in modes:
    _scale(dtype, out)
  if "seed_batch" in modes:
    _seed_batch(dtype, out)
