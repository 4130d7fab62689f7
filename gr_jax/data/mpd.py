"""Million Playlist Dataset slices (`mpd.slice.<start>-<end>.json`, read in numeric slice order).

Search: the playlist's name (normalised like a query) -> each of its tracks. Rec: the playlist's
tracks in `pos` order (prefix -> next track, leave-last-out in prepare); the playlist id is the
user.
Items are track URIs; title "track - artist", metadata album and artist. `data.mpd.max_slices`
limits how many slices are read (0 = all). JSON slices have no useful line numbers, so errors name
the slice file and the JSON path (e.g. playlists[3].tracks[2].track_uri) as the field.

No leak of held-out rec interactions: a playlist's name is not a query for the tracks that prepare
will hold out of that playlist (its last and second-to-last kept tracks, the rec test and valid
targets; see raw.search_pairs_without_heldout), else the joint model would train on
"name -> held-out next track" while Gen_R never sees it. The count goes to source_stats.

Values of the wrong JSON type are bad rows (an error naming slice and JSON path, or counted with
skip_bad_rows): pid an integer or string, name a string, tracks a list of objects with a string
track_uri, an integer pos and string track/artist/album names. A bad track drops its playlist; a
bad or empty name drops only the playlist's search pairs (its session stays).
"""

from __future__ import annotations

import array
import json
import logging
import os
import re
import time

import numpy as np

from gr_jax.data import raw as raw_lib
from gr_jax.data import textio
from gr_jax.data.errors import BadRows, DataError
from gr_jax.data.raw import RawData

_SLICE = re.compile(r"mpd\.slice\.(\d+)-(\d+)\.json$")
log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 30.0  # reading the full MPD takes ~10 minutes: a line at most this often


def slice_files(root: str) -> list[str]:
  """Slice files under root in numeric order; each real directory (and file) is read once.

  Symlinks are followed, but a directory reached again (a `..` link, two links to each other)
  is skipped by its realpath: a recursive glob would walk such loops until the path length
  limit, reading the same slices again (a bogus "duplicate pid") or hanging.
  """
  found, seen_dirs, seen_files = [], set(), set()
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    real = os.path.realpath(dirpath)
    if real in seen_dirs:
      dirnames[:] = []  # do not descend into a directory already walked
      continue
    seen_dirs.add(real)
    # Hidden entries skipped as the recursive glob did; sorted so that which of two links to one
    # directory is kept is deterministic.
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    for name in filenames:
      m = None if name.startswith(".") else _SLICE.search(name)
      path = os.path.join(dirpath, name)
      if m and os.path.realpath(path) not in seen_files:
        seen_files.add(os.path.realpath(path))
        found.append((int(m.group(1)), path))
  if not found:
    raise DataError(root, 0, "mpd.slice.*.json", "no MPD slice files found")
  return [p for _, p in sorted(found)]


_TRACK_TEXT = ("track_name", "artist_name", "album_name")


def _track_problem(tr) -> tuple[str, str] | None:
  """(field, what was expected) when a track entry is not usable, else None."""
  if not isinstance(tr, dict):
    return "", "expected a track object"
  uri = tr.get("track_uri")
  if not isinstance(uri, str) or not uri:
    return ".track_uri", f"expected a non-empty string, got {uri!r}"
  pos = tr.get("pos")
  if not isinstance(pos, int) or isinstance(pos, bool):
    return ".pos", f"expected an integer position, got {pos!r}"
  for key in _TRACK_TEXT:
    if key in tr and not isinstance(tr[key], str):
      return f".{key}", f"expected a string, got {tr[key]!r}"
  return None


# A slice that cannot be parsed counts as one bad row, yet loses all its playlists (1,000 in the
# real MPD): the reason says so, and source_stats counts such slices.
_WHOLE_SLICE = "whole slice skipped"


def _read_slice(path: str, bad: BadRows):
  """The slice's playlists list, or None when the slice is unreadable and skipped."""
  with open(path, "rb") as f:
    blob = f.read()
  try:
    doc = json.loads(blob.decode("utf-8"))
  except UnicodeDecodeError as e:
    line = blob[: e.start].count(b"\n") + 1
    bad.bad(
      path,
      line,
      "<bytes>",
      f"not valid UTF-8 ({e.reason})",
      reason=f"non-UTF-8 bytes, {_WHOLE_SLICE}",
    )
    return None
  except json.JSONDecodeError as e:
    bad.bad(
      path,
      e.lineno,
      "<json>",
      f"not valid JSON ({e.msg})",
      reason=f"unparsable JSON, {_WHOLE_SLICE}",
    )
    return None
  playlists = doc.get("playlists") if isinstance(doc, dict) else None
  if not isinstance(playlists, list):
    raise DataError(path, 0, "playlists", "expected a list of playlists (official MPD schema)")
  return playlists


def input_files(dc) -> list[str]:
  """The slice files `load(dc)` reads, in order (the first `data.mpd.max_slices` when > 0)."""
  files = slice_files(dc.path)
  if int(dc.mpd.max_slices) > 0:
    files = files[: int(dc.mpd.max_slices)]
  return files


