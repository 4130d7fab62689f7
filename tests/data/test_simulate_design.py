"""Simulator design: a neutral default (held-out targets trained by both tasks), S1's sweep with
eligibility and sample sizes fixed, S3's own mechanism (query relevance sets vs session
co-occurrence), determinism, documented knobs."""

import collections
import dataclasses
import hashlib
import json
import os
import re

import ml_collections
import numpy as np
import pytest

from configs import quickstart, sim_s1_popularity, sim_s2_search_helps_rec, sim_s3_rec_helps_search
from gr_jax.data.divergence import kl_divergence
from gr_jax.data import ProcessedDataset, prepare_dataset
from gr_jax.data import simulate
from gr_jax.data.errors import DataError
from gr_jax.study import plan as plan_lib
from gr_jax.study import stages
from gr_jax.data.prepare import KL_SMOOTHING, config_hash
from gr_jax.study.plan import set_dotted, sweep_fields
from tests.data.conftest import ROOT, tiny_config

# The quickstart's simulator settings (configs/quickstart.py), with no coverage variant.
QUICKSTART_SIM = dict(
  num_items=80,
  num_clusters=10,
  num_users=600,
  session_len=4,
  queries_per_item=3,
  zipf_exponent=0.3,
  stay_in_cluster=0.95,
  rec_side_fraction=0.0,
  search_side_fraction=0.0,
)
COVERAGE_KEYS = [
  f"{t}_{s}_in_{o}_train"
  for t in ("search", "rec")
  for s in ("valid", "test")
  for o in ("search", "rec")
]


def _prepared(tmp_path, name, rule=None, **sim):
  c = tiny_config(**sim)
  if rule is not None:
    c.data.heldout_coverage_rule = rule
  return ProcessedDataset(prepare_dataset(c, str(tmp_path / name)))


def _train_targets(ds, task):
  return set(ds.split(task, "train")["target_item"].tolist())


@pytest.mark.parametrize("setting", ["default", "S3"])
def test_heldout_targets_are_training_targets_of_both_tasks(tmp_path, setting):
  ds = _prepared(tmp_path, setting, setting=setting, **QUICKSTART_SIM)
  trained = {t: _train_targets(ds, t) for t in ("search", "rec")}
  for task in ("search", "rec"):
    for split in ("valid", "test"):
      targets = set(ds.split(task, split)["target_item"].tolist())
      assert targets, (task, split)
      for other in ("search", "rec"):
        assert targets <= trained[other], (task, split, other, targets - trained[other])
  overlap = ds.manifest["overlap"]
  assert [overlap[k] for k in COVERAGE_KEYS] == [1.0] * len(COVERAGE_KEYS)
  # Guaranteed by construction: prepare's item filter had nothing to take out of the sessions
  # (which would shift leave-last-out positions), and no session became too short.
  counts = ds.manifest["counts"]
  assert counts["session_items_removed_item_filter"] == 0
  assert counts["sessions_dropped_too_short"] == 0
  stats = ds.manifest["source_stats"]
  assert stats["heldout_in_both"] is True and stats["heldout_target_items"] > 0


def test_coverage_variant_tests_items_a_task_never_trains(tmp_path):
  sim = dict(QUICKSTART_SIM, rec_side_fraction=0.4, heldout_in_both=False)
  # prepare's default would drop exactly the held-out targets the variant is about: it refuses.
  with pytest.raises(DataError, match="heldout_coverage_rule='paper'"):
    _prepared(tmp_path, "coverage_default", **sim)
  ds = _prepared(tmp_path, "coverage", rule="paper", **sim)
  overlap = ds.manifest["overlap"]
  assert overlap["search_test_in_search_train"] < 1.0
  assert overlap["search_valid_in_search_train"] < 1.0
  assert overlap["search_test_in_rec_train"] > overlap["search_test_in_search_train"]
  # The same share computed from the arrays, not from prepare's own bookkeeping.
  test = ds.split("search", "test")["target_item"]
  share = np.isin(test, list(_train_targets(ds, "search"))).mean()
  assert share == pytest.approx(overlap["search_test_in_search_train"])
  # The variant is a named knob, never reached silently from the neutral default.
  with pytest.raises(ValueError, match="heldout_in_both=False"):
    simulate.simulate(tiny_config(rec_side_fraction=0.4).data.sim)


