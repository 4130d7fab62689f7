"""H1 / H2 / t-SNE / item-cap helpers against brute force and scipy."""

import itertools
import os

import numpy as np
import pytest
from scipy import stats as sps

from gr_jax.analysis import cooccurrence, embeddings, item_cap, popularity, report


def _run(lists):
  return {q: {d: -float(r) for r, d in enumerate(items)} for q, items in lists.items()}


def test_kl_matches_scipy_entropy():
  rng = np.random.default_rng(0)
  p, q = rng.random(20), rng.random(20)
  p /= p.sum()
  q /= q.sum()
  assert popularity.kl_divergence(p, q) == pytest.approx(sps.entropy(p, q), abs=1e-12)
  assert popularity.kl_divergence(p, p) == pytest.approx(0.0, abs=1e-15)
  # One function for the whole project: the simulator and prepare use this very one.
  from gr_jax.data import divergence
  from gr_jax.data import prepare, simulate

  assert popularity.kl_divergence is divergence.kl_divergence
  assert simulate.kl_divergence is prepare.kl_divergence is divergence.kl_divergence
  assert divergence.kl_divergence([0.5, 0.5], [1.0, 0.0]) == np.inf


def test_popularity_kl_of_a_run():
  items = ["a", "b", "c", "d"]
  run = _run({"1": ["a", "b"], "2": ["a", "c"], "3": ["a", "b"]})
  qrels = {"1": {"b": 1}, "2": {"c": 1}, "3": {"d": 1}}
  r = popularity.popularity_kl(run, qrels, items, k=2, eps=0.1)
  pred = np.array([3, 2, 1, 0]) + 0.1
  tgt = np.array([0, 1, 1, 1]) + 0.1
  pred, tgt = pred / pred.sum(), tgt / tgt.sum()
  assert r["kl_target_pred"] == pytest.approx(sps.entropy(tgt, pred), abs=1e-12)
  assert r["kl_pred_target"] == pytest.approx(sps.entropy(pred, tgt), abs=1e-12)


def test_buckets_and_bucket_recall():
  train = {"a": 50, "b": 20, "c": 15, "d": 10, "e": 5}  # cumulative starts 0, .5, .7, .85, .95
  b = popularity.popularity_buckets(train)
  assert b == {"a": "head", "b": "torso", "c": "tail", "d": "tail", "e": "tail"}
  run = _run({"1": ["a", "b"], "2": ["c", "a"], "3": ["a"]})
  qrels = {"1": {"a": 1, "b": 1}, "2": {"d": 1}, "3": {"e": 1, "zz": 1}}
  r = popularity.bucket_recall(run, qrels, b, k=1)
  assert r["head"] == {"recall": 1.0, "pairs": 1}
  assert r["torso"] == {"recall": 0.0, "pairs": 1}
  assert r["tail"]["pairs"] == 3 and r["tail"]["recall"] == 0.0
  recs = popularity.h1_analysis({"m": run}, qrels, train, list("abcde") + ["zz"], k=2)
  assert recs[0]["model"] == "m" and recs[0]["recall_torso"] == 1.0
  # eval.bucket_bounds reaches the buckets: a head of 60% takes "b" (it starts at 50%).
  wide = popularity.popularity_buckets(train, (0.6, 0.9))
  assert wide == {"a": "head", "b": "head", "c": "torso", "d": "torso", "e": "tail"}
  recs = popularity.h1_analysis(
    {"m": run}, qrels, train, list("abcde") + ["zz"], k=2, bounds=(0.6, 0.9)
  )
  assert recs[0]["pairs_head"] == 2 and recs[0]["pairs_torso"] == 1
  with pytest.raises(ValueError, match="bucket bounds"):
    popularity.popularity_buckets(train, (0.7, 0.2))


def test_prediction_cooccurrence_brute_force():
  rng = np.random.default_rng(1)
  items = [f"i{j}" for j in range(12)]
  index = {d: n for n, d in enumerate(items)}
  lists = {str(q): list(rng.choice(items, size=6, replace=False)) for q in range(30)}
  got = cooccurrence.prediction_cooccurrence(_run(lists), index, k=4)
  ref = {}
  for top in lists.values():
    for x, y in itertools.combinations(top[:4], 2):
      i, j = sorted((index[x], index[y]))
      ref[i * 12 + j] = ref.get(i * 12 + j, 0) + 1
  assert got == ref


