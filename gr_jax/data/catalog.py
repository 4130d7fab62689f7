"""ItemCatalog: item ids <-> item indices <-> output tokens, plus titles and metadata.

Items are numbered 0..num_items-1 in catalogue order. With the atomic ID scheme (paper) each item
owns one new token appended after the text vocabulary: token = token_offset + index, where
token_offset is the model's text vocabulary size. Callers never compute tokens themselves; they ask
`item_tokens(index)` / `tokens_to_item(tokens)` and `tokens_per_item`, and read rec encoder rows
back as item-index histories with `histories(rows)`.

With the semantic scheme (`gr_jax.data.semantic_ids`) an item's ID is its code tuple: `levels`
codes in [0, codebook_size) and, when some items share a tuple, a final disambiguation code in
[0, num_disambiguation). Level l, code c is token `token_offset + l * codebook_size + c`; the
disambiguation code d is token `token_offset + levels * codebook_size + d`. Every item's ID has the
same length (`tokens_per_item`) and names exactly one item. `with_items` appends items with given
code rows and the same ID vocabulary (cold start, `gr_jax.data.cold_start`).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import numpy as np

from gr_jax.data.errors import DataError

ID_SCHEMES = ("atomic", "semantic")


class ItemCatalog:
  """Items of a dataset and the tokens that name them."""

  def __init__(
    self,
    item_ids: Sequence[str],
    *,
    token_offset: int,
    titles: Sequence[str] | None = None,
    metadata: Sequence[dict[str, Any]] | None = None,
    id_scheme: str = "atomic",
    codes=None,
    levels: int = 0,
    codebook_size: int = 0,
    num_disambiguation: int = 0,
    source: str = "<catalog>",
  ):
    """codes int [num_items, tokens_per_item], levels, codebook_size, num_disambiguation: the
    semantic scheme's code tuples (see the module doc); unused with atomic IDs."""
    if id_scheme not in ID_SCHEMES:
      raise DataError(source, 0, "id_scheme", f"expected one of {ID_SCHEMES}, got {id_scheme!r}")
    self.item_ids = [str(i) for i in item_ids]
    self._index = {}
    for n, item in enumerate(self.item_ids):
      if item in self._index:
        raise DataError(
          source,
          0,
          "item_ids",
          f"duplicate item id {item!r} (positions {self._index[item]} and {n})",
        )
      self._index[item] = n
    n_items = len(self.item_ids)
    self.titles = [str(t) for t in titles] if titles is not None else [""] * n_items
    self.metadata = [dict(m) for m in metadata] if metadata is not None else [{}] * n_items
    if len(self.titles) != n_items or len(self.metadata) != n_items:
      raise DataError(
        source,
        0,
        "titles/metadata",
        f"expected {n_items} entries, got "
        f"{len(self.titles)} titles and {len(self.metadata)} metadata",
      )
    self.token_offset = int(token_offset)
    self.id_scheme = id_scheme
    self.codes = None
    self.levels = self.codebook_size = self.num_disambiguation = 0
    # Semantic: the catalogue's code-tuple keys and their sort order, built on first lookup.
    self._tuple_index = self._tuple_order = None
    if id_scheme == "semantic":
      self._set_codes(codes, levels, codebook_size, num_disambiguation, source)
    elif codes is not None:
      raise DataError(source, 0, "codes", f"id_scheme {id_scheme!r} takes no code tuples")

  def _set_codes(self, codes, levels, codebook_size, num_disambiguation, source):
    """Checks and stores the semantic scheme's code tuples."""
    levels, k, nd = int(levels), int(codebook_size), int(num_disambiguation)
    if codes is None:
      raise DataError(source, 0, "semantic.codes", "the semantic id_scheme needs code tuples")
    codes = np.asarray(codes, np.int64)
    want = levels + (1 if nd else 0)
    if levels < 1 or k < 1 or nd < 0 or codes.shape != (self.num_items, want):
      raise DataError(
        source,
        0,
        "semantic.codes",
        f"expected levels >= 1, codebook_size >= 1 and codes of shape "
        f"[{self.num_items}, {want}], got levels={levels}, codebook_size={k}, "
        f"num_disambiguation={nd}, codes {list(codes.shape)}",
      )
    bad = (codes < 0) | np.concatenate(
      [codes[:, :levels] >= k, codes[:, levels:] >= max(nd, 1)], axis=1
    )
    if bad.any():
      i, j = (int(x[0]) for x in np.nonzero(bad))
      raise DataError(
        source,
        0,
        "semantic.codes",
        f"item {i}, position {j}: code {codes[i, j]} "
        f"outside its codebook (size {k if j < levels else nd})",
      )
    if len(np.unique(codes, axis=0)) != self.num_items:
      raise DataError(
        source,
        0,
        "semantic.codes",
        "two items share a code tuple (every semantic ID must name exactly one item)",
      )
    self.codes = codes.astype(np.int32)
    self.levels, self.codebook_size, self.num_disambiguation = levels, k, nd

  def with_items(
    self,
    item_ids: Sequence[str],
    *,
    titles: Sequence[str],
    metadata: Sequence[dict[str, Any]],
    codes,
    source: str = "<new items>",
  ) -> "ItemCatalog":
    """A new semantic catalogue: this one's items (same indices, same codes) then `item_ids`
    with code rows `codes` int [M, tokens_per_item] (cold start, `gr_jax.data.cold_start`).

    The ID vocabulary stays this catalogue's (levels, codebook_size, num_disambiguation), so a
    model trained on it decodes the new IDs with the tokens it has; the constructor's checks
    hold (codes inside their codebooks, every tuple one item) and a duplicate or already listed
    item id is a DataError naming `source`."""
    if self.codes is None:
      raise DataError(
        source,
        0,
        "id_scheme",
        f"a {self.id_scheme!r} catalogue gives every item its own trained token; a new item "
        "has none (cold start needs the semantic id_scheme)",
      )
    codes = np.asarray(codes, np.int64).reshape(len(item_ids), self.tokens_per_item)
    return ItemCatalog(
      self.item_ids + [str(i) for i in item_ids],
      token_offset=self.token_offset,
      titles=self.titles + [str(t) for t in titles],
      metadata=self.metadata + [dict(m) for m in metadata],
      id_scheme="semantic",
      codes=np.concatenate([self.codes.astype(np.int64), codes]),
      levels=self.levels,
      codebook_size=self.codebook_size,
      num_disambiguation=self.num_disambiguation,
      source=source,
    )

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
    """int32 indices of item ids (str ids looked up directly: ML-25M's 25M rated ids take ~2 s
    this way, ~14 s through `index`); KeyError naming the first unknown id."""
    if not isinstance(item_ids, (list, tuple, np.ndarray)):
      item_ids = list(item_ids)  # read twice when some id is not a str key
    try:
      return np.fromiter(map(self._index.__getitem__, item_ids), np.int32)
    except KeyError as e:
      if isinstance(e.args[0], str):
        raise KeyError(f"unknown item id {e.args[0]!r}") from None
    except TypeError:  # an unhashable id: reported by index below
      pass
    return np.asarray([self.index(i) for i in item_ids], np.int32)

  def item_id(self, index: int) -> str:
    return self.item_ids[int(index)]

  # ------------------------------------------------------------------ tokens
  @property
  def tokens_per_item(self) -> int:
    """Tokens in one item's ID (1 for atomic IDs); the decoder target adds one EOS."""
    return 1 if self.codes is None else int(self.codes.shape[1])

  @property
  def num_id_tokens(self) -> int:
    """How many tokens the model must add after the text vocabulary (`num_item_tokens`)."""
    if self.codes is None:
      return self.num_items
    return self.levels * self.codebook_size + self.num_disambiguation

  def _position_offsets(self) -> np.ndarray:
    """Semantic: first token of each ID position's codebook, int64 [tokens_per_item]."""
    base = self.token_offset + self.codebook_size * np.arange(self.levels, dtype=np.int64)
    if self.num_disambiguation:
      base = np.append(base, self.token_offset + self.levels * self.codebook_size)
    return base

  def item_tokens(self, index) -> np.ndarray:
    """Tokens of item index (or array of indices): int32 `[..., tokens_per_item]`."""
    index = np.asarray(index, np.int64)
    if self.codes is None:
      return (index + self.token_offset).astype(np.int32)[..., None]
    return (self.codes[index] + self._position_offsets()).astype(np.int32)

  def tokens_to_item(self, tokens) -> np.ndarray:
    """Inverse of item_tokens: `[..., tokens_per_item]` -> item index `[...]`, -1 if not an item."""
    tokens = np.asarray(tokens, np.int64)
    if self.codes is None:
      index = tokens[..., 0] - self.token_offset
      return np.where((index >= 0) & (index < self.num_items), index, -1).astype(np.int32)
    if tokens.shape[-1] != self.tokens_per_item:
      return np.full(tokens.shape[:-1], -1, np.int32)
    sizes = self._position_sizes()
    if float(np.prod(sizes.astype(np.float64))) >= 2.0**62:  # keys would overflow int64
      return self._tokens_to_item_dict(tokens)
    codes = tokens - self._position_offsets()  # [..., T]
    ok = ((codes >= 0) & (codes < sizes)).all(-1)  # [...]
    if self._tuple_index is None:
      self._tuple_index = self._code_keys(self.codes.astype(np.int64))  # catalogue keys [N]
      self._tuple_order = np.argsort(self._tuple_index, kind="stable")
    cat_keys, order = self._tuple_index, self._tuple_order
    keys = self._code_keys(np.where(ok[..., None], codes, 0))  # [...]
    pos = np.minimum(np.searchsorted(cat_keys, keys, sorter=order), len(order) - 1)
    found = ok & (cat_keys[order[pos]] == keys)
    return np.where(found, order[pos], -1).astype(np.int32)

  def _position_sizes(self) -> np.ndarray:
    """Semantic: codebook size of each ID position, int64 [tokens_per_item]."""
    extra = [self.num_disambiguation] if self.num_disambiguation else []
    return np.asarray([self.codebook_size] * self.levels + extra, np.int64)

  def _code_keys(self, codes: np.ndarray) -> np.ndarray:
    """Code tuples `[..., T]` (each code inside its codebook) -> one int64 key each `[...]`: the
    tuple as a mixed-radix number, so that looking IDs up is one vectorised sorted search (a dict
    lookup per item is slow on the tens of millions of history items of a large rec split)."""
    sizes = self._position_sizes()
    radix = np.cumprod(np.append(sizes[1:], 1)[::-1])[::-1]  # [T]: product of the later sizes
    return (np.asarray(codes, np.int64) * radix).sum(-1)

  def _tokens_to_item_dict(self, tokens: np.ndarray) -> np.ndarray:
    """tokens_to_item through a dict of token tuples: for codebooks too large for int64 keys."""
    if not isinstance(self._tuple_index, dict):
      all_tokens = self.item_tokens(np.arange(self.num_items))  # [N, T]
      self._tuple_index = {tuple(row): i for i, row in enumerate(all_tokens.tolist())}
    flat = tokens.reshape(-1, tokens.shape[-1])
    out = [self._tuple_index.get(tuple(row), -1) for row in flat.tolist()]
    return np.asarray(out, np.int32).reshape(tokens.shape[:-1])

  def histories(self, encoder_input_ids) -> list[np.ndarray]:
    """Rec encoder rows `[N, Le]` -> each row's history as item indices (int64, oldest first).

    The one reader of rec histories, for either ID scheme. A rec row spells its history items' ID
    tokens (`item_tokens`: one atomic token, or tokens_per_item semantic code tokens), then EOS and
    padding; every token from token_offset up is an ID token (EOS, padding and any text prefix lie
    below it). Each consecutive group of tokens_per_item ID tokens is one item. A row whose ID tokens
    do not spell catalogue items (a split from another catalogue or ID scheme) raises DataError.
    """
    if getattr(encoder_input_ids, "catalog", None) is self:
      # Rows this catalogue builds from stored sessions (dataset.HistoryRows): read the stored
      # item indices, without spelling and parsing 25M rows of tokens at ML-25M's size.
      return encoder_input_ids.item_histories()
    ids = np.asarray(encoder_input_ids, np.int64)
    if ids.ndim != 2:
      raise ValueError(f"expected rec encoder rows [N, Le], got shape {list(ids.shape)}")
    if not len(ids):
      return []
    tpi = self.tokens_per_item
    is_id = ids >= self.token_offset  # [N, Le]
    counts = is_id.sum(1)  # [N] ID tokens per row
    bad = np.flatnonzero(counts % tpi)
    if len(bad):
      r = int(bad[0])
      raise DataError(
        "<rec encoder_input_ids>",
        0,
        "encoder_input_ids",
        f"row {r} holds {counts[r]} ID tokens, not whole {self.id_scheme} item IDs of {tpi} "
        "tokens (rows from another catalogue or ID scheme?)",
      )
    items = self.tokens_to_item(ids[is_id].reshape(-1, tpi)).astype(np.int64)  # [M], row-major
    if (items < 0).any():
      first = int(np.flatnonzero(items < 0)[0])
      r = int(np.searchsorted(np.cumsum(counts // tpi), first, side="right"))
      raise DataError(
        "<rec encoder_input_ids>",
        0,
        "encoder_input_ids",
        f"row {r} holds ID tokens that name no item of this {self.num_items}-item "
        f"{self.id_scheme} catalogue (rows from another catalogue?)",
      )
    return np.split(items, np.cumsum(counts // tpi)[:-1])

  # ------------------------------------------------------------------ persistence
  def to_dict(self) -> dict:
    d = {
      "id_scheme": self.id_scheme,
      "token_offset": self.token_offset,
      "num_items": self.num_items,
      "item_ids": self.item_ids,
      "titles": self.titles,
      "metadata": self.metadata,
    }
    if self.codes is not None:  # atomic catalogues keep their exact former layout
      d["semantic"] = {
        "levels": self.levels,
        "codebook_size": self.codebook_size,
        "num_disambiguation": self.num_disambiguation,
        "codes": self.codes.tolist(),
      }
    return d

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
    sem = d.get("semantic") or {}
    if d["id_scheme"] == "semantic":
      for key in ("levels", "codebook_size", "num_disambiguation", "codes"):
        if key not in sem:
          raise DataError(path, 0, f"semantic.{key}", "missing from the catalogue file")
    cat = cls(
      d["item_ids"],
      token_offset=d["token_offset"],
      titles=d.get("titles"),
      metadata=d.get("metadata"),
      id_scheme=d["id_scheme"],
      codes=sem.get("codes"),
      levels=sem.get("levels", 0),
      codebook_size=sem.get("codebook_size", 0),
      num_disambiguation=sem.get("num_disambiguation", 0),
      source=path,
    )
    if d.get("num_items", cat.num_items) != cat.num_items:
      raise DataError(path, 0, "num_items", f"says {d['num_items']} but lists {cat.num_items} ids")
    return cat

  def __repr__(self) -> str:
    return (
      f"ItemCatalog(num_items={self.num_items}, token_offset={self.token_offset}, "
      f"id_scheme={self.id_scheme!r}, tokens_per_item={self.tokens_per_item})"
    )
