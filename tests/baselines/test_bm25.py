"""BM25 baseline: scores against a hand-written BM25 formula, documents, and the run directory."""

import math
import os

import numpy as np
import pytest

from gr_jax.baselines import bm25, common, runner
from gr_jax.data.catalog import ItemCatalog
from gr_jax.data.dataset import ProcessedDataset
from gr_jax.evaluation import metrics as metrics_lib
from gr_jax.evaluation import runs


def reference_bm25(docs, query, k1, b):
  """Lucene-variant BM25 (bm25s method="lucene"), float64, straight from the formula:
  sum over query tokens (repeats count) of ln(1 + (N - df + .5) / (df + .5)) * tf / (tf + k1 L)."""
  n = len(docs)
  avgdl = sum(len(d) for d in docs) / n
  out = []
  for d in docs:
    s = 0.0
    for t in query:
      df = sum(t in x for x in docs)
      tf = d.count(t)
      if df == 0 or tf == 0:  # absent terms add nothing (and an empty doc with b = 1 has L = 0)
        continue
      idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
      s += idf * tf / (tf + k1 * (1 - b + b * len(d) / avgdl))
    out.append(s)
  return np.asarray(out)


def test_scores_equal_the_formula():
  rng = np.random.default_rng(0)
  words = [f"w{i}" for i in range(12)]
  docs = [[str(w) for w in rng.choice(words, size=rng.integers(1, 9))] for _ in range(25)] + [[]]
  for k1, b in ((1.2, 0.75), (0.9, 0.4), (2.0, 1.0)):
    index = bm25.BM25Index(docs, k1=k1, b=b, method="lucene")
    for query in (["w1"], ["w2", "w3", "w2"], ["w5", "oov"], ["oov"], words[:6]):
      got = index.scores(query)
      want = reference_bm25(docs, query, k1, b)
      np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
  # The reference is not vacuous: a different b changes the scores.
  a = bm25.BM25Index(docs, k1=1.2, b=0.75).scores(["w1", "w2"])
  assert not np.allclose(a, reference_bm25(docs, ["w1", "w2"], 1.2, 0.0))


def test_tokenize_and_metadata():
  assert bm25.tokenize("The Matrix (1999), Sci-Fi") == ["the", "matrix", "1999", "sci", "fi"]
  meta = {"genres": ["Action", "Sci-Fi"], "rec_cluster": 3, "artist": "Nina Simone"}
  assert bm25.metadata_text(meta) == "Nina Simone Action Sci-Fi"  # keys sorted, numbers skipped


class _Tok:
  """Word-level stand-in for the SentencePiece tokenizer: ids 3.. are words, 0 pad, 1 EOS."""

  def __init__(self, words):
    self.words = list(words)

  def ids(self, text):
    return [3 + self.words.index(w) for w in text.split()] + [1]

  def decode(self, ids):
    return " ".join(self.words[i - 3] for i in ids if i >= 3)


class _Dataset:
  def __init__(self, splits, titles, metadata, tok):
    self.catalog = ItemCatalog(
      [f"m{i}" for i in range(len(titles))], token_offset=100, titles=titles, metadata=metadata
    )
    self.tokenizer = tok
    self._splits = splits

  def split(self, task, split):
    return self._splits[(task, split)]


def _search(tok, rows, length=6):
  """rows: (query text, target, query id) -> split arrays."""
  ids = np.zeros([len(rows), length], np.int32)
  for r, (q, _, _) in enumerate(rows):
    x = tok.ids(q)
    ids[r, : len(x)] = x
  return {
    "encoder_input_ids": ids,
    "target_item": np.asarray([t for _, t, _ in rows], np.int32),
    "query_id": np.asarray([q for _, _, q in rows], np.int32),
  }


def test_documents_expand_with_training_queries_only():
  tok = _Tok(["red", "blue", "fast", "car", "secret", "boat"])
  ds = _Dataset(
    {
      ("search", "train"): _search(
        tok, [("fast car", 0, 0), ("fast car", 1, 0), ("blue", 2, 1), ("blue", 2, 2)]
      ),
      ("search", "test"): _search(tok, [("secret boat", 1, 0)]),
    },
    ["Red Car", "", "Boat"],
    [{"genres": ["Drama"]}, {}, {"n": 1}],
    tok,
  )
  docs = bm25.item_documents(ds)
  assert docs == ["Red Car Drama fast car", "fast car", "Boat blue blue"]
  assert "secret" not in " ".join(docs)  # test queries never enter a document
  assert bm25.item_documents(ds, expand_with_train_queries=False, include_metadata=False) == [
    "Red Car",
    "",
    "Boat",
  ]


def test_run_directory(prepared, tmp_path):
  c, data_dir = prepared
  c.eval.ks = (1, 5, 10)
  out = tmp_path / "bm25"
  summary = runner.run_baseline("bm25", c, data_dir, str(out), "test")
  assert runner.BASELINE_TASKS["bm25"] == ("search",)
  d = out / "eval" / "test"
  for f in ("search.run", "search.qrels", "metrics.json", "per_query.json"):
    assert os.path.exists(d / f)
  assert os.path.exists(out / "config.json")
  ds = ProcessedDataset(data_dir)
  arrays = ds.split("search", "test")
  run, qrels = runs.read_run(d / "search.run"), runs.read_qrels(d / "search.qrels")
  assert qrels == runs.qrels_from_split(arrays, ds.catalog.item_ids)
  # metrics.json equals a recomputation from the files alone
  means, _ = metrics_lib.evaluate_run(qrels, run, c.eval.ks)
  for k, v in means.items():
    assert summary["search"][k] == pytest.approx(v, abs=1e-12)
  saved, per_query = runs.load_eval(str(out), "test")
  assert saved["search"] == summary["search"] and set(per_query) == {"search"}
  # Each query holds exactly the top 10 of an independent full scoring, in the metrics' order.
  index = bm25.build_index(ds, c.baselines.bm25)
  qids, first = runs.split_queries(arrays)
  texts = bm25.decode_queries(ds.tokenizer, arrays["encoder_input_ids"][first])
  ids = ds.catalog.item_ids
  for qid, text in list(zip(qids, texts))[:20]:
    full = {ids[i]: float(s) for i, s in enumerate(index.scores(bm25.tokenize(text)))}
    want = metrics_lib.rank_items(full)[:10]
    assert metrics_lib.rank_items(run[qid]) == want
    assert all(run[qid][x] == full[x] for x in want)
  # BM25 beats chance on simulated data (query words are item and cluster words).
  assert summary["search"]["recall@10"] > 10 / ds.num_items


def test_top_k_ties_follow_metric_order():
  ids = ["a", "c", "b", "d"]
  scores = np.asarray([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
  idx = common.top_k(scores, 2, common.tie_order(ids))
  # ties break by item id descending: d, b (then a)
  assert [[ids[i] for i in r] for r in idx] == [["d", "b"], ["d", "c"]]
