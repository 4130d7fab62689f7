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

One study: one sweep point per embedding (`reproduce.sweep = data.semantic.embedding`, points
`embedding=<source>`) and one point with atomic IDs, `{"data.id_scheme": "atomic"}` (a sweep point
that sets its own fields, gr_jax/study/plan.py; point `id_scheme=atomic`). Every point has its own
datasets (one per seed: simulator seed data.sim.seed + seed, as in the quickstart); the atomic
point's are the quickstart's (the semantic knobs do not enter an atomic dataset), so its per-seed
results pair with the semantic points'. Fair budgets (`matched_steps`: every model of a seed takes
the joint model's steps) and the paper's diverse beam search only (semantic IDs are decoded with
the trie-constrained beam search; the exact top-K is for atomic IDs, and the atomic point uses the
beam search too so that every point is decoded alike). 3 seeds (`:seeds=N`):

  python -m gr_jax.reproduce --config configs/semantic_ids.py --workdir runs/semantic_ids

The same study on ml-latest-small (configs/movielens.py's CPU model, training and data; 3 levels
of 16 codes; bi-encoders at the base default of 10 epochs, not tuned): `:data=movielens`;
`embeddings=content+joint` runs a subset of the sources.

  python -m gr_jax.reproduce --config configs/semantic_ids.py:data=movielens --workdir runs/sem_ml

(The atomic reference used to be a separate study, `:ids=atomic`, because a sweep point could set
one field only; its runs are now the `id_scheme=atomic` point of this one.)

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
ATOMIC = {"data.id_scheme": "atomic"}  # the reference point: the same data with atomic IDs


def _movielens(args):
  """The same study on ml-latest-small: configs/movielens.py's CPU model and training."""
  from configs import movielens  # pylint: disable=g-import-not-at-top

  c = movielens.get_config(f"seeds={args['seeds']}")
  c.name = "semantic_ids_movielens"
  c.reproduce.sweep = "data.semantic.embedding"
  c.reproduce.sweep_statistic = ""
  c.reproduce.analyses = False
  c.reproduce.baselines = ()  # popularity only: the question is which IDs, not which baseline
  return c


def get_config(arg=None):
  args = common.parse_arg(arg, seeds=3, data="sim", embeddings="+".join(EMBEDDINGS))
  embeddings = tuple(e for e in args["embeddings"].split("+") if e)
  if args["data"] not in ("sim", "movielens") or not set(embeddings) <= set(EMBEDDINGS):
    raise ValueError(
      f"semantic_ids: data=sim|movielens and embeddings among {EMBEDDINGS}, got {args}"
    )
  if args["data"] == "sim":
    c = common.sim_sweep(
      name="semantic_ids",
      setting="default",
      field="data.semantic.embedding",
      values=(ATOMIC,) + embeddings,
      statistic="",
      arg=f"seeds={args['seeds']}",
    )
  else:
    c = _movielens(args)
    c.reproduce.sweep_values = (ATOMIC,) + embeddings
  c.data.id_scheme = "semantic"
  se = c.data.semantic
  # About 6 code tuples per item, from the catalogue size alone: 8^3 = 512 for the simulator's
  # 80 items, 16^3 = 4,096 for ml-latest-small's 698.
  se.levels = 3
  se.codebook_size = 8 if args["data"] == "sim" else 16
  # The bi-encoders of the search / rec / joint IDs: trained to convergence on the simulator
  # (docstring); on MovieLens (~30k training rows, 10x the simulator's) the base default 10 epochs,
  # not tuned.
  c.baselines.biencoder.num_epochs = 50 if args["data"] == "sim" else 10
  # Semantic IDs need the prefix-trie constrained beam search (topk_exact is for atomic IDs).
  c.reproduce.decoders = ("beam",)
  c.reproduce.budgets = ("matched_steps",)
  return c
