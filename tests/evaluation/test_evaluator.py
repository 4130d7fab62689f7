"""Evaluator pipeline with a stubbed checkpoint and decoder; errors with the real restore."""

import dataclasses
import hashlib
import json
import os

import ir_measures
import ml_collections
import numpy as np
import pytest
from ir_measures import R, nDCG

from gr_jax.data import prepare
from gr_jax.data.catalog import ItemCatalog
from gr_jax.evaluation import evaluator, runs
from gr_jax import checkpointing

TEXT_VOCAB = 50
NUM_ITEMS = 12


@dataclasses.dataclass
class FakeModelConfig:
  vocab_size: int = TEXT_VOCAB
  num_item_tokens: int = NUM_ITEMS
  pad_token_id: int = 0
  eos_token_id: int = 1


class FakeModel:
  config = FakeModelConfig()


def _config(data_dir, tasks=("search", "rec")):
  c = ml_collections.ConfigDict()
  c.name = "fake"
  c.data = ml_collections.ConfigDict({"processed_dir": data_dir, "tasks": tasks})
  c.decode = ml_collections.ConfigDict(
    {
      "num_beams": 4,
      "num_beam_groups": 2,
      "diversity_penalty": 0.25,
      "length_penalty": 1.0,
      "num_return_sequences": 4,
      "max_new_tokens": 2,
      "early_stopping": False,
      "batch_size": 3,
    }
  )
  c.eval = ml_collections.ConfigDict({"split": "test", "ks": (1, 2, 4)})
  return c


def _write_dataset(d):
  os.makedirs(d / "search")
  os.makedirs(d / "rec")
  ItemCatalog([f"item{i}" for i in range(NUM_ITEMS)], token_offset=TEXT_VOCAB).save(
    str(d / "catalog.json")
  )
  rng = np.random.default_rng(0)
  for task, n_q in [("search", 7), ("rec", 5)]:
    qid = np.repeat(np.arange(n_q), 2)[: 2 * n_q - 1]  # most queries have two targets
    target = rng.integers(0, NUM_ITEMS, qid.size).astype(np.int32)
    enc = np.zeros([qid.size, 6], np.int32)
    enc[:, 0] = 10 + qid  # the fake decoder reads the query back from here
    enc[:, 1] = 1
    np.savez(
      d / task / "test.npz",
      encoder_input_ids=enc,
      target_item=target,
      query_id=qid.astype(np.int32),
    )
  _write_manifest(d)


def _write_manifest(d, config=None):
  """What the split reader (ProcessedDataset) and the dataset check read (prepare writes more),
  for the files as they are now and the run `config` (default: `_config`): a test that edits the
  hand-made dataset or the run's data section writes it again."""
  files = ["catalog.json", "search/test.npz", "rec/test.npz"]
  manifest = {
    "encoder_len": 6,
    "decoder_len": 2,
    "files": {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in files},
    "config_hash": prepare.config_hash(config or _config(str(d))),
  }
  (d / "manifest.json").write_text(json.dumps(manifest))


def fake_factory(model, config, catalog):
  def decode(enc):
    b = enc.shape[0]
    q = enc[:, 0] - 10
    # Beams: item (q), item (q+1), item (q) again (duplicate), a text token (not an item), ...
    items = np.stack(
      [q % NUM_ITEMS, (q + 1) % NUM_ITEMS, q % NUM_ITEMS, np.full(b, -TEXT_VOCAB + 3)], 1
    )
    seqs = np.stack([items + TEXT_VOCAB, np.ones_like(items)], -1)  # [B, R, 2]
    scores = np.broadcast_to(np.array([-0.1, -0.5, -0.7, -0.9], np.float32), (b, 4)).copy()
    scores[q % 3 == 0, 1] = -0.1  # a tie at the top for some queries
    return seqs.astype(np.int32), scores

  return decode


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
  data = tmp_path / "data"
  _write_dataset(data)
  wd = tmp_path / "run"
  wd.mkdir()
  monkeypatch.setattr(
    checkpointing,
    "restore_for_inference",
    lambda workdir, step=None: (FakeModel(), _config(str(data)), 7),
  )
  return wd


