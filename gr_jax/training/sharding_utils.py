"""The trainer's view of `gr_jax.training.partitioning` (mesh, logical axis rules).

The trainer keeps parameters as a pure dict (`nnx.to_pure_dict`), so the per-Variable shardings
partitioning derives from an abstract model are converted here to the same structure.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from flax import nnx

from gr_jax.training import partitioning

maybe_initialize_distributed = partitioning.maybe_initialize_distributed
batch_sharding = partitioning.batch_sharding


def make_mesh(data: int = -1, model: int = 1) -> jax.sharding.Mesh:
  return partitioning.make_mesh(data=data, model=model)


def axis_rules_context():
  """Context in which NNX resolves the model's logical axis names to mesh axes (needed when an
  abstract model is built under `jax.set_mesh`)."""
  return nnx.logical_axis_rules(partitioning.LOGICAL_AXIS_RULES)


def param_shardings(abstract_model, abstract_params, mesh) -> Any:
  """NamedShardings like `abstract_params` (the pure dict of the model's parameters)."""
  _, shardings = partitioning.state_shardings(abstract_model, mesh)
  flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(
      nnx.to_pure_dict(shardings), is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))[0]}
  paths, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
  return jax.tree.unflatten(treedef, [flat[jax.tree_util.keystr(k)] for k, _ in paths])


def sharded_init(init_fn: Callable[[], Any], shardings) -> Any:
  """Runs `init_fn` under jit so each device only materialises its own shard."""
  return jax.jit(init_fn, out_shardings=shardings)()
