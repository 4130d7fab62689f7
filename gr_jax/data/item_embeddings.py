"""Item embeddings for semantic IDs: the float [N, D] vectors RQ-KMeans quantises, rows in catalogue
order (the `item_ids` order of catalog.json). `data.semantic.embedding` picks the source:

  content: TF-IDF of each item's text (its title and the string values of its metadata) reduced by
    truncated SVD (scikit-learn; `fit_content_embedder`, and `ContentEmbedder`, the fitted map as
    plain arrays that cold start re-applies to new items). Item text is catalogue metadata, not
    interactions, so it may inform the IDs of every item without leaking held-out data. Numeric
    metadata (the simulator's latent cluster labels) is not text and is left out, as in BM25.
  file: an .npy float array `[num_items, D]` the user brings (`file_embeddings`: never unpickled;
    complex, bool, string and object arrays, NaN and infinities refused).
  search | rec | joint: the item vectors of the dense bi-encoder (gr_jax/baselines/biencoder.py)
    trained on search, on rec, or on both tasks at once (`BIENCODER_TASKS`), on TRAINING rows only.
    Penha et al. 2025 find the jointly trained one the best trade-off. Training a model is not
    data's job: `python -m gr_jax.embed_items` (gr_jax/baselines/embed_items.py) trains it and
    writes the vectors as an .npy plus its description (`description_path`); prepare reads that
    file as `data.semantic.embedding_file`, like a `file` embedding, through `BiencoderFile`, which
    checks that it was written for this config, catalogue order and these very examples.

The bi-encoder's settings enter the dataset's config hash (`biencoder_fingerprint`, under
`data.semantic.biencoder` of the manifest's config), except the knobs that change no parameter
(`BIENCODER_INERT_KNOBS`), so a changed bi-encoder is another dataset; the file's path does not
(`BiencoderFile` pins its content to those settings): train and evaluate configs need not name it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np

from gr_jax.data import dataset as dataset_lib
from gr_jax.data import prepare
from gr_jax.data.errors import DataError

EMBEDDINGS = ("content", "file", "search", "rec", "joint")
# Bi-encoder embedding kinds -> the `baselines.biencoder.tasks` their bi-encoder trains on.
BIENCODER_TASKS = {"search": "search", "rec": "rec", "joint": "search,rec"}
# Cut-offs of the bi-encoder's validation Recall@K in the manifest: fixed, so that the manifest is
# a function of the hashed data config (eval.ks is a run setting, left out of the hash).
BIENCODER_RECALL_KS = (1, 5, 10, 30)
# baselines.biencoder knobs that change no trained parameter (logging, checkpoint and validation
# periods; a resumed run ends bitwise where an uninterrupted one does): not in the dataset hash.
BIENCODER_INERT_KNOBS = ("log_every_steps", "checkpoint_every_steps", "eval_every_steps")
# The description `gr_jax.embed_items` writes beside the .npy (`description_path`).
BIENCODER_FILE_FORMAT = 1
_SRC = "<config>"


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

  Bi-encoder kinds call `embedder(item_ids)` (a `BiencoderFile`, which `prepare_dataset` makes
  from the whole run config); without one they are refused.
  """
  emb, info, _ = embed_catalogue(sc, titles, metadata, item_ids=item_ids, embedder=embedder)
  return emb, info


