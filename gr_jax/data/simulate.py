"""Simulated search + recommendation data (PAPER.md "Simulated data"; the process is ours).

Generative story. Items have a rec popularity p_R (Zipf over a random rank order) and a search
popularity p_S (p_R with a fraction `shuffle_fraction` of its ranks rotated among themselves). Items
sit in latent *rec clusters*; sessions walk inside a cluster (`stay_in_cluster`), drawing items by
p_R restricted to the cluster: the collaborative signal. Each item also has a *content cluster*
whose words, plus a few words of the item's own, make up its search queries: the content signal.
Content clusters equal rec clusters except where `agreement` (S2) / `shared_pairs` (S3) says not.
Search training pairs draw their target from p_S, so some items get many queries and few sessions
and others the reverse: each task alone under-learns items that the other task knows, which is what
joint training can exploit.

Complementary coverage (setting "default" only). Within each rec cluster a fraction
`search_side_fraction` of the items is known mainly from search and a fraction `rec_side_fraction`
mainly from rec: the other task's *training* data draws them with popularity times `side_weight`
(0 = never a training target or history item there), while its held-out data (search valid/test
queries; the last two items of each session, i.e. rec valid/test) draws from the unweighted
popularity, so the test queries of each task cover all items. A task-specific model cannot return
an item its task never trains; the joint model can, if it maps the query's content cluster (or the
history's rec cluster) onto the items the other task placed there. The remaining items are seen
by both tasks and anchor the two tasks' views of each cluster.

Settings (`data.sim.setting`):
  default  the story above with all knobs as configured.
  S1       inputs carry no item signal (queries are random words, histories are i.i.d. draws from
           p_R), so only popularity can be learned; sweep `shuffle_fraction` -> KL(p_S || p_R).
  S2       few sessions (`s2_num_users` users); sweep `agreement`, the fraction of rec clusters
           whose items keep their cluster's content words.
  S3       few queries (`s3_queries_per_item`); sweep `shared_pairs`, the fraction of clusters
           whose session-co-occurring items also share queries (realised: the fraction of
           co-occurring item pairs that share a content cluster).
Search valid/test are freshly generated held-out queries (`eval_queries` each); rec valid/test come
from `prepare`'s leave-last-out split of each session. Deterministic for `seed`.
"""

from __future__ import annotations

import numpy as np

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


def kl(p: np.ndarray, q: np.ndarray) -> float:
  mask = p > 0
  return float(np.sum(p[mask] * (np.log(p[mask]) - np.log(q[mask]))))


def _sample_in_cluster(cum_flat, offsets, order, clusters, u):
  """Vectorised draw of one item per row from p restricted to each row's cluster."""
  # cum_flat holds, cluster after cluster, the within-cluster CDF shifted by the cluster number,
  # so one searchsorted over the whole array draws inside each row's own segment.
  pos = np.searchsorted(cum_flat, clusters + u, side="right")
  pos = np.minimum(np.maximum(pos, offsets[clusters]), offsets[clusters + 1] - 1)
  return order[pos]


