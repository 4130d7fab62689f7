"""Semantic IDs: RQ-KMeans, k-means++, balanced assignment, disambiguation, diagnostics, catalogue
and prepare with `data.id_scheme=semantic` (bi-encoder embeddings: test_embed_items.py)."""

import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gr_jax.data import item_embeddings as ie
from gr_jax.data import rq_kmeans as rq
from gr_jax.data import semantic_ids as sem
from gr_jax.data.catalog import ItemCatalog
from gr_jax.data.errors import DataError

from tests.data.conftest import semantic_tiny_config, tiny_config


def _blobs(seed=0, centers=6, per=40, dim=8, spread=0.3, scale=5.0):
  """float32 [centers * per, dim]: well separated Gaussian blobs; also the blob of each row."""
  rng = np.random.default_rng(seed)
  mu = rng.normal(size=(centers, dim)) * scale
  x = np.concatenate([mu[c] + spread * rng.normal(size=(per, dim)) for c in range(centers)])
  return x.astype(np.float32), np.repeat(np.arange(centers), per)


def _semantic_config(**kw):
  c = ml_collections.ConfigDict(
    {
      "embedding": "content",
      "embedding_file": "",
      "content_dim": 16,
      "normalize": True,
      "levels": 2,
      "codebook_size": 4,
      "balanced": False,
      "kmeans_iters": 10,
      "seed": 0,
    }
  )
  c.update(kw)
  return c


# ------------------------------------------------------------------------------ quantiser
def test_rq_kmeans_is_deterministic_per_seed():
  x, _ = _blobs()
  a = rq.rq_kmeans(x, levels=3, codebook_size=8, seed=3, iters=10)
  b = rq.rq_kmeans(x, levels=3, codebook_size=8, seed=3, iters=10)
  np.testing.assert_array_equal(a.codes, b.codes)
  np.testing.assert_array_equal(a.codebooks, b.codebooks)
  assert a.residual_mse == b.residual_mse
  assert a.codes.shape == (len(x), 3) and a.codebooks.shape == (3, 8, x.shape[1])
  c = rq.rq_kmeans(x, levels=3, codebook_size=8, seed=4, iters=10)
  assert not np.array_equal(a.codes, c.codes)  # another seed, another initialisation


@pytest.mark.parametrize("balanced", [False, True])
def test_each_level_reduces_the_residual_error(balanced):
  x, _ = _blobs(seed=1, centers=5, per=30, spread=1.0)
  r = rq.rq_kmeans(x, levels=3, codebook_size=6, seed=0, iters=15, balanced=balanced)
  mse = r.residual_mse
  assert len(mse) == 4
  assert all(after < before for before, after in zip(mse, mse[1:])), mse
  # The residual is what the codebooks have not explained: x = sum of chosen centroids + residual.
  recon = sum(r.codebooks[l][r.codes[:, l]] for l in range(3))
  np.testing.assert_allclose(np.mean(np.sum((x - recon) ** 2, 1)), mse[-1], rtol=1e-3)


def test_kmeans_plus_plus_seeds_one_centroid_per_blob():
  x, blob = _blobs(seed=2, centers=5, per=20, spread=0.1, scale=50.0)
  for seed in range(4):
    cent, rows = rq.kmeans_plus_plus(jnp.asarray(x), jax.random.PRNGKey(seed), 5)
    rows = np.asarray(rows)
    np.testing.assert_array_equal(np.asarray(cent), x[rows])  # centroids are data rows
    # D^2 sampling: a row of an already covered blob is ~(0.1 / 50)^2 as likely as a new blob.
    assert sorted(blob[rows].tolist()) == [0, 1, 2, 3, 4]
  # Duplicates only: no row is ever "far"; the draw falls back to uniform instead of NaN.
  cent, _ = rq.kmeans_plus_plus(jnp.ones((6, 3)), jax.random.PRNGKey(0), 3)
  assert np.isfinite(np.asarray(cent)).all()


