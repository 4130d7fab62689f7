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


# ------------------------------------------- sign-flip, bootstrap, power, verdicts (issue 30)


def _brute_force_signflip(d):
  """Independent reference: every signed sum, built by doubling (2^n values), then the share with
  |mean| >= the observed |mean|."""
  d = np.asarray(d, float)
  sums = np.zeros(1)
  for x in d:
    sums = np.concatenate([sums + x, sums - x])
  obs = abs(d.sum())
  return float(np.mean(np.abs(sums) >= obs - 1e-9))


def _python_signflip(d):
  count = 0
  for signs in itertools.product([1, -1], repeat=len(d)):
    count += abs(sum(s * x for s, x in zip(signs, d))) >= abs(sum(d)) - 1e-12
  return count / 2 ** len(d)


def test_signflip_exact_matches_brute_force_enumeration():
  rng = np.random.default_rng(11)
  for n in (1, 2, 3, 5, 8, 11):
    a, b = rng.random(n), rng.random(n)
    res = stats.signflip_test(a, b)
    assert res["exact"] and res["n"] == n
    assert res["p_value"] == pytest.approx(_python_signflip(a - b), abs=1e-15)
  # n above one enumeration chunk (2^16 patterns) and the largest exact n, 20.
  for n in (17, 20):
    a, b = rng.random(n) + 0.05, rng.random(n)
    res = stats.signflip_test(a, b)
    assert res["exact"] and res["p_value"] == pytest.approx(_brute_force_signflip(a - b), abs=1e-15)
  # Ties in |d| (patterns equal to the observed mean count as extreme).
  d = [0.1, -0.1, 0.1, 0.2]
  assert stats.signflip_test(d, [0] * 4)["p_value"] == pytest.approx(_python_signflip(d))
  # All differences of one sign: p is the floor 2 / 2^n (0.25 with 3 seeds, 0.0625 with 5).
  for n, floor in ((3, 0.25), (5, 0.0625)):
    res = stats.signflip_test(np.arange(1, n + 1) * 0.01, np.zeros(n))
    assert res["p_value"] == pytest.approx(floor) and res["p_min"] == pytest.approx(floor)
  # n > 20: Monte Carlo, close to the exact value.
  a, b = rng.random(22) + 0.1, rng.random(22)
  mc = stats.signflip_test(a, b, num_samples=40000, seed=1)
  assert not mc["exact"] and abs(mc["p_value"] - _brute_force_signflip(a - b)) < 0.01
  assert math.isnan(stats.signflip_test([], [])["p_value"])


def test_seed_level_test_carries_signflip_and_mdd80():
  a, b = [0.31, 0.29, 0.35, 0.30, 0.33], [0.28, 0.30, 0.29, 0.27, 0.30]
  st = stats.seed_level_test(a, b)
  d = np.subtract(a, b)
  assert st["p_signflip"] == pytest.approx(_python_signflip(d), abs=1e-15)
  assert st["signflip_exact"] is True and st["p_signflip_min"] == pytest.approx(2 / 32)
  assert st["sd"] == pytest.approx(float(np.std(d, ddof=1)))
  assert st["mdd80"] == pytest.approx(stats.min_detectable_difference(st["sd"], 5))
  one = stats.seed_level_test([0.5], [0.25])
  assert one["mdd80"] is None and one["p_signflip"] == 1.0
  json.dumps(st)


def test_mdd80_matches_statsmodels_ttest_power():
  from statsmodels.stats.power import TTestPower

  for n in (2, 3, 4, 5, 10, 30):
    effect = TTestPower().solve_power(
      effect_size=None, nobs=n, alpha=0.05, power=0.8, alternative="two-sided"
    )
    assert stats.min_detectable_difference(0.03, n) == pytest.approx(0.03 * effect, rel=1e-5)
    # The two-t approximation (t_{0.975} + t_{0.8}) / sqrt(n) is close from 3 seeds on.
    approx = (sps.t.ppf(0.975, n - 1) + sps.t.ppf(0.8, n - 1)) / math.sqrt(n)
    if n >= 3:
      assert effect == pytest.approx(approx, rel=0.06)
  assert stats.min_detectable_difference(float("nan"), 5) is None
  assert stats.min_detectable_difference(0.1, 1) is None
  assert stats.min_detectable_difference(None, 3) is None
  assert stats.min_detectable_difference(0.0, 3) == 0.0


def test_mdd80_has_80_percent_power_by_monte_carlo():
  rng = np.random.default_rng(5)
  n, sd, sims = 5, 0.02, 20000
  mdd = stats.min_detectable_difference(sd, n)
  d = rng.normal(mdd, sd, size=(sims, n))
  p = sps.ttest_1samp(d, 0.0, axis=1).pvalue
  power = float(np.mean(p < 0.05))
  assert abs(power - 0.8) < 0.015, power  # MC std error 0.003
  # Half the difference is detected far less often.
  p_half = sps.ttest_1samp(rng.normal(mdd / 2, sd, size=(sims, n)), 0.0, axis=1).pvalue
  assert float(np.mean(p_half < 0.05)) < 0.45


