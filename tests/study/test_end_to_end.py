"""End to end, on CPU: simulated data -> Gen_S, Gen_R, Gen_R+S with 2 seeds -> evaluation from
checkpoints -> statistics -> report (markdown table, report.json, PNG plots), then a rerun that
skips every stage; a sweep's gain plot. The real-data configs: test_real_data_configs.py."""

import json
import os

import pytest

from gr_jax.study import build_plan, run_plan
from tests.study.test_plan import load_config
from tests.training import tiny_config


def tiny_study(config):
  """Shrinks a study config to seconds per run: the training tests' tiny data and model settings
  (shapes stay fixed, so compiles are shared), 2 epochs, a small diverse beam search."""
  tiny = tiny_config.get_config()
  config.data.tokenizer.update(tiny.data.tokenizer.to_dict())
  sim = tiny.data.sim.to_dict()
  sim.pop("setting")  # keep the study's setting (S1 for the sweep test)
  config.data.sim.update(sim)
  for key in ("encoder_len", "max_query_tokens", "max_history"):
    config.data[key] = tiny.data[key]
  for key in ("batch_size", "warmup_fraction", "learning_rate"):
    config.train[key] = tiny.train[key]
  config.data.sim.num_users = 80
  config.data.sim.eval_queries = 40
  config.train.num_epochs = 2
  config.train.num_steps = 0
  config.checkpoint.every_steps = 1000
  config.decode.num_beams = 8
  config.decode.num_beam_groups = 4
  config.decode.num_return_sequences = 8
  config.decode.batch_size = 32
  config.eval.ks = (1, 5, 8)
  # Both decoders; the two step-count budgets (converged is tested in tests/training); BM25 as
  # the one cheap baseline beside popularity.
  config.reproduce.budgets = ("epochs", "matched_steps")
  config.reproduce.decoders = ("beam", "topk_exact")
  config.reproduce.baselines = ("bm25",)
  # The training settings above for every model kind: the quickstart's recorded per-model values
  # were tuned for its full-size world (the mechanism: tests/study/test_tune.py).
  config.reproduce.tune.use = False
  return config