@pytest.mark.slow
def test_balanced_assignment_gives_near_equal_sizes():
  # One dense blob of 70 rows and three of 10: plain k-means keeps the skew, balanced does not.
  rng = np.random.default_rng(0)
  x = np.concatenate(
    [
      rng.normal(size=(70, 4)) * 0.2,
      *[5.0 * (i + 1) + 0.2 * rng.normal(size=(10, 4)) for i in range(3)],
    ]
  )
  x = x.astype(np.float32)
  for k in (4, 7):
    plain = rq.rq_kmeans(x, levels=1, codebook_size=k, seed=0, iters=10)
    bal = rq.rq_kmeans(x, levels=1, codebook_size=k, seed=0, iters=10, balanced=True)
    sizes = np.bincount(bal.codes[:, 0], minlength=k)
    lo = len(x) // k
    assert sorted(sizes.tolist()) == sorted([lo + 1] * (len(x) % k) + [lo] * (k - len(x) % k))
    assert np.bincount(plain.codes[:, 0], minlength=k).max() > lo + 1
  # Hand-made distances: all three points prefer cluster 0, which can take only one of them.
  d = jnp.asarray([[0.0, 5.0, 9.0], [0.0, 1.0, 9.0], [0.0, 9.0, 2.0]])
  # Row 0 loses most (5) by moving, then row 2 (2), then row 1 (1): 0 -> 0, 2 -> 2, 1 -> 1.
  assert np.asarray(rq.balanced_assignment(d)).tolist() == [0, 1, 2]


@pytest.mark.slow
def test_capped_fit_uses_a_seeded_sample_and_assigns_every_item_to_its_nearest_code():
  """max_points_per_code: each level's centroids are k-means of the same seeded sample of rows
  (FAISS's max_points_per_centroid); every row then takes its nearest centroid (NumPy check)."""
  x, _ = _blobs(seed=2, centers=6, per=40, spread=1.0)  # 240 rows
  k, cap = 6, 5  # fit on 30 rows
  r = rq.rq_kmeans(x, levels=2, codebook_size=k, seed=1, iters=8, max_points_per_code=cap)
  rows = rq.fit_rows(len(x), k, cap, 1)
  assert len(rows) == cap * k and len(set(rows.tolist())) == cap * k
  np.testing.assert_array_equal(rows, rq.fit_rows(len(x), k, cap, 1))  # a function of the seed
  assert not np.array_equal(rows, rq.fit_rows(len(x), k, cap, 2))
  resid = x.copy()
  for level in range(2):
    cent, _ = rq.kmeans(
      jnp.asarray(resid[rows]), jax.random.fold_in(jax.random.PRNGKey(1), level), k=k, iters=8
    )
    np.testing.assert_allclose(r.codebooks[level], np.asarray(cent), rtol=1e-6, atol=1e-6)
    d = ((resid[:, None, :] - r.codebooks[level][None]) ** 2).sum(-1)  # [N, K] in NumPy
    chosen = d[np.arange(len(x)), r.codes[:, level]]
    assert np.all(chosen <= d.min(1) + 1e-4 * (1 + d.min(1)))  # nearest, up to float ties
    resid = resid - r.codebooks[level][r.codes[:, level]]
  # A cap at or above N / K fits on every row: the uncapped result, bit for bit.
  whole = rq.rq_kmeans(x, levels=2, codebook_size=k, seed=1, iters=8)
  same = rq.rq_kmeans(x, levels=2, codebook_size=k, seed=1, iters=8, max_points_per_code=40)
  assert rq.fit_rows(len(x), k, 40, 1) is None
  np.testing.assert_array_equal(whole.codes, same.codes)
  np.testing.assert_array_equal(whole.codebooks, same.codebooks)


def test_quantiser_errors():
  x, _ = _blobs(centers=2, per=3)
  with pytest.raises(DataError, match="codebook_size.*only 6 items"):
    rq.rq_kmeans(x, levels=1, codebook_size=8)
  with pytest.raises(DataError, match="levels >= 1"):
    rq.rq_kmeans(x, levels=0, codebook_size=2)


# ------------------------------------------------------------------------------ IDs, diagnostics
def test_disambiguation_makes_tuples_unique_in_catalogue_order():
  codes = np.array([[0, 1], [0, 1], [2, 2], [0, 1], [2, 2], [3, 3]])
  dis = sem.disambiguate(codes)
  assert dis.tolist() == [0, 1, 0, 2, 1, 0]
  full = np.concatenate([codes, dis[:, None]], 1)
  assert len(np.unique(full, axis=0)) == len(codes)


