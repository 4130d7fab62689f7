"""Correctness of the benchmark plumbing (never timing): MFU math, FLOP counts, records, kernels."""

import dataclasses
import importlib.util
import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from gr_jax.bench import cli
from gr_jax.bench import decode_bench
from gr_jax.bench import protocol
from gr_jax.bench import train_bench
from gr_jax.model import flops
from gr_jax.model import layers
from gr_jax.training import loss as loss_lib
from tests import numerics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_peak_lookup_and_mfu_math():
  assert flops.peak_tflops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4)
  assert flops.peak_tflops("NVIDIA H100 PCIe") == pytest.approx(756.0)
  assert flops.peak_tflops("TPU v5 lite") == pytest.approx(197.0)
  assert flops.peak_tflops("cpu") is None
  assert flops.peak_tflops("cpu", override=2.5) == 2.5
  # The issue's numbers: 44.5 GFLOP/example at 22,000 examples/s is the H100's whole peak.
  assert flops.mfu(44.5e9, 22_000, 989.4) == pytest.approx(44.5e9 * 22_000 / 989.4e12)
  assert flops.mfu(44.5e9, 22_000, 989.4) == pytest.approx(0.9895, abs=1e-3)
  assert flops.mfu(1e9, 100.0, 1.0, num_devices=4) == pytest.approx(0.025)
  assert flops.mfu(1e9, 100.0, None) is None


def test_t5_base_flops_match_the_documented_counts():
  # T5-base at encoder 64 / decoder 8: the floor is about 44.5 GFLOP per train example,
  # split as in gr_jax/model/flops.py's docstring.
  model = pytest.importorskip("gr_jax.model")
  cfg = model.T5Config.from_preset("base")
  assert cfg.feed_forward_proj == "relu" and cfg.vocab_size == 32128
  train = flops.train_flops(cfg, 64, 8)
  assert train["total"] / 1e9 == pytest.approx(44.51, abs=0.01)
  assert train["encoder"] / 1e9 == pytest.approx(33.07, abs=0.01)
  assert train["decoder"] / 1e9 == pytest.approx(11.44, abs=0.01)
  # A gated feed-forward has a third MLP matrix: one more 2*tokens*D*F per layer, 3x for training.
  gated = dataclasses.replace(cfg, feed_forward_proj="gated-gelu")
  extra = 3 * 12 * 2 * (64 + 8) * 768 * 3072
  assert flops.train_flops_per_example(gated, 64, 8) - train["total"] == extra


def _layer_cfg(d, h, dk, ff):
  """A one-encoder-layer, no-decoder config with the field names `flops` reads."""
  return types.SimpleNamespace(
    d_model=d,
    num_heads=h,
    d_kv=dk,
    d_ff=ff,
    vocab_size=1,
    num_item_tokens=0,
    feed_forward_proj="relu",
    num_encoder_layers=1,
    num_decoder_layers=0,
  )


def test_analytic_flops_agree_with_xla_cost_analysis_for_a_matmul_stack():
  # Independent reference: XLA's own FLOP count of an encoder-layer-shaped computation.
  d, h, dk, ff, length = 16, 2, 8, 32, 8
  analytic = flops.forward_flops(_layer_cfg(d, h, dk, ff), length, 0)["encoder"]

  def layer(x, wq, wk, wv, wo, wi, wf):
    q, k, v = (jnp.einsum("ld,dhk->lhk", x, w) for w in (wq, wk, wv))
    s = jnp.einsum("qhk,lhk->hql", q, k)
    ctx = jnp.einsum("hql,lhk->qhk", s, v)
    y = jnp.einsum("qhk,hkd->qd", ctx, wo)
    return jnp.einsum("lf,fd->ld", jnp.einsum("ld,df->lf", y, wi), wf)

  shapes = [(length, d), (d, h, dk), (d, h, dk), (d, h, dk), (h, dk, d), (d, ff), (ff, d)]
  args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
  ca = jax.jit(layer).lower(*args).compile().cost_analysis()
  ca = ca[0] if isinstance(ca, (list, tuple)) else ca
  assert analytic == pytest.approx(float(ca["flops"]), rel=0.02)


