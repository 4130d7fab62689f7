"""SASRec / BERT4Rec: session rebuilding, learning a deterministic successor, resume, run files."""

import json
import os
import types

import jax
import numpy as np
import pytest
from flax import nnx

from configs import base
from gr_jax.baselines import common, sequential
from gr_jax.data.catalog import ItemCatalog
from gr_jax.data.prepare import rec_splits  # the real leave-last-out layout
from gr_jax.evaluation import metrics as metrics_lib
from gr_jax.evaluation import runs

N_ITEMS = 30


class _Dataset:
  """Duck-typed ProcessedDataset holding rec splits only."""

  def __init__(self, sessions, num_items, encoder_len, max_history):
    self.catalog = ItemCatalog([f"i{i}" for i in range(num_items)], token_offset=50)
    dc = types.SimpleNamespace(encoder_len=encoder_len, max_history=max_history)
    self._splits = rec_splits(sessions, self.catalog, dc)
    self.manifest = {"rec_max_history": max(1, min(max_history, encoder_len - 1))}

  @property
  def num_items(self):
    return self.catalog.num_items

  def split(self, task, split):
    assert task == "rec"
    return self._splits[split]


def successor_sessions(num_users=90, length=12, n=N_ITEMS):
  """Item i is always followed by item (i + 1) mod n; sessions start at different items."""
  return [[(u * 7 + j) % n for j in range(length)] for u in range(num_users)]


def tiny_config(kind, **over):
  c = base.get_config()
  c.seed = 0
  c.eval.ks = (1, 5, 10)
  s = c.baselines[kind]
  s.hidden_size, s.num_layers, s.num_heads, s.ffn_size, s.max_len = 32, 1, 1, 32, 8
  s.dropout, s.learning_rate, s.batch_size = 0.1, 1e-2, 64
  s.eval_every_steps, s.checkpoint_every_steps, s.log_every_steps = 100, 100, 10
  for k, v in over.items():
    s[k] = v
  return c


def test_rebuild_sequences_and_windows():
  sessions = successor_sessions(num_users=5, length=11)
  ds = _Dataset(sessions, N_ITEMS, encoder_len=6, max_history=4)  # histories truncated at 4
  train = ds.split("rec", "train")
  hists = ds.catalog.histories(train["encoder_input_ids"])
  assert max(len(h) for h in hists) == 4
  seqs = sequential.rebuild_sequences(hists, train["target_item"], 4)
  # Train part of each session = all but the valid and test items.
  assert [s.tolist() for s in seqs] == [s[:-2] for s in sessions]
  # Without the cap knowledge a truncated row cannot be chained: more, shorter sequences.
  assert len(sequential.rebuild_sequences(hists, train["target_item"], 99)) > len(sessions)
  w = sequential.windows([np.arange(9)], 4, overlap=1)  # SASRec windows of max_len + 1 = 4
  assert w.tolist() == [[6, 7, 8, 9], [3, 4, 5, 6], [0, 1, 2, 3]]  # tokens = item + 1
  w = sequential.windows([np.arange(5)], 4, overlap=0)
  assert w.tolist() == [[2, 3, 4, 5], [0, 0, 0, 1]]
  x = sequential.inference_inputs([np.asarray([3, 4])], 4, "bert4rec", N_ITEMS)
  assert x.tolist() == [[0, 4, 5, N_ITEMS + 1]]
  assert sequential.inference_inputs([np.arange(6)], 4, "sasrec", N_ITEMS).tolist() == [
    [3, 4, 5, 6]
  ]


