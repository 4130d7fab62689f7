"""Simulated search + recommendation data (docs/study_design.md "Simulated data"; the process is ours).

Generative story. Items have a rec popularity p_R (Zipf over a random rank order) and a search
popularity p_S (p_R with a fraction `shuffle_fraction` of its ranks rotated among themselves). Items
sit in latent *rec clusters*; sessions walk inside a cluster (`stay_in_cluster`), drawing items by
p_R restricted to the cluster: the collaborative signal. Each item also has a *content cluster*
whose words, plus a few words of the item's own, make up its search queries: the content signal.
Content clusters equal rec clusters except in the fraction `1 - agreement` of clusters (S2's knob).

Order of generation (why: held-out data must only ask for what training can teach):
  1. the training part of every session (all but its last two items, which prepare's leave-last-out
     keeps for rec valid and test) and the search training queries; in S1 with
     `s1_cover_all_items` (default) both cover every item (see S1 below);
  2. `heldout_in_both` (default): the paper's item filter, applied where it cannot shift sessions:
     session items without any search training query are removed from the training parts (so
     prepare's items_in_both_tasks filter finds nothing to remove from sessions), and K = the items
     that are then rec training targets (all of which have search training queries). With a
     Zipf-skewed p_S and few queries this removes many session items (counted in the stats);
  3. the held-out data: rec valid/test (the walk continues from each training part) and the
     search valid/test queries (`eval_queries` each) draw their targets from K only. So every
     held-out target of either task is a training target of both tasks, by construction; prepare's
     manifest records the realised shares (overlap.<task>_<split>_in_<task>_train; they stay 1
     unless data.min_session_len > 3 makes prepare drop sessions).

Complementary coverage (setting "default", `heldout_in_both=False` only). Within each rec cluster a
fraction `search_side_fraction` of the items is known mainly from search and a fraction
`rec_side_fraction` mainly from rec: the other task's *training* data draws them with popularity
times `side_weight` (0 = never a training target or history item there), while the held-out data
draws from the unweighted popularity over all items, so a task is tested on items it never trains:
a variant with a gain for the joint model built in, kept as a named knob, not the default.

Settings (`data.sim.setting`):
  default  the story above with all knobs as configured.
  S1       inputs carry no item signal (queries are random words, histories are i.i.d. draws from
           p_R), so only popularity can be learned; sweep `shuffle_fraction` -> KL(p_S || p_R).
           `s1_cover_all_items` (default): every item is a training target of both tasks by
           construction. Drawn i.i.d. (the knob off), the search queries miss more of p_R's
           popular items as p_S moves away, and step 2 then removes them from the sessions: the
           eligible items and the rec sample shrink along the sweep (47 -> 33 of 100 items and
           218 -> 104 rec examples in configs/sim_s1_popularity.py, means over simulator seeds
           0-2), and only rec data reveals which items can be held-out targets, so the points
           would differ in more than KL. Instead each task's training targets are a *covering
           sample* (covering_sample): one draw of every item plus draws that complete the
           expected counts max(1, lam * p) (p_S for the `round(queries_per_item * num_items)`
           training queries; p_R for the num_users x (session_len - 3) rec targets, positions 1..
           of the training parts, placed in random slots; position 0, history only, stays an
           i.i.d. p_R draw). This floors the rare items at one draw and keeps the others'
           popularity ratios, unlike "one of each plus i.i.d. draws", which flattens both
           popularities toward uniform and halves the KL range of the sweep. Step 2 then removes
           nothing, K is every item and the sample sizes are the same at every point (stats:
           s1_cover_all_items, heldout_target_items, rec_train_targets); held-out targets stay
           draws by p_R and p_S. The samples come from the streams the i.i.d. draws use, so no
           other setting changes. Needs a query and a rec target per item (else an error).
  S2       few sessions (`s2_num_users` users); sweep `agreement`, the fraction of rec clusters
           whose items keep their cluster's content words (realised: `agreement_items`).
  S3       few queries (`s3_queries_per_item`), each relevant to a SET of items: its anchor (whose
           words make the query; `s3_query_cluster_words=False` leaves the cluster words out, so
           content does not reveal the set) plus `s3_query_set_size - 1` companions. With
           probability `query_set_coherence` (S3's knob) the companions are drawn from the items
           that co-occur with the anchor in training sessions (weighted by co-occurrence count),
           otherwise from the anchor's fixed *decoy pool*: items that never co-occur with it, given
           the same weights as its co-occurring items in a random assignment, so both kinds of set
           are equally learnable from search data and differ only in what sessions reveal.
           Realised: `query_pairs_cooccur_train`, the share of item pairs relevant to the same
           training query that co-occur in a training session.
A query's relevant items are one (query, item) pair each, with the query's text and split, so
prepare gives them one query_id (two held-out queries drawn with the same text become one query
with the union of their items, as in a real log). Deterministic for `seed`.
"""