def _coverage(simulate, shared, studies=200, resamples=1000):
  hits = 0
  for i in range(studies):
    diffs, truth = simulate(np.random.default_rng(1000 + i))
    low, high = stats.two_stage_bootstrap_ci(
      diffs, shared_queries=shared, num_resamples=resamples, seed=i
    )
    hits += low <= truth <= high
  return hits / studies


def test_two_stage_bootstrap_covers_the_truth_one_dataset_per_seed():
  # d[s, q] = mu + u_s (seed: the trained model pair) + e_sq (query), each seed its own queries.
  mu, n, m, sd_seed, sd_query = 0.03, 10, 40, 0.05, 0.1

  def simulate(rng):
    u = rng.normal(0, sd_seed, n)
    return [mu + u[s] + rng.normal(0, sd_query, m) for s in range(n)], mu

  # (0.93 here; a bootstrap of the queries alone, blind to the seed variance, covers 0.47.)
  cov = _coverage(simulate, shared=False)
  assert 0.85 <= cov <= 0.99, cov


def test_two_stage_bootstrap_covers_the_truth_with_shared_queries():
  # One dataset for all seeds: d[s, q] = mu + u_s + v_q (query effect shared) + e_sq.
  mu, n, m = -0.02, 10, 40

  def simulate(rng):
    u, v = rng.normal(0, 0.04, n), rng.normal(0, 0.05, m)
    return [mu + u[s] + v + rng.normal(0, 0.05, m) for s in range(n)], mu

  cov = _coverage(simulate, shared=True)
  assert 0.85 <= cov <= 0.99, cov


def test_two_stage_bootstrap_is_deterministic_and_includes_the_seed_variance():
  rng = np.random.default_rng(3)
  diffs = [0.02 * s + rng.normal(0, 0.05, 30) for s in range(5)]
  ci = stats.two_stage_bootstrap_ci(diffs, seed=7)
  assert ci == stats.two_stage_bootstrap_ci(diffs, seed=7)
  assert ci != stats.two_stage_bootstrap_ci(diffs, seed=8)
  point = float(np.mean([d.mean() for d in diffs]))
  assert ci[0] < point < ci[1]
  # Seeds that differ only in their offset: the query stage alone sees no variation, the seed
  # stage does.
  flat = [np.full(20, 0.01 * s) for s in range(6)]
  low, high = stats.two_stage_bootstrap_ci(flat, seed=0)
  assert high - low > 0.02
  assert stats.two_stage_bootstrap_ci([rng.random(10)]) is None  # one seed: no model variance
  assert stats.two_stage_bootstrap_ci(diffs, num_resamples=0) is None
  with pytest.raises(ValueError, match="same queries"):
    stats.two_stage_bootstrap_ci([np.ones(3), np.ones(4)], shared_queries=True)


def test_simultaneous_ci_matches_the_bonferroni_formula():
  from statsmodels.stats.weightstats import DescrStatsW

  d = np.array([0.03, 0.01, 0.05, 0.02, 0.04, 0.00])
  for m in (1, 4, 16):
    ci = stats.simultaneous_ci(float(d.mean()), float(d.std(ddof=1)), d.size, m)
    assert ci == pytest.approx(list(DescrStatsW(d).tconfint_mean(alpha=0.05 / m)), abs=1e-12)
  # Excluding 0 implies a Holm-adjusted p < 0.05 over the same family.
  rng = np.random.default_rng(9)
  for _ in range(200):
    tests = [stats.seed_level_test(rng.normal(0.02, 0.02, 5), np.zeros(5)) for _ in range(6)]
    fam = stats.adjust_family(tests, "holm")
    for t in fam:
      low, high = stats.simultaneous_ci(t["diff"], t["sd"], t["n"], t["family_size"])
      if low > 0 or high < 0:
        assert t["p_adjusted"] < 0.05
  assert all(math.isnan(x) for x in stats.simultaneous_ci(0.1, float("nan"), 3, 2))


