"""The sweep's slope test (report.py `sweep_slope_tests`) from fabricated analyses (no training,
seconds): the joint model's per-seed gain at the highest x minus at the lowest, tested paired over
seeds, checked by hand and against scipy; its place in the study's one Holm family (checked
against statsmodels); no slope without a sweep; low and high follow the realised statistic."""

import copy
import json
import os

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from gr_jax.analysis import stats
from gr_jax.schema import TASKS
from gr_jax.study import report
from tests.study import fabricate
from tests.study.test_report_verdicts import _fabricated_report, _write_run

SEEDS = 4
STATISTIC = "popularity_kl.search_rec"
# The task-specific model's per-seed means at the first point (each later point adds 0.01, so the
# low point's mean is told apart), and the joint model's per-seed absolute gain over it at the
# three points, in plan order. Search: the gain grows in every seed. Rec: no trend.
SPECIFIC = {"search": [0.30, 0.32, 0.28, 0.31], "rec": [0.10, 0.12, 0.11, 0.09]}
GAINS = {
  "search": ([0.01, 0.02, 0.00, 0.015], [0.03, 0.01, 0.02, 0.04], [0.05, 0.07, 0.04, 0.06]),
  "rec": ([0.02, -0.01, 0.03, 0.00], [0.00, 0.01, 0.02, -0.02], [0.01, 0.02, -0.01, 0.03]),
}


_flat_tests = report._flat_tests  # pylint: disable=protected-access
_fmt_p = report._fmt_p  # pylint: disable=protected-access


def _sweep(tmp_path, values=(0.0, 0.5, 1.0), realised=None, seed_ids=None):
  """A three-point S1 sweep whose point i has the runs of SPECIFIC and GAINS[task][i] and its
  analysis.json (realised: each point's `STATISTIC`, the sweep's x; None: x is the value;
  seed_ids: point index -> the config.json seeds of its runs, 0..SEEDS-1 by default) -> plan."""
  plan, metric = fabricate.sweep_plan(tmp_path, SEEDS, values, STATISTIC if realised else None)
  rng = np.random.default_rng(0)
  for i, point in enumerate(plan.points):
    # Per-query values around each run's mean: the per-seed means are the fabricated numbers.
    base = {t: 0.1 * rng.random(n) for t, n in (("search", 30), ("rec", 40))}

    def run(d, means, seed):
      values = {t: base[t] - base[t].mean() + m for t, m in means.items()}
      return _write_run(d, values, seed, metric)  # pylint: disable=cell-var-from-loop

    groups = {"joint": [], "search": [], "rec": []}
    for s, seed in enumerate((seed_ids or {}).get(i, range(SEEDS))):
      root = tmp_path / "runs" / point.name / f"seed{seed}"
      spec = {t: SPECIFIC[t][s] + 0.01 * i for t in TASKS}
      groups["joint"].append(
        run(f"{root}/joint", {t: spec[t] + GAINS[t][i][s] for t in TASKS}, seed)
      )
      groups["search"].append(run(f"{root}/search", {"search": spec["search"]}, seed))
      groups["rec"].append(run(f"{root}/rec", {"rec": spec["rec"]}, seed))
    fabricate.write_analysis(
      plan,
      point,
      metric,
      groups,
      stats.compare_models(groups, task=list(TASKS), metric=metric),
      budget="matched_steps",
      decode="beam",
      sweep_value=values[i],
      manifest_stats={STATISTIC: realised[i]} if realised else None,
    )
  return plan


def _analyses(plan):
  out = []
  for p in plan.points:
    with open(os.path.join(plan.workdir, "analysis", p.name, "analysis.json")) as f:
      out.append(json.load(f))
  return out


def _report(plan):
  md_path = report.write_report(plan)
  with open(os.path.join(plan.workdir, "report.json")) as f:
    rep = json.load(f)
  with open(md_path) as f:
    return rep, f.read()


