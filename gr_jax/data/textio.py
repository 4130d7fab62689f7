"""Reading raw text files line by line with errors that name file, line and field.

Files can sit in a directory or inside a zip archive (GroupLens ships `ml-25m.zip` with a top
folder); bytes are decoded per line so a non-UTF-8 byte is reported with its line number.
"""

from __future__ import annotations

import csv
import json
import os
import zipfile
from typing import Iterator

from gr_jax.data.errors import BadRows, DataError


def find_file(root: str, name: str, required: bool = True) -> str | None:
  """`root/name`, or `root.zip::member` for a zip whose member ends with /name. None if optional."""
  if os.path.isdir(root):
    path = os.path.join(root, name)
    if os.path.exists(path):
      return path
  elif zipfile.is_zipfile(root):
    with zipfile.ZipFile(root) as zf:
      for member in sorted(zf.namelist()):
        if member == name or member.endswith("/" + name):
          return f"{root}::{member}"
  elif not os.path.exists(root):
    raise DataError(root, 0, "data.path", "no such directory or zip file")
  if required:
    raise DataError(os.path.join(root, name), 0, name, "required file not found")
  return None


def file_for_hash(path: str) -> str:
  """The on-disk file behind a find_file path (the zip itself for members)."""
  return path.split("::", 1)[0]


def iter_lines(path: str, bad: BadRows) -> Iterator[tuple[int, str]]:
  """(1-based line number, decoded line without newline); bad bytes -> bad row 'encoding'."""
  if "::" in path:
    archive, member = path.split("::", 1)
    zf = zipfile.ZipFile(archive)
    f = zf.open(member)
  else:
    zf, f = None, open(path, "rb")
  try:
    for number, raw in enumerate(f, start=1):
      try:
        yield number, raw.decode("utf-8").rstrip("\r\n")
      except UnicodeDecodeError as e:
        bad.bad(path, number, "<bytes>", f"not valid UTF-8 ({e.reason} at byte {e.start})",
                reason="non-UTF-8 bytes")
  finally:
    f.close()
    if zf is not None:
      zf.close()


def iter_csv(path: str, columns: tuple[str, ...], bad: BadRows
             ) -> Iterator[tuple[int, dict[str, str]]]:
  """Rows of a CSV with a header as (line, {column: value}) for the requested columns."""
  lines = iter_lines(path, bad)
  try:
    _, header_line = next(lines)
  except StopIteration:
    raise DataError(path, 1, "<header>", f"empty file; expected a header with {list(columns)}")
  header = next(csv.reader([header_line]))
  missing = [c for c in columns if c not in header]
  if missing:
    raise DataError(path, 1, missing[0], f"missing column(s) {missing}; header is {header}")
  pos = [header.index(c) for c in columns]
  width = len(header)
  for number, line in lines:
    if not line.strip():
      continue
    row = next(csv.reader([line]))
    if len(row) != width:
      bad.bad(path, number, "<row>", f"expected {width} fields ({header}), got {len(row)}",
              reason="wrong field count")
      continue
    yield number, {c: row[p] for c, p in zip(columns, pos)}


def iter_jsonl(path: str, bad: BadRows) -> Iterator[tuple[int, dict]]:
  """Objects of a JSON-lines file as (line, object); blank lines are ignored."""
  for number, line in iter_lines(path, bad):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      bad.bad(path, number, "<json>", f"not valid JSON ({e.msg} at column {e.colno})",
              reason="unparsable JSON")
      continue
    if not isinstance(obj, dict):
      bad.bad(path, number, "<json>", f"expected a JSON object, got {type(obj).__name__}",
              reason="not an object")
      continue
    yield number, obj


def parse_int(value: str, path: str, line: int, field: str, bad: BadRows) -> int | None:
  try:
    return int(value)
  except (TypeError, ValueError):
    bad.bad(path, line, field, f"expected an integer, got {value!r}", reason=f"bad {field}")
    return None


def parse_float(value: str, path: str, line: int, field: str, bad: BadRows) -> float | None:
  try:
    return float(value)
  except (TypeError, ValueError):
    bad.bad(path, line, field, f"expected a number, got {value!r}", reason=f"bad {field}")
    return None
