"""reproduce under eval.exclude_seen: evaluation and baselines get the protocol, training does not
depend on it (switching it re-evaluates without retraining)."""

from gr_jax.study import plan as plan_lib
from gr_jax.study import stages as stage_lib
from tests.study.test_plan import load_config


def _plan(tmp_path, exclude_seen):
  config = load_config("quickstart")
  config.eval.exclude_seen = exclude_seen
  return plan_lib.build_plan(config, str(tmp_path / "study"))


def test_stages_pass_exclude_seen_to_evaluation_and_baselines(tmp_path, monkeypatch):
  off, on = _plan(tmp_path, False), _plan(tmp_path, True)
  fp_off = {s.id: s for s in stage_lib.stages_for(off)}
  fp_on = {s.id: s for s in stage_lib.stages_for(on)}
  assert fp_off.keys() == fp_on.keys()
  for sid, s in fp_off.items():
    same = s.fingerprint == fp_on[sid].fingerprint
    assert same == (s.kind in ("prepare", "train")), sid  # evaluation and baselines rerun
    if s.kind in ("evaluate", "baselines"):  # unset: the inputs of studies made before the field
      assert "exclude_seen" not in s.inputs["eval"]
      assert fp_on[sid].inputs["eval"]["exclude_seen"] is True

  from gr_jax.baselines import popularity, runner
  from gr_jax.data import dataset
  from gr_jax.evaluation import evaluator

  seen = []
  monkeypatch.setattr(evaluator, "evaluate", lambda *a, **kw: seen.append(kw["overrides"]))
  monkeypatch.setattr(
    popularity, "write_popularity_runs", lambda *a, **kw: seen.append(kw["exclude_seen"])
  )
  monkeypatch.setattr(
    runner, "run_baseline", lambda name, cfg, *a: seen.append((name, cfg.eval.exclude_seen))
  )
  monkeypatch.setattr(dataset, "ProcessedDataset", lambda d: d)
  for plan, flag in ((off, False), (on, True)):
    seen.clear()
    run, point = plan.runs[0], plan.points[0]
    stage_lib._evaluate(run, "test", "topk_exact")
    stage_lib._baselines(plan, point, point.datasets[0])
    assert seen[0] == {"decode.method": "topk_exact", "eval.exclude_seen": flag}
    # Popularity on the study's split and on valid (where the best baseline is chosen), then
    # each baseline on both.
    assert seen[1:3] == [flag, flag]
    assert seen[3:] == [(name, flag) for name in plan.config.reproduce.baselines for _ in (1, 2)]
