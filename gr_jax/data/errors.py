"""Errors for bad input data, and the bookkeeping of skipped rows.

Every loader reports bad input through `DataError`, which names the file, the line (1-based; 0 when
the problem is not tied to a line) and the field, and says what was expected. With
`data.skip_bad_rows=True` a loader calls `BadRows.skip(...)` instead, which counts the row by reason
so that the manifest records what was left out: nothing is dropped silently.
"""

from __future__ import annotations

import collections
import dataclasses


class DataError(ValueError):
  """Bad input data: names file, line and field and what was expected."""

  def __init__(self, file: str, line: int, field: str, message: str):
    self.file = str(file)
    self.line = int(line)
    self.field = field
    self.message = message
    where = f"{self.file}:{self.line}" if self.line > 0 else self.file
    super().__init__(f"{where}: field {field!r}: {message}")


@dataclasses.dataclass
class BadRows:
  """Raises on bad rows, or (skip=True) counts them by `file: reason` for the manifest."""

  skip: bool = False
  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: dict = dataclasses.field(default_factory=dict)

  def bad(self, file: str, line: int, field: str, message: str, reason: str | None = None):
    """Handles one bad row: raise DataError, or count it when skipping is configured."""
    err = DataError(file, line, field, message)
    if not self.skip:
      raise err
    import os  # local: keeps the module import light

    key = f"{os.path.basename(str(file))}: {reason or field}"
    self.counts[key] += 1
    # Keep the first message of each kind so a user can find one offending row.
    self.examples.setdefault(key, str(err))

  def to_dict(self) -> dict:
    return {
      "total": int(sum(self.counts.values())),
      "by_reason": {k: int(v) for k, v in sorted(self.counts.items())},
      "first_example": dict(sorted(self.examples.items())),
    }
