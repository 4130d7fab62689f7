"""Loss, optimizer and train-step tests against independent references (HF T5, formulas)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_config
from gr_jax.training import sharding_utils
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
  return {"encoder_input_ids": enc, "decoder_input_ids": dec_in, "decoder_target_ids": tgt,
          "decoder_weights": weights, "task_id": (np.arange(b) % 2).astype(np.int32)}


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
      out = hf(input_ids=torch.tensor(enc, dtype=torch.long),
               attention_mask=torch.tensor(enc != 0, dtype=torch.long),
               labels=torch.tensor(labels, dtype=torch.long))
    pred = out.logits.argmax(-1).numpy()
    mask = labels != -100
    return float(out.loss), float((pred == labels)[mask].mean())

  all_rows = np.arange(6)
  np.testing.assert_allclose(ours["loss"], hf_loss(all_rows)[0], rtol=1e-5)
  for k, name in enumerate(("search", "rec")):
    loss, acc = hf_loss(all_rows[batch["task_id"] == k])
    np.testing.assert_allclose(ours[f"loss/{name}"], loss, rtol=1e-5)
    np.testing.assert_allclose(ours[f"token_accuracy/{name}"], acc, rtol=1e-6)


def _setup(accum, dropout=0.0, clip=1.0):
  """(mesh, fresh-state factory, jitted step) for a 1+1-layer T5 (quick to compile)."""
  cfg = tiny_config.get_config()
  cfg.model.dropout_rate = dropout
  cfg.model.overrides.num_encoder_layers = 1
  cfg.model.overrides.num_decoder_layers = 1
  cfg.train.grad_accum_steps = accum
  cfg.train.grad_clip_norm = clip
  cfg, _ = state_lib.resolve_model(cfg, text_vocab_size=50, num_item_tokens=10)
  mesh = sharding_utils.make_mesh(-1, 1)
  tx, schedule = state_lib.make_optimizer(cfg, 10)
  parts, abstract = state_lib.build_model(cfg, mesh, abstract=True)
  shardings = state_lib.state_shardings(parts, tx, mesh, abstract)

  def fresh():
    _, params = state_lib.build_model(cfg, mesh)
    return state_lib.create_train_state(params, tx, shardings)

  fn = step_lib.jit_train_step(
      step_lib.make_train_step(parts, tx, schedule, grad_accum_steps=accum,
                               use_dropout=dropout > 0),
      shardings, sharding_utils.batch_sharding(mesh), mesh)
  return mesh, fresh, fn


def test_gradient_accumulation_equals_one_big_batch(compile_cache):
  batch = _batch(np.random.default_rng(1), 8, 50, n_items=10)
  results = []
  for accum in (1, 4):
    mesh, fresh, fn = _setup(accum)
    st = fresh()
    p0 = jax.device_get(st["params"])
    with jax.set_mesh(mesh):
      st, m = fn(st, batch, jax.random.key(0))
    results.append((jax.device_get(st["params"]), step_lib.summarize(jax.device_get(m))))
  (p1, m1), (p4, m4) = results
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p1, p4)
  # ...and the step really moved the weights.
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p0, p1))
  assert max(moved) > 1e-4


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


@pytest.mark.parametrize("kind", ["constant", "cosine", "linear"])
def test_schedule_warmup_then_decay(kind):
  cfg = tiny_config.get_config()
  cfg.train.learning_rate, cfg.train.warmup_steps, cfg.train.schedule = 0.002, 10, kind
  sched = state_lib.make_schedule(cfg, 110)
  lr = 0.002
  for s in range(10):  # linear warm-up from lr/10 to lr
    np.testing.assert_allclose(float(sched(s)), lr / 10 + (lr - lr / 10) * s / 10, rtol=1e-5)
  for s in (10, 35, 60, 109):
    frac = (s - 10) / 100
    want = {"constant": lr, "cosine": lr * 0.5 * (1 + np.cos(np.pi * frac)),
            "linear": lr * (1 - frac)}[kind]
    np.testing.assert_allclose(float(sched(s)), want, rtol=1e-5, atol=1e-9)


def test_adamw_decays_matrices_not_norm_scales():
  cfg = tiny_config.get_config()
  cfg.train.warmup_steps, cfg.train.grad_clip_norm = 0, 0.0
  tx, _ = state_lib.make_optimizer(cfg, 10)
  params = {"norm": {"scale": jnp.full((4,), 2.0)}, "dense": {"kernel": jnp.full((4, 3), 2.0)}}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  # AdamW with a zero gradient: update = -lr * weight_decay * p on decayed leaves only.
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
  resolved, model_config = state_lib.resolve_model(cfg, text_vocab_size=97, num_item_tokens=5)
  # The architecture comes from the checkpoint's config.json and is written into the config.
  assert model_config.d_model == 24 and model_config.num_item_tokens == 5
  assert resolved.model.overrides.d_model == 24 and resolved.model.overrides.vocab_size == 97
  mesh = sharding_utils.make_mesh(-1, 1)
  _, params = state_lib.build_model(resolved, mesh)
  ref = state_lib._split(load_hf_checkpoint(path, num_item_tokens=5, seed=0))[1]
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               jax.device_get(params), ref)
  # A dataset whose item tokens do not start right after the checkpoint's vocabulary is refused.
  with pytest.raises(ValueError, match="item tokens start at 120 but the model's text vocabulary "
                                       "is 97"):
    state_lib.resolve_model(cfg, text_vocab_size=120, num_item_tokens=5, where="ds")
