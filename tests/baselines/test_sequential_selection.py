"""SASRec / BERT4Rec model selection on validation (`select_best`, `patience`): the evaluated
parameters are the best validation step's, early stopping `patience` decodes after it, nothing
reads the test split before selection, a killed run resumes to the same selection, and
select_best=False keeps the final-step result and the run directories written before the fields."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from gr_jax.baselines import sequential
from gr_jax.data.dataset import ProcessedDataset
from gr_jax.evaluation import metrics as metrics_lib
from gr_jax.evaluation import runs

EVERY = 3  # steps between validation decodes
PATIENCE = 3


@pytest.fixture(scope="module")
def ds(prepared):
  return ProcessedDataset(prepared[1])


def _config(prepared, kind="sasrec", **over):
  """A small, fast network on the shared prepared dataset; lr high enough for a noisy curve."""
  c = prepared[0].copy_and_resolve_references()
  c.seed = 0
  c.eval.ks = (1, 5, 10)
  s = c.baselines[kind]
  s.hidden_size, s.num_layers, s.num_heads, s.ffn_size, s.max_len = 16, 1, 1, 16, 8
  s.dropout, s.learning_rate, s.batch_size = 0.1, 2e-2, 32
  # Checkpoints only where a run ends (Orbax saves are most of a tiny run's time); the resume
  # test asks for one at every decode.
  s.num_steps, s.eval_every_steps, s.checkpoint_every_steps = 90, EVERY, 1000
  s.log_every_steps = 10
  s.select_best, s.patience = True, PATIENCE
  for k, v in over.items():
    s[k] = v
  return c


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _valid(workdir):
  return [r for r in _records(workdir) if r.get("split") == "valid"]


def _run(workdir, split="test"):
  return runs.read_run(os.path.join(workdir, "eval", split, "rec.run"))


def _metrics(workdir, split="test"):
  return runs.load_eval(workdir, split)[0]["rec"]


class _Stop(Exception):
  pass


@pytest.fixture(scope="module")
def selected(prepared, ds, tmp_path_factory):
  """One select_best run, with the order of every split read and every training step."""
  events = []
  original = ds.split

  def spy(task, split):
    events.append(("read", task, split))
    return original(task, split)

  ds.split = spy
  try:
    out = str(tmp_path_factory.mktemp("selected"))
    summary = sequential.run_sequential(
      "sasrec",
      _config(prepared),
      ds,
      out,
      "test",
      step_callback=lambda s: events.append(("step", s)),
    )
  finally:
    del ds.split  # the instance attribute: back to the class's method
  return out, summary, events


def test_best_step_is_the_first_maximum_and_patience_stops(selected):
  out, summary, _ = selected
  recs = _valid(out)
  values = [r["recall@10"] for r in recs]
  steps = [r["step"] for r in recs]
  assert steps == list(range(EVERY, steps[-1] + 1, EVERY))
  first_best = max(range(len(values)), key=lambda i: (values[i], -i))
  info = summary["info"]
  assert info["best_step"] == steps[first_best] == recs[-1]["best_step"]
  assert info["best_valid"]["recall@10"] == values[first_best]
  # Stopped exactly `patience` decodes after the best, before the 90-step cap.
  assert len(values) - 1 - first_best == PATIENCE
  assert info["steps"] == steps[-1] < 90
  assert info["stopped_early"] is True and info["capped"] is False
  assert recs[-1]["stopped_early"] is True and recs[-1]["capped"] is False
  assert [r["evals_since_best"] for r in recs[first_best:]] == list(range(PATIENCE + 1))
  # At every decode the best so far is the FIRST maximum so far (a tie keeps the earlier step).
  for i, r in enumerate(recs):
    j = max(range(i + 1), key=lambda m: (values[m], -m))
    assert r["best_step"] == steps[j], r
  # Not vacuous: the curve moved after the first decode, and the best is not the last decode.
  assert first_best > 0 and len(set(values)) > 1


def test_evaluates_the_best_steps_parameters(prepared, ds, selected, tmp_path):
  out, summary, _ = selected
  best, last = summary["info"]["best_step"], summary["info"]["steps"]
  # Training is a pure function of the step: a run that simply ends at the best step has the
  # selected parameters; one that ends where the selected run stopped has the final ones.
  at_best = str(tmp_path / "at_best")
  sequential.run_sequential(
    "sasrec", _config(prepared, num_steps=best, select_best=False), ds, at_best, "test"
  )
  assert _run(out) == _run(at_best)
  assert _metrics(out) == _metrics(at_best)
  at_last = str(tmp_path / "at_last")
  sequential.run_sequential(
    "sasrec", _config(prepared, num_steps=last, select_best=False), ds, at_last, "test"
  )
  assert _run(out) != _run(at_last)


def test_test_split_is_read_only_after_selection(selected):
  _, _, events = selected
  last_step = max(i for i, e in enumerate(events) if e[0] == "step")
  reads = [(i, e[2]) for i, e in enumerate(events) if e[0] == "read"]
  assert {s for i, s in reads if i < last_step} == {"train", "valid"}
  assert any(s == "test" for _, s in reads)
  assert all(i > last_step for i, s in reads if s == "test")


def test_select_best_false_keeps_the_final_step_and_old_run_dirs(prepared, ds, tmp_path):
  """select_best=False: the final step is evaluated, no selection fields appear, and a run
  directory written by a config without the new fields (before them) resumes under the new one."""
  old = _config(prepared, num_steps=12, select_best=False)
  del old.baselines.sasrec["select_best"], old.baselines.sasrec["patience"]
  out = str(tmp_path / "run")
  first = sequential.run_sequential("sasrec", old, ds, out, "test")
  new = _config(prepared, num_steps=12, select_best=False, patience=7)
  again = sequential.run_sequential("sasrec", new, ds, out, "test")
  assert again["info"]["resumed_from"] == again["info"]["steps"] == 12  # reloaded, not refused
  assert again["rec"] == first["rec"]
  for info in (first["info"], again["info"]):
    assert not {"best_step", "stopped_early", "capped", "select_best"} & set(info)
  assert all(set(r) == {"step", "split", "recall@1", "recall@5", "recall@10"} for r in _valid(out))
  # The written ranking is the final step's: the reloaded step-12 parameters rank the same top 10.
  res = sequential.train_sequential("sasrec", new, ds, out)
  assert res.summary["steps"] == 12
  assert "best_params" not in os.listdir(os.path.join(out, "checkpoints", "12"))
  arrays = ds.split("rec", "test")
  qids, rows = runs.split_queries(arrays)
  hist = ds.catalog.histories(arrays["encoder_input_ids"][rows])
  x = sequential.inference_inputs(hist, 8, "sasrec", ds.num_items)
  scores = np.asarray(res.model.item_logits(res.model(x)[:, -1]))  # [Q, n]
  written, ids = _run(out), ds.catalog.item_ids
  for r, qid in enumerate(qids):
    full = {ids[i]: float(v) for i, v in enumerate(scores[r])}
    assert metrics_lib.rank_items(written[qid]) == metrics_lib.rank_items(full)[:10]
  other = str(tmp_path / "selected")
  sel = sequential.run_sequential(
    "sasrec", _config(prepared, num_steps=12, patience=0), ds, other, "test"
  )
  # patience 0 never stops early; the cap ended it
  assert sel["info"]["capped"] is True and sel["info"]["stopped_early"] is False
  if sel["info"]["best_step"] == 12:
    assert _run(other) == _run(out)
  else:
    assert _run(other) != _run(out)


def _params(model):
  return jax.tree.leaves(jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model))))


@pytest.mark.slow
def test_resume_after_the_best_step_selects_the_same(prepared, ds, selected, tmp_path):
  out, summary, _ = selected
  best = summary["info"]["best_step"]
  stop_at = best + 2 * EVERY  # its checkpoint is written; the best step's own one is rotated out
  assert stop_at < summary["info"]["steps"]

  def stop(step):
    if step == stop_at:
      raise _Stop()

  c = _config(prepared, checkpoint_every_steps=EVERY)
  work = str(tmp_path / "resumed")
  with pytest.raises(_Stop):
    sequential.run_sequential("sasrec", c, ds, work, "test", step_callback=stop)
  kept = sorted(int(d) for d in os.listdir(os.path.join(work, "checkpoints")) if d.isdigit())
  assert best not in kept and kept[-1] == stop_at
  again = sequential.run_sequential("sasrec", c, ds, work, "test")
  assert again["info"]["resumed_from"] == stop_at
  for key in ("best_step", "steps", "stopped_early", "capped", "best_valid"):
    assert again["info"][key] == summary["info"][key], key
  assert again["rec"] == summary["rec"]
  assert _run(work) == _run(out)
  assert _records(work) == _records(out)
  # A finished (stopped) run is reloaded with its selected parameters, not trained on.
  res = sequential.train_sequential("sasrec", c, ds, work)
  assert res.summary["resumed_from"] == res.summary["steps"] == summary["info"]["steps"]
  ref = sequential.train_sequential(
    "sasrec", _config(prepared, num_steps=best, select_best=False), ds, str(tmp_path / "ref")
  )
  for x, y in zip(_params(res.model), _params(ref.model), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_bert4rec_selects_and_stops(prepared, ds, tmp_path):
  out = str(tmp_path / "b4r")
  got = sequential.run_sequential(
    "bert4rec", _config(prepared, "bert4rec", num_steps=60, patience=2), ds, out, "test"
  )
  values = [r["recall@10"] for r in _valid(out)]
  first_best = max(range(len(values)), key=lambda i: (values[i], -i))
  assert got["info"]["best_step"] == (first_best + 1) * EVERY
  assert got["info"]["stopped_early"] == (len(values) - 1 - first_best == 2)
  assert got["info"]["capped"] != got["info"]["stopped_early"] or got["info"]["steps"] == 60
