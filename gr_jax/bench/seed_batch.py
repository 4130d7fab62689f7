"""Seed-batched training: N seeds of one model as one vmapped step against N steps in turn.

Question (issue "Ten seeds in the time of three"): is training N seeds of one small T5 as ONE
jitted step over parameters and optimizer states stacked on a leading seed axis (`jax.vmap`)
faster than N separate jitted steps one after the other? On a CPU a tiny model already keeps the
cores busy (compute-bound: no gain expected); on a GPU one tiny model leaves most of the chip idle.

  python -m gr_jax.bench --modes=seed_batch --config=configs/quickstart.py --preset=tiny \\
      --batch_size=64 --encoder_len=16 --decoder_len=2 --num_items=80 --vocab_size=290 \\
      --num_seeds=10 --dtype=float32

Both sides run the trainer's pure step (`gr_jax.training.step.make_train_step`, from the same run
config as the train mode, with the trainer's `use_dropout`): "sequential" calls its ordinary
jitted step (`step.jit_train_step`, state donated) once per seed; "batched" calls
`jax.jit(jax.vmap(step))` once over the states, batches and dropout keys of every seed stacked on
a leading axis (the trainer's shardings with an unsharded seed axis in front, state donated). Seed
i starts from `config.seed = i`, trains on its own synthetic batch (`random_batch(seed=i)`) and
draws its dropout masks from `step.dropout_key(i)`. A timed step of either side is one *round*
(one step of every seed), so both sides count N x batch_size examples per step and their
examples/s compare directly; the records' `batch_size` is that round, `per_seed_batch_size` the
batch of one seed.

Before timing, `check_steps` rounds run both ways from the same initial states, batches and keys,
and the max abs parameter difference per seed goes into the records (`max_abs_param_diff`): the
two sides compute the same training, up to float reassociation in the batched matmuls. Except
with dropout on and rbg bits (`train.dropout_prng`, the accelerator default): JAX's batching rule
for `rng_bit_generator` draws every seed's bits from the first seed's key (jax PR 20094), so the
batched side's masks differ from the sequential side's and the difference is not float noise;
threefry2x32 matches.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gr_jax.bench import hf_reference
from gr_jax.bench import protocol
from gr_jax.bench import train_bench
from gr_jax.model import flops as flops_lib
from gr_jax.model import partitioning
from gr_jax.model import build as build_lib
from gr_jax.training import state as state_lib
from gr_jax.training import step as step_lib

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ stacking


def stack_trees(trees: Sequence[Any]) -> Any:
  """N pytrees of the same structure -> one pytree of [N, ...] leaves (typed PRNG keys too)."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack_tree(tree: Any, num: int) -> list[Any]:
  """The inverse of `stack_trees`: the i-th slice of every leaf, for i < num."""
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(num)]


def _with_seed_axis(sharding: NamedSharding) -> NamedSharding:
  # The seed axis stays unsharded: every device holds all seeds' slices of what it held of one.
  return NamedSharding(sharding.mesh, P(None, *sharding.spec))


# ------------------------------------------------------------------------------ batched steps


def batched_step(step_fn: Callable, *, masked: bool = False) -> Callable:
  """The pure train step over N seeds stacked on a leading axis: `(state, batch, rng) -> (state,
  metrics)` with every leaf (and the dropout keys) [N, ...]; metrics come back [N, ...] too.

  masked: the function takes a fourth argument, `active` bool [N], and a seed whose entry is
  False keeps its state (params, optimizer state, step counter) exactly as it came in; its
  metrics are still computed. Lets seeds of different lengths share one program (a finished
  seed idles instead of changing the program's shapes).
  """
  vmapped = jax.vmap(step_fn, in_axes=(0, 0, 0))
  if not masked:
    return vmapped

  def step(state, batch, rng, active):
    new_state, metrics = vmapped(state, batch, rng)

    def keep(new, old):
      mask = jnp.reshape(active, active.shape + (1,) * (new.ndim - 1))
      return jnp.where(mask, new, old)

    return jax.tree.map(keep, new_state, state), metrics

  return step


