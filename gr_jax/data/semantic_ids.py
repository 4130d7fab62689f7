"""Semantic item IDs: item embeddings -> RQ-KMeans code tuples -> a unique token sequence per item.

(Penha et al., RecSys 2025, "Semantic IDs for joint generative search and recommendation".)

Pipeline (`build_semantic_ids`, called by `prepare` when `data.id_scheme == "semantic"`):
  1. Item embeddings `[N, D]` from `data.semantic.embedding`:
       content: TF-IDF of each item's text (its title and the string values of its metadata) reduced
         by truncated SVD (scikit-learn). Item text is catalogue metadata, not interactions, so it
         may inform the IDs of every item without leaking held-out data. Numeric metadata (the
         simulator's latent cluster labels) is not text and is left out, as in the BM25 baseline.
       file: an .npy float array `[num_items, D]` the user brings, rows in catalogue order (the
         `item_ids` order of catalog.json).
       search | rec | joint: the item vectors of the dense bi-encoder (gr_jax/baselines/biencoder.py)
         trained on search, on rec, or on both tasks at once (`BIENCODER_TASKS`), on TRAINING rows
         only (`BiencoderEmbedder`, below). Penha et al. 2025 find the jointly trained one the
         best trade-off: IDs from one task's embeddings hurt the other task.
  2. RQ-KMeans (`rq_kmeans`, JAX): level l clusters the residual left by levels < l into
     `codebook_size` centroids (k-means++ initialisation, Lloyd iterations, optionally a balanced
     assignment that gives every code floor(N/K) or ceil(N/K) items). Deterministic for a seed.
  3. Disambiguation (`disambiguate`): items sharing a full code tuple get a final code 0, 1, ... in
     catalogue order. When any tuple is shared, every item carries that extra code (0 when its
     tuple is unique), so all IDs have the same length and no ID is a prefix of another.
  4. Diagnostics for the manifest (`diagnostics`): codebook use and code entropy per level,
     collision rate, largest collision group.

Bi-encoder embeddings (`BiencoderEmbedder`, built by `prepare_dataset` from the whole run config;
these kinds need a prepared dataset, so `build_semantic_ids` alone refuses them):
  a. The same data is prepared with atomic IDs (`prepare_dataset` of the data section with
     `id_scheme="atomic"`) into a cache beside the output, `<parent>/.<name>.semantic-biencoder/
     atomic-<hash12>/`, a complete, verified, reusable atomic dataset. Catalogue order and splits
     do not depend on the ID scheme in prepare (items: loader order, then sorted; search split by
     held-out distinct query with split_seed; rec leave-last-out), and this is checked: the
     catalogue's item_ids, and every split's targets and query ids (search inputs too), must be
     the ones of the semantic dataset, else a DataError.
  b. The bi-encoder trains in `<cache>/<kind>-<hash12>/` (its run directory: config.json,
     metrics.jsonl, Orbax checkpoints; locked while in use, resumed or just reloaded when it is
     there) with `config.baselines.biencoder`, `tasks` replaced by the kind's, seed
     `data.semantic.seed` (a data setting: runs with other seeds share the dataset), for the
     section's budget (num_steps, else num_epochs). It sees the atomic dataset through
     `TrainSplitsOnly`: the training splits, and empty valid and test splits, so no held-out row
     reaches its parameters, its input length or its per-epoch validation (which logs 0.0 in its
     metrics.jsonl). `item_embeddings` then gives the item vectors in catalogue order.
  c. After training, Recall@K (`BIENCODER_RECALL_KS`) of each trained task on the atomic dataset's
     valid rows is measured for the manifest (ranking as the bi-encoder's own validation:
     items scored strictly above the target) -- a diagnostic that selects nothing.
  The settings enter the dataset's config hash (`biencoder_fingerprint`, under
  `data.semantic.biencoder` of the manifest's config), except the knobs that change no parameter
  (`BIENCODER_INERT_KNOBS`), so a changed bi-encoder is another dataset.

The catalogue (`ItemCatalog`, id_scheme "semantic") turns codes into tokens: level l, code c is
token `token_offset + l * codebook_size + c`; disambiguation code d is
`token_offset + levels * codebook_size + d`.

Cold start (items added after training; `gr_jax.data.cold_start`, `python -m gr_jax.add_items`):
prepare writes COLD_START_FILE beside catalog.json for every semantic dataset (`cold_start_arrays`:
the codebooks [levels, K, D], the embedding kind, the normalisation flag and, for content
embeddings, the fitted TF-IDF vocabulary, idf and SVD components as plain arrays; no pickle).
`ColdStartModel` reads it back; a new item is embedded as the catalogue was (content: its text
through `ContentEmbedder.embed`, NumPy; file: the user's vector; search | rec | joint are refused,
a new item has no trained bi-encoder vector), and `cold_start_codes` gives it the residual-nearest
code per level (`quantise`, rq_kmeans's assignment arithmetic) and the smallest disambiguation code
its tuple does not use yet. No token is added: the model's ID vocabulary (levels x codebook_size +
num_disambiguation) stays the one it was trained with, so a new item on a tuple whose
disambiguation codes are all taken (or on any taken tuple when the catalogue has no disambiguation
code) cannot get a distinct ID: a DataError saying so. `data.semantic.reserve_disambiguation` = R
keeps R spare codes per tuple at prepare (num_disambiguation = largest collision group + R, and
every ID then carries the code); R = 0, the default, leaves every ID as it was. A new item's
disambiguation code beyond its tuple's prepared ones was never a training target after that
prefix, so a trained model gives it little probability: cold start makes the item decodable,
under the prefix its content chose, not as likely as a trained item.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gr_jax.data import dataset as dataset_lib
from gr_jax.data.errors import DataError

log = logging.getLogger(__name__)

EMBEDDINGS = ("content", "file", "search", "rec", "joint")
# Bi-encoder embedding kinds -> the `baselines.biencoder.tasks` their bi-encoder trains on.
BIENCODER_TASKS = {"search": "search", "rec": "rec", "joint": "search,rec"}
# Cut-offs of the bi-encoder's validation Recall@K in the manifest: fixed, so that the manifest is
# a function of the hashed data config (eval.ks is a run setting, left out of the hash).
BIENCODER_RECALL_KS = (1, 5, 10, 30)
# baselines.biencoder knobs that change no trained parameter (logging, checkpoint and validation
# periods; a resumed run ends bitwise where an uninterrupted one does): not in the dataset hash.
BIENCODER_INERT_KNOBS = ("log_every_steps", "checkpoint_every_steps", "eval_every_steps")
_SRC = "<config>"


@dataclasses.dataclass
class SemanticIds:
  """Codes of every item: `codes` int32 [N, levels (+1 with disambiguation)]."""

  codes: np.ndarray
  levels: int
  codebook_size: int
  num_disambiguation: int  # 0 = no disambiguation code; else codes[:, -1] < num_disambiguation
  info: dict  # manifest diagnostics
  # What cold start (`ColdStartModel`) needs to give a new item an ID: the RQ-KMeans centroids
  # float32 [levels, K, D] and, for content embeddings, the fitted text -> vector map.
  codebooks: np.ndarray | None = None
  content: "ContentEmbedder | None" = None

  @property
  def tokens_per_item(self) -> int:
    return self.levels + (1 if self.num_disambiguation else 0)

  @property
  def num_id_tokens(self) -> int:
    return self.levels * self.codebook_size + self.num_disambiguation


# ---------------------------------------------------------------------------------- embeddings
def item_text(title: str, metadata: Mapping[str, Any]) -> str:
  """An item's content text: its title, then the string values of its metadata in key order."""
  parts = [str(title or "")]
  for key in sorted(metadata or {}):
    v = metadata[key]
    if isinstance(v, str):
      parts.append(v)
    elif isinstance(v, (list, tuple)):
      parts.extend(x for x in v if isinstance(x, str))
  return " ".join(p for p in parts if p)


