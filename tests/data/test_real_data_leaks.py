"""Real-data loaders without leaks: no held-out rec interaction becomes a search training pair.

A session's rec valid and test targets (its second-to-last and last item after prepare's item
filter) must not give its user/playlist a search pair for that item: the joint model would train
on it while Gen_R never does. Checked on synthetic MovieLens CSVs and MPD slices, and on
ml-latest-small against the targets prepare actually holds out.
"""

import collections
import csv
import json
import os
import shutil

import numpy as np

from gr_jax.data import ProcessedDataset, jsonl, movielens, mpd, prepare_dataset
from gr_jax.data.movielens import normalise_tag
from tests.data.conftest import DATA
from tests.data.test_loaders import _cfg, _mpd_slice, _playlist, _write_jsonl, _write_ml

ML = os.path.join(DATA, "ml-latest-small")


def _actual_heldout(raw, ds):
  """(user, item) of every rec valid/test target that prepare holds out of training, checked
  against the processed dataset's arrays.

  prepare keeps the loader's session order and drops sessions left shorter than 3 by its item
  filter (the catalogue); each kept session's last two items are held out of training. The splits
  hold them in session order: all of them under data.heldout_coverage_rule="paper" (the i-th test
  row is the i-th surviving session's), only those that are training targets of both tasks under
  "trained_in_both" (the default). The assertions below check that this reproduces every target.
  """
  kept = [(u, [i for i in items if i in ds.catalog]) for u, items in raw.sessions]
  kept = [(u, items) for u, items in kept if len(items) >= 3]
  test = [ds.catalog.item_id(i) for i in ds.split("rec", "test")["target_item"]]
  valid = [ds.catalog.item_id(i) for i in ds.split("rec", "valid")["target_item"]]
  if ds.manifest.get("heldout_coverage_rule", "paper") == "paper":
    evaluated = list
  else:
    both = {ds.catalog.item_id(i) for i in _train_targets(ds, "search") & _train_targets(ds, "rec")}

    def evaluated(items):
      return [i for i in items if i in both]

  assert evaluated([items[-1] for _, items in kept]) == test
  assert evaluated([items[-2] for _, items in kept]) == valid
  return {(u, items[-1]) for u, items in kept} | {(u, items[-2]) for u, items in kept}


def _train_targets(ds, task):
  return set(ds.split(task, "train")["target_item"].tolist())


# ---------------------------------------------------------------------- MovieLens
def _tag_rows(path):
  with open(path, newline="", encoding="utf-8-sig") as f:
    return [(r["userId"], normalise_tag(r["tag"]), r["movieId"]) for r in csv.DictReader(f)]


def _check_no_tag_leak(raw, tag_rows, heldout, min_users=2):
  """Every search pair (tag, movie) has a supporting tag row by a user for whom the movie is not
  held out, and its tag is used by >= min_users distinct users on such rows."""
  clean = [(u, t, m) for u, t, m in tag_rows if (u, m) not in heldout]
  support = collections.defaultdict(set)
  users_of = collections.defaultdict(set)
  for u, t, m in clean:
    support[(t, m)].add(u)
    users_of[t].add(u)
  assert raw.search_pairs
  for q, m, _ in raw.search_pairs:
    assert support[(q, m)], f"search pair ({q!r}, {m}) only from held-out rec interactions"
    assert len(users_of[q]) >= min_users, f"private tag {q!r}"


def test_movielens_small_has_no_heldout_tag_pairs(tmp_path):
  c = _cfg("movielens", ML, tokenizer__vocab_size=800)
  raw = movielens.load(c.data)
  ds = ProcessedDataset(prepare_dataset(c, str(tmp_path / "ds")))
  heldout = _actual_heldout(raw, ds)
  tag_rows = _tag_rows(os.path.join(ML, "tags.csv"))
  _check_no_tag_leak(raw, tag_rows, heldout)
  # The rule matters on this data: some tag rows sit on their tagger's held-out movies.
  assert any((u, m) in heldout for u, t, m in tag_rows)
  stats = ds.manifest["source_stats"]
  assert stats["search_pairs_dropped_heldout"] > 0 and stats["tag_rows_heldout"] > 0
  assert stats["search_pairs"] == len(raw.search_pairs)


