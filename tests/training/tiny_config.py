"""Tiny training config for tests: simulated data, a 2-layer d=32 T5, a few dozen steps.

`get_config("tasks=joint|search|rec")`: the three model kinds differ only in `data.tasks`.
"""

from configs import base

_TASKS = {"joint": ("search", "rec"), "search": ("search",), "rec": ("rec",)}


def get_config(arg=None):
  kind = "joint"
  if arg:
    key, _, value = arg.partition("=")
    if key != "tasks" or value not in _TASKS:
      raise ValueError(f"tiny_config arg: expected tasks=joint|search|rec, got {arg!r}")
    kind = value
  c = base.get_config()
  c.name = f"tiny_{kind}"
  c.data.tasks = _TASKS[kind]
  c.data.sim.num_items = 40
  c.data.sim.num_clusters = 4
  c.data.sim.num_users = 60
  c.data.sim.session_len = 5
  c.data.sim.queries_per_item = 2
  c.data.tokenizer.vocab_size = 128
  c.data.encoder_len = 16
  c.data.max_query_tokens = 8
  c.data.max_history = 8
  c.model.preset = "tiny"
  c.model.dropout_rate = 0.1  # exercises the per-step dropout keys (resume must replay them)
  c.train.batch_size = 16
  c.train.num_steps = 24
  c.train.learning_rate = 0.01
  c.train.warmup_fraction = 0.1
  c.train.log_every_steps = 4
  c.train.eval_every_steps = 12
  c.checkpoint.every_steps = 6
  c.checkpoint.keep = 2
  return c


def make(processed_dir, arg=None, **overrides):
  """get_config(arg) on a prepared dataset, with `a.b=value` overrides given as a__b=value."""
  c = get_config(arg)
  c.data.processed_dir = str(processed_dir)
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split("__")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c
