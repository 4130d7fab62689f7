"""report.json "h1" / "h2" and their report.md lines (no training, seconds): the seed-level numbers
of each hypothesis against scipy and a brute-force sign-flip enumeration, the three verdicts, the
disabled and missing cases, and the per-seed records `analyses.hypothesis_seeds` writes from run
files, checked by hand."""

import itertools
import json
import os
import shutil

import numpy as np
import pytest
from scipy import stats as sps

from gr_jax.analysis import cooccurrence
from gr_jax.data import ProcessedDataset
from gr_jax.evaluation import runs
from gr_jax.schema import TASKS
from gr_jax.study import analyses
from gr_jax.study import plan as plan_lib
from gr_jax.study import report
from tests.baselines.small_data import prepare_small
from tests.study.test_plan import load_config
from tests.study.test_report_verdicts import _fabricated_report


def _expected(d):
  """Mean, 95% t interval, paired t-test p and brute-force exact sign-flip p of differences d."""
  d = np.asarray(d, float)
  n = d.size
  half = sps.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)
  flips = [np.mean(np.asarray(s) * d) for s in itertools.product((1.0, -1.0), repeat=n)]
  p_flip = np.mean([abs(m) >= abs(d.mean()) - 1e-12 for m in flips])
  p_t = sps.ttest_1samp(d, 0.0).pvalue
  return d.mean(), [d.mean() - half, d.mean() + half], p_t, p_flip


