"""Quickstart: the paper's central claim on simulated data, in minutes on a laptop CPU.

Reproduces: Gen_R+S (one tiny T5 trained on both tasks) ahead of Gen_S and Gen_R on Recall@30, with
paired t-tests over queries (Holm-corrected) and mean/std over 3 seeds (PAPER.md "Headline result").
Data: the simulator's default setting (items in latent clusters; search queries are words of the
item, rec sessions stay in a cluster; each task sees some items rarely, the other task knows them).
Runtime: about 5-8 minutes on a 2-core CPU (install excluded); under a minute of compute on one GPU.
Expected result: joint > search-only on search R@30 and joint > rec-only on rec R@30, p < 0.05.

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
  c.model.preset = "tiny"
  c.model.dropout_rate = 0.0
  c.train.batch_size = 64
  c.train.num_epochs = 20
  c.train.learning_rate = 0.002
  c.train.warmup_steps = 20
  c.train.log_every_steps = 100
  c.checkpoint.every_steps = 1000
  c.checkpoint.keep = 1
  c.reproduce.seeds = tuple(range(args["seeds"]))
  return c