# sklearn's TfidfVectorizer settings, fixed: `ContentEmbedder.embed` re-applies them in NumPy.
# One-character words count: simulated and real titles hold short tokens (years, "ii", ...).
_TOKEN_PATTERN = r"(?u)\b\w+\b"


@dataclasses.dataclass
class ContentEmbedder:
  """The fitted text -> vector map of content embeddings, as plain arrays (no pickle), so that a
  new item's text can be embedded after prepare: TF-IDF (lowercased words of `_TOKEN_PATTERN`,
  sublinear tf 1 + log(count), times `idf`, rows L2-normalised; words outside `vocabulary` are
  dropped) then the SVD projection `tfidf @ components.T` (what TruncatedSVD.transform does)."""

  vocabulary: np.ndarray  # str [W]: word of each TF-IDF column
  idf: np.ndarray  # float64 [W]
  components: np.ndarray  # float32 [d, W]: the SVD's right singular vectors

  def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """float32 [n, d] embeddings of `texts`, and int [n] how many known words each holds (0: the
    text shares no word with the catalogue the map was fitted on; its vector is 0)."""
    import re  # pylint: disable=g-import-not-at-top

    pattern = re.compile(_TOKEN_PATTERN)
    column = {str(w): j for j, w in enumerate(self.vocabulary.tolist())}
    rows, cols, counts = [], [], []
    known = np.zeros(len(texts), np.int64)
    for r, text in enumerate(texts):
      tally: dict[int, int] = {}
      for word in pattern.findall(str(text).lower()):
        j = column.get(word)
        if j is not None:
          tally[j] = tally.get(j, 0) + 1
      known[r] = sum(tally.values())
      rows += [r] * len(tally)
      cols += list(tally)
      counts += list(tally.values())
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    vals = (1.0 + np.log(np.asarray(counts, np.float64))) * self.idf[cols]  # [nnz]
    norms = np.zeros(len(texts), np.float64)
    np.add.at(norms, rows, vals * vals)
    vals = vals / np.sqrt(norms[rows]) if len(vals) else vals
    emb = np.zeros((len(texts), self.components.shape[0]), np.float64)  # [n, d]
    np.add.at(emb, rows, vals[:, None] * self.components[:, cols].T.astype(np.float64))
    return emb.astype(np.float32), known

  def arrays(self) -> dict[str, np.ndarray]:
    return {
      "content_vocabulary": np.asarray(self.vocabulary, dtype=str),
      "content_idf": np.asarray(self.idf, np.float64),
      "content_components": np.asarray(self.components, np.float32),
    }


def fit_content_embedder(
  texts: Sequence[str], dim: int, seed: int
) -> tuple[np.ndarray, dict, ContentEmbedder]:
  """TF-IDF of `texts` reduced by truncated SVD: float32 [N, d] with d <= dim, its info, and the
  fitted map (`ContentEmbedder`) that embeds new texts the same way."""
  # pylint: disable=g-import-not-at-top
  from sklearn.decomposition import TruncatedSVD
  from sklearn.feature_extraction.text import TfidfVectorizer

  if int(dim) < 1:
    raise DataError(_SRC, 0, "data.semantic.content_dim", f"must be >= 1, got {dim}")
  vec = TfidfVectorizer(token_pattern=_TOKEN_PATTERN, lowercase=True, sublinear_tf=True)
  try:
    tfidf = vec.fit_transform(list(texts))  # sparse [N, W]
  except ValueError:
    raise DataError(
      _SRC,
      0,
      "data.semantic.embedding",
      "content: no item has any text (titles or string metadata); use "
      "embedding='file' for this dataset",
    ) from None
  n, w = tfidf.shape
  # TruncatedSVD needs fewer components than features (and than rows to be meaningful).
  d = min(int(dim), w - 1, n - 1)
  if d < 1:
    raise DataError(
      _SRC,
      0,
      "data.semantic.embedding",
      f"content: {n} items and {w} distinct words leave no SVD dimension",
    )
  svd = TruncatedSVD(n_components=d, algorithm="randomized", n_iter=7, random_state=int(seed))
  emb = svd.fit_transform(tfidf).astype(np.float32)  # [N, d]
  empty = int((tfidf.getnnz(axis=1) == 0).sum())
  info = {
    "tfidf_words": int(w),
    "dim": int(d),
    "items_without_text": empty,
    "svd_explained_variance": float(svd.explained_variance_ratio_.sum()),
  }
  fitted = ContentEmbedder(
    np.asarray(vec.get_feature_names_out(), dtype=str),
    np.asarray(vec.idf_, np.float64),
    np.asarray(svd.components_, np.float32),
  )
  return emb, info, fitted


def content_embeddings(texts: Sequence[str], dim: int, seed: int) -> tuple[np.ndarray, dict]:
  """TF-IDF of `texts` reduced by truncated SVD: float32 [N, d] with d <= dim, and its info."""
  emb, info, _ = fit_content_embedder(texts, dim, seed)
  return emb, info


NPY_MAGIC = b"\x93NUMPY"  # the first bytes of every .npy file (numpy.lib.format)


def load_npy_array(path: str, field: str) -> np.ndarray:
  """The array of an .npy file, never unpickled. A file without the .npy magic bytes (text, a
  .npz or any other file) is "not a .npy file"; numpy itself would call it pickled data."""
  with open(path, "rb") as f:
    head = f.read(len(NPY_MAGIC))
  if head != NPY_MAGIC:
    kind = (
      " (a zip archive: an .npz? give one array saved with numpy.save)" if head[:2] == b"PK" else ""
    )
    raise DataError(
      path, 0, field, f"not a .npy file{kind}: expected an array saved with numpy.save"
    )
  try:
    return np.load(path, allow_pickle=False)
  except ValueError as e:
    if "pickled" in str(e) or "allow_pickle" in str(e):
      raise DataError(
        path, 0, field, "an object array (pickled Python objects): expected a float array"
      ) from None
    raise DataError(path, 0, field, f"unreadable .npy file ({e})") from None
  except OSError as e:
    raise DataError(path, 0, field, f"unreadable .npy file ({e})") from None


def check_real_finite(emb: np.ndarray, path: str, field: str) -> None:
  """Embeddings are finite real numbers: bool, string, object and complex arrays are refused
  (a complex array's cast to float drops the imaginary part), and so are NaN and infinities."""
  if not (np.issubdtype(emb.dtype, np.floating) or np.issubdtype(emb.dtype, np.integer)):
    raise DataError(path, 0, field, f"expected finite real numbers (float), got dtype {emb.dtype}")
  bad = int(emb.size - np.isfinite(emb).sum())
  if bad:
    raise DataError(
      path, 0, field, f"expected finite real numbers, got {bad} NaN or infinite values"
    )