def test_evaluate_writes_runs_qrels_metrics(run_dir):
  out = evaluator.evaluate(str(run_dir), "test", decode_fn_factory=fake_factory)
  ed = run_dir / "eval" / "test"
  on_disk = json.loads((ed / "metrics.json").read_text())
  assert on_disk == json.loads(json.dumps(out))
  assert set(on_disk) == {"search", "rec", "info"}
  assert on_disk["info"]["step"] == 7
  pq = json.loads((ed / "per_query.json").read_text())
  for task, n_q in [("search", 7), ("rec", 5)]:
    run = runs.read_run(ed / f"{task}.run")
    qrels = runs.read_qrels(ed / f"{task}.qrels")
    assert len(qrels) == n_q and len(run) == n_q  # each query decoded once
    assert all(len(v) == 2 for v in run.values())  # duplicate and text token dropped
    assert run["3"] == {"item3": pytest.approx(-0.1), "item4": pytest.approx(-0.1)}
    ref = ir_measures.calc_aggregate([R @ 1, R @ 2, R @ 4, nDCG @ 2], qrels, run)
    assert on_disk[task]["recall@1"] == pytest.approx(ref[R @ 1], abs=1e-9)
    assert on_disk[task]["recall@4"] == pytest.approx(ref[R @ 4], abs=1e-9)
    assert on_disk[task]["ndcg@2"] == pytest.approx(ref[nDCG @ 2], abs=1e-9)
    assert set(pq[task]["mrr@4"]) == set(qrels)
    assert on_disk[task]["recall@4"] > 0  # the oracle beams find some targets
  # A stray query id in the qrels is the catalogue id string.
  assert all(d.startswith("item") for v in runs.read_qrels(ed / "rec.qrels").values() for d in v)


def test_overrides_and_missing_split(run_dir):
  out = evaluator.evaluate(
    str(run_dir), "test", overrides={"eval.ks": "1,3"}, decode_fn_factory=fake_factory
  )
  assert "recall@3" in out["search"] and "recall@4" not in out["search"]
  with pytest.raises(
    evaluator.EvaluationError,
    match=r"valid.npz: field 'split': split 'valid' of task 'search' is missing \(have \['test'",
  ):
    evaluator.evaluate(str(run_dir), "valid", decode_fn_factory=fake_factory)
  with pytest.raises(evaluator.EvaluationError, match="no field 'nope'"):
    evaluator.evaluate(
      str(run_dir), "test", overrides={"decode.nope": 1}, decode_fn_factory=fake_factory
    )


def test_catalog_from_another_dataset(run_dir, tmp_path):
  ItemCatalog([f"x{i}" for i in range(NUM_ITEMS + 1)], token_offset=TEXT_VOCAB).save(
    str(tmp_path / "data" / "catalog.json")
  )
  # A dataset prepared with 13 items (its manifest agrees), not a file changed after prepare
  # (the dataset check names that one: test_dataset_changed_after_prepare_is_named).
  _write_manifest(tmp_path / "data")
  with pytest.raises(evaluator.EvaluationError, match="13 items from token 50.*12 item tokens"):
    evaluator.evaluate(str(run_dir), "test", decode_fn_factory=fake_factory)


def test_dataset_changed_after_prepare_is_named(run_dir, tmp_path):
  """The evaluator checks the run's dataset against its manifest before reading a split."""
  ItemCatalog([f"x{i}" for i in range(NUM_ITEMS)], token_offset=TEXT_VOCAB).save(
    str(tmp_path / "data" / "catalog.json")
  )
  with pytest.raises(ValueError, match=r"catalog.json: field 'sha256': file changed since prepare"):
    evaluator.evaluate(str(run_dir), "test", decode_fn_factory=fake_factory)


