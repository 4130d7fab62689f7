"""Reading raw text files line by line with errors that name file, line and field.

Files can sit in a directory or inside a zip archive (GroupLens ships `ml-25m.zip` with a top
folder); bytes are decoded per line so a non-UTF-8 byte is reported with its line number. A UTF-8
byte-order mark (Excel's "CSV UTF-8") before the first line is dropped.

`read_numeric_columns` is the column-wise path for large all-number CSVs (ratings.csv: 25M rows
in ML-25M), read by pyarrow.csv: it accepts a file only when every row is in the plain-number form
and otherwise returns None, so the caller falls back to the row-by-row reader, which names file,
line and field of the first bad row (or counts it with skip_bad_rows): both paths give the same
result.
"""

from __future__ import annotations

import csv
import json
import math
import os
import zipfile
from typing import IO, Iterator

import numpy as np

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


BOM = b"\xef\xbb\xbf"


def _open_binary(path: str) -> tuple[zipfile.ZipFile | None, IO[bytes]]:
  if "::" in path:
    archive, member = path.split("::", 1)
    zf = zipfile.ZipFile(archive)
    return zf, zf.open(member)
  return None, open(path, "rb")


def iter_lines(path: str, bad: BadRows) -> Iterator[tuple[int, str]]:
  """(1-based line number, decoded line without newline); bad bytes -> bad row 'encoding'."""
  zf, f = _open_binary(path)
  try:
    for number, raw in enumerate(f, start=1):
      if number == 1 and raw.startswith(BOM):
        raw = raw[len(BOM) :]  # a BOM is an encoding marker, not part of the first header name
      try:
        yield number, raw.decode("utf-8").rstrip("\r\n")
      except UnicodeDecodeError as e:
        bad.bad(
          path,
          number,
          "<bytes>",
          f"not valid UTF-8 ({e.reason} at byte {e.start})",
          reason="non-UTF-8 bytes",
        )
  finally:
    f.close()
    if zf is not None:
      zf.close()


