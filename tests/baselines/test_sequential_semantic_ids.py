"""Baselines and analyses that read rec histories, on semantic-ID data: a semantic dataset spells
each history item as its code tokens, and must give the same item histories (and so the same
SASRec / BERT4Rec runs) as the atomic-ID dataset of the same sessions."""

import types

import numpy as np
import pytest

from configs import base
from gr_jax.analysis import cooccurrence
from gr_jax.baselines import sequential
from gr_jax.data.dataset import ProcessedDataset
from gr_jax.data.prepare import prepare_dataset

SPLITS = ("train", "valid", "test")


def _data_config(id_scheme):
  c = base.get_config()
  c.seed = 0
  c.eval.ks = (1, 5, 10)
  c.data.sim.num_items = 40
  c.data.sim.num_users = 60
  c.data.sim.num_clusters = 4
  c.data.tokenizer.vocab_size = 64
  # 5 history items fit both schemes: 5 atomic tokens, or 5 IDs of up to 3 code tokens, + EOS.
  c.data.encoder_len = 16
  c.data.max_history = 5
  c.data.id_scheme = id_scheme
  c.data.semantic.update({"levels": 2, "codebook_size": 4, "content_dim": 16, "kmeans_iters": 10})
  return c


@pytest.fixture(scope="module")
def both(tmp_path_factory):
  """{"atomic": dataset, "semantic": dataset}: the same simulated sessions under each scheme."""
  out = {}
  for scheme in ("atomic", "semantic"):
    d = tmp_path_factory.mktemp(scheme) / "data"
    prepare_dataset(_data_config(scheme), str(d))
    out[scheme] = ProcessedDataset(str(d))
  return out


def test_semantic_rec_rows_read_back_as_the_atomic_histories(both):
  a, s = both["atomic"], both["semantic"]
  assert s.catalog.tokens_per_item > 1 and a.catalog.item_ids == s.catalog.item_ids
  assert a.manifest["rec_max_history"] == s.manifest["rec_max_history"] == 5
  for split in SPLITS:
    ra, rs = a.split("rec", split), s.split("rec", split)
    np.testing.assert_array_equal(ra["target_item"], rs["target_item"])
    ha = a.catalog.histories(ra["encoder_input_ids"])
    hs = s.catalog.histories(rs["encoder_input_ids"])
    assert [h.tolist() for h in ha] == [h.tolist() for h in hs]
    assert max(len(h) for h in hs) == 5
  # Without the manifest's cap the longest history counts items, not code tokens.
  for ds in (a, s):
    bare = types.SimpleNamespace(catalog=ds.catalog, manifest={})
    assert sequential.max_history_of(bare, ds.split("rec", "train")) == 5
  # H2's related pairs for search predictions come from the rec sessions: the same items.
  assert cooccurrence.related_pairs(s, "search") == cooccurrence.related_pairs(a, "search")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sasrec", "bert4rec"])
def test_sequential_runs_are_the_same_on_both_schemes(both, kind, tmp_path):
  out = {}
  for scheme, ds in both.items():
    c = _data_config(scheme)
    s = c.baselines[kind]
    s.hidden_size, s.num_layers, s.num_heads, s.ffn_size, s.max_len = 16, 1, 1, 16, 6
    s.batch_size, s.num_steps = 32, 12
    s.eval_every_steps, s.checkpoint_every_steps, s.log_every_steps = 12, 12, 6
    out[scheme] = sequential.run_sequential(kind, c, ds, str(tmp_path / scheme), "test")
  a, s = out["atomic"], out["semantic"]
  # Same item sequences, seed and model: the same training and the same test ranking.
  assert s["info"]["train_sequences"] == a["info"]["train_sequences"]
  assert s["info"]["valid"] == a["info"]["valid"]
  assert s["rec"] == a["rec"]
  assert (tmp_path / "semantic" / "eval" / "test" / "rec.run").read_text() == (
    tmp_path / "atomic" / "eval" / "test" / "rec.run"
  ).read_text()
