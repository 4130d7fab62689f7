"""Simulated sweep S2. H2, search helps rec: few sessions per item; the fraction of clusters whose content words agree with the rec clusters grows. The rec gain of joint training grows with agreement.

Each point of the sweep is a simulated dataset; Gen_S, Gen_R and Gen_R+S are trained on it per seed
and the report plots the joint model's relative R@30 gain against the realised statistic.
Runtime: about 15-25 minutes on a 2-core CPU (tiny T5; pass :seeds=1 to halve it); a few minutes on
one GPU.

  python -m gr_jax.reproduce --config configs/sim_s2_search_helps_rec.py --workdir runs/sim_s2_search_helps_rec
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def get_config(arg=None):
  args = common.parse_arg(arg, seeds=2)
  c = common.get_base()
  c.name = "sim_s2_search_helps_rec"
  c.data.source = "simulate"
  c.data.sim.setting = "S2"
  c.model.preset = "tiny"
  c.model.dropout_rate = 0.0
  c.train.batch_size = 64
  c.train.num_epochs = 20
  c.train.warmup_steps = 20
  c.train.log_every_steps = 100
  c.checkpoint.every_steps = 1000
  c.checkpoint.keep = 1
  c.reproduce.seeds = tuple(range(args["seeds"]))
  c.reproduce.sweep = "data.sim.agreement"
  c.reproduce.sweep_values = (0.0, 0.5, 1.0)
  c.reproduce.sweep_statistic = "source_stats.agreement_items"  # realised, from the manifest
  c.reproduce.analyses = False
  return c