def test_slope_is_the_paired_difference_of_the_end_gains(tmp_path):
  plan = _sweep(tmp_path)
  analyses = _analyses(plan)
  slopes = report.sweep_slope_tests(plan, analyses)
  assert [s["task"] for s in slopes] == list(TASKS)
  for s in slopes:
    task = s["task"]
    low, high = np.array(GAINS[task][0]), np.array(GAINS[task][2])  # the middle point: not used
    d = high - low
    assert (s["kind"], s["unit"], s["a"], s["b"]) == ("slope", "seed", "joint", task)
    assert (s["budget"], s["decode"], s["metric"]) == ("matched_steps", "beam", "recall@30")
    assert (s["point_low"], s["point_high"]) == (plan.points[0].name, plan.points[2].name)
    assert (s["x_low"], s["x_high"], s["x_name"]) == (0.0, 1.0, "data.sim.shuffle_fraction")
    assert s["seeds"] == list(range(SEEDS))
    assert s["gain_low"] == pytest.approx(low) and s["gain_high"] == pytest.approx(high)
    assert s["per_seed"] == pytest.approx(d)
    assert s["n"] == SEEDS and s["diff"] == pytest.approx(d.mean())
    assert s["p_value"] == pytest.approx(sps.ttest_rel(high, low).pvalue)
    half = sps.t.ppf(0.975, SEEDS - 1) * d.std(ddof=1) / np.sqrt(SEEDS)
    assert s["ci95"] == pytest.approx([d.mean() - half, d.mean() + half])
    # The verdict's reference: the task-specific model's mean at the LOW point.
    assert s["mean_b"] == pytest.approx(np.mean(SPECIFIC[task]))
  assert slopes[0]["p_signflip"] == pytest.approx(2 / 2**SEEDS)  # every seed's gain grew
  assert json.loads(json.dumps(slopes)) == slopes  # report.json holds them as they are
  # Every (budget, decoder) block gets its slopes, the first block (the sweep table's) first.
  for a in analyses:
    second = copy.deepcopy(a["blocks"][0])
    second["decode"] = "topk_exact"
    for rec in second["headline"]["results"]:
      if rec["model"] == "joint":
        rec["per_seed"] = [v + 0.01 * j for j, v in enumerate(rec["per_seed"])]
    a["blocks"].append(second)
  both = report.sweep_slope_tests(plan, analyses)
  assert [(s["decode"], s["task"]) for s in both] == [
    (dec, t) for dec in ("beam", "topk_exact") for t in TASKS
  ]
  for s, t in zip(both[:2], slopes):
    assert s["per_seed"] == pytest.approx(t["per_seed"])
  for s, t in zip(both[2:], slopes):  # joint +0.01 j at every point: the slope is unchanged
    assert s["per_seed"] == pytest.approx(t["per_seed"])
    assert s["gain_low"] == pytest.approx(np.add(t["gain_low"], [0.0, 0.01, 0.02, 0.03]))


def test_slopes_join_the_study_holm_family(tmp_path):
  plan = _sweep(tmp_path)
  headline = stats.adjust_family(_flat_tests(_analyses(plan), "headline"), "holm")
  m_headline = headline[0]["family_size"]
  assert m_headline == 3 * 2 * 2  # points x tasks x units
  rep, md = _report(plan)
  slopes = rep["sweep_slopes"]
  assert [s["task"] for s in slopes] == list(TASKS)
  m = m_headline + len(slopes)
  assert rep["family_size"] == m
  family = rep["tests"] + slopes
  assert len(family) == m and all(t["family_size"] == m for t in family)
  ps = [t["p_value"] for t in family]
  assert all(np.isfinite(ps))
  _, holm, _, _ = multipletests(ps, method="holm")
  assert [t["p_adjusted"] for t in family] == pytest.approx(list(holm))
  # The slopes stay out of the per-point records that the headline tables read.
  assert all(t.get("kind") != "slope" and "point" in t for t in rep["tests"])
  assert len(rep["comparisons"]) == 3 * 2 and all("point" in c for c in rep["comparisons"])
  assert [(r["point"], r["task"]) for r in rep["sweep"]] == [
    (p.name, t) for p in plan.points for t in TASKS
  ]
  # Annotated as seed-level records: verdict against 16% of the low point's task-specific mean,
  # simultaneous interval over the whole family.
  search, rec = slopes
  for s in slopes:
    assert s["underpowered_below"] == pytest.approx(0.16 * s["mean_b"])
    assert s["ci_simultaneous_level"] == pytest.approx(1 - 0.05 / m)
    assert s["ci_simultaneous"][0] < s["ci95"][0] < s["ci95"][1] < s["ci_simultaneous"][1]
  assert search["verdict"] == "joint ahead (significant)" and search["p_adjusted"] < 0.05
  assert search["slope_verdict"] == "gain grows (significant)"
  assert rec["verdict"] == "inconclusive (underpowered)" and rec["mdd80"] > 0.16 * rec["mean_b"]
  assert rec["slope_verdict"].startswith("inconclusive (underpowered: could not detect less than")
  # The markdown: the slope table after the per-point one, and what the direction is read from.
  sweep = md.split("## Sweep", 1)[1]
  assert "a sweep's direction is read from the verdicts" not in md
  assert "over all 14 tests of the study (the sweep's slope tests included)" in md
  lines = sweep.splitlines()
  head = lines.index(
    "| budget | decoder | task | points (x) | mean slope [95% CI, unadjusted] | simultaneous "
    f"{100 * (1 - 0.05 / m):.2f}% CI | p seed (adjusted) | p sign-flip (unadjusted) | mdd80 | "
    "verdict |"
  )
  assert lines[head - 2].startswith("Slope (gain at the highest point minus at the lowest, paired")
  row = lines[head + 2]
  assert row == (
    f"| matched_steps | beam | search | {plan.points[0].name} (0.0000) → {plan.points[2].name} "
    f"(1.0000) | {search['diff']:+.4f} [{search['ci95'][0]:.4f}, {search['ci95'][1]:.4f}] | "
    f"[{search['ci_simultaneous'][0]:.4f}, {search['ci_simultaneous'][1]:.4f}] | "
    f"{_fmt_p(search['p_adjusted'])} | 0.1250 | {search['mdd80']:.4f} | "
    "gain grows (significant) |"
  )
  assert lines[head + 3].startswith("| matched_steps | beam | rec | ")
  assert any(x.startswith("The sweep's direction (does the joint model's gain") for x in lines)
  assert (
    lines.index(
      "| point | x | task | gain % (mean ± std over seeds) | diff [95% CI, "
      "unadjusted] | p seed (adjusted) | verdict |"
    )
    < head
  )