def _check_heldout_not_in_history(ds):
  """No rec valid/test target is an item of the history it is predicted from."""
  for split in ("valid", "test"):
    arrays = ds.split("rec", split)
    histories = arrays["encoder_input_ids"].item_histories()
    for k, target in enumerate(arrays["target_item"].tolist()):
      assert target not in histories[k], (split, k, ds.catalog.item_id(target))


def test_movielens_duplicate_rows_removed_and_counted(tmp_path):
  # ml-latest-small with 1 row in 200 repeated (as a file concatenated twice would): before,
  # exit 0 with more ratings_kept and, for some users, the test target equal to the valid one
  # and already in the user's history.
  raw_dir = tmp_path / "ml"
  raw_dir.mkdir()
  for name in ("movies.csv", "tags.csv"):
    shutil.copy(os.path.join(ML, name), raw_dir / name)
  with open(os.path.join(ML, "ratings.csv")) as f:
    header, *rows = f.read().splitlines()
  dup = rows[::200]
  mixed = []
  for k, row in enumerate(rows):
    mixed.append(row)
    if k % 200 == 0:
      mixed.append(row)  # right after itself: the same user, movie and timestamp
  (raw_dir / "ratings.csv").write_text("\n".join([header, *mixed, *dup[:50]]) + "\n")
  # Every session's held-out rows (the paper's rule): valid and test rows align by session.
  c = _cfg("movielens", raw_dir, tokenizer__vocab_size=800, heldout_coverage_rule="paper")
  raw = movielens.load(c.data)
  clean = movielens.load(_cfg("movielens", ML, tokenizer__vocab_size=800).data)
  assert raw.sessions == clean.sessions and raw.search_pairs == clean.search_pairs
  assert raw.stats["duplicate_rows_removed"] == len(dup) + 50
  assert raw.stats["replaced_ratings_removed"] == 0
  assert raw.stats["ratings_kept"] == clean.stats["ratings_kept"] == len(rows)
  ds = ProcessedDataset(prepare_dataset(c, str(tmp_path / "ds")))
  assert ds.manifest["source_stats"]["duplicate_rows_removed"] == len(dup) + 50
  # The leak invariant after deduplication: every session's movies are distinct, so no held-out
  # target is also in its user's history, and a user's valid and test targets differ.
  assert all(len(set(items)) == len(items) for _, items in raw.sessions)
  _actual_heldout(raw, ds)
  _check_heldout_not_in_history(ds)
  valid, test = ds.split("rec", "valid")["target_item"], ds.split("rec", "test")["target_item"]
  assert not (valid == test).any()


def test_movielens_rerating_keeps_the_latest_rating(tmp_path):
  # _write_ml's user 2 rates movie 3 at 2.0 (t=5) and again at 4.0 (t=8): before, the session
  # was [3, 1, 2, 3], its test target 3 already in its history.
  raw = movielens.load(_cfg("movielens", _write_ml(tmp_path / "raw")).data)
  assert dict(raw.sessions)["2"] == ["1", "2", "3"]
  assert raw.stats["replaced_ratings_removed"] == 1 and raw.stats["duplicate_rows_removed"] == 0
  users = np.asarray([1, 1, 1, 2, 2, 1])
  movies = np.asarray([5, 5, 6, 5, 5, 5])
  stamps = np.asarray([10, 10, 3, 1, 1, 20])
  keep, exact, replaced = movielens.dedup_ratings(users, movies, stamps)
  # User 1 rated movie 5 at 10 (twice) and again at 20: the latest stays; user 2's copy is exact.
  assert keep.tolist() == [False, False, True, False, True, True]
  assert (exact, replaced) == (1, 2)