@pytest.mark.parametrize("setting", ["default", "S1", "S2", "S3"])
def test_same_seed_same_raw_data_other_seed_differs(setting):
  def raw(seed):
    return dataclasses.asdict(simulate.simulate(tiny_config(setting=setting, seed=seed).data.sim))

  a, b, c = raw(0), raw(0), raw(1)
  assert a == b
  assert a["search_pairs"] != c["search_pairs"]
  assert a["sessions"] != c["sessions"]


def _sweep_point(module, value, seed=0, **sim):
  """A sweep config's dataset config at one point, as gr_jax/study/plan.py build_plan sets it
  (reproduce.dataset_per_seed: run seed `seed` gets simulator seed data.sim.seed + seed)."""
  c = module.get_config()
  for field, v in sweep_fields(c.reproduce.sweep, value).items():
    set_dotted(c, field, v)
  c.data.sim.seed = int(c.data.sim.seed) + seed
  for k, v in sim.items():
    setattr(c.data.sim, k, v)
  return c


def _training_targets(raw):
  """(search training targets, rec training targets), one entry per example: the items of the
  train search pairs, and positions >= 1 of each session's training part (all but its last two
  items, which prepare keeps for rec valid and test; position 0 is history only)."""
  search = [i for _, i, split in raw.search_pairs if split == "train"]
  rec = [i for _, items in raw.sessions for i in items[:-2][1:]]
  return search, rec


def _s1_sweep(seed=0, **sim):
  """{shuffle fraction: RawData} along the S1 sweep."""
  values = sim_s1_popularity.get_config().reproduce.sweep_values
  return {
    v: simulate.simulate(_sweep_point(sim_s1_popularity, v, seed, **sim).data.sim) for v in values
  }


def _empirical_kl(search, rec, items):
  """KL(search || rec) of the training targets' popularities, smoothed as prepare's manifest
  (popularity_kl.search_rec, the S1 sweep's statistic) smooths them."""
  index = {item: k for k, item in enumerate(items)}

  def popularity(targets):
    counts = np.bincount([index[i] for i in targets], minlength=len(items)) + KL_SMOOTHING
    return counts / counts.sum()

  return kl_divergence(popularity(search), popularity(rec))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_s1_sweep_fixes_eligibility_and_sample_sizes_across_points(seed):
  # Only rec data would otherwise reveal which items can be held-out targets, and the rec sample
  # shrank as p_S moved away from p_R: the points must differ in KL(p_S || p_R) only.
  raws = _s1_sweep(seed)
  sim = sim_s1_popularity.get_config().data.sim
  n = sim.num_items
  sizes, kls = set(), []
  for value, raw in raws.items():
    search, rec = _training_targets(raw)
    eligible = set(search) & set(rec)
    assert eligible == set(raw.items) and len(raw.items) == n, value
    sizes.add((len(search), len(rec)))
    # Every held-out target of either task is eligible, and the filter removed nothing.
    heldout = {i for _, i, split in raw.search_pairs if split != "train"}
    heldout |= {i for _, items in raw.sessions for i in items[-2:]}
    assert heldout <= eligible, value
    stats = raw.stats
    assert stats["s1_cover_all_items"] is True and stats["heldout_target_items"] == n
    assert stats["session_items_removed_no_search_query"] == 0
    assert stats["rec_train_targets"] == len(rec)
    kls.append(_empirical_kl(search, rec, raw.items))
  assert sizes == {(round(sim.queries_per_item * n), sim.num_users * (sim.session_len - 3))}
  # The sweep still moves its statistic (realised, over training targets, as the report plots it).
  assert kls[0] < kls[1] < kls[2], kls


def test_s1_cover_knob_off_keeps_the_iid_draws():
  # The knob is real: without it eligibility and the rec sample size move along the sweep.
  eligible, rec_sizes = [], []
  for raw in _s1_sweep(s1_cover_all_items=False).values():
    search, rec = _training_targets(raw)
    eligible.append(len(set(search) & set(rec)))
    rec_sizes.append(len(rec))
    assert raw.stats["s1_cover_all_items"] is False
    assert raw.stats["heldout_target_items"] == eligible[-1]
  assert max(eligible) < 100 and len(set(eligible)) == 3, eligible
  assert len(set(rec_sizes)) == 3, rec_sizes


