"""The shared-machine timing protocol with fake windows and a fake clock (never real timing):
sides alternate repeat by repeat, ratios are paired per repeat, records carry machine fields."""

import os
import re

import pytest

from gr_jax.bench import protocol


class FakeClock:
  """A clock that only moves when a fake window runs."""

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def _fake_side(name, log, clock, durations, steps=1):
  """A side whose k-th window takes durations[k] fake seconds and logs its name."""
  calls = iter(durations)

  def window():
    log.append(name)
    clock.now += next(calls)
    return name

  def finish(times, warmup_s):
    return protocol.make_record(
      kind="train",
      impl=name,
      step_times_s=times,
      batch_size=4,
      encoder_len=6,
      decoder_len=2,
      num_items=0,
      dtype="float32",
      device_kind="cpu",
      num_devices=1,
      flops_per_example=0.0,
      peak_tflops=None,
      warmup_s=warmup_s,
      peak_memory_bytes=None,
    )

  return protocol.Side(name, window, steps, block=lambda out: out, finish=finish)


def test_sides_alternate_repeat_by_repeat_after_their_warmups():
  clock, log = FakeClock(), []
  a = _fake_side("A", log, clock, [9.0, 1.0, 2.0, 2.0, 2.0], steps=2)
  b = _fake_side("B", log, clock, [7.0, 3.0, 3.0, 3.0, 3.0])
  times, warm = protocol.interleaved_times([a, b], warmup=2, repeats=3, clock=clock)
  assert log == ["A", "A", "B", "B", "A", "B", "A", "B", "A", "B"]
  assert warm == [10.0, 10.0]  # compile window + one more, per side
  assert times == [[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]]  # A: 2 s per window of 2 steps


def test_zero_warmup_still_runs_one_untimed_window():
  clock, log = FakeClock(), []
  side = _fake_side("A", log, clock, [5.0, 1.0])
  times, warm = protocol.time_steps(
    side.window, warmup=0, repeats=1, steps_per_repeat=1, block=lambda out: out, clock=clock
  )
  assert log == ["A", "A"] and times == [1.0] and warm == 5.0
  with pytest.raises(ValueError, match="repeats"):
    protocol.time_steps(
      side.window, warmup=0, repeats=0, steps_per_repeat=1, block=lambda out: out, clock=clock
    )


def test_measure_interleaves_and_compare_reports_median_of_paired_ratios():
  clock, log = FakeClock(), []
  # Both sides slow down and speed up with the (fake) machine load; A is twice as fast as B in
  # every pair but the fourth, where it was 4x as fast.
  a_times = [1.0, 1.0, 2.0, 0.5, 1.0, 3.0]
  b_times = [2.0, 2.0, 4.0, 2.0, 2.0, 6.0]
  factories = [
    lambda: _fake_side("A", log, clock, [1.0] + a_times),
    lambda: _fake_side("B", log, clock, [1.0] + b_times),
  ]
  recs = protocol.measure(factories, warmup=1, repeats=6, clock=clock)
  assert log == ["A", "B"] + ["A", "B"] * 6
  assert all(r["interleaved"] for r in recs)
  cmp = protocol.compare(recs[0], recs[1])
  assert cmp["paired"] and cmp["pairs"] == 6
  assert cmp["impl"] == "A" and cmp["vs_impl"] == "B"
  assert cmp["ratio"] == pytest.approx(2.0)
  assert cmp["ratio_min"] == pytest.approx(2.0) and cmp["ratio_max"] == pytest.approx(4.0)
  assert cmp["ratio_q1"] <= cmp["ratio"] <= cmp["ratio_q3"]
  assert "load_avg_1m" in cmp and "cpu_model" in cmp


def test_sequential_measure_is_marked_unpaired():
  clock, log = FakeClock(), []
  factories = [
    lambda: _fake_side("A", log, clock, [1.0, 1.0, 1.0]),
    lambda: _fake_side("B", log, clock, [1.0, 2.0, 2.0]),
  ]
  recs = protocol.measure(factories, warmup=1, repeats=2, interleave=False, clock=clock)
  assert log == ["A", "A", "A", "B", "B", "B"]
  cmp = protocol.compare(recs[0], recs[1])
  assert not cmp["paired"] and cmp["ratio_min"] is None
  assert cmp["ratio"] == pytest.approx(2.0)  # ratio of the medians


def test_paired_ratios_and_spread():
  assert protocol.paired_ratios([1.0, 2.0], [2.0, 2.0]) == [2.0, 1.0]
  # Throughput ratio accounts for different batch sizes: 8/1 vs 4/1 examples per second.
  assert protocol.paired_ratios([1.0], [1.0], batch_a=8, batch_b=4) == [2.0]
  with pytest.raises(ValueError):
    protocol.paired_ratios([1.0], [1.0, 2.0])
  s = protocol.spread([5.0, 1.0, 3.0, 2.0, 4.0])
  assert s == {"median": 3.0, "min": 1.0, "max": 5.0, "q1": 2.0, "q3": 4.0, "n": 5}
  assert protocol.spread([7.0]) == {
    "median": 7.0,
    "min": 7.0,
    "max": 7.0,
    "q1": 7.0,
    "q3": 7.0,
    "n": 1,
  }


def test_machine_fields_in_every_record():
  rec = _fake_side("A", [], FakeClock(), []).finish([0.5, 0.25], 1.0)
  for f in protocol.RECORD_FIELDS:
    assert f in rec, f
  assert rec["step_times_s"] == [0.5, 0.25]
  assert rec["load_avg_1m"] == pytest.approx(os.getloadavg()[0], abs=5.0)
  assert isinstance(rec["cpu_model"], str) and rec["cpu_model"]


def test_cpu_model_reads_proc_cpuinfo():
  if not os.path.exists("/proc/cpuinfo"):
    pytest.skip("no /proc/cpuinfo")
  with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
    names = re.findall(r"^model name\s*:\s*(.+)$", f.read(), flags=re.M)
  if names:
    assert protocol.cpu_model() == names[0].strip()


def test_no_package_outside_gr_jax_bench_imports_bench_code():
  root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "gr_jax")
  pat = re.compile(
    r"^\s*(from|import)\s+gr_jax\.(bench|benchmark)\b|from gr_jax import bench\b", re.M
  )
  offenders = []
  for dirpath, _, files in os.walk(root):
    if os.path.relpath(dirpath, root).split(os.sep)[0] == "bench":
      continue
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(dirpath, name)
        with open(path, encoding="utf-8") as f:
          if pat.search(f.read()):
            offenders.append(os.path.relpath(path, root))
  assert not offenders
  assert not os.path.exists(os.path.join(root, "benchmark", "__init__.py"))