def file_embeddings(path: str, num_items: int) -> tuple[np.ndarray, dict]:
  """A user's .npy of item embeddings, float [num_items, D] in catalogue order."""
  if not path:
    raise DataError(
      _SRC,
      0,
      "data.semantic.embedding_file",
      "embedding='file' needs the path of an .npy array [num_items, dim]",
    )
  if not os.path.isfile(path):
    raise DataError(path, 0, "data.semantic.embedding_file", "file does not exist")
  emb = load_npy_array(path, "data.semantic.embedding_file")
  if emb.ndim != 2 or emb.shape[0] != num_items or emb.shape[1] < 1:
    raise DataError(
      path,
      0,
      "data.semantic.embedding_file",
      f"expected shape [num_items={num_items}, dim] (rows in catalogue order, the "
      f"item_ids of catalog.json), got {list(emb.shape)}",
    )
  check_real_finite(emb, path, "data.semantic.embedding_file")
  with open(path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  return emb.astype(np.float32), {
    "dim": int(emb.shape[1]),
    "file": os.path.abspath(path),
    "sha256": digest,
  }


def item_embeddings(
  sc,
  titles: Sequence[str],
  metadata: Sequence[Mapping[str, Any]],
  *,
  item_ids: Sequence[str] | None = None,
  embedder: Callable[[Sequence[str]], tuple[np.ndarray, dict]] | None = None,
) -> tuple[np.ndarray, dict]:
  """float32 [N, D] embeddings of the catalogue's items from `data.semantic` (`sc`).

  Bi-encoder kinds call `embedder(item_ids)` (a `BiencoderEmbedder`, which `prepare_dataset` makes
  from the whole run config); without one they are refused.
  """
  emb, info, _ = _embed_items(sc, titles, metadata, item_ids=item_ids, embedder=embedder)
  return emb, info


def _embed_items(
  sc, titles, metadata, *, item_ids=None, embedder=None
) -> tuple[np.ndarray, dict, ContentEmbedder | None]:
  """`item_embeddings`, plus the fitted content map (None for the other kinds)."""
  kind = str(sc.embedding)
  if kind in BIENCODER_TASKS:
    if embedder is None or item_ids is None:
      raise DataError(
        _SRC,
        0,
        "data.semantic.embedding",
        f"{kind!r}: bi-encoder embeddings are trained on a prepared dataset's "
        "training splits, with baselines.biencoder; build them through "
        "prepare_dataset(config, out_dir) (python -m gr_jax.prepare) with the whole "
        "run config, or use 'content' or 'file' here",
      )
    emb, info = embedder(list(item_ids))
    if emb.ndim != 2 or emb.shape[0] != len(titles):
      raise DataError(
        _SRC,
        0,
        "data.semantic.embedding",
        f"{kind!r}: expected [num_items={len(titles)}, dim] bi-encoder embeddings, "
        f"got {list(emb.shape)}",
      )
    return emb, info, None
  if kind == "content":
    texts = [item_text(t, m) for t, m in zip(titles, metadata)]
    return fit_content_embedder(texts, int(sc.content_dim), int(sc.seed))
  if kind == "file":
    return (*file_embeddings(str(sc.embedding_file), len(titles)), None)
  raise DataError(_SRC, 0, "data.semantic.embedding", f"expected one of {EMBEDDINGS}, got {kind!r}")


# ---------------------------------------------------------------------------------- bi-encoder
def _jsonable(x):
  """A ConfigDict / dict / tuple tree as plain JSON values (sorted keys, lists)."""
  if hasattr(x, "to_dict"):
    x = x.to_dict()
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in sorted(x.items())}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  return x


