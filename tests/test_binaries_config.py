"""Config validation (gr_jax.config_check): nonsense settings fail at once, naming the key."""

import glob
import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)  # `configs` is a plain directory at the repo root

from configs import base  # noqa: E402
from gr_jax import config_check  # noqa: E402

# A simulated dataset small enough that `prepare` finishes in about a second.
TINY = [
  "--config.data.encoder_len=16",
  "--config.data.max_history=10",
  "--config.data.tokenizer.vocab_size=200",
  "--config.data.sim.num_items=60",
  "--config.data.sim.num_clusters=6",
  "--config.data.sim.num_users=120",
  "--config.data.sim.session_len=6",
  "--config.data.sim.eval_queries=30",
]


def env(**extra):
  e = dict(os.environ)
  e.update({"PYTHONPATH": REPO + os.pathsep + e.get("PYTHONPATH", ""), "JAX_PLATFORMS": "cpu"})
  e.pop("GR_JAX_VERBOSE", None)
  e.update(extra)
  return e


def run_binary(binary, *args, extra_env=None, timeout=300):
  cmd = [sys.executable, "-m", f"gr_jax.{binary}", *args]
  return subprocess.run(
    cmd,
    cwd=REPO,
    env=env(**(extra_env or {})),
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )


def one_line_error(proc) -> str:
  """The single `error:` line of a failed binary; no traceback."""
  assert proc.returncode != 0, proc.stdout[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1] == errors[0]
  return errors[0]


def _set(config, key, value):
  node = config
  parts = key.split(".")
  for p in parts[:-1]:
    node = node[p]
  with node.ignore_type():  # e.g. a string where the default is a bool
    node[parts[-1]] = value
  return config