def test_hypothesis_test_numbers_and_verdicts():
  a = [0.9, 1.3, 1.1, 1.6, 1.2]
  b = [0.5, 0.6, 0.8, 0.7, 0.9]
  t = report.hypothesis_test(a, b)
  mean, ci, p_t, p_flip = _expected(np.subtract(a, b))
  assert t["per_seed"] == pytest.approx(list(np.subtract(a, b)))
  assert t["n_seeds"] == 5 and t["mean"] == pytest.approx(mean)
  assert t["ci95"] == pytest.approx(ci) and t["ci95_adjusted"] is False
  assert t["p_seed"] == pytest.approx(p_t)
  assert t["p_signflip"] == pytest.approx(p_flip) == pytest.approx(2 / 32)  # every seed ahead
  assert t["p_signflip_min"] == pytest.approx(2 / 32)
  assert (t["verdict"], t["reason"]) == ("supported", None)
  # The other direction; an interval holding 0 (with its brute-force sign-flip p).
  assert report.hypothesis_test(b, a)["verdict"] == "not supported"
  mixed = report.hypothesis_test([1.0, 2.0, 3.0, 4.0], [1.5, 1.0, 3.5, 3.0])
  mean, ci, _, p_flip = _expected([-0.5, 1.0, -0.5, 1.0])
  assert mixed["ci95"] == pytest.approx(ci) and ci[0] < 0 < ci[1]
  assert mixed["p_signflip"] == pytest.approx(p_flip)
  assert (mixed["verdict"], mixed["reason"]) == ("inconclusive", "the 95% interval holds 0")
  # Too few seeds (a None drops its seed), and seed values that do not vary: inconclusive.
  few = report.hypothesis_test([1.0, None, 2.0], [0.0, 0.5, 0.5])
  assert few["per_seed"] == [1.0, None, 1.5] and few["n_seeds"] == 2
  assert few["verdict"] == "inconclusive" and few["reason"] == "2 paired seeds, fewer than 3"
  flat = report.hypothesis_test([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
  assert flat["verdict"] == "inconclusive" and "do not vary" in flat["reason"]
  assert flat["p_seed"] is None  # no p-value claimed for a constant shift (stats.seed_level_test)


def _study(tmp_path, seeds, analyses_on=False):
  """The plan `_fabricated_report` wrote its analysis.json for (same config and workdir)."""
  config = load_config("quickstart", f"seeds={seeds}")
  config.reproduce.budgets = ("epochs",)
  config.reproduce.decoders = ("beam",)
  config.reproduce.analyses = analyses_on
  return plan_lib.build_plan(config, str(tmp_path / "study"))


def _seed_records(values: dict) -> dict:
  """analysis.json "hypothesis_seeds" from per-seed values {(hyp, task): (joint, specific)}."""
  out = {"h1": [], "h2": [], "skipped": [], "reason": None, "k": 30, "eps": 1e-6, "window": 10}
  for (hyp, task), (joint, specific) in values.items():
    for seed, (j, s) in enumerate(zip(joint, specific)):
      rec = {"budget": "epochs", "decode": "beam", "task": task, "seed": seed, "data": "shared"}
      if hyp == "h1":  # only kl_other is the statistic; the others are descriptive
        rec.update(
          joint={"kl_other": j, "kl_own": 1.0 + seed, "kl_target": 2.0},
          specific={"kl_other": s, "kl_own": 1.5, "kl_target": 2.0},
        )
      else:
        rec.update(
          num_related_pairs=7,
          joint={"related_share": j, "cooccurrences": 100, "related_cooccurrences": 10},
          specific={"related_share": s, "cooccurrences": 100, "related_cooccurrences": 10},
        )
      out[hyp].append(rec)
  return out


def test_report_h1_h2_sections_from_known_seed_values(tmp_path):
  md_path = _fabricated_report(tmp_path, 4)  # analyses off: the sections say so, no numbers
  with open(os.path.join(os.path.dirname(md_path), "report.json")) as f:
    rep = json.load(f)
  for hyp in ("h1", "h2"):
    assert [r["task"] for r in rep[hyp]] == list(TASKS)
    for r in rep[hyp]:
      assert r["verdict"] is None and r["mean"] is None and r["per_seed"] == []
      assert r["reason"].startswith("reproduce.analyses = False")
  assert rep["hypotheses"]["verdicts"] == ["supported", "not supported", "inconclusive"]
  with open(md_path) as f:
    md = f.read()
  assert md.count("- H1 (popularity): not computed: reproduce.analyses = False") == 1
  assert md.count("- H2 (representation): not computed: reproduce.analyses = False") == 1

  values = {
    # H1, search: the joint model nearer rec's popularity in every seed -> supported.
    ("h1", "search"): ([0.5, 0.6, 0.7, 0.6], [1.0, 1.2, 1.1, 1.3]),
    # H1, rec: farther in every seed -> not supported.
    ("h1", "rec"): ([0.9, 1.1, 1.0, 1.2], [0.5, 0.6, 0.4, 0.7]),
    # H2, search: mixed -> inconclusive (the interval holds 0).
    ("h2", "search"): ([0.30, 0.20, 0.35, 0.18], [0.25, 0.26, 0.28, 0.22]),
    # H2, rec: two seeds without any co-occurrence -> 2 paired seeds, inconclusive.
    ("h2", "rec"): ([0.10, 0.12, None, None], [0.05, 0.06, 0.07, 0.08]),
  }
  plan = _study(tmp_path, 4)
  path = os.path.join(plan.workdir, "analysis", plan.points[0].name, "analysis.json")
  with open(path) as f:
    analysis = json.load(f)
  analysis["hypothesis_seeds"] = _seed_records(values)
  runs.write_json(path, analysis)
  md_path = report.write_report(plan)
  with open(os.path.join(os.path.dirname(md_path), "report.json")) as f:
    rep = json.load(f)
  rows = {(r["hypothesis"], r["task"]): r for r in rep["h1"] + rep["h2"]}
  assert set(rows) == set(values)
  for key, (joint, specific) in values.items():
    row = rows[key]
    assert (row["point"], row["budget"], row["decode"]) == ("default", "epochs", "beam")
    assert row["seeds"] == [0, 1, 2, 3]
    # H1's d = KL(specific || other) - KL(joint || other); H2's d = share_joint - share_specific.
    a, b = (specific, joint) if key[0] == "h1" else (joint, specific)
    kept = [i for i in range(4) if a[i] is not None and b[i] is not None]
    d = [a[i] - b[i] for i in kept]
    assert [x for x in row["per_seed"] if x is not None] == pytest.approx(d)
    assert row["n_seeds"] == len(kept)
    if len(kept) >= 3:
      mean, ci, p_t, p_flip = _expected(d)
      assert row["mean"] == pytest.approx(mean) and row["ci95"] == pytest.approx(ci)
      assert row["p_seed"] == pytest.approx(p_t) and row["p_signflip"] == pytest.approx(p_flip)
      assert row["p_signflip_min"] == pytest.approx(2 / 16)
  assert rows["h1", "search"]["verdict"] == "supported"
  assert rows["h1", "rec"]["verdict"] == "not supported"
  assert rows["h2", "search"]["verdict"] == "inconclusive"
  assert rows["h2", "search"]["reason"] == "the simultaneous interval holds 0"
  # The verdicts rest on Bonferroni-simultaneous intervals over the three rows with >= 3 seeds.
  for key in (("h1", "search"), ("h1", "rec"), ("h2", "search")):
    row = rows[key]
    half = sps.t.ppf(1 - 0.05 / 6, row["n_seeds"] - 1) * row["sd"] / row["n_seeds"] ** 0.5
    assert row["family_size"] == 3 and row["ci_simultaneous_level"] == pytest.approx(1 - 0.05 / 3)
    assert row["ci_simultaneous"] == pytest.approx([row["mean"] - half, row["mean"] + half])
  assert "ci_simultaneous" not in rows["h2", "rec"]  # 2 seeds: outside the family
  assert rows["h2", "rec"]["verdict"] == "inconclusive"
  assert rows["h2", "rec"]["per_seed"][2:] == [None, None]
  assert rows["h2", "rec"]["reason"] == "2 paired seeds, fewer than 3"
  # The own-popularity side of H1 (descriptive): KL(joint || own) - KL(specific || own).
  own = rows["h1", "search"]["own_popularity"]
  assert own["per_seed"] == pytest.approx([-0.5, 0.5, 1.5, 2.5])
  with open(md_path) as f:
    lines = [line for line in f.read().splitlines() if line.startswith("- H")]
  assert len(lines) == 4
  by_start = {line.split(": ")[0]: line for line in lines}
  h1s = by_start["- H1 (popularity), search (epochs, beam)"]
  assert h1s.startswith("- H1 (popularity), search (epochs, beam): supported: ")
  assert f"shift toward rec popularity {rows['h1', 'search']['mean']:+.3f} nats" in h1s
  assert "(t over 4 seeds, unadjusted)" in h1s and "sign-flip p = 0.1250" in h1s
  assert by_start["- H1 (popularity), recommendation (epochs, beam)"].startswith(
    "- H1 (popularity), recommendation (epochs, beam): not supported: "
  )
  assert by_start["- H2 (representation), recommendation (epochs, beam)"].startswith(
    "- H2 (representation), recommendation (epochs, beam): inconclusive (2 paired seeds, fewer "
    "than 3): share of predicted co-occurrences on pairs relevant to the same search query "
    "(7 such pairs in training)"
  )
  assert "per seed 0: +0.0500, 1: +0.0600, 2: n/a, 3: n/a" in lines[-1]


def test_missing_per_seed_numbers_say_why():
  # An analysis.json from before the per-seed numbers, with the analyses on: rerun, not made up.
  rows = report.hypothesis_rows({"point": "p", "h1": [], "h2": []}, analyses_on=True)
  for hyp in ("h1", "h2"):
    assert [r["task"] for r in rows[hyp]] == list(TASKS)
    assert all(r["verdict"] is None and r["mean"] is None for r in rows[hyp])
    assert all("rerun the analyse stage" in r["reason"] for r in rows[hyp])
  # What analyse_point writes with the analyses off.
  off = {"h1": [], "h2": [], "skipped": [], "reason": analyses.ANALYSES_OFF}
  rows = report.hypothesis_rows({"point": "p", "hypothesis_seeds": off}, analyses_on=True)
  assert {r["reason"] for r in rows["h1"] + rows["h2"]} == {analyses.ANALYSES_OFF}
  # A point whose runs lack one task's files: that row is null with the reason, the other computed.
  seeds = _seed_records({("h1", "search"): ([0.1, 0.2, 0.3], [0.4, 0.6, 0.5])})
  seeds["skipped"] = [
    {"budget": "epochs", "decode": "beam", "task": "rec", "seed": s, "reason": "no run file x"}
    for s in range(3)
  ]
  rows = report.hypothesis_rows({"point": "p", "hypothesis_seeds": seeds})
  h1 = {r["task"]: r for r in rows["h1"]}
  assert h1["search"]["verdict"] == "supported"
  assert h1["rec"]["verdict"] is None and h1["rec"]["reason"].startswith("seed 0: no run file x")
  assert [r["verdict"] for r in rows["h2"]] == [None, None]  # H2 had no records at all


def _top(scores, k):
  return [d for d, _ in sorted(scores.items(), key=lambda kv: -kv[1])[:k]]


def _write_eval(eval_dir, task, items, rng, num_queries=20, depth=12):
  """A run of random top-`depth` lists over `items` and random qrels, as the evaluator writes."""
  run, qrels = {}, {}
  for q in range(num_queries):
    picked = rng.choice(len(items), size=depth, replace=False)
    run[f"q{q}"] = {items[i]: float(s) for i, s in zip(picked, rng.random(depth))}
    qrels[f"q{q}"] = {items[int(rng.integers(len(items)))]: 1}
  runs.write_run(os.path.join(eval_dir, f"{task}.run"), run)
  runs.write_qrels(os.path.join(eval_dir, f"{task}.qrels"), qrels)


def test_hypothesis_seeds_from_run_files(tmp_path_factory, tmp_path):
  # The records analyse_point writes (`analyses.hypothesis_seeds` on a plan's runs: one prepared
  # dataset per seed, as the quickstart has) are what the report reads, and their numbers are
  # those of the run files, recomputed here by hand.
  _, data_dir = prepare_small(tmp_path_factory)
  plan = _study(tmp_path, 3, analyses_on=True)
  point = plan.points[0]
  for data in point.datasets:
    shutil.copytree(data_dir, data.data_dir)
  dataset = ProcessedDataset(point.datasets[0].data_dir)
  items = list(dataset.catalog.item_ids)
  rng = np.random.default_rng(0)
  for run in point.runs:
    for task in TASKS if run.model == "joint" else (run.model,):
      _write_eval(os.path.join(run.run_dir, "eval", "test"), task, items, rng)
  by_seed = {(r.model, r.seed): r.run_dir for r in point.runs}
  os.remove(os.path.join(by_seed["joint", 2], "eval", "test", "rec.run"))
  seeds = json.loads(json.dumps(analyses.hypothesis_seeds(plan, point)))
  assert seeds["k"] == 30 and seeds["reason"] is None
  assert [(r["task"], r["seed"]) for r in seeds["skipped"]] == [("rec", 2)]
  rows = report.hypothesis_rows({"point": point.name, "hypothesis_seeds": seeds})

  eps, n = 1e-6, len(items)
  pop = {t: np.bincount(dataset.split(t, "train")["target_item"], minlength=n) + eps for t in TASKS}

  def numbers(run_dir, task):
    run = runs.read_run(os.path.join(run_dir, "eval", "test", f"{task}.run"))
    counts = np.zeros(n)
    pairs = {}
    for scores in run.values():
      top = sorted(items.index(d) for d in _top(scores, 30))
      counts[top] += 1
      for i, j in itertools.combinations(top, 2):
        pairs[i * n + j] = pairs.get(i * n + j, 0) + 1
    other = next(t for t in TASKS if t != task)
    related = cooccurrence.related_pairs(dataset, task, window=10)
    share = sum(c for p, c in pairs.items() if p in related) / sum(pairs.values())
    return sps.entropy(counts + eps, pop[other]), sps.entropy(counts + eps, pop[task]), share

  for row1, row2 in zip(rows["h1"], rows["h2"]):
    task = row1["task"]
    expect = [0, 1] if task == "rec" else [0, 1, 2]
    assert row1["seeds"] == row2["seeds"] == expect and row1["data"] == [f"seed{s}" for s in expect]
    assert row1["n_seeds"] == len(expect) and row1["k"] == 30
    for i, seed in enumerate(expect):
      j_other, j_own, j_share = numbers(by_seed["joint", seed], task)
      s_other, s_own, s_share = numbers(by_seed[task, seed], task)
      assert row1["joint"]["kl_other"][i] == pytest.approx(j_other, rel=1e-9)
      assert row1["joint"]["kl_own"][i] == pytest.approx(j_own, rel=1e-9)
      assert row1["per_seed"][i] == pytest.approx(s_other - j_other, rel=1e-9)
      assert row1["own_popularity"]["per_seed"][i] == pytest.approx(j_own - s_own, rel=1e-9)
      assert row2["per_seed"][i] == pytest.approx(j_share - s_share, rel=1e-9)
    if task == "rec":
      assert row1["verdict"] == "inconclusive" and "2 paired seeds" in row1["reason"]
      assert row1["skipped"][0].startswith("seed 2: no run file ")
    else:
      assert row1["verdict"] in report.HYPOTHESIS_VERDICTS and row1["ci95"][0] is not None