def jit_batched_step(
  step_fn: Callable, state_shardings, batch_sharding, mesh, *, masked: bool = False
) -> Callable:
  """`step.jit_train_step` for `batched_step(step_fn)`: the trainer's shardings with a leading
  seed axis, metrics replicated, the stacked state donated (updated in place)."""
  repl = NamedSharding(mesh, P())
  state_sh = jax.tree.map(_with_seed_axis, state_shardings)
  batch_sh = {k: _with_seed_axis(batch_sharding) for k in step_lib.BATCH_KEYS}
  in_sh = (state_sh, batch_sh, repl) + ((repl,) if masked else ())
  return jax.jit(
    batched_step(step_fn, masked=masked),
    in_shardings=in_sh,
    out_shardings=(state_sh, repl),
    donate_argnums=(0,),
  )


# ------------------------------------------------------------------------------ N seeds


def state_init(parts: build_lib.ModelParts, tx, shardings) -> Callable:
  """Jitted `seed -> step-0 train state`: the state `build_lib.build_model` (random init from
  `config.seed`) and `state.create_train_state` give a run of that seed, laid out by `shardings`.

  The seed is an argument here, so one program serves every seed; build_model's init bakes the
  seed in as a constant and would compile again per seed (seconds each on a CPU, even for the
  tiny preset). Call it under `partitioning.axis_rules_context()`, as build_model does.
  """
  model_config = parts.model_config

  def init(seed):
    # build_model's own init (model/build.py keeps it private), the key drawn from a traced seed.
    model = build_lib._new_model(  # pylint: disable=protected-access
      model_config, jax.random.key(seed)
    )
    params = build_lib._split(model)[1]  # pylint: disable=protected-access
    return state_lib.init_train_state(params, tx)

  return jax.jit(init, out_shardings=shardings)


@dataclasses.dataclass
class SeedBatch:
  """N seeds of one model, built once, with both ways to step them.

  The sequential side owns `states` (one state per seed), the batched side `stacked` (the same
  initial states stacked); each `run_*` call advances its own side by one round (one step of
  every seed), donating the old buffers.
  """

  num_seeds: int
  config: ml_collections.ConfigDict
  parts: build_lib.ModelParts
  mesh: Any
  step_fn: Callable  # the trainer's pure (state, batch, rng) -> (state, metrics)
  state_shardings: Any
  batch_sharding: Any
  sequential: Callable  # compiled `jit_train_step(step_fn)`
  batched: Callable  # compiled `jit_batched_step(step_fn)`
  states: list
  stacked: Any
  batches: list
  stacked_batch: dict
  keys: list
  stacked_keys: Any
  compile_s: dict[str, float]
  dropout_prng: str

  def run_sequential(self) -> list[dict]:
    metrics = []
    for i in range(self.num_seeds):
      self.states[i], m = self.sequential(self.states[i], self.batches[i], self.keys[i])
      metrics.append(m)
    return metrics

  def run_batched(self) -> dict:
    self.stacked, metrics = self.batched(self.stacked, self.stacked_batch, self.stacked_keys)
    return metrics


