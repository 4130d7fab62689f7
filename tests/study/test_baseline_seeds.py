"""The study's baselines under its seeds, and the best baseline chosen on validation.

No model is trained: `run_baseline` and the popularity writer are replaced by fakes that write
fabricated eval files (tests/study/fabricate.py) and record the seed, directory and split of each
call; a fake run "trains" on its first call in a directory and only evaluates on later ones, as the
trained baselines reload a finished checkpoint.
"""

import os
import zlib

import numpy as np
import pytest

from gr_jax.analysis import stats
from gr_jax.evaluation import runs as runs_lib
from gr_jax.study import analyses, report
from gr_jax.study import plan as plan_lib
from gr_jax.study import stages as stage_lib
from tests.study.fabricate import write_eval_dir
from tests.study.test_plan import load_config

BASELINES = ("bm25", "sasrec", "biencoder")
POPULARITY = ("pop_s", "pop_r", "pop_mix")
SEEDS = (0, 1, 2)
NUM_QUERIES = 20
# Mean headline metric per task, baseline and split: on each task the best baseline on valid is not
# the best on test (search: bm25 on valid, the bi-encoder on test; rec: sasrec, the bi-encoder).
LEVELS = {
  "search": {"bm25": {"valid": 0.5, "test": 0.2}, "biencoder": {"valid": 0.3, "test": 0.6}},
  "rec": {"sasrec": {"valid": 0.4, "test": 0.1}, "biencoder": {"valid": 0.2, "test": 0.5}},
}
TASKS_OF = {"bm25": ("search",), "sasrec": ("rec",), "biencoder": ("search", "rec")}
JOINT_LEVEL = 0.45


def _values(name: str, task: str, split: str, seed) -> np.ndarray:
  """Per-query values of a fabricated evaluation: the baseline's level plus a seed offset (a
  trained baseline's seeds differ) and a little noise, the same on every call."""
  level = LEVELS.get(task, {}).get(name, {}).get(split, 0.05)
  rng = np.random.default_rng(zlib.crc32(f"{name}/{task}/{split}/{seed}".encode()))
  offset = 0.01 * seed if seed is not None else 0.0
  return np.clip(level + offset + rng.normal(0.0, 0.02, NUM_QUERIES), 0.0, 1.0)


class FakeBaselines:
  """Stands in for gr_jax.baselines: records every call, writes fabricated eval files."""

  def __init__(self, metric: str):
    self.metric = metric
    self.calls = []  # (name, seed, out_dir, split) of every run_baseline call
    self.trained = []  # (name, seed, out_dir) of the calls that trained (first in a directory)
    self.popularity = []  # (out_dir, split)

  def run_baseline(self, name, cfg, data_dir, out_dir, split):
    seed = int(cfg.seed)
    self.calls.append((name, seed, out_dir, split))
    marker = os.path.join(out_dir, "trained")
    if not os.path.exists(marker):  # a finished run is reloaded, not trained again
      self.trained.append((name, seed, out_dir))
      os.makedirs(out_dir, exist_ok=True)
      open(marker, "w").close()
    value_seed = seed if name in stage_lib.TRAINED_BASELINES else None
    values = {t: _values(name, t, split, value_seed) for t in TASKS_OF[name]}
    write_eval_dir(os.path.join(out_dir, "eval", split), values, self.metric, {"split": split})

  def write_popularity_runs(self, dataset, out_dir, split, ks, mix_weight, exclude_seen):
    self.popularity.append((out_dir, split))
    for name in POPULARITY:
      values = {t: _values(name, t, split, None) for t in ("search", "rec")}
      write_eval_dir(
        os.path.join(out_dir, name, "eval", split), values, self.metric, {"split": split}
      )


def _plan(tmp_path, per_seed: bool, seeds=SEEDS, split="test", name="study"):
  config = load_config("quickstart", f"seeds={len(seeds)}")
  config.reproduce.seeds = tuple(seeds)
  config.reproduce.dataset_per_seed = per_seed  # False: one simulated dataset shared by the seeds
  config.reproduce.baselines = BASELINES
  config.eval.split = split
  return plan_lib.build_plan(config, str(tmp_path / name))


