"""Simulated sweep S3, H2 (recommendation helps search): few queries per item, each relevant to a
set of items (its anchor plus companions); the probability that a query's companions co-occur
with its anchor in training sessions (rather than coming from a decoy pool of items that never
co-occur with it, equally learnable from search data alone) grows.
Expected (docs/study_design.md "Simulated data"): the search gain of joint training grows with it.

Distinct from S2 (which varies the agreement of content words with rec clusters): here content
words are the anchor's own (`s3_query_cluster_words=False`), agreement stays 1, and only the
alignment of query relevance with session co-occurrence moves.

Each point of the sweep is a simulated dataset; Gen_S, Gen_R and Gen_R+S are trained on it per seed
(the quickstart's tiny T5 and training settings) and the report plots the joint model's relative
Recall@30 gain against the realised statistic `source_stats.query_pairs_cooccur_train` (share of
item pairs relevant to one training query that co-occur in a training session) in
plots/sweep_gain.png.
Runtime: about 2 minutes per point and seed on a 2-core CPU (pass :seeds=1 for a first look); a
few minutes in all on one GPU.

  python -m gr_jax.reproduce --config configs/sim_s3_rec_helps_search.py --workdir runs/sim_s3_rec_helps_search
"""

from configs import common


def get_config(arg=None):
  c = common.sim_sweep(
    name="sim_s3_rec_helps_search",
    setting="S3",
    field="data.sim.query_set_coherence",
    values=(0.0, 0.5, 1.0),
    statistic="source_stats.query_pairs_cooccur_train",
    arg=arg,
  )
  # The S3 mechanism's own knobs, stated here so the sweep does not depend on base defaults.
  s = c.data.sim
  s.agreement = 1.0
  s.s3_queries_per_item = 1.0  # few queries: search alone sees each anchor's set about once
  s.s3_query_set_size = 3
  s.s3_query_cluster_words = False
  return c
