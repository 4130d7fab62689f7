"""Loss, optimizer and train-step tests against independent references (HF T5, formulas)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_config
from tests import numerics
from gr_jax.model import partitioning
from gr_jax.model import build as build_lib
from gr_jax.training import state as state_lib
from gr_jax.training import step as step_lib


def _batch(rng, b, vocab, enc_len=7, n_items=0):
  enc = rng.integers(2, vocab, (b, enc_len)).astype(np.int32)
  enc[:, -2:] = 0  # padding at the end of every input
  enc[:, -3] = 1  # EOS
  tgt = np.stack([rng.integers(2, vocab + n_items, b), np.ones(b)], 1).astype(np.int32)  # [B, 2]
  weights = np.ones((b, 2), np.float32)
  weights[::3, 1] = 0.0  # some rows have a padded second target token
  tgt = np.where(weights > 0, tgt, 0).astype(np.int32)
  dec_in = np.zeros_like(tgt)
  dec_in[:, 1] = tgt[:, 0]
  return {
    "encoder_input_ids": enc,
    "decoder_input_ids": dec_in,
    "decoder_target_ids": tgt,
    "decoder_weights": weights,
    "task_id": (np.arange(b) % 2).astype(np.int32),
  }


@pytest.mark.slow
def test_loss_and_task_metrics_match_hugging_face(hf_t5_factory):
  torch = pytest.importorskip("torch")
  from gr_jax.model import load_hf_checkpoint

  path, hf = hf_t5_factory(seed=3)
  model = load_hf_checkpoint(path)
  batch = _batch(np.random.default_rng(0), 6, 97)
  logits = model(jnp.asarray(batch["encoder_input_ids"]), jnp.asarray(batch["decoder_input_ids"]))
  sums = jax.device_get(step_lib.loss_sums(logits, {k: jnp.asarray(v) for k, v in batch.items()}))
  ours = step_lib.summarize(sums)

  def hf_loss(rows):
    labels = np.where(batch["decoder_weights"] > 0, batch["decoder_target_ids"], -100)[rows]
    enc = batch["encoder_input_ids"][rows]
    with torch.no_grad():
      out = hf(
        input_ids=torch.tensor(enc, dtype=torch.long),
        attention_mask=torch.tensor(enc != 0, dtype=torch.long),
        labels=torch.tensor(labels, dtype=torch.long),
      )
    pred = out.logits.argmax(-1).numpy()
    mask = labels != -100
    return float(out.loss), float((pred == labels)[mask].mean())

  all_rows = np.arange(6)
  # JAX vs PyTorch: two implementations of the forward and the log-softmax over 97 tokens.
  terms = numerics.t5_forward_terms(model.config) + 97
  numerics.assert_close_f32(ours["loss"], hf_loss(all_rows)[0], n_terms=terms)
  for k, name in enumerate(("search", "rec")):
    loss, acc = hf_loss(all_rows[batch["task_id"] == k])
    numerics.assert_close_f32(ours[f"loss/{name}"], loss, n_terms=terms)
    # A count ratio: equal unless an argmax flips, which would be a real difference.
    np.testing.assert_allclose(ours[f"token_accuracy/{name}"], acc, rtol=1e-6)


def _setup(accum, dropout=0.0, clip=1.0, dtype="float32"):
  """(mesh, fresh-state factory, jitted step) for a 1+1-layer T5 (quick to compile)."""
  cfg = tiny_config.get_config()
  cfg.model.dropout_rate = dropout
  cfg.model.dtype = dtype
  cfg.model.overrides.num_encoder_layers = 1
  cfg.model.overrides.num_decoder_layers = 1
  cfg.train.grad_accum_steps = accum
  cfg.train.grad_clip_norm = clip
  cfg, _ = build_lib.resolve_model(cfg, text_vocab_size=50, num_item_tokens=10)
  mesh = partitioning.make_mesh(-1, 1)
  tx, schedule = state_lib.make_optimizer(cfg, 10)
  parts, abstract = build_lib.build_model(cfg, mesh, abstract=True)
  shardings = state_lib.state_shardings(parts, tx, mesh, abstract)

  def fresh():
    _, params = build_lib.build_model(cfg, mesh)
    return state_lib.create_train_state(params, tx, shardings)

  fn = step_lib.jit_train_step(
    step_lib.make_train_step(parts, tx, schedule, grad_accum_steps=accum, use_dropout=dropout > 0),
    shardings,
    partitioning.batch_sharding(mesh),
    mesh,
  )
  return mesh, fresh, fn


@pytest.mark.slow
def test_gradient_accumulation_equals_one_big_batch(compile_cache):
  batch = _batch(np.random.default_rng(1), 8, 50, n_items=10)
  results = []
  for accum in (1, 4):
    mesh, fresh, fn = _setup(accum)
    st = fresh()
    p0 = jax.device_get(st["params"])
    with jax.set_mesh(mesh):
      st, m = fn(st, batch, jax.random.key(0))
    results.append(
      (
        jax.device_get(st["params"]),
        step_lib.summarize(jax.device_get(m)),
        jax.device_get(st["opt_state"]),
      )
    )
  (p1, m1, o1), (p4, m4, o4) = results
  # One batch of 8 vs four micro-batches of 2: the same token sums in another order.
  terms = 8 * 2 * 60  # tokens x (text + item vocabulary)
  numerics.assert_close_f32(m1["loss"], m4["loss"], n_terms=terms)
  _assert_same_first_update(p1, o1, p4, o4, n_terms=terms, min_checked=0.5)
  # ...and the step really moved the weights.
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p0, p1))
  assert max(moved) > 1e-4


@pytest.mark.slow
def test_dropout_is_a_function_of_seed_and_step(compile_cache):
  batch = _batch(np.random.default_rng(2), 8, 50, n_items=10)
  mesh, fresh, fn = _setup(1, dropout=0.3)
  with jax.set_mesh(mesh):
    _, m_a = fn(fresh(), batch, jax.random.key(0))
    _, m_b = fn(fresh(), batch, jax.random.key(0))
    st, m_c = fn(fresh(), batch, jax.random.key(1))
    # Same weights again at step 1 (the step counter is what fold_in uses): other masks.
    st = dict(st, params=fresh()["params"])
    _, m_d = fn(st, batch, jax.random.key(0))
  assert float(m_a["loss_sum"]) == float(m_b["loss_sum"])  # same (seed, step): same masks
  assert float(m_a["loss_sum"]) != float(m_c["loss_sum"])  # other seed: other masks
  assert float(m_a["loss_sum"]) != float(m_d["loss_sum"])  # other step: other masks


@pytest.mark.slow
def test_hardware_dropout_prng_is_deterministic_and_dropout_only(compile_cache):
  """train.dropout_prng=rbg: masks are a function of (seed, step) as with threefry; they differ
  from threefry's; with dropout off the PRNG changes nothing (it only feeds the masks)."""
  assert step_lib.resolve_dropout_prng("auto", "cpu") == "threefry2x32"
  assert step_lib.resolve_dropout_prng("auto", "gpu") == "rbg"
  assert step_lib.resolve_dropout_prng("auto", "tpu") == "rbg"
  with pytest.raises(ValueError, match="train.dropout_prng: expected one of"):
    step_lib.dropout_key(0, "philox")
  assert jax.random.key_impl(step_lib.dropout_key(0, "rbg")) == jax.random.key_impl(
    jax.random.key(0, impl="rbg")
  )
  batch = _batch(np.random.default_rng(3), 8, 50, n_items=10)
  losses = {}
  for dropout in (0.0, 0.3):
    mesh, fresh, fn = _setup(1, dropout=dropout)
    with jax.set_mesh(mesh):
      for prng in ("threefry2x32", "rbg"):
        for seed in (0, 0, 1):
          _, m = fn(fresh(), batch, step_lib.dropout_key(seed, prng))
          losses.setdefault((dropout, prng, seed), []).append(float(m["loss_sum"]))
  for key, values in losses.items():
    assert len(set(values)) == 1, key  # same (seed, step): same masks
  assert losses[(0.3, "rbg", 0)] != losses[(0.3, "rbg", 1)]  # other seed: other masks
  assert losses[(0.3, "rbg", 0)] != losses[(0.3, "threefry2x32", 0)]  # other generator
  assert losses[(0.0, "rbg", 0)] == losses[(0.0, "threefry2x32", 0)]  # no dropout: no difference
  assert losses[(0.3, "rbg", 0)] != losses[(0.0, "rbg", 0)]  # and dropout is live


