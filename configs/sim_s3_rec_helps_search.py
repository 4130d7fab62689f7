"""Simulated sweep S3, H2 (recommendation helps search): few queries per item; the fraction of
session-co-occurring item pairs that are also relevant to the same queries grows.
Expected: the search gain of joint training grows with it.

Each point of the sweep is a simulated dataset; Gen_S, Gen_R and Gen_R+S are trained on it per seed
(the quickstart's tiny T5 and training settings) and the report plots the joint model's relative
Recall@30 gain against the realised statistic `source_stats.shared_pairs_realised` (plots/sweep_gain.png).
Runtime: about 2 minutes per point and seed on a 2-core CPU (pass :seeds=1 for a first look); a
few minutes in all on one GPU.

  python -m gr_jax.reproduce --config configs/sim_s3_rec_helps_search.py --workdir runs/sim_s3_rec_helps_search
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def get_config(arg=None):
  return common.sim_sweep(name="sim_s3_rec_helps_search", setting="S3", field="data.sim.shared_pairs",
                          values=(0.0, 0.5, 1.0), statistic="source_stats.shared_pairs_realised", arg=arg)
