"""The thin binaries: stats end to end on fake run dirs; evaluate's one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np

from gr_jax.evaluation import runs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _fake(d, task_vals, info=None):
  """A fake run dir: eval/test/metrics.json, per_query.json and {task}.qrels (query i: item i)."""
  summary = {t: {"recall@30": float(np.mean(v))} for t, v in task_vals.items()}
  if info is not None:
    summary["info"] = info
  runs.write_json(str(d / "eval" / "test" / "metrics.json"), summary)
  runs.write_json(
    str(d / "eval" / "test" / "per_query.json"),
    {t: {"recall@30": {str(i): float(x) for i, x in enumerate(v)}} for t, v in task_vals.items()},
  )
  for t, v in task_vals.items():
    runs.write_qrels(
      str(d / "eval" / "test" / f"{t}.qrels"), {str(i): {f"i{i}": 1} for i in range(len(v))}
    )


def _py(*args):
  return subprocess.run(
    [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
  )


def test_stats_binary(tmp_path):
  rng = np.random.default_rng(0)
  for s in range(2):
    _fake(tmp_path / f"joint_{s}", {"search": rng.random(30) + 0.2, "rec": rng.random(30)})
    _fake(tmp_path / f"search_{s}", {"search": rng.random(30)})
    _fake(tmp_path / f"rec_{s}", {"rec": rng.random(30)})
  r = _py(
    "gr_jax.stats",
    f"--runs=joint={tmp_path}/joint_*",
    f"--runs=search={tmp_path}/search_*",
    f"--runs=rec={tmp_path}/rec_0,{tmp_path}/rec_1",
    f"--out={tmp_path}/out",
  )
  assert r.returncode == 0, r.stderr
  res = json.loads((tmp_path / "out" / "stats.json").read_text())
  assert {(c["a"], c["b"], c["task"]) for c in res["comparisons"]} == {
    ("joint", "search", "search"),
    ("joint", "rec", "rec"),
  }
  assert len(res["results"][0]["run_dirs"]) == 2
  assert "joint vs search" in (tmp_path / "out" / "stats.md").read_text()
  r = _py("gr_jax.stats", f"--runs=joint={tmp_path}/nothing_*")
  assert r.returncode == 1 and "matches no directory" in r.stderr


def test_evaluate_binary_one_line_errors(tmp_path):
  (tmp_path / "empty").mkdir()
  r = _py("gr_jax.evaluate", f"--workdir={tmp_path}/empty")
  assert r.returncode == 1
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "no checkpoint" in last


def _one_line_error(r):
  assert r.returncode != 0, r.stdout
  lines = r.stderr.strip().splitlines()
  assert lines and lines[-1].startswith("error: "), r.stderr
  assert "Traceback" not in r.stderr
  return lines[-1]


def test_stats_binary_refuses_runs_of_different_datasets(tmp_path):
  # The reported case: 200 vs 197 unrelated queries were paired by position ("+118.5%, p 4.2e-05").
  rng = np.random.default_rng(1)
  _fake(tmp_path / "joint_0", {"search": rng.random(200)})
  _fake(tmp_path / "search_0", {"search": rng.random(197)})
  r = _py(
    "gr_jax.stats",
    f"--runs=joint={tmp_path}/joint_0",
    f"--runs=search={tmp_path}/search_0",
    "--tasks=search",
  )
  last = _one_line_error(r)
  assert f"{tmp_path}/joint_0" in last and f"{tmp_path}/search_0" in last and "qrels" in last
  # Same queries, but metrics.json says the datasets differ.
  _fake(tmp_path / "joint_1", {"search": rng.random(50)}, info={"dataset": "/data/a"})
  _fake(tmp_path / "search_1", {"search": rng.random(50)}, info={"dataset": "/data/b"})
  r = _py(
    "gr_jax.stats",
    f"--runs=joint={tmp_path}/joint_1",
    f"--runs=search={tmp_path}/search_1",
    "--tasks=search",
  )
  last = _one_line_error(r)
  assert "/data/a" in last and "/data/b" in last and f"{tmp_path}/search_1" in last


def test_stats_binary_missing_files_exit_non_zero(tmp_path):
  rng = np.random.default_rng(2)
  for name in ("per_query.json", "search.qrels"):
    d = tmp_path / name
    _fake(d / "joint", {"search": rng.random(20)})
    _fake(d / "search", {"search": rng.random(20)})
    (d / "search" / "eval" / "test" / name).unlink()
    r = _py(
      "gr_jax.stats", f"--runs=joint={d}/joint", f"--runs=search={d}/search", "--tasks=search"
    )
    assert str(d / "search" / "eval" / "test" / name) in _one_line_error(r)