@pytest.mark.slow
def test_causal_model_ignores_the_future():
  c = tiny_config("sasrec", dropout=0.0)
  m = sequential.build_model("sasrec", c.baselines.sasrec, N_ITEMS, 0)
  a = np.asarray([[0, 0, 3, 4, 5, 6, 7, 8]], np.int32)
  b = a.copy()
  b[0, -1] = 20
  ha, hb = np.asarray(m(a)), np.asarray(m(b))
  # Earlier item positions are unchanged (padding rows 0-1 have no key to attend to; unused).
  np.testing.assert_allclose(ha[:, 2:-1], hb[:, 2:-1], atol=1e-6)
  assert not np.allclose(ha[:, -1], hb[:, -1])
  bi = sequential.build_model("bert4rec", tiny_config("bert4rec").baselines.bert4rec, N_ITEMS, 0)
  assert not np.allclose(np.asarray(bi(a))[:, 3], np.asarray(bi(b))[:, 3])  # bidirectional


@pytest.mark.slow
@pytest.mark.parametrize(
  "kind,over",
  [
    ("sasrec", {"num_steps": 150}),
    ("sasrec", {"num_steps": 150, "loss": "bce"}),
    ("bert4rec", {"num_steps": 300, "mask_ratio": 0.3}),
  ],
)
def test_learns_deterministic_successor(kind, over, tmp_path):
  ds = _Dataset(successor_sessions(), N_ITEMS, encoder_len=12, max_history=10)
  c = tiny_config(kind, **over)
  summary = sequential.run_sequential(kind, c, ds, str(tmp_path), "test")
  assert summary["rec"]["recall@10"] > 0.9, summary
  assert summary["info"]["valid"]["recall@10"] > 0.9
  if kind == "sasrec" and over.get("loss", "ce") == "ce":
    _check_run_files(ds, c, tmp_path, summary, kind)


def _check_run_files(ds, c, workdir, summary, kind):
  d = workdir / "eval" / "test"
  run, qrels = runs.read_run(d / "rec.run"), runs.read_qrels(d / "rec.qrels")
  arrays = ds.split("rec", "test")
  assert qrels == runs.qrels_from_split(arrays, ds.catalog.item_ids)
  assert all(len(v) == max(c.eval.ks) for v in run.values()) and set(run) == set(qrels)
  means, _ = metrics_lib.evaluate_run(qrels, run, c.eval.ks)
  saved, _ = runs.load_eval(str(workdir), "test")
  for k, v in means.items():
    assert saved["rec"][k] == pytest.approx(v, abs=1e-12)
  # The written top 10 is the model's own full ranking: a rerun of the finished run reloads the
  # final checkpoint (nothing retrained); score every item with that model directly.
  res = sequential.train_sequential(kind, c, ds, str(workdir))
  assert res.summary["resumed_from"] == res.summary["steps"]  # loaded, not retrained
  qids, first = runs.split_queries(arrays)
  hist = ds.catalog.histories(arrays["encoder_input_ids"][first])
  x = sequential.inference_inputs(hist, c.baselines[kind].max_len, kind, N_ITEMS)
  scores = np.asarray(res.model.item_logits(res.model(x)[:, -1]))  # [Q, n]
  ids = ds.catalog.item_ids
  for r, qid in enumerate(qids):
    full = {ids[i]: float(s) for i, s in enumerate(scores[r])}
    assert metrics_lib.rank_items(run[qid]) == metrics_lib.rank_items(full)[:10]
  for name in ("config.json", "metrics.jsonl"):
    assert os.path.exists(workdir / name)


class _Stop(Exception):
  pass


def _params(model):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))