@pytest.mark.slow
def test_quickstart_study_end_to_end(tmp_path):
  config = tiny_study(load_config("quickstart", "seeds=2"))
  workdir = str(tmp_path / "study")
  plan = build_plan(config, workdir)
  lines = []
  report_path = run_plan(plan, printer=lines.append)
  assert any(l.startswith("[stage 1/") for l in lines)
  # Every run was evaluated from its checkpoint with both decoders, for exactly the tasks it was
  # trained on.
  for run in plan.runs:
    for sub in ("test", "test_topk_exact"):
      with open(os.path.join(run.run_dir, "eval", sub, "metrics.json")) as f:
        metrics = json.load(f)
      trained = set(run.config.data.tasks)
      assert trained == {t for t in ("search", "rec") if t in metrics}, run.run_dir
      for task in trained:
        assert 0.0 <= metrics[task]["recall@8"] <= 1.0
        assert os.path.exists(os.path.join(run.run_dir, "eval", sub, f"{task}.run"))

  # matched_steps: the three models of a seed took the same number of optimizer steps (the joint
  # model's); under epochs they did not.
  def steps(run):
    with open(os.path.join(run.run_dir, "metrics.jsonl")) as f:
      return max(json.loads(line)["step"] for line in f if line.strip())

  for seed in config.reproduce.seeds:
    matched = {
      r.model: steps(r) for r in plan.runs if r.seed == seed and r.budget == "matched_steps"
    }
    epochs = {r.model: steps(r) for r in plan.runs if r.seed == seed and r.budget == "epochs"}
    assert len(set(matched.values())) == 1 and matched["joint"] == epochs["joint"], (
      matched,
      epochs,
    )
    assert len(set(epochs.values())) > 1, epochs
  with open(report_path) as f:
    report_md = f.read()
  assert "| task | model | Recall@30 mean ± std |" in report_md or "Recall@" in report_md
  assert "Gen_R+S" in report_md and "Gen_S" in report_md and "Gen_R" in report_md
  with open(os.path.join(workdir, "report.json")) as f:
    report = json.load(f)
  tests = report["tests"]
  assert {(t["task"], t["b"]) for t in tests} == {("search", "search"), ("rec", "rec")}
  # One family: 2 budgets x 2 decoders x 2 tasks x 2 units, every test corrected over all of them.
  assert len(tests) == 16 and {t["family_size"] for t in tests} <= {16, 15, 14}
  assert {(t["budget"], t["decode"], t["unit"]) for t in tests} == {
    (b, d, u)
    for b in ("epochs", "matched_steps")
    for d in ("beam", "topk_exact")
    for u in ("query", "seed")
  }
  verdicts = set(report["verdicts"])
  assert verdicts == {
    "joint ahead (significant)",
    "joint behind (significant)",
    "no significant difference",
    "inconclusive (underpowered)",
  }
  for t in tests:
    assert t["a"] == "joint" and len(t["ci95"]) == 2 and "diff" in t
    if t["p_value"] == t["p_value"]:  # not NaN (a seed test with no spread has no p)
      assert 0.0 <= t["p_value"] <= 1.0 and t["p_adjusted"] >= t["p_value"]
    if t["unit"] == "seed":  # the verdict's record: sign-flip, bootstrap, power, verdict
      assert t["verdict"] in verdicts and t["p_signflip"] in (0.5, 1.0)  # 2 seeds: 4 patterns
      assert t["ci95_bootstrap"] is None or len(t["ci95_bootstrap"]) == 2
      assert t["mdd80"] is None or t["mdd80"] >= 0
    else:
      assert t["label"] == "conditional on the trained models"
  # One flat record per comparison (2 budgets x 2 decoders x 2 tasks).
  assert len(report["comparisons"]) == 8
  assert {c["verdict"] for c in report["comparisons"]} <= verdicts
  assert all("p_query_conditional" in c and "mdd80" in c for c in report["comparisons"])
  gen = [r for r in report["results"] if not r.get("baseline")]
  models = {(r["model"], r["task"]) for r in gen}
  assert models == {("search", "search"), ("rec", "rec"), ("joint", "search"), ("joint", "rec")}
  for r in gen:
    assert len(r["per_seed"]) == 2 and len(r["steps"]) == 2 and r["budget"] and r["decode"]
    assert r["distinct_items"] is not None and len(r["ci95"]) == 2
  assert {r["model"] for r in report["results"] if r.get("baseline")} >= {"bm25", "pop_s", "pop_r"}
  # Gen_R+S against the best baseline of each task: the baseline with the highest mean on VALID,
  # two paired tests per budget x decoder x task on test, corrected as their own family.
  btests = report["baseline_tests"]
  assert len(btests) == 16 and {t["family_size"] for t in btests} <= {16, 15, 14}
  for t in btests:
    means, valid = t["baseline_means"], t["baseline_means_valid"]
    assert t["chosen_on"] == "valid" and set(valid) == set(means)
    assert t["a"] == "joint" and t["b"] == max(sorted(valid), key=valid.get)
    assert t["mean_b"] == pytest.approx(means[t["b"]])
    joint = next(
      r
      for r in gen
      if r["model"] == "joint"
      and r["task"] == t["task"]
      and r["budget"] == t["budget"]
      and r["decode"] == t["decode"]
    )
    assert t["mean_a"] == pytest.approx(joint["mean"])
    if t["unit"] == "seed":
      assert t["diff"] == pytest.approx(t["mean_a"] - t["mean_b"])
  assert "against the best baseline" in report_md
  assert "conditional on the trained models" in report_md and "unadjusted" in report_md
  for t in btests:
    assert t["unit"] == "query" or t["verdict"] in verdicts
  pngs = [p for p in os.listdir(os.path.join(workdir, "plots")) if p.endswith(".png")]
  assert any(p.startswith("recall_") for p in pngs) and any(p.startswith("tsne_") for p in pngs)
  for p in pngs:
    with open(os.path.join(workdir, "plots", p), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  # A second invocation finds everything done.
  lines.clear()
  run_plan(build_plan(config, workdir), printer=lines.append)
  assert lines[-1].startswith("[plan] 0 stage(s) run")


@pytest.mark.slow
def test_sweep_writes_gain_plot(tmp_path):
  config = tiny_study(load_config("sim_s1_popularity", "seeds=1"))
  config.reproduce.sweep_values = (0.0, 1.0)
  config.reproduce.models = ("search", "joint")  # one task's gain is enough for the plot
  # The sweeps' budget and one decoder, no trained baseline: the plot needs one gain per point
  # (budgets, decoders and baselines are covered by the quickstart study above).
  config.reproduce.budgets = ("matched_steps",)
  config.reproduce.decoders = ("topk_exact",)
  config.reproduce.baselines = ()
  workdir = str(tmp_path / "s1")
  run_plan(build_plan(config, workdir), printer=lambda s: None)
  with open(os.path.join(workdir, "report.json")) as f:
    report = json.load(f)
  assert {row["task"] for row in report["sweep"]} == {"search"}
  xs = sorted({row["x"] for row in report["sweep"]})
  assert len(xs) == 2 and xs[0] < xs[1]  # realised KL grows with the shuffled fraction
  assert os.path.exists(os.path.join(workdir, "plots", "sweep_gain.png"))
