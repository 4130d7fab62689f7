"""Semantic IDs study: which item IDs serve one generative model of search and recommendation?

Question (Penha et al., RecSys 2025, "Semantic IDs for joint generative search and
recommendation"): with the quickstart's simulator data, tiny T5 and training, how do Gen_S, Gen_R
and Gen_R+S fare with semantic IDs quantised (RQ-KMeans, gr_jax/data/semantic_ids.py) from item
embeddings of
  content -- TF-IDF + SVD of the item's title (the simulator's words),
  search  -- the bi-encoder (baselines.biencoder) trained on search,
  rec     -- the same bi-encoder trained on recommendation,
  joint   -- the same bi-encoder trained on both tasks (the paper's best trade-off: task-specific
             IDs hurt the other task),
against atomic IDs (one token per item, the quickstart's)? The bi-encoders train on the training
splits only, with baselines.biencoder (base defaults but the budget, below), seed
data.semantic.seed; the manifest's `semantic_ids` records each one's settings and validation recall.

One sweep point per embedding (`reproduce.sweep = data.semantic.embedding`), each with its own
datasets (one per seed: simulator seed data.sim.seed + seed, as in the quickstart). Fair budgets
(`matched_steps`: every model of a seed takes the joint model's steps) and the paper's diverse beam
search only (semantic IDs are decoded with the trie-constrained beam search; the exact top-K is for
atomic IDs). 3 seeds (`:seeds=N`).

Atomic IDs are the same data with `data.id_scheme=atomic`, a field the sweep cannot set together
with the embedding (a sweep moves one field); `:ids=atomic` makes the atomic reference study,
whose datasets are the quickstart's (same simulator seeds, so its per-seed results pair with the
semantic points'):

  python -m gr_jax.reproduce --config configs/semantic_ids.py --workdir runs/semantic_ids
  python -m gr_jax.reproduce --config configs/semantic_ids.py:ids=atomic \
      --workdir runs/semantic_ids_atomic

Bi-encoder budget: 50 epochs (baselines.biencoder.num_epochs; its other knobs are the base
defaults). At the base default of 10 epochs (70 steps on these ~800 joint training rows) the joint
bi-encoder was far from trained: training loss still falling fast (6.1 at step 50, 4.7 at 70),
validation Recall@30 0.54 search / 0.54 rec, against 30/78 = 0.38 for a random ranking; at 50
epochs (350 steps, loss 2.0) 0.88 / 0.90. Chosen on the bi-encoder's own VALIDATION recall
(simulator seed 0, a reported seed, `data.semantic.embedding=joint`; 2026-12-01, two values
tried, 10 and 50), not on any generative-model or test result; a prepare with one bi-encoder takes
~35 s on the 2-core CPU either way (compilation dominates).

ID sizes: 80 items (78 after the item filter on seed 0), 3 levels of 8 codes (512 code tuples;
level 0 groups ~10 items per code, near the simulator's 10 clusters of 8), so an ID is 3 code
tokens (+1 disambiguation token where items share a tuple: 10-20% of items here) + EOS. Chosen
from the catalogue size alone, not on any result.
"""

from configs import common

EMBEDDINGS = ("content", "search", "rec", "joint")


def get_config(arg=None):
  args = common.parse_arg(arg, seeds=3, ids="semantic")
  if args["ids"] not in ("semantic", "atomic"):
    raise ValueError(
      f"config arg ids={args['ids']!r}: expected 'semantic' (the embedding sweep) "
      "or 'atomic' (the reference study)"
    )
  c = common.sim_sweep(
    name="semantic_ids",
    setting="default",
    field="data.semantic.embedding",
    values=EMBEDDINGS,
    statistic="",
    arg=f"seeds={args['seeds']}",
  )
  c.data.id_scheme = "semantic"
  se = c.data.semantic
  se.levels = 3
  se.codebook_size = 8
  # The bi-encoders of the search / rec / joint IDs: trained to convergence (docstring).
  c.baselines.biencoder.num_epochs = 50
  # Semantic IDs need the prefix-trie constrained beam search (topk_exact is for atomic IDs).
  c.reproduce.decoders = ("beam",)
  c.reproduce.budgets = ("matched_steps",)
  if args["ids"] == "atomic":
    c.name = "semantic_ids_atomic"
    c.data.id_scheme = "atomic"
    c.reproduce.sweep = ""
    c.reproduce.sweep_values = ()
  return c
