"""A small prepared simulated dataset, shared by the baseline tests that need a real one."""

from configs import base
from gr_jax.data.prepare import prepare_dataset


def prepare_small(tmp_path_factory, num_users: int = 60):
  """(config, processed dir) of a 40-item, 4-cluster simulated dataset (seconds to prepare)."""
  c = base.get_config()
  c.data.sim.num_items = 40
  c.data.sim.num_users = num_users
  c.data.sim.num_clusters = 4
  c.data.tokenizer.vocab_size = 64
  c.data.encoder_len = 16
  c.data.max_history = 10
  d = tmp_path_factory.mktemp("prepared") / "data"  # prepare wants a fresh directory
  prepare_dataset(c, str(d))
  return c, str(d)