def _install(monkeypatch, plan) -> FakeBaselines:
  from gr_jax.baselines import popularity, runner
  from gr_jax.data import dataset

  fake = FakeBaselines(analyses.headline_metric(plan.config))
  monkeypatch.setattr(runner, "run_baseline", fake.run_baseline)
  monkeypatch.setattr(popularity, "write_popularity_runs", fake.write_popularity_runs)
  monkeypatch.setattr(dataset, "ProcessedDataset", lambda d: d)
  return fake


def _baseline_stages(plan):
  return [s for s in stage_lib.stages_for(plan) if s.kind == "baselines"]


def _run_baselines(plan):
  for s in _baseline_stages(plan):
    s.fn()


def _joint(plan, split="test"):
  """Fabricated evaluations of Gen_R+S's runs of the first budget: {seed: run dir}."""
  budget = plan.runs[0].budget
  out = {}
  for run in plan.runs:
    if run.budget == budget and run.model == "joint":
      values = {t: _values("joint", t, split, run.seed) + JOINT_LEVEL for t in ("search", "rec")}
      write_eval_dir(
        os.path.join(run.run_dir, "eval", split),
        {t: np.clip(v, 0, 1) for t, v in values.items()},
        analyses.headline_metric(plan.config),
        {"split": split},
      )
      out[run.seed] = run.run_dir
  return budget, out


def _against(plan, compare):
  """`_against_best_baselines` of the first budget's Gen_R+S, with `compare` recording its
  calls: (records, [(groups, keyword arguments)])."""
  budget, joint = _joint(plan)
  calls = []

  def spy(groups, **kw):
    calls.append(({k: list(v) for k, v in groups.items()}, kw))
    return compare(groups, **kw)

  groups = {"joint": [joint[s] for s in SEEDS]}
  records = analyses._against_best_baselines(plan, plan.points[0], budget, groups, "test", spy)
  return records, calls, joint


def _bdir(plan, key):
  return os.path.join(plan.workdir, "baselines", "default", key)


# ----------------------------------------------------------------------------- (a) per-seed data


def test_per_seed_datasets_train_their_baselines_with_their_seed(tmp_path, monkeypatch):
  plan = _plan(tmp_path, per_seed=True)
  fake = _install(monkeypatch, plan)
  stages = _baseline_stages(plan)
  assert [s.id for s in stages] == [f"baselines__default__seed{k}" for k in SEEDS]
  assert [s.inputs["seed"] for s in stages] == list(SEEDS)  # was reproduce.seeds[0] for all
  _run_baselines(plan)
  # Dataset seed<k>'s baselines train once, with seed k, in baselines/<point>/seed<k>/<name>/ ...
  assert sorted(fake.trained) == sorted(
    (n, k, os.path.join(_bdir(plan, f"seed{k}"), n)) for n in BASELINES for k in SEEDS
  )
  # ... and are evaluated on the study's split and on valid (the second call only evaluates).
  assert sorted(fake.calls) == sorted(
    (n, k, os.path.join(_bdir(plan, f"seed{k}"), n), split)
    for n in BASELINES
    for k in SEEDS
    for split in ("test", "valid")
  )
  assert sorted(fake.popularity) == sorted(
    (_bdir(plan, f"seed{k}"), split) for k in SEEDS for split in ("test", "valid")
  )
  # Gen_R+S's run i is paired with the baseline of seed i's dataset.
  records, calls, joint = _against(plan, stats.compare_within_seeds)
  assert calls and records
  for groups, kw in calls:
    best = next(n for n in groups if n != "joint")
    assert kw["repeated"] == () and kw["split"] == "test"
    assert groups["joint"] == [os.path.join(joint[k], "eval", "test") for k in SEEDS]
    assert groups[best] == [
      os.path.join(_bdir(plan, f"seed{k}"), best, "eval", "test") for k in SEEDS
    ]
  for r in records:
    assert r["seed_test"]["n"] == len(SEEDS)


# ------------------------------------------------------------------------------ (b) shared data


