"""BM25 search baseline over item texts, with `bm25s` as the index.

Documents. Item i's document is its catalogue title, the string values of its metadata (genres,
tags, artist... with `include_metadata`) and, with `expand_with_train_queries` (on by default),
the text of every *training* search query that has i as a target (document expansion from the
query log; a query repeated in training adds its words again, so frequent queries weigh more).
Valid and test queries never enter a document. Numeric metadata (the simulator's latent cluster
labels) is not text and is left out: it would hand BM25 the generator's hidden state.

Queries. The processed dataset keeps token ids only, so a query's text is its
`encoder_input_ids` decoded by the dataset tokenizer (pad and EOS dropped).

Tokenisation. Documents and queries share one analyser, `tokenize`: lower-cased `\\w+` runs (no
stemming, no stop words: simulated words are arbitrary strings, and real titles are short).

Scoring. bm25s with `method` (default "lucene"; Kamphuis et al. 2020):

  score(q, d) = sum over query tokens t (repeats count) of idf(t) * tf / (tf + k1 L(d))
  L(d)        = 1 - b + b |d| / avgdl                  (tf: count of t in d, |d|: tokens of d)
  idf(t)      = ln(1 + (N - df + 0.5) / (df + 0.5))

(Lucene drops the constant (k1 + 1) numerator factor; it does not change the ranking.)
Query tokens absent from every document contribute nothing. Every item is scored for every query
(full ranking); the top K are kept in the metrics' tie order (`common.top_k`).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Mapping, Sequence

import numpy as np

from gr_jax.baselines import common
from gr_jax.evaluation import runs as runs_lib

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+", re.UNICODE)
METHODS = ("lucene", "robertson", "atire")


def tokenize(text: str) -> list[str]:
  """The analyser shared by documents and queries: lower-cased word runs."""
  return _WORD.findall(str(text).lower())


def metadata_text(meta: Mapping[str, Any]) -> str:
  """String values (and lists of strings) of an item's metadata, in key order; numbers skipped."""
  parts = []
  for key in sorted(meta):
    v = meta[key]
    if isinstance(v, str):
      parts.append(v)
    elif isinstance(v, (list, tuple)):
      parts.extend(x for x in v if isinstance(x, str))
  return " ".join(parts)


def decode_queries(tokenizer, encoder_input_ids: np.ndarray) -> list[str]:
  """Query text of each row `[N, L]`: the tokens decoded (pad / EOS dropped by the tokenizer)."""
  return [tokenizer.decode(row.tolist()) for row in np.asarray(encoder_input_ids)]


def item_documents(
  dataset, *, include_metadata: bool = True, expand_with_train_queries: bool = True
) -> list[str]:
  """One document string per item index (see module doc)."""
  cat = dataset.catalog
  docs = [[cat.titles[i]] for i in range(cat.num_items)]
  if include_metadata:
    for i in range(cat.num_items):
      docs[i].append(metadata_text(cat.metadata[i]))
  if expand_with_train_queries:
    arrays = dataset.split("search", "train")
    # Decode each distinct query once: rows of one query share their encoder input.
    qids = np.asarray(arrays["query_id"])
    _, first, inverse = np.unique(qids, return_index=True, return_inverse=True)
    texts = decode_queries(dataset.tokenizer, arrays["encoder_input_ids"][first])
    for row, t in enumerate(np.asarray(arrays["target_item"]).tolist()):
      docs[t].append(texts[int(inverse[row])])
  return [" ".join(p for p in parts if p) for parts in docs]


