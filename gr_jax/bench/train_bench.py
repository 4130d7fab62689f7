"""Train-step benchmark: the trainer's own jitted step (loss full / chunked) on synthetic batches.

Every measurement becomes one flat JSON-serialisable record (`protocol.make_record`), the same
layout for the gr-jax and Hugging Face sides, so `bench/results/*.jsonl` can be compared line by
line.

Timing protocol (`gr_jax.bench.protocol`): compile + `warmup` windows are excluded; then `repeats`
timed windows of `steps_per_repeat` steps each, with one `block_until_ready` at the end of a window
only (no host sync inside the loop), interleaved with the other sides of the same comparison; the
median window gives the step time.

The run config is built here (`default_config`), not read from configs/base.py, so the benchmark
works from an installed wheel; `--config` on the binary starts from any config file instead.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from gr_jax.bench import protocol
from gr_jax.model import flops as flops_lib

# XLA flags that help this workload on NVIDIA GPUs (set before the backend starts). Latency-hiding
# scheduling overlaps collectives with compute; the while-loop double buffering helps scans (the
# chunked cross-entropy, grad accumulation). Kept conservative: every flag exists in jax 0.10-0.11.
GPU_XLA_FLAGS = (
  "--xla_gpu_enable_latency_hiding_scheduler=true",
  "--xla_gpu_enable_while_loop_double_buffering=true",
)


def apply_gpu_xla_flags(environ=os.environ) -> str:
  """Appends `GPU_XLA_FLAGS` to XLA_FLAGS (flags the user already set win); returns the result."""
  have = environ.get("XLA_FLAGS", "")
  names = {f.split("=")[0] for f in have.split()}
  extra = [f for f in GPU_XLA_FLAGS if f.split("=")[0] not in names]
  environ["XLA_FLAGS"] = " ".join([have] + extra).strip()
  return environ["XLA_FLAGS"]


# ------------------------------------------------------------------------------ configuration


def default_config() -> ml_collections.ConfigDict:
  """The part of a run config that building the model, optimizer and train step reads.

  Values are configs/base.py's defaults (the paper's AdamW recipe, dropout 0.1); a test keeps the
  two equal. Built in code rather than loaded from configs/base.py by path, which is absent from
  an installed wheel.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(
    dict(
      preset="tiny",
      init_from="",
      dtype="float32",
      param_dtype="float32",
      dropout_rate=0.1,
      overrides=ml_collections.ConfigDict(),
      attention_impl="auto",
    )
  )
  c.train = ml_collections.ConfigDict(
    dict(
      batch_size=128,
      learning_rate=0.002,
      weight_decay=0.01,
      warmup_fraction=0.1,
      schedule="constant",
      grad_clip_norm=1.0,
      grad_accum_steps=1,
      remat=False,
      loss_impl="auto",
      loss_chunk_size=16384,
      peak_tflops=0.0,
      dropout_prng="auto",
    )
  )
  c.mesh = ml_collections.ConfigDict(dict(data=-1, model=1, distributed=False))
  return c


def bench_config(
  config: ml_collections.ConfigDict | None = None,
  *,
  preset: str,
  batch_size: int,
  num_items: int,
  dtype: str,
  remat: bool = False,
  model_overrides: dict | None = None,
) -> ml_collections.ConfigDict:
  """A run config for benchmarking: `config` (default `default_config()`) with the bench shapes.

  The text vocabulary stays the preset's (32128 for T5 presets); `num_items` atomic item tokens are
  appended, exactly as `state.resolve_vocab` does for a real dataset.
  """
  config = ml_collections.ConfigDict((config or default_config()).to_dict())
  with config.unlocked():
    config.model.preset = preset
    config.model.dtype = dtype
    config.model.param_dtype = "float32"  # master weights stay float32 (bf16 compute only)
    config.model.init_from = ""
    ov = dict(config.model.get("overrides", {}) or {})
    ov.update(model_overrides or {})
    ov["num_item_tokens"] = int(num_items)
    config.model.overrides = ml_collections.ConfigDict(ov)
    config.train.batch_size = int(batch_size)
    config.train.remat = bool(remat)
  return config


# ------------------------------------------------------------------------------ step variants

# impl -> loss_impl handed to the trainer's `make_train_step` (None = the config's own choice,
# `train.loss_impl`, "auto" by default: chunked above 65,536 output tokens).
TRAIN_IMPLS = {"trainer": None, "fast": "chunked", "full": "full"}


