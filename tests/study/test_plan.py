"""The study plan: points, runs and the one difference between model kinds (their task list)."""

import importlib.util
import os

import pytest

from gr_jax.study import plan as plan_lib
from gr_jax.study import stages

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def load_config(name, arg=None):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_runs_differ_only_in_tasks_seed_and_dataset(tmp_path):
  config = load_config("quickstart", "seeds=2")
  # Without the per-model tuned values (their runs differ by model kind: tests/study/test_tune.py).
  config.reproduce.tune.use = False
  plan = plan_lib.build_plan(config, str(tmp_path))
  assert len(plan.points) == 1
  runs = plan.runs
  budgets = tuple(config.reproduce.budgets)
  assert len(runs) == len(budgets) * 3 * 2
  assert {(r.budget, r.model, r.seed) for r in runs} == {
    (b, m, s) for b in budgets for m in ("search", "rec", "joint") for s in (0, 1)
  }
  point = plan.points[0]
  # A simulated study draws one dataset per seed (the simulator seed moves with the run seed).
  assert [d.key for d in point.datasets] == ["seed0", "seed1"]
  assert [d.config.data.sim.seed for d in point.datasets] == [
    config.data.sim.seed,
    config.data.sim.seed + 1,
  ]
  base = runs[0].config.to_dict()
  for r in runs:
    d = r.config.to_dict()
    assert list(d["data"]["tasks"]) == list(plan_lib.MODEL_TASKS[r.model])
    assert d["seed"] == r.seed
    for key in d:
      if key not in ("data", "seed"):
        assert d[key] == base[key], key
    d_data, b_data = dict(d["data"]), dict(base["data"])
    for key in ("tasks", "processed_dir", "sim"):
      d_data.pop(key), b_data.pop(key)
    assert d_data == b_data
    assert r.data == f"seed{r.seed}"
    assert r.config.data.processed_dir == point.dataset(r.data).data_dir
    assert r.config.data.sim.seed == config.data.sim.seed + r.seed
  assert len({r.run_dir for r in runs}) == len(runs)


def test_real_data_shares_one_dataset_across_seeds(tmp_path):
  config = load_config("movielens", "seeds=2")
  plan = plan_lib.build_plan(config, str(tmp_path))
  point = plan.points[0]
  assert [d.key for d in point.datasets] == ["shared"]
  assert {r.config.data.processed_dir for r in plan.runs} == {point.datasets[0].data_dir}


def test_bad_budget_or_decoder_names_it(tmp_path):
  config = load_config("quickstart")
  config.reproduce.budgets = ("epochs", "forever")
  with pytest.raises(ValueError, match="forever"):
    plan_lib.build_plan(config, str(tmp_path))
  config = load_config("quickstart")
  config.reproduce.decoders = ("greedy",)
  with pytest.raises(ValueError, match="greedy"):
    plan_lib.build_plan(config, str(tmp_path))


def test_sweep_points_set_the_field(tmp_path):
  config = load_config("sim_s1_popularity", "seeds=1")
  plan = plan_lib.build_plan(config, str(tmp_path))
  values = [p.config.data.sim.shuffle_fraction for p in plan.points]
  assert values == list(config.reproduce.sweep_values)
  assert len({p.data_dir for p in plan.points}) == len(plan.points)


def test_single_field_sweep_names_are_unchanged(tmp_path):
  config = load_config("sim_s1_popularity", "seeds=1")
  plan = plan_lib.build_plan(config, str(tmp_path))
  assert [p.name for p in plan.points] == [
    f"shuffle_fraction={v}" for v in config.reproduce.sweep_values
  ]
  assert [p.sweep_value for p in plan.points] == list(config.reproduce.sweep_values)
  r = plan.runs[0]
  assert r.run_dir == os.path.join(
    str(tmp_path), "runs", r.point, r.budget, r.model, f"seed{r.seed}"
  )


