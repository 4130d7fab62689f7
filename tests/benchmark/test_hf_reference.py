"""The Hugging Face side runs the same shapes: parameter counts agree, records are complete."""

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gr_jax.bench import hf_reference  # noqa: E402  (after the importorskips)
from gr_jax.bench import protocol  # noqa: E402


@pytest.mark.parametrize("preset", ["tiny", "small", "flan-t5-small"])
def test_hf_model_has_our_parameter_count(preset):
  from flax import nnx  # pylint: disable=g-import-not-at-top

  model = pytest.importorskip("gr_jax.model")
  cfg = model.T5Config.from_preset(preset, num_item_tokens=37)
  ours = nnx.eval_shape(lambda: model.T5(cfg, rngs=nnx.Rngs(0)))
  with torch.device("meta"):  # shapes only, no memory
    hf = transformers.T5ForConditionalGeneration(hf_reference.hf_config(cfg))
  assert hf.config.vocab_size == cfg.total_vocab_size
  n_hf = sum(p.numel() for p in hf.parameters())  # tied weights are counted once
  assert model.count_params(ours) == n_hf


def test_random_batch_layout():
  model = pytest.importorskip("gr_jax.model")
  cfg = model.T5Config.from_preset("tiny", num_item_tokens=10)
  b = hf_reference.random_batch(cfg, 3, 5, 2, seed=1, num_items=10)
  assert b["encoder_input_ids"].shape == (3, 5) and b["encoder_input_ids"].min() >= 3
  assert (b["decoder_target_ids"][:, 0] >= cfg.vocab_size).all()  # item tokens
  assert (b["decoder_target_ids"][:, -1] == 1).all()  # </s>
  assert (b["decoder_input_ids"][:, 0] == 0).all()
  assert (b["decoder_input_ids"][:, 1] == b["decoder_target_ids"][:, 0]).all()


def test_hf_train_record_on_tiny_shapes():
  model = pytest.importorskip("gr_jax.model")
  cfg = model.T5Config.from_preset("tiny", num_item_tokens=20)
  rec = hf_reference.train_benchmark(
    cfg,
    batch_size=2,
    encoder_len=4,
    decoder_len=2,
    num_items=20,
    warmup=1,
    repeats=2,
    device="cpu",
    flops_per_example=1e6,
  )
  back = json.loads(json.dumps(rec))
  for f in protocol.RECORD_FIELDS:
    assert f in back, f
  assert back["impl"] == "hf_eager" and back["repeats"] == 2
  assert back["examples_per_s"] == pytest.approx(2 / back["median_step_s"])
  assert back["loss"] == back["loss"]  # finite, not NaN
