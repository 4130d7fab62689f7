"""The report's statistics from a fabricated analysis (no training, seconds): report.json carries
p_signflip, ci95_bootstrap, mdd80 and a verdict from the vocabulary for every comparison, the
query-level test is labelled conditional on the trained models, and the markdown says what an
underpowered comparison could not detect and that its 95% intervals are unadjusted."""

import json
import os

import numpy as np
import pytest

from gr_jax.analysis import stats
from gr_jax.evaluation import runs
from gr_jax.schema import TASKS
from gr_jax.study import analyses
from gr_jax.study import report
from tests.study import fabricate

VERDICTS = {
  "joint ahead (significant)",
  "joint behind (significant)",
  "no significant difference",
  "inconclusive (underpowered)",
}


def _write_run(d, task_values, seed, metric):
  pq, summary = {}, {"info": {"decode_method": "beam", "split": "test"}}
  for task, vals in task_values.items():
    ids = [f"q{i}" for i in range(len(vals))]
    pq[task] = {metric: {q: float(v) for q, v in zip(ids, vals)}}
    summary[task] = {metric: float(np.mean(vals))}
    runs.write_qrels(os.path.join(d, "eval", "test", f"{task}.qrels"), {q: {q: 1} for q in ids})
  runs.write_json(os.path.join(d, "eval", "test", "metrics.json"), summary)
  runs.write_json(os.path.join(d, "eval", "test", "per_query.json"), pq)
  runs.write_json(os.path.join(d, "config.json"), {"seed": seed})
  return d


def _fabricated_report(tmp_path, seeds, manifest_stats=None) -> str:
  """A quickstart plan whose one point has a fabricated analysis.json (`manifest_stats`: the
  point's dataset statistics, none by default); writes its report, returns report.md's path."""
  plan, point, metric = fabricate.quickstart_plan(tmp_path, seeds, "epochs")
  rng = np.random.default_rng(0)
  search_base, rec_base = rng.random(40), 0.2 * rng.random(60)
  # Search: joint ahead by 0.1 in every seed. Rec: seed offsets of +-0.05, far larger than 16% of
  # Gen_R's ~0.1: not significant and underpowered.
  rec_offsets = [0.06, -0.05, 0.04, -0.06, 0.05, -0.03]
  groups = {"joint": [], "search": [], "rec": []}
  for s in range(seeds):
    base = str(tmp_path / "runs" / f"seed{s}")
    groups["joint"].append(
      _write_run(
        f"{base}/joint",
        {
          "search": search_base + 0.1 + rng.normal(0, 0.01, 40),
          "rec": rec_base + rec_offsets[s],
        },
        s,
        metric,
      )
    )
    groups["search"].append(
      _write_run(f"{base}/search", {"search": search_base + rng.normal(0, 0.01, 40)}, s, metric)
    )
    groups["rec"].append(_write_run(f"{base}/rec", {"rec": rec_base}, s, metric))
  headline = stats.compare_models(groups, task=["search", "rec"], metric=metric)
  fabricate.write_analysis(
    plan,
    point,
    metric,
    groups,
    headline,
    budget="epochs",
    decode="beam",
    manifest_stats=manifest_stats,
  )
  return report.write_report(plan)