def test_mapping_sweep_points_set_several_fields(tmp_path):
  config = load_config("quickstart", "seeds=1")
  config.reproduce.tune.use = False  # the points sweep train.learning_rate, a tuned field
  config.reproduce.sweep = "data.sim.shuffle_fraction"
  config.reproduce.sweep_values = (
    0.25,
    {"data.sim.shuffle_fraction": 0.5, "train.learning_rate": 0.125},
    {"train.learning_rate": 0.5},
  )
  plan = plan_lib.build_plan(config, str(tmp_path))
  names = [p.name for p in plan.points]
  assert names == [
    "shuffle_fraction=0.25",
    "shuffle_fraction=0.5,learning_rate=0.125",
    "learning_rate=0.5",
  ]
  want = {  # point -> (shuffle_fraction, learning_rate) of its runs and datasets
    names[0]: (0.25, config.train.learning_rate),
    names[1]: (0.5, 0.125),
    names[2]: (config.data.sim.shuffle_fraction, 0.5),
  }
  assert len(set(want.values())) == 3
  for p in plan.points:
    for d in p.datasets:
      assert d.config.data.sim.shuffle_fraction == want[p.name][0]
      assert d.data_dir == os.path.join(str(tmp_path), "data", p.name, d.key)
    for r in p.runs:
      assert (r.config.data.sim.shuffle_fraction, r.config.train.learning_rate) == want[p.name]
      assert r.run_dir.startswith(os.path.join(str(tmp_path), "runs", p.name) + os.sep)
  assert plan.points[1].sweep_value == {
    "data.sim.shuffle_fraction": 0.5,
    "train.learning_rate": 0.125,
  }
  # The sweep plot's x: the plain value, or the name of a mapping's point.
  assert [plan_lib.sweep_label(p.sweep_value, p.name) for p in plan.points] == [0.25] + names[1:]
  assert plan_lib.sweep_fields("data.sim.shuffle_fraction", 0.25) == {
    "data.sim.shuffle_fraction": 0.25
  }


def test_bad_mapping_sweeps_name_the_problem(tmp_path):
  def plan_with(sweep, values):
    config = load_config("quickstart", "seeds=1")
    config.reproduce.tune.use = False  # some points sweep train.learning_rate, a tuned field
    config.reproduce.sweep, config.reproduce.sweep_values = sweep, values
    return plan_lib.build_plan(config, str(tmp_path))

  with pytest.raises(KeyError, match="no_such_knob"):
    plan_with("ids", ({"data.sim.no_such_knob": 1},))
  with pytest.raises(ValueError, match="dotted field names"):
    plan_with("ids", ({},))
  with pytest.raises(ValueError, match="reproduce.sweep is empty"):
    plan_with("", ({"train.learning_rate": 0.5},))
  with pytest.raises(ValueError, match=r"several points named \['learning_rate=0.5'\]"):
    plan_with("train.learning_rate", (0.5, {"train.learning_rate": 0.5}))


def test_semantic_ids_is_one_study_with_an_atomic_point(tmp_path):
  from gr_jax.data import prepare

  config = load_config("semantic_ids", "seeds=2")
  plan = plan_lib.build_plan(config, str(tmp_path))
  # The embedding points keep the names (and so the directories) of the one-field sweep.
  assert [p.name for p in plan.points] == [
    "id_scheme=atomic",
    "embedding=content",
    "embedding=search",
    "embedding=rec",
    "embedding=joint",
  ]
  for p in plan.points:
    schemes = {r.config.data.id_scheme for r in p.runs} | {
      d.config.data.id_scheme for d in p.datasets
    }
    assert schemes == {"atomic" if p.name == "id_scheme=atomic" else "semantic"}
    if p.name != "id_scheme=atomic":
      assert {r.config.data.semantic.embedding for r in p.runs} == {p.name.split("=")[1]}
    assert {r.model for r in p.runs} == {"search", "rec", "joint"}
    assert [d.key for d in p.datasets] == ["seed0", "seed1"]
  # The atomic point's datasets are the quickstart's (same data hash, seed by seed).
  quick = plan_lib.build_plan(load_config("quickstart", "seeds=2"), str(tmp_path / "q"))
  for ours, theirs in zip(plan.points[0].datasets, quick.points[0].datasets):
    assert prepare.config_hash(ours.config) == prepare.config_hash(theirs.config)
  with pytest.raises(ValueError, match="'ids' is unknown"):
    load_config("semantic_ids", "ids=atomic")  # the former separate reference study


