"""gr-jax's SASRec and BERT4Rec against RecBole 1.2.1 on gr-jax's own ml-latest-small split.

RecBole is a reference, never a dependency of gr_jax: it runs in its own virtualenv (--recbole_python,
e.g. `python3 -m venv /tmp/recbole_venv && /tmp/recbole_venv/bin/pip install recbole==1.2.1
torch==2.13.0 "numpy<2" "pandas<2.2" "scipy<1.13" "setuptools<70"`: RecBole 1.2.1 imports ray,
whose 2.6 needs pkg_resources, and uses pre-numpy-2 APIs), as a subprocess that runs a small runner
script this file writes into the work directory.

Steps (each cached in --workdir, so an interrupted comparison is resumed by running it again):
1. prepare gr-jax's dataset with configs/movielens.py's defaults (`<workdir>/data`);
2. export the rec split as RecBole atomic files (`<workdir>/recbole/grjax_ml/grjax_ml.inter`):
   one session per user, the timestamp of an interaction is its position in the session, so
   RecBole's leave-one-out split (LS, valid_and_test, time order) holds out each session's last
   item for test and the one before for valid, as gr-jax's leave-last-out; RecBole's
   MAX_ITEM_LIST_LENGTH is gr-jax's data.max_history. The check then loads the files with
   RecBole's own data pipeline and compares every user's valid and test target and history, and
   the training (history, target) examples, with gr-jax's splits: any mismatch stops the script;
3. RecBole SASRec / BERT4Rec with RecBole's model defaults except: full ranking, metrics Recall and
   NDCG @10 and @30, valid_metric Recall@30, early stopping on it (stopping_step 10, RecBole's
   default; epochs at most 200), CE loss without negative sampling, seeds 0 1 2;
4. gr-jax SASRec / BERT4Rec (`run_baseline`) with configs/movielens.py's sections plus
   select_best, validation Recall@30 once per epoch, num_epochs 200, and the section's own patience
   when it selects (configs/movielens.py's tuned settings), else 10 decodes (RecBole's
   stopping_step); --patience N forces N;
5. a JSON of every number (`<workdir>/results.json`) and a table.

Protocols (test Recall@30 of the best-validation model; validation, hence selection, always ranks
every item in both implementations):
- unmasked: every item is ranked (gr-jax's default; RecBole 1.2.1's full-sort evaluation of
  SEQUENTIAL models as well: its FullSortEvalDataLoader returns no history index for them, so
  `Trainer._full_sort_batch_eval` masks nothing but the padding item);
- masked: the query's input history (its at most data.max_history most recent items) is scored
  -inf: gr-jax's `eval.exclude_seen=True`; for RecBole a Trainer subclass masks the items of the
  interaction's item_id_list;
- masked_all: every item the user interacted with before the target (the usual full-ranking
  protocol of general recommenders); computed here for gr-jax from the selected model's scores,
  and by the same Trainer subclass for RecBole.
One training per (implementation, model, seed) is evaluated under the three protocols.

  .venv/bin/python bench/recbole_compare.py --workdir /tmp/recbole_cmp \\
    --recbole_python /tmp/recbole_venv/bin/python [--models sasrec,bert4rec]
    [--impls recbole,grjax] [--seeds 0,1,2] [--table_only]
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DATASET = "grjax_ml"  # RecBole dataset name (directory and file stem)
PROTOCOLS = ("unmasked", "masked", "masked_all")
MAX_EPOCHS = 200
PATIENCE = None  # gr-jax decodes without improvement: None = the config section's (--patience)
DEFAULT_PATIENCE = 10  # a section without selection: RecBole's stopping_step (its default, 10)

RUNNER = r'''
"""RecBole 1.2.1 runner written by bench/recbole_compare.py (runs in RecBole's own venv)."""
import json, os, sys, time
import numpy as np
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.trainer import Trainer
from recbole.utils import get_model, init_logger, init_seed

args = json.load(open(sys.argv[1]))
torch.set_num_threads(int(args.get("threads", 1)))
cfg = dict(args["config"])
config = Config(model=args["model"], dataset=args["dataset"], config_dict=cfg)
init_seed(config["seed"], config["reproducibility"])
init_logger(config)
dataset = create_dataset(config)
train_data, valid_data, test_data = data_preparation(config, dataset)
uid_f, iid_f = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
list_f, len_f = iid_f + config["LIST_SUFFIX"], config["ITEM_LIST_LENGTH_FIELD"]


def examples(data):
  """[(user token, history item tokens, target token)] of a dataloader, read from its batches
  (the sequences are built by the dataloader's transform, not stored in the dataset)."""
  out = []
  for batch in data:
    inter = batch[0] if isinstance(batch, tuple) else batch
    users = dataset.id2token(uid_f, inter[uid_f].numpy())
    targets = dataset.id2token(iid_f, inter[iid_f].numpy())
    for u, lst, n, t in zip(users, inter[list_f].numpy(), inter[len_f].numpy(), targets):
      hist = dataset.id2token(iid_f, lst[: int(n)]) if int(n) else []
      out.append((str(u), [str(x) for x in hist], str(t)))
  return out


if args["mode"] == "check":
  json.dump(
    {
      "num_items": int(dataset.item_num - 1),  # id 0 is RecBole's padding
      "num_users": int(dataset.user_num - 1),
      "train": examples(train_data),
      "valid": examples(valid_data),
      "test": examples(test_data),
    },
    open(args["out"], "w"),
  )
  sys.exit(0)

# Each user's items before the valid / test target (RecBole ids), for masked_all.
# Each user's items before the valid / test target (RecBole ids), for masked_all: the sessions
# as gr-jax stores them (user token -> item tokens, oldest first).
past = {"valid": {}, "test": {}}
for u, items in json.load(open(args["sessions"])).items():
  uid = int(dataset.token2id(uid_f, u))
  past["valid"][uid] = torch.as_tensor(dataset.token2id(iid_f, items[:-2]), dtype=torch.long)
  past["test"][uid] = torch.as_tensor(dataset.token2id(iid_f, items[:-1]), dtype=torch.long)


class ProtocolTrainer(Trainer):
  """RecBole's Trainer, recording the best epoch and evaluating under a chosen protocol:
  unmasked (RecBole's own full sort of a sequential model), masked (the input item_id_list) or
  masked_all (every item of the user before the target)."""

  protocol, phase, best_epoch, best_state = "unmasked", "valid", None, None

  def _save_checkpoint(self, epoch, verbose=True, **kwargs):
    # Called exactly when validation improved (or tied: RecBole's >=). The best parameters are
    # also kept in memory: torch >= 2.6 refuses to torch.load RecBole's checkpoint (weights_only).
    self.best_epoch = epoch
    self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
    return super()._save_checkpoint(epoch, verbose=verbose, **kwargs)

  def _full_sort_batch_eval(self, batched_data):
    interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
    if self.protocol == "masked":
      items = interaction[list_f].to(scores.device)  # [B, L], 0 = padding
      rows = torch.arange(len(items), device=scores.device)[:, None].expand_as(items)
      keep = items > 0
      scores[rows[keep], items[keep]] = -np.inf
    elif self.protocol == "masked_all":
      for r, u in enumerate(interaction[uid_f].tolist()):
        scores[r, past[self.phase][u].to(scores.device)] = -np.inf
    return interaction, scores, positive_u, positive_i


model = get_model(config["model"])(config, train_data.dataset).to(config["device"])
trainer = ProtocolTrainer(config, model)
curve = []
t0 = time.time()
best_score, best_valid = trainer.fit(
  train_data, valid_data, saved=True, show_progress=False,
  callback_fn=lambda epoch, score: curve.append([int(epoch), float(score)]),
)
train_s = time.time() - t0
test = {}
trainer.phase = "test"
model.load_state_dict(trainer.best_state)  # the best validation epoch's parameters
for protocol in ("unmasked", "masked", "masked_all"):
  trainer.protocol = protocol
  res = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
  test[protocol] = {k: float(v) for k, v in res.items()}
json.dump(
  {
    "best_epoch": trainer.best_epoch,  # 0-based epoch index of RecBole's log
    "epochs_run": len(curve),
    "best_valid": {k: float(v) for k, v in (best_valid or {}).items()},
    "valid_curve": curve,
    "test": test,
    "train_seconds": train_s,
    "num_params": sum(p.numel() for p in model.parameters()),
  },
  open(args["out"], "w"),
)
'''


def _log(msg: str) -> None:
  print(time.strftime("%H:%M:%S"), msg, flush=True)


# ------------------------------------------------------------------------------------- data


def base_config():
  from configs import movielens  # pylint: disable=g-import-not-at-top

  return movielens.get_config()


def prepare(workdir: str) -> str:
  from gr_jax.data.prepare import prepare_dataset  # pylint: disable=g-import-not-at-top

  data = os.path.join(workdir, "data")
  if not os.path.exists(os.path.join(data, "manifest.json")):
    _log(f"preparing {data}")
    prepare_dataset(base_config(), data)
  return data


def sessions(ds) -> list[np.ndarray]:
  """Every user's full item sequence (catalogue indices): the test split's visible prefixes, cut
  at each query's history end, plus its test target (the test rows are the sessions, in order)."""
  te = ds.split("rec", "test")
  ends = np.asarray(te["history_first"], np.int64) + np.asarray(te["history_len"], np.int64)
  if np.any(np.diff(ends) <= 0) or ends[-1] != len(te["history_items"]):
    raise SystemExit("rec/test.npz: history ends are not one per session, in order")
  if not np.array_equal(np.asarray(te["query_id"]), np.arange(len(ends))):
    raise SystemExit("rec/test.npz: query ids are not the session indices")
  starts = np.concatenate([[0], ends[:-1]])
  items = np.asarray(te["history_items"], np.int64)
  return [
    np.append(items[s:e], int(t)) for s, e, t in zip(starts, ends, np.asarray(te["target_item"]))
  ]


def export(ds, out_root: str) -> dict:
  """RecBole atomic files of the rec split (user u<session>, items by catalogue item id):
  - `grjax_ml/grjax_ml.{train,valid,test}.inter`: RecBole's predefined-split ("benchmark") files
    of a sequential dataset, one example per line (user, item_id_list of at most data.max_history
    items, target): gr-jax's own examples, used by the runs;
  - `grjax_ml_ls/grjax_ml_ls.inter`: the sessions with timestamp = position in the session, for
    RecBole's leave-one-out split (LS valid_and_test in time order; compared in `check_export`);
  - `sessions.json`: user -> items, for the masked_all protocol.
  Returns the paths."""
  ids = ds.catalog.item_ids
  sess = sessions(ds)
  paths = {}
  d = os.path.join(out_root, DATASET)
  os.makedirs(d, exist_ok=True)
  for split in ("train", "valid", "test"):
    arr = ds.split("rec", split)
    if split == "train":
      users = _train_users(ds, sess)
    else:
      users = [f"u{int(q)}" for q in arr["query_id"]]
    lines = ["user_id:token\titem_id_list:token_seq\titem_id:token\n"]
    for u, h, t in zip(users, ds.catalog.histories(arr["encoder_input_ids"]), arr["target_item"]):
      lines.append(f"{u}\t{' '.join(ids[int(i)] for i in h)}\t{ids[int(t)]}\n")
    paths[split] = _write(os.path.join(d, f"{DATASET}.{split}.inter"), lines)
  d = os.path.join(out_root, DATASET + "_ls")
  os.makedirs(d, exist_ok=True)
  lines = ["user_id:token\titem_id:token\ttimestamp:float\n"]
  for u, s in enumerate(sess):
    lines += [f"u{u}\t{ids[int(i)]}\t{p}\n" for p, i in enumerate(s)]
  paths["ls"] = _write(os.path.join(d, f"{DATASET}_ls.inter"), lines)
  sessions_json = {f"u{u}": [ids[int(i)] for i in s] for u, s in enumerate(sess)}
  paths["sessions"] = _write(os.path.join(out_root, "sessions.json"), [json.dumps(sessions_json)])
  return paths


def _train_users(ds, sess) -> list[str]:
  """The user of each training row: rows come session by session, targets 1 .. n - 3 (the
  leave-last-out layout of gr_jax.data.prepare)."""
  users = [f"u{u}" for u, s in enumerate(sess) for _ in range(max(len(s) - 3, 0))]
  if len(users) != len(ds.split("rec", "train")["target_item"]):
    raise SystemExit("rec/train.npz: rows are not targets 1 .. n-3 of each session")
  return users


def _write(path: str, lines) -> str:
  with open(path + ".tmp", "w") as f:
    f.writelines(lines)
  os.replace(path + ".tmp", path)
  return path


def recbole_config(
  data_root: str, model: str, seed: int, out: str, max_history: int, layout: str = "benchmark"
) -> dict:
  """RecBole's defaults for the model, except the comparison's settings (module doc). layout
  "benchmark": the predefined split files; "ls": the sessions, split by RecBole's LS."""
  c = {
    "data_path": data_root,
    "checkpoint_dir": os.path.join(out, "saved"),
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": "item_id",
    "MAX_ITEM_LIST_LENGTH": int(max_history),
    "eval_args": {
      "split": {"LS": "valid_and_test"},
      "order": "TO",
      "group_by": "user",
      "mode": "full",
    },
    "metrics": ["Recall", "NDCG"],
    "topk": [10, 30],
    "valid_metric": "Recall@30",
    "epochs": MAX_EPOCHS,
    "stopping_step": 10,
    "eval_step": 1,
    "loss_type": "CE",
    "train_neg_sample_args": None,
    "seed": int(seed),
    "reproducibility": True,
    "use_gpu": False,
    "show_progress": False,
    "log_wandb": False,
    "worker": 0,
  }
  if layout == "benchmark":
    c.update(
      TIME_FIELD=None,
      load_col={"inter": ["user_id", "item_id_list", "item_id"]},
      benchmark_filename=["train", "valid", "test"],
      alias_of_item_id=["item_id_list"],  # one token -> id map for targets and histories
    )
  else:
    c.update(TIME_FIELD="timestamp", load_col={"inter": ["user_id", "item_id", "timestamp"]})
  return c


def run_recbole(
  args, data_root, model, seed, mode, out_json, max_history, layout="benchmark"
) -> dict:
  """Runs the RecBole runner (mode check | train) in RecBole's venv; returns its JSON."""
  runner = os.path.join(args.workdir, "recbole_runner.py")
  with open(runner, "w") as f:
    f.write(RUNNER)
  out_dir = os.path.dirname(out_json)
  os.makedirs(out_dir, exist_ok=True)
  spec = {
    "mode": mode,
    "model": model,
    "dataset": DATASET if layout == "benchmark" else DATASET + "_ls",
    "out": out_json,
    "sessions": os.path.join(data_root, "sessions.json"),
    "threads": args.threads,
    "config": recbole_config(data_root, model, seed, out_dir, max_history, layout),
  }
  spec_path = out_json + ".spec.json"
  with open(spec_path, "w") as f:
    json.dump(spec, f, indent=1)
  with open(os.path.join(out_dir, "stdout.log"), "w") as log:
    rc = subprocess.call(
      [args.recbole_python, runner, spec_path], cwd=out_dir, stdout=log, stderr=subprocess.STDOUT
    )
  if rc != 0:
    raise SystemExit(f"RecBole {mode} {model} seed {seed} failed (rc {rc}): {out_dir}/stdout.log")
  with open(out_json) as f:
    return json.load(f)


def check_export(args, ds, data_root: str, max_history: int) -> dict:
  """RecBole's own valid / test / train examples, as its data pipeline loads the exported files,
  against gr-jax's splits, for both layouts. The predefined split ("benchmark", used by the runs)
  must agree exactly (else SystemExit listing some mismatches); RecBole's LS split of the
  timestamped sessions is compared and reported. Returns the counts."""
  report = {}
  for layout in ("ls", "benchmark"):
    got = run_recbole(
      args,
      data_root,
      "SASRec",
      0,
      "check",
      os.path.join(args.workdir, "recbole", f"check_{layout}", "check.json"),
      max_history,
      layout,
    )
    rep, mism = _compare(ds, got)
    report[layout] = dict(rep, examples=mism[:10])
    _log(f"export check ({layout}): {rep}")
    if layout == "benchmark" and mism:
      raise SystemExit("export check failed:\n  " + "\n  ".join(mism[:20]))
  return report


def _compare(ds, got) -> tuple[dict, list[str]]:
  """Counts and descriptions of the differences between RecBole's examples and gr-jax's."""
  cat = ds.catalog
  ids = cat.item_ids
  mism = []
  rep = {"num_items_grjax": cat.num_items, "num_items_recbole": got["num_items"]}
  if got["num_items"] != cat.num_items:
    mism.append(f"catalogue: gr-jax {cat.num_items} items, RecBole {got['num_items']}")
  for split in ("valid", "test"):
    arr = ds.split("rec", split)
    hists = cat.histories(arr["encoder_input_ids"])
    want = {
      f"u{int(q)}": ([ids[int(i)] for i in h], ids[int(t)])
      for q, h, t in zip(arr["query_id"], hists, arr["target_item"])
    }
    have = {u: (h, t) for u, h, t in got[split]}
    bad = [u for u in want if have.get(u) != want[u]] + [u for u in have if u not in want]
    rep[f"{split}_users_grjax"], rep[f"{split}_users_recbole"] = len(want), len(have)
    rep[f"{split}_mismatches"] = len(bad)
    mism += [f"{split} {u}: gr-jax {want.get(u)} RecBole {have.get(u)}" for u in bad]
  tr = ds.split("rec", "train")
  hists = cat.histories(tr["encoder_input_ids"])
  users = _train_users(ds, sessions(ds))
  want = collections.Counter(
    (u, tuple(ids[int(i)] for i in h), ids[int(t)])
    for u, h, t in zip(users, hists, tr["target_item"])
  )
  have = collections.Counter((u, tuple(h), t) for u, h, t in got["train"])
  rep["train_examples_grjax"] = len(tr["target_item"])
  rep["train_examples_recbole"] = len(got["train"])
  diff = (want - have) + (have - want)
  rep["train_mismatches"] = sum(diff.values())
  mism += [f"train example {k} x{v} in only one" for k, v in diff.items()]
  return rep, mism


# -------------------------------------------------------------------------------------- gr-jax


def steps_per_epoch(kind: str, config, ds) -> int:
  """train_sequential's epoch length (its windows of the rebuilt training sequences)."""
  from gr_jax.baselines import sequential  # pylint: disable=g-import-not-at-top

  cfg = config.baselines[kind]
  train, valid = ds.split("rec", "train"), ds.split("rec", "valid")
  cap = sequential.max_history_of(ds, train, valid)
  seqs = sequential.rebuild_sequences(
    ds.catalog.histories(train["encoder_input_ids"]), train["target_item"], cap
  )
  if kind == "sasrec":
    w = sequential.windows([s for s in seqs if len(s) >= 2], int(cfg.max_len) + 1, overlap=1)
  else:
    w = sequential.windows(seqs, int(cfg.max_len), overlap=0)
  return max(1, math.ceil(len(w) / int(cfg.batch_size)))


def grjax_config(kind: str, seed: int, ds):
  c = base_config()
  c.seed = int(seed)
  s = c.baselines[kind]
  s.num_epochs, s.num_steps = MAX_EPOCHS, 0
  if PATIENCE is not None:
    s.patience = PATIENCE
  elif not (s.get("select_best", False) and int(s.get("patience", 0)) > 0):
    s.patience = DEFAULT_PATIENCE
  s.select_best = True
  s.eval_every_steps = steps_per_epoch(kind, c, ds)  # one validation decode per epoch (RecBole's)
  return c


def masked_all_recall(kind: str, config, ds, out: str, ks) -> dict:
  """Test Recall@K of the selected model with every earlier item of the user scored -inf, and the
  unmasked value the same way (a check against the eval files): rank = items scored strictly
  higher than the target."""
  from gr_jax.baselines import sequential  # pylint: disable=g-import-not-at-top

  res = sequential.train_sequential(kind, config, ds, out)  # a finished run: reloaded
  te = ds.split("rec", "test")
  hists = ds.catalog.histories(te["encoder_input_ids"])
  x = sequential.inference_inputs(hists, int(config.baselines[kind].max_len), kind, ds.num_items)
  scores = np.concatenate(
    [
      np.asarray(res.model.item_logits(res.model(x[s : s + 256])[:, -1]))
      for s in range(0, len(x), 256)
    ]
  )  # [Q, n]
  targets = np.asarray(te["target_item"], np.int64)
  t_score = scores[np.arange(len(targets)), targets]
  out_d = {}
  for name in ("unmasked", "masked_all"):
    s = scores.copy()
    if name == "masked_all":
      for r, seq in enumerate(sessions(ds)):
        s[r, seq[:-1]] = -np.inf  # the session before its test target
    rank = (s > t_score[:, None]).sum(1)
    out_d[name] = {f"recall@{k}": float(np.mean(rank < k)) for k in ks}
  return out_d, res.summary


def run_grjax(kind: str, seed: int, data_dir: str, ds, workdir: str) -> dict:
  from gr_jax.baselines.runner import run_baseline  # pylint: disable=g-import-not-at-top

  out = os.path.join(workdir, "grjax", kind, f"seed{seed}")
  c = grjax_config(kind, seed, ds)
  t0 = time.time()
  c.eval.exclude_seen = False
  unmasked = run_baseline(kind, c, data_dir, out, "test")
  train_s = time.time() - t0
  c.eval.exclude_seen = True  # the same selected checkpoint, reloaded (eval is not fingerprinted)
  masked = run_baseline(kind, c, data_dir, out, "test")
  assert masked["info"]["resumed_from"] == masked["info"]["steps"]  # not retrained
  ks = tuple(int(k) for k in c.eval.ks)
  mine, summary = masked_all_recall(kind, c, ds, out, ks)
  info = unmasked["info"]
  spe = info["steps_per_epoch"]
  with open(os.path.join(out, "metrics.jsonl")) as f:
    curve = [
      [r["step"] // spe, r["recall@30"]] for r in map(json.loads, f) if r.get("split") == "valid"
    ]
  return {
    "best_epoch": info["best_step"] // spe,  # epochs completed at the best decode
    "best_step": info["best_step"],
    "epochs_run": info["steps"] // spe,
    "steps_per_epoch": spe,
    "stopped_early": info["stopped_early"],
    "capped": info["capped"],
    "best_valid": info["best_valid"],
    "valid_curve": curve,
    "test": {
      "unmasked": unmasked["rec"],
      "masked": masked["rec"],
      "masked_all": mine["masked_all"],
      "unmasked_recomputed": mine["unmasked"],
    },
    "train_seconds": train_s,
  }


# -------------------------------------------------------------------------------------- table


def table(results: dict) -> str:
  rows = [
    "| model | implementation | protocol | test Recall@30 per seed | mean ± std | best epoch per seed |",
    "|---|---|---|---|---|---|",
  ]
  for model in ("sasrec", "bert4rec"):
    for impl in ("recbole", "grjax"):
      runs = results.get(impl, {}).get(model, {})
      if not runs:
        continue
      seeds = sorted(runs, key=int)
      for p in PROTOCOLS:
        vals = [runs[s]["test"][p]["recall@30"] for s in seeds]
        # RecBole logs 0-based epoch indices: +1 = epochs completed, as gr-jax's
        eps = [
          runs[s]["best_epoch"] + (1 if impl == "recbole" else 0)
          for s in seeds
          if runs[s]["best_epoch"] is not None
        ]
        std = float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")
        rows.append(
          f"| {model} | {impl} | {p} | "
          + ", ".join(f"{s}: {v:.3f}" for s, v in zip(seeds, vals))
          + f" | {np.mean(vals):.3f} ± {std:.3f} | "
          + ", ".join(f"{e}/{runs[s]['epochs_run']}" for s, e in zip(seeds, eps))
          + " |"
        )
  return "\n".join(rows)


def collect(workdir: str) -> dict:
  results = {}
  for impl in ("recbole", "grjax"):
    for model in ("sasrec", "bert4rec"):
      for seed in range(10):
        p = os.path.join(workdir, "results", f"{impl}_{model}_seed{seed}.json")
        if os.path.exists(p):
          with open(p) as f:
            results.setdefault(impl, {}).setdefault(model, {})[str(seed)] = json.load(f)
  return results


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--recbole_python", default="/tmp/recbole_venv/bin/python")
  ap.add_argument("--models", default="sasrec,bert4rec")
  ap.add_argument("--impls", default="recbole,grjax")
  ap.add_argument("--seeds", default="0,1,2")
  ap.add_argument("--threads", type=int, default=1, help="torch threads of RecBole")
  ap.add_argument("--table_only", action="store_true", help="collect the cached runs, no training")
  ap.add_argument("--max_epochs", type=int, default=MAX_EPOCHS, help="epoch cap (smoke tests)")
  ap.add_argument(
    "--patience",
    type=int,
    default=PATIENCE,
    help="gr-jax decodes (epochs); default: the section's patience if it selects, else 10",
  )
  args = ap.parse_args()
  globals()["MAX_EPOCHS"], globals()["PATIENCE"] = args.max_epochs, args.patience
  os.makedirs(os.path.join(args.workdir, "results"), exist_ok=True)
  if not args.table_only:
    from gr_jax.data.dataset import ProcessedDataset  # pylint: disable=g-import-not-at-top

    data_dir = prepare(args.workdir)
    ds = ProcessedDataset(data_dir)
    max_history = int(ds.manifest["rec_max_history"])
    data_root = os.path.join(args.workdir, "recbole")
    check_path = os.path.join(args.workdir, "results", "export_check.json")
    if not os.path.exists(check_path):
      paths = export(ds, data_root)
      _log(f"exported {paths}; checking them with RecBole's data pipeline")
      report = check_export(args, ds, data_root, max_history)
      report["files"] = paths
      with open(check_path, "w") as f:
        json.dump(report, f, indent=1)
    with open(check_path) as f:
      _log(f"export check: {json.load(f)}")
    for model in args.models.split(","):
      for seed in [int(s) for s in args.seeds.split(",")]:
        for impl in args.impls.split(","):
          path = os.path.join(args.workdir, "results", f"{impl}_{model}_seed{seed}.json")
          if os.path.exists(path):
            continue
          _log(f"{impl} {model} seed {seed}")
          t0 = time.time()
          if impl == "recbole":
            name = {"sasrec": "SASRec", "bert4rec": "BERT4Rec"}[model]
            out = os.path.join(args.workdir, "recbole_runs", model, f"seed{seed}", "result.json")
            got = run_recbole(args, data_root, name, seed, "train", out, max_history)
          else:
            got = run_grjax(model, seed, data_dir, ds, args.workdir)
          got["wall_seconds"] = time.time() - t0
          got["load_after"] = open("/proc/loadavg").read().split()[:3]
          with open(path, "w") as f:
            json.dump(got, f, indent=1)
          _log(
            f"{impl} {model} seed {seed}: test Recall@30 "
            + " ".join(f"{p} {got['test'][p]['recall@30']:.4f}" for p in PROTOCOLS)
            + f", best epoch {got['best_epoch']} of {got['epochs_run']}, "
            f"{got['wall_seconds']:.0f} s"
          )
  results = collect(args.workdir)
  check_path = os.path.join(args.workdir, "results", "export_check.json")
  out = {
    "export_check": json.load(open(check_path)) if os.path.exists(check_path) else None,
    "runs": results,
  }
  with open(os.path.join(args.workdir, "results.json"), "w") as f:
    json.dump(out, f, indent=1)
  print(table(results))


if __name__ == "__main__":
  main()
