"""Network tests: decoding entry points agree, dropout/remat/dtype options, presets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gr_jax.decoding import beam_search, trace_count
from gr_jax.model import T5, T5Config, count_params, param_logical_axes
from gr_jax.model.layers import relative_position_bucket
from tests import numerics


def _tiny(**kw):
  fields = dict(
    vocab_size=61,
    num_item_tokens=7,
    d_model=20,
    d_kv=6,
    d_ff=28,
    num_heads=3,
    num_encoder_layers=2,
    num_decoder_layers=3,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=12,
  )
  fields.update(kw)
  return T5Config.from_preset("tiny", **fields)


@nnx.jit(static_argnames=("deterministic",))
def _fwd(model, enc, dec, deterministic=True, key=None):
  """Jitted forward: eager T5 dispatches hundreds of tiny ops, far slower to compile on CPU."""
  return model(enc, dec, deterministic=deterministic, dropout_rng=key)


def _key(i):
  # rbg keys compile far faster than threefry on CPU; the model takes any key type.
  return jax.random.key(i, impl="rbg")


def _inputs(seed=0, b=3, l=9, t=5, vocab=68):
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, vocab, (b, l)).astype(np.int32)
  enc[1, 6:] = 0  # padding
  enc[2, 3:] = 0
  dec = rng.integers(2, vocab, (b, t)).astype(np.int32)
  dec[:, 0] = 0
  return jnp.asarray(enc), jnp.asarray(dec)


@pytest.fixture(scope="module", params=["relu", "gated-gelu"])
def model(request):
  tie = request.param == "relu"
  return T5(_tiny(feed_forward_proj=request.param, tie_word_embeddings=tie), rngs=nnx.Rngs(3))


@pytest.mark.slow
def test_logits_shape_and_vocab(model):
  enc, dec = _inputs()
  logits = _fwd(model, enc, dec)
  assert logits.shape == (3, 5, 61 + 7)
  assert logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()


def test_decode_beams_broadcast_equals_per_beam_call(model):
  enc, _ = _inputs()
  rng = np.random.default_rng(1)
  beams = jnp.asarray(rng.integers(2, 68, (3, 4, 5)), jnp.int32)  # [B, N, T]
  mask = enc != 0

  @nnx.jit
  def run(model):
    ckv = model.cross_kv(model.encode(enc, mask))
    return ckv, model.decode(beams, ckv, mask)  # [B, N, T, V]

  ckv, out = run(model)
  assert ckv[0][0].shape == (3, 9, 3, 6)  # [B, L, H, Dh], not tiled per beam
  for n in range(4):
    ref = _fwd(model, enc, beams[:, n])
    # Beam-batched decode vs one forward per beam: the same math, batched differently.
    numerics.assert_close_f32(out[:, n], ref, n_terms=numerics.t5_forward_terms(model.config))


@pytest.mark.slow
def test_decode_step_matches_decode_prefix(model):
  enc, _ = _inputs()
  rng = np.random.default_rng(2)
  b, n, t, max_len = 3, 2, 6, 8
  tokens = jnp.asarray(rng.integers(2, 68, (b, n, t)), jnp.int32)
  mask = enc != 0
  ckv, full = nnx.jit(
    lambda m: (lambda c: (c, m.decode(tokens, c, mask)))(m.cross_kv(m.encode(enc, mask)))
  )(model)
  cache = model.init_cache(b, n, max_len)
  for leaf in jax.tree.leaves(cache):
    assert leaf.shape[:2] == (b, n)

  graphdef, state = nnx.split(model)

  @jax.jit
  def step(state, tok, pos, cache):
    m = nnx.merge(graphdef, state)
    return m.decode_step(tok, pos, cache, ckv, mask)

  for p in range(t):
    logits, cache = step(state, tokens[:, :, p], jnp.int32(p), cache)
    # KV-cached step vs the whole prefix at once: attention sums over other key sets.
    numerics.assert_close_f32(
      logits, full[:, :, p], n_terms=numerics.t5_forward_terms(model.config)
    )


@pytest.mark.slow
def test_dropout_needs_key_and_is_reproducible(model):
  enc, dec = _inputs()
  with pytest.raises(ValueError, match="dropout_rng"):
    _fwd(model, enc, dec, deterministic=False)
  eval_logits = _fwd(model, enc, dec)
  a = _fwd(model, enc, dec, deterministic=False, key=_key(0))
  b = _fwd(model, enc, dec, deterministic=False, key=_key(0))
  c = _fwd(model, enc, dec, deterministic=False, key=_key(1))
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a - c)).max() > 1e-3
  assert np.abs(np.asarray(a - eval_logits)).max() > 1e-3
  # Dropout only in train mode: a key is ignored when deterministic.
  np.testing.assert_array_equal(_fwd(model, enc, dec, key=_key(0)), eval_logits)


@pytest.mark.slow
def test_remat_same_values_and_grads():
  cfg = _tiny(dropout_rate=0.1, num_encoder_layers=1, num_decoder_layers=1)
  enc, dec = _inputs()
  out = {}
  for remat in (False, True):
    m = T5(cfg.__class__(**{**cfg.to_dict(), "remat": remat}), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(m, nnx.Param)

    def loss(p):
      mm = nnx.merge(graphdef, p)
      lg = mm(enc, dec, deterministic=False, dropout_rng=_key(5))
      return jnp.mean(jax.nn.log_softmax(lg)[..., 3])

    out[remat] = jax.jit(jax.value_and_grad(loss))(params)
  # Remat recomputes the forward inside the backward: XLA may fuse (and so sum) differently.
  terms = numerics.t5_forward_terms(cfg)
  numerics.assert_close_f32(out[True][0], out[False][0], n_terms=terms)
  numerics.assert_trees_close_f32(out[True][1], out[False][1], n_terms=terms)


@pytest.mark.slow
def test_bf16_compute_float32_params():
  enc, dec = _inputs()
  m32 = T5(_tiny(), rngs=nnx.Rngs(0))
  m16 = T5(_tiny(dtype="bfloat16"), rngs=nnx.Rngs(0))
  for leaf in jax.tree.leaves(nnx.state(m16, nnx.Param)):
    assert leaf.dtype == jnp.float32
  l32, l16 = _fwd(m32, enc, dec), _fwd(m16, enc, dec)
  assert l16.dtype == jnp.float32
  err = np.abs(np.asarray(l16 - l32)).max()
  assert 0 < err < 0.1 * np.abs(np.asarray(l32)).max()


@pytest.mark.slow
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("buckets,max_distance", [(32, 128), (8, 20), (10, 7)])
def test_relative_position_bucket_matches_hf(bidirectional, buckets, max_distance):
  torch = pytest.importorskip("torch")
  hf_t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
  rel = np.arange(-300, 301)
  ref = hf_t5.T5Attention._relative_position_bucket(
    torch.tensor(rel), bidirectional=bidirectional, num_buckets=buckets, max_distance=max_distance
  ).numpy()
  ours = relative_position_bucket(
    jnp.asarray(rel), bidirectional=bidirectional, num_buckets=buckets, max_distance=max_distance
  )
  np.testing.assert_array_equal(np.asarray(ours), ref)


def test_logical_axes_cover_every_param(model):
  axes = param_logical_axes(model)
  params = nnx.state(model, nnx.Param)
  flat_axes = jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple))
  flat_params = jax.tree.leaves(params)
  assert len(flat_axes) == len(flat_params)
  known = {"vocab", "embed", "mlp", "heads", "kv", "relpos_buckets"}
  for a, p in zip(flat_axes, flat_params):
    assert len(a) == p.ndim and set(a) <= known


# Parameter counts of the Hugging Face checkpoints (T5ForConditionalGeneration.num_parameters()).
_HF_COUNTS = {
  "small": 60_506_624,
  "base": 222_903_552,
  "large": 737_668_096,
  "flan-t5-small": 76_961_152,
  "flan-t5-base": 247_577_856,
  "flan-t5-large": 783_150_080,
}


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(_HF_COUNTS))
def test_preset_param_counts_match_hf(preset):
  abstract = nnx.eval_shape(lambda: T5(T5Config.from_preset(preset), rngs=nnx.Rngs(0)))
  assert count_params(abstract) == _HF_COUNTS[preset]


def test_config_errors():
  with pytest.raises(ValueError, match="feed_forward_proj"):
    T5Config(feed_forward_proj="swiglu")
  with pytest.raises(ValueError, match="unknown T5 preset"):
    T5Config.from_preset("huge")
  with pytest.raises(ValueError, match="unknown override"):
    T5Config.from_preset("tiny", d_modle=3)
  assert T5Config.from_preset("tiny", num_item_tokens=10).total_vocab_size == 522


@pytest.mark.parametrize("proj", ["relu", "gelu", "gated-gelu"])
def test_models_of_one_architecture_share_a_graphdef_and_compiled_search(proj):
  """Two models of one architecture (different weights) have equal graphdefs, so every jit keyed
  on a graphdef (the beam search, `static_argnames=("graphdef", ...)`) is traced once for both: a
  study's runs of one shape reuse it instead of retracing per run (a lambda made per call for the
  activation once made every model's graphdef unique)."""
  config = T5Config.from_preset("tiny", vocab_size=40, num_item_tokens=6, feed_forward_proj=proj)
  a, b = T5(config, rngs=nnx.Rngs(0)), T5(config, rngs=nnx.Rngs(1))
  ga, gb = nnx.split(a, nnx.Param, ...)[0], nnx.split(b, nnx.Param, ...)[0]
  assert ga == gb and hash(ga) == hash(gb)
  ids = jnp.asarray([[5, 6, 1, 0], [7, 1, 0, 0]], jnp.int32)
  kw = dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, max_new_tokens=2)
  beam_search(a, ids, num_return_sequences=4, **kw)
  before = trace_count()
  beam_search(b, ids, num_return_sequences=4, **kw)
  assert trace_count() == before
