"""gr_jax beam search vs transformers 4.56 `generate` on tiny random T5 models."""

import hf_reference as ref
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gr_jax.decoding import AtomicItemConstraint, beam_search, trace_count  # noqa: E402
from gr_jax.model import load_hf_checkpoint  # noqa: E402

IDS = np.array([[5, 6, 7, 1, 0], [3, 9, 1, 0, 0], [4, 4, 8, 10, 1]], np.int64)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  torch.manual_seed(0)
  cfg = transformers.T5Config(
    vocab_size=14,
    d_model=16,
    d_kv=8,
    d_ff=32,
    num_layers=2,
    num_decoder_layers=2,
    num_heads=2,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
    dropout_rate=0.0,
  )
  hf = transformers.T5ForConditionalGeneration(cfg).eval()
  with torch.no_grad():
    hf.shared.weight.mul_(3.0)  # peakier distributions: EOS wins at different steps
  path = tmp_path_factory.mktemp("t5")
  hf.save_pretrained(path)
  return hf, load_hf_checkpoint(str(path))


def hf_generate(hf, n, g, dp, lp, early, l, r, allowed=None):
  kw = dict(
    num_beams=n,
    do_sample=False,
    return_dict_in_generate=True,
    output_scores=True,
    max_new_tokens=l,
    num_return_sequences=r,
    length_penalty=lp,
    early_stopping=early,
  )
  if g > 1:
    kw.update(num_beam_groups=g, diversity_penalty=dp)
  if allowed is not None:
    kw["prefix_allowed_tokens_fn"] = allowed
  with torch.no_grad():
    out = hf.generate(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(IDS != 0), **kw)
  seqs = out.sequences.numpy()[:, 1:].reshape(len(IDS), r, -1)
  # Our layout: max_new_tokens columns, pad after the first EOS (HF's _beam_search fills with
  # EOS instead of pad when pad_token_id == 0; group search pads).
  full = np.zeros((len(IDS), r, l), np.int64)
  full[..., : seqs.shape[-1]] = seqs
  full[np.cumsum(np.cumsum(full == 1, -1), -1) > 1] = 0
  return full, out.sequences_scores.numpy().reshape(len(IDS), r)


CONFIGS = [  # (num_beams, groups, diversity_penalty, length_penalty, early_stopping, max_new)
  (4, 1, 0.0, 1.0, False, 5),
  (6, 1, 0.0, 0.0, "never", 4),
  (6, 3, 0.5, 1.0, False, 5),
  (6, 2, 1.5, 0.0, True, 4),
  (8, 4, 0.7, 2.0, "never", 5),
  (4, 2, 0.3, -1.0, False, 6),
]


@pytest.mark.slow
@pytest.mark.parametrize("n,g,dp,lp,early,l", CONFIGS)
def test_matches_transformers(models, n, g, dp, lp, early, l):
  hf, model = models
  r = n // 2
  want_s, want_sc = hf_generate(hf, n, g, dp, lp, early, l, r)
  got_s, got_sc = beam_search(
    model,
    IDS,
    num_beams=n,
    num_beam_groups=g,
    diversity_penalty=dp,
    length_penalty=lp,
    max_new_tokens=l,
    num_return_sequences=r,
    early_stopping=early,
  )
  np.testing.assert_array_equal(np.asarray(got_s), want_s)
  np.testing.assert_allclose(np.asarray(got_sc), want_sc, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_groups_finish_at_different_steps_and_cache_modes_agree(models):
  hf, model = models
  n, g, dp, lp, l, r = 6, 3, 0.5, 1.0, 5, 6
  want_s, want_sc = hf_generate(hf, n, g, dp, lp, False, l, r)
  lengths = (want_s != 0).sum(-1)
  assert len(np.unique(lengths)) >= 2  # EOS at several steps, so groups finish apart
  for use_cache in (False, True):
    got_s, got_sc = beam_search(
      model,
      IDS,
      num_beams=n,
      num_beam_groups=g,
      diversity_penalty=dp,
      length_penalty=lp,
      max_new_tokens=l,
      num_return_sequences=r,
      use_cache=use_cache,
      one_hot_gather=not use_cache,
    )
    np.testing.assert_array_equal(np.asarray(got_s), want_s)
    np.testing.assert_allclose(np.asarray(got_sc), want_sc, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_reference_matches_transformers(models):
  # The NumPy re-statement used by the model-free tests agrees with transformers itself.
  hf, _ = models

  def logits_fn(row, prefix):
    with torch.no_grad():
      out = hf(
        input_ids=torch.tensor(IDS[row : row + 1]),
        attention_mask=torch.tensor(IDS[row : row + 1] != 0),
        decoder_input_ids=torch.tensor([prefix]),
      )
    return out.logits[0, -1].numpy()

  for n, g, dp, lp, early, l in [CONFIGS[0], CONFIGS[3]]:
    r = n // 2
    want = hf_generate(hf, n, g, dp, lp, early, l, r)
    if g == 1:
      got = ref.beam_search(
        logits_fn,
        len(IDS),
        num_beams=n,
        length_penalty=lp,
        max_new_tokens=l,
        num_return_sequences=r,
        early_stopping=early,
      )
    else:
      got = ref.group_beam_search(
        logits_fn,
        len(IDS),
        num_beams=n,
        num_beam_groups=g,
        diversity_penalty=dp,
        length_penalty=lp,
        max_new_tokens=l,
        num_return_sequences=r,
        early_stopping=early,
      )
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_atomic_constraint_matches_prefix_allowed_tokens_fn(models):
  hf, model = models
  con = AtomicItemConstraint(token_offset=4, num_items=8, eos_id=1)

  def allowed(batch_id, prefix):
    del batch_id
    return list(range(4, 12)) if len(prefix) == 1 else [1]

  n, g, dp, r = 8, 4, 0.25, 6
  want_s, want_sc = hf_generate(hf, n, g, dp, 1.0, False, 2, r, allowed=allowed)
  got_s, got_sc = beam_search(
    model,
    IDS,
    num_beams=n,
    num_beam_groups=g,
    diversity_penalty=dp,
    max_new_tokens=2,
    num_return_sequences=r,
    constraint=con,
  )
  np.testing.assert_array_equal(np.asarray(got_s), want_s)
  np.testing.assert_allclose(np.asarray(got_sc), want_sc, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_penalties_are_traced_no_recompile(models):
  _, model = models
  kw = dict(num_beams=6, num_beam_groups=3, max_new_tokens=3, num_return_sequences=6)
  before = trace_count()
  outs = [
    beam_search(model, IDS, diversity_penalty=dp, length_penalty=lp, **kw)
    for dp, lp in [(0.5, 1.0), (2.0, 1.0), (0.5, -2.0), (3.0, 0.0)]
  ]
  assert trace_count() - before <= 1  # at most the first call traces (0 if cached already)
  # ... and the values are really used.
  assert not np.allclose(np.asarray(outs[0][1]), np.asarray(outs[1][1]))
  assert not np.allclose(np.asarray(outs[0][1]), np.asarray(outs[2][1]))
