"""Semantic IDs: RQ-KMeans, k-means++, balanced assignment, disambiguation, diagnostics, catalogue
and prepare with `data.id_scheme=semantic`."""

import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

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
  a = sem.rq_kmeans(x, levels=3, codebook_size=8, seed=3, iters=10)
  b = sem.rq_kmeans(x, levels=3, codebook_size=8, seed=3, iters=10)
  np.testing.assert_array_equal(a.codes, b.codes)
  np.testing.assert_array_equal(a.codebooks, b.codebooks)
  assert a.residual_mse == b.residual_mse
  assert a.codes.shape == (len(x), 3) and a.codebooks.shape == (3, 8, x.shape[1])
  c = sem.rq_kmeans(x, levels=3, codebook_size=8, seed=4, iters=10)
  assert not np.array_equal(a.codes, c.codes)  # another seed, another initialisation


@pytest.mark.parametrize("balanced", [False, True])
def test_each_level_reduces_the_residual_error(balanced):
  x, _ = _blobs(seed=1, centers=5, per=30, spread=1.0)
  r = sem.rq_kmeans(x, levels=3, codebook_size=6, seed=0, iters=15, balanced=balanced)
  mse = r.residual_mse
  assert len(mse) == 4
  assert all(after < before for before, after in zip(mse, mse[1:])), mse
  # The residual is what the codebooks have not explained: x = sum of chosen centroids + residual.
  recon = sum(r.codebooks[l][r.codes[:, l]] for l in range(3))
  np.testing.assert_allclose(np.mean(np.sum((x - recon) ** 2, 1)), mse[-1], rtol=1e-3)


def test_kmeans_plus_plus_seeds_one_centroid_per_blob():
  x, blob = _blobs(seed=2, centers=5, per=20, spread=0.1, scale=50.0)
  for seed in range(4):
    cent, rows = sem.kmeans_plus_plus(jnp.asarray(x), jax.random.PRNGKey(seed), 5)
    rows = np.asarray(rows)
    np.testing.assert_array_equal(np.asarray(cent), x[rows])  # centroids are data rows
    # D^2 sampling: a row of an already covered blob is ~(0.1 / 50)^2 as likely as a new blob.
    assert sorted(blob[rows].tolist()) == [0, 1, 2, 3, 4]
  # Duplicates only: no row is ever "far"; the draw falls back to uniform instead of NaN.
  cent, _ = sem.kmeans_plus_plus(jnp.ones((6, 3)), jax.random.PRNGKey(0), 3)
  assert np.isfinite(np.asarray(cent)).all()


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
    plain = sem.rq_kmeans(x, levels=1, codebook_size=k, seed=0, iters=10)
    bal = sem.rq_kmeans(x, levels=1, codebook_size=k, seed=0, iters=10, balanced=True)
    sizes = np.bincount(bal.codes[:, 0], minlength=k)
    lo = len(x) // k
    assert sorted(sizes.tolist()) == sorted([lo + 1] * (len(x) % k) + [lo] * (k - len(x) % k))
    assert np.bincount(plain.codes[:, 0], minlength=k).max() > lo + 1
  # Hand-made distances: all three points prefer cluster 0, which can take only one of them.
  d = jnp.asarray([[0.0, 5.0, 9.0], [0.0, 1.0, 9.0], [0.0, 9.0, 2.0]])
  # Row 0 loses most (5) by moving, then row 2 (2), then row 1 (1): 0 -> 0, 2 -> 2, 1 -> 1.
  assert np.asarray(sem.balanced_assignment(d)).tolist() == [0, 1, 2]


