"""A MovieLens directory of ML-25M's shape for `prepare` benchmarks (no real data: licences).

ratings.csv (userId,movieId,rating,timestamp; Zipf-like movie popularity, heavy-tailed user
activity of at least 20 ratings, timestamps increasing per user), movies.csv (quoted titles with
commas, 1-3 genres) and tags.csv (Zipf-like tag words, some quoted). Defaults are ML-25M's counts:
25,000,095 ratings, 162,541 users, 59,047 movies, 1,093,360 tags.

  python bench/generate_movielens.py --out /tmp/scale/ml25m
  python bench/generate_movielens.py --out /tmp/scale/ml5m --ratings 5000000
"""

import argparse
import os

import numpy as np

GENRES = (
  "Action Adventure Animation Children Comedy Crime Documentary Drama Fantasy Film-Noir Horror "
  "Musical Mystery Romance Sci-Fi Thriller War Western"
).split()


def _movies(path, mids, rng):
  with open(path, "w") as f:
    f.write("movieId,title,genres\n")
    for i, m in enumerate(mids.tolist()):
      g = "|".join(sorted(set(rng.choice(GENRES, rng.integers(1, 4)).tolist())))
      year = 1900 + i % 120
      title = f"Movie {m}, The ({year})" if i % 7 == 0 else f"Film {m}, part {i % 5} ({year})"
      f.write(f'{m},"{title}",{g}\n')


def _ratings(path, mids, popularity, n_rows, n_users, rng):
  n_movies = len(mids)
  # Heavy-tailed ratings per user, at least 20 each (as in MovieLens), summing to n_rows.
  counts = rng.pareto(1.2, n_users) + 1
  counts = np.floor(counts / counts.sum() * (n_rows - 20 * n_users)).astype(np.int64) + 20
  counts[np.argmax(counts)] += n_rows - counts.sum()
  values = np.array("0.5 1.0 1.5 2.0 2.5 3.0 3.5 4.0 4.5 5.0".split())
  with open(path, "w") as f:
    f.write("userId,movieId,rating,timestamp\n")
    for a in range(0, n_users, 2000):
      users = np.arange(a, min(a + 2000, n_users))
      c = counts[users]
      total = int(c.sum())
      u = np.repeat(users + 1, c)
      m = mids[rng.choice(n_movies, total, p=popularity)]
      r = values[rng.integers(0, 10, total)]
      start = np.repeat(rng.integers(789652009, 1500000000, len(users)), c)
      step = rng.integers(1, 5000, total)
      cs = np.cumsum(step)
      first = np.repeat(np.concatenate([[0], np.cumsum(c)[:-1]]), c)
      ts = start + cs - cs[first] + step[first]  # increasing within each user
      cols = (u.astype(str), m.astype(str), r, ts.astype(str))
      line = cols[0]
      for col in cols[1:]:
        line = np.char.add(np.char.add(line, ","), col)
      f.write("\n".join(line.tolist()) + "\n")


def _tags(path, mids, popularity, n_tags, rng):
  words = [f"tag{i}" for i in range(70000)]
  w = 1.0 / np.arange(1, len(words) + 1) ** 1.1
  w /= w.sum()
  users = rng.integers(1, 14593, n_tags)
  movies = mids[rng.choice(len(mids), n_tags, p=popularity)]
  tags = rng.choice(len(words), n_tags, p=w)
  stamps = rng.integers(1135429210, 1574000000, n_tags)
  with open(path, "w") as f:
    f.write("userId,movieId,tag,timestamp\n")
    for a, b, c, d in zip(users.tolist(), movies.tolist(), tags.tolist(), stamps.tolist()):
      tag = f'"{words[c]}, quoted"' if c % 11 == 0 else words[c] + (" Movie" if c % 3 == 0 else "")
      f.write(f"{a},{b},{tag},{d}\n")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--ratings", type=int, default=25_000_095)
  p.add_argument("--users", type=int, default=162_541)
  p.add_argument("--movies", type=int, default=59_047)
  p.add_argument("--tags", type=int, default=1_093_360)
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args()
  if a.ratings < 20 * a.users:
    p.error("--ratings must be at least 20 x --users (every MovieLens user has 20 ratings)")
  os.makedirs(a.out, exist_ok=True)
  rng = np.random.default_rng(a.seed)
  mids = np.sort(rng.choice(np.arange(1, 210000), a.movies, replace=False))
  _movies(os.path.join(a.out, "movies.csv"), mids, rng)
  w = 1.0 / np.arange(1, a.movies + 1) ** 0.9
  popularity = (w / w.sum())[np.argsort(rng.permutation(a.movies))]
  _ratings(os.path.join(a.out, "ratings.csv"), mids, popularity, a.ratings, a.users, rng)
  _tags(os.path.join(a.out, "tags.csv"), mids, popularity, a.tags, rng)
  print(f"wrote {a.out}: {a.ratings} ratings, {a.users} users, {a.movies} movies, {a.tags} tags")


if __name__ == "__main__":
  main()