def test_bf16_step_runs_every_matmul_in_bf16():
  """model.dtype=bfloat16: every matmul of the train step, forward and backward, takes bf16
  operands (float32 master weights are cast at use). The only float32 dot_generals left are the
  loss's one-hot target pick (equal shapes, or its transpose with no contraction) and the
  per-task sums over the batch ([B] x [B, 2])."""
  import re

  batch = _batch(np.random.default_rng(4), 8, 50, n_items=10)
  mesh, fresh, fn = _setup(1, dropout=0.1, dtype="bfloat16")
  with jax.set_mesh(mesh):
    text = fn.lower(fresh(), batch, jax.random.key(0)).as_text()
  dots = re.findall(
    r"stablehlo.dot_general[^\n]*?(contracting_dims = \[[^\]]*\])[^\n]*:\s*"
    r"\(tensor<([^>]*)>, tensor<([^>]*)>\)",
    text,
  )
  assert len(dots) > 20
  bf16 = 0
  for contracting, a, b in dots:
    if a.endswith("bf16") and b.endswith("bf16"):
      bf16 += 1
      continue
    a_shape, b_shape = a.split("x")[:-1], b.split("x")[:-1]
    assert (
      a_shape == b_shape
      or contracting == "contracting_dims = []"
      or b_shape[-1:] == [str(step_lib.NUM_TASKS)]
    ), (contracting, a, b)
  assert bf16 >= len(dots) - 8