@pytest.mark.slow
def test_resume_gives_the_same_parameters(tmp_path):
  ds = _Dataset(successor_sessions(num_users=40), N_ITEMS, encoder_len=12, max_history=10)
  c = tiny_config(
    "sasrec",
    num_steps=12,
    checkpoint_every_steps=5,
    log_every_steps=1,
    eval_every_steps=4,
    dropout=0.3,
  )
  full = sequential.train_sequential("sasrec", c, ds, str(tmp_path / "a"))

  def stop(step):
    if step == 8:  # checkpoints at 5 exist, not at 8: the rerun redoes steps 6..8
      raise _Stop()

  with pytest.raises(_Stop):
    sequential.train_sequential("sasrec", c, ds, str(tmp_path / "b"), step_callback=stop)
  resumed = sequential.train_sequential("sasrec", c, ds, str(tmp_path / "b"))
  assert resumed.summary["resumed_from"] == 5
  pa, pb = _params(full.model), _params(resumed.model)
  flat_a, flat_b = jax.tree.leaves(pa), jax.tree.leaves(pb)
  assert len(flat_a) == len(flat_b) > 0
  for x, y in zip(flat_a, flat_b):
    np.testing.assert_array_equal(x, y)
  # The comparison can fail: the initial parameters differ from the trained ones.
  _, init = sequential.init_params("sasrec", c.baselines.sasrec, N_ITEMS, 0)
  assert not all(np.array_equal(x, y) for x, y in zip(flat_a, jax.tree.leaves(init)))
  # metrics.jsonl of the resumed run: same records as the uninterrupted one, no duplicates.
  read = lambda p: [json.loads(l) for l in open(p)]
  assert read(tmp_path / "a" / "metrics.jsonl") == read(tmp_path / "b" / "metrics.jsonl")


@pytest.mark.slow
def test_config_change_refuses_to_resume(tmp_path):
  ds = _Dataset(successor_sessions(num_users=20), N_ITEMS, encoder_len=12, max_history=10)
  sequential.train_sequential("sasrec", tiny_config("sasrec", num_steps=2), ds, str(tmp_path))
  with pytest.raises(ValueError, match="another sasrec config"):
    sequential.train_sequential(
      "sasrec", tiny_config("sasrec", num_steps=2, hidden_size=16), ds, str(tmp_path)
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sasrec", "bert4rec"])
def test_training_logs_progress_with_an_eta(kind, tmp_path, caplog):
  """Every `log_every_steps` (and at the end) a progress line as the trainer's: step i/n, epoch,
  loss, then "compiling" before the first step is timed, examples/s and an ETA after it."""
  import logging  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top

  ds = _Dataset(successor_sessions(num_users=20), N_ITEMS, encoder_len=12, max_history=10)
  c = tiny_config(kind, num_steps=5, log_every_steps=2)
  with caplog.at_level(logging.INFO, logger="gr_jax.baselines.sequential"):
    sequential.train_sequential(kind, c, ds, str(tmp_path))
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{kind}: step ")]
  assert [int(re.match(rf"{kind}: step (\d+)/5 ", l).group(1)) for l in lines] == [2, 4, 5]
  pattern = rf"{kind}: step \d+/5 \(epoch [\d.]+\) loss [\d.]+ \| [\d.]+ ex/s ETA \d+:\d\d:\d\d$"
  assert all(re.match(pattern, l) for l in lines), lines
  assert lines[-1].endswith("ETA 0:00:00")


def test_validation_period_is_per_epoch_with_at_most_twenty_decodes():
  """0 = once per epoch, but a run of many short epochs validates at most 20 times (validation
  only logs: the final step is the result); an explicit period is kept."""
  assert common.validation_period(0, steps_per_epoch=5, total_steps=100) == 5  # 20 epochs: each
  assert common.validation_period(0, steps_per_epoch=2, total_steps=2000) == 100  # 1000 epochs
  assert common.validation_period(0, steps_per_epoch=3, total_steps=61) == 4  # ceil(61 / 20)
  assert common.validation_period(7, steps_per_epoch=2, total_steps=2000) == 7
  decodes = [s for s in range(1, 2001) if s % common.validation_period(0, 2, 2000) == 0]
  assert len(decodes) == common.MAX_DEFAULT_VALIDATIONS
  # Selecting on validation (select_best): every epoch, uncapped; an explicit period still wins.
  assert common.validation_period(0, steps_per_epoch=2, total_steps=2000, selects=True) == 2
  assert common.validation_period(7, steps_per_epoch=2, total_steps=2000, selects=True) == 7
