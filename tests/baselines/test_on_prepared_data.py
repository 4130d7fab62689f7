"""Baselines and H1/H2 drivers on a real (simulated, tiny) processed dataset."""

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from gr_jax.analysis import cooccurrence, popularity as h1
from gr_jax.baselines import popularity
from gr_jax.data.dataset import ProcessedDataset
from gr_jax.evaluation import runs
from tests.baselines.small_data import prepare_small


def _top(scores, k):
  # trec_eval order: score descending, ties by id descending (stable sort over reversed ids).
  return sorted(sorted(scores, reverse=True), key=lambda d: -scores[d])[:k]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  _, d = prepare_small(tmp_path_factory, num_users=50)
  return ProcessedDataset(d)


def test_baselines_h1_h2(dataset, tmp_path):
  out = popularity.write_popularity_runs(dataset, str(tmp_path), "test", ks=(1, 5, 10))
  # Pop_R's top item is the most frequent rec training target.
  counts = np.bincount(dataset.split("rec", "train")["target_item"], minlength=dataset.num_items)
  run = runs.read_run(tmp_path / "pop_r" / "eval" / "test" / "rec.run")
  first = max(next(iter(run.values())).items(), key=lambda kv: kv[1])[0]
  assert counts[dataset.catalog.index(first)] == counts.max()
  test = dataset.split("rec", "test")
  hit1 = np.mean([dataset.catalog.item_id(t) == first for t in test["target_item"]])
  assert out["pop_r"]["rec"]["recall@1"] == pytest.approx(hit1)  # one target per rec query

  groups = {n: [str(tmp_path / n)] for n in out}
  recs = {r["model"]: r for r in h1.h1_from_runs(groups, dataset, "rec", k=10)}
  # KL by hand from the files: predictions = 10 items x queries, targets = test targets.
  items = dataset.catalog.item_ids
  pred = np.zeros(len(items))
  for scores in run.values():
    for d in _top(scores, 10):
      pred[items.index(d)] += 1
  tgt = np.bincount(test["target_item"], minlength=len(items)).astype(float)
  p, q = (tgt + 1e-6) / (tgt + 1e-6).sum(), (pred + 1e-6) / (pred + 1e-6).sum()
  assert recs["pop_r"]["kl_target_pred"] == pytest.approx(sps.entropy(p, q), rel=1e-9)

  s = cooccurrence.h2_from_runs(groups["pop_s"], groups["pop_r"], dataset, "search", k=10)
  assert s["num_related_pairs"] > 0 and 0 <= s["related_base_rate"] <= 1

  # Brute-force the pooled change: each query's top-10 pairs, joint (pop_r) minus specific (pop_s).
  def pairs(path):
    c = {}
    for scores in runs.read_run(path).values():
      top = _top(scores, 10)
      for a, b in itertools.combinations(sorted(dataset.catalog.index(x) for x in top), 2):
        c[(a, b)] = c.get((a, b), 0) + 1
    return c

  cs = pairs(tmp_path / "pop_s" / "eval" / "test" / "search.run")
  cj = pairs(tmp_path / "pop_r" / "eval" / "test" / "search.run")
  pos = sum(max(cj.get(k, 0) - cs.get(k, 0), 0) for k in set(cs) | set(cj))
  assert s["positive_change"] == pos