def embed_catalogue(
  sc, titles, metadata, *, item_ids=None, embedder=None
) -> tuple[np.ndarray, dict, ContentEmbedder | None]:
  """`item_embeddings`, plus the fitted content map (None for the other kinds): what
  `semantic_ids.build_semantic_ids` quantises and cold start stores."""
  kind = str(sc.embedding)
  if kind in BIENCODER_TASKS:
    if embedder is None or item_ids is None:
      raise DataError(
        _SRC,
        0,
        "data.semantic.embedding",
        f"{kind!r}: bi-encoder embeddings are trained on a prepared dataset's "
        "training splits, with baselines.biencoder; write them with python -m "
        "gr_jax.embed_items, then build the IDs through prepare_dataset(config, out_dir) "
        "with the whole run config, or use 'content' or 'file' here",
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


def normalize_rows(emb: np.ndarray) -> np.ndarray:
  """Rows scaled to unit L2 norm (an all-zero row stays 0): `data.semantic.normalize`."""
  # Cosine geometry: k-means on unit vectors clusters by direction, not by text length.
  return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


# ------------------------------------------------------------------------------ bi-encoder files
def jsonable(x):
  """A ConfigDict / dict / tuple tree as plain JSON values (sorted keys, lists)."""
  if hasattr(x, "to_dict"):
    x = x.to_dict()
  if isinstance(x, Mapping):
    return {str(k): jsonable(v) for k, v in sorted(x.items())}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  return x


def json_digest(obj) -> str:
  """sha256 of a JSON value (sorted keys)."""
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def biencoder_config(config) -> ml_collections.ConfigDict:
  """The config the bi-encoder of a search | rec | joint embedding trains with.

  `config`: a whole run config (`.data` and `.baselines`). Its `baselines.biencoder` section with
  `tasks` set by `data.semantic.embedding`, `seed = data.semantic.seed` and
  `eval.ks = BIENCODER_RECALL_KS`; nothing else of the run config reaches the bi-encoder. Raises
  DataError naming the setting when it cannot be built (the section's model and loss choices are
  the bi-encoder's to check: `gr_jax.baselines.embed_items.check_config`).
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
  section as trained (tasks of the kind) without `BIENCODER_INERT_KNOBS` (`biencoder_config`'s
  checks run first)."""
  section = jsonable(biencoder_config(config).baselines.biencoder)
  return {k: v for k, v in section.items() if k not in BIENCODER_INERT_KNOBS}


def is_biencoder_kind(config) -> bool:
  """Whether `config` (a run config or its data section) asks for semantic IDs of bi-encoder
  embeddings."""
  dc = prepare.data_config_of(config)
  semantic = dc.get("semantic") or {}
  return (
    dc.get("id_scheme", "atomic") == "semantic"
    and str(semantic.get("embedding", "")) in BIENCODER_TASKS
  )


def atomic_data_config(config) -> ml_collections.ConfigDict:
  """The data section of `config` with atomic IDs: the dataset a bi-encoder of semantic IDs trains
  on (catalogue order and splits do not depend on the ID scheme in prepare)."""
  data = ml_collections.ConfigDict(prepare.data_config_of(config).to_dict())
  with data.ignore_type():
    data.id_scheme = "atomic"
  return data


def embedding_key(config) -> str:
  """sha256 of what decides a bi-encoder's item vectors: the atomic dataset's config hash, the
  embedding kind (its tasks), the bi-encoder's settings as hashed (`biencoder_fingerprint`) and
  data.semantic.seed. Quantiser knobs (levels, codebook size, ...) are not in it: one embeddings
  file serves every quantisation of the same vectors."""
  return json_digest(
    {
      "atomic_config_hash": prepare.config_hash(atomic_data_config(config)),
      "embedding": str(config.data.semantic.embedding),
      "biencoder": biencoder_fingerprint(config),
      "seed": int(config.data.semantic.seed),
    }
  )


def item_ids_digest(item_ids: Sequence[str]) -> str:
  return json_digest([str(i) for i in item_ids])


def examples_digests(arrays: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, str]:
  """{"<task>/<split>": sha256} of the examples of `arrays[task][split]` (as prepare builds them,
  or as a ProcessedDataset reads them): targets and query ids, and the search inputs as rows
  (rec inputs spell the items in the dataset's ID scheme: left out). The atomic and the semantic
  dataset of one data config have the same ones."""
  out = {}
  for task in sorted(arrays):
    for split in sorted(arrays[task]):
      a = arrays[task][split]
      columns = [("target_item", np.int64), ("query_id", np.int64)]
      if task == "search":  # compared as rows, however each side stores them
        a = dataset_lib.with_stored_rows(dict(a), None, 0)
        columns.append(("encoder_input_ids", np.int32))
      h = hashlib.sha256()
      for key, dtype in columns:
        x = np.ascontiguousarray(np.asarray(a[key]), dtype=dtype)
        h.update(f"{key} {x.shape}\n".encode())
        h.update(x.tobytes())
      out[f"{task}/{split}"] = h.hexdigest()
  return out


def description_path(npy_path: str) -> str:
  """The description of a bi-encoder embeddings file: FILE.npy -> FILE.json."""
  root, ext = os.path.splitext(str(npy_path))
  return (root if ext == ".npy" else str(npy_path)) + ".json"


def save_biencoder_embeddings(path: str, emb: np.ndarray, description: dict) -> str:
  """Writes float32 `emb` [N, dim] to `path` (.npy) and `description` (plus the array's sha256)
  to `description_path(path)`, each through a temporary file and a rename. The description is
  written last and names the array's sha256: a run killed in between leaves a pair that
  `BiencoderFile` refuses, never one that passes for complete."""
  if not str(path).endswith(".npy"):
    raise DataError(str(path), 0, "out", "expected a file name ending in .npy")
  emb = np.ascontiguousarray(emb, np.float32)
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:  # a file object: numpy appends no second .npy
    np.save(f, emb, allow_pickle=False)
  os.replace(tmp, path)
  with open(path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  desc = {
    **description,
    "format": BIENCODER_FILE_FORMAT,
    "num_items": int(emb.shape[0]),
    "dim": int(emb.shape[1]),
    "sha256": digest,
  }
  out = description_path(path)
  with open(f"{out}.tmp-{os.getpid()}", "w") as f:
    json.dump(desc, f, indent=1, sort_keys=True)
  os.replace(f"{out}.tmp-{os.getpid()}", out)
  return path


def _embed_items_command(config) -> str:
  """The command that writes the embeddings file of `config`, for error messages."""
  return (
    "python -m gr_jax.embed_items --config <this config> --workdir DIR --out FILE.npy (with "
    f"--config.data.semantic.embedding={config.data.semantic.embedding}), then prepare with "
    "--config.data.semantic.embedding_file=FILE.npy"
  )


class BiencoderFile:
  """The item embeddings of data.semantic.embedding = search | rec | joint, read from the .npy
  that `gr_jax.embed_items` wrote (`data.semantic.embedding_file`) and its description: prepare's
  `embedder`. `BiencoderFile(config)` refuses a missing file, and one written for another kind,
  bi-encoder, seed or data config (`embedding_key`), before any work; `self(item_ids)` ->
  (float32 [N, dim] in catalogue order, the manifest's embedding_info) checks the array and its
  row order; `check_examples(arrays)` that the semantic dataset holds the examples the
  bi-encoder trained on."""

  def __init__(self, config):
    sc = config.data.semantic
    self.kind = str(sc.embedding)
    self.path = str(sc.get("embedding_file", "") or "")
    field = "data.semantic.embedding_file"
    if not self.path:
      raise DataError(
        _SRC,
        0,
        field,
        f"embedding={self.kind!r} quantises the item vectors of a trained bi-encoder, and "
        f"prepare trains no model: run {_embed_items_command(config)}",
      )
    if not os.path.isfile(self.path):
      raise DataError(
        self.path, 0, field, f"file does not exist; write it with {_embed_items_command(config)}"
      )
    self.description_file = description_path(self.path)
    try:
      with open(self.description_file) as f:
        self.description = json.load(f)
    except FileNotFoundError:
      raise DataError(
        self.description_file,
        0,
        field,
        f"missing: the description gr_jax.embed_items writes beside {os.path.basename(self.path)} "
        "(bi-encoder embeddings come from it; for vectors of your own use "
        "data.semantic.embedding='file')",
      ) from None
    except (OSError, ValueError) as e:
      raise DataError(self.description_file, 0, field, f"unreadable description ({e})") from None
    d = self.description
    if d.get("format") != BIENCODER_FILE_FORMAT:
      raise DataError(
        self.description_file,
        0,
        "format",
        f"expected format {BIENCODER_FILE_FORMAT}, got {d.get('format')!r}",
      )
    if d.get("embedding") != self.kind:
      raise DataError(
        self.description_file,
        0,
        "embedding",
        f"these are {d.get('embedding')!r} bi-encoder embeddings, the config asks for "
        f"{self.kind!r}; run {_embed_items_command(config)}",
      )
    if d.get("embedding_key") != embedding_key(config):
      raise DataError(
        self.description_file,
        0,
        "embedding_key",
        "written for another data config, bi-encoder (baselines.biencoder) or "
        f"data.semantic.seed than this one; run {_embed_items_command(config)}",
      )

  def __call__(self, item_ids: Sequence[str]) -> tuple[np.ndarray, dict]:
    emb, info = file_embeddings(self.path, len(item_ids))
    d = self.description
    if info["sha256"] != d.get("sha256"):
      raise DataError(
        self.path,
        0,
        "data.semantic.embedding_file",
        f"not the array its description {os.path.basename(self.description_file)} was "
        "written with (sha256 differs); run gr_jax.embed_items again",
      )
    if item_ids_digest(item_ids) != d.get("item_ids_sha256"):
      raise DataError(
        self.path,
        0,
        "item_ids",
        "rows in another catalogue order than this dataset's: the atomic dataset the "
        "bi-encoder trained on has other items or another order; expected the same items in "
        "the same order",
      )
    return emb, {**d["embedding_info"], "file": info["file"], "sha256": info["sha256"]}

  def check_examples(self, arrays: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
    """DataError unless the semantic dataset's splits (`arrays[task][split]`, as prepare builds
    them) hold the examples of the atomic dataset the bi-encoder trained on."""
    want = self.description.get("examples_sha256") or {}
    for name, digest in examples_digests(arrays).items():
      if want.get(name) != digest:
        raise DataError(
          self.description_file,
          0,
          "examples_sha256",
          f"the atomic dataset the bi-encoder trained on differs from this semantic dataset "
          f"in {name}; expected the same examples (prepare's splits do not depend on the ID "
          "scheme)",
        )


def biencoder_file_changed(manifest: dict, config) -> str | None:
  """One line when the embeddings file `config` names (bi-encoder kinds) differs from the one a
  prepared dataset's `manifest` quantised, else None (also when either side names none: a config
  without the path reads the dataset as it is)."""
  if not is_biencoder_kind(config):
    return None
  path = str(config.data.semantic.get("embedding_file", "") or "")
  info = (manifest.get("semantic_ids") or {}).get("embedding_info") or {}
  if not path or not info.get("sha256") or not os.path.isfile(path):
    return None
  with open(path, "rb") as f:
    now = hashlib.sha256(f.read()).hexdigest()
  if now == info["sha256"]:
    return None
  return (
    f"{os.path.abspath(path)} is not the embeddings file the dataset was prepared from (sha256 "
    f"{str(info['sha256'])[:12]} -> {now[:12]})"
  )