def test_diagnostics_on_a_hand_made_example():
  codes = np.array([[0, 0], [0, 0], [0, 1], [1, 2], [0, 1], [3, 3]])
  d = sem.diagnostics(codes, codebook_size=4)
  assert d["codes_used"] == [3, 4]
  assert d["codebook_use"] == [0.75, 1.0]
  h0 = -(4 / 6 * math.log2(4 / 6) + 2 * (1 / 6) * math.log2(1 / 6))  # level 0 counts 4, 1, 0, 1
  h1 = -(2 * (2 / 6) * math.log2(2 / 6) + 2 * (1 / 6) * math.log2(1 / 6))  # 2, 2, 1, 1
  np.testing.assert_allclose(d["code_entropy_bits"], [h0, h1])
  np.testing.assert_allclose(d["code_entropy_normalized"], [h0 / 2, h1 / 2])
  assert d["distinct_tuples"] == 4  # (0,0) x2, (0,1) x2, (1,2), (3,3)
  assert d["colliding_tuples"] == 2
  assert d["collision_rate"] == pytest.approx(4 / 6)  # items whose tuple another item has too
  assert d["largest_collision_group"] == 2
  np.testing.assert_allclose(
    d["tuple_entropy_bits"], -(2 * (2 / 6) * math.log2(2 / 6) + 2 * (1 / 6) * math.log2(1 / 6))
  )
  unique = sem.diagnostics(np.array([[0], [1], [2]]), codebook_size=3)
  assert unique["collision_rate"] == 0.0 and unique["largest_collision_group"] == 1


@pytest.mark.slow
def test_build_gives_every_item_one_id_and_the_mapping_round_trips(tmp_path):
  # Three topics, many near-identical titles: collisions are certain with 2 x 2 codes.
  titles = [f"{t} {t}s word{i % 3}" for t in ("jazz", "rock", "opera") for i in range(6)]
  ids = sem.build_semantic_ids(
    _semantic_config(levels=2, codebook_size=2), titles, [{}] * len(titles)
  )
  assert ids.num_disambiguation > 1 and ids.tokens_per_item == 3
  assert ids.info["largest_collision_group"] == ids.num_disambiguation
  assert ids.num_id_tokens == 2 * 2 + ids.num_disambiguation == ids.info["num_id_tokens"]
  cat = ItemCatalog(
    [f"i{n}" for n in range(len(titles))],
    token_offset=100,
    titles=titles,
    id_scheme="semantic",
    codes=ids.codes,
    levels=2,
    codebook_size=2,
    num_disambiguation=ids.num_disambiguation,
  )
  tokens = cat.item_tokens(np.arange(cat.num_items))  # [N, 3]
  assert len({tuple(r) for r in tokens.tolist()}) == cat.num_items
  # Level l's codes live in their own token range; the disambiguation codes after them.
  assert set(tokens[:, 0]) <= {100, 101} and set(tokens[:, 1]) <= {102, 103}
  assert tokens[:, 2].min() >= 104 and tokens[:, 2].max() < 100 + cat.num_id_tokens
  np.testing.assert_array_equal(cat.tokens_to_item(tokens), np.arange(cat.num_items))
  assert cat.tokens_to_item([[100, 102, 100]]).tolist() == [-1]  # a level-0 token at the end
  assert cat.tokens_to_item([[100, 102]]).tolist() == [-1]  # wrong length
  cat.save(str(tmp_path / "catalog.json"))
  back = ItemCatalog.load(str(tmp_path / "catalog.json"))
  np.testing.assert_array_equal(back.item_tokens(np.arange(cat.num_items)), tokens)
  assert (back.tokens_per_item, back.num_id_tokens) == (3, cat.num_id_tokens)


def test_semantic_catalogue_rejects_bad_codes():
  def make(codes, **kw):
    args = {"levels": 1, "codebook_size": 2, "num_disambiguation": 0, **kw}
    return ItemCatalog(["a", "b"], token_offset=10, id_scheme="semantic", codes=codes, **args)

  with pytest.raises(DataError, match="share a code tuple"):
    make([[0], [0]])
  with pytest.raises(DataError, match="item 1, position 0: code 2 outside"):
    make([[0], [2]])
  with pytest.raises(DataError, match=r"codes of shape \[2, 2\]"):
    make([[0], [1]], num_disambiguation=2)
  with pytest.raises(DataError, match="needs code tuples"):
    ItemCatalog(["a"], token_offset=10, id_scheme="semantic")
  atomic = ItemCatalog(["a", "b"], token_offset=10)
  assert "semantic" not in atomic.to_dict() and atomic.tokens_per_item == 1


