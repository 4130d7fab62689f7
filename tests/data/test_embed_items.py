"""Bi-encoder semantic IDs (data.semantic.embedding = search | rec | joint): the embed step
(gr_jax.baselines.embed_items, `python -m gr_jax.embed_items`) trains the bi-encoder and writes
the item vectors; prepare reads them as a file (gr_jax.data.item_embeddings.BiencoderFile) and
writes the dataset the in-process path wrote, byte for byte."""

import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from gr_jax.baselines import biencoder
from gr_jax.baselines import embed_items as embed_lib
from gr_jax.data import ProcessedDataset, prepare, prepare_dataset
from gr_jax.data import dataset as dataset_lib
from gr_jax.data import item_embeddings as ie
from gr_jax.data.errors import DataError

from tests.data.conftest import semantic_tiny_config, tiny_config
from tests.test_binaries_config import one_line_error, run_binary

JOINT_STEPS = 12


def _biencoder_tiny(embedding="joint", **semantic):
  """Semantic IDs of bi-encoder embeddings on the tiny simulator, with a fast bi-encoder."""
  c = semantic_tiny_config(embedding=embedding, **semantic)
  b = c.baselines.biencoder
  b.overrides = {"num_encoder_layers": 1}
  b.num_steps, b.batch_size, b.learning_rate = JOINT_STEPS, 64, 3e-3
  b.eval_batch_size, b.log_every_steps, b.checkpoint_every_steps = 64, 4, 100
  return c


def _with_file(config, path):
  config.data.semantic.embedding_file = str(path)
  return config


def _files(root) -> dict:
  """{relative path: sha256} of every file under root but manifest.json (prepare's `files`)."""
  out = {}
  for dirpath, _, names in os.walk(root):
    for name in names:
      rel = os.path.relpath(os.path.join(dirpath, name), root)
      if rel != "manifest.json":
        out[rel] = prepare.sha256_file(os.path.join(dirpath, name))
  return dict(sorted(out.items()))


def _embed_spied(config, workdir, out):
  """embed_items with a spy on every processed-split read (ProcessedDataset.split) and on the
  bi-encoder's training: returns (description, reads [(phase, task, split)], train summaries)."""
  reads, summaries, phase = [], [], ["before"]
  real_split, real_train = dataset_lib.ProcessedDataset.split, biencoder.train_biencoder

  def split(self, task, split):
    reads.append((phase[0], task, split))
    return real_split(self, task, split)

  def train(*args, **kwargs):
    phase[0] = "train"
    try:
      res = real_train(*args, **kwargs)
    finally:
      phase[0] = "after"
    summaries.append(res.summary)
    return res

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(dataset_lib.ProcessedDataset, "split", split)
    mp.setattr(biencoder, "train_biencoder", train)
    desc = embed_lib.embed_items(config, str(workdir), str(out))
  return desc, reads, summaries


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
  """The joint embeddings in the cache a study keeps beside dataset `<root>/study_ds` (so that the
  study's prepare stage below reuses the trained bi-encoder): (root, npy path, description,
  reads, summaries)."""
  root = tmp_path_factory.mktemp("embed")
  cache = embed_lib.cache_dir(str(root / "study_ds"))
  npy = os.path.join(cache, "item_embeddings-joint.npy")
  desc, reads, summaries = _embed_spied(_biencoder_tiny(), cache, npy)
  return root, npy, desc, reads, summaries


@pytest.fixture(scope="module")
def joint_dataset(embedded):
  root, npy, _, _, _ = embedded
  return ProcessedDataset(
    prepare_dataset(_with_file(_biencoder_tiny(), npy), str(root / "ds")), verify=True
  )


