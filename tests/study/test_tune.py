"""Per-model tuning on validation (gr_jax/study/tune.py): the rule, tuning seeds apart from study
seeds, tuning.json read by `reproduce.tune.use` (applied to exactly each model kind's runs; without
it every stage keeps its fingerprint), the report's grid, and the tune stages never reading test."""

import json
import os
import shutil

import pytest

from gr_jax import config_check
from gr_jax.study import plan as plan_lib
from gr_jax.study import stages as stage_lib
from gr_jax.study import tune
from tests.study.test_plan import load_config
from tests.training import tiny_config
from tests.training.conftest import compile_cache, tiny_dataset  # noqa: F401  (fixtures)


def _quickstart(**tune_fields):
  """The quickstart without its recorded tuning (the mechanism's tests start from use off)."""
  config = load_config("quickstart", "seeds=2")
  config.reproduce.tune.update(dict(dict(use=False, recorded=""), **tune_fields))
  return config


def _fingerprints(config, workdir):
  return {s.id: s.fingerprint for s in stage_lib.stages_for(plan_lib.build_plan(config, workdir))}


def _fake_evaluations(config, workdir, recall):
  """Writes each tuning run's valid metrics.json: recall(grid point values, model, task, seed)."""
  s, _, runs = tune.tuning_runs(config, workdir)
  key = s["metric"]
  for values, run in runs:
    d = os.path.join(run.run_dir, "eval", stage_lib.eval_subdir("valid", s["decoder"]))
    os.makedirs(d, exist_ok=True)
    metrics = {t: {key: recall(values, run.model, t, run.seed)} for t in run.config.data.tasks}
    with open(os.path.join(d, "metrics.json"), "w") as f:
      json.dump(metrics, f)


def test_rule_first_point_within_tolerance_of_the_best():
  assert tune.choose([0.5, 0.7, 0.69], 0.0) == 1
  assert tune.choose([0.5, 0.69, 0.7], 0.005) == 2
  assert tune.choose([0.5, 0.697, 0.7], 0.005) == 1  # a near tie: the first in grid order
  assert tune.choose([0.7, 0.7], 0.0) == 0  # an exact tie too
  assert tune.choose([float("nan"), 0.1], 0.5) == 1  # no number never wins
  with pytest.raises(ValueError, match="no grid point"):
    tune.choose([None, float("nan")], 0.0)


def test_rule_per_kind_and_joint_takes_the_mean_of_its_tasks(tmp_path):
  config = _quickstart(
    grid_fields=("train.learning_rate",),
    grid_values=((0.001, 0.01),),
    seeds=(100, 101),
    tolerance=0.0,
  )
  workdir = str(tmp_path)
  # lr 0.001 is better for search, 0.01 for rec; the joint model's rec gain (0.3) outweighs its
  # search loss (0.1), so the mean of its two tasks picks 0.01. Seed 101 is 0.02 better.
  table = {0.001: {"search": 0.6, "rec": 0.3}, 0.01: {"search": 0.5, "rec": 0.6}}
  _fake_evaluations(
    config,
    workdir,
    lambda v, model, task, seed: table[v["train.learning_rate"]][task] + 0.02 * (seed == 101),
  )
  result = tune.tuning_result(config, workdir)
  assert result["chosen"] == {
    "search": {"train.learning_rate": 0.001},
    "rec": {"train.learning_rate": 0.01},
    "joint": {"train.learning_rate": 0.01},
  }
  joint = [p["scores"]["joint"] for p in result["points"]]
  assert joint == pytest.approx([0.46, 0.56])
  assert result["points"][0]["per_seed"]["search"]["seed101"]["search"] == pytest.approx(0.62)
  assert result["seeds"] == [100, 101] and "first of them in grid order" in result["rule"]
  # With a tolerance of 0.35 the first point ties with the best for every kind.
  config.reproduce.tune.tolerance = 0.35
  assert set(map(str, tune.tuning_result(config, workdir)["chosen_point"].values())) == {
    "learning_rate=0.001"
  }


def test_grid_is_the_product_in_order():
  s = tune.settings(_quickstart())
  points = tune.grid_points(s)
  assert len(points) == 12
  assert points[0] == {
    "train.learning_rate": 0.002,
    "model.dropout_rate": 0.0,
    "model.overrides.tie_word_embeddings": True,
  }
  assert points[1]["model.overrides.tie_word_embeddings"] is False


def test_tuning_seeds_must_not_be_study_seeds():
  config = _quickstart(seeds=(1, 100))
  with pytest.raises(ValueError, match=r"reproduce.tune.seeds.*not study seeds.*also has \[1\]"):
    tune.settings(config)
  with pytest.raises(config_check.ConfigError, match="reproduce.tune.seeds"):
    config_check.validate(config)
  config_check.validate(_quickstart())  # the defaults pass


