"""Metrics against ir_measures (pytrec_eval / msmarco providers) on random runs with ties."""

import math

import ir_measures
import numpy as np
import pytest
from ir_measures import R, RR, Success, nDCG

from gr_jax.evaluation import metrics, runs

KS = (1, 3, 5, 10)


def _random_case(seed, graded=False):
  rng = np.random.default_rng(seed)
  items = [f"i{j}" for j in range(40)]
  qrels, run = {}, {}
  for q in range(25):
    qid = f"q{q}"
    n_rel = int(rng.integers(1, 4))
    rel_items = rng.choice(items, size=n_rel + 1, replace=False)
    qrels[qid] = {d: (int(rng.integers(1, 3)) if graded else 1) for d in rel_items[:n_rel]}
    qrels[qid][str(rel_items[-1])] = 0  # a judged non-relevant item
    if q % 5 == 4:
      continue  # missing query: no run entry
    depth = int(rng.integers(0, 15))
    cand = rng.choice(items, size=depth, replace=False)
    # Few distinct scores, so ties are common.
    run[qid] = {str(d): float(rng.integers(0, 4)) / 2 for d in cand}
  run["q_not_judged"] = {"i1": 1.0}
  return qrels, run


def _pytrec(measures, qrels, run):
  prov = ir_measures.providers.registry["pytrec_eval"]
  out = {}
  for m in prov.iter_calc(measures, qrels, run):
    out.setdefault(str(m.measure), {})[m.query_id] = m.value
  return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("graded", [False, True])
def test_matches_pytrec_eval_with_ties_and_missing_queries(seed, graded):
  qrels, run = _random_case(seed, graded)
  ties = sum(len(set(v.values())) < len(v) for v in run.values())
  assert ties > 5  # the case really exercises tie-breaking
  means, pq = metrics.evaluate_run(qrels, run, KS)
  ref_measures = [R @ k for k in KS] + [nDCG @ k for k in KS] + [Success @ k for k in KS] + [RR]
  ref = _pytrec(ref_measures, qrels, run)
  for k in KS:
    for ours, theirs in [
      (f"recall@{k}", f"R@{k}"),
      (f"ndcg@{k}", f"nDCG@{k}"),
      (f"success@{k}", f"Success@{k}"),
    ]:
      assert set(pq[ours]) == set(ref[theirs]) == set(qrels)
      for qid in qrels:
        assert abs(pq[ours][qid] - ref[theirs][qid]) < 1e-9, (ours, qid)
      assert abs(means[ours] - np.mean(list(ref[theirs].values()))) < 1e-9
    # MRR@k from trec_eval's uncut RR (same tie order): RR counts iff the first hit is within k.
    for qid in qrels:
      rr = ref["RR"][qid]
      expect = rr if rr > 0 and 1.0 / rr <= k + 1e-9 else 0.0
      assert abs(pq[f"mrr@{k}"][qid] - expect) < 1e-9


def test_mrr_matches_msmarco_provider_without_ties():
  qrels, run = _random_case(7)
  rng = np.random.default_rng(7)
  run = {q: {d: float(rng.random()) for d in v} for q, v in run.items()}  # distinct scores
  prov = ir_measures.providers.registry["msmarco"]
  _, pq = metrics.evaluate_run(qrels, run, KS)
  for k in KS:
    ref = {m.query_id: m.value for m in prov.iter_calc([RR @ k], qrels, run)}
    for qid in qrels:
      assert abs(pq[f"mrr@{k}"][qid] - ref.get(qid, 0.0)) < 1e-9


def test_round_trip_through_files_keeps_metrics(tmp_path):
  qrels, run = _random_case(3)
  runs.write_run(tmp_path / "a.run", run)
  runs.write_qrels(tmp_path / "a.qrels", qrels)
  run2 = runs.read_run(tmp_path / "a.run")
  qrels2 = runs.read_qrels(tmp_path / "a.qrels")
  assert run2 == {q: v for q, v in run.items() if v}
  assert qrels2 == qrels
  # ir_measures reading our files gives our numbers.
  ref = ir_measures.calc_aggregate(
    [R @ 5, nDCG @ 10],
    ir_measures.read_trec_qrels(str(tmp_path / "a.qrels")),
    ir_measures.read_trec_run(str(tmp_path / "a.run")),
  )
  means, _ = metrics.evaluate_run(qrels2, run2, (5, 10))
  assert abs(ref[R @ 5] - means["recall@5"]) < 1e-9
  assert abs(ref[nDCG @ 10] - means["ndcg@10"]) < 1e-9
  # Ranks in the file follow the metrics' order.
  lines = (tmp_path / "a.run").read_text().split("\n")
  first_q = [l.split() for l in lines if l.startswith("q0 ")]
  assert [p[2] for p in first_q] == metrics.rank_items(run["q0"])
  assert [int(p[3]) for p in first_q] == list(range(1, len(first_q) + 1))


def test_recall_equals_success_with_one_relevant_item():
  qrels, run = _random_case(4)
  qrels = {q: {next(d for d, r in v.items() if r > 0): 1} for q, v in qrels.items()}
  _, pq = metrics.evaluate_run(qrels, run, KS)
  for k in KS:
    assert pq[f"recall@{k}"] == pq[f"success@{k}"]


def test_hand_computed_example():
  qrels = {"a": {"x": 1, "y": 1}}
  run = {"a": {"z": 3.0, "x": 2.0, "w": 1.0, "y": 1.0}}  # tie w/y: y ranks before w (id descending)
  m = metrics.query_metrics(metrics.rank_items(run["a"]), qrels["a"], (2, 3))
  assert metrics.rank_items(run["a"]) == ["z", "x", "y", "w"]
  assert m["recall@2"] == 0.5 and m["recall@3"] == 1.0
  assert m["mrr@2"] == 0.5
  idcg = 1 + 1 / math.log2(3)
  assert abs(m["ndcg@3"] - (1 / math.log2(3) + 1 / math.log2(4)) / idcg) < 1e-12


def test_run_from_ranked_dedupes_and_checks_order():
  run = metrics.run_from_ranked({"q": ["a", "b", "a", "c"]})
  assert metrics.rank_items(run["q"]) == ["a", "b", "c"]
  with pytest.raises(ValueError, match="best first"):
    metrics.run_from_ranked({"q": ["a", "b"]}, {"q": [0.1, 0.5]})


def test_bad_run_line_names_file_line_field(tmp_path):
  p = tmp_path / "bad.run"
  p.write_text("q1 Q0 a 1 0.5 t\nq1 Q0 b 2 zz t\n")
  with pytest.raises(runs.RunFormatError, match=r"bad.run:2: field 'score'"):
    runs.read_run(p)
  p.write_text("q1 Q0 a 1\n")
  with pytest.raises(runs.RunFormatError, match=r"bad.run:1: expected 6 fields"):
    runs.read_run(p)
  q = tmp_path / "bad.qrels"
  q.write_text("q1 0 a one\n")
  with pytest.raises(runs.RunFormatError, match=r"bad.qrels:1: field 'relevance'"):
    runs.read_qrels(q)
