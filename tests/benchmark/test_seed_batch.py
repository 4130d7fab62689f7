"""`--modes=seed_batch` (gr_jax.bench.seed_batch): N seeds as one vmapped step compute the same
training as N steps in turn, a masked seed stays put, and the mode's records come out."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from gr_jax.bench import cli
from gr_jax.bench import seed_batch
from gr_jax.model import build as build_lib

# Each test compiles a train step twice (one seed, N seeds): over the 3 s of "slow" on this CPU.
pytestmark = pytest.mark.slow

# The tiny preset cut to one layer each side: the step compiles in a few seconds on the CPU.
MICRO = dict(d_model=16, d_kv=4, d_ff=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=1)
SHAPES = dict(preset="tiny", batch_size=4, encoder_len=6, decoder_len=2, num_items=8)


def _build(num_seeds=3):
  # threefry: under vmap rbg draws every seed's bits from the first key (see seed_batch), and
  # "auto" would pick rbg on an accelerator.
  return seed_batch.build_seed_batch(
    num_seeds=num_seeds,
    dtype="float32",
    dropout_prng="threefry2x32",
    model_overrides=MICRO,
    **SHAPES,
  )


def _copy(tree):
  """A fresh copy with the same shardings (the compiled steps donate their state argument)."""
  return jax.tree.map(lambda x: jax.device_put(jnp.copy(x), x.sharding), tree)


@pytest.fixture(scope="module")
def built():
  """One build (compiling is most of the cost) and a copy of its step-0 states."""
  sb = _build()
  return sb, _copy(sb.states), _copy(sb.stacked), sb.stacked_keys


@pytest.fixture
def sb(built):
  """The module's build, back at step 0 with each seed's own dropout key."""
  sb, states, stacked, keys = built
  sb.states, sb.stacked, sb.stacked_keys = _copy(states), _copy(stacked), keys
  return sb


def test_each_seed_starts_where_build_model_puts_a_run_of_that_seed(sb):
  config = ml_collections.ConfigDict(sb.config.to_dict())
  config.seed = 2
  _, params = build_lib.build_model(config, sb.mesh)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(sb.states[2]["params"]), params)
  assert int(sb.states[2]["step"]) == 0


def test_vmapped_step_matches_each_seed_stepped_alone_with_dropout(sb):
  # Dropout on (configs/base.py's 0.1): each seed's masks come from its own key, so a batched
  # step that mixed the keys up would not match.
  assert sb.config.model.dropout_rate > 0
  initial = _copy(sb.stacked)
  diffs = seed_batch.check_batched_equals_sequential(sb, steps=3)
  assert len(diffs) == 3 and max(diffs) <= 1e-5
  batched = seed_batch.unstack_tree(jax.device_get(sb.stacked), 3)
  for i, alone in enumerate(jax.device_get(sb.states)):
    assert int(alone["step"]) == int(batched[i]["step"]) == 3
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6),
      alone["params"],
      batched[i]["params"],
    )
  # The seeds are distinct models (init seeds 0, 1, 2), not three copies of one.
  first = jax.tree.leaves(batched[0]["params"])
  second = jax.tree.leaves(batched[1]["params"])
  assert any(not np.allclose(a, b) for a, b in zip(first, second))
  # With the keys rotated between seeds, the same states and batches train differently.
  rotated = seed_batch.stack_trees([sb.keys[2], sb.keys[0], sb.keys[1]])
  sb.stacked, sb.stacked_keys = initial, jax.device_put(rotated, sb.stacked_keys.sharding)
  for _ in range(3):
    sb.run_batched()
  assert max(seed_batch.max_abs_param_diff(sb.states, sb.stacked)) > 1e-4


def test_masked_seed_keeps_its_state_bitwise(sb):
  masked = seed_batch.jit_batched_step(
    sb.step_fn, sb.state_shardings, sb.batch_sharding, sb.mesh, masked=True
  )
  before = seed_batch.unstack_tree(jax.device_get(sb.stacked), 3)
  active = jnp.array([True, False, True])
  got, metrics = masked(_copy(sb.stacked), sb.stacked_batch, sb.stacked_keys, active)
  sb.run_batched()  # the unmasked step, from the same states
  full = seed_batch.unstack_tree(jax.device_get(sb.stacked), 3)
  got = seed_batch.unstack_tree(jax.device_get(got), 3)
  assert np.shape(metrics["loss_sum"]) == (3,)
  # The inactive seed: params, optimizer state and step counter exactly as they came in ...
  jax.tree.map(np.testing.assert_array_equal, got[1], before[1])
  assert int(got[1]["step"]) == 0
  # ... though its unmasked step would have moved it.
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), full[1]["params"], before[1]["params"])
  assert any(jax.tree.leaves(moved))
  for i in (0, 2):  # the active seeds: the unmasked step's result
    assert int(got[i]["step"]) == int(full[i]["step"]) == 1
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got[i], full[i]
    )


def test_seed_batch_mode_emits_both_sides_and_the_compare_line(tmp_path, capsys, monkeypatch):
  assert "seed_batch" in cli.MODES
  # The binary's model overrides (--vocab_size) plus the micro shape: compiles in half the time.
  overrides = cli._model_overrides
  monkeypatch.setattr(cli, "_model_overrides", lambda: {**overrides(), **MICRO})
  out = tmp_path / "seed_batch.jsonl"
  was_parsed = flags.FLAGS.is_parsed()
  try:
    with flagsaver.flagsaver():
      flags.FLAGS.mark_as_parsed()
      with flagsaver.as_parsed(
        modes="seed_batch",
        preset="tiny",
        batch_size="2",
        encoder_len="4",
        decoder_len="2",
        num_items="8",
        num_seeds="3",
        dtype="float32",
        dropout_prng="threefry2x32",
        warmup="1",
        repeats="2",
        steps_per_repeat="1",
        gpu_xla_flags="false",
        out=str(out),
      ):
        cli.main(["gr-jax-bench"])
  finally:
    if not was_parsed:
      flags.FLAGS.unparse_flags()
  printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
  recs = [json.loads(line) for line in out.read_text().splitlines()]
  assert printed == recs and len(recs) == 3
  seq, bat, cmp = recs
  assert [(r["kind"], r["impl"]) for r in recs] == [
    ("seed_batch", "sequential"),
    ("seed_batch", "batched"),
    ("compare", "batched"),
  ]
  for rec in (seq, bat):
    assert rec["num_seeds"] == 3 and rec["per_seed_batch_size"] == 2
    assert rec["batch_size"] == 6  # a round: one step of every seed
    assert (rec["encoder_len"], rec["decoder_len"], rec["num_items"]) == (4, 2, 8)
    assert rec["interleaved"] and rec["repeats"] == 2 and rec["compile_s"] > 0
    assert rec["dropout_prng"] == "threefry2x32" and rec["dropout_rate"] > 0
    assert rec["max_abs_param_diff"] <= 1e-5 and len(rec["max_abs_param_diff_per_seed"]) == 3
  # Both sides ran the same rounds from the same states: the same losses.
  np.testing.assert_allclose(bat["loss_per_seed"], seq["loss_per_seed"], rtol=1e-5)
  assert cmp["what"] == "seed_batch" and cmp["vs_impl"] == "sequential"
  assert cmp["paired"] and cmp["pairs"] == 2 and cmp["num_seeds"] == 3
  assert cmp["ratio_min"] <= cmp["ratio"] <= cmp["ratio_max"]
  assert cmp["compile_s"] == bat["compile_s"] and cmp["vs_compile_s"] == seq["compile_s"]
  assert cmp["max_abs_param_diff"] == bat["max_abs_param_diff"]
