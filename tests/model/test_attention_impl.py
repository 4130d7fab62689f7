"""`attention_impl="dot_product_attention"` (XLA's kernel on CPU) equals the einsum path, and the
hidden-state / output-projection entry points reproduce the logits."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gr_jax.model import T5, T5Config
from gr_jax.model.config import resolve_attention
from tests import numerics


def _cfg(**kw):
  fields = dict(
    vocab_size=61,
    num_item_tokens=7,
    d_model=20,
    d_kv=6,
    d_ff=28,
    num_heads=3,
    num_encoder_layers=1,
    num_decoder_layers=1,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=12,
  )
  fields.update(kw)
  return T5Config.from_preset("tiny", **fields)


def _inputs(seed=0, b=3, l=9, t=5, vocab=68):
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, vocab, (b, l)).astype(np.int32)
  enc[1, 6:] = 0  # padding masks of different lengths
  enc[2, 3:] = 0
  dec = rng.integers(2, vocab, (b, t)).astype(np.int32)
  dec[:, 0] = 0
  return jnp.asarray(enc), jnp.asarray(dec)


@pytest.fixture(scope="module", params=["relu", "gated-gelu"])
def pair(request):
  """(einsum model, dot_product_attention model) with the same parameters."""
  tie = request.param == "relu"
  base = _cfg(feed_forward_proj=request.param, tie_word_embeddings=tie)
  models = [
    T5(dataclasses.replace(base, attention_impl=impl), rngs=nnx.Rngs(4))
    for impl in ("einsum", "dot_product_attention")
  ]
  return models


@pytest.mark.slow
def test_params_do_not_depend_on_attention_impl(pair):
  a, b = (nnx.to_pure_dict(nnx.state(m, nnx.Param)) for m in pair)
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.slow
def test_dot_product_attention_logits_equal_einsum(pair):
  enc, dec = _inputs()
  mask = enc != 0
  dec2 = dec.at[:, 3].set(dec[:, 3] % 60 + 2)  # a later decoder token changed
  enc3 = enc.at[2, 5].set(17).at[1, 7].set(33)  # other tokens where the mask says padding

  @nnx.jit
  def fwd(m):
    return m(enc, dec), m(enc, dec2), m(enc3, dec, encoder_mask=mask)

  ref, _, _ = fwd(pair[0])
  got, got2, got3 = fwd(pair[1])
  # einsum vs jax.nn.dot_product_attention: two kernels, two summation orders.
  numerics.assert_close_f32(got, ref, n_terms=numerics.t5_forward_terms(pair[0].config))
  # The causal mask really is applied: a later token leaves earlier positions' logits alone...
  # (One compiled program on two inputs: masked terms add exact zeros, so these agree to the bit
  # in practice; 1e-6 only guards against a fused kernel's reassociation.)
  np.testing.assert_allclose(got2[:, :3], got[:, :3], atol=1e-6)
  assert float(jnp.abs(got2[:, 3:] - got[:, 3:]).max()) > 1e-4
  # ...and the padding mask: what stands in padded encoder positions does not matter.
  np.testing.assert_allclose(got3, got, atol=1e-6)


@pytest.mark.slow
def test_dot_product_attention_beams_and_gradients():
  base = _cfg(num_decoder_layers=2)  # gated-gelu, untied; two decoder layers share the relpos bias
  pair = [
    T5(dataclasses.replace(base, attention_impl=impl), rngs=nnx.Rngs(5))
    for impl in ("einsum", "dot_product_attention")
  ]
  enc, _ = _inputs(1)
  beams = jnp.asarray(np.random.default_rng(2).integers(2, 68, (3, 4, 5)), jnp.int32)  # [B, N, T]
  mask = enc != 0

  @nnx.jit
  def run(model):
    ckv = model.cross_kv(model.encode(enc, mask))
    return model.decode(beams, ckv, mask)  # [B, N, T, V]

  terms = numerics.t5_forward_terms(base)
  numerics.assert_close_f32(run(pair[1]), run(pair[0]), n_terms=terms)

  @nnx.jit
  def grad(model):
    return nnx.grad(lambda m: jnp.sum(jax.nn.log_softmax(m(enc, beams[:, 0]))[..., 5]))(model)

  g_ref, g_new = (nnx.to_pure_dict(grad(m)) for m in pair)
  # Gradients pass through the forward and the backward: twice the terms.
  numerics.assert_trees_close_f32(g_new, g_ref, n_terms=2 * terms)


def test_auto_is_resolved_once_with_the_config():
  """ "auto" becomes a concrete kernel when the config is built; the network never asks for the
  backend. With dropout it stays einsum (the fused kernels have no attention-probability dropout)."""
  assert resolve_attention("auto", dropout_rate=0.0, backend="gpu") == "dot_product_attention"
  assert resolve_attention("auto", dropout_rate=0.1, backend="gpu") == "einsum"
  assert resolve_attention("auto", dropout_rate=0.0, backend="cpu") == "einsum"
  assert resolve_attention("cudnn", dropout_rate=0.1, backend="cpu") == "cudnn"
  expect = "dot_product_attention" if jax.default_backend() == "gpu" else "einsum"
  assert _cfg(attention_impl="auto", dropout_rate=0.0).attention_impl == expect
  assert _cfg(attention_impl="auto", dropout_rate=0.1).attention_impl == "einsum"
  with pytest.raises(ValueError, match="attention_impl"):
    _cfg(attention_impl="flash")


def test_hidden_states_and_head_give_the_logits(pair):
  enc, dec = _inputs(3)
  for model in pair[:1]:  # the attention path does not matter here
    logits, hidden = nnx.jit(lambda m: (m(enc, dec), m(enc, dec, return_hidden=True)))(model)
    assert hidden.shape == (3, 5, 20)
    w, scale = model.lm_head_weights()
    spec = "btd,vd->btv" if model.lm_head_vocab_axis == 0 else "btd,dv->btv"
    assert w.shape[model.lm_head_vocab_axis] == 68
    # One contraction over d_model, in another fusion than the model's own head.
    numerics.assert_close_f32(
      jnp.einsum(spec, hidden, w) * scale, logits, n_terms=model.config.d_model
    )
