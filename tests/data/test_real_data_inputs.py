"""Real-data loaders on awkward input: empty files, values of the wrong type, a UTF-8 BOM, and the
vectorised ratings.csv reader against the row-by-row one."""

import json
import os

import numpy as np
import pytest

from gr_jax.data import DataError, movielens, mpd, prepare_dataset, textio
from gr_jax.data import jsonl as jsonl_loader
from gr_jax.data.errors import BadRows
from tests.data.conftest import DATA
from tests.data.test_loaders import _cfg, _mpd_slice, _playlist, _write_jsonl, _write_ml

ML = os.path.join(DATA, "ml-latest-small")
HEADER = "userId,movieId,rating,timestamp\n"


# ---------------------------------------------------------------------- empty files
def test_movielens_header_only_tags_names_file_and_remedy(tmp_path):
  d = _write_ml(tmp_path / "raw", tags="userId,movieId,tag,timestamp\n")
  with pytest.raises(DataError) as e:
    prepare_dataset(_cfg("movielens", d), str(tmp_path / "ds"))
  msg = str(e.value)
  assert e.value.file.endswith("tags.csv") and e.value.field == "tag", msg
  assert "no tag rows" in msg and "query_sources" in msg and "queries_jsonl" in msg
  assert "titles" in msg and "genres" in msg
  assert not os.path.exists(tmp_path / "ds")
  # The remedy works: titles as queries.
  prepare_dataset(
    _cfg("movielens", d, movielens__query_sources=("tags", "titles")), str(tmp_path / "ds2")
  )


def test_movielens_all_tags_private_names_the_knob(tmp_path):
  d = _write_ml(tmp_path / "raw", tags="userId,movieId,tag,timestamp\n1,1,mine,1\n1,2,mine,1\n")
  with pytest.raises(DataError, match=r"tags.csv.*min_tag_count=2.*queries_jsonl"):
    movielens.load(_cfg("movielens", d).data)


def test_movielens_header_only_ratings_names_file(tmp_path):
  d = _write_ml(tmp_path / "raw", ratings=HEADER)
  with pytest.raises(DataError, match=r"ratings.csv:2.*no rating rows") as e:
    movielens.load(_cfg("movielens", d).data)
  assert e.value.field == "rating"


def test_jsonl_empty_files_name_the_file(tmp_path):
  for name, kw in (
    ("search.jsonl", dict(search=[])),
    ("sessions.jsonl", dict(sessions=[])),
    ("items.jsonl", dict(items=[])),
  ):
    d = _write_jsonl(tmp_path / name, **kw)
    with pytest.raises(DataError, match=r"no usable row \(the file has no rows\)") as e:
      jsonl_loader.load(_cfg("jsonl", d).data)
    assert os.path.basename(e.value.file) == name
  d = _write_jsonl(tmp_path / "allbad", search=[{"query": None, "item": "t0"}])
  with pytest.raises(DataError, match=r"search.jsonl.*all 1 rows were skipped"):
    jsonl_loader.load(_cfg("jsonl", d, skip_bad_rows=True).data)


# ---------------------------------------------------------------------- wrong types: JSONL
BAD_VALUES = [
  ("query null", dict(search=[{"query": None, "item": "t0"}]), "search.jsonl:1", "query"),
  ("query list", dict(search=[{"query": ["a", "b"], "item": "t0"}]), "search.jsonl:1", "query"),
  ("query number", dict(search=[{"query": 42, "item": "t0"}]), "search.jsonl:1", "query"),
  ("item null", dict(search=[{"query": "a", "item": None}]), "search.jsonl:1", "item"),
  ("item float", dict(search=[{"query": "a", "item": 1.5}]), "search.jsonl:1", "item"),
  (
    "split number",
    dict(search=[{"query": "a", "item": "t0", "split": 1}]),
    "search.jsonl:1",
    "split",
  ),
  ("title null", dict(items=[{"item": "t0", "title": None}]), "items.jsonl:1", "title"),
  (
    "user list",
    dict(sessions=[{"user": [1], "items": ["t0", "t1", "t2"]}]),
    "sessions.jsonl:1",
    "user",
  ),
  (
    "session item null",
    dict(sessions=[{"user": "u", "items": ["t0", None, "t2"]}]),
    "sessions.jsonl:1",
    "items",
  ),
  (
    "timestamp NaN",
    dict(sessions=[b'{"user": "u", "items": ["t0", "t1"], "timestamps": [1, NaN]}\n']),
    "sessions.jsonl:1",
    "timestamps",
  ),
  (
    "timestamp Infinity",
    dict(sessions=[b'{"user": "u", "items": ["t0", "t1"], "timestamps": [Infinity, 1]}\n']),
    "sessions.jsonl:1",
    "timestamps",
  ),
]


