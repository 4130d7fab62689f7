"""The report's "where the time went": stage seconds per kind and evaluate queries/s, from the
stage markers and the runs' per-query files."""

import json
import os

import pytest

from gr_jax.study import plan as plan_lib
from gr_jax.study import report
from gr_jax.study import runner
from gr_jax.study import stages as stages_lib
from tests.study.test_plan import load_config


def test_time_spent_sums_markers_and_counts_evaluated_queries(tmp_path):
  plan = plan_lib.build_plan(load_config("quickstart", "seeds=1"), str(tmp_path))
  by_id = {s.id: s for s in stages_lib.stages_for(plan)}
  run = plan.runs[0]
  split = plan.config.eval.split
  finished = {  # stage id -> seconds
    f"train__{run.point}__{run.budget}__{run.model}__seed{run.seed}": 30.0,
    stages_lib.evaluate_stage_id(run, "beam"): 4.0,
    stages_lib.evaluate_stage_id(run, "topk_exact"): 1.0,
    stages_lib.evaluate_stage_id(plan.runs[1], "beam"): 5.0,  # no per_query.json: time only
  }
  for stage_id, seconds in finished.items():
    runner._write_marker(str(tmp_path), by_id[stage_id], seconds)  # pylint: disable=protected-access
  for decoder, n_search, n_rec in (("beam", 3, 4), ("topk_exact", 3, 4)):
    d = os.path.join(run.run_dir, "eval", stages_lib.eval_subdir(split, decoder))
    os.makedirs(d)
    per_query = {
      "search": {"recall@30": {f"q{i}": 1.0 for i in range(n_search)}, "mrr@30": {}},
      "rec": {"recall@30": {f"u{i}": 0.0 for i in range(n_rec)}},
    }
    with open(os.path.join(d, "per_query.json"), "w") as f:
      json.dump(per_query, f)

  spent = report.time_spent(plan)
  assert spent["total_seconds"] == pytest.approx(40.0)
  assert spent["stages"]["train"] == {"stages": 1, "seconds": 30.0, "share": 0.75}
  assert spent["stages"]["evaluate"]["stages"] == 3
  assert spent["stages"]["evaluate"]["seconds"] == pytest.approx(10.0)
  assert "prepare" not in spent["stages"]  # never finished: not counted
  assert spent["evaluate"]["beam"] == {"queries": 7, "seconds": 4.0, "queries_per_s": 1.75}
  assert spent["evaluate"]["topk_exact"]["queries_per_s"] == pytest.approx(7.0)
  md = "\n".join(report._time_md(spent))  # pylint: disable=protected-access
  assert "| train | 1 | 30 | 75.0% |" in md
  assert "beam: 7 queries in 4 s = 2 queries/s" in md


def test_report_numbers_format_categorical_sweep_values():
  """A sweep over names (embedding sources, mapping points) puts strings where numbers go."""
  assert report._fmt("embedding=content") == "embedding=content"  # pylint: disable=protected-access
  assert report._fmt(0.5, 2) == "0.50"  # pylint: disable=protected-access
  assert report._fmt(None) == "n/a"  # pylint: disable=protected-access
