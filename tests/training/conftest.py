"""Fixtures of the training tests: one tiny prepared dataset and a shared compilation cache.

The run's persistent compilation cache (tests/conftest.py; also handed to subprocesses through
`subprocess_env`) lets the many short runs of these tests compile each step function once instead
of once per run.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import tiny_config  # noqa: E402  pylint: disable=g-import-not-at-top

CONFIG_PATH = os.path.join(HERE, "tiny_config.py")


@pytest.fixture(scope="session")
def compile_cache(shared_compilation_cache):
  """The run's one persistent compilation cache (tests/conftest.py), named for these tests."""
  return shared_compilation_cache


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, compile_cache):
  """A processed simulated dataset for tiny_config (prepared once per session)."""
  from gr_jax.data.prepare import prepare_dataset  # pylint: disable=g-import-not-at-top

  path = str(tmp_path_factory.mktemp("tiny_data") / "data")
  prepare_dataset(tiny_config.get_config(), path)
  return path


@pytest.fixture(scope="session")
def subprocess_env(compile_cache):
  def make(devices=1, **extra):
    env = dict(os.environ)
    env.update(
      {
        "PYTHONPATH": REPO + os.pathsep + env.get("PYTHONPATH", ""),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_COMPILATION_CACHE_DIR": compile_cache,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
      }
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env

  return make


def train_command(workdir, processed_dir, *flags):
  return [
    sys.executable,
    "-m",
    "gr_jax.train",
    "--config",
    CONFIG_PATH,
    "--workdir",
    str(workdir),
    f"--config.data.processed_dir={processed_dir}",
    *flags,
  ]


def run_train(env, workdir, processed_dir, *flags, timeout=600):
  """Runs the train binary to completion; returns its summary (the JSON on its last stdout line)."""
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top

  proc = subprocess.run(
    train_command(workdir, processed_dir, *flags),
    env=env,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )
  if proc.returncode != 0:
    raise AssertionError(f"train failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def losses(workdir):
  import json  # pylint: disable=g-import-not-at-top

  with open(os.path.join(str(workdir), "metrics.jsonl")) as f:
    return [(r["step"], r["loss"]) for r in map(json.loads, f)]
