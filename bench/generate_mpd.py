"""Million Playlist Dataset slices of the official schema for `prepare` benchmarks (no real data).

Each slice holds 1,000 playlists (lengths geometric around 66 tracks, 5-250) over a catalogue of
2,262,292 tracks with Zipf-like popularity, names from a few common playlist titles, and every
field of the official JSON schema; pretty-printed like the real slices (~25 MB each) unless
--compact.

  python bench/generate_mpd.py --out /tmp/scale/mpd --slices 30
"""

import argparse
import json
import os

import numpy as np

NAMES = ("chill", "workout", "party", "country", "rap", "Road Trip", "summer", "throwbacks", "rock")
N_TRACKS, N_ARTISTS, N_ALBUMS = 2_262_292, 295_860, 734_684


def _track(pos: int, t: int) -> dict:
  return {
    "pos": pos,
    "artist_name": f"Artist {t % N_ARTISTS}",
    "track_uri": f"spotify:track:{t:022d}",
    "artist_uri": f"spotify:artist:{t % N_ARTISTS:022d}",
    "track_name": f"Track {t}",
    "album_uri": f"spotify:album:{t % N_ALBUMS:022d}",
    "duration_ms": 200000 + t % 100000,
    "album_name": f"Album {t % N_ALBUMS}",
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--slices", type=int, required=True)
  p.add_argument("--first_slice", type=int, default=0, help="index of the first slice to write")
  p.add_argument("--compact", action="store_true", help="no indentation (about half the bytes)")
  p.add_argument("--seed", type=int, default=1)
  a = p.parse_args()
  os.makedirs(a.out, exist_ok=True)
  w = 1.0 / np.arange(1, N_TRACKS + 1) ** 0.8
  cdf = np.cumsum(w / w.sum())
  for s in range(a.first_slice, a.first_slice + a.slices):
    rng = np.random.default_rng([a.seed, s])  # each slice on its own: slices can be added later
    start = s * 1000
    lens = np.clip(rng.geometric(1 / 66, 1000), 5, 250)
    ids = np.searchsorted(cdf, rng.random(int(lens.sum())))
    playlists, k = [], 0
    for i, n in enumerate(lens.tolist()):
      tracks = [_track(pos, t) for pos, t in enumerate(ids[k : k + n].tolist())]
      k += n
      playlists.append(
        {
          "name": f"{NAMES[i % len(NAMES)]} {i % 97}",
          "collaborative": "false",
          "pid": start + i,
          "modified_at": 1493424000,
          "num_tracks": n,
          "num_albums": n,
          "num_followers": 1,
          "tracks": tracks,
          "num_edits": 3,
          "duration_ms": 1,
          "num_artists": n,
        }
      )
    info = {"generated_on": "2017-12-03", "slice": f"{start}-{start + 999}", "version": "v1"}
    with open(os.path.join(a.out, f"mpd.slice.{start}-{start + 999}.json"), "w") as f:
      json.dump({"info": info, "playlists": playlists}, f, indent=None if a.compact else 2)
  print(f"wrote {a.slices} slices to {a.out}")


if __name__ == "__main__":
  main()
