"""The thin binaries: stats end to end on fake run dirs; evaluate's one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

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


@pytest.mark.slow
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
  md = (tmp_path / "out" / "stats.md").read_text()
  assert "joint vs search" in md and "conditional on the trained models" in md
  verdicts = {
    "joint ahead (significant)",
    "joint behind (significant)",
    "no significant difference",
    "inconclusive (underpowered)",
  }
  for c in res["comparisons"]:
    st = c["seed_test"]
    assert c["verdict"] == st["verdict"] and st["verdict"] in verdicts
    assert 0.0 < st["p_signflip"] <= 1.0 and st["signflip_exact"] is True
    assert st["mdd80"] > 0 and len(st["ci95_bootstrap"]) == 2
    assert c["label"] == "conditional on the trained models"
  r = _py("gr_jax.stats", f"--runs=joint={tmp_path}/nothing_*")
  assert r.returncode == 1 and "matches no directory" in r.stderr


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


def _stats_pair(tmp_path, joint_info=None, search_info=None, seeds=None):
  """joint_0/_1 and search_0/_1 over the same 20 queries; returns the two --runs flags."""
  rng = np.random.default_rng(3)
  for s in range(2):
    _fake(tmp_path / f"joint_{s}", {"search": rng.random(20)}, info=joint_info)
    _fake(tmp_path / f"search_{s}", {"search": rng.random(20)}, info=search_info)
    if seeds is not None:
      for model in ("joint", "search"):
        runs.write_json(str(tmp_path / f"{model}_{s}" / "config.json"), {"seed": seeds[s]})
  return f"--runs=joint={tmp_path}/joint_0,{tmp_path}/joint_1", (
    f"--runs=search={tmp_path}/search_0,{tmp_path}/search_1"
  )


def test_stats_binary_refuses_different_decoders(tmp_path):
  # The reported case: a beam-search eval against a topk_exact one ("-56.5%, p 8.0e-22").
  joint, search = _stats_pair(tmp_path, {"decode_method": "beam"}, {"decode_method": "topk_exact"})
  last = _one_line_error(_py("gr_jax.stats", joint, search, "--tasks=search"))
  assert f"{tmp_path}/joint_0" in last and f"{tmp_path}/search_0" in last
  assert "info.decode_method" in last and "'beam' vs 'topk_exact'" in last


@pytest.mark.parametrize(
  "joint_info,search_info,field",
  [
    ({"split": "test"}, {"split": "valid"}, "info.split"),
    ({"ks": [1, 30]}, {"ks": [1, 10]}, "info.ks"),
    ({"exclude_seen": True}, {"exclude_seen": False}, "info.exclude_seen"),
  ],
)
def test_stats_binary_refuses_other_protocol_differences(tmp_path, joint_info, search_info, field):
  joint, search = _stats_pair(tmp_path, joint_info, search_info)
  last = _one_line_error(_py("gr_jax.stats", joint, search, "--tasks=search"))
  assert f"{tmp_path}/joint_0" in last and f"{tmp_path}/search_0" in last and field in last


@pytest.mark.slow
def test_stats_binary_refuses_duplicate_runs_and_seeds(tmp_path):
  _, search = _stats_pair(tmp_path)
  # `stats --runs joint=A,A`: one directory counted as two seeds.
  r = _py(
    "gr_jax.stats", f"--runs=joint={tmp_path}/joint_0,{tmp_path}/joint_0", search, "--tasks=search"
  )
  last = _one_line_error(r)
  assert f"{tmp_path}/joint_0" in last and "listed twice" in last
  # Two directories that ran the same seed.
  joint, search = _stats_pair(tmp_path / "dup", seeds=(0, 0))
  last = _one_line_error(_py("gr_jax.stats", joint, search, "--tasks=search"))
  assert f"{tmp_path}/dup/joint_0" in last and f"{tmp_path}/dup/joint_1" in last
  assert "seed 0" in last
