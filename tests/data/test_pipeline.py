"""Pipeline: shapes, exact resume, mixing ratio, per-item cap, multi-process sharding, eval pad."""

import collections
import json

import numpy as np
import pytest

from gr_jax.data import TASKS, make_eval_batches, make_train_loader, steps_per_epoch
from gr_jax.data.pipeline import TRAIN_KEYS
from tests.data.conftest import tiny_config


def _loader(ds, **kw):
  c = tiny_config()
  for k in ("task_ratio", "item_cap", "item_cap_task"):
    if k in kw:
      setattr(c.data, k, kw.pop(k))
  args = dict(tasks=("search", "rec"), batch_size=16, seed=3, num_epochs=2)
  args.update(kw)
  return make_train_loader(ds, c.data, **args), c


def _rows(ds, batch):
  """(task, encoder row bytes, target item) per row: identifies examples independently."""
  items = batch["decoder_target_ids"][:, 0] - ds.catalog.token_offset
  return [
    (int(t), e.tobytes(), int(i))
    for t, e, i in zip(batch["task_id"], batch["encoder_input_ids"], items)
  ]


def _all_examples(ds, tasks):
  out = collections.Counter()
  for t in tasks:
    a = ds.split(t, "train")
    for e, i in zip(a["encoder_input_ids"], a["target_item"]):
      out[(TASKS.index(t), e.tobytes(), int(i))] += 1
  return out


def test_batch_keys_shapes_and_decoder_layout(tiny_dataset):
  loader, c = _loader(tiny_dataset)
  b = next(iter(loader))
  assert tuple(sorted(b)) == tuple(sorted(TRAIN_KEYS))
  assert b["encoder_input_ids"].shape == (16, c.data.encoder_len)
  assert b["encoder_input_ids"].dtype == np.int32
  for k in ("decoder_input_ids", "decoder_target_ids", "decoder_weights"):
    assert b[k].shape == (16, c.data.decoder_len)
  assert b["decoder_weights"].dtype == np.float32 and b["task_id"].dtype == np.int32
  off = tiny_dataset.catalog.token_offset
  assert (b["decoder_input_ids"][:, 0] == 0).all()
  assert (b["decoder_input_ids"][:, 1] == b["decoder_target_ids"][:, 0]).all()
  assert (b["decoder_target_ids"][:, 0] >= off).all() and (b["decoder_target_ids"][:, 1] == 1).all()
  assert (b["decoder_weights"] == 1).all()


def test_concatenation_epoch_covers_pool_once(tiny_dataset):
  loader, _ = _loader(tiny_dataset, num_epochs=1)
  seen = collections.Counter()
  n = 0
  for b in loader:
    n += 1
    seen.update(_rows(tiny_dataset, b))
  pool = _all_examples(tiny_dataset, ("search", "rec"))
  total = sum(pool.values())
  assert (
    n
    == total // 16
    == steps_per_epoch(tiny_dataset, tiny_config().data, tasks=("search", "rec"), batch_size=16)
  )
  # Only the dropped remainder (< one batch) is missing; nothing is seen twice.
  assert not (seen - pool)
  assert sum((pool - seen).values()) == total % 16


def test_exact_resume_mid_epoch(tiny_dataset):
  loader, _ = _loader(tiny_dataset)
  it = iter(loader)
  for _ in range(5):
    next(it)
  state = json.loads(json.dumps(loader.get_state()))  # must survive JSON (orbax JsonSave)
  expected = [next(it) for _ in range(6)]
  fresh, _ = _loader(tiny_dataset)
  fresh.set_state(state)
  it2 = iter(fresh)
  for want in expected:
    got = next(it2)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
  other, _ = _loader(tiny_dataset, seed=4)
  with pytest.raises(ValueError, match="fingerprint"):
    other.set_state(state)


def test_shuffle_depends_on_seed_and_epoch(tiny_dataset):
  a, _ = _loader(tiny_dataset, seed=1)
  b, _ = _loader(tiny_dataset, seed=2)
  ba, bb = next(iter(a)), next(iter(b))
  assert not np.array_equal(ba["encoder_input_ids"], bb["encoder_input_ids"])
  spe = a.steps_per_epoch
  assert not np.array_equal(a.global_rows(0)[1], a.global_rows(spe)[1])