@pytest.mark.parametrize(
  "p_adjusted,diff,mdd80,mean_b,want",
  [
    (0.01, 0.02, 0.05, 0.2, "joint ahead (significant)"),
    (0.049, -0.02, 0.01, 0.2, "joint behind (significant)"),
    (0.20, 0.01, 0.05, 0.2, "inconclusive (underpowered)"),  # 0.05 > 0.16 * 0.2 = 0.032
    (0.20, 0.01, 0.03, 0.2, "no significant difference"),  # 0.03 <= 0.032
    (0.05, 0.01, 0.01, 0.2, "no significant difference"),  # p = alpha is not significant
    (float("nan"), 0.01, 0.0, 0.2, "inconclusive (underpowered)"),  # no seed-level test
    (0.20, 0.01, None, 0.2, "inconclusive (underpowered)"),
    (0.20, 0.01, 0.01, 0.0, "inconclusive (underpowered)"),  # any mdd > 16% of 0
    (None, None, None, None, "inconclusive (underpowered)"),
  ],
)
def test_verdict_on_hand_made_cases(p_adjusted, diff, mdd80, mean_b, want):
  assert stats.verdict(p_adjusted, diff, mdd80, mean_b) == want
  assert want in stats.VERDICTS


def test_verdict_boundary_and_text():
  mean_b = 0.25
  assert stats.verdict(0.5, 0.0, 0.16 * mean_b, mean_b) == "no significant difference"
  assert stats.verdict(0.5, 0.0, 0.16 * mean_b + 1e-9, mean_b) == "inconclusive (underpowered)"
  st = {"p_adjusted": 0.4, "diff": 0.01, "mdd80": 0.05, "n": 3, "sd": 0.02, "family_size": 4}
  st.update(stats.verdict_fields(st, 0.2))
  assert st["verdict"] == "inconclusive (underpowered)"
  assert st["underpowered_below"] == pytest.approx(0.032)
  assert stats.verdict_text(st) == "inconclusive (underpowered: could not detect less than 0.0500)"
  assert st["ci_simultaneous_level"] == pytest.approx(1 - 0.05 / 4)
  assert stats.verdict_text({"verdict": "joint ahead (significant)"}) == "joint ahead (significant)"
  assert "1 paired seed" in stats.verdict_text({"verdict": "inconclusive (underpowered)", "n": 1})


def test_compare_models_reports_signflip_bootstrap_mdd_and_verdict(tmp_path):
  rng = np.random.default_rng(21)
  n = 25
  base = rng.random(n)
  joint = [
    _write_eval(tmp_path / f"j{s}", {"search": base + 0.05 + rng.normal(0, 0.1, n)}, seed=s)
    for s in range(4)
  ]
  search = [
    _write_eval(tmp_path / f"s{s}", {"search": base + rng.normal(0, 0.1, n)}, seed=s)
    for s in range(4)
  ]
  res = stats.compare_models({"joint": joint, "search": search}, task="search", seed=3)
  (c,) = res["comparisons"]
  st = c["seed_test"]
  by = {r["model"]: r["per_seed"] for r in res["results"]}
  d = np.subtract(by["joint"], by["search"])
  assert st["p_signflip"] == pytest.approx(_python_signflip(d), abs=1e-12)
  assert st["mdd80"] == pytest.approx(stats.min_detectable_difference(float(d.std(ddof=1)), 4))
  pq = [
    json.loads((tmp_path / f"{m}{s}" / "eval" / "test" / "per_query.json").read_text())["search"][
      "recall@30"
    ]
    for m in ("j", "s")
    for s in range(4)
  ]
  ids = sorted(f"q{i}" for i in range(n))  # the pairing order: query ids sorted
  diffs = [[pq[s][q] - pq[4 + s][q] for q in ids] for s in range(4)]
  assert st["ci95_bootstrap"] == pytest.approx(
    stats.two_stage_bootstrap_ci(diffs, shared_queries=True, seed=3)
  )
  assert st["bootstrap"]["resamples"] == 2000
  assert (
    c["verdict"]
    == st["verdict"]
    == stats.verdict(st["p_adjusted"], st["diff"], st["mdd80"], c["mean_b"])
  )
  assert c["label"] == "conditional on the trained models"
  md = stats.to_markdown(res)
  assert "conditional on the trained models" in md and "unadjusted" in md
  assert stats.verdict_text(st) in md
  json.dumps(res)


def test_compare_within_seeds_bootstraps_each_seeds_own_queries(tmp_path):
  rng = np.random.default_rng(22)
  joint, search, diffs = [], [], []
  for s in range(3):
    m = 10 + 5 * s  # each seed's dataset has its own queries
    a, b = rng.random(m), rng.random(m)
    joint.append(_write_eval(tmp_path / f"j{s}", {"rec": a}, seed=s))
    search.append(_write_eval(tmp_path / f"r{s}", {"rec": b}, seed=s))
    ids = sorted(f"q{i}" for i in range(m))
    diffs.append([a[int(q[1:])] - b[int(q[1:])] for q in ids])
  res = stats.compare_within_seeds({"joint": joint, "rec": search}, task="rec")
  st = res["comparisons"][0]["seed_test"]
  assert st["ci95_bootstrap"] == pytest.approx(stats.two_stage_bootstrap_ci(diffs, seed=0))
  assert st["bootstrap"]["queries"] == "one set per seed"
  assert st["verdict"] in stats.VERDICTS


