"""Kill -9 a trained baseline's training, run it again: the same model and results, bitwise.

Baselines run as a process only inside `python -m gr_jax.reproduce`, whose baselines stage calls
`runner.run_baseline(name, config, data_dir, out_dir, split)` (gr_jax/study/stages.py) and, after
a kill, simply runs again (no reset: gr_jax/study/runner.py). The subprocess here makes that same
call on the shared small dataset, so the test needs no study of its own.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What the baselines stage does for one baseline (its resolved config handed over as JSON).
_RUN = """
import json, logging, sys
import ml_collections
from gr_jax.baselines.runner import run_baseline
name, config_path, data_dir, out_dir = sys.argv[1:]
logging.basicConfig(level=logging.INFO, force=True)  # the "resumed from step N" line
with open(config_path) as f:
  config = ml_collections.ConfigDict(json.load(f))
run_baseline(name, config, data_dir, out_dir, "test")
"""
STEPS, EVERY = 60, 6  # 9 checkpoints after the first: time to kill between them
# Written per run: how long it took, and from which step the run started.
_TIMING = ("train_sequences_per_second", "eval_queries_per_second", "resumed_from")


def _config_file(prepared, tmp_path, kind):
  config, _ = prepared
  c = config.copy_and_resolve_references()
  c.seed = 3
  c.eval.ks = (1, 5, 10)
  s = c.baselines[kind]
  s.hidden_size, s.num_layers, s.num_heads, s.ffn_size, s.max_len = 16, 1, 1, 16, 8
  s.batch_size, s.num_steps, s.dropout = 16, STEPS, 0.3
  s.checkpoint_every_steps, s.log_every_steps, s.eval_every_steps = EVERY, 1, 10
  path = tmp_path / f"{kind}.json"
  path.write_text(json.dumps(c.to_dict()))
  return str(path)


def _command(kind, config_path, data_dir, out_dir):
  return [sys.executable, "-c", _RUN, kind, config_path, data_dir, str(out_dir)]


def _env(cache_dir):
  env = dict(os.environ)
  env.update(
    {
      "PYTHONPATH": REPO + os.pathsep + env.get("PYTHONPATH", ""),
      "JAX_PLATFORMS": "cpu",
      # The three runs compile the same programs: the second and third load them.
      "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
      "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
  )
  env.pop("GR_JAX_VERBOSE", None)
  return env


def _run(cmd, env):
  proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def _steps(out_dir):
  """Complete checkpoints: Orbax renames a step's temporary directory to `<step>` when done."""
  d = os.path.join(out_dir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _arrays(out_dir, step):
  """The saved params and optimizer state of `step` as flat {path: numpy array}."""
  mngr = ocp.CheckpointManager(
    os.path.join(out_dir, "checkpoints"), item_names=("params", "opt_state", "meta")
  )
  got = mngr.restore(
    step,
    args=ocp.args.Composite(
      params=ocp.args.StandardRestore(), opt_state=ocp.args.StandardRestore()
    ),
  )
  mngr.close()
  flat = {}
  for item in ("params", "opt_state"):
    for path, leaf in jax.tree_util.tree_leaves_with_path(got[item]):
      flat[item + jax.tree_util.keystr(path)] = np.asarray(leaf)
  return flat


def _results(out_dir):
  """Every file the run wrote besides checkpoints, with the per-run timing fields taken out of
  metrics.json's info (and returned apart)."""
  run = pathlib.Path(out_dir)
  files = {p.name: p.read_text() for p in sorted((run / "eval" / "test").iterdir())}
  metrics = json.loads(files.pop("metrics.json"))
  per_run = {k: metrics["info"].pop(k) for k in _TIMING}
  files["metrics.json"] = metrics
  for name in ("metrics.jsonl", "config.json"):
    files[name] = (run / name).read_text()
  return files, per_run


@pytest.mark.slow  # three processes, mostly compiling: ~25 s of CPU, 60-70 s on a loaded 2-core CPU
# SASRec only: BERT4Rec saves and resumes through the same code (baselines/sequential.py), and
# each kind costs three processes of compilation in a suite with a 12-minute target.
@pytest.mark.parametrize("kind", ["sasrec"])
def test_sigkill_then_rerun_is_bitwise_identical(prepared, tmp_path, kind):
  _, data_dir = prepared
  config_path = _config_file(prepared, tmp_path, kind)
  env = _env(tmp_path / "jax_cache")
  ref = tmp_path / "uninterrupted"
  _run(_command(kind, config_path, data_dir, ref), env)
  assert _steps(str(ref))[-1] == STEPS

  work = tmp_path / "killed"
  proc = subprocess.Popen(
    _command(kind, config_path, data_dir, work),
    env=env,
    cwd=REPO,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 300
  while not _steps(str(work)):
    assert proc.poll() is None, "the run ended before it could be killed"
    assert time.time() < deadline, f"no checkpoint of {kind} within 300 s"
    time.sleep(0.01)
  os.kill(proc.pid, signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL
  at_kill = _steps(str(work))
  assert at_kill and STEPS not in at_kill, at_kill
  # A kill during a save leaves the step's temporary directory: make sure the rerun meets one.
  partial = work / "checkpoints" / f"{max(at_kill) + EVERY}.orbax-checkpoint-tmp"
  if not partial.exists():
    (partial / "params").mkdir(parents=True)
    (partial / "params" / "half_written").write_bytes(b"\0" * 100)
  assert not os.path.exists(work / "eval"), "killed before its results were written"

  rerun = _run(_command(kind, config_path, data_dir, work), env)  # the very same command
  assert f"{kind}: resumed from step {max(at_kill)}" in rerun.stderr, rerun.stderr[-3000:]

  ref_files, ref_run = _results(str(ref))
  got_files, got_run = _results(str(work))
  assert ref_run["resumed_from"] == 0 and got_run["resumed_from"] == max(at_kill) > 0
  assert got_files == ref_files  # run, qrels, per-query values, metrics, every logged loss
  ref_arrays, got_arrays = _arrays(str(ref), STEPS), _arrays(str(work), STEPS)
  assert ref_arrays.keys() == got_arrays.keys() and len(ref_arrays) > 10
  for k in ref_arrays:
    np.testing.assert_array_equal(got_arrays[k], ref_arrays[k], err_msg=k)
