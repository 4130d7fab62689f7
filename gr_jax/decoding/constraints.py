"""Output constraints for beam search, evaluated on device (no Python callback per step).

A constraint is a pytree (its arrays are traced jit arguments, its ints are static) with
  init_state(batch, num_beams) -> pytree whose leaves are [B, N, ...] (reordered with the beams),
  allowed(state, t, vocab) -> bool, broadcastable to [B, N, vocab]: tokens allowed at step t,
  advance(state, tokens [B, N], t) -> state after the beams took `tokens` at step t,
  check_vocab(vocab, eos_id) -> raises when the constraint does not fit the model.
Disallowed tokens get -inf after the diversity penalty, like HF's PrefixConstrainedLogitsProcessor.

Per-query item exclusion (`eval.exclude_seen`): `constraint.excluding(mask)` with a bool
`[B, num_items]` mask (`exclusion_mask` of each query's history items) returns a copy whose
`allowed` also forbids, for query b, every item i with mask[b, i]: atomic IDs at the item step;
semantic IDs at the token that completes the item's code (a leaf of the trie), or at its EOS when
a longer code continues through it. The batch of the search must then be the mask's B queries.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np


def exclusion_mask(item_lists, num_items: int) -> np.ndarray:
  """bool `[len(item_lists), num_items]`: row q is True at the item indices of item_lists[q] (each
  query's items to exclude, e.g. its history items; empty lists and repeats are fine)."""
  mask = np.zeros([len(item_lists), int(num_items)], bool)
  for q, items in enumerate(item_lists):
    idx = np.asarray(items, np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= num_items):
      raise ValueError(
        f"exclusion_mask: query {q} names item index {int(idx.min() if idx.min() < 0 else idx.max())}"
        f" outside [0, {num_items})"
      )
    mask[q, idx] = True
  return mask


def _checked_excluded(excluded, num_items: int, name: str):
  ex = jnp.asarray(excluded, bool)
  if ex.ndim != 2 or ex.shape[1] != num_items:
    raise ValueError(
      f"{name}.excluding: expected a bool mask [batch, num_items={num_items}], got shape "
      f"{tuple(ex.shape)}"
    )
  return ex


@jax.tree_util.register_pytree_node_class
class AtomicItemConstraint:
  """Atomic item IDs: step 0 only item tokens [token_offset, token_offset + num_items), then EOS.

  `excluded` (None or bool `[B, num_items]`, see `excluding`): items query b may not start with.
  """

  def __init__(self, token_offset: int, num_items: int, eos_id: int, excluded=None):
    if num_items < 1 or token_offset < 0:
      raise ValueError(
        f"AtomicItemConstraint: need num_items >= 1 and token_offset >= 0, got "
        f"num_items={num_items}, token_offset={token_offset}"
      )
    if token_offset <= eos_id < token_offset + num_items:
      raise ValueError(
        f"AtomicItemConstraint: eos_id {eos_id} lies inside the item tokens "
        f"[{token_offset}, {token_offset + num_items})"
      )
    self.token_offset, self.num_items, self.eos_id = int(token_offset), int(num_items), int(eos_id)
    self.excluded = excluded

  @classmethod
  def from_catalog(cls, catalog, eos_id: int = 1) -> "AtomicItemConstraint":
    return cls(catalog.token_offset, catalog.num_items, eos_id)

  def excluding(self, excluded) -> "AtomicItemConstraint":
    """A copy that forbids, per query b, the items where excluded[b] (bool [B, num_items])."""
    ex = _checked_excluded(excluded, self.num_items, "AtomicItemConstraint")
    return AtomicItemConstraint(self.token_offset, self.num_items, self.eos_id, ex)

  def tree_flatten(self):
    return (self.excluded,), (self.token_offset, self.num_items, self.eos_id)

  @classmethod
  def tree_unflatten(cls, aux, children):
    return cls(*aux, excluded=children[0])

  def check_vocab(self, vocab: int, eos_id: int):
    if self.token_offset + self.num_items > vocab:
      raise ValueError(
        f"AtomicItemConstraint: item tokens end at {self.token_offset + self.num_items}"
        f" but the model vocabulary has {vocab} tokens"
      )
    if eos_id != self.eos_id:
      raise ValueError(f"AtomicItemConstraint: eos_id {self.eos_id} != model eos_token_id {eos_id}")

  def init_state(self, batch: int, num_beams: int):
    del batch, num_beams
    return None

  def allowed(self, state, t, vocab: int):
    del state
    tok = jnp.arange(vocab)
    items = (tok >= self.token_offset) & (tok < self.token_offset + self.num_items)
    out = jnp.where(t == 0, items, tok == self.eos_id)[None, None, :]  # [1, 1, V]
    if self.excluded is None:
      return out
    idx = jnp.clip(tok - self.token_offset, 0, self.num_items - 1)
    seen = self.excluded[:, idx] & items  # [B, V]
    return out & ~(seen[:, None, :] & (t == 0))  # [B, 1, V]

  def advance(self, state, tokens, t):
    del tokens, t
    return state

  def to_items(self, seq: np.ndarray) -> int | None:
    """One generated sequence (pad after EOS) -> item index, or None when it is not an item."""
    if len(seq) < 2 or seq[1] != self.eos_id:
      return None
    idx = int(seq[0]) - self.token_offset
    return idx if 0 <= idx < self.num_items else None


@jax.tree_util.register_pytree_node_class
class PrefixTrieConstraint:
  """Multi-token item IDs: generated tokens must spell an item's token sequence, then EOS.

  The trie lives on device as arrays: nodes numbered from 0 (root); for node u its children are
  edge_tok[child_start[u] : child_start[u] + child_count[u]] (sorted) with child nodes edge_child;
  terminal[u] says a complete item ends at u (EOS allowed); item_of_node[u] = that item's index.
  Per step: allowed tokens of each beam's node are scattered into a [B, N, V] mask (padded to the
  largest non-root fan-out; the root's mask is precomputed), and a beam's node advances by a
  batched binary search over its children. `excluded` (None or bool `[B, num_items]`, see
  `excluding`): query b may not complete those items (their last token, or EOS after a code that
  other codes continue).
  """

  def __init__(
    self,
    arrays: dict,
    *,
    eos_id: int,
    max_fanout: int,
    depth: int,
    vocab_bound: int,
    num_items: int,
    excluded=None,
  ):
    self.arrays = arrays
    self.eos_id, self.max_fanout, self.depth = int(eos_id), int(max_fanout), int(depth)
    self.vocab_bound, self.num_items = int(vocab_bound), int(num_items)
    self.excluded = excluded
    # Host copy for mapping sequences back to items.
    self._host = None

  def excluding(self, excluded) -> "PrefixTrieConstraint":
    """A copy that forbids, per query b, the items where excluded[b] (bool [B, num_items])."""
    ex = _checked_excluded(excluded, self.num_items, "PrefixTrieConstraint")
    out = PrefixTrieConstraint(
      self.arrays,
      eos_id=self.eos_id,
      max_fanout=self.max_fanout,
      depth=self.depth,
      vocab_bound=self.vocab_bound,
      num_items=self.num_items,
      excluded=ex,
    )
    out._host = self._host
    return out

  def tree_flatten(self):
    keys = sorted(self.arrays)
    return tuple(self.arrays[k] for k in keys) + (self.excluded,), (
      tuple(keys),
      self.eos_id,
      self.max_fanout,
      self.depth,
      self.vocab_bound,
      self.num_items,
    )

  @classmethod
  def tree_unflatten(cls, aux, children):
    keys, eos_id, max_fanout, depth, vocab_bound, num_items = aux
    return cls(
      dict(zip(keys, children[:-1])),
      eos_id=eos_id,
      max_fanout=max_fanout,
      depth=depth,
      vocab_bound=vocab_bound,
      num_items=num_items,
      excluded=children[-1],
    )

  @classmethod
  def from_catalog(cls, catalog, eos_id: int = 1) -> "PrefixTrieConstraint":
    """The trie of every catalogue item's ID tokens (`catalog.item_tokens`), item i = index i.

    Built once per catalogue object and EOS id: the evaluator asks for it for every split and
    task, and a large catalogue's trie takes seconds to build.
    """
    cache = catalog.__dict__.setdefault("_prefix_trie_cache", {})
    if eos_id not in cache:
      tokens = catalog.item_tokens(np.arange(catalog.num_items))  # [num_items, tokens_per_item]
      cache[eos_id] = cls.from_sequences(tokens, eos_id, source=f"catalogue {catalog!r}")
    return cache[eos_id]

  @classmethod
  def from_sequences(
    cls, sequences, eos_id: int, *, pad_id: int = -1, source: str = "<sequences>"
  ) -> "PrefixTrieConstraint":
    """sequences int [num_items, L]: item i's token ids, right-padded with `pad_id` (< 0)."""
    seqs = np.asarray(sequences)
    if seqs.ndim != 2 or seqs.shape[0] < 1 or seqs.shape[1] < 1:
      raise ValueError(
        f"{source}: expected a non-empty int array [num_items, length], got shape {seqs.shape}"
      )
    seqs = seqs.astype(np.int64)
    num_items, depth = seqs.shape
    valid = seqs != pad_id
    lengths = valid.sum(1)
    for i in np.nonzero((lengths == 0) | (valid[:, :-1] < valid[:, 1:]).any(1))[0][:1]:
      raise ValueError(
        f"{source}: row {i}: expected tokens then right padding ({pad_id}), got {seqs[i].tolist()}"
      )
    bad = valid & ((seqs < 0) | (seqs == eos_id))
    if bad.any():
      i, j = (int(x[0]) for x in np.nonzero(bad))
      raise ValueError(
        f"{source}: row {i}, position {j}: token {seqs[i, j]} is negative or the EOS id {eos_id}"
      )
    vocab_bound = int(seqs[valid].max()) + 1

    # Number nodes depth by depth: node of a prefix = unique (parent node, token) pair.
    node = np.zeros(num_items, np.int64)  # current node per item (root = 0)
    parents, tokens, children = [], [], []
    num_nodes = 1
    for d in range(depth):
      rows = np.nonzero(valid[:, d])[0]
      key = node[rows] * vocab_bound + seqs[rows, d]
      uniq, inv = np.unique(key, return_inverse=True)
      ids = num_nodes + np.arange(len(uniq))
      parents.append(uniq // vocab_bound)
      tokens.append(uniq % vocab_bound)
      children.append(ids)
      node[rows] = ids[inv]
      num_nodes += len(uniq)
    parent = np.concatenate(parents)
    token = np.concatenate(tokens)
    child = np.concatenate(children)
    order = np.lexsort((token, parent))  # edges sorted by (parent, token)
    parent, token, child = parent[order], token[order], child[order]
    count = np.bincount(parent, minlength=num_nodes)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    terminal = np.zeros(num_nodes, bool)
    item_of_node = np.full(num_nodes, -1, np.int64)
    if len(np.unique(node)) != num_items:
      _, first = np.unique(node, return_index=True)
      dup = sorted(set(range(num_items)) - set(first.tolist()))[0]
      raise ValueError(
        f"{source}: row {dup}: token sequence {seqs[dup].tolist()} is used by an "
        f"earlier item as well"
      )
    terminal[node] = True
    item_of_node[node] = np.arange(num_items)
    root_children = token[parent == 0]
    max_fanout = int(count[1:].max()) if num_nodes > 1 else 1
    arrays = {
      "child_start": jnp.asarray(start, jnp.int32),
      "child_count": jnp.asarray(count, jnp.int32),
      "edge_tok": jnp.asarray(token, jnp.int32),
      "edge_child": jnp.asarray(child, jnp.int32),
      "terminal": jnp.asarray(terminal),
      "root_tokens": jnp.asarray(root_children, jnp.int32),
      "item_of_node": jnp.asarray(item_of_node, jnp.int32),
    }
    return cls(
      arrays,
      eos_id=eos_id,
      max_fanout=max(max_fanout, 1),
      depth=depth,
      vocab_bound=vocab_bound,
      num_items=num_items,
    )

  def check_vocab(self, vocab: int, eos_id: int):
    if self.vocab_bound > vocab:
      raise ValueError(
        f"PrefixTrieConstraint: item tokens go up to {self.vocab_bound - 1} but the "
        f"model vocabulary has {vocab} tokens"
      )
    if eos_id != self.eos_id:
      raise ValueError(f"PrefixTrieConstraint: eos_id {self.eos_id} != model eos_token_id {eos_id}")

  def init_state(self, batch: int, num_beams: int):
    return jnp.zeros((batch, num_beams), jnp.int32)  # every beam starts at the root

  def allowed(self, state, t, vocab: int):
    a = self.arrays
    b, n = state.shape
    live = state >= 0  # -1 = fell off the trie (only reachable by -inf beams)
    u = jnp.maximum(state, 0)
    # Children of each beam's node, padded to the largest non-root fan-out.
    j = jnp.arange(self.max_fanout)
    idx = a["child_start"][u][..., None] + j  # [B, N, F]
    ok = (j < a["child_count"][u][..., None]) & live[..., None]
    edge = jnp.minimum(idx, a["edge_tok"].shape[0] - 1)
    ex = self.excluded
    if ex is not None:  # a token that completes an excluded item (a leaf) is not allowed
      ok = ok & ~self._completes_excluded(a["edge_child"][edge], jnp.arange(b)[:, None, None])
    toks = jnp.where(ok, a["edge_tok"][edge], vocab)
    bi = jnp.arange(b)[:, None, None]
    ni = jnp.arange(n)[None, :, None]
    mask = jnp.zeros((b, n, vocab), bool).at[bi, ni, toks].set(True, mode="drop")  # [B, N, V]
    # The root's children may be far more than max_fanout: use its precomputed mask.
    if ex is None:
      root = jnp.zeros((vocab,), bool).at[a["root_tokens"]].set(True, mode="drop")
    else:  # per query: [B, 1, V] (root edges are the first edges: sorted by parent)
      r = a["root_tokens"].shape[0]
      bad = self._completes_excluded(a["edge_child"][:r][None, :], jnp.arange(b)[:, None])
      rtok = jnp.where(bad, vocab, a["root_tokens"][None, :])  # [B, R]
      root = jnp.zeros((b, vocab), bool).at[jnp.arange(b)[:, None], rtok].set(True, mode="drop")
      root = root[:, None, :]
    mask = jnp.where((state == 0)[..., None], root, mask)
    eos = a["terminal"][u] & live  # [B, N]
    if ex is not None:  # a code that longer codes continue: its item ends at EOS
      it = a["item_of_node"][u]
      eos = eos & ~((it >= 0) & ex[jnp.arange(b)[:, None], jnp.maximum(it, 0)])
    return mask | (eos[..., None] & (jnp.arange(vocab) == self.eos_id))

  def _completes_excluded(self, nodes, rows):
    """bool like `nodes`: the node is a leaf holding an item excluded for its query (`rows`, the
    query index broadcast against `nodes`)."""
    a = self.arrays
    it = a["item_of_node"][nodes]
    leaf = a["child_count"][nodes] == 0
    return leaf & (it >= 0) & self.excluded[rows, jnp.maximum(it, 0)]

  def advance(self, state, tokens, t):
    del t
    a = self.arrays
    u = jnp.maximum(state, 0)
    lo = a["child_start"][u]  # [B, N]
    hi = lo + a["child_count"][u]
    # Binary search for the token among u's (sorted) children: fixed number of halvings.
    steps = int(np.ceil(np.log2(max(int(a["edge_tok"].shape[0]), 1) + 1))) + 1
    last = a["edge_tok"].shape[0] - 1
    end = hi

    def halve(_, bounds):  # lower bound of `tokens` in edge_tok[lo:hi]
      lo, hi = bounds
      active = lo < hi
      mid = (lo + hi) // 2
      go_right = a["edge_tok"][jnp.minimum(mid, last)] < tokens
      return jnp.where(active & go_right, mid + 1, lo), jnp.where(active & ~go_right, mid, hi)

    # A loop, not a Python-unrolled chain: XLA fuses an unrolled chain of dependent gathers into
    # one kernel whose CPU compile time grows with the trie (jaxlib 0.11: minutes at 100k items).
    lo, hi = jax.lax.fori_loop(0, steps, halve, (lo, hi))
    found = (lo < end) & (a["edge_tok"][jnp.minimum(lo, last)] == tokens) & (state >= 0)
    return jnp.where(found, a["edge_child"][jnp.minimum(lo, last)], -1)

  def to_items(self, seq: np.ndarray) -> int | None:
    """One generated sequence (pad after EOS) -> item index, or None when it is not an item."""
    h = self._host_tables()
    u = 0
    for tok in np.asarray(seq).tolist():
      if tok == self.eos_id:
        item = int(h["item_of_node"][u])
        return item if item >= 0 else None
      s, c = int(h["start"][u]), int(h["count"][u])
      k = s + int(np.searchsorted(h["tok"][s : s + c], tok))
      if k >= s + c or h["tok"][k] != tok:
        return None
      u = int(h["child"][k])
    return None  # no EOS

  def _host_tables(self):
    if self._host is None:
      a = jax.device_get(self.arrays)
      self._host = {
        "start": np.asarray(a["child_start"]),
        "count": np.asarray(a["child_count"]),
        "tok": np.asarray(a["edge_tok"]),
        "child": np.asarray(a["edge_child"]),
        "item_of_node": np.asarray(a["item_of_node"]),
      }
    return self._host


def sequences_to_items(sequences, constraint, scores=None) -> list[list[int]]:
  """sequences int [B, R, L] (best first) -> per query, item indices in rank order.

  Sequences that do not spell an item (or whose score is -inf) are dropped; a repeated item keeps
  its first (best) rank. `constraint` is an AtomicItemConstraint / PrefixTrieConstraint, or an
  ItemCatalog (atomic: `token_offset`, `num_items`; semantic: its trie, EOS id 1).
  """
  if not hasattr(constraint, "to_items"):
    if getattr(constraint, "id_scheme", "atomic") == "semantic":
      constraint = PrefixTrieConstraint.from_catalog(constraint, 1)
    elif hasattr(constraint, "token_offset") and hasattr(constraint, "num_items"):
      constraint = AtomicItemConstraint(constraint.token_offset, constraint.num_items, 1)
    else:
      raise TypeError(
        f"sequences_to_items: expected a constraint or an ItemCatalog, got "
        f"{type(constraint).__name__}"
      )
  seqs = np.asarray(sequences)
  if seqs.ndim != 3:
    raise ValueError(
      f"sequences_to_items: expected sequences [batch, num_return, length], got shape {seqs.shape}"
    )
  sc = None if scores is None else np.asarray(scores)
  out = []
  for q in range(seqs.shape[0]):
    seen, items = set(), []
    for j in range(seqs.shape[1]):
      if sc is not None and not np.isfinite(sc[q, j]):
        continue
      item = constraint.to_items(seqs[q, j])
      if item is not None and item not in seen:
        seen.add(item)
        items.append(item)
    out.append(items)
  return out
