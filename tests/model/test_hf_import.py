"""load_hf_checkpoint against Hugging Face T5ForConditionalGeneration (torch, test-only reference)."""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gr_jax.model import count_params, load_hf_checkpoint
from gr_jax.model.hf_import import CheckpointError

torch = pytest.importorskip("torch")
safetensors_np = pytest.importorskip("safetensors.numpy")

V10 = dict(feed_forward_proj="relu", tie_word_embeddings=True)
V11 = dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)


@nnx.jit
def _fwd(model, enc, dec, mask):
  return model(enc, dec, encoder_mask=mask)


def _inputs(seed, vocab, b=3, l=13, t=6):
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, vocab, (b, l))
  enc[1, 9:] = 0  # right padding of different lengths
  enc[2, 4:] = 0
  dec = rng.integers(2, vocab, (b, t))
  dec[:, 0] = 0
  return enc, dec


def _hf_logits(hf_model, enc, dec):
  with torch.no_grad():
    return (
      hf_model(
        input_ids=torch.tensor(enc),
        attention_mask=torch.tensor((enc != 0) * 1),
        decoder_input_ids=torch.tensor(dec),
      )
      .logits.float()
      .numpy()
    )


def _ours(model, enc, dec):
  e = jnp.asarray(enc, jnp.int32)
  return np.asarray(_fwd(model, e, jnp.asarray(dec, jnp.int32), e != 0))


CASES = [
  pytest.param(0, V10, id="v1.0-seed0-3heads"),
  pytest.param(1, dict(V11, num_decoder_layers=3), id="v1.1-seed1-3heads-3declayers"),
  pytest.param(
    2,
    dict(
      V11,
      num_heads=5,
      d_kv=7,
      d_model=30,
      relative_attention_max_distance=9,
      relative_attention_num_buckets=6,
    ),
    id="v1.1-seed2-5heads-dkv7",
  ),
  pytest.param(3, dict(V10, num_layers=1, num_heads=1), id="v1.0-seed3-1head"),
]


@pytest.mark.parametrize("seed,fields", CASES)
def test_logits_match_hf(hf_t5_factory, seed, fields):
  path, hf = hf_t5_factory(seed=seed, **fields)
  model = load_hf_checkpoint(path)
  assert count_params(model) == hf.num_parameters()
  enc, dec = _inputs(seed, hf.config.vocab_size)
  ref = _hf_logits(hf, enc, dec)
  out = _ours(model, enc, dec)
  assert out.shape == ref.shape
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_sharded_checkpoint(hf_t5_factory):
  path, hf = hf_t5_factory(seed=1, max_shard_size="20KB", **V11)
  files = [f for f in os.listdir(path) if f.endswith(".safetensors")]
  assert len(files) > 1 and os.path.exists(os.path.join(path, "model.safetensors.index.json"))
  model = load_hf_checkpoint(path)
  enc, dec = _inputs(5, hf.config.vocab_size)
  np.testing.assert_allclose(_ours(model, enc, dec), _hf_logits(hf, enc, dec), atol=1e-4, rtol=0)


def test_bfloat16_checkpoint(hf_t5_factory, tmp_path):
  _, hf = hf_t5_factory(seed=0, **V11)
  bf = type(hf)(hf.config)
  bf.load_state_dict(hf.state_dict())
  bf = bf.to(torch.bfloat16).eval()
  bf.save_pretrained(str(tmp_path))
  model = load_hf_checkpoint(str(tmp_path))
  want = bf.lm_head.weight.detach().float().numpy().T
  np.testing.assert_array_equal(np.asarray(model.lm_head.kernel[...]), want)


@pytest.mark.parametrize("fields", [V10, V11], ids=["tied", "untied"])
def test_item_tokens_extend_vocab(hf_t5_factory, fields):
  path, hf = hf_t5_factory(seed=0, **fields)
  v = hf.config.vocab_size
  model = load_hf_checkpoint(path, num_item_tokens=50, seed=3)
  assert model.config.total_vocab_size == v + 50
  emb = np.asarray(model.shared.embedding[...])
  text = hf.shared.weight.detach().numpy()
  np.testing.assert_array_equal(emb[:v], text)
  # Documented init: N(column mean, global std) of the pretrained rows.
  np.testing.assert_allclose(emb[v:].std(), text.std(), rtol=0.15)
  assert np.abs(emb[v:].mean(0) - text.mean(0)).max() < 4 * text.std() / np.sqrt(50)
  enc, dec = _inputs(0, v)
  out = _ours(model, enc, dec)
  assert out.shape[-1] == v + 50
  # Item rows only add output columns (and are never fed here), so text logits are unchanged.
  np.testing.assert_allclose(out[..., :v], _hf_logits(hf, enc, dec), atol=1e-4, rtol=0)


def _copy(path, tmp_path):
  dst = str(tmp_path / "ckpt")
  shutil.copytree(path, dst)
  return dst


def _edit_config(path, **changes):
  cfg_path = os.path.join(path, "config.json")
  with open(cfg_path) as f:
    cfg = json.load(f)
  cfg.update(changes)
  with open(cfg_path, "w") as f:
    json.dump(cfg, f)


def test_error_unknown_architecture(hf_t5_factory, tmp_path):
  path = _copy(hf_t5_factory(seed=0, **V10)[0], tmp_path)
  _edit_config(path, model_type="bart", architectures=["BartForConditionalGeneration"])
  with pytest.raises(CheckpointError, match=r"config\.json.*BartForConditionalGeneration"):
    load_hf_checkpoint(path)


def test_error_unsupported_activation(hf_t5_factory, tmp_path):
  path = _copy(hf_t5_factory(seed=0, **V10)[0], tmp_path)
  _edit_config(path, feed_forward_proj="gated-silu")
  with pytest.raises(CheckpointError, match="feed_forward_proj"):
    load_hf_checkpoint(path)


def test_error_missing_tensor(hf_t5_factory, tmp_path):
  path = _copy(hf_t5_factory(seed=0, **V11)[0], tmp_path)
  st = os.path.join(path, "model.safetensors")
  tensors = safetensors_np.load_file(st)
  name = "decoder.block.1.layer.1.EncDecAttention.v.weight"
  del tensors[name]
  safetensors_np.save_file(tensors, st, metadata={"format": "pt"})
  with pytest.raises(CheckpointError, match=f"missing tensor '{name}'"):
    load_hf_checkpoint(path)


def test_error_shape_mismatch(hf_t5_factory, tmp_path):
  path = _copy(hf_t5_factory(seed=0, **V10)[0], tmp_path)
  _edit_config(path, d_ff=41)
  with pytest.raises(CheckpointError, match=r"DenseReluDense\.wi\.weight.*\(40, 24\).*\(41, 24\)"):
    load_hf_checkpoint(path)


def test_error_no_safetensors(tmp_path, hf_t5_factory):
  path = _copy(hf_t5_factory(seed=0, **V10)[0], tmp_path)
  os.remove(os.path.join(path, "model.safetensors"))
  with pytest.raises(CheckpointError, match="model.safetensors"):
    load_hf_checkpoint(path)
  with pytest.raises(CheckpointError, match="config.json: not found"):
    load_hf_checkpoint(str(tmp_path / "nowhere"))


def test_error_bad_json(tmp_path, hf_t5_factory):
  path = _copy(hf_t5_factory(seed=0, **V10)[0], tmp_path)
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write('{"model_type": "t5",\n  "d_model": }')
  with pytest.raises(CheckpointError, match="config.json: line 2"):
    load_hf_checkpoint(path)
