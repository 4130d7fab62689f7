"""Quickstart: the paper's central claim on simulated data, in minutes on a laptop CPU.

Reproduces: Gen_R+S (one tiny T5 trained on both tasks) ahead of Gen_S and Gen_R on Recall@30, with
paired t-tests over queries (Holm-corrected) and mean/std over 3 seeds (PAPER.md "Headline result").
Data: the simulator's default setting (items in latent clusters; search queries are words of the
item, rec sessions stay in a cluster; each task sees some items rarely, the other task knows them).
Runtime: about 3.5-4 minutes on a shared 2-core CPU (install excluded); under a minute on one GPU.
Expected result: joint > search-only on search R@30 and joint > rec-only on rec R@30, p < 0.05.
Measured 2025-11 (3 seeds, CPU): search +55% (p ~ 5e-15, 3/3 seeds); rec +0.6% (p = 0.74, 1/3
seeds) -- the rec side of the claim is NOT yet reproduced by these settings.

  python -m gr_jax.reproduce --config configs/quickstart.py --workdir runs/quickstart
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def get_config(arg=None):
  args = common.parse_arg(arg, seeds=3)
  c = common.get_base()
  c.name = "quickstart"
  c.data.source = "simulate"
  c.data.sim.setting = "default"
  # Small, flat-popularity catalogue: 8 items per cluster, sessions stay in their cluster, so a
  # returned list of ~6-10 distinct items can cover the target's cluster.
  s = c.data.sim
  s.num_items = 80
  s.num_clusters = 10
  s.num_users = 300
  s.session_len = 6
  s.queries_per_item = 3
  s.zipf_exponent = 0.3
  s.stay_in_cluster = 0.95
  s.shuffle_fraction = 0.5
  # Complementary coverage: 40% of each cluster's items have no training queries (known from rec
  # only) while the held-out queries cover every item: Gen_S cannot return them, Gen_R+S can.
  # (A search-side share > 0 was tried: no model returns those items for rec, so it only dilutes.)
  s.rec_side_fraction = 0.4
  s.search_side_fraction = 0.0
  s.side_weight = 0.0
  c.model.preset = "tiny"
  # Tied item embeddings (T5 v1.0 style): the search task places each item's (input = output)
  # embedding by its content cluster, which the rec encoder then reads in histories.
  c.model.overrides.tie_word_embeddings = True
  c.model.overrides.d_model = 64
  c.model.overrides.d_ff = 128
  c.model.dropout_rate = 0.0
  c.train.batch_size = 64
  c.train.num_epochs = 8
  c.train.learning_rate = 0.002
  c.train.warmup_steps = 20
  c.train.log_every_steps = 100
  c.checkpoint.every_steps = 1000
  c.checkpoint.keep = 1
  c.reproduce.seeds = tuple(range(args["seeds"]))
  return c