class BM25Index:
  """bm25s over pre-tokenised documents with a deterministic (sorted) vocabulary."""

  def __init__(
    self,
    documents: Sequence[Sequence[str]],
    *,
    k1: float = 1.2,
    b: float = 0.75,
    method: str = "lucene",
  ):
    import bm25s  # pylint: disable=g-import-not-at-top

    if method not in METHODS:
      raise ValueError(f"baselines.bm25.method must be one of {METHODS}, got {method!r}")
    self.num_docs = len(documents)
    # Our own sorted vocabulary: bm25s builds its own from a Python set, whose order follows the
    # string hash seed; ids do not change scores, but sorted ids keep runs byte-identical.
    self.vocab = {t: i for i, t in enumerate(sorted({t for d in documents for t in d}))}
    self._bm25 = None
    if self.vocab:
      self._bm25 = bm25s.BM25(k1=k1, b=b, method=method)
      ids = [[self.vocab[t] for t in d] for d in documents]
      # create_empty_token=False: an extra "" entry would sit outside the score matrix.
      self._bm25.index((ids, dict(self.vocab)), create_empty_token=False, show_progress=False)

  def scores(self, query_tokens: Sequence[str]) -> np.ndarray:
    """float32 `[num_docs]`: BM25 of every document for one tokenised query."""
    ids = [self.vocab[t] for t in query_tokens if t in self.vocab]
    if not ids:  # no query word in any document: every item scores 0 (bm25s needs a token)
      return np.zeros([self.num_docs], np.float32)
    return np.asarray(self._bm25.get_scores(ids), np.float32)

  def score_matrix(self, queries: Sequence[Sequence[str]]) -> np.ndarray:
    """float32 `[Q, num_docs]`."""
    out = np.zeros([len(queries), self.num_docs], np.float32)
    for r, q in enumerate(queries):
      out[r] = self.scores(q)
    return out


def build_index(dataset, cfg) -> BM25Index:
  """The BM25 index of a dataset's items under config section `baselines.bm25`."""
  docs = item_documents(
    dataset,
    include_metadata=bool(cfg.get("include_metadata", True)),
    expand_with_train_queries=bool(cfg.expand_with_train_queries),
  )
  return BM25Index(
    [tokenize(d) for d in docs],
    k1=float(cfg.k1),
    b=float(cfg.b),
    method=str(cfg.get("method", "lucene")),
  )


def run_bm25(config, dataset, out_dir: str, split: str = "test") -> dict:
  """Scores every item for every `search/<split>` query, writes the run directory `out_dir`.

  Returns the metrics.json object.
  """
  cfg = config.baselines.bm25
  ks = tuple(int(k) for k in config.eval.ks)
  depth = max(ks)
  t0 = time.perf_counter()
  index = build_index(dataset, cfg)
  t_index = time.perf_counter() - t0
  arrays = dataset.split("search", split)
  qids, first = runs_lib.split_queries(arrays, f"search/{split}.npz")
  texts = decode_queries(dataset.tokenizer, arrays["encoder_input_ids"][first])
  item_ids = dataset.catalog.item_ids
  ties = common.tie_order(item_ids)
  block = max(1, int(cfg.get("batch_size", 256)))
  run: dict[str, dict[str, float]] = {}
  t1 = time.perf_counter()
  for s in range(0, len(qids), block):
    scores = index.score_matrix([tokenize(t) for t in texts[s : s + block]])  # [b, n]
    idx = common.top_k(scores, depth, ties)  # [b, K]
    run.update(common.run_from_top_k(qids[s : s + block], idx, scores, item_ids))
  t_query = time.perf_counter() - t1
  common.write_config(out_dir, config, "bm25")
  info = {
    "k1": float(cfg.k1),
    "b": float(cfg.b),
    "method": str(cfg.get("method", "lucene")),
    "expand_with_train_queries": bool(cfg.expand_with_train_queries),
    "vocab_size": len(index.vocab),
    "num_queries": len(qids),
    "index_seconds": round(t_index, 3),
    "queries_per_second": round(len(qids) / max(t_query, 1e-9), 1),
    # The protocol the study runs under (stats pairs runs by it); search is never masked.
    "exclude_seen": common.exclude_seen(config),
  }
  log.info("bm25 %s: %d queries over %d items", split, len(qids), index.num_docs)
  return common.evaluate_and_write(
    out_dir, split, "search", run, arrays, item_ids, ks, "bm25", info
  )


__all__ = [
  "BM25Index",
  "build_index",
  "decode_queries",
  "item_documents",
  "metadata_text",
  "run_bm25",
  "tokenize",
]