# Ids evaluation refuses (TREC run files) are refused by prepare too, naming file, line, field.
BAD_IDS = [
  ("item id spaces", dict(items=[{"item": " t0 ", "title": "x"}]), "items.jsonl:1", "item"),
  ("item id tab", dict(items=[{"item": "t\t0"}]), "items.jsonl:1", "item"),
  ("item id empty", dict(items=[{"item": ""}]), "items.jsonl:1", "item"),
  ("search id newline", dict(search=[{"query": "a", "item": "t0\n"}]), "search.jsonl:1", "item"),
  (
    "session id space",
    dict(sessions=[{"user": "u", "items": ["t0", "t1 ", "t2"]}]),
    "sessions.jsonl:1",
    "items",
  ),
]
BAD_VALUES += BAD_IDS + [
  ("metadata NaN", dict(items=[b'{"item": "t0", "year": NaN}\n']), "items.jsonl:1", "year"),
]


@pytest.mark.parametrize("name,files,where,field", BAD_IDS, ids=[b[0] for b in BAD_IDS])
def test_jsonl_id_with_whitespace_stops_prepare(tmp_path, name, files, where, field):
  d = _write_jsonl(tmp_path / "raw", **files)
  with pytest.raises(DataError) as e:
    prepare_dataset(_cfg("jsonl", d), str(tmp_path / "ds"))
  msg = str(e.value)
  assert where in msg and e.value.field == field, msg
  why = e.value.message  # (the tmp_path holds the test's name, "whitespace" included)
  assert "contains whitespace" in why or why.startswith("empty item id"), msg
  assert not os.path.exists(tmp_path / "ds")