def test_jsonl_duplicate_events_removed_and_counted(tmp_path):
  sessions = [
    # t1 twice at timestamp 2 (one exact duplicate), then a second line repeating two events
    {"user": "u1", "items": ["t0", "t1", "t1", "t2", "t3"], "timestamps": [1, 2, 2, 3, 4]},
    {"user": "u1", "items": ["t3", "t4"], "timestamps": [4, 5]},
    {"user": "u2", "items": ["t4", "t5", "t0", "t0"], "timestamps": [1, 2, 3, 3]},
    {"user": "u2", "items": ["t4", "t5"], "timestamps": [1, 2]},  # all seen: the line goes
    {"user": "u3", "items": ["t1", "t2", "t1"]},  # no timestamps: a repeat may be a re-listen
  ]
  d = _write_jsonl(tmp_path / "raw", sessions=sessions)
  raw = jsonl.load(_cfg("jsonl", d).data)
  assert raw.sessions == [
    ("u1", ["t0", "t1", "t2", "t3"]),
    ("u1", ["t4"]),
    ("u2", ["t4", "t5", "t0"]),
    ("u3", ["t1", "t2", "t1"]),
  ]
  assert raw.stats["duplicate_rows_removed"] == 1 + 1 + 1 + 2
  # Every session's held-out rows (the paper's rule), to read leave-last-out off them.
  c = _cfg(
    "jsonl",
    d,
    search_valid_fraction=0.0,
    search_test_fraction=0.0,
    heldout_coverage_rule="paper",
  )
  ds = ProcessedDataset(prepare_dataset(c, str(tmp_path / "ds")))
  assert ds.manifest["source_stats"]["duplicate_rows_removed"] == 5
  idx = ds.catalog.index
  np.testing.assert_array_equal(
    ds.split("rec", "test")["target_item"], [idx("t3"), idx("t0"), idx("t1")]
  )
  np.testing.assert_array_equal(
    ds.split("rec", "valid")["target_item"], [idx("t2"), idx("t5"), idx("t2")]
  )


ML_MOVIES = "movieId,title,genres\n" + "".join(f"{m},Movie {m} (2000),Drama\n" for m in range(1, 8))


def test_movielens_heldout_tags_dropped_even_after_the_item_filter(tmp_path):
  # User 1 rates 1..5 in order; movie 5 (raw last) has no tag, so prepare's item filter removes it
  # and the held-out targets become 4 (test) and 3 (valid). User 1's tags on 3 and 4 must go;
  # users 2 and 3 tag them alike while 3 and 4 are training items for them: those pairs stay.
  ratings = (
    "userId,movieId,rating,timestamp\n"
    + "".join(f"1,{m},4.0,{m}\n" for m in (1, 2, 3, 4, 5))
    + "".join(f"{u},{m},4.0,{10 + k}\n" for u in (2, 3) for k, m in enumerate((3, 4, 1, 2, 6, 7)))
  )
  tags = (
    "userId,movieId,tag,timestamp\n"
    "1,1,alpha,1\n2,1,alpha,1\n1,2,beta,1\n2,2,beta,1\n"
    "1,3,gamma,1\n1,4,delta,1\n1,4,alpha,1\n"  # on user 1's held-out movies
    "2,3,gamma,1\n3,3,gamma,1\n2,4,delta,1\n3,4,delta,1\n"
    # 6 and 7 are users 2 and 3's held-out movies, tagged by users who did not rate them
    "1,6,seventh,1\n4,6,seventh,1\n1,7,seventh,1\n"
  )
  d = _write_ml(tmp_path / "raw", movies=ML_MOVIES, ratings=ratings, tags=tags)
  c = _cfg("movielens", d, search_valid_fraction=0.0, search_test_fraction=0.0)
  raw = movielens.load(c.data)
  ds = ProcessedDataset(prepare_dataset(c, str(tmp_path / "ds")))
  heldout = _actual_heldout(raw, ds)
  assert heldout == {("1", "3"), ("1", "4"), ("2", "6"), ("2", "7"), ("3", "6"), ("3", "7")}
  pairs = {(q, m) for q, m, _ in raw.search_pairs}
  assert pairs == {
    ("alpha", "1"),
    ("beta", "2"),
    ("gamma", "3"),
    ("delta", "4"),
    ("seventh", "6"),
    ("seventh", "7"),
  }  # not ("alpha", "4"): user 1's only
  _check_no_tag_leak(raw, _tag_rows(os.path.join(d, "tags.csv")), heldout)
  assert raw.stats["tag_rows_heldout"] == 3
  assert raw.stats["search_pairs_dropped_heldout"] == 1


