"""Dense bi-encoder: learns query words, full-ranking run files, exact resume, tasks switch."""

import functools
import json
import os
import types

import jax
import numpy as np
import pytest
from flax import nnx

from configs import base
from gr_jax.baselines import biencoder, runner
from gr_jax.data.catalog import ItemCatalog
from gr_jax.data.dataset import ProcessedDataset
from gr_jax.data.prepare import rec_splits  # the real leave-last-out layout
from gr_jax.data.raw import SPLITS
from gr_jax.evaluation import metrics as metrics_lib
from gr_jax.evaluation import runs

N_ITEMS = 40
WORDS_PER_ITEM = 3
N_NOISE = 8  # words shared by every item's queries
OFFSET = 3 + N_ITEMS * WORDS_PER_ITEM + N_NOISE  # text vocabulary = first item token


class _Tok:
  """Word-level stand-in for the SentencePiece tokenizer: word w<i> is id 3 + i; 0 pad, 1 EOS."""

  def encode_padded(self, texts, length, max_tokens=None):
    out = np.zeros([len(texts), length], np.int32)
    for r, t in enumerate(texts):
      ids = [3 + int(w[1:]) for w in t.split()][: length - 1] + [1]
      out[r, : len(ids)] = ids
    return out


def _item_words(i):
  return [3 + i * WORDS_PER_ITEM + j for j in range(WORDS_PER_ITEM)]


def _search_split(rng, queries_per_item, length=6, qid0=0):
  """Each query: two of its item's three words and one shared noise word, shuffled."""
  rows, targets = [], []
  for i in range(N_ITEMS):
    for _ in range(queries_per_item):
      words = list(rng.choice(_item_words(i), 2, replace=False))
      words.append(3 + N_ITEMS * WORDS_PER_ITEM + int(rng.integers(N_NOISE)))
      rng.shuffle(words)
      rows.append(words + [1] + [0] * (length - 4))
      targets.append(i)
  n = len(rows)
  return {
    "encoder_input_ids": np.asarray(rows, np.int32),
    "target_item": np.asarray(targets, np.int32),
    "query_id": np.arange(qid0, qid0 + n, dtype=np.int32),
  }


class _Dataset:
  """Duck-typed ProcessedDataset: word queries -> items, and successor sessions for rec."""

  def __init__(self, seed=0):
    rng = np.random.default_rng(seed)
    titles = [" ".join(f"w{t - 3}" for t in _item_words(i)) for i in range(N_ITEMS)]
    self.catalog = ItemCatalog(
      [f"i{i:02d}" for i in range(N_ITEMS)], token_offset=OFFSET, titles=titles
    )
    self.tokenizer = _Tok()
    self._splits = {
      ("search", s): _search_split(rng, q) for s, q in (("train", 8), ("valid", 1), ("test", 2))
    }
    # Item 1's first test query becomes item 0's first (same id and input): two relevant items.
    t = self._splits[("search", "test")]
    t["encoder_input_ids"][2] = t["encoder_input_ids"][0]
    t["query_id"][2] = t["query_id"][0]
    sessions = [[(u * 7 + j) % N_ITEMS for j in range(8)] for u in range(60)]
    dc = types.SimpleNamespace(encoder_len=8, max_history=6)
    rec = rec_splits(sessions, self.catalog, dc)
    self._splits.update({("rec", s): a for s, a in rec.items()})

  @property
  def num_items(self):
    return self.catalog.num_items

  def split(self, task, split):
    return self._splits[(task, split)]


@pytest.fixture(scope="module")
def ds():
  return _Dataset()


def tiny_config(**over):
  c = base.get_config()
  c.seed = 0
  c.eval.ks = (1, 5, 10)
  s = c.baselines.biencoder
  s.overrides = {"num_encoder_layers": 1}
  s.batch_size, s.learning_rate, s.warmup_fraction = 64, 3e-3, 0.05
  s.eval_every_steps, s.checkpoint_every_steps, s.log_every_steps = 100, 100, 10
  s.eval_batch_size = 64
  for k, v in over.items():
    s[k] = v
  return c


@functools.lru_cache(maxsize=8)
def _tower(graphdef):
  """The model's input tower `(params, ids) -> [B, dim]` (eval mode, before normalisation),
  compiled once per graph: called eagerly, each of its ops would compile on its own (seconds)."""
  return jax.jit(lambda p, x: nnx.merge(graphdef, p).embed(x))


def _embed(res, ids):
  return np.asarray(_tower(res.graphdef)(res.params, np.asarray(ids)), np.float64)


