"""The study plan: points, runs and the one difference between model kinds (their task list)."""

import importlib.util
import os

import pytest

from gr_jax.study import plan as plan_lib

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def load_config(name, arg=None):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_runs_differ_only_in_tasks_seed_and_dataset(tmp_path):
  config = load_config("quickstart", "seeds=2")
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
  ],
)
def test_every_experiment_config_builds_a_plan(tmp_path, name):
  config = load_config(name)
  plan = plan_lib.build_plan(config, str(tmp_path))
  assert plan.runs
  assert {r.model for r in plan.runs} <= {"search", "rec", "joint"}