# ------------------------------------------------------------------------------ embeddings
def test_content_embeddings_follow_shared_words():
  texts = ["red apple fruit", "green apple fruit", "fast red car", "fast blue car", "blue sky"]
  emb, info = ie.content_embeddings(texts, dim=3, seed=0)
  assert emb.shape == (5, 3) and info["dim"] == 3 and info["tfidf_words"] == 8
  e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  assert e[0] @ e[1] > e[0] @ e[3]  # two apples are closer than an apple and a blue car
  again, _ = ie.content_embeddings(texts, dim=3, seed=0)
  np.testing.assert_array_equal(emb, again)
  assert ie.item_text("T", {"genres": ["a", "b"], "year": 1999, "tag": "x"}) == "T a b x"
  with pytest.raises(DataError, match="no item has any text"):
    ie.content_embeddings(["", ""], dim=2, seed=0)


def test_embedding_sources(tmp_path):
  path = tmp_path / "emb.npy"
  x, _ = _blobs(centers=2, per=4)
  np.save(path, x)
  sc = _semantic_config(embedding="file", embedding_file=str(path), levels=1, codebook_size=2)
  ids = sem.build_semantic_ids(sc, [""] * 8, [{}] * 8)
  assert (
    ids.info["embedding_info"]["dim"] == x.shape[1]
    and len(ids.info["embedding_info"]["sha256"]) == 64
  )
  with pytest.raises(DataError, match=r"expected shape \[num_items=9"):
    sem.build_semantic_ids(sc, [""] * 9, [{}] * 9)
  with pytest.raises(DataError, match="does not exist"):
    ie.item_embeddings(
      _semantic_config(embedding="file", embedding_file=str(tmp_path / "no")), ["a"], [{}]
    )
  # Bad arrays are refused, never cast: complex (was a warning and the real part), NaN, bool,
  # strings, objects; a text file or an .npz is "not a .npy file" (numpy calls it pickled).
  bad = {
    "complex.npy": (
      x.astype(np.complex128),
      r"finite real numbers \(float\), got dtype complex128",
    ),
    "nan.npy": (np.where(x > 0, np.nan, x), r"finite real numbers, got \d+ NaN or infinite"),
    "bool.npy": (x > 0, "got dtype bool"),
    "str.npy": (x.astype(str), "got dtype <U"),
    "text.npy": ("1.0 2.0\n3.0 4.0\n", "not a .npy file: expected an array saved with numpy.save"),
    "zip.npy": (b"PK\x03\x04rest", r"not a .npy file \(a zip archive"),
  }
  for name, (content, match) in bad.items():
    p = tmp_path / name
    if isinstance(content, str):
      p.write_text(content)
    elif isinstance(content, bytes):
      p.write_bytes(content)
    else:
      np.save(p, content)
    sc_bad = _semantic_config(embedding="file", embedding_file=str(p), levels=1, codebook_size=2)
    with pytest.raises(DataError, match=f"{name}: field 'data.semantic.embedding_file': .*{match}"):
      sem.build_semantic_ids(sc_bad, [""] * 8, [{}] * 8)
  obj = tmp_path / "obj.npy"
  np.save(obj, np.asarray([{"a": 1}] * 8, dtype=object), allow_pickle=True)
  with pytest.raises(DataError, match="an object array .pickled Python objects.: expected a float"):
    ie.file_embeddings(str(obj), 8)
  for kind in ("search", "rec", "joint"):  # bi-encoder kinds: only through prepare_dataset
    with pytest.raises(DataError, match=f"'data.semantic.embedding'.*'{kind}'.*prepare_dataset"):
      ie.item_embeddings(_semantic_config(embedding=kind), ["a"], [{}])
  with pytest.raises(DataError, match="expected one of"):
    ie.item_embeddings(_semantic_config(embedding="clip"), ["a"], [{}])


# ------------------------------------------------------------------------------ prepare
@pytest.fixture(scope="module")
def semantic_dataset(tmp_path_factory):
  from gr_jax.data import ProcessedDataset, prepare_dataset

  path = prepare_dataset(semantic_tiny_config(), str(tmp_path_factory.mktemp("sem") / "ds"))
  return ProcessedDataset(path, verify=True)