def _check_run_files(ds, c, out, task, summary):
  """TREC files: qrels from the split, K items per query, metrics.json = a recomputation."""
  d = out / "eval" / "test"
  run, qrels = runs.read_run(d / f"{task}.run"), runs.read_qrels(d / f"{task}.qrels")
  assert qrels == runs.qrels_from_split(ds.split(task, "test"), ds.catalog.item_ids)
  assert set(run) == set(qrels) and all(len(v) == max(c.eval.ks) for v in run.values())
  means, _ = metrics_lib.evaluate_run(qrels, run, c.eval.ks)
  saved, per_query = runs.load_eval(str(out), "test")
  for k, v in means.items():
    assert saved[task][k] == pytest.approx(v, abs=1e-12) == summary[task][k]
  assert task in per_query
  return run


@pytest.mark.slow
def test_learns_query_words_and_writes_full_rankings(ds, tmp_path):
  c = tiny_config(num_steps=120)
  out = tmp_path / "bi"
  summary = biencoder.run_biencoder(c, ds, str(out), "test")
  assert summary["search"]["recall@10"] > 0.9, summary
  assert summary["info"]["valid"]["search"]["recall@10"] > 0.9
  assert "rec" not in summary  # tasks = "search"
  for name in ("config.json", "metrics.jsonl", "checkpoints"):
    assert os.path.exists(out / name)
  run = _check_run_files(ds, c, out, "search", summary)
  assert len(runs.read_qrels(out / "eval" / "test" / "search.qrels")["0"]) == 2
  # The written top 10 is the model's own full ranking: a rerun of the finished run reloads the
  # final checkpoint (nothing retrained); score every item with that model directly (numpy).
  res = biencoder.train_biencoder(c, ds, str(out))
  assert res.summary["resumed_from"] == res.summary["steps"] == 120
  arrays = ds.split("search", "test")
  qids, first = runs.split_queries(arrays)
  q = _embed(res, arrays["encoder_input_ids"][first])  # [Q, D]
  table = np.asarray(res.params["item_emb"], np.float64)  # [n, D]
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  scores = unit(q) @ unit(table).T  # [Q, n] cosine
  ids = ds.catalog.item_ids
  for r, qid in enumerate(qids):
    full = {ids[i]: float(s) for i, s in enumerate(scores[r])}
    assert metrics_lib.rank_items(run[qid]) == metrics_lib.rank_items(full)[:10]
    assert all(abs(run[qid][x] - full[x]) < 1e-5 for x in run[qid])
  # item_embeddings: catalogue order, [n, dim], the same from the run directory as from memory.
  emb = biencoder.item_embeddings(str(out), ds)
  assert emb.shape == (N_ITEMS, 32) and emb.dtype == np.float32
  np.testing.assert_allclose(emb, unit(table), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(emb, biencoder.item_embeddings(res, ds))
  # metrics.jsonl: loss lines and one validation record per eval period.
  recs = [json.loads(l) for l in open(out / "metrics.jsonl")]
  assert [r["step"] for r in recs if r.get("split") == "valid"] == [100, 120]
  assert recs[0]["loss"] > recs[-2]["loss"]


def test_in_batch_loss_masks_the_rows_other_positives(ds):
  c = tiny_config()
  cfg, s = biencoder._section(c)
  graphdef, init = biencoder._init_fn(
    biencoder.encoder_config(cfg, ds, s.tasks), N_ITEMS, 0, "embedding"
  )
  params = init(np.uint32(0))
  a = ds.split("search", "train")
  # Rows 0, 1: item 0 (two queries); 2, 3: item 1; 4: item 2; 5: row 0's query with another
  # relevant item (3); 6: batch padding.
  ids = np.concatenate(
    [
      a["encoder_input_ids"][[0, 1, 8, 9, 16, 0]],
      np.zeros([1, a["encoder_input_ids"].shape[1]], np.int32),
    ]
  )
  targets = np.asarray([0, 0, 1, 1, 2, 3, 0], np.int32)
  groups = np.concatenate([np.unique(ids[:6], axis=0, return_inverse=True)[1].reshape(-1), [-1]])
  valid = np.asarray([True] * 6 + [False])
  loss_fn = jax.jit(lambda p, *a: biencoder.batch_loss(nnx.merge(graphdef, p), s, *a, None))
  got = float(
    loss_fn(params, ids, targets, groups.astype(np.int32), valid, np.zeros([1, 1], np.int32))
  )  # eval mode (no dropout)
  # Reference: cosine / temperature against the batch's targets; a candidate j != i is dropped
  # when it shares row i's target or input, or is padding.
  q = np.asarray(_tower(graphdef)(params, ids), np.float64)
  e = np.asarray(params["item_emb"], np.float64)[targets]
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  logits = unit(q) @ unit(e).T / s.temperature

  def loss(masked):
    nll = []
    for i in range(6):
      keep = [
        j
        for j in range(7)
        if j == i
        or not masked
        or (targets[j] != targets[i] and groups[j] != groups[i] and valid[j])
      ]
      row = logits[i, keep]
      nll.append(np.log(np.sum(np.exp(row - row.max()))) + row.max() - logits[i, i])
    return float(np.mean(nll))

  assert got == pytest.approx(loss(True), rel=1e-4)
  assert abs(loss(True) - loss(False)) > 1e-2  # the masking changes the value


class _Stop(Exception):
  pass


def test_resume_gives_the_same_parameters(ds, tmp_path):
  c = tiny_config(
    num_steps=12,
    checkpoint_every_steps=5,
    log_every_steps=1,
    eval_every_steps=4,
    warmup_fraction=0.3,
  )
  full = biencoder.train_biencoder(c, ds, str(tmp_path / "a"))

  def stop(step):
    if step == 8:  # checkpoints at 5 exist, not at 8: the rerun redoes steps 6..8
      raise _Stop()

  with pytest.raises(_Stop):
    biencoder.train_biencoder(c, ds, str(tmp_path / "b"), step_callback=stop)
  resumed = biencoder.train_biencoder(c, ds, str(tmp_path / "b"))
  assert resumed.summary["resumed_from"] == 5
  flat_a, flat_b = jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)
  assert len(flat_a) == len(flat_b) > 0
  for x, y in zip(flat_a, flat_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # The comparison can fail: training moved the parameters away from the initial ones.
  cfg, s = biencoder._section(c)
  _, init = biencoder._init_fn(biencoder.encoder_config(cfg, ds, s.tasks), N_ITEMS, 0, "embedding")
  init_leaves = jax.tree.leaves(init(np.uint32(0)))
  assert not all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(flat_a, init_leaves))
  read = lambda p: [json.loads(l) for l in open(p)]
  assert read(tmp_path / "a" / "metrics.jsonl") == read(tmp_path / "b" / "metrics.jsonl")
  with pytest.raises(ValueError, match="another biencoder config"):
    biencoder.train_biencoder(tiny_config(num_steps=12, temperature=0.1), ds, str(tmp_path / "b"))