@pytest.mark.slow  # trains the module's bi-encoder (its fixtures) on first use
def test_the_file_gives_the_dataset_the_in_process_embeddings_gave(
  embedded, joint_dataset, tmp_path
):
  """Byte identity: prepare from embed_items' file writes every file (catalogue, splits, tokenizer,
  quantiser) exactly as prepare.build does with the bi-encoder's vectors handed over in memory
  (what prepare did before item embeddings became their own step); the manifest differs only in
  the embeddings file's own record (`embedding_info.file`, `.sha256`)."""
  _, _, desc, _, _ = embedded
  info = desc["embedding_info"]
  atomic = ProcessedDataset(info["atomic_dataset"]["dir"])
  view = embed_lib.TrainSplitsOnly(atomic)
  emb = biencoder.item_embeddings(biencoder.load_run(info["run_dir"], view), view, batch_size=64)
  checked = []

  class InMemory:
    def __call__(self, item_ids):
      assert list(item_ids) == list(atomic.catalog.item_ids)
      return emb, dict(info)

    def check_examples(self, arrays):
      checked.append(ie.examples_digests(arrays) == desc["examples_sha256"])

  dc = _biencoder_tiny().data
  out = tmp_path / "in_process"
  out.mkdir()
  # As the manifest stores it (JSON: lists for tuples, sorted keys).
  body = json.loads(json.dumps(prepare.build(prepare.load_raw(dc), dc, str(out), InMemory())))
  assert checked == [True]
  assert _files(out) == joint_dataset.manifest["files"]
  m = joint_dataset.manifest
  for key, value in body.items():
    if key != "semantic_ids":
      assert m[key] == value, key
  ours = dict(m["semantic_ids"])
  ours["embedding_info"] = dict(ours["embedding_info"])
  assert ours["embedding_info"].pop("file") == os.path.abspath(embedded[1])
  assert ours["embedding_info"].pop("sha256") == desc["sha256"]
  assert ours == body["semantic_ids"]
  assert m["config_hash"] == prepare.config_hash(_biencoder_tiny())


@pytest.mark.slow  # trains the module's bi-encoder (its fixtures) on first use
def test_joint_embeddings_give_a_valid_catalogue_and_record_the_biencoder(embedded, joint_dataset):
  _, npy, desc, _, summaries = embedded
  cat, m = joint_dataset.catalog, joint_dataset.manifest
  n, tpi = cat.num_items, cat.tokens_per_item
  assert cat.id_scheme == "semantic" and n > 0
  tokens = cat.item_tokens(np.arange(n))  # [N, tpi]
  assert tokens.shape == (n, tpi) and len({tuple(r) for r in tokens.tolist()}) == n
  np.testing.assert_array_equal(cat.tokens_to_item(tokens), np.arange(n))  # each ID one item
  diag = m["semantic_ids"]
  assert diag["embedding"] == "joint" and diag["tokens_per_item"] == tpi
  info = diag["embedding_info"]
  bi = info["biencoder"]
  assert bi["tasks"] == ["search", "rec"] and bi["seed"] == 0
  s = bi["settings"]
  assert s["tasks"] == "search,rec" and s["num_steps"] == JOINT_STEPS and s["preset"] == "tiny"
  assert s["overrides"] == {"num_encoder_layers": 1} and s["learning_rate"] == 3e-3
  assert bi["steps"] == JOINT_STEPS == summaries[0]["steps"] and summaries[0]["resumed_from"] == 0
  assert bi["train_examples"] == {t: m["splits"][t]["train"]["examples"] for t in ("search", "rec")}
  assert bi["valid_rows"] == {t: m["splits"][t]["valid"]["examples"] for t in ("search", "rec")}
  for t in ("search", "rec"):
    r = bi["valid_recall"][t]
    assert [f"recall@{k}" for k in ie.BIENCODER_RECALL_KS] == sorted(r, key=lambda x: int(x[7:]))
    assert 0 <= r["recall@1"] <= r["recall@10"] <= r["recall@30"] <= 1
  assert info["dim"] == 32 == desc["dim"]  # tiny preset's d_model, no projection
  # The file it was read from, as prepare records a `file` embedding.
  assert info["file"] == os.path.abspath(npy) and info["sha256"] == prepare.sha256_file(npy)
  # The hashed config says which bi-encoder made the IDs (no logging periods, no file path).
  h = m["config"]["semantic"]["biencoder"]
  assert h["tasks"] == "search,rec" and h["num_steps"] == JOINT_STEPS
  assert not set(ie.BIENCODER_INERT_KNOBS) & set(h)
  assert m["config"]["semantic"]["embedding_file"] == ""
  # The embed workdir: the atomic dataset (same catalogue) and the bi-encoder's run.
  atomic = info["atomic_dataset"]["dir"]
  assert os.path.basename(atomic).startswith("atomic-")
  with open(os.path.join(atomic, "catalog.json")) as f:
    assert json.load(f)["item_ids"] == list(cat.item_ids)
  run = info["run_dir"]
  assert os.path.isfile(os.path.join(run, "config.json"))
  assert os.path.isdir(os.path.join(run, "checkpoints"))