def test_every_shipped_config_is_valid():
  names = []
  for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
    spec = importlib.util.spec_from_file_location(f"cfg_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if hasattr(module, "get_config"):
      config_check.validate(module.get_config())
      names.append(os.path.basename(path))
  assert "base.py" in names and len(names) >= 5


def test_enum_lists_agree_with_their_owners():
  pytest.importorskip("jax")
  from gr_jax.evaluation import evaluator
  from gr_jax.model import PRESETS
  from gr_jax.model.config import ATTENTION_IMPLS
  from gr_jax.study import plan

  assert set(config_check.PRESETS) == set(PRESETS)
  assert set(config_check.ATTENTION_IMPLS) == set(ATTENTION_IMPLS)
  assert set(config_check.DECODE_METHODS) == set(evaluator.DECODE_METHODS)
  assert set(config_check.BUDGETS) == set(plan.BUDGETS)


@pytest.mark.parametrize(
  "key,value,needle",
  [
    ("data.encoder_len", 1, ">= 2"),
    ("data.encoder_len", 0, ">= 2"),
    ("data.encoder_len", -3, ">= 2"),
    ("data.max_query_tokens", 1, ">= 2"),
    ("train.batch_size", -4, "positive integer"),
    ("train.batch_size", 0, "positive integer"),
    ("train.learning_rate", 0.0, "> 0"),
    ("train.schedule", "cosin", "'cosine'"),
    ("train.warmup_fraction", 1.0, "< 1"),
    ("checkpoint.best_mode", "lowest", "'min'"),
    ("checkpoint.every_steps", 0, "positive integer"),
    ("decode.method", "greedy", "'topk_exact'"),
    ("decode.num_beam_groups", 7, "multiple of decode.num_beam_groups"),
    ("decode.num_return_sequences", 61, "at most decode.num_beams"),
    ("decode.early_stopping", "sometimes", "'never'"),
    ("eval.ks", (1, 0, 10), "positive integers"),
    ("eval.ks", (), "non-empty"),
    ("eval.split", "train", "'valid'"),
    ("reproduce.budgets", ("epochs", "forever"), "'converged'"),
    ("reproduce.budgets", (), "non-empty"),
    ("reproduce.decoders", ("beam", "greedy"), "'topk_exact'"),
    ("reproduce.seeds", (0, 0), "distinct integers (seed 0 is listed more than once"),
    ("reproduce.seeds", (3, 1, 3), "seed 3 is listed more than once"),
    ("data.tasks", ("search", "ads"), "'rec'"),
    ("data.source", "csv", "'movielens'"),
    ("mesh.data", 0, "-1"),
    ("model.dropout_rate", 1.0, "< 1"),
  ],
)
def test_bad_value_is_named(key, value, needle):
  config = _set(base.get_config(), key, value)
  named = "decode.num_beams" if key == "decode.num_beam_groups" else key
  with pytest.raises(config_check.ConfigError) as e:
    config_check.validate(config)
  msg = str(e.value)
  assert msg.startswith(f"config key {named} = "), msg
  assert needle in msg and "\n" not in msg, msg


def test_held_out_fractions_must_leave_training_queries():
  config = base.get_config()
  config.data.search_valid_fraction = 0.5
  config.data.search_test_fraction = 0.5
  with pytest.raises(config_check.ConfigError, match="search_valid_fraction.*< 1"):
    config_check.validate(config)
  config.data.search_test_fraction = 0.4
  config_check.validate(config)


def test_topk_may_return_more_than_beams():
  config = base.get_config()
  config.decode.method = "topk_exact"
  config.decode.num_return_sequences = 100
  config_check.validate(config)


def test_missing_keys_are_not_checked():
  # An older run's config.json lacks newer knobs: what is there is checked, the rest is not.
  import ml_collections

  config = ml_collections.ConfigDict({"decode": {"num_beams": 4}, "train": {"batch_size": 8}})
  config_check.validate(config)
  config.train.batch_size = 0
  with pytest.raises(config_check.ConfigError, match="train.batch_size = 0"):
    config_check.validate(config)


@pytest.mark.parametrize(
  "override,key",
  [
    ("--config.data.encoder_len=1", "data.encoder_len"),
    ("--config.data.encoder_len=0", "data.encoder_len"),
    ("--config.data.encoder_len=-5", "data.encoder_len"),
    ("--config.train.batch_size=-4", "train.batch_size"),
    ("--config.train.batch_size=0", "train.batch_size"),
    ("--config.decode.method=greedy", "decode.method"),
  ],
)
def test_prepare_refuses_bad_config_in_one_line(tmp_path, override, key):
  proc = run_binary(
    "prepare",
    "--config",
    os.path.join(REPO, "configs", "base.py"),
    "--workdir",
    str(tmp_path / "run"),
    *TINY,
    override,
  )
  line = one_line_error(proc)
  assert f"config key {key} = " in line, line
  assert not os.path.exists(tmp_path / "run" / "data"), "no work before validation"


def test_prepare_refuses_fractions_leaving_no_training_queries(tmp_path):
  proc = run_binary(
    "prepare",
    "--config",
    os.path.join(REPO, "configs", "base.py"),
    "--workdir",
    str(tmp_path / "run"),
    *TINY,
    "--config.data.search_valid_fraction=0.6",
    "--config.data.search_test_fraction=0.4",
  )
  assert "search_test_fraction" in one_line_error(proc)


def test_train_refuses_negative_batch_before_any_step(tmp_path):
  proc = run_binary(
    "train",
    "--config",
    os.path.join(REPO, "configs", "base.py"),
    "--workdir",
    str(tmp_path / "run"),
    *TINY,
    "--config.train.batch_size=-4",
  )
  assert "config key train.batch_size = -4" in one_line_error(proc)
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_reproduce_refuses_unknown_budget(tmp_path):
  proc = run_binary(
    "reproduce",
    "--config",
    os.path.join(REPO, "configs", "base.py"),
    "--workdir",
    str(tmp_path / "study"),
    "--config.reproduce.budgets=('forever',)",
  )
  assert "config key reproduce.budgets" in one_line_error(proc)


def test_reproduce_refuses_duplicate_seeds(tmp_path):
  # (0, 0) ran one seed twice and counted it as two: a zero-width CI, every query twice.
  proc = run_binary(
    "reproduce",
    "--config",
    os.path.join(REPO, "configs", "quickstart.py"),
    "--workdir",
    str(tmp_path / "study"),
    "--config.reproduce.seeds=(0,0)",
  )
  line = one_line_error(proc)
  assert "config key reproduce.seeds = (0, 0)" in line and "seed 0" in line, line
  assert not os.path.exists(tmp_path / "study" / "stages")


@pytest.mark.parametrize("binary", ["train", "prepare", "reproduce"])
def test_unknown_config_key_is_one_line_with_the_closest_key(tmp_path, binary):
  # Was ~57 lines: three chained tracebacks out of ml_collections' flag parsing.
  proc = run_binary(
    binary,
    "--config",
    os.path.join(REPO, "configs", "quickstart.py"),
    "--workdir",
    str(tmp_path / "x"),
    "--config.train.checkpoint_every_steps=20",
  )
  line = one_line_error(proc)
  assert line.startswith("error: --config.train.checkpoint_every_steps: no such config key"), line
  assert "did you mean --config.checkpoint.every_steps?" in line, line
  assert proc.returncode == 1
  assert not os.path.exists(tmp_path / "x")


def test_unknown_key_message_names_section_and_closest_key():
  config = base.get_config()
  assert config_check.unknown_key_message(config, "train.batch_size") is None
  assert config_check.unknown_key_message(config, "data.semantic") is None
  msg = config_check.unknown_key_message(config, "trian.batch_size")
  assert msg == (
    "--config.trian.batch_size: no such config key (no section 'trian'); "
    "did you mean --config.train.batch_size?"
  )
  msg = config_check.unknown_key_message(config, "train.batch_size.x")
  assert "no field 'x' in 'train.batch_size'" in msg, msg
  assert "did you mean" not in config_check.unknown_key_message(config, "zzzzzzzz")
