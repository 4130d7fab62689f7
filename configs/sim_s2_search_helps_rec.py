"""Simulated sweep S2, H2 (search helps recommendation): few sessions per item; the fraction of
clusters whose content words agree with the rec clusters grows.
Expected: the rec gain of joint training grows with agreement.

Each point of the sweep is a simulated dataset; Gen_S, Gen_R and Gen_R+S are trained on it per seed
(the quickstart's tiny T5 and training settings) and the report plots the joint model's relative
Recall@30 gain against the realised statistic `source_stats.agreement_items` (plots/sweep_gain.png).
Runtime: about 2 minutes per point and seed on a 2-core CPU (pass :seeds=1 for a first look); a
few minutes in all on one GPU.

  python -m gr_jax.reproduce --config configs/sim_s2_search_helps_rec.py --workdir runs/sim_s2_search_helps_rec
"""

from configs import common


def get_config(arg=None):
  return common.sim_sweep(
    name="sim_s2_search_helps_rec",
    setting="S2",
    field="data.sim.agreement",
    values=(0.0, 0.5, 1.0),
    statistic="source_stats.agreement_items",
    arg=arg,
  )