def test_no_sweep_no_slopes_and_the_family_is_unchanged(tmp_path):
  md_path = _fabricated_report(tmp_path, 3)
  with open(os.path.join(os.path.dirname(md_path), "report.json")) as f:
    rep = json.load(f)
  assert rep["sweep_slopes"] == [] and rep["sweep"] == []
  assert rep["family_size"] == len(rep["tests"]) == 2 * 2  # tasks x units
  plan = fabricate.quickstart_plan(tmp_path, 3, "epochs")[0]
  assert report.sweep_slope_tests(plan, _analyses(plan)) == []
  with open(md_path) as f:
    md = f.read()
  assert "## Sweep" not in md and "Slope (" not in md and "slope tests included" not in md
  # A sweep without an order (categorical x, no realised statistic) or without a spread in x
  # makes no slope either.
  plan = _sweep(tmp_path / "sweep")
  analyses = _analyses(plan)
  for a in analyses:
    a["sweep_value"] = a["point"]
  assert report.sweep_slope_tests(plan, analyses) == []
  for a in analyses:
    a["sweep_value"] = 0.5
  assert report.sweep_slope_tests(plan, analyses) == []


def test_low_and_high_follow_the_realised_statistic(tmp_path):
  # The knob's order 0.0 < 0.5 < 1.0, the realised statistic's 0.9 > 0.1 < 0.5: low is the
  # middle value's point, high the first one's.
  plan = _sweep(tmp_path, realised=(0.9, 0.1, 0.5))
  slopes = report.sweep_slope_tests(plan, _analyses(plan))
  for s in slopes:
    assert (s["point_low"], s["point_high"]) == (plan.points[1].name, plan.points[0].name)
    assert (s["x_low"], s["x_high"], s["x_name"]) == (0.1, 0.9, STATISTIC)
    d = np.subtract(GAINS[s["task"]][0], GAINS[s["task"]][1])
    assert s["per_seed"] == pytest.approx(d) and s["diff"] == pytest.approx(d.mean())
    assert s["mean_b"] == pytest.approx(np.mean(SPECIFIC[s["task"]]) + 0.01)  # point 1's
  rep, md = _report(plan)
  assert [s["point_low"] for s in rep["sweep_slopes"]] == [plan.points[1].name] * 2
  assert f"| {plan.points[1].name} (0.1000) → {plan.points[0].name} (0.9000) |" in md


def test_ends_with_different_seeds_are_refused(tmp_path):
  plan = _sweep(tmp_path, seed_ids={2: [0, 1, 2, 7]})
  with pytest.raises(ValueError, match="both ends need the same seeds"):
    report.sweep_slope_tests(plan, _analyses(plan))
