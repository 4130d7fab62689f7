"""Generic JSON-lines logs (the shape of the paper's private Podcasts data).

Under `data.path`:
  search file   {"query": text, "item": id} per line; optional "split": train | valid | test
                (otherwise prepare holds out distinct queries)
  sessions file {"user": id, "items": [id, ...], "timestamps": [number, ...]} per line;
                timestamps are optional (items are then taken in the given order), else items are
                ordered by (timestamp, position), and an (item, timestamp) the user already has
                (in this line or an earlier one) is an exact duplicate, removed and counted
                (`duplicate_rows_removed` in the manifest's source_stats); a line left empty
                is dropped
  items file    {"item": id, "title": text, ...} per line; other fields become metadata
Item ids (a JSON string or integer) are compared as strings. Unknown items (not in the items file),
missing fields, values of the wrong JSON type (a query or title that is not a string, an id that is
null, a float, a bool or a list, a NaN or infinite timestamp), empty queries, bad JSON, non-UTF-8
bytes, duplicate item ids, empty item ids or ids with whitespace (as evaluation refuses them:
TREC run files cannot hold them) and NaN or infinite numbers in an item's metadata (they would
reach catalog.json) are errors naming file, line and field, or counted skips with
data.skip_bad_rows; str() is never used to turn such a value into text. A file with no usable row
is an error naming it. Search logs here are not derived from the sessions' users, so there is no
held-out interaction to leave out of them (unlike MovieLens tags and MPD playlist names).
"""

from __future__ import annotations

import json
import math
import os

from gr_jax.data import textio
from gr_jax.data.errors import BadRows, DataError
from gr_jax.data.raw import SPLITS, RawData


def _path(root: str, name: str) -> str:
  return name if os.path.isabs(name) else os.path.join(root, name)


def _wrong_type(bad: BadRows, path: str, line: int, field: str, want: str, value) -> None:
  bad.bad(path, line, field, f"expected {want}, got {json.dumps(value)}", reason=f"bad {field}")


def _bad_id(bad: BadRows, path: str, line: int, field: str, item: str) -> bool:
  """Reports (or counts) an empty id or one with whitespace (textio.id_problem); True if bad."""
  problem = textio.id_problem(item)
  if problem is not None:
    bad.bad(path, line, field, problem, reason=f"bad {field} id")
  return problem is not None


def _require_rows(path: str, n: int, field: str, bad: BadRows) -> None:
  """A file that gave no usable row stops here, named, rather than as an empty dataset later."""
  if n:
    return
  skipped = sum(v for k, v in bad.counts.items() if k.startswith(os.path.basename(path) + ":"))
  why = f"all {skipped} rows were skipped as bad" if skipped else "the file has no rows"
  raise DataError(path, 0, field, f"no usable row ({why})")


def input_files(dc) -> list[str]:
  """The files `load(dc)` reads (items, search, sessions), whether or not they exist."""
  j = dc.jsonl
  return [_path(dc.path, name) for name in (j.items_file, j.search_file, j.sessions_file)]