# --------------------------------------------- refusals: protocol, duplicates (issue 31 item 4)


@pytest.mark.parametrize(
  "info_a,info_b,field",
  [
    ({"decode_method": "beam"}, {"decode_method": "topk_exact"}, "info.decode_method"),
    ({"decode": {"method": "beam"}}, {"decode_method": "topk_exact"}, "info.decode_method"),
    ({"split": "test"}, {"split": "valid"}, "info.split"),
    ({"ks": [1, 10, 30]}, {"ks": [1, 30]}, "info.ks"),
    (
      {"decode": {"num_return_sequences": 30}},
      {"decode": {"num_return_sequences": 10}},
      "num_return_sequences",
    ),
    ({"exclude_seen": True}, {"exclude_seen": False}, "info.exclude_seen"),
    ({"exclude_seen": True}, {}, "info.exclude_seen"),  # not recorded: never excluded
  ],
)
def test_runs_evaluated_differently_are_refused(tmp_path, info_a, info_b, field):
  groups = _pair(tmp_path, {"info": info_a}, {"info": info_b})
  for compare in (stats.compare_models, stats.compare_within_seeds):
    with pytest.raises(stats.IncomparableRunsError) as e:
      compare(groups, task="search")
    msg = str(e.value)
    assert groups["joint"][0] in msg and groups["search"][0] in msg and field in msg


def test_same_protocol_and_unrecorded_fields_pair(tmp_path):
  same = {"decode_method": "beam", "split": "test", "ks": [30, 1], "exclude_seen": False}
  groups = _pair(tmp_path / "a", {"info": same}, {"info": dict(same, ks=[1, 30])})
  assert len(stats.compare_models(groups, task="search")["comparisons"]) == 1
  # A baseline records no decoder: paired with any.
  groups = _pair(tmp_path / "b", {"info": same}, {"info": {"model": "pop_s", "split": "test"}})
  assert len(stats.compare_models(groups, task="search")["comparisons"]) == 1


def test_decoder_mismatch_within_one_model_is_refused(tmp_path):
  vals = np.linspace(0.1, 0.9, 10)
  joint = [
    _write_eval(tmp_path / f"j{s}", {"search": vals}, seed=s, info={"decode_method": m})
    for s, m in ((0, "beam"), (1, "topk_exact"))
  ]
  search = [_write_eval(tmp_path / f"s{s}", {"search": vals[::-1]}, seed=s) for s in (0, 1)]
  with pytest.raises(stats.IncomparableRunsError, match="topk_exact"):
    stats.compare_models({"joint": joint, "search": search}, task="search")


def test_duplicate_run_directories_and_seeds_are_refused(tmp_path):
  vals = np.linspace(0.1, 0.9, 10)
  j0 = _write_eval(tmp_path / "j0", {"search": vals}, seed=0)
  j0b = _write_eval(tmp_path / "j0b", {"search": vals + 0.01}, seed=0)
  s0 = _write_eval(tmp_path / "s0", {"search": vals[::-1]}, seed=0)
  s1 = _write_eval(tmp_path / "s1", {"search": vals[::-1]}, seed=1)
  for compare in (stats.compare_models, stats.compare_within_seeds):
    with pytest.raises(ValueError, match="same evaluation .* listed twice") as e:
      compare({"joint": [j0, j0], "search": [s0, s1]}, task="search")
    assert j0 in str(e.value)
    # The run dir and its eval dir are one evaluation too.
    with pytest.raises(ValueError, match="listed twice"):
      compare({"joint": [j0, f"{j0}/eval/test"], "search": [s0, s1]}, task="search")
    with pytest.raises(ValueError, match="both ran seed 0") as e:
      compare({"joint": [j0, j0b], "search": [s0, s1]}, task="search")
    assert j0 in str(e.value) and j0b in str(e.value)
  # A baseline run once may stand against every seed when the caller says so.
  j1 = _write_eval(tmp_path / "j1", {"search": vals + 0.02}, seed=1)
  pop = _write_eval(tmp_path / "pop", {"search": vals[::-1]})
  with pytest.raises(ValueError, match="listed twice"):
    stats.compare_models({"joint": [j0, j1], "pop": [pop, pop]}, task="search")
  res = stats.compare_models(
    {"joint": [j0, j1], "pop": [pop, pop]}, task="search", repeated=("pop",)
  )
  assert res["comparisons"][0]["seed_test"]["n"] == 2
  with pytest.raises(ValueError, match="one directory"):
    stats.compare_models({"joint": [j0, j1], "pop": [pop, s0]}, task="search", repeated=("pop",))
