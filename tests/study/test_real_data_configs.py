"""The real-data configs end to end, through the reproduce binary with a tiny model: movielens on
../shared/data/ml-latest-small, logs_jsonl and mpd on generated files. (Apart from
test_end_to_end.py so that the two files' studies run in parallel test processes.)"""

import json
import os
import subprocess
import sys

import pytest

from gr_jax.baselines import popularity
from gr_jax.data import ProcessedDataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ML_SMALL = os.path.join(os.path.dirname(REPO), "shared", "data", "ml-latest-small")


def _reproduce(cmd, workdir, budgets=("epochs", "converged")):
  """Runs the reproduce binary; checks the report holds the four (model, task) results; returns
  the processed dataset's manifest."""
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert "Report:" in out.stdout
  with open(os.path.join(workdir, "report.json")) as f:
    report = json.load(f)
  assert {(r["model"], r["task"]) for r in report["results"] if not r.get("baseline")} == {
    ("search", "search"),
    ("rec", "rec"),
    ("joint", "search"),
    ("joint", "rec"),
  }
  # Every budget of the config ran (the real-data configs: epochs and converged; movielens adds
  # matched_steps).
  assert {r["budget"] for r in report["results"] if not r.get("baseline")} == set(budgets)
  if "converged" in budgets:
    _check_validation_curves(workdir, report)
  with open(os.path.join(workdir, "data", "default", "shared", "manifest.json")) as f:
    return json.load(f)


def _check_validation_curves(workdir, report):
  """The report's validation curves are the converged runs' logged validation decodes, and its
  popularity lines are Pop_S / Pop_R written as runs on the valid split."""
  vc = report["validation_curves"]["default"]
  metric = vc["metric"]
  assert metric == f"recall@{max(report['config']['eval']['ks'])}"
  assert {(c["task"], c["model"]) for c in vc["curves"]} == {
    ("search", "search"),
    ("rec", "rec"),
    ("search", "joint"),
    ("rec", "joint"),
  }
  for c in vc["curves"]:
    run = os.path.join(workdir, "runs", "default", "converged", c["model"], f"seed{c['seed']}")
    with open(os.path.join(run, "metrics.jsonl")) as f:
      rows = [json.loads(line) for line in f]
    key = f"val/{c['task']}/{metric}"
    logged = [(r["step"], r[key]) for r in rows if key in r]
    assert logged and list(zip(c["step"], c[metric])) == logged
  ds = ProcessedDataset(os.path.join(workdir, "data", "default", "shared"))
  ks = tuple(report["config"]["eval"]["ks"])
  written = popularity.write_popularity_runs(ds, os.path.join(workdir, "pop_valid"), "valid", ks)
  for task, name in (("search", "pop_s"), ("rec", "pop_r")):
    assert vc["popularity"][task] == {"name": name, metric: written[name][task][metric]}
  assert os.path.exists(os.path.join(workdir, "plots", "validation_default.png"))
  with open(os.path.join(workdir, "report.md")) as f:
    assert "plots/validation_default.png" in f.read()


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(ML_SMALL), reason="../shared/data/ml-latest-small absent")
def test_movielens_config_end_to_end(tmp_path):
  """The movielens config on the real ml-latest-small, through the reproduce binary."""
  workdir = str(tmp_path / "ml")
  cmd = [
    sys.executable,
    "-m",
    "gr_jax.reproduce",
    "--config",
    os.path.join(REPO, "configs", "movielens.py") + ":size=tiny,seeds=1,steps=30",
    "--workdir",
    workdir,
    "--config.data.tokenizer.vocab_size=500",
    "--config.data.encoder_len=32",
    "--config.data.max_history=20",
    "--config.train.batch_size=32",
    "--config.decode.num_beams=8",
    "--config.decode.num_beam_groups=4",
    "--config.decode.num_return_sequences=8",
    "--config.eval.ks=1,5,8",
    "--config.checkpoint.every_steps=1000",
    # The config's defaults are epochs and matched_steps, SASRec 200 epochs. With a fixed step
    # count matched_steps trains what epochs does, so this test runs epochs and converged (whose
    # validation curves are checked), the converged cap at those 30 steps, and SASRec / BERT4Rec
    # for 5 epochs (their learning is tested in tests/baselines).
    "--config.reproduce.budgets=('epochs','converged')",
    "--config.reproduce.converged_max_factor=1",
    "--config.baselines.sasrec.num_epochs=5",
    "--config.baselines.bert4rec.num_epochs=5",
  ]
  manifest = _reproduce(cmd, workdir, budgets=("epochs", "converged"))
  assert manifest["source"] == "movielens" and manifest["num_items"] > 100