def _digest(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def biencoder_config(config) -> ml_collections.ConfigDict:
  """The config the bi-encoder of a search | rec | joint embedding trains with.

  `config`: a whole run config (`.data` and `.baselines`). Its `baselines.biencoder` section with
  `tasks` set by `data.semantic.embedding`, `seed = data.semantic.seed` and
  `eval.ks = BIENCODER_RECALL_KS`; nothing else of the run config reaches the bi-encoder. Raises
  DataError naming the setting when it cannot be built.
  """
  if "data" not in config:
    raise DataError(
      _SRC,
      0,
      "baselines.biencoder",
      "bi-encoder semantic IDs (data.semantic.embedding = search | rec | joint) "
      "train the bi-encoder of baselines.biencoder: prepare and hash the dataset "
      "from the whole run config, not from its data section",
    )
  kind = str(config.data.semantic.embedding)
  if kind not in BIENCODER_TASKS:
    raise DataError(
      _SRC,
      0,
      "data.semantic.embedding",
      f"expected a bi-encoder kind {tuple(BIENCODER_TASKS)}, got {kind!r}",
    )
  if "baselines" not in config or "biencoder" not in config.baselines:
    raise DataError(
      _SRC,
      0,
      "baselines.biencoder",
      f"data.semantic.embedding={kind!r} trains the bi-encoder configured in "
      "baselines.biencoder, but the config has no such section (start from "
      "configs/base.py)",
    )
  section = ml_collections.ConfigDict(config.baselines.biencoder.to_dict())
  with section.ignore_type():
    section.tasks = BIENCODER_TASKS[kind]
  out = ml_collections.ConfigDict(
    {
      "seed": int(config.data.semantic.seed),
      "eval": {"ks": BIENCODER_RECALL_KS},
      "baselines": {"biencoder": section},
    }
  )
  from gr_jax.baselines import biencoder  # pylint: disable=g-import-not-at-top

  try:
    biencoder.settings_of(out.baselines.biencoder)
  except (ValueError, TypeError) as e:
    raise DataError(
      _SRC,
      0,
      "baselines.biencoder",
      f"data.semantic.embedding={kind!r} trains this bi-encoder: {e}",
    ) from None
  for knob in ("batch_size", "eval_batch_size"):
    if int(section[knob]) < 1:
      raise DataError(_SRC, 0, f"baselines.biencoder.{knob}", f"expected >= 1, got {section[knob]}")
  if (
    int(section.num_steps) < 0
    or int(section.num_epochs) < 0
    or not (int(section.num_steps) or int(section.num_epochs))
  ):
    raise DataError(
      _SRC,
      0,
      "baselines.biencoder.num_steps",
      "expected num_steps > 0, or num_steps = 0 and num_epochs > 0, got "
      f"{section.num_steps} and {section.num_epochs}",
    )
  return out


def biencoder_fingerprint(config) -> dict:
  """What of the bi-encoder enters the dataset's config hash (`prepare.dataset_config`): its
  section as trained (tasks of the kind) without `BIENCODER_INERT_KNOBS`. Validates the settings."""
  section = _jsonable(biencoder_config(config).baselines.biencoder)
  return {k: v for k, v in section.items() if k not in BIENCODER_INERT_KNOBS}


class TrainSplitsOnly:
  """A processed dataset as the semantic-ID bi-encoder sees it: its catalogue, tokenizer and
  training splits; its valid and test splits are empty (0 rows of the training arrays' shapes).

  `train_biencoder` reads valid/test for its input length and its periodic validation: through
  this view neither sees a held-out row.
  """

  def __init__(self, dataset):
    self._dataset = dataset
    self.catalog = dataset.catalog

  @property
  def tokenizer(self):
    return self._dataset.tokenizer

  @property
  def num_items(self) -> int:
    return int(self.catalog.num_items)

  def split(self, task: str, split: str) -> dict[str, np.ndarray]:
    arrays = self._dataset.split(task, "train")
    if split == "train":
      return arrays
    if split in ("valid", "test"):
      return {k: v[:0] for k, v in arrays.items()}
    raise KeyError(f"split must be train, valid or test; got {split!r}")


def _trim_columns(ids: np.ndarray) -> np.ndarray:
  """int32 rows cut after the last column that holds a token in any row (padding masked anyway)."""
  ids = np.asarray(ids, np.int32)
  nz = np.flatnonzero(ids.any(axis=0))
  return ids[:, : int(nz[-1]) + 1 if len(nz) else 1]


def biencoder_valid_recall(
  result, dataset, items: np.ndarray, ks: Sequence[int], batch: int
) -> dict[str, dict[str, float]]:
  """Recall@K of a trained bi-encoder (`biencoder.TrainResult`) on each trained task's VALID rows
  of `dataset`, against the item vectors `items` [n, dim] (as scored): the share of rows with
  fewer than K items scored strictly above their target, as the bi-encoder's own validation."""
  # pylint: disable=g-import-not-at-top
  from flax import nnx
  from gr_jax.baselines import common

  graphdef, cosine = result.graphdef, result.settings.similarity == "cosine"

  def scores(pair, ids):
    params, table = pair
    q = nnx.merge(graphdef, params).embed(ids)  # [B, dim], eval mode
    if cosine:
      q = q * jax.lax.rsqrt(jnp.maximum(jnp.sum(q * q, axis=-1, keepdims=True), 1e-12))
    return q @ table.T  # [B, n]

  ranks = common.ranks_fn(scores)
  table = jnp.asarray(items)
  out = {}
  for task in result.settings.tasks:
    arrays = dataset.split(task, "valid")
    out[task] = common.validation_recall(
      ranks,
      (result.params, table),
      _trim_columns(arrays["encoder_input_ids"]),
      np.asarray(arrays["target_item"], np.int32),
      tuple(int(k) for k in ks),
      int(batch),
    )
  return out


class BiencoderEmbedder:
  """Item embeddings of data.semantic.embedding = search | rec | joint (module doc, steps a-c).

  `BiencoderEmbedder(config, out_dir)(item_ids)` -> (float32 [N, dim] in catalogue order, info);
  `check_examples(arrays)` then checks that the semantic dataset's splits are the atomic one's.
  """

  def __init__(self, config, out_dir: str):
    self.config = biencoder_config(config)  # validates before any work
    self.kind = str(config.data.semantic.embedding)
    self.data = ml_collections.ConfigDict(config.data.to_dict())
    with self.data.ignore_type():
      self.data.id_scheme = "atomic"
    out_dir = os.path.abspath(out_dir)
    self.parent = os.path.dirname(out_dir)
    self.cache_dir = os.path.join(self.parent, f".{os.path.basename(out_dir)}.semantic-biencoder")
    self.atomic_dir: str | None = None

  def __call__(self, item_ids: Sequence[str]) -> tuple[np.ndarray, dict]:
    # pylint: disable=g-import-not-at-top
    from gr_jax import workdir_lock
    from gr_jax.baselines import biencoder
    from gr_jax.data import prepare
    from gr_jax.data.dataset import ProcessedDataset

    atomic_hash = prepare.config_hash(self.data)
    self.atomic_dir = os.path.join(self.cache_dir, f"atomic-{atomic_hash[:12]}")
    log.info(
      "semantic IDs (%s): atomic dataset for the bi-encoder in %s", self.kind, self.atomic_dir
    )
    prepare.prepare_dataset(self.data, self.atomic_dir)  # a no-op when cached
    dataset = ProcessedDataset(self.atomic_dir, verify=True)
    if list(dataset.catalog.item_ids) != list(item_ids):
      raise DataError(
        os.path.join(self.atomic_dir, "catalog.json"),
        0,
        "item_ids",
        "the atomic dataset the bi-encoder trains on has another catalogue order "
        "than this semantic dataset; expected the same items in the same order",
      )
    # The atomic dataset's files too: rebuilt from changed raw data, it needs a new bi-encoder.
    key = _digest(
      {
        "atomic_config_hash": atomic_hash,
        "atomic_files": _digest(dataset.manifest["files"]),
        "config": _jsonable(self.config),
      }
    )
    run_dir = os.path.join(self.cache_dir, f"{self.kind}-{key[:12]}")
    view = TrainSplitsOnly(dataset)
    section = self.config.baselines.biencoder
    log.info(
      "semantic IDs (%s): training the bi-encoder (tasks %s) in %s",
      self.kind,
      section.tasks,
      run_dir,
    )
    with workdir_lock.hold(run_dir, purpose="semantic-ID bi-encoder"):
      result = biencoder.train_biencoder(self.config, view, run_dir)
    batch = int(section.eval_batch_size)
    emb = biencoder.item_embeddings(result, view, batch_size=batch)  # [N, dim], catalogue order
    if not np.isfinite(emb).all():
      raise DataError(
        run_dir,
        0,
        "data.semantic.embedding",
        f"{self.kind!r}: the bi-encoder's item embeddings are not finite",
      )
    recall = biencoder_valid_recall(result, dataset, emb, BIENCODER_RECALL_KS, batch)
    summary = result.summary
    info = {
      "dim": int(emb.shape[1]),
      "biencoder": {
        "tasks": list(result.settings.tasks),
        "seed": int(self.config.seed),
        "settings": _jsonable(section),
        "steps": int(summary["steps"]),
        "steps_per_epoch": int(summary["steps_per_epoch"]),
        "train_examples": dict(summary["train_examples"]),
        "input_len": int(summary["input_len"]),
        "valid_recall": recall,
        "valid_rows": {
          t: int(len(dataset.split(t, "valid")["target_item"])) for t in result.settings.tasks
        },
        "trained_on": "train splits only; valid_recall measured after training",
      },
      "atomic_dataset": {
        "config_hash": atomic_hash,
        "dir": os.path.relpath(self.atomic_dir, self.parent),
      },
      "run_dir": os.path.relpath(run_dir, self.parent),
    }
    log.info(
      "semantic IDs (%s): bi-encoder %d steps, valid recall %s",
      self.kind,
      info["biencoder"]["steps"],
      json.dumps(recall),
    )
    return emb, info

  def check_examples(self, arrays: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]) -> None:
    """Raises DataError unless the semantic dataset's splits (`arrays[task][split]`, as prepare
    builds them) hold the atomic dataset's examples: same targets and query ids, and the same
    search inputs (rec inputs spell the items in another ID scheme)."""
    if self.atomic_dir is None:
      raise RuntimeError("check_examples before the embeddings were built")
    for task, splits in arrays.items():
      for split, ours in splits.items():
        path = os.path.join(self.atomic_dir, task, f"{split}.npz")
        with np.load(path) as z:
          theirs = {k: z[k] for k in z.files}
        keys = ["target_item", "query_id"]
        if task == "search":  # compared as rows, however each side stores them
          keys.append("encoder_input_ids")
          theirs = dataset_lib.with_stored_rows(theirs, None, 0, source=path)
          ours = dataset_lib.with_stored_rows(dict(ours), None, 0)
        for k in keys:
          if not np.array_equal(np.asarray(theirs[k]), np.asarray(ours[k])):
            raise DataError(
              path,
              0,
              k,
              f"the atomic dataset the bi-encoder trained on differs "
              f"from this semantic dataset in {task}/{split}; expected the same "
              "examples (prepare's splits do not depend on the ID scheme)",
            )


# ---------------------------------------------------------------------------------- k-means (JAX)
def _sq_dists(x: jax.Array, c: jax.Array) -> jax.Array:
  """Squared Euclidean distances x [N, D] to c [K, D] -> [N, K]."""
  # HIGHEST: no TF32/bf16 passes on accelerators, so assignments do not depend on the backend.
  cross = jnp.matmul(x, c.T, precision=jax.lax.Precision.HIGHEST)  # [N, K]
  d = jnp.sum(x * x, 1)[:, None] - 2.0 * cross + jnp.sum(c * c, 1)[None, :]
  return jnp.maximum(d, 0.0)