@pytest.mark.slow
def test_rec_only_learns_successors_and_writes_rec_files(ds, tmp_path):
  # No dropout here and in the joint test: its random bits triple the step's compile time on CPU
  # (the tests above train with dropout).
  c = tiny_config(tasks="rec", num_steps=100, loss="full", dropout=0.0)
  out = tmp_path / "rec"
  summary = biencoder.run_biencoder(c, ds, str(out), "test")
  assert set(summary) == {"rec", "info"}
  assert summary["rec"]["recall@10"] > 0.9, summary
  assert sorted(os.listdir(out / "eval" / "test")) == [
    "metrics.json",
    "per_query.json",
    "rec.qrels",
    "rec.run",
  ]
  _check_run_files(ds, c, out, "rec", summary)
  assert runner.baseline_tasks("biencoder", c) == ("rec",)


def test_tasks_parse_and_refuse():
  assert biencoder.parse_tasks("rec,search") == ("search", "rec")
  assert biencoder.parse_tasks(" search ") == ("search",)
  for bad in ("", "search,search", "recs", ()):
    with pytest.raises(ValueError, match="tasks"):
      biencoder.parse_tasks(bad)
  c = tiny_config(loss="full", item_tower="text")
  with pytest.raises(ValueError, match="in_batch"):
    biencoder.settings_of(c.baselines.biencoder)


@pytest.mark.slow
def test_joint_text_tower_through_the_runner(prepared, tmp_path):
  c, data_dir = prepared
  c.eval.ks = (1, 5, 10)
  s = c.baselines.biencoder
  s.tasks, s.item_tower, s.projection_dim, s.item_text_len = "search,rec", "text", 16, 12
  s.overrides, s.dropout = {"num_encoder_layers": 1}, 0.0
  s.num_steps, s.batch_size, s.eval_batch_size, s.log_every_steps = 20, 64, 64, 10
  out = tmp_path / "joint"
  summary = runner.run_baseline("biencoder", c, data_dir, str(out), "test")
  assert runner.baseline_tasks("biencoder", c) == ("search", "rec")
  assert sorted(os.listdir(out / "eval" / "test")) == [
    "metrics.json",
    "per_query.json",
    "rec.qrels",
    "rec.run",
    "search.qrels",
    "search.run",
  ]
  ds = ProcessedDataset(data_dir)
  assert summary["info"]["train_examples"] == {
    t: len(ds.split(t, "train")["target_item"]) for t in ("search", "rec")
  }
  for task in ("search", "rec"):
    _check_run_files(ds, c, out, task, summary)
  # item_embeddings: [n, 16] in catalogue order: row i is the tower over item i's own text.
  emb = biencoder.item_embeddings(str(out), ds)
  assert emb.shape == (ds.num_items, 16)
  res = biencoder.load_run(str(out), ds)
  tokens = biencoder.item_text_tokens(ds, 12)
  assert tokens.shape[0] == ds.num_items and len({r.tobytes() for r in tokens}) > 1
  order = np.random.default_rng(0).permutation(ds.num_items)[:8]
  got = _embed(res, tokens[order])
  got = got / np.linalg.norm(got, axis=1, keepdims=True)
  np.testing.assert_allclose(emb[order], got, rtol=1e-4, atol=1e-5)
  # The written scores are these vectors' cosines: the run's top item of a query scores as
  # query vector . item vector (catalogue order also on the scoring side).
  arrays = ds.split("rec", "test")
  qids, first = runs.split_queries(arrays)
  q = _embed(res, arrays["encoder_input_ids"][first][:3])
  q = q / np.linalg.norm(q, axis=1, keepdims=True)
  run = runs.read_run(out / "eval" / "test" / "rec.run")
  for r in range(3):
    for item, score in run[qids[r]].items():
      assert score == pytest.approx(float(q[r] @ emb[ds.catalog.index(item)]), abs=1e-5)