def test_shared_dataset_runs_trained_baselines_once_per_seed(tmp_path, monkeypatch):
  plan = _plan(tmp_path, per_seed=False)
  point = plan.points[0]
  assert [d.key for d in point.datasets] == ["shared"]
  fake = _install(monkeypatch, plan)
  stages = _baseline_stages(plan)
  assert [s.id for s in stages] == ["baselines__default__shared"] + [
    f"baselines__default__shared__seed{k}" for k in SEEDS
  ]
  assert "seed" not in stages[0].inputs and stages[0].inputs["which"] == ["bm25"]
  assert [s.inputs["seed"] for s in stages[1:]] == list(SEEDS)
  _run_baselines(plan)
  shared = _bdir(plan, "shared")
  trained = [t for t in fake.trained if t[0] in stage_lib.TRAINED_BASELINES]
  # Each trained baseline once per study seed, in baselines/<point>/shared/<name>/seed<k>/ ...
  assert sorted(trained) == sorted(
    (n, k, os.path.join(shared, n, f"seed{k}")) for n in ("sasrec", "biencoder") for k in SEEDS
  )
  # ... bm25 and the popularity baselines (deterministic) once, each on test and on valid.
  assert [t[2] for t in fake.trained if t[0] == "bm25"] == [os.path.join(shared, "bm25")]
  assert sorted(c[3] for c in fake.calls if c[0] == "bm25") == ["test", "valid"]
  assert sorted(fake.popularity) == [(shared, "test"), (shared, "valid")]
  assert len(fake.calls) == 2 * len(fake.trained)  # every run: trained once, then evaluated

  dirs = analyses._baseline_eval_dirs(plan, point, "test")
  assert dirs["sasrec"] == [
    os.path.join(shared, "sasrec", f"seed{k}", "eval", "test") for k in SEEDS
  ]
  assert dirs["bm25"] == [os.path.join(shared, "bm25", "eval", "test")]
  assert set(dirs) == set(BASELINES) | set(POPULARITY)
  # The point's baseline means: a trained baseline's over its seeds.
  metric = analyses.headline_metric(plan.config)
  means = analyses.baseline_means(plan, point, "test")
  sasrec = [_values("sasrec", "rec", "test", k).mean() for k in SEEDS]
  assert means["sasrec"]["rec"][metric] == pytest.approx(np.mean(sasrec))

  records, calls, joint = _against(plan, stats.compare_models)
  by_task = {r["task"]: r for r in records}
  assert by_task["rec"]["b"] == "sasrec" and by_task["search"]["b"] == "bm25"
  for groups, kw in calls:
    best = next(n for n in groups if n != "joint")
    assert groups["joint"] == [os.path.join(joint[k], "eval", "test") for k in SEEDS]
    if best in stage_lib.TRAINED_BASELINES:  # seed i against seed i, its own variance counts
      assert kw["repeated"] == ()
      assert groups[best] == [os.path.join(shared, best, f"seed{k}", "eval", "test") for k in SEEDS]
    else:  # one deterministic run stands for every seed
      assert kw["repeated"] == (best,)
      assert groups[best] == [os.path.join(shared, best, "eval", "test")] * len(SEEDS)
  rec = by_task["rec"]
  assert rec["seed_test"]["n"] == len(SEEDS) and rec["seed_test"]["pairing"] == "position"
  assert rec["mean_b"] == pytest.approx(np.mean(sasrec))


def test_changed_seeds_rerun_only_the_new_seeds_baselines(tmp_path):
  for per_seed in (True, False):
    before = {s.id: s for s in _baseline_stages(_plan(tmp_path, per_seed, seeds=(0, 1)))}
    after = {s.id: s for s in _baseline_stages(_plan(tmp_path, per_seed, seeds=(0, 1, 2)))}
    new = set(after) - set(before)
    assert new == {f"baselines__default__{'' if per_seed else 'shared__'}seed2"}
    for sid, stage in before.items():
      assert after[sid].fingerprint == stage.fingerprint, sid


