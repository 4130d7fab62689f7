"""ItemCatalog: item ids <-> item indices <-> output tokens, plus titles and metadata.

Items are numbered 0..num_items-1 in catalogue order. With the atomic ID scheme (paper) each item
owns one new token appended after the text vocabulary: token = token_offset + index, where
token_offset is the model's text vocabulary size. Callers never compute tokens themselves; they ask
`item_tokens(index)` / `tokens_to_item(tokens)` and `tokens_per_item`, so a multi-token scheme
(semantic IDs: a few tokens per item drawn from a shared code book) can be added later as another
`id_scheme` without changing them.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence

import numpy as np

from gr_jax.data.errors import DataError

ID_SCHEMES = ("atomic",)


class ItemCatalog:
  """Items of a dataset and the tokens that name them."""

  def __init__(self, item_ids: Sequence[str], *, token_offset: int,
               titles: Sequence[str] | None = None,
               metadata: Sequence[dict[str, Any]] | None = None,
               id_scheme: str = "atomic", source: str = "<catalog>"):
    if id_scheme not in ID_SCHEMES:
      raise DataError(source, 0, "id_scheme", f"expected one of {ID_SCHEMES}, got {id_scheme!r}")
    self.item_ids = [str(i) for i in item_ids]
    self._index = {}
    for n, item in enumerate(self.item_ids):
      if item in self._index:
        raise DataError(source, 0, "item_ids",
                        f"duplicate item id {item!r} (positions {self._index[item]} and {n})")
      self._index[item] = n
    n_items = len(self.item_ids)
    self.titles = [str(t) for t in titles] if titles is not None else [""] * n_items
    self.metadata = [dict(m) for m in metadata] if metadata is not None else [{}] * n_items
    if len(self.titles) != n_items or len(self.metadata) != n_items:
      raise DataError(source, 0, "titles/metadata", f"expected {n_items} entries, got "
                      f"{len(self.titles)} titles and {len(self.metadata)} metadata")
    self.token_offset = int(token_offset)
    self.id_scheme = id_scheme

  # ------------------------------------------------------------------ ids and indices
  @property
  def num_items(self) -> int:
    return len(self.item_ids)

  def __len__(self) -> int:
    return self.num_items

  def __contains__(self, item_id) -> bool:
    return str(item_id) in self._index

  def index(self, item_id) -> int:
    """Index of an item id; KeyError naming the id when unknown."""
    try:
      return self._index[str(item_id)]
    except KeyError:
      raise KeyError(f"unknown item id {item_id!r}") from None

  def indices(self, item_ids: Iterable) -> np.ndarray:
    return np.asarray([self.index(i) for i in item_ids], np.int32)

  def item_id(self, index: int) -> str:
    return self.item_ids[int(index)]

  # ------------------------------------------------------------------ tokens
  @property
  def tokens_per_item(self) -> int:
    """Tokens in one item's ID (1 for atomic IDs); the decoder target adds one EOS."""
    return 1

  @property
  def num_id_tokens(self) -> int:
    """How many tokens the model must add after the text vocabulary (`num_item_tokens`)."""
    return self.num_items

  def item_tokens(self, index) -> np.ndarray:
    """Tokens of item index (or array of indices): int32 `[..., tokens_per_item]`."""
    index = np.asarray(index, np.int64)
    return (index + self.token_offset).astype(np.int32)[..., None]

  def tokens_to_item(self, tokens) -> np.ndarray:
    """Inverse of item_tokens: `[..., tokens_per_item]` -> item index `[...]`, -1 if not an item."""
    tokens = np.asarray(tokens, np.int64)[..., 0]
    index = tokens - self.token_offset
    return np.where((index >= 0) & (index < self.num_items), index, -1).astype(np.int32)

  # ------------------------------------------------------------------ persistence
  def to_dict(self) -> dict:
    return {"id_scheme": self.id_scheme, "token_offset": self.token_offset,
            "num_items": self.num_items, "item_ids": self.item_ids, "titles": self.titles,
            "metadata": self.metadata}

  def save(self, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
      json.dump(self.to_dict(), f, ensure_ascii=False)

  @classmethod
  def load(cls, path: str) -> "ItemCatalog":
    with open(path, encoding="utf-8") as f:
      d = json.load(f)
    for key in ("id_scheme", "token_offset", "item_ids"):
      if key not in d:
        raise DataError(path, 0, key, "missing from the catalogue file")
    cat = cls(d["item_ids"], token_offset=d["token_offset"], titles=d.get("titles"),
              metadata=d.get("metadata"), id_scheme=d["id_scheme"], source=path)
    if d.get("num_items", cat.num_items) != cat.num_items:
      raise DataError(path, 0, "num_items", f"says {d['num_items']} but lists {cat.num_items} ids")
    return cat

  def __repr__(self) -> str:
    return (f"ItemCatalog(num_items={self.num_items}, token_offset={self.token_offset}, "
            f"id_scheme={self.id_scheme!r})")