def test_no_checkpoint_is_one_line_error(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(evaluator.EvaluationError) as e:
    evaluator.evaluate(str(tmp_path / "empty"))
  assert "no checkpoint" in str(e.value) and "\n" not in str(e.value)
  with pytest.raises(evaluator.EvaluationError, match="does not exist"):
    evaluator.evaluate(str(tmp_path / "nope"))


@pytest.mark.slow
def test_real_beam_search_decode_matches_sequences_to_items():
  """decode_queries over the real decoder (tiny random T5) agrees with sequences_to_items."""
  from flax import nnx

  from configs import base
  from gr_jax.decoding.beam_search import beam_search
  from gr_jax.decoding.constraints import AtomicItemConstraint, sequences_to_items
  from gr_jax.model import T5, T5Config

  cat = ItemCatalog([f"m{i}" for i in range(NUM_ITEMS)], token_offset=TEXT_VOCAB)
  model = T5(
    T5Config.from_preset("tiny", vocab_size=TEXT_VOCAB, num_item_tokens=NUM_ITEMS), rngs=nnx.Rngs(0)
  )
  c = base.get_config()
  c.decode.num_beams, c.decode.num_beam_groups, c.decode.num_return_sequences = 6, 3, 6
  enc = np.random.default_rng(0).integers(3, TEXT_VOCAB, (5, 8)).astype(np.int32)
  enc[:, -1] = 1
  run = evaluator.decode_queries(
    evaluator.make_decode_fn(model, c, cat), enc, [str(i) for i in range(5)], cat, batch_size=4
  )  # 2 batches, 1 padded
  seqs, scores = beam_search(
    model,
    enc,
    num_beams=6,
    num_beam_groups=3,
    diversity_penalty=0.25,
    max_new_tokens=2,
    num_return_sequences=6,
    constraint=AtomicItemConstraint.from_catalog(cat),
  )
  ref = sequences_to_items(
    np.asarray(seqs), AtomicItemConstraint.from_catalog(cat), np.asarray(scores)
  )
  for i in range(5):
    ours = sorted(run[str(i)], key=lambda d: -run[str(i)][d])
    assert ours == [cat.item_ids[j] for j in ref[i]]
    assert 1 <= len(ours) <= 6


def test_task_prefix_reaches_the_decoder(run_dir, monkeypatch, tmp_path):
  """data.task_prefix=True: the evaluator decodes the same prefixed inputs the trainer used."""
  from gr_jax.data import pipeline, tokenizer

  class CharTokenizer:
    def encode(self, text):
      return [3 + ord(ch) % 40 for ch in text]

  monkeypatch.setattr(
    tokenizer.TextTokenizer, "load", classmethod(lambda cls, path: CharTokenizer())
  )
  cfg = _config(str(tmp_path / "data"))
  cfg.data.task_prefix = True
  cfg.data.encoder_len = 6
  monkeypatch.setattr(
    checkpointing, "restore_for_inference", lambda workdir, step=None: (FakeModel(), cfg, 7)
  )
  seen = {}

  def factory(model, config, catalog):
    inner = fake_factory(model, config, catalog)

    def decode(enc):
      seen.setdefault("enc", []).append(np.array(enc))
      return inner(enc)

    return decode

  _write_manifest(tmp_path / "data", cfg)
  with pytest.raises(ValueError, match="no room in data.encoder_len=6"):  # "recommend:" > 6 tokens
    evaluator.evaluate(str(run_dir), "test", decode_fn_factory=factory)
  # A dataset with room: rewrite the inputs 16 wide and check what the decoder received.
  for task in ("search", "rec"):
    path = tmp_path / "data" / task / "test.npz"
    with np.load(path) as z:
      arrays = dict(z)
    wide = np.zeros((len(arrays["query_id"]), 16), np.int32)
    wide[:, :2] = arrays["encoder_input_ids"][:, :2]
    arrays["encoder_input_ids"] = wide
    np.savez(path, **arrays)
  _write_manifest(tmp_path / "data", cfg)
  seen.clear()
  evaluator.evaluate(str(run_dir), "test", decode_fn_factory=factory)
  calls = seen["enc"]
  assert len(calls) == 3 + 2  # batch_size 3: 7 search queries, then 5 rec queries
  search, rec = np.concatenate(calls[:3])[:7], np.concatenate(calls[3:])[:5]
  s_pre = pipeline.task_prefix_ids(CharTokenizer(), "search")
  r_pre = pipeline.task_prefix_ids(CharTokenizer(), "rec")
  assert (search[:, : len(s_pre)] == s_pre).all() and (rec[:, : len(r_pre)] == r_pre).all()
  assert (search[:, len(s_pre)] == 10 + np.arange(7)).all()  # the query token follows
  assert (search[:, len(s_pre) + 1] == 1).all()  # then EOS


def test_info_records_method_and_distinct_items(run_dir):
  out = evaluator.evaluate(str(run_dir), "test", decode_fn_factory=fake_factory)
  info = out["info"]
  assert info["decode_method"] == "beam"  # a run config without decode.method decoded with beam
  assert info["decode"]["method"] == "beam"
  for task in ("search", "rec"):
    # The fake decoder returns 4 sequences per query, of which 2 distinct valid items.
    assert info["tasks"][task]["distinct_items_mean"] == 2.0


def _tiny_t5():
  from flax import nnx

  from gr_jax.model import T5, T5Config

  return T5(
    T5Config.from_preset("tiny", vocab_size=TEXT_VOCAB, num_item_tokens=NUM_ITEMS), rngs=nnx.Rngs(1)
  )


def _numpy_topk_run(model, enc, qids, k):
  """Brute force: log-softmax of the model's first decoder position over the whole vocabulary,
  item slice, top-K by a stable descending argsort -> {qid: [(item id, log-prob)]}."""
  start = np.full((enc.shape[0], 1), model.config.decoder_start_token_id, np.int32)
  logits = np.asarray(model(enc, start), np.float64)[:, 0]  # [B, V]
  logp = logits - logits.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  item = logp[:, TEXT_VOCAB : TEXT_VOCAB + NUM_ITEMS]  # [B, I]
  order = np.argsort(-item, axis=1, kind="stable")[:, :k]  # [B, K]
  return {q: [(f"item{j}", item[r, j]) for j in order[r]] for r, q in enumerate(qids)}


@pytest.mark.slow
def test_topk_exact_beside_beam_in_one_run(run_dir, monkeypatch, tmp_path):
  """decode.method=topk_exact by override, written to its own subdirectory next to beam's."""
  model = _tiny_t5()
  monkeypatch.setattr(
    checkpointing,
    "restore_for_inference",
    lambda workdir, step=None: (model, _config(str(tmp_path / "data")), 7),
  )
  beam = evaluator.evaluate(str(run_dir), "test")
  topk = evaluator.evaluate(
    str(run_dir), "test", overrides={"decode.method": "topk_exact"}, out_subdir="test_topk"
  )
  assert beam["info"]["decode_method"] == "beam" and topk["info"]["decode_method"] == "topk_exact"
  for sub, out in (("test", beam), ("test_topk", topk)):
    assert json.loads((run_dir / "eval" / sub / "metrics.json").read_text()) == json.loads(
      json.dumps(out)
    )
  k = 4  # decode.num_return_sequences of _config
  for task in ("search", "rec"):
    with np.load(tmp_path / "data" / task / "test.npz") as z:
      arrays = dict(z)
    qids, first = runs.split_queries(arrays)
    want = _numpy_topk_run(model, arrays["encoder_input_ids"][first], qids, k)
    got = runs.read_run(run_dir / "eval" / "test_topk" / f"{task}.run")
    assert set(got) == set(qids)
    for q in qids:
      ranked = sorted(got[q].items(), key=lambda kv: -kv[1])
      assert [d for d, _ in ranked] == [d for d, _ in want[q]]
      np.testing.assert_allclose([s for _, s in ranked], [s for _, s in want[q]], atol=2e-5)
    assert topk["info"]["tasks"][task]["distinct_items_mean"] == k  # always K distinct items
    beam_run = runs.read_run(run_dir / "eval" / "test" / f"{task}.run")
    assert beam["info"]["tasks"][task]["distinct_items_mean"] == pytest.approx(
      np.mean([len(beam_run[q]) for q in qids])
    )
    ref = ir_measures.calc_aggregate(
      [R @ 4], runs.read_qrels(run_dir / "eval" / "test_topk" / f"{task}.qrels"), got
    )
    assert topk[task]["recall@4"] == pytest.approx(ref[R @ 4], abs=1e-9)


def test_decoder_choice_and_beam_knobs(monkeypatch, tmp_path):
  """make_decode_fn passes decode.use_cache / one_hot_gather to beam search; bad settings fail
  before any decoding."""
  import sys

  seen = {}

  def fake_beam_search(model, enc, **kw):
    seen.update(kw)
    b = enc.shape[0]
    return np.zeros((b, 4, 2), np.int32), np.zeros((b, 4), np.float32)

  monkeypatch.setattr(sys.modules["gr_jax.decoding.beam_search"], "beam_search", fake_beam_search)
  cat = ItemCatalog([f"item{i}" for i in range(NUM_ITEMS)], token_offset=TEXT_VOCAB)
  cfg = evaluator.apply_overrides(
    evaluator.with_decode_defaults(_config(str(tmp_path))),
    {"decode.use_cache": False, "decode.one_hot_gather": True},
  )
  evaluator.make_decode_fn(FakeModel(), cfg, cat)(np.ones((3, 6), np.int32))
  assert seen["use_cache"] is False and seen["one_hot_gather"] is True
  assert seen["num_beams"] == 4 and seen["num_return_sequences"] == 4

  bad = evaluator.apply_overrides(cfg, {"decode.method": "greedy"})
  with pytest.raises(evaluator.EvaluationError, match=r"decode.method='greedy'"):
    evaluator.make_decode_fn(FakeModel(), bad, cat)
  too_many = evaluator.apply_overrides(
    cfg, {"decode.method": "topk_exact", "decode.num_return_sequences": NUM_ITEMS + 1}
  )
  with pytest.raises(
    evaluator.EvaluationError,
    match=r"decode\.num_return_sequences=13 exceeds the number of items \(12\)",
  ):
    evaluator.make_decode_fn(FakeModel(), too_many, cat)


def test_out_subdir_must_be_one_name(run_dir):
  for bad in ("", "..", "a/b"):
    with pytest.raises(evaluator.EvaluationError, match="out_subdir must be one directory name"):
      evaluator.evaluate(str(run_dir), "test", decode_fn_factory=fake_factory, out_subdir=bad)
  evaluator.evaluate(str(run_dir), "test", decode_fn_factory=fake_factory, out_subdir="alt")
  assert (run_dir / "eval" / "alt" / "metrics.json").exists()
  assert not (run_dir / "eval" / "test").exists()


def test_another_decoder_never_replaces_the_results_in_eval_split(run_dir):
  """`evaluate --config.decode.method=topk_exact` without --out_subdir used to overwrite the beam
  results in eval/test silently: it now stops before decoding and names --out_subdir."""
  beam = evaluator.evaluate(str(run_dir), "test", decode_fn_factory=fake_factory)
  metrics = run_dir / "eval" / "test" / "metrics.json"
  before = metrics.read_text()
  with pytest.raises(evaluator.EvaluationError, match="--out_subdir test_topk_exact") as e:
    evaluator.evaluate(
      str(run_dir),
      "test",
      overrides={"decode.method": "topk_exact"},
      decode_fn_factory=fake_factory,
    )
  assert "decode.method=beam" in str(e.value) and "\n" not in str(e.value)
  assert metrics.read_text() == before and beam["info"]["decode_method"] == "beam"
  # Into its own directory it runs, and the beam results stay; beam again replaces beam.
  topk = evaluator.evaluate(
    str(run_dir),
    "test",
    overrides={"decode.method": "topk_exact"},
    decode_fn_factory=fake_factory,
    out_subdir="test_topk_exact",
  )
  assert topk["info"]["decode_method"] == "topk_exact" and metrics.read_text() == before
  evaluator.evaluate(str(run_dir), "test", decode_fn_factory=fake_factory)
  with pytest.raises(evaluator.EvaluationError, match="decode.method=topk_exact"):
    evaluator.evaluate(
      str(run_dir), "test", decode_fn_factory=fake_factory, out_subdir="test_topk_exact"
    )


def test_exclude_seen_passes_each_rec_querys_history_to_the_decoder(run_dir, tmp_path):
  """eval.exclude_seen: the decoder gets, per rec query (padded batches included), a mask of exactly
  its history items; search queries get none; results keep the remaining items; info records it."""
  path = tmp_path / "data" / "rec" / "test.npz"
  with np.load(path) as z:
    arrays = dict(z)
  q = arrays["query_id"]
  hist = np.stack([q % NUM_ITEMS, (q + 5) % NUM_ITEMS], 1)  # two history items per query
  arrays["encoder_input_ids"][:, 1:3] = hist + TEXT_VOCAB  # query token, history, EOS
  arrays["encoder_input_ids"][:, 3] = 1
  np.savez(path, **arrays)
  _write_manifest(tmp_path / "data")
  calls = []

  def factory(model, config, catalog):
    def decode(enc, exclude=None):
      calls.append((np.array(enc), None if exclude is None else np.array(exclude)))
      qq = enc[:, 0] - 10
      order = (qq[:, None] + np.arange(NUM_ITEMS)[None]) % NUM_ITEMS  # item q first, then q+1...
      scores = np.broadcast_to(-0.1 * np.arange(NUM_ITEMS, dtype=np.float32), order.shape).copy()
      if exclude is not None:  # as the decoders do: excluded items score -inf
        scores[np.take_along_axis(exclude, order, 1)] = -np.inf
      seqs = np.stack([order + TEXT_VOCAB, np.ones_like(order)], -1).astype(np.int32)
      return seqs, scores

    return decode

  out = evaluator.evaluate(str(run_dir), "test", decode_fn_factory=factory)
  assert out["info"]["exclude_seen"] is False and all(ex is None for _, ex in calls)
  calls.clear()
  out = evaluator.evaluate(
    str(run_dir),
    "test",
    overrides={"eval.exclude_seen": True},
    decode_fn_factory=factory,
    out_subdir="test_seen",
  )
  assert out["info"]["exclude_seen"] is True
  assert json.loads((run_dir / "eval" / "test_seen" / "metrics.json").read_text())["info"][
    "exclude_seen"
  ]
  search_calls, rec_calls = calls[:3], calls[3:]  # batch_size 3: 7 search, then 5 rec queries
  assert len(rec_calls) == 2 and all(ex is None for _, ex in search_calls)
  for enc, ex in rec_calls:
    assert ex.shape == (3, NUM_ITEMS) and ex.dtype == bool
    for row, mask in zip(enc, ex):  # padded rows too: a copy of a real row and its mask
      qq = row[0] - 10
      assert sorted(np.flatnonzero(mask)) == sorted({qq % NUM_ITEMS, (qq + 5) % NUM_ITEMS})
  rec = runs.read_run(run_dir / "eval" / "test_seen" / "rec.run")
  for qq in range(5):
    ranked = [d for d, _ in sorted(rec[str(qq)].items(), key=lambda kv: -kv[1])]
    seen = {qq % NUM_ITEMS, (qq + 5) % NUM_ITEMS}
    want = [
      f"item{(qq + j) % NUM_ITEMS}" for j in range(NUM_ITEMS) if (qq + j) % NUM_ITEMS not in seen
    ]
    assert ranked == want
  search = runs.read_run(run_dir / "eval" / "test_seen" / "search.run")
  assert search == runs.read_run(run_dir / "eval" / "test" / "search.run")  # never masked