def test_shared_baselines_resets_keep_the_other_stages_outputs(tmp_path):
  plan = _plan(tmp_path, per_seed=False)
  shared = _bdir(plan, "shared")
  files = [
    "pop_s/eval/test/metrics.json",
    "bm25/eval/test/metrics.json",
    "sasrec/seed0/eval/test/metrics.json",
    "sasrec/seed1/eval/test/metrics.json",
    "sasrec/config.json",  # a study made before: sasrec's one run lay here
    "sasrec/checkpoints/10/meta",
  ]
  for f in files:
    os.makedirs(os.path.dirname(os.path.join(shared, f)), exist_ok=True)
    open(os.path.join(shared, f), "w").close()
  stages = {s.id: s for s in _baseline_stages(plan)}
  stages["baselines__default__shared"].reset()
  assert sorted(os.listdir(shared)) == ["sasrec"]
  assert sorted(os.listdir(os.path.join(shared, "sasrec"))) == ["seed0", "seed1"]
  stages["baselines__default__shared__seed0"].reset()
  assert sorted(os.listdir(os.path.join(shared, "sasrec"))) == ["seed1"]


# ------------------------------------------------------------ (c), (d) the choice, on validation


@pytest.mark.parametrize("per_seed", [True, False], ids=["per_seed_data", "shared_data"])
def test_best_baseline_is_the_best_on_valid_not_on_test(tmp_path, monkeypatch, per_seed):
  plan = _plan(tmp_path, per_seed=per_seed)
  _install(monkeypatch, plan)
  _run_baselines(plan)
  compare = stats.compare_within_seeds if per_seed else stats.compare_models
  records, _, _ = _against(plan, compare)
  assert {r["task"] for r in records} == {"search", "rec"}
  for r in records:
    test_means, valid_means = r["baseline_means"], r["baseline_means_valid"]
    on_test = max(sorted(test_means), key=test_means.get)
    on_valid = max(sorted(valid_means), key=valid_means.get)
    assert on_test == "biencoder" and on_valid != on_test  # the fabricated orders differ
    assert r["b"] == on_valid == {"search": "bm25", "rec": "sasrec"}[r["task"]]
    assert r["chosen_on"] == "valid"
    assert r["mean_b"] == pytest.approx(test_means[r["b"]])  # compared on the study's split


def test_the_choice_reads_no_test_file(tmp_path, monkeypatch):
  plan = _plan(tmp_path, per_seed=False)
  _install(monkeypatch, plan)
  _run_baselines(plan)
  read = []
  real = runs_lib.read_json
  monkeypatch.setattr(runs_lib, "read_json", lambda path: read.append(path) or real(path))
  best = analyses.best_baselines(plan, plan.points[0])
  assert {t: b for t, (b, _) in best.items()} == {"search": "bm25", "rec": "sasrec"}
  valid = os.sep + os.path.join("eval", "valid", "metrics.json")
  assert read and all(p.endswith(valid) for p in read), read
  # A study on valid (tuning): the baselines are evaluated once, on valid, and chosen there.
  plan = _plan(tmp_path, per_seed=True, split="valid", name="tuning")
  assert stage_lib.baseline_splits(plan.config) == ("valid",)
  assert all(s.inputs["splits"] == ["valid"] for s in _baseline_stages(plan))


def test_report_says_the_best_baseline_was_chosen_on_validation(tmp_path, monkeypatch):
  plan = _plan(tmp_path, per_seed=False)
  _install(monkeypatch, plan)
  _run_baselines(plan)
  records, _, _ = _against(plan, stats.compare_models)
  analysis = {
    "point": "default",
    "blocks": [
      {"budget": records[0]["budget"], "decode": "beam", "headline": {}, "vs_baseline": records}
    ],
  }
  tests = report._annotate(
    stats.adjust_family(report._flat_tests([analysis], "vs_baseline"), "holm")
  )
  assert len(tests) == 2 * len(records)
  for t in tests:
    assert t["chosen_on"] == "valid" and set(t["baseline_means_valid"]) == set(t["baseline_means"])
  md, lines = report._baseline_md("default", tests, "holm")
  assert "chosen on validation" in md[0]
  assert lines and all("(chosen on validation)" in line for line in lines)