def test_prepare_writes_codes_targets_and_diagnostics(semantic_dataset):
  from gr_jax.data import pipeline

  ds = semantic_dataset
  cat, m = ds.catalog, ds.manifest
  tpi = cat.tokens_per_item
  assert cat.id_scheme == "semantic" and m["id_scheme"] == "semantic"
  diag = m["semantic_ids"]
  for key in (
    "codebook_use",
    "collision_rate",
    "largest_collision_group",
    "code_entropy_bits",
    "residual_mse",
    "num_disambiguation",
  ):
    assert key in diag
  assert len(diag["codebook_use"]) == 2 and diag["tokens_per_item"] == tpi
  assert tpi == 2 + (1 if diag["largest_collision_group"] > 1 else 0)
  assert cat.num_id_tokens == 2 * 4 + diag["num_disambiguation"] == diag["num_id_tokens"]
  # The decoder length follows from the scheme, not from data.decoder_len (2).
  assert m["decoder_len"] == ds.decoder_len == tpi + 1
  tokens = cat.item_tokens(np.arange(cat.num_items))
  assert len({tuple(r) for r in tokens.tolist()}) == cat.num_items
  # Targets: the item's code tokens then EOS; inputs shifted right behind the start token 0.
  batch = pipeline.make_eval_batches(ds, "search", "test", 8)[0]
  tgt = batch["target_item"]
  np.testing.assert_array_equal(batch["decoder_target_ids"][:, :tpi], cat.item_tokens(tgt))
  assert (batch["decoder_target_ids"][:, tpi] == 1).all()
  np.testing.assert_array_equal(
    batch["decoder_input_ids"][:, 1:], batch["decoder_target_ids"][:, :-1]
  )
  loader = pipeline.make_train_loader(
    ds, semantic_tiny_config().data, tasks=("search", "rec"), batch_size=8, seed=0, num_epochs=1
  )
  train = next(iter(loader))
  assert train["decoder_target_ids"].shape == (8, tpi + 1)
  assert (train["decoder_weights"] == 1).all()
  # Rec histories spell each item's code tokens, oldest first, then EOS.
  rec = ds.split("rec", "test")
  row = rec["encoder_input_ids"][0]
  n = int(np.argmax(row == 1))
  assert n % tpi == 0 and n // tpi <= m["rec_max_history"]
  items = cat.tokens_to_item(row[:n].reshape(-1, tpi))
  assert (items >= 0).all()


def test_prepare_is_deterministic_and_atomic_hash_is_unchanged(semantic_dataset, tmp_path):
  from gr_jax.data import prepare

  again = prepare.prepare_dataset(semantic_tiny_config(), str(tmp_path / "again"))
  for rel, digest in semantic_dataset.manifest["files"].items():
    assert prepare.sha256_file(os.path.join(again, rel)) == digest, rel
  # Atomic configs hash without the new fields, so existing datasets stay valid.
  d = prepare.dataset_config(tiny_config())
  assert "id_scheme" not in d and "semantic" not in d
  s = prepare.dataset_config(semantic_tiny_config())
  assert s["id_scheme"] == "semantic" and s["semantic"]["levels"] == 2
  assert prepare.config_hash(semantic_tiny_config()) != prepare.config_hash(
    semantic_tiny_config(seed=1)
  )


def test_prepare_errors_name_the_knob(tmp_path):
  from gr_jax.data import prepare_dataset

  # Bi-encoder IDs hash baselines.biencoder: the data section alone cannot say which dataset.
  with pytest.raises(DataError, match="'baselines.biencoder'.*whole run config"):
    prepare_dataset(semantic_tiny_config(embedding="joint").data, str(tmp_path / "a"))
  with pytest.raises(DataError, match="codebook_size"):
    prepare_dataset(semantic_tiny_config(codebook_size=1000), str(tmp_path / "b"))
  c = tiny_config()
  c.data.id_scheme = "hashed"
  with pytest.raises(DataError, match="data.id_scheme"):
    prepare_dataset(c, str(tmp_path / "c"))
  assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "c")