def test_mixing_ratio_holds_on_counted_batches(tiny_dataset):
  loader, _ = _loader(tiny_dataset, task_ratio=0.25, num_epochs=1)
  counts = np.array([np.bincount(b["task_id"], minlength=2) for b in loader])
  assert (counts[:, 0] == 4).all() and (counts[:, 1] == 12).all()
  # The search stream walks permutations: over one pass every search example appears.
  n_search = len(tiny_dataset.split("search", "train")["target_item"])
  rows = np.concatenate(
    [loader.global_rows(s)[1][loader.global_rows(s)[0] == 0] for s in range(n_search // 4)]
  )
  assert len(np.unique(rows)) == len(rows) == (n_search // 4) * 4


@pytest.mark.parametrize("cap", [1, 2])
def test_item_cap_holds(tiny_dataset, cap):
  loader, _ = _loader(tiny_dataset, item_cap=cap, item_cap_task="rec", num_epochs=1, batch_size=8)
  rec_items = collections.Counter()
  search_seen = 0
  for b in loader:
    items = b["decoder_target_ids"][:, 0] - tiny_dataset.catalog.token_offset
    rec_items.update(items[b["task_id"] == 1].tolist())
    search_seen += int((b["task_id"] == 0).sum())
  assert max(rec_items.values()) <= cap
  raw = collections.Counter(tiny_dataset.split("rec", "train")["target_item"].tolist())
  # Exactly min(count, cap) per item are kept in the pool (brute force on the raw targets).
  assert sum(loader.tgt["rec"].shape) == sum(min(v, cap) for v in raw.values())
  assert len(loader.tgt["search"]) == len(tiny_dataset.split("search", "train")["target_item"])


def test_two_process_sharding_covers_each_example_once(tiny_dataset):
  batches = []
  for p in range(2):
    loader, _ = _loader(tiny_dataset, num_epochs=1, process_index=p, process_count=2)
    batches.append(list(loader))
  assert all(b["encoder_input_ids"].shape[0] == 8 for bs in batches for b in bs)
  merged = collections.Counter()
  for bs in batches:
    for b in bs:
      merged.update(_rows(tiny_dataset, b))
  single, _ = _loader(tiny_dataset, num_epochs=1)
  whole = collections.Counter()
  for b in single:
    whole.update(_rows(tiny_dataset, b))
  assert merged == whole
  # The two processes' first batches hold different examples. Rows are identified by content, and
  # the data keeps repeated (query, item) training pairs (they carry popularity), so a row seen in
  # both batches must be one the epoch holds at least twice.
  first0 = collections.Counter(_rows(tiny_dataset, batches[0][0]))
  first1 = collections.Counter(_rows(tiny_dataset, batches[1][0]))
  for row in first0.keys() & first1.keys():
    assert whole[row] >= first0[row] + first1[row], row[0::2]


def test_eval_batches_pad_with_weight_zero(tiny_dataset):
  a = tiny_dataset.split("search", "test")
  n = len(a["target_item"])
  batches = make_eval_batches(tiny_dataset, "search", "test", 7)
  assert len(batches) == -(-n // 7)
  assert all(b["encoder_input_ids"].shape == (7, tiny_dataset.encoder_len) for b in batches)
  w = np.concatenate([b["weight"] for b in batches])
  assert w.sum() == n and (w[n:] == 0).all()
  last = batches[-1]
  pad = last["weight"] == 0
  assert (last["decoder_weights"][pad] == 0).all() and (last["query_id"][pad] == -1).all()
  assert (last["encoder_input_ids"][pad] != 0).any(axis=1).all()  # never an all-masked row
  got = np.concatenate([b["target_item"] for b in batches])[:n]
  np.testing.assert_array_equal(got, a["target_item"])
  uq = make_eval_batches(tiny_dataset, "search", "test", 7, unique_queries=True)
  qids = np.concatenate([b["query_id"][b["weight"] > 0] for b in uq])
  assert sorted(qids.tolist()) == sorted(tiny_dataset.qrels("search", "test"))


class _CharTokenizer:
  """Independent stand-in: one id per character (ids from 3), so expected rows are easy to write."""

  def encode(self, text):
    return [3 + ord(ch) % 50 for ch in text]


def test_add_task_prefix_keeps_query_head_and_recent_items():
  from gr_jax.data.pipeline import add_task_prefix, task_prefix_ids

  tok = _CharTokenizer()
  s_pre, r_pre = task_prefix_ids(tok, "search").tolist(), task_prefix_ids(tok, "rec").tolist()
  assert len(s_pre) == len("search:") and len(r_pre) == len("recommend:")
  le = 14
  enc = np.zeros((3, le), np.int32)
  enc[0, :4] = [100, 101, 102, 1]  # short: fits beside the prefix
  enc[1, :9] = [100, 101, 102, 103, 104, 105, 106, 107, 1]  # too long for the search prefix
  enc[2, :1] = [1]  # empty content
  out = add_task_prefix(enc, "search", tok)
  assert out.shape == enc.shape and out.dtype == np.int32
  assert out[0].tolist() == s_pre + [100, 101, 102, 1] + [0] * (le - 7 - 4)
  room = le - len(s_pre) - 1
  assert out[1].tolist() == s_pre + [100, 101, 102, 103, 104, 105][:room] + [1]  # query head kept
  assert out[2].tolist() == s_pre + [1] + [0] * (le - 8)
  rec = add_task_prefix(enc, "rec", tok)
  room = le - len(r_pre) - 1
  assert rec[1].tolist() == r_pre + [104, 105, 106, 107][-room:] + [1]  # newest items kept
  with pytest.raises(ValueError, match="no room in data.encoder_len=10"):
    add_task_prefix(np.zeros((1, 10), np.int32), "rec", tok)
  with pytest.raises(ValueError, match="unknown task"):
    task_prefix_ids(tok, "browse")


def test_task_prefix_applies_to_training_and_eval_batches(tiny_dataset):
  from gr_jax.data.pipeline import task_prefix_ids

  plain, c = _loader(tiny_dataset)
  c.data.task_prefix = True
  prefixed = make_train_loader(
    tiny_dataset, c.data, tasks=("search", "rec"), batch_size=16, seed=3, num_epochs=2
  )
  assert prefixed.fingerprint != plain.fingerprint  # a resumed run cannot switch silently
  a, b = next(iter(plain)), next(iter(prefixed))
  assert (a["task_id"] == b["task_id"]).all()  # same examples in the same order
  for task in TASKS:
    pre = task_prefix_ids(tiny_dataset.tokenizer, task)
    rows = b["encoder_input_ids"][b["task_id"] == TASKS.index(task)]
    assert len(rows) and (rows[:, : len(pre)] == pre).all()
    ev = make_eval_batches(tiny_dataset, task, "valid", 8, data_config=c.data)[0]
    assert (ev["encoder_input_ids"][:, : len(pre)] == pre).all()
  # Decoder side untouched.
  assert (a["decoder_target_ids"] == b["decoder_target_ids"]).all()


@pytest.mark.parametrize("task", ["search", "rec"])
def test_add_task_prefix_matches_a_row_by_row_reference(task):
  from gr_jax.data.pipeline import add_task_prefix, task_prefix_ids

  tok = _CharTokenizer()
  pre = task_prefix_ids(tok, task).tolist()
  rng = np.random.default_rng(5)
  le = 16
  enc = np.zeros((200, le), np.int32)
  for r, n in enumerate(rng.integers(0, le, 200)):  # n content tokens, then EOS
    enc[r, :n] = rng.integers(3, 90, n)
    enc[r, n] = 1
  room = le - len(pre) - 1
  want = np.zeros_like(enc)
  for r in range(len(enc)):
    content = [int(x) for x in enc[r] if x > 1]
    content = content[:room] if task == "search" else content[max(len(content) - room, 0) :]
    row = pre + content + [1]
    want[r, : len(row)] = row
  np.testing.assert_array_equal(add_task_prefix(enc, task, tok), want)


def test_reader_threads_share_one_epoch_permutation(tiny_dataset, monkeypatch):
  """grain reads batches from many threads; an epoch's permutation is drawn once, not per thread
  (at ML-25M's pool each draw is 200 MB)."""
  import threading

  c = tiny_config()
  loader = make_train_loader(
    tiny_dataset, c.data, tasks=("search", "rec"), batch_size=16, seed=0, num_epochs=1
  )
  draws = []
  real = np.random.default_rng

  def slow_rng(seed):
    draws.append(seed)
    threading.Event().wait(0.05)  # a long draw: the other threads arrive meanwhile
    return real(seed)

  monkeypatch.setattr(np.random, "default_rng", slow_rng)
  got = []
  threads = [
    threading.Thread(target=lambda: got.append(loader._perm((0, 5), loader.pool_size)))
    for _ in range(8)
  ]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(draws) == 1 and all(g is got[0] for g in got)