@functools.partial(jax.jit, static_argnames=("k",))
def kmeans_plus_plus(x: jax.Array, key: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """k-means++ seeding (Arthur & Vassilvitskii 2007): x [N, D] -> (centroids [k, D], rows [k]).

  The first centroid is a uniform row; each next one a row drawn with probability proportional to
  its squared distance to the nearest centroid chosen so far.
  """
  n, d = x.shape
  key, sub = jax.random.split(key)
  first = jax.random.randint(sub, (), 0, n)
  rows = jnp.zeros((k,), jnp.int32).at[0].set(first)
  cent = jnp.zeros((k, d), x.dtype).at[0].set(x[first])
  d2 = jnp.sum((x - x[first]) ** 2, 1)  # [N] distance to the nearest chosen centroid

  def body(i, carry):
    cent, rows, d2, key = carry
    key, sub = jax.random.split(key)
    # log(0) = -inf: chosen rows (and exact duplicates) are never drawn again while others remain;
    # if every row coincides with a centroid, draw uniformly.
    logits = jnp.where(jnp.sum(d2) > 0, jnp.log(d2), jnp.zeros_like(d2))
    r = jax.random.categorical(sub, logits).astype(jnp.int32)
    cent = cent.at[i].set(x[r])
    rows = rows.at[i].set(r)
    d2 = jnp.minimum(d2, jnp.sum((x - x[r]) ** 2, 1))
    return cent, rows, d2, key

  cent, rows, _, _ = jax.lax.fori_loop(1, k, body, (cent, rows, d2, key))
  return cent, rows


def balanced_assignment(dists: jax.Array) -> jax.Array:
  """Capacity-constrained assignment: dists [N, K] -> cluster [N] with sizes floor/ceil(N/K).

  Greedy: points whose nearest cluster beats their second nearest by the widest margin choose
  first (they lose most by being moved); each takes its nearest cluster with room left. Every
  cluster may hold ceil(N/K) until N mod K of them do, then the rest stop at floor(N/K), so the
  sizes are exactly N mod K clusters of ceil(N/K) and the others floor(N/K).
  """
  n, k = dists.shape
  lo, extra = n // k, n % k
  srt = jnp.sort(dists, axis=1)
  margin = (srt[:, 1] - srt[:, 0]) if k > 1 else jnp.zeros((n,), dists.dtype)
  order = jnp.argsort(-margin, stable=True)  # [N]

  def body(i, carry):
    assign, sizes, n_big = carry
    p = order[i]
    cap = jnp.where(n_big >= extra, lo, lo + 1)
    j = jnp.argmin(jnp.where(sizes < cap, dists[p], jnp.inf)).astype(jnp.int32)
    sizes = sizes.at[j].add(1)
    n_big = n_big + (sizes[j] == lo + 1).astype(jnp.int32)
    return assign.at[p].set(j), sizes, n_big

  init = (jnp.zeros((n,), jnp.int32), jnp.zeros((k,), jnp.int32), jnp.int32(0))
  assign, _, _ = jax.lax.fori_loop(0, n, body, init)
  return assign


def _assign(x, cent, balanced: bool):
  dists = _sq_dists(x, cent)  # [N, K]
  return balanced_assignment(dists) if balanced else jnp.argmin(dists, 1).astype(jnp.int32)


def _update(x, assign, cent):
  """Means of the clusters; an empty cluster is re-seeded with a far-off point."""
  k = cent.shape[0]
  # One-hot matmul rather than a scatter-add: float scatters are not deterministic on GPU.
  onehot = jax.nn.one_hot(assign, k, dtype=x.dtype)  # [N, K]
  sums = jnp.matmul(onehot.T, x, precision=jax.lax.Precision.HIGHEST)  # [K, D]
  counts = jnp.sum(onehot, 0)  # [K]
  means = sums / jnp.maximum(counts, 1.0)[:, None]
  empty = counts == 0
  # Re-seed empty clusters with the points farthest from their centroid (largest error first),
  # so no code stays dead; a fixed rule keeps the run deterministic.
  err = jnp.sum((x - cent[assign]) ** 2, 1)  # [N]
  far = jnp.argsort(-err, stable=True)  # [N]
  rank = jnp.cumsum(empty) - 1  # [K] index of each empty cluster among the empty ones
  reseed = x[far[jnp.clip(rank, 0, x.shape[0] - 1)]]  # [K, D]
  return jnp.where(empty[:, None], reseed, means)


# Above this many [N, K] distance entries (64 MB of float32), plain k-means works on row blocks:
# the one-piece [N, K] distances and one-hot matrices would be 10 GB each at 10M items x 256 codes.
# Up to it (65,536 items at 256 codes per level; every test) the one-piece path runs unchanged, so
# those codes stay bit for bit what they were. Above it centroid sums are added block by block,
# a different float order: codes equal the one-piece path's except for near-ties. Balanced
# assignment keeps the one-piece path (its greedy pass is sequential over all N anyway).
CHUNK_ENTRIES = 1 << 24


def _row_block(n: int, k: int) -> int:
  """Rows per block of the blocked Lloyd step; n = one block (the one-piece path)."""
  return n if n * k <= CHUNK_ENTRIES else max(1, CHUNK_ENTRIES // k)


def _assign_sums_blocked(x, cent, rows: int):
  """Nearest centroid of every row, and the per-cluster sums and counts, in blocks of `rows`.

  One pass over x per Lloyd step. The last block is clamped to end at row N (dynamic_slice would
  clamp it anyway); rows it shares with the previous block get their (identical) assignment
  written twice but are counted once.
  """
  n, d = x.shape
  k = cent.shape[0]

  def body(i, carry):
    assign, sums, counts = carry
    start = i * rows
    lo = jnp.minimum(start, n - rows)
    xb = jax.lax.dynamic_slice_in_dim(x, lo, rows)  # [rows, D]
    a = jnp.argmin(_sq_dists(xb, cent), 1).astype(jnp.int32)
    fresh = (lo + jnp.arange(rows)) >= start  # [rows] not counted by an earlier block
    # One-hot matmul, as `_update`: no float scatter-add (not deterministic on GPU).
    onehot = jax.nn.one_hot(a, k, dtype=x.dtype) * fresh[:, None].astype(x.dtype)
    sums = sums + jnp.matmul(onehot.T, xb, precision=jax.lax.Precision.HIGHEST)
    counts = counts + jnp.sum(onehot, 0)
    return jax.lax.dynamic_update_slice_in_dim(assign, a, lo, 0), sums, counts

  init = (jnp.zeros((n,), jnp.int32), jnp.zeros((k, d), x.dtype), jnp.zeros((k,), x.dtype))
  return jax.lax.fori_loop(0, -(-n // rows), body, init)


def _update_blocked(x, cent, rows: int):
  """`_update(x, _assign(x, cent, False), cent)` without [N, K] intermediates."""
  assign, sums, counts = _assign_sums_blocked(x, cent, rows)
  means = sums / jnp.maximum(counts, 1.0)[:, None]
  empty = counts == 0

  def reseed(means):
    # `_update`'s rule (farthest points first); the [N] sort runs only when a cluster emptied.
    err = jnp.sum((x - cent[assign]) ** 2, 1)  # [N]
    far = jnp.argsort(-err, stable=True)
    rank = jnp.cumsum(empty) - 1
    return jnp.where(empty[:, None], x[far[jnp.clip(rank, 0, x.shape[0] - 1)]], means)

  return jax.lax.cond(jnp.any(empty), reseed, lambda m: m, means)


@functools.partial(jax.jit, static_argnames=("k", "iters", "balanced"))
def kmeans(
  x: jax.Array, key: jax.Array, *, k: int, iters: int, balanced: bool = False
) -> tuple[jax.Array, jax.Array]:
  """k-means++ then `iters` Lloyd steps: x [N, D] -> (centroids [k, D], assignment [N])."""
  cent, _ = kmeans_plus_plus(x, key, k)
  rows = _row_block(int(x.shape[0]), k)
  if rows < x.shape[0] and not balanced:  # large catalogue: row blocks (see CHUNK_ENTRIES)
    cent = jax.lax.fori_loop(0, iters, lambda _, c: _update_blocked(x, c, rows), cent)
    return cent, _nearest(x, cent)

  def step(_, cent):
    return _update(x, _assign(x, cent, balanced), cent)

  cent = jax.lax.fori_loop(0, iters, step, cent)
  return cent, _assign(x, cent, balanced)


# data.semantic.codebook_size = 0 ("auto"): the codebook follows the catalogue (`codebook_size_for`).
AUTO_CODEBOOK_MAX = 256


def codebook_size_for(n: int, levels: int, codebook_size: int) -> int:
  """Codes per level for `n` items: `codebook_size` itself when set (> 0, or < 0 for the error),
  else ("auto", 0) the smallest power of two K with K ** levels >= n, within [2, min(256, n)]:
  just enough code tuples for one per item before disambiguation (78 items, 3 levels: 8)."""
  if int(codebook_size) != 0:
    return int(codebook_size)
  k = 2
  while k < AUTO_CODEBOOK_MAX and k ** max(1, int(levels)) < int(n):
    k *= 2
  return max(2, min(k, int(n)))  # fewer than 2 items: check_quantiser refuses with its message


def check_quantiser(n: int, *, levels: int, codebook_size: int, iters: int) -> None:
  """DataError naming the knob unless RQ-KMeans can quantise `n` items with these settings."""
  if int(levels) < 1 or int(codebook_size) < 2 or int(iters) < 0:
    raise DataError(
      _SRC,
      0,
      "data.semantic",
      f"need levels >= 1, codebook_size >= 2 and "
      f"kmeans_iters >= 0, got {levels}, {codebook_size}, {iters}",
    )
  if int(codebook_size) > n:
    raise DataError(
      _SRC,
      0,
      "data.semantic.codebook_size",
      f"{codebook_size} codes per level but only {n} items: every code needs an "
      "item; lower data.semantic.codebook_size",
    )


# Jitted so that XLA fuses the gather into the subtraction: op by op, `cent[assign]` is one more
# [N, D] array (5 GB at 10M x 128). Same arithmetic per element, so the same values.
@jax.jit
def _subtract_codes(resid, cent, assign):
  return resid - cent[assign]


@jax.jit
def _mean_sq_norm_fused(resid):
  return jnp.mean(jnp.sum(resid * resid, 1))


def _mean_sq_norm(resid, codebook_size: int):
  # Fusing changes the float reduction order: only large catalogues (the blocked path) take it,
  # so smaller ones keep their recorded residual_mse bit for bit.
  if _row_block(int(resid.shape[0]), codebook_size) < resid.shape[0]:
    return _mean_sq_norm_fused(resid)
  return jnp.mean(jnp.sum(resid * resid, 1))


@dataclasses.dataclass
class RQResult:
  codes: np.ndarray  # int32 [N, L]
  codebooks: np.ndarray  # float32 [L, K, D]
  residual_mse: list  # L + 1 values: mean squared norm of the residual before level 0, after each
  fit_items: int  # rows each level's k-means fitted on (N, or the `fit_rows` sample)


def _nearest(x, cent) -> jax.Array:
  """Nearest centroid of every row of x (row blocks for large x, as the blocked Lloyd step)."""
  n, k = int(x.shape[0]), int(cent.shape[0])
  rows = _row_block(n, k)
  if rows < n:
    return _assign_sums_blocked(x, cent, rows)[0]
  return _assign(x, cent, False)


def fit_rows(n: int, codebook_size: int, max_points_per_code: int, seed: int) -> np.ndarray | None:
  """The rows each level's k-means fits on: all (None) up to max_points_per_code x codebook_size
  items, else that many rows drawn without replacement (a function of the seed), sorted.

  FAISS trains its k-means the same way (`max_points_per_centroid`, 256 by default): centroids
  from 256 points each are as good as from all of them, and the fit then costs the same for 100k
  or 10M items; every item is still assigned to its nearest code."""
  m = int(max_points_per_code) * int(codebook_size)
  if int(max_points_per_code) <= 0 or n <= m:
    return None
  rng = np.random.default_rng([int(seed), 0x5EED])
  return np.sort(rng.choice(n, size=m, replace=False)).astype(np.int32)


def rq_kmeans(
  x,
  *,
  levels: int,
  codebook_size: int,
  seed: int = 0,
  iters: int = 50,
  balanced: bool = False,
  max_points_per_code: int = 0,
) -> RQResult:
  """Residual-quantisation k-means: level l clusters what levels < l left unexplained.

  max_points_per_code > 0: each level fits its centroids on at most that many rows per code
  (`fit_rows`; the same rows at every level), then assigns every row to its nearest centroid.
  Balanced assignment needs every row in the fit, so it ignores the cap."""
  if not (isinstance(x, jax.Array) and x.dtype == jnp.float32):
    # A float32 jax.Array is used as is: no second [N, D] copy through the host.
    x = jnp.asarray(np.asarray(x, np.float32))
  if x.ndim != 2:
    raise ValueError(f"rq_kmeans: expected embeddings [N, D], got shape {tuple(x.shape)}")
  n = int(x.shape[0])
  check_quantiser(n, levels=levels, codebook_size=codebook_size, iters=iters)
  key = jax.random.PRNGKey(int(seed))
  resid = x
  del x  # at 10M x 128 each [N, D] copy is 5 GB: keep only the current residual alive
  codes, books = [], []
  sample = None if balanced else fit_rows(n, codebook_size, max_points_per_code, seed)
  mse = [float(_mean_sq_norm(resid, codebook_size))]
  for level in range(int(levels)):
    cent, assign = kmeans(
      resid if sample is None else resid[sample],
      jax.random.fold_in(key, level),
      k=int(codebook_size),
      iters=int(iters),
      balanced=bool(balanced),
    )
    if sample is not None:
      assign = _nearest(resid, cent)
    resid = _subtract_codes(resid, cent, assign)  # [N, D]
    codes.append(np.asarray(assign, np.int32))
    books.append(np.asarray(cent, np.float32))
    mse.append(float(_mean_sq_norm(resid, codebook_size)))
  fit_items = n if sample is None else len(sample)
  return RQResult(np.stack(codes, 1), np.stack(books, 0), mse, fit_items)


# ---------------------------------------------------------------------------------- IDs
def disambiguate(codes: np.ndarray) -> np.ndarray:
  """Final code per item [N]: its rank, in catalogue order, among items with its code tuple."""
  codes = np.asarray(codes)
  if len(codes) == 0:
    return np.zeros(0, np.int32)
  _, inv = np.unique(codes, axis=0, return_inverse=True)
  inv = inv.reshape(-1)
  order = np.argsort(inv, kind="stable")  # grouped by tuple, catalogue order within a group
  sorted_inv = inv[order]
  start = np.searchsorted(sorted_inv, sorted_inv, side="left")
  rank = np.empty(len(codes), np.int64)
  rank[order] = np.arange(len(codes)) - start
  return rank.astype(np.int32)


def _entropy_bits(counts: np.ndarray) -> float:
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log2(p)).sum()) if len(p) else 0.0


def diagnostics(codes: np.ndarray, codebook_size: int) -> dict:
  """What the field checks of a semantic ID assignment (codes int [N, L], before disambiguation).

  codebook_use: per level, share of the K codes used by at least one item;
  code_entropy_bits: per level, entropy of the code distribution over items (max log2 K);
  collision_rate: share of items whose full code tuple another item has too;
  largest_collision_group: most items sharing one tuple (1 = all tuples unique).
  """
  codes = np.asarray(codes)
  n, levels = codes.shape
  k = int(codebook_size)
  counts = [np.bincount(codes[:, l], minlength=k) for l in range(levels)]
  _, group = np.unique(codes, axis=0, return_counts=True)
  shared = group[group > 1]
  return {
    "codes_used": [int((c > 0).sum()) for c in counts],
    "codebook_use": [float((c > 0).sum() / k) for c in counts],
    "code_entropy_bits": [_entropy_bits(c) for c in counts],
    "code_entropy_normalized": [_entropy_bits(c) / math.log2(k) for c in counts],
    "distinct_tuples": int(len(group)),
    "colliding_tuples": int(len(shared)),
    "collision_rate": float(shared.sum() / n) if n else 0.0,
    "largest_collision_group": int(group.max()) if n else 0,
    "tuple_entropy_bits": _entropy_bits(group),
  }


def build_semantic_ids(
  sc,
  titles: Sequence[str],
  metadata: Sequence[Mapping[str, Any]],
  *,
  item_ids: Sequence[str] | None = None,
  embedder: Callable[[Sequence[str]], tuple[np.ndarray, dict]] | None = None,
) -> SemanticIds:
  """Embeds, quantises and disambiguates the catalogue's items (`sc` = config.data.semantic;
  `item_ids` and `embedder`: bi-encoder kinds, see `item_embeddings`)."""
  k = codebook_size_for(len(titles), int(sc.levels), int(sc.codebook_size))
  auto = int(sc.codebook_size) == 0
  if auto:
    log.info(
      "semantic IDs: data.semantic.codebook_size=0 (auto): %d codes per level for %d items and "
      "%d levels",
      k,
      len(titles),
      int(sc.levels),
    )
  # Before the embeddings: a bi-encoder trains for them.
  check_quantiser(len(titles), levels=int(sc.levels), codebook_size=k, iters=int(sc.kmeans_iters))
  reserve = int(sc.get("reserve_disambiguation", 0))
  if reserve < 0:
    raise DataError(
      _SRC, 0, "data.semantic.reserve_disambiguation", f"expected >= 0, got {reserve}"
    )
  emb, emb_info, content = _embed_items(sc, titles, metadata, item_ids=item_ids, embedder=embedder)
  if bool(sc.get("normalize", True)):
    emb = normalize_rows(emb)
  levels = int(sc.levels)
  cap = int(sc.get("max_points_per_code", 0))
  rq = rq_kmeans(
    emb,
    levels=levels,
    codebook_size=k,
    seed=int(sc.seed),
    iters=int(sc.kmeans_iters),
    balanced=bool(sc.balanced),
    max_points_per_code=cap,
  )
  diag = diagnostics(rq.codes, k)
  dis = disambiguate(rq.codes)
  num_dis = int(dis.max()) + 1 if len(dis) and dis.max() > 0 else 0
  if reserve:
    # Spare disambiguation codes for cold start (`ColdStartModel`): a later item whose tuple is
    # taken gets the next free one without a new token; every item then carries the column.
    num_dis = max(num_dis, 1) + reserve
  codes = np.concatenate([rq.codes, dis[:, None]], 1) if num_dis else rq.codes
  info = {
    "embedding": str(sc.embedding),
    "embedding_info": emb_info,
    "normalize": bool(sc.get("normalize", True)),
    "levels": levels,
    "codebook_size": k,
    # Only for auto: a dataset with a set codebook_size keeps its manifest as before.
    **({"codebook_size_auto": True} if auto else {}),
    "balanced": bool(sc.balanced),
    "kmeans_iters": int(sc.kmeans_iters),
    "max_points_per_code": cap,
    "fit_items": rq.fit_items,
    "seed": int(sc.seed),
    "residual_mse": rq.residual_mse,
    **diag,
    "num_disambiguation": num_dis,
    "reserve_disambiguation": reserve,
    "tokens_per_item": int(codes.shape[1]),
    "num_id_tokens": levels * k + num_dis,
  }
  return SemanticIds(
    codes.astype(np.int32), levels, k, num_dis, info, codebooks=rq.codebooks, content=content
  )


def normalize_rows(emb: np.ndarray) -> np.ndarray:
  """Rows scaled to unit L2 norm (an all-zero row stays 0): `data.semantic.normalize`."""
  # Cosine geometry: k-means on unit vectors clusters by direction, not by text length.
  return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------------- cold start
# What prepare stores beside catalog.json (semantic datasets only) so that an item added after
# training gets an ID from its embedding with the trained tokens (`gr_jax.data.cold_start`).
COLD_START_FILE = "semantic_ids.npz"
COLD_START_FORMAT = 1
# Embedding kinds a new item can be embedded with after prepare: content (its text through the
# stored TF-IDF + SVD map) and file (the user brings its vector, as for the catalogue).
COLD_START_EMBEDDINGS = ("content", "file")


def cold_start_arrays(ids: SemanticIds, sc) -> dict[str, np.ndarray]:
  """The arrays of COLD_START_FILE: the codebooks float32 [levels, K, D], the embedding kind and
  normalisation, and for content embeddings the fitted map (`ContentEmbedder.arrays`)."""
  if ids.codebooks is None:
    raise ValueError("cold_start_arrays: these SemanticIds carry no codebooks")
  # Scalars as 1-element arrays: prepare.save_npz writes contiguous (at least 1-d) arrays.
  out = {
    "format": np.asarray([COLD_START_FORMAT], np.int32),
    "embedding": np.asarray([str(sc.embedding)], dtype=str),
    "normalize": np.asarray([bool(sc.get("normalize", True))]),
    "codebooks": np.asarray(ids.codebooks, np.float32),
  }
  if ids.content is not None:
    out.update(ids.content.arrays())
  return out


@dataclasses.dataclass
class ColdStartModel:
  """A prepared semantic dataset's quantiser, read back from COLD_START_FILE (`load`)."""

  embedding: str
  normalize: bool
  codebooks: np.ndarray  # float32 [levels, K, D]
  content: ContentEmbedder | None
  source: str = "<cold start>"

  @classmethod
  def load(cls, path: str) -> "ColdStartModel":
    if not os.path.isfile(path):
      raise DataError(
        path,
        0,
        COLD_START_FILE,
        "missing: the dataset was prepared before cold start stored its quantiser "
        "(or is not a semantic-ID dataset); prepare it again into a new directory",
      )
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
    for key in ("format", "embedding", "normalize", "codebooks"):
      if key not in arrays:
        raise DataError(path, 0, key, f"missing from {COLD_START_FILE}")
    scalar = {k: arrays[k].reshape(-1)[0].item() for k in ("format", "embedding", "normalize")}
    if scalar["format"] != COLD_START_FORMAT:
      raise DataError(
        path, 0, "format", f"expected format {COLD_START_FORMAT}, got {scalar['format']}"
      )
    books = arrays["codebooks"]
    if books.ndim != 3 or books.dtype != np.float32:
      raise DataError(path, 0, "codebooks", f"expected float32 [levels, K, D], got {books.shape}")
    kind = str(scalar["embedding"])
    content = None
    if kind == "content":
      keys = ("content_vocabulary", "content_idf", "content_components")
      for key in keys:
        if key not in arrays:
          raise DataError(path, 0, key, f"missing from {COLD_START_FILE} of content embeddings")
      content = ContentEmbedder(*(arrays[k] for k in keys))
      if content.components.shape[0] != books.shape[2]:
        raise DataError(
          path,
          0,
          "content_components",
          f"{content.components.shape[0]} SVD dimensions, codebooks of {books.shape[2]}",
        )
    return cls(kind, bool(scalar["normalize"]), books, content, source=path)

  @property
  def dim(self) -> int:
    return int(self.codebooks.shape[2])

  def check_supported(self) -> None:
    """DataError unless new items can be embedded as the catalogue's were."""
    if self.embedding in BIENCODER_TASKS:
      raise DataError(
        self.source,
        0,
        "embedding",
        f"{self.embedding!r}: these semantic IDs quantise the item vectors of a bi-encoder "
        "trained on the catalogue's items, and an item added after training has no trained "
        f"vector; cold start supports the embedding sources {COLD_START_EMBEDDINGS} "
        "(prepare with data.semantic.embedding='content', or 'file' with your own encoder)",
      )
    if self.embedding not in COLD_START_EMBEDDINGS:
      raise DataError(
        self.source,
        0,
        "embedding",
        f"expected one of {COLD_START_EMBEDDINGS}, got {self.embedding!r}",
      )

  def embed_text(
    self, titles: Sequence[str], metadata: Sequence[Mapping[str, Any]]
  ) -> tuple[np.ndarray, np.ndarray]:
    """Content: float32 [n, d] vectors of new items' text (`item_text`, as prepare embeds the
    catalogue), before normalisation, and how many known words each text holds."""
    self.check_supported()
    if self.content is None:
      raise DataError(
        self.source,
        0,
        "embedding",
        f"{self.embedding!r} embeddings come from the user: give the new items' vectors",
      )
    return self.content.embed([item_text(t, m) for t, m in zip(titles, metadata)])

  def codes(
    self,
    embeddings: np.ndarray,
    existing_codes: np.ndarray,
    *,
    num_disambiguation: int,
    new_ids: Sequence[str] | None = None,
    existing_ids: Sequence[str] | None = None,
    source: str = "<new items>",
    lines: Sequence[int] | None = None,
  ) -> np.ndarray:
    """`cold_start_codes` with this dataset's codebooks and normalisation."""
    self.check_supported()
    return cold_start_codes(
      self.codebooks,
      embeddings,
      existing_codes,
      num_disambiguation=num_disambiguation,
      normalize=self.normalize,
      new_ids=new_ids,
      existing_ids=existing_ids,
      source=source,
      lines=lines,
    )


def quantise(codebooks: np.ndarray, x) -> tuple[np.ndarray, np.ndarray]:
  """Residual nearest-centroid codes of x [M, D] under fitted codebooks [L, K, D]: int32 [M, L],
  and the squared norm of each row's final residual float32 [M].

  rq_kmeans's assignment step, with its arithmetic (`_nearest`, `_subtract_codes`): level l takes
  the centroid nearest to what levels < l left. Re-quantising the rows rq_kmeans fitted gives
  their codes (up to float ties), unless the fit was balanced: balanced codes are not nearest."""
  books = np.asarray(codebooks, np.float32)
  x = np.asarray(x, np.float32)
  if books.ndim != 3 or x.ndim != 2 or x.shape[1] != books.shape[2]:
    raise ValueError(
      f"quantise: expected codebooks [L, K, D] and x [M, D], got {books.shape} and {x.shape}"
    )
  resid = jnp.asarray(x)
  codes = []
  for level in range(books.shape[0]):
    cent = jnp.asarray(books[level])  # [K, D]
    assign = _nearest(resid, cent) if len(x) else jnp.zeros((0,), jnp.int32)
    resid = _subtract_codes(resid, cent, assign)  # [M, D]
    codes.append(np.asarray(assign, np.int32))
  err = np.asarray(jnp.sum(resid * resid, 1), np.float32)
  return np.stack(codes, 1).reshape(len(x), books.shape[0]), err


def cold_start_codes(
  codebooks: np.ndarray,
  embeddings,
  existing_codes: np.ndarray,
  *,
  num_disambiguation: int,
  normalize: bool,
  new_ids: Sequence[str] | None = None,
  existing_ids: Sequence[str] | None = None,
  source: str = "<new items>",
  lines: Sequence[int] | None = None,
) -> np.ndarray:
  """Semantic IDs of items added after training, with the trained tokens only: int32 [M, T].

  codebooks float32 [L, K, D] (the prepared dataset's, COLD_START_FILE); embeddings [M, D] of the
  new items in the catalogue's embedding space (normalised here when `normalize`, as prepare
  does); existing_codes int [N, T] the catalogue's codes, T = L (+1 with num_disambiguation > 0).

  Each new item gets `quantise`'s code per level, then, when the catalogue has a disambiguation
  code, the smallest one not yet used by its tuple (among existing items and the new items before
  it, in order). An existing item's ID never changes. The model's vocabulary has
  num_disambiguation such codes: a tuple that every one of them names already (or, without the
  column, any taken tuple) leaves no distinct ID, a DataError naming the item (its `lines` entry
  of `source`) and what to do.
  """
  books = np.asarray(codebooks, np.float32)
  levels, nd = int(books.shape[0]), int(num_disambiguation)
  existing = np.asarray(existing_codes, np.int64)
  width = levels + (1 if nd else 0)
  if existing.ndim != 2 or existing.shape[1] != width:
    raise ValueError(
      f"cold_start_codes: expected existing codes [N, {width}] for {levels} levels and "
      f"num_disambiguation={nd}, got {list(existing.shape)}"
    )
  emb = np.asarray(embeddings, np.float32)
  if emb.ndim != 2 or emb.shape[1] != books.shape[2]:
    raise DataError(
      source,
      0,
      "embedding",
      f"expected new item vectors [num_new_items, {books.shape[2]}] (the catalogue's "
      f"embedding dimension), got {list(emb.shape)}",
    )
  if not np.isfinite(emb).all():
    row = int(np.flatnonzero(~np.isfinite(emb).all(1))[0])
    raise DataError(source, _line(lines, row), "embedding", "expected finite numbers")
  if normalize:
    emb = normalize_rows(emb)
  codes, _ = quantise(books, emb)  # [M, L]
  m = len(codes)
  if m == 0:
    return np.zeros((0, width), np.int32)
  # Only the tuples new items land on matter: group existing and new rows by tuple once.
  _, inv = np.unique(
    np.concatenate([existing[:, :levels], codes.astype(np.int64)]), axis=0, return_inverse=True
  )
  inv = inv.reshape(-1)
  inv_old, inv_new = inv[: len(existing)], inv[len(existing) :]
  mine = np.flatnonzero(np.isin(inv_old, inv_new))
  used: dict[int, set] = {}
  holders: dict[int, list] = {}
  old_dis = existing[:, levels] if nd else np.zeros(len(existing), np.int64)
  for i in mine.tolist():
    used.setdefault(int(inv_old[i]), set()).add(int(old_dis[i]))
    holders.setdefault(int(inv_old[i]), []).append(i)
  dis = np.zeros(m, np.int64)
  for j in range(m):
    group = int(inv_new[j])
    taken = used.setdefault(group, set())
    d = 0
    while d in taken:
      d += 1
    if d >= max(nd, 1):
      held = holders.get(group, [])
      names = [
        repr(existing_ids[i]) if existing_ids is not None else f"index {i}" for i in held[:3]
      ]
      earlier = [
        f"new {new_ids[k]!r}" if new_ids is not None else f"new row {k}"
        for k in np.flatnonzero(inv_new[:j] == group)[:3].tolist()
      ]
      who = ", ".join(names + earlier) + (" ..." if len(held) > 3 else "")
      item = repr(new_ids[j]) if new_ids is not None else f"row {j}"
      fix = (
        f"all {nd} disambiguation codes of the model's vocabulary are taken"
        if nd
        else "this catalogue has no disambiguation code (no tuple was shared at prepare)"
      )
      raise DataError(
        source,
        _line(lines, j),
        "item",
        f"new item {item}: its code tuple {tuple(int(c) for c in codes[j])} is already used by "
        f"{len(taken)} item(s) ({who}) and {fix}, so it cannot get a distinct ID with the "
        "trained tokens; prepare the dataset with data.semantic.reserve_disambiguation > 0 "
        "(spare codes per tuple; the model must then be trained on that dataset), or add "
        "this item in a retraining",
      )
    taken.add(d)
    dis[j] = d
  out = np.concatenate([codes, dis[:, None]], 1) if nd else codes
  return out.astype(np.int32)


def _line(lines: Sequence[int] | None, row: int) -> int:
  return int(lines[row]) if lines is not None else 0