def build_seed_batch(
  config: ml_collections.ConfigDict | None = None,
  *,
  preset: str = "tiny",
  batch_size: int = 64,
  encoder_len: int = 16,
  decoder_len: int = 2,
  num_items: int = 0,
  num_seeds: int = 10,
  dtype: str = "float32",
  dropout_prng: str = "auto",
  model_overrides: dict | None = None,
) -> SeedBatch:
  """Builds N train states (init seeds 0..N-1), N synthetic batches and N dropout keys the way
  the train mode does (`train_bench.bench_config`, state.py, step.py), and compiles both sides."""
  if num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1, got {num_seeds}")
  config = train_bench.bench_config(
    config,
    preset=preset,
    batch_size=batch_size,
    num_items=num_items,
    dtype=dtype,
    model_overrides=model_overrides,
  )
  mesh = partitioning.make_mesh(config.mesh.data, config.mesh.model)
  parts, abstract_params = build_lib.build_model(config, mesh, abstract=True)
  tx, schedule = state_lib.make_optimizer(config, total_steps=1000)
  shardings = state_lib.state_shardings(parts, tx, mesh, abstract_params)
  init = state_init(parts, tx, shardings)
  with partitioning.axis_rules_context():  # where build_model initialises (logical axis names)
    states = [init(seed) for seed in range(num_seeds)]
  use_dropout = float(config.model.dropout_rate) > 0
  if use_dropout and step_lib.resolve_dropout_prng(dropout_prng) == "rbg":
    log.warning(
      "seed_batch: dropout with rbg bits; vmap draws every seed's masks from seed 0's key, so the "
      "batched side trains differently (max_abs_param_diff); --dropout_prng=threefry2x32 matches"
    )
  # As `step.run_train_step` builds the trainer's step (no dropout RNG when the rate is 0).
  step_fn = step_lib.make_train_step(
    parts,
    tx,
    schedule,
    grad_accum_steps=int(config.train.grad_accum_steps),
    use_dropout=use_dropout,
  )
  batch_sh = partitioning.batch_sharding(mesh)
  repl = partitioning.replicated(mesh)
  host = [
    hf_reference.random_batch(
      parts.model_config, batch_size, encoder_len, decoder_len, seed, num_items
    )
    for seed in range(num_seeds)
  ]
  batches = [{k: jax.device_put(h[k], batch_sh) for k in step_lib.BATCH_KEYS} for h in host]
  stacked_batch = {
    k: jax.device_put(np.stack([h[k] for h in host]), _with_seed_axis(batch_sh))
    for k in step_lib.BATCH_KEYS
  }
  keys = [
    jax.device_put(step_lib.dropout_key(seed, dropout_prng), repl) for seed in range(num_seeds)
  ]
  stacked_keys = jax.device_put(stack_trees(keys), repl)
  # A copy: the sequential side donates (and so invalidates) the per-seed buffers.
  stacked = jax.device_put(stack_trees(states), jax.tree.map(_with_seed_axis, shardings))

  compile_s = {}
  t0 = time.perf_counter()
  sequential = (
    step_lib.jit_train_step(step_fn, shardings, batch_sh, mesh)
    .lower(states[0], batches[0], keys[0])
    .compile()
  )
  compile_s["sequential"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  batched = (
    jit_batched_step(step_fn, shardings, batch_sh, mesh)
    .lower(stacked, stacked_batch, stacked_keys)
    .compile()
  )
  compile_s["batched"] = time.perf_counter() - t0
  return SeedBatch(
    num_seeds=num_seeds,
    config=config,
    parts=parts,
    mesh=mesh,
    step_fn=step_fn,
    state_shardings=shardings,
    batch_sharding=batch_sh,
    sequential=sequential,
    batched=batched,
    states=states,
    stacked=stacked,
    batches=batches,
    stacked_batch=stacked_batch,
    keys=keys,
    stacked_keys=stacked_keys,
    compile_s=compile_s,
    dropout_prng=step_lib.resolve_dropout_prng(dropout_prng),
  )


def max_abs_param_diff(states: Sequence[Any], stacked: Any) -> list[float]:
  """Per seed: the largest |difference| between seed i's params in `states[i]` and in slice i of
  `stacked`."""
  per_seed = jax.device_get([s["params"] for s in states])
  batched = jax.device_get(stacked["params"])
  out = []
  for i, params in enumerate(per_seed):
    diffs = jax.tree.map(
      lambda a, b, i=i: float(np.max(np.abs(np.asarray(a) - np.asarray(b)[i]), initial=0.0)),
      params,
      batched,
    )
    out.append(max(jax.tree.leaves(diffs), default=0.0))
  return out


def check_batched_equals_sequential(sb: SeedBatch, steps: int) -> list[float]:
  """Runs `steps` rounds on both sides of `sb` (which must hold the same states, as built) and
  returns the max abs parameter difference per seed afterwards (0 = bitwise equal)."""
  for _ in range(steps):
    sb.run_sequential()
    sb.run_batched()
  seq_steps = [int(jax.device_get(s["step"])) for s in sb.states]
  bat_steps = [int(x) for x in jax.device_get(sb.stacked["step"])]
  if seq_steps != bat_steps:
    raise AssertionError(f"step counters differ: sequential {seq_steps}, batched {bat_steps}")
  return max_abs_param_diff(sb.states, sb.stacked)


def _losses(metrics) -> list[float]:
  """Per-seed mean token loss of a round's metrics (a list of dicts, or one dict of [N] arrays)."""
  if isinstance(metrics, dict):
    m = jax.device_get(metrics)
    return [float(x) for x in m["loss_sum"] / np.maximum(m["weight_sum"], 1.0)]
  m = jax.device_get(metrics)
  return [float(x["loss_sum"]) / max(float(x["weight_sum"]), 1.0) for x in m]


def seed_batch_comparison(
  config: ml_collections.ConfigDict | None = None,
  *,
  preset: str = "tiny",
  batch_size: int = 64,
  encoder_len: int = 16,
  decoder_len: int = 2,
  num_items: int = 0,
  num_seeds: int = 10,
  dtype: str = "float32",
  warmup: int = 2,
  repeats: int = 5,
  interleave: bool = True,
  steps_per_repeat: int = 1,
  check_steps: int = 2,
  dropout_prng: str = "auto",
  model_overrides: dict | None = None,
  peak_tflops_override: float = 0.0,
) -> list[dict[str, Any]]:
  """Sequential against batched (see the module docstring), timed by `protocol.measure`.

  steps_per_repeat: rounds per timed window (times are per round).
  check_steps: rounds run both ways before timing, for `max_abs_param_diff`.
  interleave: False times one side after the other (both stay built: they share nothing).
  Returns [sequential record, batched record, compare record (ratio = examples/s batched /
  sequential)].
  """
  sb = build_seed_batch(
    config,
    preset=preset,
    batch_size=batch_size,
    encoder_len=encoder_len,
    decoder_len=decoder_len,
    num_items=num_items,
    num_seeds=num_seeds,
    dtype=dtype,
    dropout_prng=dropout_prng,
    model_overrides=model_overrides,
  )
  diffs = check_batched_equals_sequential(sb, check_steps)
  model_config = sb.parts.model_config
  check = {
    "check_steps": int(check_steps),
    "max_abs_param_diff": max(diffs),
    "max_abs_param_diff_per_seed": diffs,
  }

  def side(impl: str, run: Callable[[], Any], compiled) -> Callable[[], protocol.Side]:
    last = {}

    def window():
      for _ in range(steps_per_repeat):
        last["metrics"] = run()
      return last["metrics"]

    def finish(times: list[float], warmup_s: float) -> dict[str, Any]:
      dev = jax.devices()[0]
      extra = {
        "preset": preset,
        "num_seeds": num_seeds,
        "per_seed_batch_size": batch_size,
        "steps_per_repeat": steps_per_repeat,
        "compile_s": sb.compile_s[impl],
        "dropout_prng": sb.dropout_prng,
        "dropout_rate": float(sb.config.model.dropout_rate),
        # Both sides have run the same rounds from the same states: equal up to float noise.
        "loss_per_seed": _losses(last["metrics"]),
        **check,
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
      }
      # One compiled program: a single seed's step (sequential) or all N (batched).
      extra.update(train_bench._memory(compiled))  # pylint: disable=protected-access
      return protocol.make_record(
        kind="seed_batch",
        impl=impl,
        step_times_s=times,
        batch_size=num_seeds * batch_size,
        encoder_len=encoder_len,
        decoder_len=decoder_len,
        num_items=num_items,
        dtype=dtype,
        device_kind=dev.device_kind,
        num_devices=jax.device_count(),
        flops_per_example=flops_lib.train_flops_per_example(model_config, encoder_len, decoder_len),
        peak_tflops=flops_lib.peak_tflops(dev.device_kind, peak_tflops_override),
        warmup_s=warmup_s,
        peak_memory_bytes=train_bench._device_peak_bytes(dev),  # pylint: disable=protected-access
        extra=extra,
      )

    return lambda: protocol.Side(impl, window, steps_per_repeat, finish=finish)

  sequential, batched = protocol.measure(
    [
      side("sequential", sb.run_sequential, sb.sequential),
      side("batched", sb.run_batched, sb.batched),
    ],
    warmup=warmup,
    repeats=repeats,
    interleave=interleave,
  )
  cmp = protocol.compare(batched, sequential)
  cmp.update(
    num_seeds=num_seeds,
    per_seed_batch_size=batch_size,
    compile_s=sb.compile_s["batched"],
    vs_compile_s=sb.compile_s["sequential"],
    **check,
  )
  return [sequential, batched, cmp]
