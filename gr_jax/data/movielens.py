"""MovieLens in the GroupLens CSV layout (ml-latest-small, ml-25m; a directory or the zip).

Search: queries from user tags (normalised: lower case, whitespace collapsed, surrounding
punctuation stripped), optionally titles (year removed) and genres; or, with
`data.movielens.queries_jsonl`, the user's generated queries `{"item": movieId, "query": text}`
instead. One pair per distinct (query, movie). Rec: each user's ratings >= `min_rating`, ordered by
(timestamp, movieId). Splits and the items-in-both filter are applied by prepare.

No leak of held-out rec interactions: a tag row (user, movie, tag) whose (user, movie) is one of
that user's rec valid/test targets (as prepare will split them, see raw.heldout_interactions) gives
no search pair; titles, genres and generated queries describe the movie, not a user, and stay.
Then tags used by fewer than `min_tag_count` DISTINCT users among the remaining rows are dropped:
a tag private to one user ties that user's movies together, a rec signal dressed as a query.
Counts of both drops go to the manifest's source_stats.

ratings.csv goes through the column reader (textio.read_numeric_columns) when every row is plain
numbers, else row by row with errors naming file, line and field: ratings must be finite and >= 0.
A user's movie counts once (`dedup_ratings`): exact duplicate rows and earlier ratings of a movie
the user rated again are removed and counted (`duplicate_rows_removed`,
`replaced_ratings_removed` in the manifest's source_stats), so no held-out rating is also in the
user's training history.
"""

from __future__ import annotations

import collections
import logging
import re

import numpy as np

from gr_jax.data import raw as raw_lib
from gr_jax.data import textio
from gr_jax.data.errors import BadRows, DataError
from gr_jax.data.raw import RawData

log = logging.getLogger(__name__)
QUERY_SOURCES = ("tags", "titles", "genres")
_YEAR = re.compile(r"\s*\(\d{4}(?:[-–]\d{0,4})?\)\s*$")
_EDGE_PUNCT = "\"'.,;:!?()[]{}-_*#"


def normalise_tag(tag: str) -> str:
  return " ".join(tag.lower().split()).strip(_EDGE_PUNCT).strip()


_ARTICLE = re.compile(r"^(.*), (the|a|an|les|la|le|l'|il|das|der|die|el)$", re.IGNORECASE)


def clean_title(title: str) -> str:
  """'Beta, The (2001)' -> 'The Beta': year dropped, trailing article moved to the front."""
  title = _YEAR.sub("", title).strip()
  m = _ARTICLE.match(title)
  return f"{m.group(2)} {m.group(1)}" if m else title


def _movies(path: str, bad: BadRows, raw: RawData) -> dict[int, list[str]]:
  """Appends the catalogue to raw; returns movieId -> genres."""
  genres_of, first_line = {}, {}
  for line, row in textio.iter_csv(path, ("movieId", "title", "genres"), bad):
    mid = textio.parse_int(row["movieId"], path, line, "movieId", bad)
    if mid is None:
      continue
    if mid in first_line:
      bad.bad(
        path,
        line,
        "movieId",
        f"duplicate movieId {mid} (first on line {first_line[mid]})",
        reason="duplicate movieId",
      )
      continue
    first_line[mid] = line
    raw.items.append(str(mid))
    raw.titles.append(row["title"])
    genres = [] if row["genres"] == "(no genres listed)" else row["genres"].split("|")
    raw.metadata.append({"genres": genres})
    genres_of[mid] = genres
  if not genres_of:
    raise DataError(
      path,
      2,
      "movieId",
      "no movie rows after the header (expected "
      "movieId,title,genres rows)" + _skipped_note(bad, path),
    )
  return genres_of


def _skipped_note(bad: BadRows, path: str) -> str:
  import os  # local: only for the message

  n = sum(v for k, v in bad.counts.items() if k.startswith(os.path.basename(path) + ":"))
  return f"; {n} rows were skipped as bad (data.skip_bad_rows)" if n else ""


RATING_COLUMNS = {"userId": "int", "movieId": "int", "rating": "float", "timestamp": "int"}


