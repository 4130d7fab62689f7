"""Million Playlist Dataset: search = playlist name -> its tracks; rec = track prefix -> next track.

The MPD cannot be redistributed: download it yourself and point `path` at the directory holding
`data/mpd.slice.*.json` (or the slices themselves). `slices=N` limits how many slices are read
(numeric order), useful for a first run. A playlist's name is not a query for its own held-out
rec targets (its last two kept tracks); the manifest's source_stats counts the pairs left out.

Arg: path=DIR, slices=N (default 10), size=small, init=DIR, seeds=N, epochs=N.
Runtime: 10 slices (10k playlists), small preset: about an hour on a 2-core CPU, minutes on one GPU.
Expected result: Gen_R+S ahead of both task-specific models on R@30 (paper: +16% on average).

  python -m gr_jax.reproduce --config configs/mpd.py:path=/data/mpd,slices=10 --workdir runs/mpd
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, path="", slices=10, size="small", init="", seeds=2, epochs=5)
  c = common.real_data(name="mpd", source="mpd", args=args)
  c.data.mpd.max_slices = args["slices"]
  return c