def _reference_groups(rows):
  """np.unique over the materialised rows: the grouping `_input_groups` must reproduce."""
  return np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1)


def _same_partition(a, b):
  """Whether two id arrays put the same rows together (the ids themselves may differ)."""
  pairs = set(zip(np.asarray(a).tolist(), np.asarray(b).tolist()))
  return len(pairs) == len(set(np.asarray(a).tolist())) == len(set(np.asarray(b).tolist()))


@pytest.mark.parametrize("tasks", [("search",), ("rec",), ("search", "rec")])
def test_train_rows_and_groups_match_the_materialised_rows(ds, tasks, monkeypatch):
  length = biencoder.input_len(ds, tasks)
  every = [np.asarray(ds.split(t, s)["encoder_input_ids"]) for t in tasks for s in SPLITS]
  assert length == max(int(np.flatnonzero(f.any(0))[-1]) + 1 for f in every)
  full = [np.asarray(ds.split(t, "train")["encoder_input_ids"]) for t in tasks]
  # (this fixture's search rows are narrower than its rec rows: padded to the common length)
  want = np.concatenate(
    [np.pad(f, [(0, 0), (0, max(0, length - f.shape[1]))])[:, :length] for f in full]
  )
  data = biencoder._TrainRows(ds, tasks, length)
  assert len(data) == len(want)
  idx = np.random.default_rng(0).permutation(len(want) + 1)  # shuffled, with the padding row
  got = data.rows(idx)
  assert np.array_equal(got[idx < len(want)], want[idx[idx < len(want)]])
  assert not got[idx == len(want)].any()
  ref = _reference_groups(want)
  assert len(set(ref.tolist())) < len(want)  # the fixture repeats some inputs
  monkeypatch.setattr(biencoder, "_ROW_BLOCK", 7)  # several blocks, a short last one
  assert _same_partition(biencoder._input_groups(data), ref)


def test_input_groups_hash_collision_falls_back_to_exact_groups(ds, monkeypatch):
  tasks = ("search", "rec")
  data = biencoder._TrainRows(ds, tasks, biencoder.input_len(ds, tasks))
  ref = _reference_groups(data.rows(np.arange(len(data))))
  # A "hash" of the row count only: every row collides with every other one.
  monkeypatch.setattr(biencoder.np, "unique", _collide_then_unique(np.unique))
  assert _same_partition(biencoder._input_groups(data), ref)


def _collide_then_unique(unique):
  """np.unique whose first call (the hashes) sees all keys equal; later calls are untouched."""
  calls = []

  def fake(x, *args, **kwargs):
    if not calls:
      calls.append(1)
      x = np.zeros_like(x)
    return unique(x, *args, **kwargs)

  return fake


@pytest.mark.slow
def test_training_logs_progress_with_an_eta(ds, tmp_path, caplog):
  """Every `log_every_steps` (and at the end) a progress line as the trainer's, with an ETA."""
  import logging  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top

  c = tiny_config(num_steps=5, log_every_steps=2, dropout=0.0)
  with caplog.at_level(logging.INFO, logger="gr_jax.baselines.biencoder"):
    biencoder.train_biencoder(c, ds, str(tmp_path))
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("biencoder: step ")]
  assert [int(re.match(r"biencoder: step (\d+)/5 ", l).group(1)) for l in lines] == [2, 4, 5]
  pattern = r"biencoder: step \d+/5 \(epoch [\d.]+\) loss [\d.]+ \| [\d.]+ ex/s ETA \d+:\d\d:\d\d$"
  assert all(re.match(pattern, l) for l in lines), lines