@pytest.mark.slow  # trains the module's bi-encoder (its fixtures) on first use
def test_biencoder_never_reads_held_out_rows(embedded):
  _, _, _, reads, _ = embedded
  during = [r for r in reads if r[0] == "train"]
  # Training reads the train splits of both tasks, nothing else (input length and per-epoch
  # validation see the empty valid/test of TrainSplitsOnly).
  assert {(t, s) for _, t, s in during} == {("search", "train"), ("rec", "train")}
  # Valid rows are read only after training (the manifest's recall); test rows never.
  assert all(p == "after" for p, _, s in reads if s == "valid")
  assert {t for p, t, s in reads if s == "valid"} == {"search", "rec"}
  assert not [r for r in reads if r[2] == "test"]
  view = embed_lib.TrainSplitsOnly(_FakeSplits())
  assert view.split("search", "train")["target_item"].tolist() == [1, 2]
  for split in ("valid", "test"):
    got = view.split("search", split)
    assert got["target_item"].shape == (0,) and got["encoder_input_ids"].shape == (0, 3)


class _FakeSplits:
  catalog = None

  def split(self, task, split):
    if split != "train":
      raise AssertionError(f"read {task}/{split}")
    return {
      "encoder_input_ids": np.ones((2, 3), np.int32),
      "target_item": np.asarray([1, 2], np.int32),
      "query_id": np.arange(2),
    }