def test_record_fields_and_json_line():
  rec = protocol.make_record(
    kind="train",
    impl="x",
    step_times_s=[0.5, 0.25, 1.0],
    batch_size=8,
    encoder_len=6,
    decoder_len=2,
    num_items=3,
    dtype="float32",
    device_kind="NVIDIA H100 80GB HBM3",
    num_devices=1,
    flops_per_example=1e12,
    peak_tflops=1000.0,
    warmup_s=1.0,
    peak_memory_bytes=None,
    extra={"preset": "tiny"},
  )
  for f in protocol.RECORD_FIELDS:
    assert f in rec, f
  assert rec["median_step_s"] == 0.5
  assert rec["examples_per_s"] == pytest.approx(16.0)
  assert rec["tokens_per_s"] == pytest.approx(16.0 * 8)
  assert rec["mfu"] == pytest.approx(16.0 * 1e12 / 1e15)
  assert json.loads(json.dumps(rec)) == rec
  with pytest.raises(ValueError, match="step_times_s"):
    protocol.make_record(
      kind="train",
      impl="x",
      step_times_s=[],
      batch_size=8,
      encoder_len=6,
      decoder_len=2,
      num_items=0,
      dtype="float32",
      device_kind="cpu",
      num_devices=1,
      flops_per_example=0,
      peak_tflops=None,
      warmup_s=0,
      peak_memory_bytes=None,
    )


def test_gpu_xla_flags_keep_user_flags():
  env = {"XLA_FLAGS": "--xla_gpu_enable_latency_hiding_scheduler=false"}
  out = train_bench.apply_gpu_xla_flags(env)
  assert "--xla_gpu_enable_latency_hiding_scheduler=false" in out
  assert "latency_hiding_scheduler=true" not in out
  assert "--xla_gpu_enable_while_loop_double_buffering=true" in out


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [4, 7, 64])
def test_chunked_cross_entropy_matches_dense(chunk):
  keys = jax.random.split(jax.random.key(0), 3)
  n, d, v = 6, 8, 37
  hidden = jax.random.normal(keys[0], (n, d))
  emb = jax.random.normal(keys[1], (v, d))
  targets = jnp.array([0, 5, 36, 12, 20, 1])
  w = jnp.array([1.0, 1.0, 0.0, 1.0, 0.5, 1.0])

  def dense(h, e):
    logits = h @ e.T * 0.3
    tgt = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    return jnp.sum(w * (jax.nn.logsumexp(logits, axis=-1) - tgt))

  def chunked(h, e):
    return loss_lib.chunked_cross_entropy(h, e, targets, w, chunk, 0.3)

  # Online log-sum-exp over chunks vs one logsumexp over the vocabulary, summed over tokens.
  vocab_terms = emb.shape[0] * hidden.shape[0]
  numerics.assert_close_f32(jax.jit(chunked)(hidden, emb), dense(hidden, emb), n_terms=vocab_terms)
  g_ref = jax.grad(dense, (0, 1))(hidden, emb)
  g_new = jax.jit(jax.grad(chunked, (0, 1)))(hidden, emb)
  numerics.assert_trees_close_f32(list(g_new), list(g_ref), n_terms=vocab_terms)


def _reference_t5_attention(query, key, value, *, bias=None, mask=None):
  """Plain einsum attention with a float32 softmax and no 1/sqrt(d) scaling (T5's definition)."""
  scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
  if bias is not None:
    scores = scores + bias.astype(jnp.float32)
  if mask is not None:
    scores = jnp.where(mask, scores, loss_lib.NEG_INF)
  probs = jax.nn.softmax(scores, axis=-1).astype(value.dtype)  # [B, H, Lq, Lk]
  return jnp.einsum("bhqk,bkhd->bqhd", probs, value)


