"""The per-item cap study (paper: 5 / 10 / 50 / 500): how much of the added task does the joint
model need?

In Gen_R+S the training instances of the *added* task are capped per item (here: search queries
added to recommendation, `task=search`; `task=rec` caps sessions added to search). Gen_S and Gen_R
are trained uncapped as references. The report tables and plots the joint model's gain per cap.
Runs on the simulated default (`data=sim`) or MovieLens (`data=movielens`, ml-latest-small).

Arg: data=sim|movielens, task=search|rec, seeds=N.
Runtime: about 20 minutes on a 2-core CPU with the simulated default; minutes on one GPU.
Expected result: the gain grows with the cap and saturates.

  python -m gr_jax.reproduce --config configs/item_cap.py:task=search --workdir runs/item_cap
"""

from configs import common, movielens, quickstart


def get_config(arg=None):
  args = common.parse_arg(arg, data="sim", task="search", seeds=2)
  if args["data"] == "movielens":
    c = movielens.get_config(f"seeds={args['seeds']}")
  elif args["data"] == "sim":
    c = common.without_recorded_tuning(quickstart.get_config(f"seeds={args['seeds']}"))
  else:
    raise ValueError(f"item_cap: data={args['data']!r}; expected sim or movielens")
  c.name = "item_cap"
  c.data.item_cap_task = args["task"]
  c.reproduce.sweep = "data.item_cap"
  c.reproduce.sweep_values = (5, 10, 50, 500)
  c.reproduce.analyses = False
  return c