def simulate(sim) -> RawData:
  """Generates a RawData from the `data.sim` config section."""
  setting = sim.setting
  if setting not in SETTINGS:
    raise ValueError(f"data.sim.setting: expected one of {SETTINGS}, got {setting!r}")
  n, c = int(sim.num_items), int(sim.num_clusters)
  if n < 2 or c < 1 or c > n:
    raise ValueError(f"data.sim: need num_items >= 2 and 1 <= num_clusters <= num_items, got "
                     f"{n} items, {c} clusters")
  # Independent streams per component: changing one knob does not reshuffle the others.
  seeds = np.random.SeedSequence(int(sim.seed)).spawn(9)
  r_words, r_pop, r_clu, r_agree, r_sess, r_query, r_eval, r_noise, r_side = [
      np.random.default_rng(s) for s in seeds]

  num_noise = max(50, int(sim.words_per_cluster) * c) if setting == "S1" else 0
  words = make_words(c * sim.words_per_cluster + n * sim.words_per_item + num_noise, r_words)
  cluster_words = np.array(words[:c * sim.words_per_cluster]).reshape(c, sim.words_per_cluster)
  start = c * sim.words_per_cluster
  item_words = np.array(words[start:start + n * sim.words_per_item]).reshape(n, sim.words_per_item)
  noise_words = np.array(words[start + n * sim.words_per_item:])

  p_rec = zipf_popularity(n, sim.zipf_exponent, r_pop)
  p_search = shuffle_ranks(p_rec, sim.shuffle_fraction, r_pop)

  # Balanced rec clusters.
  rec_cluster = np.empty(n, np.int64)
  rec_cluster[r_clu.permutation(n)] = np.arange(n) % c
  # Content clusters: clusters outside the agreeing fraction have their items' content labels
  # shuffled among them, so their words no longer follow the sessions.
  agree = {"S2": sim.agreement, "S3": sim.shared_pairs}.get(setting, sim.agreement)
  content_cluster = rec_cluster.copy()
  num_agree = int(round(float(agree) * c))
  disagreeing = r_agree.permutation(c)[num_agree:]
  moved = np.flatnonzero(np.isin(rec_cluster, disagreeing))
  content_cluster[moved] = r_agree.permutation(content_cluster[moved])

  # Complementary coverage: side 1 = known mainly from search, 2 = mainly from rec, 0 = both.
  side = np.zeros(n, np.int64)
  if setting == "default":
    fs, fr = float(sim.search_side_fraction), float(sim.rec_side_fraction)
    if fs < 0 or fr < 0 or fs + fr > 1 or not 0 <= float(sim.side_weight) <= 1:
      raise ValueError(f"data.sim: need search_side_fraction, rec_side_fraction >= 0 with sum <= 1 "
                       f"and 0 <= side_weight <= 1, got {fs}, {fr}, {sim.side_weight}")
    for k in range(c):
      members = r_side.permutation(np.flatnonzero(rec_cluster == k))
      ns, nr = int(round(fs * len(members))), int(round(fr * len(members)))
      side[members[:ns]] = 1
      side[members[ns:ns + nr]] = 2
  w = float(sim.side_weight)
  p_rec_train = np.where(side == 1, w * p_rec, p_rec)
  p_search_train = np.where(side == 2, w * p_search, p_search)
  if p_rec_train.sum() <= 0 or p_search_train.sum() <= 0:
    raise ValueError("data.sim: side fractions leave a task with no training items")
  p_rec_train /= p_rec_train.sum()
  p_search_train /= p_search_train.sum()

  # ---------------------------------------------------------------- sessions
  num_users = int(sim.s2_num_users if setting == "S2" else sim.num_users)
  length = int(sim.session_len)
  sessions_idx = np.empty((num_users, length), np.int64)
  if setting == "S1":
    sessions_idx[:] = r_sess.choice(n, size=(num_users, length), p=p_rec)
  else:
    order = np.argsort(rec_cluster, kind="stable")
    offsets = np.searchsorted(rec_cluster[order], np.arange(c + 1))

    def cluster_cdf(p):
      # Cluster after cluster, the within-cluster CDF shifted by the cluster number, so one
      # searchsorted over the whole array draws inside each row's own segment. A cluster with no
      # mass under p (all its items weighted out) falls back to uniform.
      p_sorted = p[order]
      cum = np.empty(n)
      for k in range(c):
        seg = p_sorted[offsets[k]:offsets[k + 1]]
        seg = seg if seg.sum() > 0 else np.ones_like(seg)
        cum[offsets[k]:offsets[k + 1]] = k + np.cumsum(seg) / seg.sum()
      return cum

    # Training positions draw from the training popularity; the last two (rec valid and test under
    # prepare's leave-last-out) from the unweighted one.
    cum_train, cum_held = cluster_cdf(p_rec_train), cluster_cdf(p_rec)
    current = r_sess.choice(n, size=num_users, p=p_rec_train)
    sessions_idx[:, 0] = current
    for t in range(1, length):
      held = t >= length - 2
      cum_flat, p_any = (cum_held, p_rec) if held else (cum_train, p_rec_train)
      stay = r_sess.random(num_users) < sim.stay_in_cluster
      clusters = rec_cluster[current]
      nxt = np.full(num_users, -1, np.int64)
      todo = np.ones(num_users, bool)
      # Redraw items already in the session (a few tries): repeats would make "next = an earlier
      # item" a shortcut that real leave-last-out data rarely offers.
      for _ in range(50):
        rows = np.flatnonzero(todo)
        inside = _sample_in_cluster(cum_flat, offsets, order, clusters[rows],
                                    r_sess.random(len(rows)))
        anywhere = r_sess.choice(n, size=len(rows), p=p_any)
        nxt[rows] = np.where(stay[rows], inside, anywhere)
        todo = (sessions_idx[:, :t] == nxt[:, None]).any(axis=1)
        if not todo.any():
          break
      current = nxt
      sessions_idx[:, t] = current

  # ---------------------------------------------------------------- queries
  def make_queries(targets: np.ndarray, rng: np.random.Generator) -> list[str]:
    out = []
    qw = int(sim.query_words)
    for item in targets:
      if setting == "S1":
        pool = noise_words
      else:
        pool = np.concatenate([cluster_words[content_cluster[item]], item_words[item]])
      out.append(" ".join(rng.choice(pool, size=min(qw, len(pool)), replace=False)))
    return out

  qpi = float(sim.s3_queries_per_item if setting == "S3" else sim.queries_per_item)
  num_train_queries = max(1, int(round(qpi * n)))
  train_targets = r_query.choice(n, size=num_train_queries, p=p_search_train)
  pairs = []
  for split, targets, rng in (
      ("train", train_targets, r_query),
      ("valid", r_eval.choice(n, size=int(sim.eval_queries), p=p_search), r_eval),
      ("test", r_eval.choice(n, size=int(sim.eval_queries), p=p_search), r_eval)):
    for q, item in zip(make_queries(targets, rng), targets):
      pairs.append((q, f"i{item}", split))

  # ---------------------------------------------------------------- realised statistics
  a, b = sessions_idx[:, :-1].ravel(), sessions_idx[:, 1:].ravel()
  distinct = a != b
  shared = float(np.mean(content_cluster[a[distinct]] == content_cluster[b[distinct]])
                 ) if distinct.any() else 0.0
  stats = {
      "setting": setting,
      "kl_search_rec_true": kl(p_search, p_rec),
      "kl_rec_search_true": kl(p_rec, p_search),
      "agreement_config": float(agree),
      "agreement_clusters": num_agree / c,
      "agreement_items": float(np.mean(content_cluster == rec_cluster)),
      "shared_pairs_realised": shared,
      "num_words": len(words),
      "num_users": num_users,
      "train_queries": num_train_queries,
      "search_side_items": int(np.sum(side == 1)),
      "rec_side_items": int(np.sum(side == 2)),
      "kl_search_rec_train": kl(p_search_train, np.maximum(p_rec_train, 1e-12)),
  }
  titles = [" ".join(w) for w in item_words]
  metadata = [{"rec_cluster": int(rc), "content_cluster": int(cc), "side": int(sd)}
              for rc, cc, sd in zip(rec_cluster, content_cluster, side)]
  sessions = [(f"u{u}", [f"i{i}" for i in row]) for u, row in enumerate(sessions_idx)]
  return RawData(items=[f"i{i}" for i in range(n)], titles=titles, metadata=metadata,
                 search_pairs=pairs, sessions=sessions, stats=stats)