@pytest.mark.slow  # trains the module's bi-encoder (its fixtures) on first use
def test_manifest_recall_is_the_models_own(joint_dataset):
  """valid_recall recomputed in numpy from the embed step's run: cosine of every item, strict
  ranks."""
  from flax import nnx

  info = joint_dataset.manifest["semantic_ids"]["embedding_info"]
  atomic = ProcessedDataset(info["atomic_dataset"]["dir"])
  res = biencoder.load_run(info["run_dir"], embed_lib.TrainSplitsOnly(atomic))
  items = np.asarray(biencoder.item_embeddings(res, atomic), np.float64)  # unit rows
  embed = jax.jit(lambda p, x: nnx.merge(res.graphdef, p).embed(x))  # eval mode
  for t in ("search", "rec"):
    a = atomic.split(t, "valid")
    q = np.asarray(embed(res.params, np.asarray(a["encoder_input_ids"])), np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scores = q @ items.T
    above = (scores > scores[np.arange(len(q)), a["target_item"]][:, None]).sum(1)
    got = info["biencoder"]["valid_recall"][t]
    for k in ie.BIENCODER_RECALL_KS:
      assert got[f"recall@{k}"] == pytest.approx(float(np.mean(above < k)), abs=1.5 / len(q))


@pytest.mark.slow  # trains the module's bi-encoder (its fixtures) on first use
def test_embed_items_is_deterministic_and_reuses_its_run(embedded, tmp_path):
  _, npy, desc, _, _ = embedded
  # A fresh workdir: the bi-encoder trains again, to the same bytes.
  out = tmp_path / "emb" / "joint.npy"
  again, _, summaries = _embed_spied(_biencoder_tiny(), tmp_path / "emb", out)
  assert summaries[0]["resumed_from"] == 0
  assert out.read_bytes() == open(npy, "rb").read()
  where = ("atomic_dataset", "run_dir")  # the workdir's paths
  assert {k: v for k, v in again["embedding_info"].items() if k not in where} == {
    k: v for k, v in desc["embedding_info"].items() if k not in where
  }
  assert {k: v for k, v in again.items() if k != "embedding_info"} == {
    k: v for k, v in desc.items() if k != "embedding_info"
  }
  # The same workdir again: the run is reloaded, not trained, and the file is the same.
  _, _, summaries = _embed_spied(_biencoder_tiny(), tmp_path / "emb", out)
  assert summaries[0]["resumed_from"] == summaries[0]["steps"] == JOINT_STEPS
  assert out.read_bytes() == open(npy, "rb").read()
  assert json.loads((tmp_path / "emb" / "joint.json").read_text())["sha256"] == desc["sha256"]


@pytest.mark.slow  # trains the module's bi-encoder (its fixtures) on first use
def test_the_study_prepare_stage_embeds_then_prepares(embedded, joint_dataset):
  """reproduce's prepare stage runs the embed step in the cache beside the dataset (reusing the
  trained run there) and prepares from its file: the same dataset as the two binaries give."""
  from gr_jax.study import stages
  from gr_jax.study.plan import DataSpec

  root, _, _, _, _ = embedded
  config = _biencoder_tiny()
  spec = DataSpec(key="shared", data_dir=str(root / "study_ds"), config=config)
  trained, real = [], biencoder.train_biencoder

  def train(*args, **kwargs):
    trained.append(real(*args, **kwargs))
    return trained[-1]

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(biencoder, "train_biencoder", train)
    stages._prepare(spec)  # pylint: disable=protected-access
  assert trained[0].summary["resumed_from"] == JOINT_STEPS  # reloaded, not trained again
  study = ProcessedDataset(spec.data_dir, verify=True)
  assert study.manifest["files"] == joint_dataset.manifest["files"]
  assert study.manifest["config_hash"] == joint_dataset.manifest["config_hash"]
  # The runs' configs name no file: they verify the dataset as it is.
  ProcessedDataset(spec.data_dir, verify=False).verify(config)
  assert config.data.semantic.embedding_file == ""


@pytest.mark.slow  # trains the module's bi-encoder (its fixtures) on first use
def test_atomic_and_semantic_examples_must_match(embedded, joint_dataset):
  _, npy, _, _, _ = embedded
  reader = ie.BiencoderFile(_with_file(_biencoder_tiny(), npy))
  ds = joint_dataset
  arrays = {
    t: {s: dict(ds.split(t, s)) for s in ("train", "valid", "test")} for t in ("search", "rec")
  }
  reader.check_examples(arrays)  # the same examples: fine
  arrays["rec"]["valid"]["target_item"] = np.roll(arrays["rec"]["valid"]["target_item"], 1)
  with pytest.raises(DataError, match=r"'examples_sha256'.*in rec/valid; expected the same"):
    reader.check_examples(arrays)


def test_prepare_without_the_file_names_embed_items(tmp_path):
  with pytest.raises(
    DataError,
    match=r"'data.semantic.embedding_file'.*prepare trains no model: run python -m "
    r"gr_jax.embed_items .*embedding_file=FILE.npy",
  ):
    prepare_dataset(_biencoder_tiny(), str(tmp_path / "ds"))
  with pytest.raises(DataError, match="file does not exist; write it with python -m gr_jax.embed"):
    prepare_dataset(_with_file(_biencoder_tiny(), tmp_path / "no.npy"), str(tmp_path / "ds"))
  assert not os.listdir(tmp_path)  # refused before any work


@pytest.mark.slow  # trains the module's bi-encoder (its fixtures) on first use
def test_prepare_checks_the_file_against_its_config(embedded, tmp_path):
  _, npy, desc, _, _ = embedded
  ds = str(tmp_path / "ds")
  # Another kind, bi-encoder setting, seed or data: another embedding_key.
  with pytest.raises(DataError, match=r"'embedding'.*'joint' bi-encoder embeddings, the config "):
    prepare_dataset(_with_file(_biencoder_tiny(embedding="search"), npy), ds)
  changed = [_biencoder_tiny(), _biencoder_tiny(seed=1), _biencoder_tiny()]
  changed[0].baselines.biencoder.learning_rate = 1e-2
  changed[2].data.sim.num_users = 100
  for c in changed:
    with pytest.raises(DataError, match=r"'embedding_key'.*written for another data config"):
      prepare_dataset(_with_file(c, npy), ds)
  # Quantiser settings are checked before the file is read.
  with pytest.raises(DataError, match=r"'data.semantic.codebook_size'.*only \d+ items"):
    prepare_dataset(_with_file(_biencoder_tiny(codebook_size=1000), npy), ds)
  # A file without its description, or not the array of its description, or rows of another
  # catalogue order.
  bare = tmp_path / "bare.npy"
  shutil.copyfile(npy, bare)
  with pytest.raises(DataError, match=r"bare.json: field .*missing: the description"):
    prepare_dataset(_with_file(_biencoder_tiny(), bare), ds)
  shutil.copyfile(ie.description_path(npy), tmp_path / "bare.json")
  np.save(bare, -np.load(npy))
  with pytest.raises(DataError, match=r"bare.npy: .*not the array its description bare.json"):
    prepare_dataset(_with_file(_biencoder_tiny(), bare), ds)
  shuffled = dict(desc, item_ids_sha256="0" * 64)
  ie.save_biencoder_embeddings(str(bare), np.load(npy), shuffled)
  with pytest.raises(DataError, match=r"'item_ids'.*another catalogue order"):
    prepare_dataset(_with_file(_biencoder_tiny(), bare), ds)
  assert sorted(os.listdir(tmp_path)) == ["bare.json", "bare.npy"]  # no dataset, no temp dir
  # The embedding key leaves the quantiser out: one file serves every quantisation.
  other = ProcessedDataset(prepare_dataset(_with_file(_biencoder_tiny(levels=3), npy), ds))
  assert other.manifest["semantic_ids"]["levels"] == 3
  assert other.manifest["semantic_ids"]["embedding_info"]["sha256"] == desc["sha256"]


@pytest.mark.slow  # trains the module's bi-encoder (its fixtures) on first use
def test_a_changed_embeddings_file_rebuilds_the_dataset(embedded, tmp_path, caplog):
  _, npy, desc, _, _ = embedded
  mine = tmp_path / "emb.npy"
  ie.save_biencoder_embeddings(str(mine), np.load(npy), {k: desc[k] for k in desc if k != "sha256"})
  config = _with_file(_biencoder_tiny(), mine)
  path = prepare_dataset(config, str(tmp_path / "ds"))
  before = os.stat(os.path.join(path, "manifest.json")).st_mtime_ns
  assert prepare_dataset(config, path) == path  # unchanged: kept
  assert os.stat(os.path.join(path, "manifest.json")).st_mtime_ns == before
  # A config without the file reads the dataset as it is (train, evaluate).
  assert prepare_dataset(_biencoder_tiny(), path, raw_changed="error") == path
  # Rewritten with other vectors (another machine's bi-encoder, say): rebuilt, saying why.
  ie.save_biencoder_embeddings(
    str(mine), -np.load(npy), {k: desc[k] for k in desc if k != "sha256"}
  )
  with pytest.raises(
    DataError, match="emb.npy is not the embeddings file the dataset was prepared"
  ):
    prepare_dataset(config, path, raw_changed="error")
  with caplog.at_level(logging.WARNING, logger="gr_jax.data.prepare"):
    prepare_dataset(config, path)
  assert any("is not the embeddings file" in r.getMessage() for r in caplog.records)
  with open(os.path.join(path, "manifest.json")) as f:
    info = json.load(f)["semantic_ids"]["embedding_info"]
  assert info["sha256"] == prepare.sha256_file(mine) != desc["sha256"]


def test_biencoder_settings_enter_the_hash_of_those_datasets_only():
  h = prepare.config_hash
  c = _biencoder_tiny()
  base_hash = h(c)
  changed = _biencoder_tiny()
  changed.baselines.biencoder.learning_rate = 1e-2
  assert h(changed) != base_hash
  inert = _biencoder_tiny()
  inert.baselines.biencoder.log_every_steps = 7
  inert.baselines.biencoder.eval_every_steps = 3
  inert.baselines.biencoder.tasks = "rec"  # replaced by the embedding kind's
  inert.seed = 5  # the run seed: runs of other seeds share the dataset
  inert.data.semantic.embedding_file = "/somewhere/joint.npy"  # where the vectors lie
  assert h(inert) == base_hash
  assert h(_biencoder_tiny(seed=1)) != base_hash  # data.semantic.seed seeds the bi-encoder too
  kinds = {k: h(_biencoder_tiny(embedding=k)) for k in ("search", "rec", "joint")}
  assert len(set(kinds.values())) == 3
  for kind, tasks in (("search", "search"), ("rec", "rec"), ("joint", "search,rec")):
    bc = ie.biencoder_config(_biencoder_tiny(embedding=kind))
    assert bc.baselines.biencoder.tasks == tasks and bc.seed == 0
  # Atomic and content datasets ignore the bi-encoder (atomic hashes are as before).
  for make in (tiny_config, semantic_tiny_config):
    a, b = make(), make()
    b.baselines.biencoder.learning_rate = 1e-2
    assert h(a) == h(b) and "biencoder" not in prepare.dataset_config(b).get("semantic", {})
  assert h(tiny_config()) == h(tiny_config().data)


@pytest.mark.parametrize(
  "knob,value,match",
  [
    ("item_tower", "clip", r"item_tower='clip': expected one of \('embedding', 'text'\)"),
    ("temperature", 0.0, r"temperature=0.0: expected > 0"),
  ],
)
def test_biencoder_setting_errors_name_the_knob(tmp_path, knob, value, match):
  c = _biencoder_tiny()
  c.baselines.biencoder[knob] = value
  with pytest.raises(DataError, match=r"'baselines.biencoder'.*embedding='joint'.*" + match):
    embed_lib.embed_items(c, str(tmp_path / "emb"), str(tmp_path / "emb" / "x.npy"))
  assert not os.listdir(tmp_path)  # refused before any work: no dataset, no run


def test_biencoder_errors(tmp_path):
  work, out = str(tmp_path / "emb"), str(tmp_path / "emb" / "x.npy")
  c = _biencoder_tiny()
  c.baselines.biencoder.num_steps, c.baselines.biencoder.num_epochs = 0, 0
  for step in (lambda: embed_lib.embed_items(c, work, out), lambda: prepare.config_hash(c)):
    with pytest.raises(DataError, match=r"'baselines.biencoder.num_steps'.*expected num_steps > 0"):
      step()
  c = _biencoder_tiny()
  del c.baselines["biencoder"]
  with pytest.raises(DataError, match=r"'baselines.biencoder'.*embedding='joint'.*no such section"):
    embed_lib.embed_items(c, work, out)
  with pytest.raises(DataError, match=r"'baselines.biencoder'.*whole run config"):
    embed_lib.embed_items(_biencoder_tiny().data, work, out)
  with pytest.raises(DataError, match=r"'baselines.biencoder'.*whole run config"):
    prepare_dataset(_biencoder_tiny().data, str(tmp_path / "ds"))
  for kind in ("content", "file"):
    with pytest.raises(DataError, match=r"'data.semantic.embedding'.*expected a bi-encoder kind"):
      embed_lib.embed_items(_biencoder_tiny(embedding=kind), work, out)
  with pytest.raises(DataError, match=r"x.txt: field 'out': expected a file name ending in .npy"):
    embed_lib.embed_items(_biencoder_tiny(), work, str(tmp_path / "x.txt"))
  assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_the_binaries_embed_items_then_prepare(embedded, joint_dataset, tmp_path):
  """What a user types: prepare alone stops in one line naming embed_items; embed_items writes
  the file (the same bytes as the library's); prepare with it writes the same dataset."""
  _, npy, _, _, _ = embedded
  cfg = tmp_path / "config.py"
  cfg.write_text(
    "from tests.data.test_embed_items import _biencoder_tiny\n\n\n"
    "def get_config():\n  return _biencoder_tiny()\n"
  )
  run = ["--config", str(cfg), "--workdir", str(tmp_path / "run")]
  err = one_line_error(run_binary("prepare", *run))
  assert "prepare trains no model: run python -m gr_jax.embed_items" in err
  proc = run_binary("embed_items", "--config", str(cfg), "--workdir", str(tmp_path / "emb"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads(proc.stdout[proc.stdout.index("{") :])
  out = str(tmp_path / "emb" / "item_embeddings-joint.npy")  # the default --out
  assert summary["embeddings"] == out and summary["num_items"] == joint_dataset.num_items
  assert open(out, "rb").read() == open(npy, "rb").read()
  proc = run_binary("prepare", *run, summary["prepare_with"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = ProcessedDataset(str(tmp_path / "run" / "data"), verify=True)
  assert got.manifest["files"] == joint_dataset.manifest["files"]
