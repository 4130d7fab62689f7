"""Statistics against scipy / statsmodels / brute-force enumeration."""

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from gr_jax.analysis import stats
from gr_jax.evaluation import runs


A = [0.30, 0.10, 0.55, 0.20, 0.90, 0.05, 0.40, 0.33, 0.71, 0.12]
B = [0.25, 0.15, 0.40, 0.22, 0.60, 0.00, 0.41, 0.30, 0.50, 0.10]


def test_ttest_matches_scipy():
  ours = stats.paired_ttest(A, B)
  ref = sps.ttest_rel(A, B)
  assert abs(ours["statistic"] - ref.statistic) < 1e-10
  assert abs(ours["p_value"] - ref.pvalue) < 1e-12
  rng = np.random.default_rng(0)
  a, b = rng.random(200), rng.random(200)
  assert abs(stats.paired_ttest(a, b)["p_value"] - sps.ttest_rel(a, b).pvalue) < 1e-12


@pytest.mark.parametrize("method,sm", [("holm", "holm"), ("bonferroni", "bonferroni")])
def test_corrections_match_statsmodels(method, sm):
  p = [0.01, 0.04, 0.03, 0.2, 0.001, 0.04, 0.5, 0.9]
  ours = stats.adjust_pvalues(p, method)
  ref = multipletests(p, method=sm)[1]
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-15)
  rng = np.random.default_rng(1)
  p = rng.random(30) ** 3
  np.testing.assert_allclose(
    stats.adjust_pvalues(p, method), multipletests(p, method=sm)[1], atol=1e-15
  )


def test_randomization_exact_matches_enumeration():
  a, b = A[:7], B[:7]
  d = np.subtract(a, b)
  obs = abs(d.mean())
  count = 0
  for signs in itertools.product([1, -1], repeat=len(d)):  # independent brute force
    m = abs(sum(s * x for s, x in zip(signs, d)) / len(d))
    count += m >= obs - 1e-12
  exact = count / 2 ** len(d)
  assert stats.randomization_test(a, b, exact=True)["p_value"] == pytest.approx(exact, abs=1e-15)
  mc = stats.randomization_test(a, b, exact=False, num_samples=20000, seed=3)["p_value"]
  # Monte Carlo std error is sqrt(p(1-p)/n) ~ 0.0035 here.
  assert abs(mc - exact) < 0.015
  assert 0 < exact < 1


def _write_eval(d, task_values, split="test", seed=None, info=None, qids=None):
  """A fake run dir: eval/<split>/metrics.json, per_query.json, {task}.qrels (+ config.json seed).

  Query i is `qids[i]` (default q0, q1, ...) with relevant item `i{i}`.
  """
  summary, pq = {}, {}
  for task, vals in task_values.items():
    ids = qids or [f"q{i}" for i in range(len(vals))]
    pq[task] = {"recall@30": {q: float(v) for q, v in zip(ids, vals)}}
    summary[task] = {"recall@30": float(np.mean(vals))}
    runs.write_qrels(
      str(d / "eval" / split / f"{task}.qrels"), {q: {f"i{i}": 1} for i, q in enumerate(ids)}
    )
  if info is not None:
    summary["info"] = info
  runs.write_json(str(d / "eval" / split / "metrics.json"), summary)
  runs.write_json(str(d / "eval" / split / "per_query.json"), pq)
  if seed is not None:
    runs.write_json(str(d / "config.json"), {"seed": seed})
  return str(d)