def read_ratings(
  path: str, known: np.ndarray, bad: BadRows, vectorised: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(userId, movieId, rating, timestamp) arrays of the good rows of ratings.csv.

  known: sorted movieIds of movies.csv. The vectorised path takes the file only if every row is
  good; otherwise (or with vectorised=False) the row-by-row path reports or counts each bad row.
  """
  cols = textio.read_numeric_columns(path, RATING_COLUMNS) if vectorised else None
  if cols is not None:
    ok = np.isin(cols["movieId"], known) & np.isfinite(cols["rating"]) & (cols["rating"] >= 0)
    if ok.all():
      return cols["userId"], cols["movieId"], cols["rating"], cols["timestamp"]
  users, mids, ratings, stamps = [], [], [], []
  known_set = set(known.tolist())
  for line, row in textio.iter_csv(path, tuple(RATING_COLUMNS), bad):
    user = textio.parse_int(row["userId"], path, line, "userId", bad)
    if user is None:
      continue
    mid = textio.parse_int(row["movieId"], path, line, "movieId", bad)
    if mid is None:
      continue
    rating = textio.parse_float(row["rating"], path, line, "rating", bad, min_value=0.0)
    if rating is None:
      continue
    ts = textio.parse_int(row["timestamp"], path, line, "timestamp", bad)
    if ts is None:
      continue
    if mid not in known_set:
      bad.bad(
        path, line, "movieId", f"movieId {mid} is not in movies.csv", reason="unknown movieId"
      )
      continue
    users.append(user)
    mids.append(mid)
    ratings.append(rating)
    stamps.append(ts)
  return (
    np.asarray(users, np.int64),
    np.asarray(mids, np.int64),
    np.asarray(ratings, np.float64),
    np.asarray(stamps, np.int64),
  )


def dedup_ratings(users, mids, stamps) -> tuple[np.ndarray, int, int]:
  """(bool mask of the rows to keep, exact duplicates removed, earlier ratings removed).

  A user rates a movie once in MovieLens: of the rows of one (userId, movieId) only the latest
  is kept (of equal timestamps, the last in the file). A row equal in user, movie and timestamp
  to the kept one is an exact duplicate (a file concatenated twice, say); an older one is an
  earlier rating the user replaced. Either, kept, would put the movie twice in the user's
  sequence, so that a held-out target also sits in the training history."""
  n = len(users)
  keep = np.ones(n, bool)
  if n < 2:
    return keep, 0, 0
  order = np.lexsort((np.arange(n), stamps, mids, users))
  u, m, t = users[order], mids[order], stamps[order]
  same_pair = (u[1:] == u[:-1]) & (m[1:] == m[:-1])  # row i and row i+1 (sorted) share a pair
  dropped = np.zeros(n, bool)
  dropped[:-1] = same_pair  # every row of a pair but its last (latest, then last in the file)
  if not dropped.any():
    return keep, 0, 0
  # The timestamp of the row kept for each sorted row's pair: the last row of its run.
  last_of_run = np.flatnonzero(np.append(~same_pair, True))
  kept_ts = t[last_of_run][np.searchsorted(last_of_run, np.arange(n))]
  exact = int((dropped & (t == kept_ts)).sum())
  keep[order[dropped]] = False
  return keep, exact, int(dropped.sum()) - exact


def sessions_from_ratings(users, mids, stamps) -> list[tuple[str, list[str]]]:
  """Per user (ascending id), movieIds ordered by (timestamp, movieId), as strings."""
  order = np.lexsort((mids, stamps, users))
  users, mids = users[order], mids[order]
  uniq = np.unique(mids)
  # One str() per distinct movie, not per rating: 25M ratings share ~60k movie ids.
  texts = np.asarray([str(m) for m in uniq.tolist()], dtype=object)
  texts = texts[np.searchsorted(uniq, mids)].tolist()
  bounds = np.flatnonzero(np.diff(users)) + 1
  starts = [0] + bounds.tolist()
  ends = bounds.tolist() + [len(users)]
  return [(str(users[a]), texts[a:b]) for a, b in zip(starts, ends) if b > a]


def _tag_rows(path: str, known: set[int], bad: BadRows) -> list[tuple[str, str, int]]:
  """(userId, normalised tag, movieId) of tags.csv."""
  rows = []
  for line, row in textio.iter_csv(path, ("userId", "movieId", "tag"), bad):
    user = textio.parse_int(row["userId"], path, line, "userId", bad)
    if user is None:
      continue
    mid = textio.parse_int(row["movieId"], path, line, "movieId", bad)
    if mid is None:
      continue
    if mid not in known:
      bad.bad(
        path, line, "movieId", f"movieId {mid} is not in movies.csv", reason="unknown movieId"
      )
      continue
    tag = normalise_tag(row["tag"])
    if not tag:
      bad.bad(
        path, line, "tag", f"empty after normalisation ({row['tag']!r})", reason="empty query"
      )
      continue
    rows.append((str(user), tag, mid))
  return rows


def _generated_queries(path: str, known: set[int], bad: BadRows) -> set[tuple[str, int]]:
  pairs = set()
  for line, obj in textio.iter_jsonl(path, bad):
    if "item" not in obj or "query" not in obj:
      field = "item" if "item" not in obj else "query"
      bad.bad(
        path,
        line,
        field,
        'missing; expected {"item": movieId, "query": text}',
        reason=f"missing {field}",
      )
      continue
    mid = textio.parse_int(obj["item"], path, line, "item", bad)
    if mid is None:
      continue
    if mid not in known:
      bad.bad(path, line, "item", f"movieId {mid} is not in movies.csv", reason="unknown item")
      continue
    text = textio.as_text(obj["query"])
    if text is None:
      bad.bad(path, line, "query", f"expected a string, got {obj['query']!r}", reason="bad query")
      continue
    q = " ".join(text.split())
    if not q:
      bad.bad(path, line, "query", "empty query", reason="empty query")
      continue
    pairs.add((q, mid))
  return pairs


REMEDY = (
  "set data.movielens.query_sources to include 'titles' and/or 'genres' (e.g. "
  '--config.data.movielens.query_sources=\'("tags","titles")\'), or give generated '
  'queries {"item": movieId, "query": text} per line in data.movielens.queries_jsonl'
)


def input_files(dc) -> list[str]:
  """The files `load(dc)` reads (a zip once), without reading them: the raw inputs whose sha256
  prepare records and compares on every rerun."""
  ml, root = dc.movielens, dc.path
  found = [textio.find_file(root, "movies.csv"), textio.find_file(root, "ratings.csv")]
  if ml.queries_jsonl:
    found.append(str(ml.queries_jsonl))
  elif "tags" in tuple(ml.query_sources):
    found.append(textio.find_file(root, "tags.csv"))
  return list(dict.fromkeys(textio.file_for_hash(p) for p in found))


def load(dc) -> RawData:
  ml = dc.movielens
  bad = BadRows(skip=bool(dc.skip_bad_rows))
  root = dc.path
  sources = tuple(ml.query_sources)
  for s in sources:
    if s not in QUERY_SOURCES:
      raise ValueError(f"data.movielens.query_sources: {s!r} is not one of {QUERY_SOURCES}")
  min_tag_users = int(ml.min_tag_count)
  raw = RawData(bad_rows=bad)
  stats = collections.Counter()

  # Movies: the catalogue.
  movies_path = textio.find_file(root, "movies.csv")
  raw.files.append(textio.file_for_hash(movies_path))
  genres_of = _movies(movies_path, bad, raw)
  known = np.asarray(sorted(genres_of), np.int64)

  # Ratings -> sessions.
  ratings_path = textio.find_file(root, "ratings.csv")
  raw.files.append(textio.file_for_hash(ratings_path))
  users, mids, ratings, stamps = read_ratings(ratings_path, known, bad)
  if not len(users):
    raise DataError(
      ratings_path,
      2,
      "rating",
      "no rating rows after the header (expected "
      f"{','.join(RATING_COLUMNS)} rows)" + _skipped_note(bad, ratings_path),
    )
  unique, duplicates, replaced = dedup_ratings(users, mids, stamps)
  stats["duplicate_rows_removed"] = duplicates
  stats["replaced_ratings_removed"] = replaced
  if duplicates or replaced:
    log.info(
      "%s: %d exact duplicate rows and %d earlier ratings of a re-rated movie removed",
      ratings_path,
      duplicates,
      replaced,
    )
  keep = unique & (ratings >= float(ml.min_rating))
  stats["ratings_below_min_rating"] = int((unique & ~keep).sum())
  raw.sessions = sessions_from_ratings(users[keep], mids[keep], stamps[keep])
  stats["ratings_kept"] = int(keep.sum())

  # Queries.
  fixed: set[tuple[str, int]] = set()  # not tied to a user: no held-out interaction behind them
  tag_rows: list[tuple[str, str, int]] = []
  source_file, source_field = None, "query"
  if ml.queries_jsonl:
    source_file = ml.queries_jsonl
    raw.files.append(source_file)
    fixed = _generated_queries(source_file, set(genres_of), bad)
  else:
    if "tags" in sources:
      tags_path = textio.find_file(root, "tags.csv")
      raw.files.append(textio.file_for_hash(tags_path))
      source_file, source_field = tags_path, "tag"
      tag_rows = _tag_rows(tags_path, set(genres_of), bad)
    for mid, title, meta in zip(raw.items, raw.titles, raw.metadata):
      if "titles" in sources and clean_title(title):
        fixed.add((clean_title(title).lower(), int(mid)))
      if "genres" in sources:
        for g in meta["genres"]:
          fixed.add((g.lower(), int(mid)))
    if source_file is None:
      source_file, source_field = movies_path, "title" if "titles" in sources else "genres"

  tag_stats = {}

  def build(heldout):
    rows = [r for r in tag_rows if (r[0], str(r[2])) not in heldout]
    users_of = collections.defaultdict(set)
    for user, tag, _ in rows:
      users_of[tag].add(user)
    pairs = set(fixed)
    below = 0
    for _, tag, mid in rows:
      if len(users_of[tag]) >= min_tag_users:
        pairs.add((tag, mid))
      else:
        below += 1
    tag_stats.update(tag_rows_heldout=len(tag_rows) - len(rows), tag_rows_below_min_tag_count=below)
    return [(q, str(m), "") for q, m in sorted(pairs)]

  if tag_rows:
    raw.search_pairs, _, leak_stats = raw_lib.search_pairs_without_heldout(build, raw.sessions, dc)
    stats.update(leak_stats)
    stats.update(tag_stats)
  else:
    raw.search_pairs = build(set())
    stats["search_pairs_dropped_heldout"] = 0
  if not raw.search_pairs:
    if source_field != "tag":
      why = "it gives no query"
    elif not tag_rows:
      why = "it has no tag rows"
    else:
      why = (
        f"all {len(tag_rows)} tag rows were dropped: {tag_stats['tag_rows_heldout']} on the "
        "tagging user's held-out rec targets, "
        f"{tag_stats['tag_rows_below_min_tag_count']} on tags used by fewer than "
        f"data.movielens.min_tag_count={min_tag_users} distinct users"
      )
    raise DataError(
      source_file,
      0,
      source_field,
      f"no search query from data.movielens."
      f"query_sources={sources} ({why}){_skipped_note(bad, source_file)}; " + REMEDY,
    )
  if dc.items_in_both_tasks:
    rated = {i for _, s in raw.sessions for i in s}
    if not any(i in rated for _, i, _ in raw.search_pairs):
      raise DataError(
        source_file,
        0,
        source_field,
        "none of the searched movies is rated (>= "
        f"data.movielens.min_rating={ml.min_rating}) in {ratings_path}, and "
        "data.items_in_both_tasks keeps only movies of both tasks; " + REMEDY,
      )
  stats["search_pairs"] = len(raw.search_pairs)
  raw.stats = dict(stats)
  return raw
