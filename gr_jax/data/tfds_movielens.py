"""MovieLens through tensorflow-datasets (optional; needs tensorflow + tensorflow-datasets).

Difference from the CSV loader: the TFDS `movielens/<variant>-ratings` builds carry ratings, movie
ids, titles and genres but **no user tags**, so search queries come from titles and genres only
(`data.movielens.query_sources` is restricted to those). `data.path` is the TFDS data_dir; the
variant is `25m` unless the path names another (e.g. ".../latest-small"). Not installed in this
project's environment: importing fails with a clear message. Never downloads (download=False):
a data_dir without the prepared dataset is a one-line error naming it.
"""

from __future__ import annotations

import collections
import os

from gr_jax.data.errors import BadRows, DataError
from gr_jax.data.raw import RawData


def load(dc) -> RawData:
  try:
    import tensorflow_datasets as tfds  # noqa: F401  (optional dependency)
  except ImportError as e:
    raise DataError(
      "<tensorflow_datasets>",
      0,
      "data.source",
      "source 'tfds_movielens' needs tensorflow and tensorflow-datasets "
      "(pip install tensorflow tensorflow-datasets); or use source 'movielens' with "
      f"the GroupLens CSV files, which also has tags ({e})",
    ) from e
  variant = "latest-small" if "small" in dc.path else "25m"
  name = f"movielens/{variant}-ratings"
  if not os.path.isdir(dc.path):
    raise DataError(
      dc.path,
      0,
      "data.path",
      f"TFDS data_dir not found (expected a directory "
      f"holding the prepared {name} dataset; nothing is downloaded)",
    )
  try:
    # download=False: this project never downloads; tfds.load's default would fetch MovieLens.
    ds = tfds.load(name, split="train", data_dir=dc.path, download=False)
  except Exception as e:  # pylint: disable=broad-except  (tfds raises assorted types here)
    detail = " ".join(str(e).split())[:300]
    raise DataError(
      dc.path,
      0,
      "data.path",
      f"{name} is not prepared in this TFDS data_dir "
      f"(nothing is downloaded: run tfds build {name} --data_dir {dc.path} where "
      f"downloads are allowed, then copy it here) ({type(e).__name__}: {detail})",
    ) from e
  raw = RawData(bad_rows=BadRows(skip=bool(dc.skip_bad_rows)))
  titles, genres, events = {}, {}, collections.defaultdict(list)
  for ex in tfds.as_numpy(ds):
    mid = ex["movie_id"].decode()
    titles[mid] = ex["movie_title"].decode()
    genres[mid] = [str(g) for g in ex["movie_genres"].tolist()]
    if float(ex["user_rating"]) >= float(dc.movielens.min_rating):
      events[ex["user_id"].decode()].append((int(ex["timestamp"]), mid))
  raw.items = sorted(titles)
  raw.titles = [titles[m] for m in raw.items]
  raw.metadata = [{"genres": genres[m]} for m in raw.items]
  raw.sessions = [(u, [m for _, m in sorted(v)]) for u, v in sorted(events.items())]
  pairs = set()
  for m, t in zip(raw.items, raw.titles):
    if "titles" in dc.movielens.query_sources or "tags" in dc.movielens.query_sources:
      pairs.add((t.lower(), m))
  raw.search_pairs = [(q, m, "") for q, m in sorted(pairs)]
  raw.stats = {"tfds_variant": variant, "note": "no tags in TFDS: queries from titles"}
  return raw
