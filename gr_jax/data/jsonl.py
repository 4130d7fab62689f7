"""Generic JSON-lines logs (the shape of the paper's private Podcasts data).

Under `data.path`:
  search file   {"query": text, "item": id} per line; optional "split": train | valid | test
                (otherwise prepare holds out distinct queries)
  sessions file {"user": id, "items": [id, ...], "timestamps": [number, ...]} per line;
                timestamps are optional (items are then taken in the given order), else items are
                ordered by (timestamp, position)
  items file    {"item": id, "title": text, ...} per line; other fields become metadata
Item ids are compared as strings. Unknown items (not in the items file), missing fields, empty
queries, bad JSON, non-UTF-8 bytes and duplicate item ids are errors naming file, line and field,
or counted skips with data.skip_bad_rows.
"""

from __future__ import annotations

import os

from gr_jax.data import textio
from gr_jax.data.errors import BadRows, DataError
from gr_jax.data.raw import SPLITS, RawData


def _path(root: str, name: str) -> str:
  return name if os.path.isabs(name) else os.path.join(root, name)


def load(dc) -> RawData:
  j = dc.jsonl
  bad = BadRows(skip=bool(dc.skip_bad_rows))
  raw = RawData(bad_rows=bad)
  items_path, search_path, sessions_path = (_path(dc.path, j.items_file),
                                            _path(dc.path, j.search_file),
                                            _path(dc.path, j.sessions_file))
  for p in (items_path, search_path, sessions_path):
    if not os.path.exists(p):
      raise DataError(p, 0, os.path.basename(p), "required file not found")
    raw.files.append(p)

  first_line = {}
  for line, obj in textio.iter_jsonl(items_path, bad):
    if "item" not in obj:
      bad.bad(items_path, line, "item", "missing item id", reason="missing item")
      continue
    item = str(obj["item"])
    if item in first_line:
      bad.bad(items_path, line, "item", f"duplicate item id {item!r} (first on line "
              f"{first_line[item]})", reason="duplicate item")
      continue
    first_line[item] = line
    raw.items.append(item)
    raw.titles.append(str(obj.get("title", "")))
    raw.metadata.append({k: v for k, v in obj.items() if k not in ("item", "title")})

  for line, obj in textio.iter_jsonl(search_path, bad):
    missing = [k for k in ("query", "item") if k not in obj]
    if missing:
      bad.bad(search_path, line, missing[0], "missing; expected {\"query\": text, \"item\": id}",
              reason=f"missing {missing[0]}")
      continue
    item, query = str(obj["item"]), " ".join(str(obj["query"]).split())
    if not query:
      bad.bad(search_path, line, "query", "empty query", reason="empty query")
      continue
    if item not in first_line:
      bad.bad(search_path, line, "item", f"unknown item id {item!r} (not in {j.items_file})",
              reason="unknown item")
      continue
    split = obj.get("split", "")
    if split and split not in SPLITS:
      bad.bad(search_path, line, "split", f"expected one of {SPLITS}, got {split!r}",
              reason="bad split")
      continue
    raw.search_pairs.append((query, item, split))

  for line, obj in textio.iter_jsonl(sessions_path, bad):
    missing = [k for k in ("user", "items") if k not in obj]
    if missing:
      bad.bad(sessions_path, line, missing[0], "missing; expected {\"user\": id, \"items\": [...]}",
              reason=f"missing {missing[0]}")
      continue
    items = obj["items"]
    if not isinstance(items, list) or not items:
      bad.bad(sessions_path, line, "items", "expected a non-empty list of item ids",
              reason="bad items")
      continue
    items = [str(i) for i in items]
    unknown = [i for i in items if i not in first_line]
    if unknown:
      bad.bad(sessions_path, line, "items", f"unknown item id {unknown[0]!r} (not in "
              f"{j.items_file})", reason="unknown item")
      continue
    ts = obj.get("timestamps")
    if ts is not None:
      if (not isinstance(ts, list) or len(ts) != len(items) or
          not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in ts)):
        bad.bad(sessions_path, line, "timestamps",
                f"expected {len(items)} numbers (one per item)", reason="bad timestamps")
        continue
      items = [i for _, _, i in sorted(zip(ts, range(len(items)), items))]
    raw.sessions.append((str(obj["user"]), items))
  return raw