def test_item_cap_applies_to_joint_only(tmp_path):
  config = load_config("item_cap", "seeds=1")
  plan = plan_lib.build_plan(config, str(tmp_path))
  for r in plan.runs:
    cap = r.config.data.item_cap
    assert cap == (
      0 if r.model != "joint" else next(p for p in plan.points if p.name == r.point).sweep_value
    )


def test_bad_sweep_field_names_it(tmp_path):
  config = load_config("quickstart")
  config.reproduce.sweep = "data.sim.no_such_knob"
  config.reproduce.sweep_values = (1, 2)
  with pytest.raises(KeyError, match="no_such_knob"):
    plan_lib.build_plan(config, str(tmp_path))


def test_unknown_model_kind(tmp_path):
  config = load_config("quickstart")
  config.reproduce.models = ("joint", "hybrid")
  with pytest.raises(ValueError, match="hybrid"):
    plan_lib.build_plan(config, str(tmp_path))


@pytest.mark.parametrize(
  "name",
  [
    "quickstart",
    "sim_s1_popularity",
    "sim_s2_search_helps_rec",
    "sim_s3_rec_helps_search",
    "movielens",
    "mpd",
    "logs_jsonl",
    "item_cap",
    "semantic_ids",
  ],
)
def test_every_experiment_config_builds_a_plan(tmp_path, name):
  config = load_config(name)
  plan = plan_lib.build_plan(config, str(tmp_path))
  assert plan.runs
  assert {r.model for r in plan.runs} <= {"search", "rec", "joint"}


def test_prepare_stage_fingerprint_covers_the_raw_files(tmp_path):
  # Was: reproduce on edited raw data ran 0 stages and kept report.json byte-identical.
  from gr_jax.study import runner, stages as stage_lib
  from tests.data.test_loaders import _write_jsonl

  raw = _write_jsonl(tmp_path / "raw")
  config = load_config("logs_jsonl", f"path={raw},seeds=1")
  config.data.search_valid_fraction = config.data.search_test_fraction = 0.0
  config.data.tokenizer.vocab_size = 60
  plan = plan_lib.build_plan(config, str(tmp_path / "study"))

  def by_kind():
    found = {}
    for s in stage_lib.stages_for(plan):
      found.setdefault(s.kind, s)
    return found

  before = by_kind()
  prep = before["prepare"]
  assert sorted(prep.inputs["raw"]) == sorted(
    os.path.join(str(raw), n) for n in ("items.jsonl", "search.jsonl", "sessions.jsonl")
  )
  runner.run_stages([prep], plan.workdir, lambda line: None)
  assert runner.status(plan.workdir, by_kind()["prepare"]) == "done"
  with open(os.path.join(str(raw), "sessions.jsonl"), "a") as f:
    f.write('{"user": "u9", "items": ["t3", "t2", "t1"]}\n')
  after = by_kind()
  assert runner.status(plan.workdir, after["prepare"]) == "stale"
  for kind in ("baselines", "train", "evaluate", "analyse", "report"):  # everything downstream
    assert after[kind].fingerprint != before[kind].fingerprint, kind
  # Simulated data reads no file: its stages keep the fingerprints they had.
  quick = plan_lib.build_plan(load_config("quickstart"), str(tmp_path / "q"))
  assert all("raw" not in s.inputs for s in stage_lib.stages_for(quick) if s.kind == "prepare")


def test_a_baseline_knob_reruns_the_baselines_stages_only(tmp_path):
  """The generative runs' stages do not fingerprint the baselines section: changing a baseline's
  setting reruns the baselines (and what reads them), never a T5 training or its evaluation."""
  config = load_config("quickstart")
  before = {
    s.id: s.fingerprint for s in stages.stages_for(plan_lib.build_plan(config, str(tmp_path)))
  }
  config.baselines.sasrec.num_epochs = int(config.baselines.sasrec.num_epochs) + 1
  after = {
    s.id: s.fingerprint for s in stages.stages_for(plan_lib.build_plan(config, str(tmp_path)))
  }
  changed = {k for k in before if before[k] != after[k]}
  assert changed and all(k.startswith(("baselines__", "analyse__", "report")) for k in changed)
  assert not any(k.startswith(("train__", "evaluate__", "prepare__")) for k in changed)