def load(dc) -> RawData:
  bad = BadRows(skip=bool(dc.skip_bad_rows))
  raw = RawData(bad_rows=bad)
  files = input_files(dc)
  seen_tracks, seen_pids, slices_skipped = {}, {}, 0
  # The search side, built below as columns (`raw.PairColumns`): per named playlist its session
  # index and query, and its distinct tracks (catalogue order indices), concatenated.
  named_session, named_query, named_len = array.array("q"), array.array("q"), array.array("q")
  named_tracks = array.array("q")
  queries: dict[str, int] = {}
  t0 = last_log = time.monotonic()
  for n_read, path in enumerate(files, 1):
    raw.files.append(path)
    playlists = _read_slice(path, bad)
    slices_skipped += playlists is None
    for n, pl in enumerate(playlists or []):
      where = f"playlists[{n}]"
      if not isinstance(pl, dict) or "pid" not in pl or "tracks" not in pl:
        bad.bad(
          path, 0, where, "expected an object with pid, name and tracks", reason="bad playlist"
        )
        continue
      pid = textio.as_id(pl["pid"])
      if pid is None:
        bad.bad(
          path,
          0,
          f"{where}.pid",
          f"expected an integer or string, got {pl['pid']!r}",
          reason="bad pid",
        )
        continue
      if pid in seen_pids:
        bad.bad(
          path,
          0,
          f"{where}.pid",
          f"duplicate pid {pid} (first in {seen_pids[pid]})",
          reason="duplicate pid",
        )
        continue
      seen_pids[pid] = os.path.basename(path)
      tracks, ok = [], True
      for k, tr in enumerate(pl["tracks"] if isinstance(pl["tracks"], list) else [None]):
        problem = _track_problem(tr)
        if problem:
          bad.bad(
            path,
            0,
            f"{where}.tracks[{k}]{problem[0] or '.track_uri'}",
            problem[1],
            reason="bad track",
          )
          ok = False
          break
        tracks.append((tr["pos"], tr["track_uri"], tr))
      if not ok:
        continue
      tracks.sort(key=lambda t: t[0])
      uris, ks = [], []  # the catalogue's own string per track: the slice's copies go with it
      for _, uri, tr in tracks:
        k = seen_tracks.get(uri)
        if k is None:
          k = seen_tracks[uri] = len(raw.items)
          raw.items.append(uri)
          raw.titles.append(f"{tr.get('track_name', '')} - {tr.get('artist_name', '')}")
          raw.metadata.append(
            {"artist": tr.get("artist_name", ""), "album": tr.get("album_name", "")}
          )
        uris.append(raw.items[k])
        ks.append(k)
      name = textio.as_text(pl.get("name", ""))
      if name is None:
        bad.bad(
          path,
          0,
          f"{where}.name",
          f"expected a string (the search query), got {pl.get('name')!r}",
          reason="bad name",
        )
      elif not " ".join(name.split()):
        bad.bad(
          path, 0, f"{where}.name", "empty playlist name (the search query)", reason="empty query"
        )
      else:
        distinct = list(dict.fromkeys(ks))
        named_session.append(len(raw.sessions))
        named_query.append(queries.setdefault(" ".join(name.lower().split()), len(queries)))
        named_len.append(len(distinct))
        named_tracks.extend(distinct)
      raw.sessions.append((pid, uris))
    playlists = tracks = None  # one slice in memory: free this one before reading the next
    now = time.monotonic()
    if now - last_log >= PROGRESS_EVERY_S or n_read == len(files):
      last_log = now
      log.info(
        "MPD: read %d/%d slices (%d playlists, %d tracks) in %.0f s, ETA %.0f s",
        n_read,
        len(files),
        len(raw.sessions),
        len(raw.items),
        now - t0,
        (now - t0) / n_read * (len(files) - n_read),
      )
  if not raw.sessions:
    raise DataError(
      files[0] if len(files) == 1 else dc.path,
      0,
      "playlists",
      f"no usable playlist in {len(files)} slice file(s)",
    )

  lens = np.frombuffer(named_len, np.int64)
  pair_session = np.repeat(np.frombuffer(named_session, np.int64), lens)
  pair_query = np.repeat(np.frombuffer(named_query, np.int64), lens).astype(np.int32)
  pair_item = np.frombuffer(named_tracks, np.int64).astype(np.int32)
  del named_session, named_query, named_len, named_tracks
  # One int64 key per pair (session, track): a playlist's distinct tracks make the keys unique.
  n_items = max(len(raw.items), 1)
  pair_key = pair_session * n_items + pair_item
  del pair_session
  session_of = {pid: k for k, (pid, _) in enumerate(raw.sessions)}
  query_texts = list(queries)

  def build(heldout):
    held = np.fromiter(
      (session_of[user] * n_items + seen_tracks[item] for user, item in heldout),
      np.int64,
      len(heldout),
    )
    keep = ~np.isin(pair_key, held) if len(held) else np.ones(len(pair_key), bool)
    return raw_lib.PairColumns(query_texts, raw.items, pair_query[keep], pair_item[keep])

  raw.search_pairs, _, leak_stats = raw_lib.search_pairs_without_heldout(build, raw.sessions, dc)
  raw.stats = {
    "slices": len(files),
    "slices_skipped": slices_skipped,
    "playlists": len(raw.sessions),
    **leak_stats,
  }
  return raw
