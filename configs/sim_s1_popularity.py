"""Simulated sweep S1, H1 (popularity): inputs carry no item signal, so only popularity is
learnable; search popularity is the rec popularity with a growing fraction of ranks shuffled.
Expected: the joint model gains at low KL(p_S || p_R) and loses at high KL.

Each point of the sweep is a simulated dataset; Gen_S, Gen_R and Gen_R+S are trained on it per seed
(the quickstart's tiny T5 and training settings) and the report plots the joint model's relative
Recall@30 gain against the realised statistic `popularity_kl.search_rec` (plots/sweep_gain.png).
Runtime: about 2 minutes per point and seed on a 2-core CPU (pass :seeds=1 for a first look); a
few minutes in all on one GPU.

  python -m gr_jax.reproduce --config configs/sim_s1_popularity.py --workdir runs/sim_s1_popularity
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def get_config(arg=None):
  return common.sim_sweep(name="sim_s1_popularity", setting="S1", field="data.sim.shuffle_fraction",
                          values=(0.0, 0.25, 0.5, 0.75, 1.0), statistic="popularity_kl.search_rec", arg=arg)
