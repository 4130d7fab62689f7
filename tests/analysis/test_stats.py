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
  np.testing.assert_allclose(stats.adjust_pvalues(p, method), multipletests(p, method=sm)[1], atol=1e-15)


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


def _write_eval(d, task_values, split="test"):
  """A fake run dir with eval/<split>/metrics.json + per_query.json."""
  summary, pq = {}, {}
  for task, vals in task_values.items():
    pq[task] = {"recall@30": {f"q{i}": float(v) for i, v in enumerate(vals)}}
    summary[task] = {"recall@30": float(np.mean(vals))}
  runs.write_json(str(d / "eval" / split / "metrics.json"), summary)
  runs.write_json(str(d / "eval" / split / "per_query.json"), pq)
  return str(d)


def test_compare_models_on_fake_runs(tmp_path):
  rng = np.random.default_rng(0)
  n = 40
  base = rng.random(n)
  groups = {"joint": [], "search": [], "rec": []}
  noise = [rng.normal(0, 0.05, n) for _ in range(2)]
  for s in range(2):
    groups["joint"].append(_write_eval(tmp_path / f"j{s}", {"search": base + 0.1 + 0.01 * s,
                                                            "rec": base}))
    groups["search"].append(_write_eval(tmp_path / f"s{s}", {"search": base + noise[s]}))
    groups["rec"].append(_write_eval(tmp_path / f"r{s}", {"rec": base + rng.normal(0, .05, n)}))
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
  ps = [comps[k]["p_value"] for k in [("search", "search"), ("rec", "rec")]]
  holm = multipletests([c["p_value"] for c in res["comparisons"]], method="holm")[1]
  assert [c["p_adjusted"] for c in res["comparisons"]] == pytest.approx(list(holm))
  md = stats.to_markdown(res)
  assert "Recall@30" in md and "joint vs search" in md
  json.dumps(res)  # serialisable
  res_r = stats.compare_models(groups, task="search", metric="recall@30", test="randomization",
                               correction="bonferroni", num_samples=2000)
  assert res_r["comparisons"][0]["p_value"] < 0.01


def test_missing_eval_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no eval/test/metrics.json"):
    stats.compare_models({"joint": [str(tmp_path)]}, task="search", metric="recall@30")
