"""The thin binaries: stats end to end on fake run dirs; evaluate's one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np

from gr_jax.evaluation import runs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _fake(d, task_vals):
  runs.write_json(str(d / "eval" / "test" / "metrics.json"),
                  {t: {"recall@30": float(np.mean(v))} for t, v in task_vals.items()})
  runs.write_json(str(d / "eval" / "test" / "per_query.json"),
                  {t: {"recall@30": {str(i): float(x) for i, x in enumerate(v)}} for t, v in task_vals.items()})


def _py(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)


def test_stats_binary(tmp_path):
  rng = np.random.default_rng(0)
  for s in range(2):
    _fake(tmp_path / f"joint_{s}", {"search": rng.random(30) + 0.2, "rec": rng.random(30)})
    _fake(tmp_path / f"search_{s}", {"search": rng.random(30)})
    _fake(tmp_path / f"rec_{s}", {"rec": rng.random(30)})
  r = _py("gr_jax.stats", f"--runs=joint={tmp_path}/joint_*", f"--runs=search={tmp_path}/search_*",
          f"--runs=rec={tmp_path}/rec_0,{tmp_path}/rec_1", f"--out={tmp_path}/out")
  assert r.returncode == 0, r.stderr
  res = json.loads((tmp_path / "out" / "stats.json").read_text())
  assert {(c["a"], c["b"], c["task"]) for c in res["comparisons"]} == {("joint", "search", "search"),
                                                                       ("joint", "rec", "rec")}
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