def load(dc) -> RawData:
  j = dc.jsonl
  bad = BadRows(skip=bool(dc.skip_bad_rows))
  raw = RawData(bad_rows=bad)
  items_path, search_path, sessions_path = (
    _path(dc.path, j.items_file),
    _path(dc.path, j.search_file),
    _path(dc.path, j.sessions_file),
  )
  for p in (items_path, search_path, sessions_path):
    if not os.path.exists(p):
      raise DataError(p, 0, os.path.basename(p), "required file not found")
    raw.files.append(p)

  first_line = {}
  for line, obj in textio.iter_jsonl(items_path, bad):
    if "item" not in obj:
      bad.bad(items_path, line, "item", "missing item id", reason="missing item")
      continue
    item = textio.as_id(obj["item"])
    if item is None:
      _wrong_type(bad, items_path, line, "item", "a string or integer id", obj["item"])
      continue
    if _bad_id(bad, items_path, line, "item", item):
      continue
    if "title" in obj and not isinstance(obj["title"], str):
      _wrong_type(bad, items_path, line, "title", "a string", obj["title"])
      continue
    if item in first_line:
      bad.bad(
        items_path,
        line,
        "item",
        f"duplicate item id {item!r} (first on line {first_line[item]})",
        reason="duplicate item",
      )
      continue
    meta = {k: v for k, v in obj.items() if k not in ("item", "title")}
    bad_value = textio.non_finite_path(meta)
    if bad_value is not None:
      bad.bad(
        items_path,
        line,
        bad_value,
        "expected a finite number or text, got NaN or Infinity",
        reason="non-finite metadata",
      )
      continue
    first_line[item] = line
    raw.items.append(item)
    raw.titles.append(obj.get("title", ""))
    raw.metadata.append(meta)
  _require_rows(items_path, len(raw.items), "item", bad)

  for line, obj in textio.iter_jsonl(search_path, bad):
    missing = [k for k in ("query", "item") if k not in obj]
    if missing:
      bad.bad(
        search_path,
        line,
        missing[0],
        'missing; expected {"query": text, "item": id}',
        reason=f"missing {missing[0]}",
      )
      continue
    text, item = textio.as_text(obj["query"]), textio.as_id(obj["item"])
    if text is None:
      _wrong_type(bad, search_path, line, "query", "a string", obj["query"])
      continue
    if item is None:
      _wrong_type(bad, search_path, line, "item", "a string or integer id", obj["item"])
      continue
    if _bad_id(bad, search_path, line, "item", item):
      continue
    query = " ".join(text.split())
    if not query:
      bad.bad(search_path, line, "query", "empty query", reason="empty query")
      continue
    if item not in first_line:
      bad.bad(
        search_path,
        line,
        "item",
        f"unknown item id {item!r} (not in {j.items_file})",
        reason="unknown item",
      )
      continue
    split = obj.get("split", "")
    if not isinstance(split, str) or (split and split not in SPLITS):
      bad.bad(
        search_path,
        line,
        "split",
        f"expected one of {SPLITS}, got {json.dumps(split)}",
        reason="bad split",
      )
      continue
    raw.search_pairs.append((query, item, split))
  _require_rows(search_path, len(raw.search_pairs), "query", bad)

  seen_events: dict[str, set] = {}  # user -> (item, timestamp) already in a session
  duplicates = 0
  for line, obj in textio.iter_jsonl(sessions_path, bad):
    missing = [k for k in ("user", "items") if k not in obj]
    if missing:
      bad.bad(
        sessions_path,
        line,
        missing[0],
        'missing; expected {"user": id, "items": [...]}',
        reason=f"missing {missing[0]}",
      )
      continue
    user = textio.as_id(obj["user"])
    if user is None:
      _wrong_type(bad, sessions_path, line, "user", "a string or integer id", obj["user"])
      continue
    items = obj["items"]
    if not isinstance(items, list) or not items:
      bad.bad(
        sessions_path, line, "items", "expected a non-empty list of item ids", reason="bad items"
      )
      continue
    ids = [textio.as_id(i) for i in items]
    if None in ids:
      _wrong_type(
        bad, sessions_path, line, "items", "string or integer item ids", items[ids.index(None)]
      )
      continue
    if any(_bad_id(bad, sessions_path, line, "items", i) for i in ids):
      continue
    items = ids
    unknown = [i for i in items if i not in first_line]
    if unknown:
      bad.bad(
        sessions_path,
        line,
        "items",
        f"unknown item id {unknown[0]!r} (not in {j.items_file})",
        reason="unknown item",
      )
      continue
    ts = obj.get("timestamps")
    if ts is not None:
      # json.loads reads NaN and Infinity literals: an order by NaN is no order.
      if (
        not isinstance(ts, list)
        or len(ts) != len(items)
        or not all(
          isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in ts
        )
      ):
        bad.bad(
          sessions_path,
          line,
          "timestamps",
          f"expected {len(items)} finite numbers (one per item)",
          reason="bad timestamps",
        )
        continue
      events = sorted(zip(ts, range(len(items)), items))
      # An (item, timestamp) the user already has (in this session or an earlier line) is an
      # exact duplicate: kept, a held-out target could sit in the training history too.
      seen = seen_events.setdefault(user, set())
      items = []
      for t, _, i in events:
        if (i, t) in seen:
          duplicates += 1
          continue
        seen.add((i, t))
        items.append(i)
      if not items:
        continue
    raw.sessions.append((user, items))
  _require_rows(sessions_path, len(raw.sessions), "items", bad)
  raw.stats = {"duplicate_rows_removed": duplicates}
  return raw
