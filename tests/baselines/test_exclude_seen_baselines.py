"""eval.exclude_seen in every baseline that ranks rec items (popularity, SASRec, BERT4Rec, the
bi-encoder in rec mode): each rec query's list is the unmasked ranking without its own history
items, topped up from further down; search lists do not change; metrics.json records the flag.

The trained baselines run with 0 epochs (their initial parameters: any scores serve) on the shared
small prepared dataset, then evaluate the same checkpoint under both protocols."""

import json
import os

import pytest

from gr_jax.baselines import biencoder, popularity, sequential
from gr_jax.data.dataset import ProcessedDataset
from gr_jax.evaluation import metrics as metrics_lib
from gr_jax.evaluation import runs


@pytest.fixture(scope="module")
def ds(prepared):
  return ProcessedDataset(prepared[1])


def _histories(ds, task="rec", split="test"):
  """query id -> its history item ids, read back from the materialised encoder rows."""
  arrays = ds.split(task, split)
  qids, first = runs.split_queries(arrays)
  rows = ds.catalog.histories(arrays["encoder_input_ids"][first])  # token rows, not the sessions
  return {q: {ds.catalog.item_id(int(i)) for i in h} for q, h in zip(qids, rows)}


def _ranked(run_dir, task="rec", split="test"):
  run = runs.read_run(os.path.join(run_dir, "eval", split, f"{task}.run"))
  return {q: metrics_lib.rank_items(scores) for q, scores in run.items()}


def _info(run_dir, split="test"):
  with open(os.path.join(run_dir, "eval", split, "metrics.json")) as f:
    return json.load(f)["info"]


def _check(full, masked, hists, k):
  """masked[q] == full[q] minus the history items, first k; some query lost an item."""
  assert set(masked) == set(full) == set(hists)
  changed = 0
  for q, ranked in masked.items():
    want = [d for d in full[q] if d not in hists[q]][:k]
    assert ranked == want, q
    changed += full[q][:k] != want
  assert changed > 0  # the check is not vacuous: histories do reach the top k


def _config(prepared, exclude_seen, ks):
  c = prepared[0].copy_and_resolve_references()
  c.eval.ks = ks
  c.eval.exclude_seen = exclude_seen
  return c


def test_popularity_excludes_history_items(ds, tmp_path):
  n = ds.num_items
  hists = _histories(ds)
  full = popularity.write_popularity_runs(ds, str(tmp_path / "all"), "test", ks=(1, n))
  masked = popularity.write_popularity_runs(
    ds, str(tmp_path / "seen"), "test", ks=(1, 10), exclude_seen=True
  )
  for name in popularity.BASELINES:
    a, b = str(tmp_path / "all" / name), str(tmp_path / "seen" / name)
    _check(_ranked(a), _ranked(b), hists, 10)
    # search: the same list as without the option (its top 10)
    top = {q: r[:10] for q, r in _ranked(a, "search").items()}
    assert _ranked(b, "search") == top
    assert _info(a)["exclude_seen"] is False and _info(b)["exclude_seen"] is True
    assert masked[name]["info"]["exclude_seen"] is True and not full[name]["info"]["exclude_seen"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sasrec", "bert4rec"])
def test_sequential_excludes_history_items(prepared, ds, kind, tmp_path):
  n, out = ds.num_items, str(tmp_path / kind)
  over = dict(hidden_size=16, num_layers=1, num_heads=1, ffn_size=16, max_len=8, num_epochs=0)
  configs = [_config(prepared, False, (1, n)), _config(prepared, True, (1, 10))]
  for c in configs:
    c.baselines[kind].update(over)
  sequential.run_sequential(kind, configs[0], ds, out, "test")
  full = _ranked(out)
  assert _info(out)["exclude_seen"] is False
  sequential.run_sequential(kind, configs[1], ds, out, "test")  # the same (reloaded) model
  _check(full, _ranked(out), _histories(ds), 10)
  assert _info(out)["exclude_seen"] is True


@pytest.mark.slow
def test_biencoder_rec_excludes_history_items(prepared, ds, tmp_path):
  n, out = ds.num_items, str(tmp_path / "bi")
  configs = [_config(prepared, False, (1, n)), _config(prepared, True, (1, 10))]
  for c in configs:
    c.baselines.biencoder.update(
      dict(tasks="search,rec", num_epochs=0, overrides={"num_encoder_layers": 1})
    )
  biencoder.run_biencoder(configs[0], ds, out, "test")
  full, full_search = _ranked(out), _ranked(out, "search")
  biencoder.run_biencoder(configs[1], ds, out, "test")
  _check(full, _ranked(out), _histories(ds), 10)
  assert _ranked(out, "search") == {q: r[:10] for q, r in full_search.items()}
  assert _info(out)["exclude_seen"] is True