def test_capped_fit_uses_a_seeded_sample_and_assigns_every_item_to_its_nearest_code():
  """max_points_per_code: each level's centroids are k-means of the same seeded sample of rows
  (FAISS's max_points_per_centroid); every row then takes its nearest centroid (NumPy check)."""
  x, _ = _blobs(seed=2, centers=6, per=40, spread=1.0)  # 240 rows
  k, cap = 6, 5  # fit on 30 rows
  r = sem.rq_kmeans(x, levels=2, codebook_size=k, seed=1, iters=8, max_points_per_code=cap)
  rows = sem.fit_rows(len(x), k, cap, 1)
  assert len(rows) == cap * k and len(set(rows.tolist())) == cap * k
  np.testing.assert_array_equal(rows, sem.fit_rows(len(x), k, cap, 1))  # a function of the seed
  assert not np.array_equal(rows, sem.fit_rows(len(x), k, cap, 2))
  resid = x.copy()
  for level in range(2):
    cent, _ = sem.kmeans(
      jnp.asarray(resid[rows]), jax.random.fold_in(jax.random.PRNGKey(1), level), k=k, iters=8
    )
    np.testing.assert_allclose(r.codebooks[level], np.asarray(cent), rtol=1e-6, atol=1e-6)
    d = ((resid[:, None, :] - r.codebooks[level][None]) ** 2).sum(-1)  # [N, K] in NumPy
    chosen = d[np.arange(len(x)), r.codes[:, level]]
    assert np.all(chosen <= d.min(1) + 1e-4 * (1 + d.min(1)))  # nearest, up to float ties
    resid = resid - r.codebooks[level][r.codes[:, level]]
  # A cap at or above N / K fits on every row: the uncapped result, bit for bit.
  whole = sem.rq_kmeans(x, levels=2, codebook_size=k, seed=1, iters=8)
  same = sem.rq_kmeans(x, levels=2, codebook_size=k, seed=1, iters=8, max_points_per_code=40)
  assert sem.fit_rows(len(x), k, 40, 1) is None
  np.testing.assert_array_equal(whole.codes, same.codes)
  np.testing.assert_array_equal(whole.codebooks, same.codebooks)