def test_covering_sample_floors_counts_and_keeps_popularity_ratios():
  p = np.array([0.5, 0.3, 0.1, 0.06, 0.04])
  e = simulate.floored_counts(p, 20)
  # 20 * p would give the last item less than one draw: it gets one, the others keep their
  # popularity ratios (19 draws over 0.96 of the mass: item 3 gets 19 * 0.06 / 0.96 > 1).
  assert e.sum() == pytest.approx(20) and e[4] == 1
  assert e[:4] == pytest.approx(19 * p[:4] / 0.96)
  assert simulate.floored_counts(p, 5) == pytest.approx(np.ones(5))
  draws = simulate.covering_sample(p, 20, np.random.default_rng(0))
  assert len(draws) == 20 and set(draws.tolist()) == set(range(5))


def test_s1_cover_refuses_too_few_queries_or_rec_targets():
  with pytest.raises(ValueError, match="queries_per_item x num_items"):
    simulate.simulate(tiny_config(setting="S1", queries_per_item=0).data.sim)
  with pytest.raises(ValueError, match=r"num_users x \(session_len - 3\)"):
    simulate.simulate(tiny_config(setting="S1", num_users=10, session_len=4).data.sim)
  # The requirement is the knob's, in S1 only (one query in all; no held-out filter to satisfy).
  few = dict(queries_per_item=0, heldout_in_both=False)
  simulate.simulate(tiny_config(setting="S1", s1_cover_all_items=False, **few).data.sim)
  simulate.simulate(tiny_config(**few).data.sim)


def _data_digest(raw):
  data = [raw.items, raw.titles, raw.metadata, raw.search_pairs, raw.sessions]
  return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# Digests of the generated data (not the stats) recorded with the simulator as it was before
# data.sim.s1_cover_all_items existed: the knob must leave every other setting, and S1 without
# it, exactly as they were.
@pytest.mark.parametrize(
  "name,digest",
  [
    ("quickstart", "89e2c78de9d1e37d"),
    ("S2", "4fa41406f2f83e7b"),
    ("S3", "a7cb1f888e15e260"),
    ("S1_off", "a41e1f3936135fc2"),
    ("S1_saved_before_knob", "a41e1f3936135fc2"),
  ],
)
def test_s1_cover_knob_leaves_other_data_unchanged(name, digest):
  if name == "quickstart":
    c = quickstart.get_config()
  elif name in ("S2", "S3"):
    c = _sweep_point({"S2": sim_s2_search_helps_rec, "S3": sim_s3_rec_helps_search}[name], 0.5)
  elif name == "S1_off":
    c = _sweep_point(sim_s1_popularity, 1.0, s1_cover_all_items=False)
  else:
    # A run's config.json written before the knob: its dataset was made without it.
    c = _sweep_point(sim_s1_popularity, 1.0)
    del c.data.sim["s1_cover_all_items"]
  assert _data_digest(simulate.simulate(c.data.sim)) == digest


def _s3_raw(coherence, **sim):
  return simulate.simulate(tiny_config(setting="S3", query_set_coherence=coherence, **sim).data.sim)


def _query_sets(raw, split):
  """{query text: (anchor, companions)}: in S3 a query is its anchor's own words, reordered."""
  anchor_of = {frozenset(t.split()): i for i, t in zip(raw.items, raw.titles)}
  sets = collections.defaultdict(set)
  for q, item, s in raw.search_pairs:
    if s == split:
      sets[q].add(item)
  out = {}
  for q, items in sets.items():
    anchor = anchor_of[frozenset(q.split())]
    assert anchor in items
    out[q] = (anchor, items - {anchor})
  return out


def _cooccurring(raw):
  """Pairs of items sharing the training part (all but the last two items) of a session."""
  pairs = set()
  for _, items in raw.sessions:
    part = items[:-2]
    pairs |= {(x, y) for x in part for y in part if x != y}
  return pairs


def test_s3_companions_cooccur_with_anchor_exactly_as_coherence_says():
  for coherence, want in ((1.0, True), (0.0, False)):
    raw = _s3_raw(coherence)
    cooc = _cooccurring(raw)
    sets = _query_sets(raw, "train")
    companions = [(a, x) for a, comp in sets.values() for x in comp]
    assert len(companions) > len(sets)  # several relevant items per query
    assert all(((a, x) in cooc) == want for a, x in companions), coherence