def test_compare_models_on_fake_runs(tmp_path):
  rng = np.random.default_rng(0)
  n = 40
  base = rng.random(n)
  groups = {"joint": [], "search": [], "rec": []}
  noise = [rng.normal(0, 0.05, n) for _ in range(2)]
  for s in range(2):
    groups["joint"].append(
      _write_eval(tmp_path / f"j{s}", {"search": base + 0.1 + 0.01 * s, "rec": base})
    )
    groups["search"].append(_write_eval(tmp_path / f"s{s}", {"search": base + noise[s]}))
    groups["rec"].append(_write_eval(tmp_path / f"r{s}", {"rec": base + rng.normal(0, 0.05, n)}))
  res = stats.compare_models(groups, task=["search", "rec"], metric="recall@30")
  by = {(r["model"], r["task"]): r for r in res["results"]}
  j = by[("joint", "search")]
  assert j["per_seed"] == pytest.approx([np.mean(base + 0.1), np.mean(base + 0.11)])
  assert j["std"] == pytest.approx(np.std(j["per_seed"], ddof=1))
  assert ("rec", "search") not in by and ("search", "rec") not in by
  comps = {(c["task"], c["b"]): c for c in res["comparisons"]}
  assert set(comps) == {("search", "search"), ("rec", "rec")}
  c = comps[("search", "search")]
  qa = (base + 0.1 + base + 0.11) / 2
  qb = (base + noise[0] + base + noise[1]) / 2
  assert c["p_value"] == pytest.approx(sps.ttest_rel(qa, qb).pvalue, abs=1e-12)
  assert c["gain_pct"] == pytest.approx((qa.mean() - qb.mean()) / qb.mean() * 100)
  holm = multipletests([c["p_value"] for c in res["comparisons"]], method="holm")[1]
  assert [c["p_adjusted"] for c in res["comparisons"]] == pytest.approx(list(holm))
  md = stats.to_markdown(res)
  assert "Recall@30" in md and "joint vs search" in md
  json.dumps(res)  # serialisable
  res_r = stats.compare_models(
    groups,
    task="search",
    metric="recall@30",
    test="randomization",
    correction="bonferroni",
    num_samples=2000,
  )
  assert res_r["comparisons"][0]["p_value"] < 0.01


def test_missing_eval_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no eval/test/metrics.json"):
    stats.compare_models({"joint": [str(tmp_path)]}, task="search", metric="recall@30")


# ---------------------------------------------------------------- seed-level and query-level fields


def test_seed_level_test_matches_scipy_and_statsmodels():
  from statsmodels.stats.weightstats import DescrStatsW

  rng = np.random.default_rng(4)
  for n in (2, 3, 5, 12):
    a, b = rng.random(n), rng.random(n)
    ours = stats.seed_level_test(a, b)
    ref = sps.ttest_rel(a, b)
    assert ours["unit"] == "seed" and ours["method"] == "ttest_rel" and ours["n"] == n
    assert ours["statistic"] == pytest.approx(float(ref.statistic), rel=1e-10)
    assert ours["p_value"] == pytest.approx(float(ref.pvalue), rel=1e-10, abs=1e-15)
    assert ours["diff"] == pytest.approx(float(np.mean(a - b)), abs=1e-15)
    low, high = DescrStatsW(a - b).tconfint_mean(alpha=0.05)
    assert ours["ci95"] == pytest.approx([low, high], abs=1e-12)
  json.dumps(ours)


def test_seed_level_test_degenerate_cases_do_not_raise():
  empty = stats.seed_level_test([], [])
  assert empty["n"] == 0 and math.isnan(empty["p_value"]) and math.isnan(empty["diff"])
  one = stats.seed_level_test([0.5], [0.25])
  assert one["n"] == 1 and one["diff"] == 0.25 and math.isnan(one["p_value"])
  assert all(math.isnan(x) for x in one["ci95"]) and math.isnan(one["statistic"])
  same = stats.seed_level_test([0.5, 0.5, 0.25], [0.5, 0.5, 0.25])
  assert math.isnan(same["p_value"]) and same["diff"] == 0.0 and same["ci95"] == [0.0, 0.0]
  # A constant shift (exactly representable, so sd is exactly 0): p NaN, not scipy's 0.
  shift = stats.seed_level_test([0.75, 0.5], [0.5, 0.25])
  assert math.isnan(shift["p_value"]) and shift["ci95"] == [0.25, 0.25]
  with pytest.raises(ValueError, match="differ in length"):
    stats.seed_level_test([0.1, 0.2], [0.1])


def test_query_tests_report_unit_diff_and_t_interval():
  from statsmodels.stats.weightstats import DescrStatsW

  ref = DescrStatsW(np.subtract(A, B)).tconfint_mean(alpha=0.05)
  for res in (stats.paired_ttest(A, B), stats.randomization_test(A, B, exact=True)):
    assert res["unit"] == "query" and res["n"] == len(A) and res["ci_method"] == "t"
    assert res["diff"] == pytest.approx(float(np.mean(np.subtract(A, B))), abs=1e-15)
    assert res["ci95"] == pytest.approx(list(ref), abs=1e-12)
  assert stats.paired_ttest(A, B)["method"] == "ttest_rel"
  assert stats.randomization_test(A, B, exact=True)["method"] == "randomization"