def test_grid_fields_are_model_or_training_fields():
  with pytest.raises(ValueError, match="model.* or train.*"):
    tune.settings(_quickstart(grid_fields=("data.encoder_len",), grid_values=((8,),)))
  twice = ("train.learning_rate", "train.learning_rate")
  with pytest.raises(config_check.ConfigError, match="distinct"):
    tune.settings(_quickstart(grid_fields=twice, grid_values=((0.1,), (0.2,))))
  semantic = _quickstart()
  semantic.data.id_scheme = "semantic"
  with pytest.raises(config_check.ConfigError, match="reproduce.tune.decoder.*'beam'"):
    tune.settings(semantic)
  config_check.validate(semantic)  # a config that does not tune keeps the section's defaults


def test_use_without_tuning_json_names_the_file_and_the_command(tmp_path):
  config = _quickstart(use=True)
  with pytest.raises(FileNotFoundError) as e:
    plan_lib.build_plan(config, str(tmp_path))
  text = str(e.value)
  assert os.path.join(str(tmp_path), "tuning", "tuning.json") in text and "--tune" in text


def test_use_applies_each_kinds_values_to_exactly_its_runs(tmp_path):
  fields = ("train.learning_rate", "model.overrides.tie_word_embeddings")
  config = _quickstart(
    grid_fields=fields, grid_values=((0.001, 0.01), (True, False)), tolerance=0.0
  )
  workdir = str(tmp_path)
  best = {"search": (0.01, False), "rec": (0.001, True), "joint": (0.01, True)}
  _fake_evaluations(
    config,
    workdir,
    lambda v, model, task, seed: 0.9 if tuple(v[f] for f in fields) == best[model] else 0.1,
  )
  tune.write_tuning(config, workdir)
  before = plan_lib.build_plan(config, workdir)
  before_fp = _fingerprints(config, workdir)
  config.reproduce.tune.use = True
  after = plan_lib.build_plan(config, workdir)
  after_fp = _fingerprints(config, workdir)
  for old, new in zip(before.runs, after.runs):
    lr, tied = best[new.model]
    assert new.config.train.learning_rate == lr
    assert new.config.model.overrides.tie_word_embeddings is tied
    # Nothing else differs, and the tuning section is in no run config.
    a, b = old.config.to_dict(), new.config.to_dict()
    a["train"].pop("learning_rate"), b["train"].pop("learning_rate")
    a["model"]["overrides"].pop("tie_word_embeddings")
    b["model"]["overrides"].pop("tie_word_embeddings")
    assert a == b and "tune" not in b["reproduce"]
  changed = {k for k in before_fp if before_fp[k] != after_fp[k]}
  # The quickstart's config value is lr 0.005 and tied: every kind's training changes here.
  assert {k for k in changed if k.startswith("train__")} == {
    k for k in before_fp if k.startswith("train__")
  }
  assert not {k for k in changed if k.startswith(("prepare__", "baselines__"))}
  # tuning.json made with another grid is refused, naming what differs.
  config.reproduce.tune.grid_values = ((0.001, 0.02), (True, False))
  with pytest.raises(ValueError, match="other tuning settings.*grid.*--tune"):
    plan_lib.build_plan(config, workdir)


def test_recorded_tuning_is_used_until_the_workdir_has_its_own(tmp_path):
  """reproduce.tune.recorded: with no tuning.json in the workdir the study takes the recorded
  file's values and the report says where they came from; a workdir's own tuning (--tune) wins."""
  config = _quickstart(grid_fields=("train.learning_rate",), grid_values=((0.001, 0.01),))
  elsewhere, workdir = str(tmp_path / "tuned_elsewhere"), str(tmp_path / "study")
  _fake_evaluations(config, elsewhere, lambda v, m, t, s: v["train.learning_rate"])
  recorded = tune.write_tuning(config, elsewhere)  # 0.01 wins for every kind
  config.reproduce.tune.update(use=True, recorded=recorded)
  plan = plan_lib.build_plan(config, workdir)
  assert {r.config.train.learning_rate for r in plan.runs} == {0.01}
  section, md = tune.report_section(config, workdir)
  assert section["source"] == "tuning.json" and section["used"] is True
  assert "recorded in tuning.json (reproduce.tune.recorded; `--tune` reruns it" in "\n".join(md)
  assert tune.fingerprint(config, workdir) == tune.fingerprint(config, elsewhere)
  # The workdir's own tuning.json (here: 0.001 wins) takes over from the recorded one.
  _fake_evaluations(config, workdir, lambda v, m, t, s: -v["train.learning_rate"])
  tune.write_tuning(config, workdir)
  assert {r.config.train.learning_rate for r in plan_lib.build_plan(config, workdir).runs} == {
    0.001
  }
  assert tune.report_section(config, workdir)[0]["source"] == "workdir"
  # A recorded path that is not there is an error that names it, never the config's values.
  config.reproduce.tune.recorded = missing = str(tmp_path / "nowhere.json")
  with pytest.raises(FileNotFoundError, match="reproduce.tune.recorded = .*nowhere.json"):
    plan_lib.build_plan(config, str(tmp_path / "fresh"))
  assert not os.path.exists(missing)