@pytest.mark.slow
def test_model_fused_attention_matches_reference_with_bias_and_mask():
  keys = jax.random.split(jax.random.key(1), 4)
  b, lq, lk, h, dh = 2, 3, 5, 2, 4
  q = jax.random.normal(keys[0], (b, lq, h, dh))
  k = jax.random.normal(keys[1], (b, lk, h, dh))
  v = jax.random.normal(keys[2], (b, lk, h, dh))
  bias = jax.random.normal(keys[3], (1, h, lq, lk))
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)[:, None, None, :]
  want = _reference_t5_attention(q, k, v, bias=bias, mask=mask)
  # The model's one attention function, both paths: jax.nn.dot_product_attention (JAX picks the
  # kernel, XLA on CPU) and the einsums. Softmax over lk keys, then lk products.
  for impl in ("dot_product_attention", "einsum"):
    got = layers.attention(q, k, v, impl=impl, bias=bias, mask=mask)
    numerics.assert_close_f32(got, want, n_terms=lk * dh)
  # And the definition itself against a brute-force loop with numpy.
  qn, kn, vn, bn = map(np.asarray, (q, k, v, bias))
  for bi in range(b):
    for hi in range(h):
      s = qn[bi, :, hi] @ kn[bi, :, hi].T + bn[0, hi]
      s[:, ~np.asarray(mask[bi, 0, 0])] = -np.inf
      p = np.exp(s - s.max(-1, keepdims=True))
      p /= p.sum(-1, keepdims=True)
      numerics.assert_close_f32(np.asarray(want)[bi, :, hi], p @ vn[bi, :, hi], n_terms=lk * dh)


def test_bench_defaults_equal_configs_base():
  """The bench's built-in run config (no configs/ on an installed wheel) keeps base.py's values."""
  spec = importlib.util.spec_from_file_location(
    "cfg_base", os.path.join(REPO, "configs", "base.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  base = module.get_config().to_dict()
  ours = train_bench.default_config().to_dict()
  for section, values in ours.items():
    if isinstance(values, dict):
      for key, value in values.items():
        assert base[section][key] == value, f"{section}.{key}"
    else:
      assert base[section] == values, section


def test_first_step_comparison_records():
  """Step 0 once per query vs per beam on a micro model: both sides timed interleaved, labelled
  apart, the same sequences (scores to the last bits of the decoder's [B, 1] step)."""
  micro = dict(d_model=16, d_kv=4, d_ff=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=1)
  once, per_beam, cmp = decode_bench.first_step_comparison(
    preset="tiny",
    batch_size=2,
    encoder_len=6,
    num_beams=4,
    num_beam_groups=2,
    num_return_sequences=3,
    num_items=8,
    warmup=0,
    repeats=2,
    model_overrides=micro,
  )
  assert (once["impl"], per_beam["impl"]) == (
    "gr_jax_beam_search",
    "gr_jax_beam_search_step0_per_beam",
  )
  assert once["first_step_once"] and not per_beam["first_step_once"]
  for rec in (once, per_beam):
    assert rec["kind"] == "decode" and rec["interleaved"] and rec["repeats"] == 2
    assert rec["item_constraint"] and rec["num_beam_groups"] == 2 and rec["num_items"] == 8
    assert rec["output_shape"] == [2, 3, 2]
    json.dumps(rec)
  assert cmp["kind"] == "compare" and cmp["paired"] and cmp["pairs"] == 2
  assert (cmp["impl"], cmp["vs_impl"]) == (once["impl"], per_beam["impl"])
  assert cmp["ratio_min"] <= cmp["ratio"] <= cmp["ratio_max"]
  assert cmp["same_sequences"] and 0.0 <= cmp["max_score_diff"] <= 1e-6


def test_first_step_mode_passes_the_flags(monkeypatch):
  """`--modes=first_step` reaches `first_step_comparison` with the decode flags (not timed)."""
  assert "first_step" in cli.MODES
  seen = {}

  def fake(**kwargs):
    seen.update(kwargs)
    return [{"kind": "compare", "ratio": 1.5}]

  monkeypatch.setattr(decode_bench, "first_step_comparison", fake)
  monkeypatch.setattr(cli, "_model_config", lambda dtype: None)
  was_parsed = flags.FLAGS.is_parsed()
  try:
    with flagsaver.flagsaver():
      flags.FLAGS.mark_as_parsed()
      with flagsaver.as_parsed(
        modes="first_step",
        preset="tiny",
        num_beams="60,30",
        num_beam_groups="30",
        num_items="0",
        dtype="float32",
        gpu_xla_flags="false",
      ):
        cli.main(["gr-jax-bench"])
  finally:
    if not was_parsed:
      flags.FLAGS.unparse_flags()
  assert seen["preset"] == "tiny" and seen["num_beams"] == 60 and seen["num_beam_groups"] == 30
  assert seen["num_items"] == 2000 and seen["max_new_tokens"] == 2 and seen["dtype"] == "float32"