@pytest.mark.parametrize("kind", ["constant", "cosine", "linear"])
def test_schedule_warmup_then_decay(kind):
  cfg = tiny_config.get_config()
  cfg.train.learning_rate, cfg.train.warmup_fraction, cfg.train.schedule = 0.002, 0.1, kind
  sched = state_lib.make_schedule(cfg, 100)  # 10 warm-up steps, then 90
  lr = 0.002
  # A few float32 scalar operations against the float64 formula (no reduction): 1e-5 is ~100 ulp.
  for s in range(10):  # linear warm-up from lr/10 to lr
    np.testing.assert_allclose(float(sched(s)), lr / 10 + (lr - lr / 10) * s / 10, rtol=1e-5)
  for s in (10, 35, 60, 99):
    frac = (s - 10) / 90
    want = {
      "constant": lr,
      "cosine": lr * 0.5 * (1 + np.cos(np.pi * frac)),
      "linear": lr * (1 - frac),
    }[kind]
    np.testing.assert_allclose(float(sched(s)), want, rtol=1e-5, atol=1e-9)


def test_adamw_decays_matrices_not_norm_scales():
  cfg = tiny_config.get_config()
  cfg.train.warmup_fraction, cfg.train.grad_clip_norm = 0.0, 0.0
  tx, _ = state_lib.make_optimizer(cfg, 10)
  params = {"norm": {"scale": jnp.full((4,), 2.0)}, "dense": {"kernel": jnp.full((4, 3), 2.0)}}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  # AdamW with a zero gradient: update = -lr * weight_decay * p on decayed leaves only (two float32
  # multiplications: a few ulp, well inside 1e-6).
  np.testing.assert_allclose(updates["dense"]["kernel"], -0.01 * 0.01 * 2.0, rtol=1e-6)
  np.testing.assert_array_equal(updates["norm"]["scale"], 0.0)


def test_bad_schedule_and_accumulation_are_clear_errors():
  cfg = tiny_config.get_config()
  cfg.train.schedule = "exp"
  with pytest.raises(ValueError, match="config.train.schedule"):
    state_lib.make_schedule(cfg, 10)
  with pytest.raises(ValueError, match="grad_accum_steps"):
    step_lib._split_micro({"x": jnp.zeros((6, 2))}, 4)


def test_init_from_hugging_face_directory(hf_t5_factory):
  from gr_jax.model import load_hf_checkpoint

  path, _ = hf_t5_factory(seed=5)
  cfg = tiny_config.get_config()
  cfg.model.init_from = path
  resolved, model_config = build_lib.resolve_model(cfg, text_vocab_size=97, num_item_tokens=5)
  # The architecture comes from the checkpoint's config.json and is written into the config.
  assert model_config.d_model == 24 and model_config.num_item_tokens == 5
  assert resolved.model.overrides.d_model == 24 and resolved.model.overrides.vocab_size == 97
  mesh = partitioning.make_mesh(-1, 1)
  _, params = build_lib.build_model(resolved, mesh)
  ref = build_lib._split(load_hf_checkpoint(path, num_item_tokens=5, seed=0))[1]
  jax.tree.map(
    lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
    jax.device_get(params),
    ref,
  )
  # A dataset whose item tokens do not start right after the checkpoint's vocabulary is refused.
  with pytest.raises(
    ValueError, match="item tokens start at 120 but the model's text vocabulary is 97"
  ):
    build_lib.resolve_model(cfg, text_vocab_size=120, num_item_tokens=5, where="ds")


