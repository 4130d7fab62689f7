"""Million Playlist Dataset slices (`mpd.slice.<start>-<end>.json`, read in numeric slice order).

Search: the playlist's name (normalised like a query) -> each of its tracks. Rec: the playlist's
tracks in `pos` order (prefix -> next track, leave-last-out in prepare); the playlist id is the user.
Items are track URIs; title "track - artist", metadata album and artist. `data.mpd.max_slices`
limits how many slices are read (0 = all). JSON slices have no useful line numbers, so errors name
the slice file and the JSON path (e.g. playlists[3].tracks[2].track_uri) as the field.
"""

from __future__ import annotations

import glob
import json
import os
import re

from gr_jax.data.errors import BadRows, DataError
from gr_jax.data.raw import RawData

_SLICE = re.compile(r"mpd\.slice\.(\d+)-(\d+)\.json$")


def slice_files(root: str) -> list[str]:
  found = []
  for path in glob.glob(os.path.join(root, "**", "mpd.slice.*.json"), recursive=True):
    m = _SLICE.search(os.path.basename(path))
    if m:
      found.append((int(m.group(1)), path))
  if not found:
    raise DataError(root, 0, "mpd.slice.*.json", "no MPD slice files found")
  return [p for _, p in sorted(found)]


def load(dc) -> RawData:
  bad = BadRows(skip=bool(dc.skip_bad_rows))
  raw = RawData(bad_rows=bad)
  files = slice_files(dc.path)
  if int(dc.mpd.max_slices) > 0:
    files = files[:int(dc.mpd.max_slices)]
  seen_tracks, seen_pids = {}, {}
  for path in files:
    raw.files.append(path)
    with open(path, "rb") as f:
      blob = f.read()
    try:
      doc = json.loads(blob.decode("utf-8"))
    except UnicodeDecodeError as e:
      line = blob[:e.start].count(b"\n") + 1
      bad.bad(path, line, "<bytes>", f"not valid UTF-8 ({e.reason})", reason="non-UTF-8 bytes")
      continue
    except json.JSONDecodeError as e:
      bad.bad(path, e.lineno, "<json>", f"not valid JSON ({e.msg})", reason="unparsable JSON")
      continue
    playlists = doc.get("playlists") if isinstance(doc, dict) else None
    if not isinstance(playlists, list):
      raise DataError(path, 0, "playlists", "expected a list of playlists (official MPD schema)")
    for n, pl in enumerate(playlists):
      where = f"playlists[{n}]"
      if not isinstance(pl, dict) or "pid" not in pl or "tracks" not in pl:
        bad.bad(path, 0, where, "expected an object with pid, name and tracks",
                reason="bad playlist")
        continue
      pid = str(pl["pid"])
      if pid in seen_pids:
        bad.bad(path, 0, f"{where}.pid", f"duplicate pid {pid} (first in {seen_pids[pid]})",
                reason="duplicate pid")
        continue
      seen_pids[pid] = os.path.basename(path)
      tracks, ok = [], True
      for k, tr in enumerate(pl["tracks"] if isinstance(pl["tracks"], list) else [None]):
        if not isinstance(tr, dict) or not tr.get("track_uri") or "pos" not in tr:
          bad.bad(path, 0, f"{where}.tracks[{k}].track_uri", "expected a track with track_uri "
                  "and pos", reason="bad track")
          ok = False
          break
        tracks.append((tr["pos"], str(tr["track_uri"]), tr))
      if not ok:
        continue
      tracks.sort(key=lambda t: t[0])
      for _, uri, tr in tracks:
        if uri not in seen_tracks:
          seen_tracks[uri] = len(raw.items)
          raw.items.append(uri)
          raw.titles.append(f"{tr.get('track_name', '')} - {tr.get('artist_name', '')}")
          raw.metadata.append({"artist": tr.get("artist_name", ""),
                               "album": tr.get("album_name", "")})
      name = " ".join(str(pl.get("name", "")).lower().split())
      if not name:
        bad.bad(path, 0, f"{where}.name", "empty playlist name (the search query)",
                reason="empty query")
      else:
        for uri in dict.fromkeys(u for _, u, _ in tracks):
          raw.search_pairs.append((name, uri, ""))
      raw.sessions.append((pid, [u for _, u, _ in tracks]))
  raw.stats = {"slices": len(files), "playlists": len(raw.sessions)}
  return raw