def iter_csv(
  path: str, columns: tuple[str, ...], bad: BadRows
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
  pending, first = None, 0  # a record whose quoted field spans lines, and its first line
  for number, line in lines:
    if pending is not None:
      line, number = pending + "\n" + line, first
    if line.count('"') % 2:  # an open quoted field ("" escapes keep the parity): read on
      pending, first = line, number
      continue
    pending = None
    if not line.strip():
      continue
    try:
      row = next(csv.reader([line]))
    except csv.Error as e:  # e.g. a field over csv.field_size_limit() (131,072 characters)
      bad.bad(path, number, "<row>", f"unparsable CSV row ({e})", reason="unparsable CSV")
      continue
    if len(row) != width:
      bad.bad(
        path,
        number,
        "<row>",
        f"expected {width} fields ({header}), got {len(row)}",
        reason="wrong field count",
      )
      continue
    yield number, {c: row[p] for c, p in zip(columns, pos)}
  if pending is not None:
    bad.bad(
      path,
      first,
      "<row>",
      "a quoted field is never closed (missing '\"')",
      reason="unterminated quote",
    )


def iter_jsonl(path: str, bad: BadRows) -> Iterator[tuple[int, dict]]:
  """Objects of a JSON-lines file as (line, object); blank lines are ignored."""
  for number, line in iter_lines(path, bad):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      bad.bad(
        path,
        number,
        "<json>",
        f"not valid JSON ({e.msg} at column {e.colno})",
        reason="unparsable JSON",
      )
      continue
    if not isinstance(obj, dict):
      bad.bad(
        path,
        number,
        "<json>",
        f"expected a JSON object, got {type(obj).__name__}",
        reason="not an object",
      )
      continue
    yield number, obj


def parse_int(value, path: str, line: int, field: str, bad: BadRows) -> int | None:
  """An integer from CSV text or a JSON int; anything else (1.5, true, null, "x") is a bad row."""
  # int() would also take a float (truncating 1.9 to 1) or a bool (True -> 1): not an id.
  if isinstance(value, int) and not isinstance(value, bool):
    return value
  if isinstance(value, str):
    try:
      return int(value)
    except ValueError:
      pass
  bad.bad(path, line, field, f"expected an integer, got {value!r}", reason=f"bad {field}")
  return None


def parse_float(
  value, path: str, line: int, field: str, bad: BadRows, min_value: float | None = None
) -> float | None:
  """A finite number (>= min_value when given); NaN, inf and out-of-range values are bad rows."""
  number = None
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    number = float(value)
  elif isinstance(value, str):
    try:
      number = float(value)
    except ValueError:
      pass
  if number is None or not math.isfinite(number) or (min_value is not None and number < min_value):
    # NaN compares False with everything, so a NaN rating would pass any min_rating filter.
    want = "a finite number" + (f" >= {min_value}" if min_value is not None else "")
    bad.bad(path, line, field, f"expected {want}, got {value!r}", reason=f"bad {field}")
    return None
  return number


def as_text(value) -> str | None:
  """A JSON string value, or None for null, numbers, lists... (str() would invent a query)."""
  return value if isinstance(value, str) else None


def as_id(value) -> str | None:
  """An id from a JSON string or integer as text; None for null, bool, float, list, object."""
  if isinstance(value, str):
    return value
  if isinstance(value, int) and not isinstance(value, bool):
    return str(value)
  return None


def id_problem(item_id: str) -> str | None:
  """Why `item_id` cannot be an item id, or None. Empty ids and ids with whitespace anywhere
  (surrounding spaces, tabs, newlines) are refused by every reader, as evaluation refuses them:
  ids are fields of whitespace-separated TREC run files, and ' 7' and '7' would be two items."""
  if not item_id:
    return "empty item id: expected a non-empty id without whitespace"
  if any(c.isspace() for c in item_id):
    return (
      f"item id {item_id!r} contains whitespace: expected an id without spaces, tabs or "
      "newlines (ids are fields of TREC run files)"
    )
  return None


def non_finite_path(value, path: str = "") -> str | None:
  """The dotted path (`year`, `scores.2`) of the first NaN or infinite number in a JSON value
  (json.loads reads NaN and Infinity literals), or None. Such a value would reach catalog.json
  as `NaN`, which is not JSON."""
  if isinstance(value, float) and not math.isfinite(value):
    return path or "<value>"
  if isinstance(value, dict):
    items = value.items()
  elif isinstance(value, list):
    items = enumerate(value)
  else:
    return None
  for k, v in items:
    found = non_finite_path(v, f"{path}.{k}" if path else str(k))
    if found is not None:
      return found
  return None


# ---------------------------------------------------------------------- column-wise numeric CSV
SCAN_BYTES = 64 << 20  # bytes per step of the pre-scan (bounds its memory)
_NUMBER_BYTES = b'0123456789+-.eE," \t\r\n'


def _plain_ascii(path: str) -> bool:
  """True when the body (after the header line) has only the bytes of plain numbers, no bare CR.

  Allowed: digits, sign, point, exponent e/E, comma, quote, space, tab, CR LF. That keeps out what
  pyarrow would read but Python's int()/float() reject (0x10 hex, 1_0 is refused by pyarrow
  anyway) and every non-ASCII byte; nan/inf fall back too. A bare CR ends a line for pyarrow but
  not for the row reader.
  """
  zf, f = _open_binary(path)
  try:
    first, prev_cr = True, False
    while True:
      block = f.read(SCAN_BYTES)
      if first:
        end = block.find(b"\n")
        if end < 0:
          return False  # empty, or a header without a newline (or over 64 MB): row reader decides
        block, first = block[end + 1 :], False
      if not block:
        return not prev_cr
      if block.translate(None, _NUMBER_BYTES):
        return False
      if prev_cr and not block.startswith(b"\n"):
        return False
      if block.count(b"\r") != block.count(b"\r\n") + block.endswith(b"\r"):
        return False
      prev_cr = block.endswith(b"\r")
  finally:
    f.close()
    if zf is not None:
      zf.close()


def read_numeric_columns(path: str, columns: dict[str, str]) -> dict[str, np.ndarray] | None:
  """Columns of an all-number CSV read column-wise by pyarrow ({name: "int" | "float"}).

  Returns int64 / float64 arrays, or None when the file is not in the plain form (non-ASCII bytes,
  a bare CR, a header without exactly the requested columns once each, a value pyarrow cannot
  parse as a number of its column's type, an empty value, a wrong field count, an int64
  overflow, a non-finite float): the caller then reads the file row by row (iter_csv), which names
  file, line and field of the first bad row. A value pyarrow does parse has the value Python's
  int()/float() give it, so both paths agree; other range checks (>= 0, known ids) are the caller's.
  """
  import pyarrow as pa  # local: only this reader needs it
  from pyarrow import csv as pa_csv

  if not _plain_ascii(path):
    return None
  zf, f = _open_binary(path)
  try:
    head = f.readline()
    if head.startswith(BOM):
      head = head[len(BOM) :]
    if not head.isascii():
      return None  # the pre-scan checked the body only: the row reader decodes the header
    names = next(csv.reader([head.decode("ascii").rstrip("\r\n")]), [])
    if sorted(names) != sorted(columns):
      return None  # other or repeated columns: the row reader checks those rows' text
    types = {c: pa.int64() if t == "int" else pa.float64() for c, t in columns.items()}
    try:
      table = pa_csv.read_csv(
        f,
        read_options=pa_csv.ReadOptions(column_names=names, block_size=16 << 20),
        parse_options=pa_csv.ParseOptions(newlines_in_values=False, ignore_empty_lines=True),
        convert_options=pa_csv.ConvertOptions(
          column_types=types,
          null_values=[],
          strings_can_be_null=False,
          quoted_strings_can_be_null=False,
        ),
      )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError, ValueError):
      return None
  finally:
    f.close()
    if zf is not None:
      zf.close()
  out = {}
  for c in columns:
    col = table.column(c)
    if col.null_count:
      return None
    out[c] = np.ascontiguousarray(
      col.to_numpy(), dtype=np.int64 if columns[c] == "int" else np.float64
    )
    if columns[c] == "float" and not np.isfinite(out[c]).all():
      return None  # e.g. 1e400 -> inf: parse_float calls that a bad row
  return out