def test_report_json_and_markdown_carry_the_new_statistics(tmp_path):
  seeds = 6
  md_path = _fabricated_report(tmp_path, seeds)
  with open(os.path.join(os.path.dirname(md_path), "report.json")) as f:
    rep = json.load(f)
  assert set(rep["verdicts"]) == VERDICTS
  by_task = {c["task"]: c for c in rep["comparisons"]}
  assert set(by_task) == {"search", "rec"}
  for c in rep["comparisons"]:
    assert c["verdict"] in VERDICTS and c["ci95_adjusted"] is False
    assert 0.0 < c["p_signflip"] <= 1.0 and c["p_signflip_min"] == pytest.approx(2 / 2**seeds)
    assert len(c["ci95_bootstrap"]) == 2 and c["mdd80"] > 0
    assert c["ci_simultaneous_level"] == pytest.approx(1 - 0.05 / rep["family_size"])
    assert c["ci_simultaneous"][0] <= c["ci95"][0] <= c["ci95"][1] <= c["ci_simultaneous"][1]
    assert "p_query_conditional" in c and c["num_queries"] in (40, 60)
  search, rec = by_task["search"], by_task["rec"]
  assert search["verdict"] == "joint ahead (significant)" and search["p_seed_adjusted"] < 0.05
  assert search["p_signflip"] == pytest.approx(2 / 2**seeds)  # every seed ahead: the floor
  assert search["ci95_bootstrap"][0] > 0
  assert rec["verdict"] == "inconclusive (underpowered)"
  assert rec["mdd80"] > 0.16 * rec["mean_b"] == pytest.approx(rec["underpowered_below"])
  # The flat test records: seed ones carry the verdict's fields, query ones their label.
  for t in rep["tests"]:
    if t["unit"] == "seed":
      assert t["verdict"] in VERDICTS and "mdd80" in t and "p_signflip" in t
      assert "ci95_bootstrap" in t
    else:
      assert t["label"] == "conditional on the trained models" and t["conditional_on_models"]
  with open(md_path) as f:
    md = f.read()
  lines = {
    line.split(" (epochs, beam): ")[0]: line
    for line in md.splitlines()
    if "(epochs, beam): " in line
  }
  assert lines["- search"].startswith("- search (epochs, beam): joint ahead (significant): ")
  assert lines["- recommendation"].startswith(
    "- recommendation (epochs, beam): inconclusive (underpowered: could not detect less than "
    f"{rec['mdd80']:.4f}): "
  )
  assert "95% CI" in lines["- search"] and "unadjusted" in lines["- search"]
  assert "(conditional on the trained models)" in lines["- recommendation"]


def test_report_prints_the_manifest_coverage(tmp_path):
  # The simulator with held-out targets drawn from every item: prepare's default rule drops those
  # that are not training targets of both tasks, and the report shows the shares and the drops.
  from gr_jax.data import ProcessedDataset, prepare_dataset
  from tests.data.conftest import tiny_config

  c = tiny_config(heldout_in_both=False)
  manifest = ProcessedDataset(prepare_dataset(c, str(tmp_path / "ds"))).manifest
  dropped = {k: v for k, v in manifest["counts"].items() if "dropped_not_trained" in k}
  assert dropped["search_test_dropped_not_trained_in_both"] > 0
  md_path = _fabricated_report(tmp_path, 3, analyses.manifest_stats(manifest))
  with open(os.path.join(os.path.dirname(md_path), "report.json")) as f:
    cov = json.load(f)["coverage"]
  assert list(cov) == ["default"]
  keys = [f"{t}_{s}_in_{o}_train" for t in TASKS for s in ("valid", "test") for o in TASKS]
  assert cov["default"]["shares"] == {k: manifest["overlap"][k] for k in keys}
  assert set(cov["default"]["shares"].values()) == {1.0}
  assert cov["default"]["rule"] == "trained_in_both"
  assert cov["default"]["dropped"] == dropped
  with open(md_path) as f:
    lines = [line for line in f.read().splitlines() if "in search / rec training targets" in line]
  assert len(lines) == 2  # one per task
  assert lines[0].startswith("- search: in search / rec training targets: valid 1.0000 / 1.0000")
  assert f"test {dropped['rec_test_dropped_not_trained_in_both']} targets" in lines[1]
  # A study without dataset statistics (an analysis.json from before the knob) still reports.
  md_path = _fabricated_report(tmp_path / "old", 3)
  with open(os.path.join(os.path.dirname(md_path), "report.json")) as f:
    old = json.load(f)["coverage"]["default"]
  assert old["rule"] is None and set(old["shares"].values()) == {None} and old["dropped"] == {}
