"""MovieLens in the GroupLens CSV layout (ml-latest-small, ml-25m; a directory or the zip).

Search: queries from user tags (normalised: lower case, whitespace collapsed, surrounding
punctuation stripped; tags used fewer than `min_tag_count` times across the dataset are dropped as
noise and counted), optionally titles (year removed) and genres; or, with
`data.movielens.queries_jsonl`, the user's generated queries `{"item": movieId, "query": text}`
instead. One pair per distinct (query, movie). Rec: each user's ratings >= `min_rating`, ordered by
(timestamp, movieId). Splits and the items-in-both filter are applied by prepare.
"""

from __future__ import annotations

import collections
import re

from gr_jax.data import textio
from gr_jax.data.errors import BadRows
from gr_jax.data.raw import RawData

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


def load(dc) -> RawData:
  ml = dc.movielens
  bad = BadRows(skip=bool(dc.skip_bad_rows))
  root = dc.path
  sources = tuple(ml.query_sources)
  for s in sources:
    if s not in QUERY_SOURCES:
      raise ValueError(f"data.movielens.query_sources: {s!r} is not one of {QUERY_SOURCES}")
  raw = RawData(bad_rows=bad)
  stats = collections.Counter()

  # Movies: the catalogue.
  movies_path = textio.find_file(root, "movies.csv")
  raw.files.append(textio.file_for_hash(movies_path))
  genres_of = {}
  first_line = {}
  for line, row in textio.iter_csv(movies_path, ("movieId", "title", "genres"), bad):
    mid = textio.parse_int(row["movieId"], movies_path, line, "movieId", bad)
    if mid is None:
      continue
    if mid in first_line:
      bad.bad(movies_path, line, "movieId", f"duplicate movieId {mid} (first on line "
              f"{first_line[mid]})", reason="duplicate movieId")
      continue
    first_line[mid] = line
    raw.items.append(str(mid))
    raw.titles.append(row["title"])
    genres = [] if row["genres"] == "(no genres listed)" else row["genres"].split("|")
    raw.metadata.append({"genres": genres})
    genres_of[mid] = genres
  known = set(first_line)

  # Ratings -> sessions.
  ratings_path = textio.find_file(root, "ratings.csv")
  raw.files.append(textio.file_for_hash(ratings_path))
  events = collections.defaultdict(list)
  min_rating = float(ml.min_rating)
  for line, row in textio.iter_csv(ratings_path, ("userId", "movieId", "rating", "timestamp"), bad):
    user = textio.parse_int(row["userId"], ratings_path, line, "userId", bad)
    mid = textio.parse_int(row["movieId"], ratings_path, line, "movieId", bad) if user is not None else None
    rating = textio.parse_float(row["rating"], ratings_path, line, "rating", bad) if mid is not None else None
    ts = textio.parse_int(row["timestamp"], ratings_path, line, "timestamp", bad) if rating is not None else None
    if ts is None:
      continue
    if mid not in known:
      bad.bad(ratings_path, line, "movieId", f"movieId {mid} is not in movies.csv",
              reason="unknown movieId")
      continue
    if rating < min_rating:
      stats["ratings_below_min_rating"] += 1
      continue
    events[user].append((ts, mid))
  for user in sorted(events):
    raw.sessions.append((str(user), [str(m) for _, m in sorted(events[user])]))
  stats["ratings_kept"] = sum(len(s) for _, s in raw.sessions)

  # Queries.
  pairs = set()
  if ml.queries_jsonl:
    qpath = ml.queries_jsonl
    raw.files.append(qpath)
    for line, obj in textio.iter_jsonl(qpath, bad):
      if "item" not in obj or "query" not in obj:
        field = "item" if "item" not in obj else "query"
        bad.bad(qpath, line, field, "missing; expected {\"item\": movieId, \"query\": text}",
                reason=f"missing {field}")
        continue
      mid = textio.parse_int(obj["item"], qpath, line, "item", bad)
      if mid is None:
        continue
      if mid not in known:
        bad.bad(qpath, line, "item", f"movieId {mid} is not in movies.csv", reason="unknown item")
        continue
      q = " ".join(str(obj["query"]).split())
      if not q:
        bad.bad(qpath, line, "query", "empty query", reason="empty query")
        continue
      pairs.add((q, mid))
  else:
    if "tags" in sources:
      tags_path = textio.find_file(root, "tags.csv")
      raw.files.append(textio.file_for_hash(tags_path))
      tag_rows = []
      for line, row in textio.iter_csv(tags_path, ("userId", "movieId", "tag"), bad):
        mid = textio.parse_int(row["movieId"], tags_path, line, "movieId", bad)
        if mid is None:
          continue
        if mid not in known:
          bad.bad(tags_path, line, "movieId", f"movieId {mid} is not in movies.csv",
                  reason="unknown movieId")
          continue
        tag = normalise_tag(row["tag"])
        if not tag:
          bad.bad(tags_path, line, "tag", f"empty after normalisation ({row['tag']!r})",
                  reason="empty query")
          continue
        tag_rows.append((tag, mid))
      uses = collections.Counter(t for t, _ in tag_rows)
      for tag, mid in tag_rows:
        if uses[tag] >= int(ml.min_tag_count):
          pairs.add((tag, mid))
        else:
          stats["tag_rows_below_min_tag_count"] += 1
    for mid, title, meta in zip(raw.items, raw.titles, raw.metadata):
      if "titles" in sources and clean_title(title):
        pairs.add((clean_title(title).lower(), int(mid)))
      if "genres" in sources:
        for g in meta["genres"]:
          pairs.add((g.lower(), int(mid)))
  raw.search_pairs = [(q, str(m), "") for q, m in sorted(pairs)]
  stats["search_pairs"] = len(raw.search_pairs)
  raw.stats = dict(stats)
  return raw
