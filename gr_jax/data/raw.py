"""The in-memory form every loader produces before `prepare` turns it into arrays.

Loaders (simulate, movielens, mpd, jsonl, tfds_movielens) differ only in how they read; they all
return a `RawData`, and `gr_jax.data.prepare` does the rest the same way for every source: item
filtering, search/rec splits, tokenisation, catalogue, manifest.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from gr_jax.data.errors import BadRows

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
SPLIT_CODES = ("",) + SPLITS  # a PairColumns' split column: 0 = not assigned by the loader
SPLIT_CODE = {s: k for k, s in enumerate(SPLIT_CODES)}  # split name -> its code


class PairColumns:
  """Search pairs as columns: distinct query texts and item ids, and per pair int32 indices into
  them plus an int8 split code (`SPLIT_CODES`).

  The full MPD has ~66M (playlist name, track) pairs: as Python tuples each copy of them took
  ~5 GB, and prepare made several. Iterating yields the `(query, item, split)` tuples of the
  list form, so code that reads a few pairs need not care which form a loader returned.
  """

  def __init__(self, queries, items, query, item, split=None):
    self.queries = list(queries)
    self.items = list(items)
    self.query = np.asarray(query, np.int32)
    self.item = np.asarray(item, np.int32)
    self.split = np.zeros(len(self.query), np.int8) if split is None else np.asarray(split, np.int8)
    if not len(self.query) == len(self.item) == len(self.split):
      raise ValueError("PairColumns: query, item and split columns differ in length")

  @classmethod
  def from_tuples(cls, pairs) -> PairColumns:
    queries: dict = {}
    items: dict = {}
    q, i, s = [], [], []
    for query, item, split in pairs:
      q.append(queries.setdefault(query, len(queries)))
      i.append(items.setdefault(item, len(items)))
      s.append(SPLIT_CODE[split])
    return cls(list(queries), list(items), q, i, s)

  def __len__(self) -> int:
    return len(self.query)

  def __iter__(self):
    qs, its = self.queries, self.items
    for q, i, s in zip(self.query.tolist(), self.item.tolist(), self.split.tolist()):
      yield qs[q], its[i], SPLIT_CODES[s]

  def __eq__(self, other) -> bool:
    return list(self) == list(other)

  def select(self, mask) -> PairColumns:
    """The pairs where mask (bool [P]) holds; the distinct texts and ids are shared."""
    return PairColumns(
      self.queries, self.items, self.query[mask], self.item[mask], self.split[mask]
    )

  def item_set(self) -> set:
    """The item ids with at least one pair."""
    present = np.zeros(len(self.items), bool)
    present[self.item] = True
    return {self.items[k] for k in np.flatnonzero(present).tolist()}


def pair_columns(pairs) -> PairColumns:
  """Either form of `RawData.search_pairs` as a PairColumns."""
  return pairs if isinstance(pairs, PairColumns) else PairColumns.from_tuples(pairs)


def pair_items(pairs) -> set:
  """The item ids of either form of search pairs."""
  if isinstance(pairs, PairColumns):
    return pairs.item_set()
  return {i for _, i, _ in pairs}


@dataclasses.dataclass
class RawData:
  """Items, search pairs and rec sessions of one dataset, ids as strings.

  items: catalogue order (titles/metadata aligned); items seen only in pairs/sessions are added.
  search_pairs: (query text, item id, split); split "" lets prepare assign it by held-out query.
    A list of tuples, or a `PairColumns` (the same pairs as columns, for sources of millions).
  sessions: (user, item ids oldest first); prepare splits them leave-last-out.
  """

  items: list[str] = dataclasses.field(default_factory=list)
  titles: list[str] = dataclasses.field(default_factory=list)
  metadata: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  search_pairs: list[tuple[str, str, str]] | PairColumns = dataclasses.field(default_factory=list)
  sessions: list[tuple[str, list[str]]] = dataclasses.field(default_factory=list)
  bad_rows: BadRows = dataclasses.field(default_factory=BadRows)
  stats: dict[str, Any] = dataclasses.field(default_factory=dict)  # loader-specific, to manifest
  files: list[str] = dataclasses.field(default_factory=list)  # raw inputs read (sha256 in manifest)


# ---------------------------------------------------------------------- held-out interactions
def heldout_interactions(
  sessions: list[tuple[str, list[str]]],
  search_items: set[str],
  items_in_both: bool,
  min_session_len: int,
) -> set[tuple[str, str]]:
  """The (user, item) pairs that prepare will hold out as rec valid/test targets.

  Mirrors `prepare._filter_items` and `prepare._rec_arrays`: with items_in_both, a session keeps
  only items that also have a search pair; a session left shorter than min_session_len is dropped;
  of the rest, the last item is the test target and the second-to-last the valid target. The item
  filter is why the raw last two items are not enough: a last movie without a tag is filtered out
  and an earlier, tagged one becomes the target.
  """
  out = set()
  for user, items in sessions:
    if not items_in_both:
      if len(items) >= min_session_len:
        out.update(((user, items[-1]), (user, items[-2])))
      continue
    # From the newest item back, only until the session is known to be long enough: the full
    # filtered copy of every session cost ~9 s per round at ML-25M's 25M ratings.
    last, kept = [], 0
    for i in reversed(items):
      if i in search_items:
        kept += 1
        if kept <= 2:
          last.append(i)
        if kept >= min_session_len:
          break
    if kept >= min_session_len:
      out.update((user, i) for i in last)
  return out


def search_pairs_without_heldout(
  build, sessions: list[tuple[str, list[str]]], dc
) -> tuple[list[tuple[str, str, str]] | PairColumns, set, dict[str, int]]:
  """Search pairs built only from the users' rec-training interactions.

  `build(heldout)` returns the loader's search pairs leaving out every contribution of a
  (user, item) in `heldout`. Dropping pairs can remove an item from the search side and so shift a
  session's held-out targets to earlier items (see heldout_interactions); the held-out set therefore
  grows until the targets prepare will hold out are all in it (a fixed point: it only grows, and is
  bounded by the sessions). Items that stopped being targets along the way stay excluded, which
  drops a few extra pairs but never lets a held-out target through. Returns (pairs, held-out set,
  stats: search pairs dropped for this reason, held-out interactions, rounds).
  """
  heldout: set[tuple[str, str]] = set()
  unrestricted = None
  for rounds in range(1, len(sessions) * 2 + 3):
    pairs = build(heldout)
    if unrestricted is None:
      unrestricted = len(pairs)
    targets = heldout_interactions(
      sessions, pair_items(pairs), bool(dc.items_in_both_tasks), int(dc.min_session_len)
    )
    if targets <= heldout:
      break
    heldout |= targets
    log.info("held-out rule, round %d: %d held-out interactions", rounds, len(heldout))
  stats = {
    "search_pairs_dropped_heldout": unrestricted - len(pairs),
    "heldout_interactions": len(heldout),
    "heldout_rounds": rounds,
  }
  return pairs, heldout, stats