def test_quantiser_errors():
  x, _ = _blobs(centers=2, per=3)
  with pytest.raises(DataError, match="codebook_size.*only 6 items"):
    sem.rq_kmeans(x, levels=1, codebook_size=8)
  with pytest.raises(DataError, match="levels >= 1"):
    sem.rq_kmeans(x, levels=0, codebook_size=2)


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
  emb, info = sem.content_embeddings(texts, dim=3, seed=0)
  assert emb.shape == (5, 3) and info["dim"] == 3 and info["tfidf_words"] == 8
  e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  assert e[0] @ e[1] > e[0] @ e[3]  # two apples are closer than an apple and a blue car
  again, _ = sem.content_embeddings(texts, dim=3, seed=0)
  np.testing.assert_array_equal(emb, again)
  assert sem.item_text("T", {"genres": ["a", "b"], "year": 1999, "tag": "x"}) == "T a b x"
  with pytest.raises(DataError, match="no item has any text"):
    sem.content_embeddings(["", ""], dim=2, seed=0)


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
    sem.item_embeddings(
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
    sem.file_embeddings(str(obj), 8)
  for kind in ("search", "rec", "joint"):  # bi-encoder kinds: only through prepare_dataset
    with pytest.raises(DataError, match=f"'data.semantic.embedding'.*'{kind}'.*prepare_dataset"):
      sem.item_embeddings(_semantic_config(embedding=kind), ["a"], [{}])
  with pytest.raises(DataError, match="expected one of"):
    sem.item_embeddings(_semantic_config(embedding="clip"), ["a"], [{}])


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


# ------------------------------------------------------------------------------ bi-encoder IDs
JOINT_STEPS = 12


def _biencoder_tiny(embedding="joint", **semantic):
  """Semantic IDs of bi-encoder embeddings on the tiny simulator, with a fast bi-encoder."""
  c = semantic_tiny_config(embedding=embedding, **semantic)
  b = c.baselines.biencoder
  b.overrides = {"num_encoder_layers": 1}
  b.num_steps, b.batch_size, b.learning_rate = JOINT_STEPS, 64, 3e-3
  b.eval_batch_size, b.log_every_steps, b.checkpoint_every_steps = 64, 4, 100
  return c


def _prepare_spied(config, out_dir):
  """prepare_dataset with a spy on every processed-split read (ProcessedDataset.split) and on the
  bi-encoder's training: returns (path, reads [(phase, task, split)], train summaries)."""
  from gr_jax.baselines import biencoder
  from gr_jax.data import dataset as dataset_lib
  from gr_jax.data import prepare_dataset

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
    path = prepare_dataset(config, str(out_dir))
  return path, reads, summaries


@pytest.fixture(scope="module")
def joint_dataset(tmp_path_factory):
  from gr_jax.data import ProcessedDataset

  root = tmp_path_factory.mktemp("joint")
  path, reads, summaries = _prepare_spied(_biencoder_tiny(), root / "ds")
  return ProcessedDataset(path, verify=True), reads, summaries, root


def test_joint_embeddings_give_a_valid_catalogue_and_record_the_biencoder(joint_dataset):
  ds, _, summaries, root = joint_dataset
  cat, m = ds.catalog, ds.manifest
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
    assert [f"recall@{k}" for k in sem.BIENCODER_RECALL_KS] == sorted(r, key=lambda x: int(x[7:]))
    assert 0 <= r["recall@1"] <= r["recall@10"] <= r["recall@30"] <= 1
  assert info["dim"] == 32  # tiny preset's d_model, no projection
  # The hashed config says which bi-encoder made the IDs (no logging periods).
  h = m["config"]["semantic"]["biencoder"]
  assert h["tasks"] == "search,rec" and h["num_steps"] == JOINT_STEPS
  assert not set(sem.BIENCODER_INERT_KNOBS) & set(h)
  # The cache beside the dataset: the atomic dataset (same catalogue) and the bi-encoder's run.
  atomic = root / info["atomic_dataset"]["dir"]
  assert info["atomic_dataset"]["dir"].startswith(".ds.semantic-biencoder/atomic-")
  with open(atomic / "catalog.json") as f:
    assert json.load(f)["item_ids"] == list(cat.item_ids)
  run = root / info["run_dir"]
  assert (run / "config.json").exists() and (run / "checkpoints").is_dir()


def test_biencoder_never_reads_held_out_rows(joint_dataset):
  _, reads, _, _ = joint_dataset
  during = [r for r in reads if r[0] == "train"]
  # Training reads the train splits of both tasks, nothing else (input length and per-epoch
  # validation see the empty valid/test of TrainSplitsOnly).
  assert {(t, s) for _, t, s in during} == {("search", "train"), ("rec", "train")}
  # Valid rows are read only after training (the manifest's recall); test rows never.
  assert all(p == "after" for p, _, s in reads if s == "valid")
  assert {t for p, t, s in reads if s == "valid"} == {"search", "rec"}
  assert not [r for r in reads if r[2] == "test"]
  view = sem.TrainSplitsOnly(_FakeSplits())
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


def test_manifest_recall_is_the_models_own(joint_dataset):
  """valid_recall recomputed in numpy from the cached run: cosine of every item, strict ranks."""
  from flax import nnx
  from gr_jax.baselines import biencoder
  from gr_jax.data import ProcessedDataset

  ds, _, _, root = joint_dataset
  info = ds.manifest["semantic_ids"]["embedding_info"]
  atomic = ProcessedDataset(str(root / info["atomic_dataset"]["dir"]))
  res = biencoder.load_run(str(root / info["run_dir"]), sem.TrainSplitsOnly(atomic))
  items = np.asarray(biencoder.item_embeddings(res, atomic), np.float64)  # unit rows
  embed = jax.jit(lambda p, x: nnx.merge(res.graphdef, p).embed(x))  # eval mode
  for t in ("search", "rec"):
    a = atomic.split(t, "valid")
    q = np.asarray(embed(res.params, np.asarray(a["encoder_input_ids"])), np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scores = q @ items.T
    above = (scores > scores[np.arange(len(q)), a["target_item"]][:, None]).sum(1)
    got = info["biencoder"]["valid_recall"][t]
    for k in sem.BIENCODER_RECALL_KS:
      assert got[f"recall@{k}"] == pytest.approx(float(np.mean(above < k)), abs=1.5 / len(q))


def test_joint_ids_are_deterministic_and_the_cache_is_reused(joint_dataset, tmp_path):
  import shutil
  from gr_jax.data import prepare

  ds, _, _, _ = joint_dataset
  # A fresh directory (its own cache): the bi-encoder trains again, to the same bytes.
  path, _, summaries = _prepare_spied(_biencoder_tiny(), tmp_path / "ds")
  assert summaries[0]["resumed_from"] == 0
  for rel, digest in ds.manifest["files"].items():
    assert prepare.sha256_file(os.path.join(path, rel)) == digest, rel
  with open(os.path.join(path, "manifest.json")) as f:
    again = json.load(f)
  assert again["semantic_ids"] == ds.manifest["semantic_ids"]
  assert again["config_hash"] == ds.manifest["config_hash"]
  # The dataset removed, the cache kept: prepared again without training (the run is reloaded).
  shutil.rmtree(path)
  path, _, summaries = _prepare_spied(_biencoder_tiny(), tmp_path / "ds")
  assert summaries[0]["resumed_from"] == summaries[0]["steps"] == JOINT_STEPS
  for rel, digest in ds.manifest["files"].items():
    assert prepare.sha256_file(os.path.join(path, rel)) == digest, rel


def test_atomic_and_semantic_examples_must_match(joint_dataset):
  ds, _, _, root = joint_dataset
  emb = sem.BiencoderEmbedder(_biencoder_tiny(), str(root / "ds"))
  emb.atomic_dir = str(
    root / ds.manifest["semantic_ids"]["embedding_info"]["atomic_dataset"]["dir"]
  )
  arrays = {
    t: {s: dict(ds.split(t, s)) for s in ("train", "valid", "test")} for t in ("search", "rec")
  }
  emb.check_examples(arrays)  # the same examples: fine
  arrays["rec"]["valid"]["target_item"] = np.roll(arrays["rec"]["valid"]["target_item"], 1)
  with pytest.raises(DataError, match=r"rec/valid.npz.*'target_item'.*same examples"):
    emb.check_examples(arrays)


def test_biencoder_settings_enter_the_hash_of_those_datasets_only():
  from gr_jax.data import prepare

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
  assert h(inert) == base_hash
  assert h(_biencoder_tiny(seed=1)) != base_hash  # data.semantic.seed seeds the bi-encoder too
  kinds = {k: h(_biencoder_tiny(embedding=k)) for k in ("search", "rec", "joint")}
  assert len(set(kinds.values())) == 3
  for kind, tasks in (("search", "search"), ("rec", "rec"), ("joint", "search,rec")):
    bc = sem.biencoder_config(_biencoder_tiny(embedding=kind))
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
  from gr_jax.data import prepare_dataset

  c = _biencoder_tiny()
  c.baselines.biencoder[knob] = value
  with pytest.raises(DataError, match=r"'baselines.biencoder'.*embedding='joint'.*" + match):
    prepare_dataset(c, str(tmp_path / "ds"))
  assert not os.listdir(tmp_path)  # refused before any work: no dataset, no cache


def test_biencoder_errors(tmp_path):
  from gr_jax.data import prepare_dataset

  c = _biencoder_tiny()
  c.baselines.biencoder.num_steps, c.baselines.biencoder.num_epochs = 0, 0
  with pytest.raises(DataError, match=r"'baselines.biencoder.num_steps'.*expected num_steps > 0"):
    prepare_dataset(c, str(tmp_path / "ds"))
  c = _biencoder_tiny()
  del c.baselines["biencoder"]
  with pytest.raises(DataError, match=r"'baselines.biencoder'.*embedding='joint'.*no such section"):
    prepare_dataset(c, str(tmp_path / "ds"))
  with pytest.raises(DataError, match=r"'baselines.biencoder'.*whole run config"):
    sem.BiencoderEmbedder(_biencoder_tiny().data, str(tmp_path / "ds"))
  with pytest.raises(DataError, match=r"'data.semantic.embedding'.*expected a bi-encoder kind"):
    sem.biencoder_config(_biencoder_tiny(embedding="content"))
  # Quantiser settings are checked before the bi-encoder trains (no cache is made).
  with pytest.raises(DataError, match=r"'data.semantic.codebook_size'.*only \d+ items"):
    prepare_dataset(_biencoder_tiny(codebook_size=1000), str(tmp_path / "ds"))
  assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_run_config_records_the_decoder_len_the_run_used(semantic_dataset, tmp_path):
  """data.decoder_len (2 by default) does not apply to semantic IDs: the trainer uses the
  manifest's (ID tokens + EOS) and its config.json must say so; the evaluator's check of the
  dataset against that config.json still passes."""
  from gr_jax.analysis import embeddings
  from gr_jax.training import checkpointing, loop

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
