"""Popularity baselines on a tiny fake dataset, checked by brute force and ir_measures."""

import os

import ir_measures
import numpy as np
import pytest
from ir_measures import R

from gr_jax.baselines import popularity
from gr_jax.data.catalog import ItemCatalog
from gr_jax.evaluation import runs


class FakeDataset:
  """Duck-typed ProcessedDataset: catalog + split(task, split) -> arrays."""

  def __init__(self, splits, num_items):
    self.catalog = ItemCatalog([f"m{i}" for i in range(num_items)], token_offset=100)
    self._splits = splits

  def split(self, task, split):
    if (task, split) not in self._splits:
      raise FileNotFoundError(f"{task}/{split}.npz")
    return self._splits[(task, split)]


def _arrays(targets, qids):
  t = np.asarray(targets, np.int32)
  return {
    "encoder_input_ids": np.ones([len(t), 4], np.int32),
    "target_item": t,
    "query_id": np.asarray(qids, np.int32),
  }


def make_dataset():
  return FakeDataset(
    {
      ("search", "train"): _arrays([0, 0, 0, 1, 2, 2], range(6)),
      ("rec", "train"): _arrays([3, 3, 3, 3, 1, 1, 2], range(7)),
      ("search", "test"): _arrays([0, 3, 2, 4], [0, 0, 1, 2]),  # query 0 has two targets
      ("rec", "test"): _arrays([3, 0, 1], [0, 1, 2]),
    },
    num_items=5,
  )


def test_popularity_runs(tmp_path):
  ds = make_dataset()
  out = popularity.write_popularity_runs(ds, str(tmp_path), "test", ks=(1, 2, 5))
  assert set(out) == {"pop_s", "pop_r", "pop_mix"}
  d = tmp_path / "pop_s" / "eval" / "test"
  run = runs.read_run(d / "search.run")
  # Pop_S: counts m0=3, m2=2, m1=1, m3=m4=0 (tie: id descending -> m4 before m3).
  ranked = [x for x, _ in sorted(run["0"].items(), key=lambda kv: -kv[1])]
  assert ranked[:3] == ["m0", "m2", "m1"]
  assert set(run) == {"0", "1", "2"}
  qrels = runs.read_qrels(d / "search.qrels")
  assert qrels == {"0": {"m0": 1, "m3": 1}, "1": {"m2": 1}, "2": {"m4": 1}}
  ref = ir_measures.calc_aggregate([R @ 1, R @ 2, R @ 5], qrels, run)
  assert out["pop_s"]["search"]["recall@1"] == pytest.approx(ref[R @ 1], abs=1e-9)
  assert out["pop_s"]["search"]["recall@2"] == pytest.approx(ref[R @ 2], abs=1e-9)
  assert out["pop_s"]["search"]["recall@5"] == pytest.approx(1.0)
  # Hand check: R@1: q0 0.5, q1 0, q2 0 -> 1/6.
  assert out["pop_s"]["search"]["recall@1"] == pytest.approx(1 / 6)
  # Pop_R on rec: top-1 m3 hits query 0 only.
  assert out["pop_r"]["rec"]["recall@1"] == pytest.approx(1 / 3)
  # Mix: p_S = [.5, 1/6, 1/3, 0, 0], p_R = [0, 2/7, 1/7, 4/7, 0] -> mix order m3, m0, m2, m1.
  mix = runs.read_run(tmp_path / "pop_mix" / "eval" / "test" / "rec.run")
  assert [x for x, _ in sorted(mix["0"].items(), key=lambda kv: -kv[1])][:4] == [
    "m3",
    "m0",
    "m2",
    "m1",
  ]
  assert os.path.exists(d / "per_query.json")


def test_missing_split_is_an_error(tmp_path):
  ds = FakeDataset({}, num_items=3)
  with pytest.raises(FileNotFoundError, match="no valid split"):
    popularity.write_popularity_runs(ds, str(tmp_path), "valid")
