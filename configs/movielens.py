"""MovieLens: the paper's ML experiment (Gen_S, Gen_R, Gen_R+S on MovieLens, R@30).

Search queries come from normalised user tags (the paper's query source is unknown: see
docs/study_design.md "Datasets"); rec is leave-last-out over per-user (timestamp, movieId) order;
only items present in both tasks.
No tag on its tagger's own rec valid/test movie becomes a search pair, and tags used by fewer than
data.movielens.min_tag_count (default 2) distinct users are dropped (gr_jax/data/movielens.py); on
ml-latest-small that leaves about 700 movies. A directory without usable tags: add titles/genres
(--config.data.movielens.query_sources) or generated queries (data.movielens.queries_jsonl).

Arg (comma-separated, all optional):
  path=DIR      GroupLens CSV directory or zip (default: ../shared/data/ml-latest-small)
  size=small    model preset: tiny | small | base | flan-t5-base ... (default small)
  init=DIR      a local Hugging Face T5 directory to initialise from (e.g. flan-t5-base); sets the
                tokenizer to its spiece.model too
  seeds=N       seeds per model kind (default 2)
  epochs=N      training epochs (paper: 5)

Runtime: ml-latest-small with the small preset, 1 epoch per run: about 20-40 minutes on a 2-core
CPU; ML-25M with flan-t5-base, 5 epochs: hours on one H100 (see README).
Expected result: small absolute R@30 (0.01-0.07 on ML-25M in the follow-up) with Gen_R+S ahead.

  python -m gr_jax.reproduce --config configs/movielens.py:path=/data/ml-25m,size=flan-t5-base,init=/models/flan-t5-base --workdir runs/ml25m
"""

import os

from configs import common


def get_config(arg=None):
  args = common.parse_arg(
    arg,
    path=os.path.join(common.SHARED_DATA, "ml-latest-small"),
    size="small",
    init="",
    seeds=2,
    epochs=1,
    steps=0,
  )
  c = common.get_base()
  c.name = "movielens"
  c.data.source = "movielens"
  c.data.path = args["path"]
  c.data.items_in_both_tasks = True
  c.data.movielens.query_sources = ("tags",)
  c.data.encoder_len = 64
  c.data.max_history = 50
  c.model.preset = args["size"]
  c.model.init_from = args["init"]
  if args["init"]:
    c.data.tokenizer.path = args["init"]
  else:
    c.data.tokenizer.vocab_size = 2000
  c.train.num_epochs = args["epochs"]
  c.train.num_steps = args["steps"]
  c.reproduce.seeds = tuple(range(args["seeds"]))
  return c