from __future__ import annotations

import numpy as np

from gr_jax.data.divergence import kl_divergence
from gr_jax.data.raw import RawData

SETTINGS = ("default", "S1", "S2", "S3")
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def make_words(n: int, rng: np.random.Generator) -> list[str]:
  """n distinct pronounceable pseudo-words of 3 syllables (tokenizer-friendly, no collisions)."""
  syllables = [c + v for c in _CONSONANTS for v in _VOWELS]  # 70
  total = len(syllables) ** 3
  if n > total:
    raise ValueError(f"simulator needs {n} words, at most {total} available")
  codes = rng.choice(total, size=n, replace=False)
  s = len(syllables)
  return [syllables[c // (s * s)] + syllables[(c // s) % s] + syllables[c % s] for c in codes]


def zipf_popularity(num_items: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
  """Zipf probabilities over a random rank order of the items."""
  ranks = rng.permutation(num_items)
  p = (ranks + 1.0) ** -float(exponent)
  return p / p.sum()


def shuffle_ranks(p: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
  """p with a fraction of its items' popularity values rotated among themselves.

  The chosen items (a random subset of round(fraction * n)) are ordered by popularity and each takes
  the value of the item half-way down that order, so every chosen item moves far and a larger
  fraction moves more mass (KL(p_S || p_R) grows with it).
  """
  n = len(p)
  k = int(round(float(fraction) * n))
  out = p.copy()
  if k < 2:
    return out
  chosen = rng.permutation(n)[:k]
  chosen = chosen[np.argsort(-p[chosen], kind="stable")]  # most popular first
  out[chosen] = p[np.roll(chosen, k // 2)]
  return out


def floored_counts(p: np.ndarray, total: int) -> np.ndarray:
  """Expected counts e (sum `total`) closest to total * p with every e_i >= 1: max(1, lam * p_i).

  Water-filling: the items whose share would fall below one draw get exactly one, the others keep
  their popularity ratios among themselves (lam solves sum_i max(1, lam * p_i) = total). Needs
  total >= len(p).
  """
  n = len(p)
  order = np.argsort(-p, kind="stable")
  e = np.ones(n)
  for k in range(n, 0, -1):  # k = items above the floor: the k most popular
    top = order[:k]
    lam = (total - (n - k)) / p[top].sum()
    # The largest k whose k-th item stays at or above the floor: then item k+1 (which failed
    # with k+1) falls below it with this lam too, so e is consistent. k = 1 always is (lam * p
    # = total - n + 1 >= 1; stated so that rounding cannot leave e short of `total`).
    if k == 1 or lam * p[top[-1]] >= 1:
      e[top] = lam * p[top]
      break
  return e


def covering_sample(p: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
  """`total` item draws, in random order, holding every item at least once: one of each plus
  `total - n` draws whose expected counts complete floored_counts(p, total)."""
  n = len(p)
  extra = floored_counts(p, total) - 1.0
  draws = np.arange(n)
  if total > n and extra.sum() > 0:
    draws = np.concatenate([draws, rng.choice(n, size=total - n, p=extra / extra.sum())])
  return rng.permutation(draws)


def _sample_in_cluster(cum_flat, offsets, order, clusters, u):
  """Vectorised draw of one item per row from p restricted to each row's cluster."""
  # cum_flat holds, cluster after cluster, the within-cluster CDF shifted by the cluster number,
  # so one searchsorted over the whole array draws inside each row's own segment.
  pos = np.searchsorted(cum_flat, clusters + u, side="right")
  pos = np.minimum(np.maximum(pos, offsets[clusters]), offsets[clusters + 1] - 1)
  return order[pos]


def _cooccurrence(parts: np.ndarray, n: int) -> np.ndarray:
  """[n, n] int32: number of sessions whose training part holds both items (diagonal 0).

  parts is [U, T] with -1 for empty slots. Dense: the simulator's catalogues are small (O(n^2)).
  """
  incidence = np.zeros((len(parts), n + 1), np.int32)  # column n collects the -1 slots
  incidence[np.arange(len(parts))[:, None], np.where(parts < 0, n, parts)] = 1
  incidence = incidence[:, :n]
  m = incidence.T @ incidence
  np.fill_diagonal(m, 0)
  return m


def _decoy_pools(cooc: np.ndarray, in_sessions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """[n, n] weights: each anchor's co-occurrence counts moved onto items it never co-occurs with.

  Row a takes the positive counts of cooc[a] (largest first) and gives them to a random subset of
  the session items that never share a session with a, so a decoy set is drawn from a pool of the
  same size and shape as a coherent one (equally learnable from search data) that sessions never
  reveal. When too few such items exist the largest counts are kept (`s3_decoy_pools_truncated`).
  """
  n = len(cooc)
  out = np.zeros(cooc.shape, np.float64)
  for a in range(n):
    counts = np.sort(cooc[a][cooc[a] > 0])[::-1]
    free = np.flatnonzero((cooc[a] == 0) & in_sessions)
    free = free[free != a]
    k = min(len(counts), len(free))
    out[a, rng.permutation(free)[:k]] = counts[:k]
  return out


def _pair_share(sets: list[np.ndarray], cooc: np.ndarray, anchor_only: bool) -> float | None:
  """Share of the item pairs relevant to one query that co-occur in a training session."""
  hits = total = 0
  for s in sets:
    if len(s) < 2:
      continue
    if anchor_only:
      a, b = np.full(len(s) - 1, s[0]), s[1:]
    else:
      i, j = np.triu_indices(len(s), k=1)
      a, b = s[i], s[j]
    hits += int(np.sum(cooc[a, b] > 0))
    total += len(a)
  return hits / total if total else None


def simulate(sim) -> RawData:
  """Generates a RawData from the `data.sim` config section."""
  setting = sim.setting
  if setting not in SETTINGS:
    raise ValueError(f"data.sim.setting: expected one of {SETTINGS}, got {setting!r}")
  n, c = int(sim.num_items), int(sim.num_clusters)
  if n < 2 or c < 1 or c > n:
    raise ValueError(
      f"data.sim: need num_items >= 2 and 1 <= num_clusters <= num_items, got "
      f"{n} items, {c} clusters"
    )
  length = int(sim.session_len)
  if length < 3:
    raise ValueError(
      f"data.sim.session_len: need >= 3 (a training item, then valid and test), got {length}"
    )
  in_both = bool(sim.heldout_in_both)
  # S1 only. A config saved before the knob existed has no such field: its data was made without
  # it, so it reads as False (its dataset hash and its content stay together).
  cover_all = setting == "S1" and "s1_cover_all_items" in sim and bool(sim.s1_cover_all_items)
  # Independent streams per component: changing one knob does not reshuffle the others.
  seeds = np.random.SeedSequence(int(sim.seed)).spawn(11)
  (r_words, r_pop, r_clu, r_agree, r_sess, r_query, r_eval, r_noise, r_side, r_set, r_held) = [
    np.random.default_rng(s) for s in seeds
  ]

  num_noise = max(50, int(sim.words_per_cluster) * c) if setting == "S1" else 0
  words = make_words(c * sim.words_per_cluster + n * sim.words_per_item + num_noise, r_words)
  cluster_words = np.array(words[: c * sim.words_per_cluster]).reshape(c, sim.words_per_cluster)
  start = c * sim.words_per_cluster
  item_words = np.array(words[start : start + n * sim.words_per_item]).reshape(
    n, sim.words_per_item
  )
  noise_words = np.array(words[start + n * sim.words_per_item :])

  p_rec = zipf_popularity(n, sim.zipf_exponent, r_pop)
  p_search = shuffle_ranks(p_rec, sim.shuffle_fraction, r_pop)

  # Balanced rec clusters.
  rec_cluster = np.empty(n, np.int64)
  rec_cluster[r_clu.permutation(n)] = np.arange(n) % c
  # Content clusters: clusters outside the agreeing fraction have their items' content labels
  # shuffled among them, so their words no longer follow the sessions.
  agree = float(sim.agreement)
  content_cluster = rec_cluster.copy()
  num_agree = int(round(agree * c))
  disagreeing = r_agree.permutation(c)[num_agree:]
  moved = np.flatnonzero(np.isin(rec_cluster, disagreeing))
  content_cluster[moved] = r_agree.permutation(content_cluster[moved])

  # Complementary coverage: side 1 = known mainly from search, 2 = mainly from rec, 0 = both.
  side = np.zeros(n, np.int64)
  if setting == "default":
    fs, fr = float(sim.search_side_fraction), float(sim.rec_side_fraction)
    if fs < 0 or fr < 0 or fs + fr > 1 or not 0 <= float(sim.side_weight) <= 1:
      raise ValueError(
        f"data.sim: need search_side_fraction, rec_side_fraction >= 0 with sum <= 1 "
        f"and 0 <= side_weight <= 1, got {fs}, {fr}, {sim.side_weight}"
      )
    if (fs > 0 or fr > 0) and in_both:
      # The variant exists to test each task on items the other task alone trains; restricting
      # held-out targets to items of both tasks would silently make it a different dataset.
      raise ValueError(
        "data.sim: the coverage variant (search_side_fraction or rec_side_fraction "
        "> 0) needs data.sim.heldout_in_both=False"
      )
    for k in range(c):
      members = r_side.permutation(np.flatnonzero(rec_cluster == k))
      ns, nr = int(round(fs * len(members))), int(round(fr * len(members)))
      side[members[:ns]] = 1
      side[members[ns : ns + nr]] = 2
  w = float(sim.side_weight)
  p_rec_train = np.where(side == 1, w * p_rec, p_rec)
  p_search_train = np.where(side == 2, w * p_search, p_search)
  if p_rec_train.sum() <= 0 or p_search_train.sum() <= 0:
    raise ValueError("data.sim: side fractions leave a task with no training items")
  p_rec_train /= p_rec_train.sum()
  p_search_train /= p_search_train.sum()
  # What the training targets are drawn by (expected shares); S1's covering samples change them.
  rec_target_share, search_target_share = p_rec_train, p_search_train

  # ---------------------------------------------------------------- session walk
  order = np.argsort(rec_cluster, kind="stable")
  offsets = np.searchsorted(rec_cluster[order], np.arange(c + 1))

  def cluster_cdf(p):
    """Per-cluster CDFs of p (see _sample_in_cluster) and which clusters hold any mass."""
    p_sorted = p[order]
    cum = np.empty(n)
    mass = np.zeros(c, bool)
    for k in range(c):
      seg = p_sorted[offsets[k] : offsets[k + 1]]
      mass[k] = seg.sum() > 0
      seg = seg if mass[k] else np.ones_like(seg)  # never drawn: rows go "anywhere" instead
      cum[offsets[k] : offsets[k + 1]] = k + np.cumsum(seg) / seg.sum()
    return cum, mass

  def walk_step(prev, hist, cdf, p_any, rng):
    """One next item per row: inside prev's cluster w.p. stay_in_cluster, else anywhere by p_any."""
    cum_flat, mass = cdf
    rows_n = len(prev)
    clusters = rec_cluster[prev]
    # A cluster with no allowed item sends its rows anywhere (by p_any).
    stay = (rng.random(rows_n) < sim.stay_in_cluster) & mass[clusters]
    nxt = np.full(rows_n, -1, np.int64)
    todo = np.ones(rows_n, bool)
    # Redraw items already in the session (a few tries): repeats would make "next = an earlier
    # item" a shortcut that real leave-last-out data rarely offers. Items outside p_any's support
    # (a float edge of the CDF) are redrawn too.
    for _ in range(50):
      rows = np.flatnonzero(todo)
      inside = _sample_in_cluster(cum_flat, offsets, order, clusters[rows], rng.random(len(rows)))
      anywhere = rng.choice(n, size=len(rows), p=p_any)
      nxt[rows] = np.where(stay[rows], inside, anywhere)
      todo = (hist == nxt[:, None]).any(axis=1) | (p_any[nxt] <= 0)
      if not todo.any():
        break
    bad = p_any[nxt] <= 0
    if bad.any():
      nxt[bad] = rng.choice(n, size=int(bad.sum()), p=p_any)
    return nxt

  # ---------------------------------------------------------------- 1a. session training parts
  num_users = int(sim.s2_num_users if setting == "S2" else sim.num_users)
  train_len = length - 2  # prepare keeps the last two items for rec valid and test
  parts = np.full((num_users, train_len), -1, np.int64)
  if setting == "S1":
    parts[:] = r_sess.choice(n, size=(num_users, train_len), p=p_rec_train)
    if cover_all:
      # The rec targets (positions 1.. of each training part; position 0 is history only) hold
      # every item at least once, placed in random slots, so histories stay independent of their
      # targets and the number of rec training examples is num_users x (train_len - 1) whatever
      # p_S is. Position 0 keeps its draw above (the stream is consumed as without the knob).
      slots = num_users * (train_len - 1)
      if slots < n:
        raise ValueError(
          f"data.sim.s1_cover_all_items: every item needs a rec training target, but "
          f"num_users x (session_len - 3) = {num_users} x {length - 3} = {slots} < num_items = "
          f"{n}; raise num_users or session_len, or set s1_cover_all_items=False"
        )
      parts[:, 1:] = covering_sample(p_rec_train, slots, r_sess).reshape(num_users, train_len - 1)
      expected = floored_counts(p_rec_train, slots)
      rec_target_share = expected / expected.sum()
  else:
    cdf_train = cluster_cdf(p_rec_train)
    parts[:, 0] = r_sess.choice(n, size=num_users, p=p_rec_train)
    for t in range(1, train_len):
      parts[:, t] = walk_step(parts[:, t - 1], parts[:, :t], cdf_train, p_rec_train, r_sess)
  in_sessions = np.zeros(n, bool)
  in_sessions[parts.ravel()] = True

  # ---------------------------------------------------------------- 1b. search training queries
  qpi = float(sim.s3_queries_per_item if setting == "S3" else sim.queries_per_item)
  num_train_queries = max(1, int(round(qpi * n)))
  if cover_all:
    # One training query per item at least (see covering_sample), so the heldout_in_both filter
    # below removes no session item and every item is eligible as a held-out target.
    if num_train_queries < n:
      raise ValueError(
        f"data.sim.s1_cover_all_items: every item needs a search training query, but "
        f"round(queries_per_item x num_items) = {num_train_queries} < num_items = {n}; raise "
        f"queries_per_item, or set s1_cover_all_items=False"
      )
    train_anchors = covering_sample(p_search_train, num_train_queries, r_query)
    expected = floored_counts(p_search_train, num_train_queries)
    search_target_share = expected / expected.sum()
  else:
    train_anchors = r_query.choice(n, size=num_train_queries, p=p_search_train)

  set_size = int(sim.s3_query_set_size) if setting == "S3" else 1
  coherence = float(sim.query_set_coherence)
  if setting == "S3" and (set_size < 1 or not 0 <= coherence <= 1):
    raise ValueError(
      f"data.sim: need s3_query_set_size >= 1 and 0 <= query_set_coherence <= 1, "
      f"got {set_size}, {coherence}"
    )
  cooc = decoys = None
  if set_size > 1:
    cooc = _cooccurrence(parts, n)
    decoys = _decoy_pools(cooc, in_sessions, r_set)

  def relevant_sets(anchors, allowed, rng):
    """Each query's relevant items, anchor first; companions only from `allowed` items."""
    if set_size == 1:
      return [np.array([a]) for a in anchors]
    out = []
    coherent = rng.random(len(anchors)) < coherence
    for a, coh in zip(anchors, coherent):
      weights = (cooc[a] if coh else decoys[a]) * allowed
      k = min(set_size - 1, int(np.sum(weights > 0)))
      companions = (
        rng.choice(n, size=k, replace=False, p=weights / weights.sum())
        if k
        else np.zeros(0, np.int64)
      )
      out.append(np.concatenate([[a], companions]).astype(np.int64))
    return out

  train_sets = relevant_sets(train_anchors, np.ones(n), r_set)
  search_trained = np.zeros(n, bool)
  for s in train_sets:
    search_trained[s] = True

  # ---------------------------------------------------------------- 2. paper's item filter
  removed_items = dropped_sessions = 0
  if in_both:
    # Drop session items that no search query trains, then close the gaps (order kept): prepare's
    # items_in_both_tasks then has nothing to remove from sessions, so no position shifts and the
    # rec training targets computed here are exactly prepare's.
    keep_slot = search_trained[parts]
    removed_items = int(np.sum(~keep_slot))
    rank = np.argsort(~keep_slot, axis=1, kind="stable")
    parts = np.where(
      np.take_along_axis(keep_slot, rank, axis=1), np.take_along_axis(parts, rank, axis=1), -1
    )
    nonempty = parts[:, 0] >= 0
    dropped_sessions = int(np.sum(~nonempty))
    parts = parts[nonempty]
    rec_trained = np.zeros(n, bool)
    rec_trained[parts[:, 1:][parts[:, 1:] >= 0]] = True  # position 0 is history only
    heldout_ok = rec_trained & search_trained
    if not heldout_ok.any():
      raise ValueError(
        "data.sim: no item is a training target of both tasks; raise num_users, "
        "session_len or queries_per_item"
      )
  else:
    heldout_ok = np.ones(n, bool)
  part_len = (parts >= 0).sum(axis=1)

  # ---------------------------------------------------------------- 3a. rec held-out items
  p_rec_held = np.where(heldout_ok, p_rec, 0.0)
  p_rec_held /= p_rec_held.sum()
  users = len(parts)
  sessions_idx = np.concatenate([parts, np.full((users, 2), -1, np.int64)], axis=1)
  rows = np.arange(users)
  if setting == "S1":
    sessions_idx[rows[:, None], part_len[:, None] + np.arange(2)] = r_held.choice(
      n, size=(users, 2), p=p_rec_held
    )
  else:
    cdf_held = cluster_cdf(p_rec_held)
    for t in range(2):
      prev = sessions_idx[rows, part_len + t - 1]
      sessions_idx[rows, part_len + t] = walk_step(prev, sessions_idx, cdf_held, p_rec_held, r_held)

  # ---------------------------------------------------------------- 3b. search queries
  def make_queries(targets: np.ndarray, rng: np.random.Generator) -> list[str]:
    out = []
    qw = int(sim.query_words)
    for item in targets:
      if setting == "S1":
        pool = noise_words
      elif setting == "S3" and not sim.s3_query_cluster_words:
        pool = item_words[item]
      else:
        pool = np.concatenate([cluster_words[content_cluster[item]], item_words[item]])
      out.append(" ".join(rng.choice(pool, size=min(qw, len(pool)), replace=False)))
    return out

  p_search_held = np.where(heldout_ok, p_search, 0.0)
  p_search_held /= p_search_held.sum()
  pairs = []
  split_sets = {"train": train_sets}
  for split, anchors, rng in (
    ("train", train_anchors, r_query),
    ("valid", r_eval.choice(n, size=int(sim.eval_queries), p=p_search_held), r_eval),
    ("test", r_eval.choice(n, size=int(sim.eval_queries), p=p_search_held), r_eval),
  ):
    if split != "train":
      split_sets[split] = relevant_sets(anchors, heldout_ok.astype(np.float64), r_set)
    for q, items in zip(make_queries(anchors, rng), split_sets[split]):
      pairs.extend((q, f"i{i}", split) for i in items)

  # ---------------------------------------------------------------- realised statistics
  seq = [row[row >= 0] for row in sessions_idx]
  a = np.concatenate([s[:-1] for s in seq]) if seq else np.zeros(0, np.int64)
  b = np.concatenate([s[1:] for s in seq]) if seq else np.zeros(0, np.int64)
  distinct = a != b
  same_content = (
    float(np.mean(content_cluster[a[distinct]] == content_cluster[b[distinct]]))
    if distinct.any()
    else 0.0
  )
  stats = {
    "setting": setting,
    "kl_search_rec_true": kl_divergence(p_search, p_rec),
    "kl_rec_search_true": kl_divergence(p_rec, p_search),
    "agreement_config": agree,
    "agreement_clusters": num_agree / c,
    "agreement_items": float(np.mean(content_cluster == rec_cluster)),
    # Share of consecutive (distinct) session items in one content cluster: how far the content
    # signal follows the collaborative one.
    "session_pairs_same_content": same_content,
    "num_words": len(words),
    "num_users": num_users,
    "train_queries": num_train_queries,
    "search_side_items": int(np.sum(side == 1)),
    "rec_side_items": int(np.sum(side == 2)),
    # Between the (expected) popularities the two tasks' training targets are drawn by.
    "kl_search_rec_train": kl_divergence(search_target_share, np.maximum(rec_target_share, 1e-12)),
    "s1_cover_all_items": cover_all,
    "heldout_in_both": in_both,
    "heldout_target_items": int(np.sum(heldout_ok)),
    "rec_train_targets": int(np.sum(np.maximum(part_len - 1, 0))),
    "session_items_removed_no_search_query": removed_items,
    "sessions_dropped_empty": dropped_sessions,
    "query_set_size": set_size,
    "query_set_coherence_config": coherence if set_size > 1 else None,
    "qrels_per_train_query": float(np.mean([len(s) for s in train_sets])),
    "query_pairs_cooccur_train": (
      _pair_share(train_sets, cooc, False) if cooc is not None else None
    ),
    "query_anchor_pairs_cooccur_train": (
      _pair_share(train_sets, cooc, True) if cooc is not None else None
    ),
    "query_pairs_cooccur_test": (
      _pair_share(split_sets["test"], cooc, False) if cooc is not None else None
    ),
    "s3_decoy_pools_truncated": (
      float(np.mean((decoys > 0).sum(1) < (cooc > 0).sum(1))) if cooc is not None else None
    ),
  }
  titles = [" ".join(w) for w in item_words]
  metadata = [
    {"rec_cluster": int(rc), "content_cluster": int(cc), "side": int(sd)}
    for rc, cc, sd in zip(rec_cluster, content_cluster, side)
  ]
  sessions = [(f"u{u}", [f"i{i}" for i in row]) for u, row in enumerate(seq)]
  return RawData(
    items=[f"i{i}" for i in range(n)],
    titles=titles,
    metadata=metadata,
    search_pairs=pairs,
    sessions=sessions,
    stats=stats,
  )