def test_h2_summary_and_related_pairs():
  n = 10
  code = lambda i, j: min(i, j) * n + max(i, j)
  hist = np.array([[1, 2, 3, -1], [4, 5, -1, -1]])
  sp = cooccurrence.session_pairs(hist, np.array([7, 4]), n, window=2)
  assert sp == {
    code(2, 7),
    code(3, 7),
    code(4, 5),
  }  # last 2 history items with the target; (4, 4) dropped
  qp = cooccurrence.query_pairs_from_split(
    {"query_id": np.array([0, 0, 0, 1]), "target_item": np.array([1, 2, 3, 4])}, n
  )
  assert qp == {code(1, 2), code(1, 3), code(2, 3)}
  specific = {code(1, 2): 1, code(5, 6): 3}
  joint = {code(1, 2): 4, code(5, 6): 2, code(8, 9): 1}
  s = cooccurrence.h2_summary(specific, joint, related=qp)
  assert s["positive_change"] == 4.0 and s["positive_change_on_related"] == 3.0
  assert s["share_on_related"] == pytest.approx(0.75)
  assert s["related_base_rate"] == pytest.approx(1 / 3)
  assert s["lift"] == pytest.approx(2.25)
  assert cooccurrence.decode_pair(code(3, 7), n) == (3, 7)
  # Histories as ItemCatalog.histories gives them (one array per row) or padded with -1.
  assert cooccurrence.session_pairs([np.array([5, 7])], np.array([2]), n, window=1) == {code(2, 7)}
  assert cooccurrence.session_pairs(np.array([[5, 7, -1]]), np.array([2]), n) == {
    code(2, 5),
    code(2, 7),
  }


def test_tsne_plot_and_item_cap(tmp_path):
  rng = np.random.default_rng(0)
  centers = rng.normal(0, 10, (3, 8))
  x = np.concatenate([c + rng.normal(0, 0.5, (15, 8)) for c in centers])
  labels = np.repeat(["c0", "c1", "c2"], 15)
  xy = embeddings.tsne_plot(str(tmp_path / "t.png"), x, labels, perplexity=5)
  assert xy.shape == (45, 2) and os.path.getsize(tmp_path / "t.png") > 1000
  # Well-separated clusters stay separated: each point's nearest neighbour shares its label.
  d = ((xy[:, None] - xy[None]) ** 2).sum(-1) + np.eye(45) * 1e9
  assert (labels[d.argmin(1)] == labels).mean() > 0.95
  # On one thread (embeddings.tsne) the coordinates are those of scikit-learn's default threads.
  from sklearn.manifold import TSNE

  default = TSNE(2, perplexity=5, init="pca", random_state=0, learning_rate="auto")
  np.testing.assert_array_equal(xy, default.fit_transform(x.astype(np.float32)))
  recs = [
    {"cap": c, "model": m, "task": "search", "metric": "recall@30", "mean": v, "std": 0.01}
    for c, m, v in [(5, "joint", 0.1), (10, "joint", 0.2), (5, "search", 0.15), (0, "joint", 0.3)]
  ]
  md = item_cap.cap_table(recs, "search")
  assert "| cap | joint | search |" in md and "| none | 0.3000 ± 0.0100 |  |" in md
  assert "Recall@30" in md
  item_cap.cap_plot(str(tmp_path / "cap.png"), recs, "search")
  assert os.path.getsize(tmp_path / "cap.png") > 1000
  with pytest.raises(ValueError, match="row 0 has 1 cells"):
    report.markdown_table(["a", "b"], [["x"]])


@pytest.mark.slow
def test_item_embedding_matrix_reads_the_item_rows_of_the_input_embedding():
  from flax import nnx
  from gr_jax.data.catalog import ItemCatalog
  from gr_jax.model import T5, T5Config

  model = T5(T5Config.from_preset("tiny", vocab_size=20, num_item_tokens=7), rngs=nnx.Rngs(0))
  table = np.asarray(model.shared.embedding[...])
  atomic = ItemCatalog([f"i{i}" for i in range(7)], token_offset=20)
  emb = embeddings.item_embedding_matrix(model, atomic)
  np.testing.assert_array_equal(emb, table[20:27])
  assert "row of the item's token" in embeddings.item_embedding_note(atomic)
  with pytest.raises(ValueError, match="rows"):
    embeddings.item_embedding_matrix(
      model, ItemCatalog([f"i{i}" for i in range(8)], token_offset=20)
    )
  # Semantic IDs: 2 levels of 3 codes + 1 disambiguation code = 7 ID tokens from row 20. An item
  # is the mean of its code tokens' rows (level l, code c: row 20 + 3 l + c; disambiguation d:
  # row 26 + d), not the row of token 20 + its index.
  codes = [[0, 0, 0], [0, 1, 0], [2, 1, 0], [1, 2, 0], [2, 0, 0]]
  sem = ItemCatalog(
    [f"i{i}" for i in range(5)],
    token_offset=20,
    id_scheme="semantic",
    codes=codes,
    levels=2,
    codebook_size=3,
    num_disambiguation=1,
  )
  emb = embeddings.item_embedding_matrix(model, sem)
  want = np.stack([(table[20 + a] + table[23 + b] + table[26 + d]) / 3 for a, b, d in codes])
  np.testing.assert_allclose(emb, want, rtol=1e-6)
  assert emb.shape == (5, table.shape[1])
  note = embeddings.item_embedding_note(sem)
  assert note == "the mean of the input-embedding rows of the item's 3 semantic ID tokens"
