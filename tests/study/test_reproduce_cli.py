"""The reproduce binary: bad input stops it with one actionable line, not a traceback."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_missing_movielens_file_is_one_line(tmp_path):
  raw = tmp_path / "ml"
  raw.mkdir()
  (raw / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3.5,10\n")
  cmd = [
    sys.executable,
    "-m",
    "gr_jax.reproduce",
    "--config",
    os.path.join(REPO, "configs", "movielens.py") + f":path={raw},size=tiny",
    "--workdir",
    str(tmp_path / "run"),
  ]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1
  errors = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "movies.csv" in errors[0], out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  # Nothing half-written is taken for a finished stage.
  assert not os.path.exists(tmp_path / "run" / "stages" / "prepare__default__shared.json")