@pytest.mark.parametrize("method", ["holm", "bonferroni"])
def test_adjust_family_matches_statsmodels_and_skips_nan(method):
  p = [0.01, math.nan, 0.04, 0.03, 0.2, math.nan, 0.001, 0.5]
  tests = [{"p_value": x, "name": i, "nested": {"k": i}} for i, x in enumerate(p)]
  out = stats.adjust_family(tests, method)
  finite = [x for x in p if not math.isnan(x)]
  ref = iter(multipletests(finite, method=method)[1])
  for t, x in zip(out, p):
    assert t["family_size"] == len(finite) and t["correction"] == method
    if math.isnan(x):
      assert math.isnan(t["p_adjusted"]) and t["significant"] is False
    else:
      r = next(ref)
      assert t["p_adjusted"] == pytest.approx(r, abs=1e-15)
      assert t["significant"] == (r < 0.05)
  out[0]["nested"]["k"] = "changed"
  assert "p_adjusted" not in tests[0] and tests[0]["nested"]["k"] == 0  # copies, input untouched
  assert stats.adjust_family([], method) == []
  with pytest.raises(ValueError, match=r"tests\[1\] has no 'p_value'"):
    stats.adjust_family([{"p_value": 0.1}, {"p": 0.2}], method)


def test_compare_models_seed_test_pairs_by_config_seed(tmp_path):
  rng = np.random.default_rng(7)
  n = 30
  base = rng.random(n)
  joint_shift = {0: 0.10, 1: 0.02, 2: 0.07}
  search_shift = {0: 0.05, 1: 0.04, 2: -0.03}
  # The search runs are listed in another seed order: pairing by position would be wrong.
  joint = [
    _write_eval(tmp_path / f"j{s}", {"search": base + joint_shift[s]}, seed=s) for s in (0, 1, 2)
  ]
  search = [
    _write_eval(
      tmp_path / f"s{s}", {"search": base + search_shift[s] + 0.01 * rng.random(n)}, seed=s
    )
    for s in (2, 0, 1)
  ]
  res = stats.compare_models({"joint": joint, "search": search}, task="search", metric="recall@30")
  (c,) = res["comparisons"]
  a = [np.mean(base + joint_shift[s]) for s in (0, 1, 2)]
  b = [
    by["per_seed"][i] for by in res["results"] if by["model"] == "search" for i in (1, 2, 0)
  ]  # search per_seed is in list order 2, 0, 1
  st = c["seed_test"]
  ref = sps.ttest_rel(a, b)
  assert st["pairing"] == "seed" and st["seeds"] == [0, 1, 2] and st["n"] == 3
  assert st["p_value"] == pytest.approx(float(ref.pvalue), rel=1e-9)
  assert st["diff"] == pytest.approx(float(np.mean(np.subtract(a, b))), abs=1e-12)
  assert st["family_size"] == 1 and st["p_adjusted"] == pytest.approx(st["p_value"])
  # Query level: means over seeds per query id, t interval of the differences.
  from statsmodels.stats.weightstats import DescrStatsW

  def pq(d):
    return json.loads((tmp_path / d / "eval" / "test" / "per_query.json").read_text())

  qa = np.array(
    [np.mean([pq(f"j{s}")["search"]["recall@30"][f"q{i}"] for s in range(3)]) for i in range(n)]
  )
  qb = np.array(
    [np.mean([pq(f"s{s}")["search"]["recall@30"][f"q{i}"] for s in range(3)]) for i in range(n)]
  )
  assert c["unit"] == "query" and c["family_size"] == 1 and c["num_queries"] == n
  assert c["diff"] == pytest.approx(float(np.mean(qa - qb)), abs=1e-12)
  assert c["ci95"] == pytest.approx(list(DescrStatsW(qa - qb).tconfint_mean()), abs=1e-12)
  assert c["p_value"] == pytest.approx(float(sps.ttest_rel(qa, qb).pvalue), rel=1e-9)
  json.dumps(res)


def test_compare_models_seed_test_without_config_pairs_by_position(tmp_path):
  joint = [_write_eval(tmp_path / f"j{s}", {"search": [0.5 + 0.1 * s, 0.2]}) for s in range(3)]
  search = [_write_eval(tmp_path / f"s{s}", {"search": [0.4, 0.3 - 0.05 * s]}) for s in range(2)]
  (c,) = stats.compare_models({"joint": joint, "search": search}, task="search")["comparisons"]
  st = c["seed_test"]
  assert st["pairing"] == "position" and st["seeds"] == [0, 1] and st["n"] == 2
  a, b = [0.35, 0.4], [0.35, 0.325]
  assert st["p_value"] == pytest.approx(float(sps.ttest_rel(a, b).pvalue), rel=1e-9)


# ----------------------------------------------------------------------- comparable runs only


