"""The in-memory form every loader produces before `prepare` turns it into arrays.

Loaders (simulate, movielens, mpd, jsonl, tfds_movielens) differ only in how they read; they all
return a `RawData`, and `gr_jax.data.prepare` does the rest the same way for every source: item
filtering, search/rec splits, tokenisation, catalogue, manifest.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gr_jax.data.errors import BadRows

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class RawData:
  """Items, search pairs and rec sessions of one dataset, ids as strings.

  items: catalogue order (titles/metadata aligned); items seen only in pairs/sessions are added.
  search_pairs: (query text, item id, split); split "" lets prepare assign it by held-out query.
  sessions: (user, item ids oldest first); prepare splits them leave-last-out.
  """
  items: list[str] = dataclasses.field(default_factory=list)
  titles: list[str] = dataclasses.field(default_factory=list)
  metadata: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  search_pairs: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
  sessions: list[tuple[str, list[str]]] = dataclasses.field(default_factory=list)
  bad_rows: BadRows = dataclasses.field(default_factory=BadRows)
  stats: dict[str, Any] = dataclasses.field(default_factory=dict)  # loader-specific, to manifest
  files: list[str] = dataclasses.field(default_factory=list)  # raw inputs read (sha256 in manifest)
