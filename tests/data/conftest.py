"""Shared fixtures of the data tests: tiny configs and a tiny simulated dataset."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)  # `configs` is a plain directory at the repo root

from configs import base  # noqa: E402

# The project's shared data sits beside the checkout (`../shared/data`); GR_JAX_SHARED_DATA overrides.
DATA = os.environ.get("GR_JAX_SHARED_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))


def tiny_config(**sim):
  c = base.get_config()
  d = c.data
  d.encoder_len = 16
  d.max_history = 10
  d.tokenizer.vocab_size = 200
  d.sim.num_items = 60
  d.sim.num_clusters = 6
  d.sim.num_users = 120
  d.sim.session_len = 6
  d.sim.eval_queries = 30
  for k, v in sim.items():
    setattr(d.sim, k, v)
  return c


def semantic_tiny_config(**semantic):
  """tiny_config with semantic IDs: 2 levels of 4 codes over 16-dim content embeddings."""
  c = tiny_config()
  c.data.id_scheme = "semantic"
  c.data.semantic.update(
    {"levels": 2, "codebook_size": 4, "content_dim": 16, "kmeans_iters": 10, **semantic}
  )
  return c


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory):
  from gr_jax.data import prepare_dataset

  return prepare_dataset(tiny_config(), str(tmp_path_factory.mktemp("sim") / "ds"))


@pytest.fixture(scope="session")
def tiny_dataset(tiny_dataset_dir):
  from gr_jax.data import ProcessedDataset

  return ProcessedDataset(tiny_dataset_dir)