def _make_step(parts, tx, schedule, config, impl: str, chunk_size: int):
  """The trainer's step (`gr_jax.training.step.make_train_step`) for a benchmark `impl`:
  "trainer" = as the run config says, "fast" = chunked loss with `chunk_size`, "full" = full
  `[B, T, V]` logits."""
  from gr_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top

  if impl not in TRAIN_IMPLS:
    raise ValueError(f"train impl: expected one of {sorted(TRAIN_IMPLS)}, got {impl!r}")
  return step_lib.make_train_step(
    parts,
    tx,
    schedule,
    grad_accum_steps=int(config.train.grad_accum_steps),
    loss_impl=TRAIN_IMPLS[impl],
    loss_chunk_size=chunk_size if impl == "fast" else None,
  )


def resolved_loss_impl(parts, impl: str, chunk_size: int) -> tuple[str, int]:
  """(full | chunked, chunk size) that `impl` runs with on these parts (for the records)."""
  from gr_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top

  return step_lib._loss_options(  # pylint: disable=protected-access
    parts, TRAIN_IMPLS[impl], chunk_size if impl == "fast" else None
  )


# ------------------------------------------------------------------------------ the benchmark


def _memory(compiled) -> dict[str, int | None]:
  out = {}
  try:
    ma = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    ma = None  # some backends do not implement it
  for f in (
    "argument_size_in_bytes",
    "output_size_in_bytes",
    "temp_size_in_bytes",
    "alias_size_in_bytes",
    "generated_code_size_in_bytes",
  ):
    out["compiled_" + f.replace("_size_in_bytes", "_bytes")] = (
      int(getattr(ma, f)) if ma is not None and hasattr(ma, f) else None
    )
  return out


def _xla_costs(compiled) -> tuple[float | None, float | None]:
  """(flops, bytes accessed) from one call of XLA's cost analysis; None where unavailable."""
  try:
    ca = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None, None
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else None
  ca = ca or {}
  return tuple(float(ca[k]) if k in ca else None for k in ("flops", "bytes accessed"))


def _device_peak_bytes(device) -> int | None:
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def build_train_step(
  config: ml_collections.ConfigDict,
  *,
  impl: str = "trainer",
  chunk_size: int = 16384,
  seed: int = 0,
):
  """Builds state and the jitted step exactly the way the trainer does (state.py + step.py).

  impl: see `TRAIN_IMPLS` (all three are `gr_jax.training.step.make_train_step`).
  Returns (jitted step, state, mesh, batch sharding, model parts).
  """
  from gr_jax.model import partitioning  # pylint: disable=g-import-not-at-top
  from gr_jax.model import build as build_lib  # pylint: disable=g-import-not-at-top
  from gr_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  from gr_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top

  with config.unlocked():
    config.seed = seed
  mesh = partitioning.make_mesh(config.mesh.data, config.mesh.model)
  parts, params = build_lib.build_model(config, mesh)
  _, abstract_params = build_lib.build_model(config, mesh, abstract=True)
  tx, schedule = state_lib.make_optimizer(config, total_steps=1000)
  shardings = state_lib.state_shardings(parts, tx, mesh, abstract_params)
  state = state_lib.create_train_state(params, tx, shardings)
  batch_sh = partitioning.batch_sharding(mesh)
  fn = _make_step(parts, tx, schedule, config, impl, chunk_size)
  jitted = step_lib.jit_train_step(fn, shardings, batch_sh, mesh)
  return jitted, state, mesh, batch_sh, parts