def test_codebook_size_for_follows_the_catalogue():
  # auto (0): the smallest power of two K with K ** levels >= items, within [2, min(256, items)]
  assert sem.codebook_size_for(78, 3, 0) == 8  # 4 ** 3 = 64 < 78 <= 8 ** 3
  assert sem.codebook_size_for(64, 3, 0) == 4
  assert sem.codebook_size_for(2000, 3, 0) == 16
  assert sem.codebook_size_for(10**9, 3, 0) == 256
  assert sem.codebook_size_for(5, 1, 0) == 5  # never more codes than items
  assert sem.codebook_size_for(1, 2, 0) == 2  # check_quantiser then refuses
  # A set value is kept as it is (its checks and errors unchanged).
  assert sem.codebook_size_for(78, 3, 256) == 256 and sem.codebook_size_for(78, 3, -1) == -1


@pytest.mark.slow
def test_quickstart_semantic_ids_prepare_with_an_auto_codebook(tmp_path, caplog):
  """`--config.data.id_scheme=semantic` on the quickstart (78 items) once stopped with "256 codes
  per level but only 78 items": the default codebook size now follows the catalogue and the
  manifest records the chosen one; a set size too large for the catalogue still stops."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import logging  # pylint: disable=g-import-not-at-top

  from gr_jax.data import prepare_dataset  # pylint: disable=g-import-not-at-top

  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  spec = importlib.util.spec_from_file_location(
    "quickstart", os.path.join(root, "configs", "quickstart.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("seeds=1")
  assert config.data.semantic.codebook_size == 0  # the default: auto
  config.data.id_scheme = "semantic"
  config.data.semantic.kmeans_iters = 5  # speed only
  with caplog.at_level(logging.INFO, logger="gr_jax.data.semantic_ids"):
    out = prepare_dataset(config, str(tmp_path / "auto"))
  with open(os.path.join(out, "manifest.json")) as f:
    manifest = json.load(f)
  n, info = manifest["num_items"], manifest["semantic_ids"]
  want = sem.codebook_size_for(n, 3, 0)
  assert info["codebook_size"] == want and info["codebook_size_auto"] is True
  assert 2 <= want < 256 and want**3 >= n and (want // 2) ** 3 < n
  assert ItemCatalog.load(os.path.join(out, "catalog.json")).codebook_size == want
  chosen = [r.getMessage() for r in caplog.records if "codebook_size=0 (auto)" in r.getMessage()]
  assert len(chosen) == 1 and f"{want} codes per level for {n} items" in chosen[0]
  # A user-set codebook size keeps today's check and error.
  config.data.semantic.codebook_size = 256
  with pytest.raises(DataError, match=rf"'data.semantic.codebook_size'.*256 codes.*only {n} items"):
    prepare_dataset(config, str(tmp_path / "set"))


@pytest.mark.slow
def test_run_config_records_the_decoder_len_the_run_used(semantic_dataset, tmp_path):
  """data.decoder_len (2 by default) does not apply to semantic IDs: the trainer uses the
  manifest's (ID tokens + EOS) and its config.json must say so; the evaluator's check of the
  dataset against that config.json still passes."""
  from gr_jax.analysis import embeddings
  from gr_jax import checkpointing
  from gr_jax.training import loop

  config = semantic_tiny_config()
  assert config.data.decoder_len == 2
  config.data.processed_dir = semantic_dataset.directory
  config.data.tasks = ("search",)
  config.model.preset = "tiny"
  config.train.batch_size = 8
  config.train.num_steps = 1
  config.train.log_every_steps = 1
  config.checkpoint.every_steps = 1
  loop.train(config, str(tmp_path / "run"))
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  want = semantic_dataset.decoder_len
  assert want == semantic_dataset.catalog.tokens_per_item + 1 > 2
  assert saved["data"]["decoder_len"] == want
  model, restored, _ = checkpointing.restore_for_inference(str(tmp_path / "run"))
  assert restored.data.decoder_len == want
  # The t-SNE's item vectors on this model: one per item, though the model has fewer ID tokens
  # (rows) than items (analysis.embeddings; reading one row per item used to fail here).
  cat = semantic_dataset.catalog
  assert cat.num_id_tokens < cat.num_items
  emb = embeddings.item_embedding_matrix(model, cat)
  assert emb.shape == (cat.num_items, model.config.d_model) and np.isfinite(emb).all()
  checkpointing.verify_dataset_of(restored, semantic_dataset.directory)  # does not raise
  # Any other decoder_len is still another data config.
  restored.data.decoder_len = want + 1
  with pytest.raises(DataError, match="decoder_len"):
    checkpointing.verify_dataset_of(restored, semantic_dataset.directory)