def test_s3_realised_statistic_follows_its_knob_and_not_s2s():
  stats = [_s3_raw(q).stats for q in (0.0, 0.5, 1.0)]
  pairs = [s["query_pairs_cooccur_train"] for s in stats]
  assert pairs[0] < pairs[1] < pairs[2], pairs
  anchor = [s["query_anchor_pairs_cooccur_train"] for s in stats]
  assert anchor[0] == 0.0 and 0.0 < anchor[1] < 1.0 and anchor[2] == 1.0, anchor
  # S3 moves query relevance only: content words keep following the rec clusters (S2's knob).
  assert all(s["agreement_items"] == 1.0 for s in stats)
  assert all(s["qrels_per_train_query"] > 2.0 for s in stats)
  # Decoy pools match the coherent ones in size except for rare very popular anchors (counted).
  assert all(0.0 <= s["s3_decoy_pools_truncated"] < 0.05 for s in stats)
  # Other settings keep one relevant item per query and report no S3 statistic.
  default = simulate.simulate(tiny_config().data.sim).stats
  assert default["qrels_per_train_query"] == 1.0 and default["query_pairs_cooccur_train"] is None


def test_s3_prepared_queries_share_one_id_across_their_relevant_items(tmp_path):
  ds = _prepared(tmp_path, "s3", setting="S3", query_set_coherence=0.5)
  a = ds.split("search", "test")
  qrels = ds.qrels("search", "test")
  assert max(len(v) for v in qrels.values()) >= 3
  # One encoder input per query id: its examples are the same query.
  for q in qrels:
    rows = a["encoder_input_ids"][a["query_id"] == q]
    assert (rows == rows[0]).all()
  assert ds.manifest["splits"]["search"]["test"]["queries"] == len(qrels)
  assert isinstance(ds.manifest["source_stats"]["query_pairs_cooccur_train"], float)


def test_sweep_configs_move_different_knobs():
  from configs import sim_s2_search_helps_rec, sim_s3_rec_helps_search

  s2 = sim_s2_search_helps_rec.get_config().reproduce
  s3 = sim_s3_rec_helps_search.get_config().reproduce
  assert s2.sweep == "data.sim.agreement"
  assert s3.sweep == "data.sim.query_set_coherence"
  assert len(s3.sweep_values) >= 3
  assert s3.sweep_statistic == "source_stats.query_pairs_cooccur_train"


def test_every_sim_knob_is_documented_and_read_by_the_simulator():
  from configs import base

  with open(os.path.join(ROOT, "configs", "base.py")) as f:
    lines = f.read().splitlines()
  with open(simulate.__file__) as f:
    source = f.read()
  for key in base.get_config().data.sim:
    at = [i for i, l in enumerate(lines) if re.match(rf"\s+s\.{key} = ", l)]
    assert len(at) == 1, key
    line, above = lines[at[0]], lines[at[0] - 1].strip()
    assert "#" in line or above.startswith("#"), f"data.sim.{key} has no comment"
    assert f"sim.{key}" in source, f"data.sim.{key} is never read by the simulator"


def test_s1_cover_knob_changes_no_hash_or_fingerprint_where_it_is_not_read():
  """Datasets and study stages made before `s1_cover_all_items` existed keep their hash and
  fingerprints (the knob is read by setting S1 only, when on); an S1 dataset with it on is new
  data and hashes differently."""

  def without_knob(c):
    c = ml_collections.ConfigDict(c.to_dict())
    del c.data.sim["s1_cover_all_items"]
    return c

  qs = quickstart.get_config()
  assert config_hash(qs) == config_hash(without_knob(qs))
  plan_a = plan_lib.build_plan(qs, "/tmp/unused_a")
  plan_b = plan_lib.build_plan(without_knob(qs), "/tmp/unused_a")
  assert [s.fingerprint for s in stages.stages_for(plan_a)] == [
    s.fingerprint for s in stages.stages_for(plan_b)
  ]
  s1 = sim_s1_popularity.get_config()
  assert s1.data.sim.setting == "S1" and s1.data.sim.s1_cover_all_items
  assert config_hash(s1) != config_hash(without_knob(s1))
  off = ml_collections.ConfigDict(s1.to_dict())
  off.data.sim.s1_cover_all_items = False
  assert config_hash(off) == config_hash(without_knob(s1))
