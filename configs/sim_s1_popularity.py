"""Simulated sweep S1, H1 (popularity): inputs carry no item signal, so only popularity is
learnable; search popularity is the rec popularity with a growing fraction of ranks shuffled.
Expected: the joint model gains at low KL(p_S || p_R) and loses at high KL.

Every item is a training target of both tasks at every point (`data.sim.s1_cover_all_items`, see
gr_jax/data/simulate.py): with i.i.d. draws the search queries missed more of p_R's popular items
as the shuffle grew, so the held-out item filter (`heldout_in_both`) cut the eligible items from
47 to 33 of 100 and the rec training examples from 218 to 104 (the search share of the joint data
from 0.48 to 0.66; means over simulator seeds 0-2), and only rec data told which items could be
held-out targets: a gain for the joint model that has nothing to do with H1. Now all 100 items are eligible and the samples are
fixed (200 search pairs, 300 rec examples) at every point, so the points differ in KL only.

Each point of the sweep is a simulated dataset; Gen_S, Gen_R and Gen_R+S are trained on it per seed
(the quickstart's tiny T5 and training settings) and the report plots the joint model's relative
Recall@30 gain against the realised statistic `popularity_kl.search_rec` (plots/sweep_gain.png).
Runtime: about 2 minutes per point and seed on a 2-core CPU (pass :seeds=1 for a first look); a
few minutes in all on one GPU.

  python -m gr_jax.reproduce --config configs/sim_s1_popularity.py --workdir runs/sim_s1_popularity
"""

from configs import common


def get_config(arg=None):
  c = common.sim_sweep(
    name="sim_s1_popularity",
    setting="S1",
    field="data.sim.shuffle_fraction",
    values=(0.0, 0.5, 1.0),
    statistic="popularity_kl.search_rec",
    arg=arg,
  )
  # Popularity is all there is to learn, so give it shape (Zipf 1) and keep each task's sample
  # small: its own estimate is noisy, and the other task's sample helps while the two popularities
  # agree (low KL) and misleads once they differ (high KL).
  s = c.data.sim
  s.num_items = 100
  s.zipf_exponent = 1.0
  s.queries_per_item = 2  # 200 search training pairs
  s.num_users = 300
  s.session_len = 4  # one rec training example per user (last two items are valid and test)
  s.eval_queries = 300
  # Stated here so the sweep does not depend on the base default: eligibility and sample sizes
  # fixed across points (needs queries_per_item >= 1 and num_users x (session_len - 3) >= 100).
  s.s1_cover_all_items = True
  # Inputs carry no signal here, so every query has the same answer: the paper's diverse beam
  # search then collapses onto a handful of items. Plain beam search returns each model's top-30
  # items by its learned popularity, which is what H1 is about.
  c.decode.num_beams = 30
  c.decode.num_beam_groups = 1
  c.decode.diversity_penalty = 0.0
  # Small samples: a small batch and more epochs, so every model converges on its popularity
  # estimate (otherwise the joint model's extra steps alone would look like a gain).
  c.train.batch_size = 16
  c.train.num_epochs = 20
  return c