def test_shipped_quickstart_uses_its_recorded_per_model_values(tmp_path):
  """configs/quickstart.py ships the recorded tuning (configs/tuning/quickstart.json): its
  settings match the config's grid, and each model kind trains with that kind's chosen values;
  the sweeps built on the quickstart do not take them (tuned on another world)."""
  config = load_config("quickstart", "seeds=2")
  tuning = tune.read_tuning(config, str(tmp_path))
  assert tuning["seeds"] == [100] and set(tuning["chosen"]) == {"search", "rec", "joint"}
  plan = plan_lib.build_plan(config, str(tmp_path))
  for run in plan.runs:
    for field, value in tuning["chosen"][run.model].items():
      section, *rest = field.split(".")
      node = run.config[section]
      for key in rest:
        node = node[key]
      assert node == value, (run.model, field)
  for name in ("sim_s1_popularity", "sim_s2_search_helps_rec", "sim_s3_rec_helps_search"):
    sweep = load_config(name, "seeds=2")
    assert sweep.reproduce.tune.use is False and sweep.reproduce.tune.recorded == ""


def test_without_use_every_fingerprint_is_kept(tmp_path):
  """A config with the tuning section (use off) gives every stage the fingerprint of a config
  made before the section existed."""
  with_section = _quickstart()
  without = _quickstart()
  del without.reproduce["tune"]
  assert _fingerprints(with_section, str(tmp_path)) == _fingerprints(without, str(tmp_path))
  plan = plan_lib.build_plan(with_section, str(tmp_path))
  assert all("tune" not in r.config.reproduce for r in plan.runs)


def test_report_prints_the_grid_and_when_it_ran(tmp_path):
  config = _quickstart(grid_fields=("train.learning_rate",), grid_values=((0.001, 0.01),))
  workdir = str(tmp_path)
  assert tune.report_section(config, workdir) == (None, [])
  without = _fingerprints(config, workdir)
  _fake_evaluations(config, workdir, lambda v, m, t, s: v["train.learning_rate"] * 10)
  tune.write_tuning(config, workdir)
  section, md = tune.report_section(config, workdir)
  assert set(section) >= {"grid", "rule", "tolerance", "seeds", "points", "chosen", "run_at"}
  assert section["used"] is False
  text = "\n".join(md)
  assert f"Run at {section['run_at']} (UTC; its stages took" in text
  assert text.count("(chosen)") == 3 and "| 0.01 | 0.1000 (chosen) |" in text
  # The report stage (only it) reruns when tuning.json appears.
  with_tuning = _fingerprints(config, workdir)
  assert {k for k in without if without[k] != with_tuning[k]} == {"report"}


@pytest.mark.slow
def test_tune_stages_never_read_test(tiny_dataset, tmp_path, monkeypatch):  # noqa: F811
  """The tuning stages on the training tests' tiny dataset (2 grid points, 1 tuning seed, one
  model kind, a few steps): every split the one split reader opens is train or valid."""
  from gr_jax.data.dataset import ProcessedDataset
  from gr_jax.study.runner import run_stages

  config = tiny_config.get_config()
  config.train.num_steps = 6
  config.checkpoint.every_steps = 6
  config.decode.num_return_sequences = 8
  config.eval.ks = (1, 8)
  config.reproduce.models = ("search",)
  config.reproduce.seeds = (0,)
  config.reproduce.dataset_per_seed = False  # the copied tiny dataset is then exactly the config's
  config.reproduce.tune.update(
    grid_fields=("train.learning_rate",), grid_values=((0.01, 0.02),), seeds=(100,), budget="epochs"
  )
  # The tiny dataset stands in for preparing one: no new world is simulated.
  monkeypatch.setattr(
    stage_lib, "_prepare", lambda data: shutil.copytree(tiny_dataset, data.data_dir)
  )
  reads = []
  original = ProcessedDataset.split

  def spy(self, task, split):
    reads.append(split)
    return original(self, task, split)

  monkeypatch.setattr(ProcessedDataset, "split", spy)
  workdir = str(tmp_path)
  stages = tune.tune_stages(config, workdir)
  assert [s.kind for s in stages] == ["prepare"] + ["train", "evaluate"] * 2 + ["tune"]
  run_stages(stages, workdir, printer=lambda line: None)
  assert "valid" in reads and "test" not in reads, sorted(set(reads))
  with open(tune.tuning_path(workdir)) as f:
    result = json.load(f)
  assert len(result["points"]) == 2 and list(result["chosen"]) == ["search"]
  assert all(0.0 <= p["scores"]["search"] <= 1.0 for p in result["points"])
  # Rerun: every stage is done and skipped.
  assert run_stages(stages, workdir, printer=lambda line: None) == {"ran": 0, "skipped": 6}