def test_movielens_private_tag_dropped(tmp_path):
  ratings = "userId,movieId,rating,timestamp\n" + "".join(
    f"{u},{m},4.0,{m}\n" for u in (1, 2) for m in (1, 2, 3, 4, 5)
  )
  tags = (
    "userId,movieId,tag,timestamp\n"
    "1,1,mine,1\n1,2,mine,1\n1,2,Mine!,1\n"  # used 3 times, but by one user only
    "1,1,shared,1\n2,2,shared,1\n"
  )
  d = _write_ml(tmp_path / "raw", movies=ML_MOVIES, ratings=ratings, tags=tags)
  raw = movielens.load(_cfg("movielens", d).data)
  assert {(q, m) for q, m, _ in raw.search_pairs} == {("shared", "1"), ("shared", "2")}
  assert raw.stats["tag_rows_below_min_tag_count"] == 3
  raw1 = movielens.load(_cfg("movielens", d, movielens__min_tag_count=1).data)
  assert ("mine", "1") in {(q, m) for q, m, _ in raw1.search_pairs}


# ---------------------------------------------------------------------- MPD
def test_mpd_playlist_name_not_a_query_for_its_heldout_tracks(tmp_path):
  d = tmp_path / "mpd"
  # "x" occurs only as the last track of "rock": without a search pair it is filtered out, so
  # "rock"'s targets shift to s:4 (test) and s:3 (valid), which must then lose "rock" too.
  _mpd_slice(
    d,
    0,
    [
      _playlist(0, "Rock", ["s:1", "s:2", "s:3", "s:4", "x"]),
      _playlist(1, "Pop", ["s:3", "s:4", "s:1", "s:2", "s:5"]),
      _playlist(2, "Jazz", ["s:5", "s:1", "s:2", "s:3", "s:4"]),
    ],
  )
  c = _cfg("mpd", d, search_valid_fraction=0.0, search_test_fraction=0.0)
  raw = mpd.load(c.data)
  ds = ProcessedDataset(prepare_dataset(c, str(tmp_path / "ds")))
  heldout = _actual_heldout(raw, ds)
  assert {("0", "s:4"), ("0", "s:3")} <= heldout
  name_of = {"rock": "0", "pop": "1", "jazz": "2"}
  pairs = {(name_of[q], m) for q, m, _ in raw.search_pairs}
  assert not pairs & heldout
  assert ("0", "x") not in pairs and ("0", "s:1") in pairs
  assert ds.manifest["source_stats"]["search_pairs_dropped_heldout"] == 15 - len(pairs)


def test_mpd_random_slices_have_no_heldout_pairs(tmp_path):
  rng = np.random.default_rng(0)
  d = tmp_path / "mpd"
  for start in (0, 1000):
    _mpd_slice(
      d,
      start,
      [
        _playlist(
          start + k,
          f"list {start + k}",
          [f"s:{int(t)}" for t in rng.zipf(1.4, int(rng.integers(3, 12))) % 40],
        )
        for k in range(60)
      ],
    )
  c = _cfg("mpd", d, search_valid_fraction=0.0, search_test_fraction=0.0)
  raw = mpd.load(c.data)
  ds = ProcessedDataset(prepare_dataset(c, str(tmp_path / "ds")))
  heldout = _actual_heldout(raw, ds)
  assert len(heldout) > 20
  pairs = {(q.split()[1], m) for q, m, _ in raw.search_pairs}
  assert not pairs & heldout
  assert raw.stats["search_pairs_dropped_heldout"] > 0


def test_mpd_without_item_filter_drops_the_last_two(tmp_path):
  # Without the item filter the held-out targets are simply each playlist's last two tracks.
  d = tmp_path / "mpd"
  _mpd_slice(d, 0, [_playlist(0, "Rock", ["s:1", "s:2", "s:3", "s:4", "x"])])
  raw = mpd.load(_cfg("mpd", d, items_in_both_tasks=False).data)
  assert [m for _, m, _ in raw.search_pairs] == ["s:1", "s:2", "s:3"]
  assert raw.stats["heldout_rounds"] == 2


def test_mpd_stats_are_plain_ints(tmp_path):
  d = tmp_path / "mpd"
  _mpd_slice(
    d,
    0,
    [
      _playlist(0, "Rock", ["s:1", "s:2", "s:3", "s:4"]),
      _playlist(1, "Pop", ["s:3", "s:4", "s:1", "s:2"]),
    ],
  )
  raw = mpd.load(_cfg("mpd", d).data)
  json.dumps(raw.stats)  # the manifest is JSON: plain ints only
  assert all(type(v) is int for v in raw.stats.values())
