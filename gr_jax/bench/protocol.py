"""The timing protocol and record layout every benchmark in `gr_jax.bench` shares.

A measurement is a `Side`: something built and compiled that runs one timed *window* (a few steps)
per call. `measure` times several sides in one process. On a shared machine (other people's jobs,
thermal drift) the load changes over seconds, so measuring side A fully and then side B compares A
under one load with B under another. Instead the sides are *interleaved*: every side is warmed up
(compilation excluded), then each repeat runs one window of every side in turn (A B A B ...), so
repeat i of A and repeat i of B saw nearly the same machine. A comparison then reports the median
of the per-repeat ratios with its spread (min, max, quartiles), not a ratio of two medians taken
at different times.

Every record also carries the 1-minute load average and the CPU model, so a noisy number can be
recognised as such later.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import statistics
import time
from typing import Any, Callable, Sequence

from gr_jax.model import flops as flops_lib

RECORD_FIELDS = (
  "kind",
  "impl",
  "date",
  "host",
  "cpu_model",
  "load_avg_1m",
  "device_kind",
  "num_devices",
  "dtype",
  "batch_size",
  "encoder_len",
  "decoder_len",
  "num_items",
  "repeats",
  "step_times_s",
  "median_step_s",
  "min_step_s",
  "max_step_s",
  "examples_per_s",
  "tokens_per_s",
  "flops_per_example",
  "peak_tflops",
  "mfu",
  "warmup_s",
  "peak_memory_bytes",
  "interleaved",
)


# ------------------------------------------------------------------------------ the machine


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo on Linux; `platform.processor()` elsewhere)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
          return value.strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def load_avg_1m() -> float | None:
  """The 1-minute load average (None where the OS has none)."""
  try:
    return float(os.getloadavg()[0])
  except (OSError, AttributeError):
    return None


def machine_info() -> dict[str, Any]:
  """The fields every JSON record carries to say how busy and what kind of machine it ran on."""
  return {"host": platform.node(), "cpu_model": cpu_model(), "load_avg_1m": load_avg_1m()}


# ------------------------------------------------------------------------------ timing


@dataclasses.dataclass
class Side:
  """One prepared (built, compiled) measurement, ready to be timed.

  window: runs `steps_per_repeat` steps and returns something to block on.
  block: waits for a window's result; None = `jax.block_until_ready` (the Hugging Face side passes
    a CUDA synchronise), so both sides of a comparison are timed the same way.
  finish: `(seconds per step of each timed window, warm-up seconds) -> record`; called after all
    timing, so it may run more (untimed) windows, e.g. to read a loss or record a profile.
  """

  name: str
  window: Callable[[], Any]
  steps_per_repeat: int = 1
  block: Callable[[Any], Any] | None = None
  finish: Callable[[list[float], float], dict[str, Any]] | None = None


def _wait(side: Side, out: Any) -> None:
  if side.block is not None:
    side.block(out)
    return
  import jax  # pylint: disable=g-import-not-at-top  (fakes in tests never get here)

  jax.block_until_ready(out)


def interleaved_times(
  sides: Sequence[Side],
  *,
  warmup: int,
  repeats: int,
  clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[list[float]], list[float]]:
  """Warms every side up, then times one window of each side per repeat, in turn (A B A B ...).

  Returns (per side: seconds per step of each timed window, per side: warm-up seconds including
  the first call, which compiles). At least one warm-up window runs per side.
  """
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  for side in sides:
    if side.steps_per_repeat < 1:
      raise ValueError(f"{side.name}: steps_per_repeat must be >= 1, got {side.steps_per_repeat}")
  warmup_s = []
  for side in sides:
    t0 = clock()
    for _ in range(max(warmup, 1)):
      _wait(side, side.window())
    warmup_s.append(clock() - t0)
  times: list[list[float]] = [[] for _ in sides]
  for _ in range(repeats):
    for i, side in enumerate(sides):
      t0 = clock()
      _wait(side, side.window())
      times[i].append((clock() - t0) / side.steps_per_repeat)
  return times, warmup_s


def time_steps(
  run_window: Callable[[], Any],
  *,
  warmup: int,
  repeats: int,
  steps_per_repeat: int,
  block: Callable[[Any], Any] | None = None,
  clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[float], float]:
  """One side alone: (seconds per step of each timed window, warm-up seconds)."""
  times, warm = interleaved_times(
    [Side("only", run_window, steps_per_repeat, block)], warmup=warmup, repeats=repeats, clock=clock
  )
  return times[0], warm[0]


def measure(
  factories: Sequence[Callable[[], Side]],
  *,
  warmup: int,
  repeats: int,
  interleave: bool = True,
  clock: Callable[[], float] = time.perf_counter,
) -> list[dict[str, Any]]:
  """Builds the sides from `factories` and returns one record per side (its `finish`).

  interleave: build all sides first, then time them repeat by repeat in turn (the default, see
  the module docstring). False builds, times and finishes one side at a time, so only one side's
  state is alive at once (for configurations that would not fit together in device memory); its
  comparisons are then marked unpaired.
  """
  if interleave and len(factories) > 1:
    sides = [make() for make in factories]
    times, warm = interleaved_times(sides, warmup=warmup, repeats=repeats, clock=clock)
    recs = [side.finish(t, w) for side, t, w in zip(sides, times, warm)]
    paired = True
  else:
    recs = []
    for make in factories:
      side = make()
      (t,), (w,) = interleaved_times([side], warmup=warmup, repeats=repeats, clock=clock)
      recs.append(side.finish(t, w))
      del side  # free its state before the next one is built
    paired = len(factories) == 1
  for rec in recs:
    rec["interleaved"] = paired and len(recs) > 1
  return recs


# ------------------------------------------------------------------------------ statistics


def paired_ratios(
  times_a: Sequence[float], times_b: Sequence[float], batch_a: float = 1.0, batch_b: float = 1.0
) -> list[float]:
  """Per-repeat throughput ratio A / B: `(batch_a / t_a[i]) / (batch_b / t_b[i])`.

  `times_*` are seconds per step of the same repeats (index i of both ran back to back).
  """
  if len(times_a) != len(times_b) or not times_a:
    raise ValueError(
      f"paired_ratios: need equal, non-empty repeats, got {len(times_a)} and {len(times_b)}"
    )
  if min(times_a) <= 0 or min(times_b) <= 0:
    raise ValueError("paired_ratios: step times must be positive")
  return [(batch_a / ta) / (batch_b / tb) for ta, tb in zip(times_a, times_b)]


def spread(values: Sequence[float]) -> dict[str, float]:
  """Median with its spread: min, max and the quartiles (inclusive method; n=1 gives the value)."""
  vals = sorted(float(v) for v in values)
  if not vals:
    raise ValueError("spread: no values")
  if len(vals) == 1:
    q1 = q3 = vals[0]
  else:
    q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive")
  return {
    "median": statistics.median(vals),
    "min": vals[0],
    "max": vals[-1],
    "q1": q1,
    "q3": q3,
    "n": len(vals),
  }


# ------------------------------------------------------------------------------ records


def make_record(
  *,
  kind: str,
  impl: str,
  step_times_s,
  batch_size: int,
  encoder_len: int,
  decoder_len: int,
  num_items: int,
  dtype: str,
  device_kind: str,
  num_devices: int,
  flops_per_example: float,
  peak_tflops: float | None,
  warmup_s: float,
  peak_memory_bytes: int | None,
  extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """One benchmark measurement as a flat dict (the JSON line). `step_times_s`: per-step seconds
  of each timed repeat; a "step" is one batch (train) or one decoded batch (decode)."""
  times = [float(t) for t in step_times_s]
  if not times or min(times) <= 0:
    raise ValueError(f"make_record: step_times_s must be positive, got {times}")
  median = statistics.median(times)
  eps = batch_size / median
  rec = {
    "kind": kind,
    "impl": impl,
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    **machine_info(),
    "device_kind": device_kind,
    "num_devices": int(num_devices),
    "dtype": dtype,
    "batch_size": int(batch_size),
    "encoder_len": int(encoder_len),
    "decoder_len": int(decoder_len),
    "num_items": int(num_items),
    "repeats": len(times),
    "step_times_s": times,
    "median_step_s": median,
    "min_step_s": min(times),
    "max_step_s": max(times),
    "examples_per_s": eps,
    "tokens_per_s": eps * (encoder_len + decoder_len),
    "flops_per_example": float(flops_per_example),
    "peak_tflops": peak_tflops,
    "mfu": flops_lib.mfu(flops_per_example, eps, peak_tflops, num_devices),
    "warmup_s": float(warmup_s),
    "peak_memory_bytes": None if peak_memory_bytes is None else int(peak_memory_bytes),
    "interleaved": False,
  }
  rec.update(extra or {})
  return rec


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
  """The "compare" record of A against B: examples/s ratio A / B.

  When both were timed interleaved, `ratio` is the median of the per-repeat ratios and
  `ratio_min`/`ratio_max`/`ratio_q1`/`ratio_q3` its spread; otherwise (`paired` false) it is the
  ratio of the two medians and no spread is given, since the repeats were not side by side.
  """
  paired = bool(
    a.get("interleaved")
    and b.get("interleaved")
    and len(a["step_times_s"]) == len(b["step_times_s"])
  )
  rec = {
    "kind": "compare",
    "what": a["kind"],
    "impl": a["impl"],
    "vs_impl": b["impl"],
    "preset": a.get("preset"),
    "batch_size": a["batch_size"],
    "encoder_len": a["encoder_len"],
    "decoder_len": a["decoder_len"],
    "num_items": a["num_items"],
    "num_beams": a.get("num_beams"),
    "device_kind": a["device_kind"],
    "dropout_prng": a.get("dropout_prng"),
    "examples_per_s": a["examples_per_s"],
    "vs_examples_per_s": b["examples_per_s"],
    "paired": paired,
    **machine_info(),
  }
  if paired:
    s = spread(
      paired_ratios(a["step_times_s"], b["step_times_s"], a["batch_size"], b["batch_size"])
    )
    rec.update(
      ratio=s["median"],
      ratio_min=s["min"],
      ratio_max=s["max"],
      ratio_q1=s["q1"],
      ratio_q3=s["q3"],
      pairs=s["n"],
    )
  else:
    rec.update(
      ratio=a["examples_per_s"] / b["examples_per_s"],
      ratio_min=None,
      ratio_max=None,
      ratio_q1=None,
      ratio_q3=None,
      pairs=0,
    )
  return rec