# ------------------------------------------------------------------ chunked loss (train.loss_impl)

_ITEMS, _TEXT, _CHUNK = 5000, 50, 1024  # 5 chunks; the last is shifted back to end at V = 5050


def _chunk_parts(tie: bool):
  cfg = tiny_config.get_config()
  cfg.model.dropout_rate = 0.0
  cfg.model.overrides.num_encoder_layers = 1
  cfg.model.overrides.num_decoder_layers = 1
  cfg.model.overrides.tie_word_embeddings = tie
  cfg.model.overrides.feed_forward_proj = "relu" if tie else "gated-gelu"
  cfg.train.loss_chunk_size = _CHUNK
  cfg, _ = build_lib.resolve_model(cfg, text_vocab_size=_TEXT, num_item_tokens=_ITEMS)
  mesh = partitioning.make_mesh(-1, 1)
  parts, params = build_lib.build_model(cfg, mesh)
  return cfg, mesh, parts, params


def _item_batch(parts, params, seed=7, b=8):
  """A batch whose targets span every chunk (the shifted last one's overlap included) and where
  half the first targets are the model's own argmax, so that accuracy is not trivially 0."""
  batch = _batch(np.random.default_rng(seed), b, _TEXT, n_items=_ITEMS)
  first = np.array([_TEXT + 3, 1500, 4030, 4095, 4096, 5049, 2047, 2048])[:b]  # token ids
  model = build_lib.merge(parts, params)
  enc = jnp.asarray(batch["encoder_input_ids"])
  pred = np.asarray(jnp.argmax(model(enc, jnp.zeros((b, 1), jnp.int32)), -1))[:, 0]  # [B]
  first = np.where(np.arange(b) % 2 == 0, pred, first).astype(np.int32)
  batch["decoder_target_ids"][:, 0] = first
  batch["decoder_input_ids"][:, 1] = first
  return {k: jnp.asarray(v) for k, v in batch.items()}


@pytest.mark.slow
@pytest.mark.parametrize("tie", [True, False])
def test_chunked_loss_and_gradients_equal_full(tie):
  _, _, parts, params = _chunk_parts(tie)
  batch = _item_batch(parts, params)

  @jax.jit
  def run(params):
    out = {}
    for impl in ("full", "chunked"):

      def f(p, impl=impl):
        sums = step_lib._forward_sums(parts, p, batch, loss_impl=impl, chunk_size=_CHUNK)
        return sums["loss_sum"], sums

      out[impl] = jax.grad(f, has_aux=True)(params)
    return out

  out = jax.device_get(run(params))
  (g_full, s_full), (g_chunk, s_chunk) = out["full"], out["chunked"]
  assert float(s_full["task_correct_sum"].sum()) >= 4  # the planted argmax targets count
  # Online log-sum-exp over 5 chunks vs one log-softmax over V = 5050 entries.
  vocab = _TEXT + _ITEMS
  for k in s_full:
    numerics.assert_close_f32(s_chunk[k], s_full[k], n_terms=vocab, err_msg=k)
  # Gradients, the output projection (tied embedding or lm head, 5050 rows) included.
  numerics.assert_trees_close_f32(g_chunk, g_full, n_terms=vocab)
  assert float(np.abs(jax.tree.leaves(g_full)[0]).max()) > 0