def prepare_train(
  config: ml_collections.ConfigDict | None = None,
  *,
  preset: str = "small",
  batch_size: int = 32,
  encoder_len: int = 64,
  decoder_len: int = 8,
  num_items: int = 0,
  dtype: str = "float32",
  impl: str = "trainer",
  remat: bool = False,
  steps_per_repeat: int = 2,
  chunk_size: int = 16384,
  seed: int = 0,
  model_overrides: dict | None = None,
  dropout_prng: str = "auto",
  peak_tflops_override: float = 0.0,
  profile_dir: str = "",
) -> protocol.Side:
  """Builds and compiles the jitted train step on a fixed synthetic batch: one side to time.

  dropout_prng: the trainer's `train.dropout_prng` (auto = rbg on accelerators).
  profile_dir: after timing, also record one more window (untimed) with the JAX profiler there
  (TensorBoard / xprof trace: per-kernel device times, to see where a step's time goes)."""
  from gr_jax.bench import hf_reference  # pylint: disable=g-import-not-at-top (numpy only)
  from gr_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top

  config = bench_config(
    config,
    preset=preset,
    batch_size=batch_size,
    num_items=num_items,
    dtype=dtype,
    remat=remat,
    model_overrides=model_overrides,
  )
  step, state, _, batch_sh, parts = build_train_step(
    config, impl=impl, chunk_size=chunk_size, seed=seed
  )
  model_config = parts.model_config
  loss_impl, loss_chunk = resolved_loss_impl(parts, impl, chunk_size)
  host_batch = hf_reference.random_batch(
    model_config, batch_size, encoder_len, decoder_len, seed, num_items
  )
  batch = {k: jax.device_put(host_batch[k], batch_sh) for k in step_lib.BATCH_KEYS}
  rng = step_lib.dropout_key(seed, dropout_prng)  # the trainer's own dropout key
  t0 = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - t0
  holder = {"state": state}

  def window():
    st = holder["state"]
    metrics = None
    for _ in range(steps_per_repeat):
      st, metrics = compiled(st, batch, rng)  # state donated: updated in place
    holder["state"] = st
    return metrics

  def finish(times: list[float], warmup_s: float) -> dict[str, Any]:
    if profile_dir:
      with jax.profiler.trace(profile_dir):
        jax.block_until_ready(window())
    last = jax.device_get(window())  # one more window, only to read a loss (sanity, not timed)
    loss = float(last["loss_sum"]) / max(float(last["weight_sum"]), 1.0)
    dev = jax.devices()[0]
    xla_flops, xla_bytes = _xla_costs(compiled)
    extra = {
      "preset": preset,
      "remat": bool(remat),
      "loss": loss,
      "compile_s": compile_s,
      "steps_per_repeat": steps_per_repeat,
      "loss_impl": loss_impl,
      "dropout_prng": step_lib.resolve_dropout_prng(dropout_prng),
      "profile_dir": profile_dir or None,
      "chunk_size": loss_chunk if loss_impl == "chunked" else None,
      "xla_flops_per_example": None if xla_flops is None else xla_flops / batch_size,
      # XLA's count of bytes its ops read and write per step (fusion-dependent): over the
      # chip's memory bandwidth, the step's byte floor beside its FLOP floor.
      "xla_bytes_accessed_per_step": xla_bytes,
      "jax_version": jax.__version__,
      "backend": jax.default_backend(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    extra.update(_memory(compiled))
    return protocol.make_record(
      kind="train",
      impl=f"gr_jax_{impl}",
      step_times_s=times,
      batch_size=batch_size,
      encoder_len=encoder_len,
      decoder_len=decoder_len,
      num_items=num_items,
      dtype=dtype,
      device_kind=dev.device_kind,
      num_devices=jax.device_count(),
      flops_per_example=flops_lib.train_flops_per_example(model_config, encoder_len, decoder_len),
      peak_tflops=flops_lib.peak_tflops(dev.device_kind, peak_tflops_override),
      warmup_s=warmup_s,
      peak_memory_bytes=_device_peak_bytes(dev),
      extra=extra,
    )

  return protocol.Side(f"gr_jax_{impl}_{dropout_prng}", window, steps_per_repeat, finish=finish)


def train_benchmark(
  config: ml_collections.ConfigDict | None = None, *, warmup: int = 2, repeats: int = 5, **kwargs
) -> dict[str, Any]:
  """`prepare_train(config, **kwargs)` timed alone (no other side); returns its record."""
  make = functools.partial(prepare_train, config, **kwargs)
  return protocol.measure([make], warmup=warmup, repeats=repeats)[0]


def compiled_train_memory(
  config: ml_collections.ConfigDict | None = None,
  *,
  preset: str,
  batch_size: int,
  encoder_len: int,
  decoder_len: int,
  num_items: int,
  dtype: str = "bfloat16",
  impl: str = "trainer",
  remat: bool = False,
  chunk_size: int = 16384,
) -> dict[str, Any]:
  """XLA's memory analysis of the train step compiled for abstract shapes (allocates nothing).

  On CPU this tells whether a configuration's step fits a GPU's memory before renting one: the
  argument (state + batch) and temporary sizes are shape-determined; GPU fusion decisions change
  the temporaries somewhat, so treat the total as an estimate.
  """
  from gr_jax.model import partitioning  # pylint: disable=g-import-not-at-top
  from gr_jax.model import build as build_lib  # pylint: disable=g-import-not-at-top
  from gr_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  from gr_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top

  config = bench_config(
    config, preset=preset, batch_size=batch_size, num_items=num_items, dtype=dtype, remat=remat
  )
  mesh = partitioning.make_mesh(config.mesh.data, config.mesh.model)
  parts, abstract_params = build_lib.build_model(config, mesh, abstract=True)
  tx, schedule = state_lib.make_optimizer(config, total_steps=1000)
  shardings = state_lib.state_shardings(parts, tx, mesh, abstract_params)
  abstract_state = state_lib.abstract_train_state(abstract_params, tx, shardings)
  batch_sh = partitioning.batch_sharding(mesh)
  shapes = {
    "encoder_input_ids": ((batch_size, encoder_len), jnp.int32),
    "decoder_input_ids": ((batch_size, decoder_len), jnp.int32),
    "decoder_target_ids": ((batch_size, decoder_len), jnp.int32),
    "decoder_weights": ((batch_size, decoder_len), jnp.float32),
    "task_id": ((batch_size,), jnp.int32),
  }
  batch = {k: jax.ShapeDtypeStruct(s, d, sharding=batch_sh) for k, (s, d) in shapes.items()}
  fn = _make_step(parts, tx, schedule, config, impl, chunk_size)
  loss_impl, loss_chunk = resolved_loss_impl(parts, impl, chunk_size)
  jitted = step_lib.jit_train_step(fn, shardings, batch_sh, mesh)
  compiled = jitted.lower(abstract_state, batch, jax.random.key(0)).compile()
  mem = _memory(compiled)
  # XLA's own totals for the compiled step: with a chip's peak rate and memory bandwidth they give
  # the two floors of a step (arithmetic, bytes). Fusion differs by backend: an estimate off-device.
  mem["xla_flops"], mem["xla_bytes_accessed"] = _xla_costs(compiled)
  n_params = build_lib.num_params(abstract_params)
  mem.update(
    {
      "preset": preset,
      "batch_size": batch_size,
      "encoder_len": encoder_len,
      "decoder_len": decoder_len,
      "num_items": num_items,
      "dtype": dtype,
      "impl": impl,
      "loss_impl": loss_impl,
      "chunk_size": loss_chunk if loss_impl == "chunked" else None,
      "num_params": n_params,
      "analytic": analytic_train_memory(
        parts.model_config,
        n_params,
        batch_size,
        encoder_len,
        decoder_len,
        logit_columns=loss_chunk if loss_impl == "chunked" else None,
      ),
    }
  )
  return mem


def analytic_train_memory(
  model_config,
  num_params: int,
  batch_size: int,
  encoder_len: int,
  decoder_len: int,
  logit_columns: int | None = None,
) -> dict[str, float]:
  """Back-of-envelope bytes of one train step (no remat), for cross-checking XLA's analysis.

  State: float32 params + AdamW m and v (12 B/param), gradients (4 B/param), a compute-dtype copy
  of the weights (2 B/param in bf16). Activations: per layer roughly 16 [B, L, D]-sized tensors
  and 4 [B, H, L, L] score tensors kept for the backward pass; the output layer's float32 logits
  and their gradient (2 x 4 B x B*T*V) dominate with large item vocabularies; with the chunked
  loss only `logit_columns` (the chunk) of them exist at a time.
  """
  c = model_config
  act_bytes = jnp.dtype(c.dtype).itemsize
  state = 16.0 * num_params + act_bytes * num_params
  enc = (
    c.num_encoder_layers
    * batch_size
    * (16 * encoder_len * c.d_model + 4 * c.num_heads * encoder_len**2)
    * act_bytes
  )
  dec = (
    c.num_decoder_layers
    * batch_size
    * (20 * decoder_len * c.d_model + 4 * c.num_heads * decoder_len * (decoder_len + encoder_len))
    * act_bytes
  )
  logits = 2 * 4.0 * batch_size * decoder_len * (logit_columns or c.total_vocab_size)
  return {
    "state_bytes": state,
    "activation_bytes": float(enc + dec),
    "logits_bytes": logits,
    "total_bytes": state + enc + dec + logits,
  }