def _pair(tmp_path, joint_kw=None, search_kw=None, n=20):
  vals = np.linspace(0.1, 0.9, n)
  j = _write_eval(tmp_path / "joint0", {"search": vals}, **(joint_kw or {}))
  s = _write_eval(tmp_path / "search0", {"search": vals[::-1]}, **(search_kw or {}))
  return {"joint": [j], "search": [s]}


def test_different_query_ids_are_an_error_naming_both_runs(tmp_path):
  # The reported case: 200 vs 197 queries of different datasets were paired by position.
  j = _write_eval(
    tmp_path / "joint0", {"search": np.linspace(0, 1, 200)}, qids=[str(i) for i in range(200)]
  )
  s = _write_eval(
    tmp_path / "search0", {"search": np.linspace(0, 0.5, 197)}, qids=[str(i) for i in range(197)]
  )
  with pytest.raises(stats.IncomparableRunsError) as e:
    stats.compare_models({"joint": [j], "search": [s]}, task="search")
  msg = str(e.value)
  assert j in msg and s in msg and "search.qrels" in msg and "3 query ids only in the first" in msg


def test_different_relevant_items_are_an_error(tmp_path):
  groups = _pair(tmp_path)
  path = tmp_path / "search0" / "eval" / "test" / "search.qrels"
  qrels = runs.read_qrels(str(path))
  qrels["q3"] = {"other_item": 1}
  runs.write_qrels(str(path), qrels)
  with pytest.raises(stats.IncomparableRunsError, match="different relevant items for 1 shared"):
    stats.compare_models(groups, task="search")


def test_per_query_ids_must_match_not_dropped(tmp_path):
  groups = _pair(tmp_path)
  path = tmp_path / "search0" / "eval" / "test" / "per_query.json"
  pq = json.loads(path.read_text())
  del pq["search"]["recall@30"]["q5"]
  runs.write_json(str(path), pq)
  with pytest.raises(stats.IncomparableRunsError) as e:
    stats.compare_models(groups, task="search")
  assert groups["joint"][0] in str(e.value) and groups["search"][0] in str(e.value)
  assert "1 query ids only in the first (q5)" in str(e.value)


def test_dataset_identity_must_match(tmp_path):
  groups = _pair(
    tmp_path / "a", {"info": {"dataset": "/data/ml1m"}}, {"info": {"dataset": "/data/ml20m"}}
  )
  with pytest.raises(stats.IncomparableRunsError, match="info.dataset is '/data/ml1m' vs"):
    stats.compare_models(groups, task="search")
  # The sha wins over the path: the same data under another path is comparable...
  groups = _pair(
    tmp_path / "b",
    {"info": {"dataset": "/x", "dataset_sha256": "ab"}},
    {"info": {"dataset": "/y", "dataset_sha256": "ab"}},
  )
  assert len(stats.compare_models(groups, task="search")["comparisons"]) == 1
  groups = _pair(
    tmp_path / "c",
    {"info": {"dataset": "/x", "dataset_sha256": "ab"}},
    {"info": {"dataset": "/x", "dataset_sha256": "cd"}},
  )
  with pytest.raises(stats.IncomparableRunsError, match="info.dataset_sha256"):
    stats.compare_models(groups, task="search")
  # ...and a run without an identity field is judged by its qrels alone.
  groups = _pair(tmp_path / "d", {"info": {"dataset": "/x"}}, {"info": {"step": 3}})
  assert len(stats.compare_models(groups, task="search")["comparisons"]) == 1


@pytest.mark.parametrize("name", ["per_query.json", "search.qrels", "metrics.json"])
def test_missing_eval_file_is_an_error_naming_the_path(tmp_path, name):
  groups = _pair(tmp_path)
  path = tmp_path / "search0" / "eval" / "test" / name
  path.unlink()
  with pytest.raises(FileNotFoundError) as e:
    stats.compare_models(groups, task="search")
  assert str(path) in str(e.value)


def test_per_query_outside_own_qrels_is_an_error(tmp_path):
  d = _write_eval(tmp_path / "joint0", {"search": [0.1, 0.2, 0.3]})
  path = tmp_path / "joint0" / "eval" / "test" / "search.qrels"
  runs.write_qrels(str(path), {"q0": {"i0": 1}, "q1": {"i1": 1}})
  with pytest.raises(stats.IncomparableRunsError, match=r"1 queries not in search.qrels \(q2\)"):
    stats.compare_models({"joint": [d]}, task="search")
  path.unlink()  # a single run still needs its qrels
  with pytest.raises(FileNotFoundError, match="search.qrels"):
    stats.compare_models({"joint": [d]}, task="search")