@pytest.mark.slow
def test_chunked_train_step_metrics_equal_full(compile_cache):
  cfg, mesh, parts, params = _chunk_parts(False)
  batch = jax.device_get(_item_batch(parts, params, seed=9))
  tx, schedule = state_lib.make_optimizer(cfg, 10)
  _, abstract = build_lib.build_model(cfg, mesh, abstract=True)
  shardings = state_lib.state_shardings(parts, tx, mesh, abstract)
  results, opt_states = {}, {}
  # "auto" (the config default) is full at 5050 tokens; chunked is the run's choice on the parts.
  assert step_lib._loss_options(parts, None, None) == ("full", _CHUNK)
  for impl in ("full", "chunked"):
    parts_used = dataclasses.replace(parts, loss_impl=impl)
    fn = step_lib.jit_train_step(
      step_lib.make_train_step(parts_used, tx, schedule),
      shardings,
      partitioning.batch_sharding(mesh),
      mesh,
    )
    st = state_lib.create_train_state(build_lib.build_model(cfg, mesh)[1], tx, shardings)
    with jax.set_mesh(mesh):
      st, m = fn(st, batch, jax.random.key(0))
    results[impl] = (jax.device_get(st["params"]), jax.device_get(m))
    opt_states[impl] = jax.device_get(st["opt_state"])
  (p_full, m_full), (p_chunk, m_chunk) = results["full"], results["chunked"]
  # What the two paths compute: loss and metric sums (log-sum-exp over V = 5050 entries per token)...
  vocab = _TEXT + _ITEMS
  for k in m_full:
    numerics.assert_close_f32(m_chunk[k], m_full[k], n_terms=vocab, err_msg=k)
  assert step_lib.summarize(m_chunk).keys() == step_lib.summarize(m_full).keys()
  _assert_same_first_update(
    p_full, opt_states["full"], p_chunk, opt_states["chunked"], n_terms=vocab, min_checked=0.5
  )


def _assert_same_first_update(p_a, opt_a, p_b, opt_b, *, n_terms: int, min_checked: float):
  """Two train steps from the same state computed the same first AdamW update.

  The gradient is compared through AdamW's first moment, mu = (1 - b1) * clipped gradient after
  one step: linear in the gradient, so it gets the gradient's tolerance. The parameters are NOT
  compared everywhere: Adam's first update is lr * g / (|g| + 1e-8), a sign function of g where
  |g| is at the rounding level, so an entry whose two roundings differ in sign moves by 2 * lr in
  opposite directions (how this test once failed on a CPU with another vector width). Where |mu|
  is 100x above the gradient tolerance the update is insensitive to rounding (d/dg of g / |g| is
  eps_adam / g^2 there), and where the gradient is exactly zero on both sides (embedding rows of
  tokens absent from the batch) both take the same weight-decay-only update: those entries must
  agree. `min_checked`: the share of entries that must fall in those two classes (rows of the
  untied output projection for tokens outside the batch get gradients ~1/V of the largest).
  """
  mu_a, mu_b = _first_moment(opt_a), _first_moment(opt_b)
  numerics.assert_trees_close_f32(mu_b, mu_a, n_terms=n_terms)
  rtol = numerics.reduction_rtol(n_terms)
  checked = 0
  leaves = zip(
    jax.tree.leaves(p_a), jax.tree.leaves(p_b), jax.tree.leaves(mu_a), jax.tree.leaves(mu_b)
  )
  for pa, pb, ma, mb in leaves:
    ma, mb = np.asarray(ma), np.asarray(mb)
    stable = (np.abs(ma) > 100 * rtol * np.abs(ma).max()) | ((ma == 0) & (mb == 0))
    checked += int(stable.sum())
    numerics.assert_close_f32(np.asarray(pb)[stable], np.asarray(pa)[stable], n_terms=n_terms)
  total = sum(x.size for x in jax.tree.leaves(p_a))
  assert checked > min_checked * total, (checked, total)


def _first_moment(opt_state):
  """AdamW's `mu` pytree out of the optimizer state (clip_by_global_norm has no state of its own)."""
  found = [
    s.mu for s in jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")
  ]
  assert len(found) == 1, "expected one Adam state in the optimizer chain"
  return found[0]


def test_loss_impl_resolution_and_errors():
  assert step_lib.resolve_loss_impl("auto", 65_536) == "full"
  assert step_lib.resolve_loss_impl("auto", 65_537) == "chunked"
  assert step_lib.resolve_loss_impl("full", 10**6) == "full"
  assert step_lib.resolve_loss_impl("chunked", 10) == "chunked"
  with pytest.raises(ValueError, match="config.train.loss_impl"):
    step_lib.resolve_loss_impl("fused", 10)
  cfg = tiny_config.get_config()
  assert cfg.train.loss_impl == "auto" and cfg.train.loss_chunk_size > 0
  cfg.train.loss_impl = "chunked"
  cfg.train.loss_chunk_size = 7
  cfg, _ = build_lib.resolve_model(cfg, text_vocab_size=50, num_item_tokens=10)
  parts, _ = build_lib.build_model(cfg, partitioning.make_mesh(-1, 1), abstract=True)
  assert (parts.loss_impl, parts.loss_chunk_size) == ("chunked", 7)
  with pytest.raises(ValueError, match="loss_chunk_size"):
    step_lib.make_train_step(parts, None, None, loss_chunk_size=0)