@pytest.mark.parametrize("name,files,where,field", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_jsonl_wrong_type_is_a_bad_row(tmp_path, name, files, where, field):
  d = _write_jsonl(tmp_path / "raw", **files)
  with pytest.raises(DataError) as e:
    jsonl_loader.load(_cfg("jsonl", d).data)
  assert where in str(e.value) and e.value.field == field, str(e.value)


def test_jsonl_wrong_types_counted_when_skipping(tmp_path):
  search = [
    {"query": None, "item": "t0"},
    {"query": ["a", "b"], "item": "t1"},
    {"query": 42, "item": "t2"},
    {"query": "ok", "item": 3},
    {"query": "fine", "item": "t1"},
  ]
  items = [{"item": f"t{i}"} for i in range(6)] + [{"item": 3, "title": "three"}]
  d = _write_jsonl(tmp_path / "raw", search=search, items=items)
  raw = jsonl_loader.load(_cfg("jsonl", d, skip_bad_rows=True).data)
  assert [(q, i) for q, i, _ in raw.search_pairs] == [("ok", "3"), ("fine", "t1")]
  assert raw.bad_rows.counts["search.jsonl: bad query"] == 3


# ---------------------------------------------------------------------- wrong types: MPD
def _mpd_with(tmp_path, edit):
  pl = _playlist(7, "Road trip", ["s:1", "s:2", "s:3", "s:4"])
  edit(pl)
  d = tmp_path / "mpd"
  _mpd_slice(d, 0, [pl, _playlist(8, "Other", ["s:4", "s:3", "s:2", "s:1"])])
  return d


@pytest.mark.parametrize("value", [None, 42, ["a"]])
def test_mpd_name_of_wrong_type(tmp_path, value):
  d = _mpd_with(tmp_path, lambda pl: pl.update(name=value))
  with pytest.raises(DataError, match=r"playlists\[0\]\.name.*expected a string"):
    mpd.load(_cfg("mpd", d).data)
  raw = mpd.load(_cfg("mpd", d, skip_bad_rows=True).data)
  assert {q for q, _, _ in raw.search_pairs} == {"other"}  # no "none" / "42" query
  assert raw.bad_rows.counts == {"mpd.slice.0-999.json: bad name": 1}
  assert len(raw.sessions) == 2  # the session stays; only the search side is unusable


@pytest.mark.parametrize("value", ["x", None, 1.5, True])
def test_mpd_pos_of_wrong_type(tmp_path, value):
  d = _mpd_with(tmp_path, lambda pl: pl["tracks"][1].update(pos=value))
  with pytest.raises(DataError, match=r"playlists\[0\]\.tracks\[1\]\.pos.*integer"):
    mpd.load(_cfg("mpd", d).data)
  raw = mpd.load(_cfg("mpd", d, skip_bad_rows=True).data)  # no TypeError from sorting
  assert [u for u, _ in raw.sessions] == ["8"]
  assert raw.bad_rows.counts == {"mpd.slice.0-999.json: bad track": 1}


def test_mpd_track_name_and_pid_of_wrong_type(tmp_path):
  d = _mpd_with(tmp_path, lambda pl: pl["tracks"][0].update(track_name=None))
  with pytest.raises(DataError, match=r"playlists\[0\]\.tracks\[0\]\.track_name"):
    mpd.load(_cfg("mpd", d).data)
  d = _mpd_with(tmp_path, lambda pl: pl.update(pid=None))
  with pytest.raises(DataError, match=r"playlists\[0\]\.pid"):
    mpd.load(_cfg("mpd", d).data)


# ---------------------------------------------------------------------- wrong values: MovieLens
@pytest.mark.parametrize("rating", ["nan", "NaN", "inf", "-inf", "-1.0", "x"])
def test_movielens_bad_rating_values(tmp_path, rating):
  ratings = HEADER + f"1,1,4.0,10\n1,2,{rating},20\n1,3,4.0,30\n"
  d = _write_ml(tmp_path / "raw", ratings=ratings)
  with pytest.raises(DataError, match=r"ratings.csv:3") as e:
    movielens.load(_cfg("movielens", d).data)
  assert e.value.field == "rating"
  raw = movielens.load(_cfg("movielens", d, skip_bad_rows=True, movielens__min_rating=4.0).data)
  assert raw.sessions == [("1", ["1", "3"])]  # a NaN rating does not pass min_rating
  assert raw.bad_rows.counts == {"ratings.csv: bad rating": 1}


@pytest.mark.parametrize("stamp", ["nan", "inf", "1.5", "1e9"])
def test_movielens_bad_timestamp_values(tmp_path, stamp):
  d = _write_ml(tmp_path / "raw", ratings=HEADER + f"1,1,4.0,10\n1,2,4.0,{stamp}\n")
  with pytest.raises(DataError, match=r"ratings.csv:3") as e:
    movielens.load(_cfg("movielens", d).data)
  assert e.value.field == "timestamp"


def test_movielens_generated_query_of_wrong_type(tmp_path):
  d = _write_ml(tmp_path / "raw")
  q = tmp_path / "queries.jsonl"
  q.write_text(
    json.dumps({"item": 1, "query": "a funny film"})
    + "\n"
    + json.dumps({"item": 2, "query": None})
    + "\n"
  )
  with pytest.raises(DataError, match=r"queries.jsonl:2.*expected a string") as e:
    movielens.load(_cfg("movielens", d, movielens__queries_jsonl=str(q)).data)
  assert e.value.field == "query"
  q.write_text(json.dumps({"item": True, "query": "x"}) + "\n")
  with pytest.raises(DataError, match=r"queries.jsonl:1.*expected an integer"):
    movielens.load(_cfg("movielens", d, movielens__queries_jsonl=str(q)).data)


def test_movielens_bom_in_headers(tmp_path):
  plain = movielens.load(_cfg("movielens", _write_ml(tmp_path / "plain")).data)
  d = _write_ml(tmp_path / "bom")
  for name in ("movies.csv", "ratings.csv", "tags.csv"):
    path = os.path.join(d, name)
    with open(path, "rb") as f:
      data = f.read()
    with open(path, "wb") as f:
      f.write(b"\xef\xbb\xbf" + data)
  raw = movielens.load(_cfg("movielens", d).data)
  assert (raw.items, raw.sessions, raw.search_pairs) == (
    plain.items,
    plain.sessions,
    plain.search_pairs,
  )
  known = np.asarray([1, 2, 3])
  fast = movielens.read_ratings(os.path.join(d, "ratings.csv"), known, BadRows())
  slow = movielens.read_ratings(os.path.join(d, "ratings.csv"), known, BadRows(), vectorised=False)
  for a, b in zip(fast, slow):
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------- vectorised ratings.csv
def test_vectorised_ratings_equal_row_by_row_on_ml_small(monkeypatch):
  known = np.asarray([int(i) for i in movielens.load(_cfg("movielens", ML).data).items])
  path = os.path.join(ML, "ratings.csv")
  monkeypatch.setattr(textio, "SCAN_BYTES", 100_001)  # many pre-scan blocks, CRLF split across
  fast = movielens.read_ratings(path, known, BadRows())
  slow = movielens.read_ratings(path, known, BadRows(), vectorised=False)
  assert len(fast[0]) == 100836
  for a, b in zip(fast, slow):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
  assert textio.read_numeric_columns(path, movielens.RATING_COLUMNS) is not None


@pytest.mark.parametrize(
  "row,field",
  [
    ("1.0,1,4.0,5", "userId"),
    ("1,1,4.0,1e9", "timestamp"),
    ("1,1,4.0", "<row>"),
    ("1,1,,5", "rating"),
    ("1,99,4.0,5", "movieId"),
  ],
)
def test_vectorised_ratings_fall_back_to_name_the_line(tmp_path, row, field):
  ratings = HEADER + "".join(f"1,{m},4.0,{m}\n" for m in (1, 2, 3)) * 5 + row + "\n1,1,4.0,9\n"
  d = _write_ml(tmp_path / "raw", ratings=ratings)
  path = os.path.join(d, "ratings.csv")
  with pytest.raises(DataError, match=r"ratings.csv:17\b") as e:
    movielens.read_ratings(path, np.asarray([1, 2, 3]), BadRows())
  assert e.value.field == field
  bad = BadRows(skip=True)
  users, *_ = movielens.read_ratings(path, np.asarray([1, 2, 3]), bad)
  assert len(users) == 16 and sum(bad.counts.values()) == 1


def test_vectorised_ratings_handles_crlf_and_no_final_newline(tmp_path):
  path = tmp_path / "ratings.csv"
  path.write_bytes(b"userId,movieId,rating,timestamp\r\n1,1,4.5,10\r\n2,2,.5,20")
  assert textio.read_numeric_columns(str(path), movielens.RATING_COLUMNS) is not None
  out = movielens.read_ratings(str(path), np.asarray([1, 2]), BadRows())
  assert out[0].tolist() == [1, 2] and out[2].tolist() == [4.5, 0.5]
  path.write_bytes(b"timestamp,movieId,userId,rating\n10,1,1,4.5\n20,2,2,5\n")  # reordered
  assert textio.read_numeric_columns(str(path), movielens.RATING_COLUMNS) is not None
  out = movielens.read_ratings(str(path), np.asarray([1, 2]), BadRows())
  assert out[0].tolist() == [1, 2] and out[3].tolist() == [10, 20]


def test_csv_quoted_newline_and_huge_field(tmp_path):
  """A newline inside a quoted field is one record (valid CSV); a field over the csv module's
  limit, or a quote never closed, is a bad row naming its line, never a raw _csv.Error."""
  iter_csv = textio.iter_csv
  path = tmp_path / "movies.csv"
  path.write_text(
    'movieId,title,genres\n1,"Heat\nDirector\'s cut",Action\n'
    f'2,"{"x" * 200_000}",Drama\n3,Alien,Horror\n',
    encoding="utf-8",
  )
  bad = BadRows(skip=True)
  rows = list(iter_csv(str(path), ("movieId", "title"), bad))
  assert [(n, r["movieId"]) for n, r in rows] == [(2, "1"), (5, "3")]
  assert rows[0][1]["title"] == "Heat\nDirector's cut"
  with pytest.raises(DataError, match=r"movies.csv.*4"):
    list(iter_csv(str(path), ("movieId", "title"), BadRows(skip=False)))
  path.write_text('movieId,title\n1,"never closed\n', encoding="utf-8")
  with pytest.raises(DataError, match="never closed"):
    list(iter_csv(str(path), ("movieId", "title"), BadRows(skip=False)))


# ---------------------------------------------------------------------- changed raw data
def _manifest(path):
  with open(os.path.join(path, "manifest.json")) as f:
    return json.load(f)


def _rebuild_lines(caplog):
  return [r.getMessage() for r in caplog.records if "rebuilding" in r.getMessage()]


def test_changed_raw_file_rebuilds_the_dataset_and_says_why(tmp_path, caplog):
  # Was: exit 0 with the old dataset kept, and the manifest's raw_files never compared.
  d = _write_jsonl(tmp_path / "raw")
  c = _cfg("jsonl", d, search_valid_fraction=0.0, search_test_fraction=0.0)
  out = prepare_dataset(c, str(tmp_path / "ds"))
  first = _manifest(out)
  assert sorted(first["raw_inputs"]) == sorted(
    os.path.join(str(d), n) for n in ("items.jsonl", "search.jsonl", "sessions.jsonl")
  )
  sessions = os.path.join(str(d), "sessions.jsonl")
  assert first["raw_inputs"][sessions]["sha256"] == first["raw_files"]["sessions.jsonl"]
  caplog.set_level("WARNING")
  # Unchanged content (a new mtime only): the dataset stays, nothing is rebuilt.
  os.utime(sessions, (1_000_000, 1_000_000))
  assert prepare_dataset(c, out) == out and not _rebuild_lines(caplog)
  assert _manifest(out) == first
  # An edited sessions file: rebuilt, with one line naming the file.
  with open(sessions, "a") as f:
    f.write(json.dumps({"user": "u3", "items": ["t5", "t4", "t3"]}) + "\n")
  with pytest.raises(
    DataError, match=r"manifest.json: field 'raw_inputs': .*sessions.jsonl changed"
  ):
    prepare_dataset(c, out, raw_changed="error")  # train's mode: never under its checkpoints
  assert _manifest(out) == first
  assert prepare_dataset(c, out) == out
  lines = _rebuild_lines(caplog)
  assert len(lines) == 1 and f"{sessions} changed since the dataset {out}" in lines[0], lines
  rebuilt = _manifest(out)
  assert rebuilt["counts"]["raw_sessions"] == first["counts"]["raw_sessions"] + 1
  fresh = _manifest(prepare_dataset(c, str(tmp_path / "fresh")))
  assert rebuilt["files"] == fresh["files"] and rebuilt["raw_inputs"] == fresh["raw_inputs"]
  assert sorted(os.listdir(tmp_path)) == ["ds", "fresh", "raw"]  # no temp dir left behind
  # A raw file gone (moved away after prepare) cannot be compared: the dataset is kept.
  os.remove(sessions)
  assert prepare_dataset(c, out) == out and _manifest(out) == rebuilt


def test_dataset_prepared_before_raw_inputs_were_recorded_is_compared_by_name(tmp_path, caplog):
  d = _write_ml(tmp_path / "raw")
  c = _cfg("movielens", d, movielens__query_sources=("tags", "titles"))
  out = prepare_dataset(c, str(tmp_path / "ds"))
  old = _manifest(out)
  old.pop("raw_inputs")  # as written before this field existed
  with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(old, f)
  caplog.set_level("WARNING")
  assert prepare_dataset(c, out) == out and not _rebuild_lines(caplog)
  with open(os.path.join(str(d), "ratings.csv"), "a") as f:
    f.write("3,1,5.0,99\n")
  prepare_dataset(c, out)
  assert any("ratings.csv changed since" in line for line in _rebuild_lines(caplog))
  assert "raw_inputs" in _manifest(out)


def test_replaced_embedding_file_rebuilds_the_semantic_dataset(tmp_path, caplog):
  d = _write_jsonl(tmp_path / "raw")  # 6 items, all in both tasks
  emb = tmp_path / "emb.npy"
  np.save(emb, np.arange(12, dtype=np.float32).reshape(6, 2))
  c = _cfg("jsonl", d, search_valid_fraction=0.0, search_test_fraction=0.0, id_scheme="semantic")
  c.data.semantic.update(
    {"embedding": "file", "embedding_file": str(emb), "levels": 1, "codebook_size": 2}
  )
  out = prepare_dataset(c, str(tmp_path / "ds"))
  before = _manifest(out)
  assert str(emb) in before["raw_inputs"]
  caplog.set_level("WARNING")
  np.save(emb, np.arange(12, dtype=np.float32).reshape(6, 2)[::-1].copy())
  prepare_dataset(c, out)
  assert any(f"{emb} changed since" in line for line in _rebuild_lines(caplog))
  after = _manifest(out)
  assert (
    after["semantic_ids"]["embedding_info"]["sha256"] == after["raw_inputs"][str(emb)]["sha256"]
  )
  assert after["raw_inputs"][str(emb)]["sha256"] != before["raw_inputs"][str(emb)]["sha256"]


def test_input_files_are_the_files_each_loader_reads(tmp_path):
  from gr_jax.data import raw_inputs

  ml = _write_ml(tmp_path / "ml")
  mp = tmp_path / "mpd"
  _mpd_slice(mp, 0, [_playlist(1, "a", ["x", "y", "z"])])
  _mpd_slice(mp, 1000, [_playlist(2, "b", ["x", "y", "z"])])
  cases = [
    _cfg("movielens", ml),
    _cfg("movielens", ml, movielens__query_sources=("titles",)),
    _cfg("jsonl", _write_jsonl(tmp_path / "j")),
    _cfg("mpd", mp, mpd__max_slices=1),
  ]
  loaders = {"movielens": movielens.load, "jsonl": jsonl_loader.load, "mpd": mpd.load}
  for c in cases:
    raw = loaders[c.data.source](c.data)
    want = list(dict.fromkeys(os.path.abspath(p) for p in raw.files))
    assert raw_inputs.input_files(c) == want, c.data.source
  assert len(raw_inputs.input_files(cases[1])) == 2  # no tags.csv
  assert raw_inputs.input_files(_cfg("simulate", "")) == []