def _write_logs(d):
  """Generated logs in the logs_jsonl layout: 4 genres x 12 shows, queries naming a show's genre
  and word, sessions that stay within a genre (timestamps given out of order on purpose)."""
  os.makedirs(d)
  genres, words = ["crime", "comedy", "science", "history"], ["daily", "weekly", "deep", "short"]
  items, search, sessions = [], [], []
  for g, genre in enumerate(genres):
    for i in range(12):
      show = f"show_{g}_{i}"
      items.append({"item": show, "title": f"{genre} {words[i % 4]} show {i}"})
      search.append({"query": f"{genre} {words[i % 4]}", "item": show})
      search.append({"query": f"{words[i % 4]} {genre} talk", "item": show})
  for u in range(160):
    g = u % 4
    # A rotation per user (12 per genre): every show is a rec training target somewhere, so the
    # held-out targets that data.heldout_coverage_rule keeps (trained by both tasks) are many.
    shows = [f"show_{g}_{(u // 4 + k * 5) % 12}" for k in range(5)]
    sessions.append({"user": f"u{u}", "items": shows[::-1], "timestamps": [5, 4, 3, 2, 1]})
  for name, rows in (
    ("items.jsonl", items),
    ("search.jsonl", search),
    ("sessions.jsonl", sessions),
  ):
    with open(os.path.join(d, name), "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
  return d, len(items)


def _write_mpd(d):
  """Two generated MPD slices (the real MPD cannot be shipped): playlists named after a genre,
  whose tracks stay within that genre."""
  os.makedirs(d)
  genres = ["chill vibes", "rock hits", "workout mix", "sad songs"]
  tracks = set()
  for start in (0, 1000):
    playlists = []
    for p in range(80):
      g, pid = p % 4, start + p
      # Rotations differ per playlist: a track that is always a held-out rec target never gets a
      # search pair (no leak) and would leave the catalogue; with 12 per genre every track is
      # also a training target of both tasks somewhere (data.heldout_coverage_rule keeps it).
      uris = [f"spotify:track:{g}_{(start // 1000 * 7 + p // 4 + k * 5) % 12}" for k in range(6)]
      tracks.update(uris)  # every track is in a named playlist and a session: in both tasks
      playlists.append(
        {
          "name": genres[g] + ("" if p % 3 else " 2"),
          "collaborative": "false",
          "pid": pid,
          "modified_at": 0,
          "num_tracks": 6,
          "num_albums": 1,
          "num_followers": 1,
          "tracks": [
            {
              "pos": k,
              "artist_name": "A",
              "track_uri": u,
              "artist_uri": "a",
              "track_name": f"track {u[-4:]}",
              "album_uri": "b",
              "duration_ms": 1,
              "album_name": "B",
            }
            for k, u in enumerate(uris)
          ],
        }
      )
    with open(os.path.join(d, f"mpd.slice.{start}-{start + 999}.json"), "w") as f:
      json.dump({"info": {"slice": f"{start}-{start + 999}"}, "playlists": playlists}, f)
  return d, len(tracks)


@pytest.mark.slow
@pytest.mark.parametrize(
  "name,writer,source", [("logs_jsonl", _write_logs, "jsonl"), ("mpd", _write_mpd, "mpd")]
)
def test_real_data_config_end_to_end(tmp_path, name, writer, source):
  """logs_jsonl (your own search logs and sessions) and mpd (Million Playlist Dataset slices), on
  generated files, through the reproduce binary with a tiny model."""
  data, num_items = writer(str(tmp_path / "raw"))
  workdir = str(tmp_path / "study")
  cmd = [
    sys.executable,
    "-m",
    "gr_jax.reproduce",
    "--config",
    os.path.join(REPO, "configs", f"{name}.py") + f":path={data},size=tiny,seeds=1",
    "--workdir",
    workdir,
    "--config.data.tokenizer.vocab_size=60",
    "--config.data.encoder_len=16",
    "--config.data.max_history=8",
    "--config.train.batch_size=16",
    "--config.train.num_steps=30",
    "--config.decode.num_beams=8",
    "--config.decode.num_beam_groups=4",
    "--config.decode.num_return_sequences=8",
    "--config.eval.ks=1,5,8",
    "--config.checkpoint.every_steps=1000",
    # The converged cap at the fixed 30 steps (5x by default): the run and its curves, not length.
    "--config.reproduce.converged_max_factor=1",
  ]
  manifest = _reproduce(cmd, workdir)
  assert manifest["source"] == source and manifest["num_items"] == num_items
