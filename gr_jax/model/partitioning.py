"""Device mesh, logical-axis rules and sharded model creation.

Every T5 parameter carries logical axis names (`gr_jax.model.param_logical_axes`); one rules table
maps them to the mesh axes `data` and `model`. Parameters are created already sharded: the model is
built abstractly with `nnx.eval_shape`, shardings are derived from that abstract state, and the
real initialiser runs under `jax.jit(out_shardings=...)`, so no device ever holds a full copy
unless the rules replicate it.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

DATA, MODEL = "data", "model"

# Logical axis -> mesh axis (None = replicated). Megatron-style tensor parallelism: attention is
# split by heads and the MLP by its hidden units, so each layer needs one all-reduce per block;
# the vocabulary (large with item tokens) is split over `model` too.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
  ("batch", DATA),
  ("vocab", MODEL),
  ("mlp", MODEL),
  ("heads", MODEL),
  ("embed", None),
  ("kv", None),
  ("relpos_buckets", None),
  ("length", None),
  ("beams", None),
)


def make_mesh(data: int = -1, model: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
  """A (data, model) mesh with Auto axis types; -1 on `data` means all remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if model < 1 or n % model:
    raise ValueError(f"mesh.model={model}: expected a positive divisor of {n} devices")
  if data == -1:
    data = n // model
  if data < 1 or data * model != n:
    raise ValueError(
      f"mesh.data={data} x mesh.model={model} = {data * model}, but {n} devices "
      f"are available (use data=-1 for the rest)"
    )
  axis_types = (jax.sharding.AxisType.Auto,) * 2
  if devices == list(jax.devices()):
    return jax.make_mesh((data, model), (DATA, MODEL), axis_types=axis_types)
  return Mesh(np.asarray(devices).reshape(data, model), (DATA, MODEL), axis_types=axis_types)


def logical_to_spec(
  axes: Sequence[str | None] | None,
  rules=LOGICAL_AXIS_RULES,
  mesh: Mesh | None = None,
  shape: Sequence[int] | None = None,
  name: str = "",
) -> P:
  """('vocab', 'embed') -> P('model', None). A mesh axis is used at most once per spec, and an
  axis of size 1 in `mesh` is dropped (replicated), so specs stay valid on any mesh shape.

  With `shape`, a dimension that the mesh axis does not divide (say 50,000 text + 62,138 item
  tokens over model=4) is replicated instead, with a warning naming the array `name`: every
  catalogue size then works on every mesh, at the memory cost the warning states."""
  table = dict(rules)
  used, out = set(), []
  for i, logical in enumerate(axes or ()):
    if logical is not None and logical not in table:
      raise ValueError(f"logical axis {logical!r} has no entry in the axis rules {sorted(table)}")
    mesh_axis = None if logical is None else table[logical]
    if mesh_axis in used or (
      mesh is not None and mesh_axis is not None and mesh.shape[mesh_axis] == 1
    ):
      mesh_axis = None
    if (
      mesh_axis is not None
      and mesh is not None
      and shape is not None
      and shape[i] % mesh.shape[mesh_axis]
    ):
      log.warning(
        "%s: dimension %d (%s, size %d) is not divisible by mesh axis %r (size %d); "
        "it is replicated on that axis",
        name or "array",
        i,
        logical,
        shape[i],
        mesh_axis,
        mesh.shape[mesh_axis],
      )
      mesh_axis = None
    if mesh_axis is not None:
      used.add(mesh_axis)
    out.append(mesh_axis)
  return P(*out)


def logical_to_mesh_sharding(axes_tree, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
  """Tree of logical axis tuples (e.g. `param_logical_axes(model)`) -> tree of NamedShardings."""
  return jax.tree.map(
    lambda axes: NamedSharding(mesh, logical_to_spec(axes, rules, mesh)),
    axes_tree,
    is_leaf=lambda x: isinstance(x, tuple),
  )


def _state_shardings(state: nnx.State, mesh: Mesh, rules) -> nnx.State:
  """Sharding per Variable of `state`: params from their logical axes, everything else replicated.

  Leaves are NamedShardings in the same structure as `state`'s arrays (for jit out_shardings).
  """

  def one(path, var):
    axes = var.get_metadata().get("out_sharding") if isinstance(var, nnx.Variable) else None
    value = var.get_value() if isinstance(var, nnx.Variable) else var
    return NamedSharding(
      mesh,
      logical_to_spec(axes, rules, mesh, getattr(value, "shape", None), jax.tree_util.keystr(path)),
    )

  return jax.tree_util.tree_map_with_path(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def abstract_model(config):
  """The T5 for `config` with ShapeDtypeStruct leaves (nothing allocated)."""
  from gr_jax.model import T5  # pylint: disable=g-import-not-at-top

  return nnx.eval_shape(lambda: T5(config, rngs=nnx.Rngs(0)))


def state_shardings(model_or_abstract, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
  """(graphdef, tree of NamedShardings like nnx.state(model))."""
  graphdef, state = nnx.split(model_or_abstract)
  return graphdef, _state_shardings(state, mesh, rules)


def create_sharded_model(config, mesh: Mesh, seed: int = 0, rules=LOGICAL_AXIS_RULES):
  """Initialises T5(config) with every parameter created directly in its shard."""
  from gr_jax.model import T5  # pylint: disable=g-import-not-at-top

  graphdef, shardings = state_shardings(abstract_model(config), mesh, rules)

  def init():
    return nnx.state(T5(config, rngs=nnx.Rngs(seed)))

  with jax.set_mesh(mesh):
    state = jax.jit(init, out_shardings=shardings)()
  return nnx.merge(graphdef, state)


def shard_model(model, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
  """Moves an existing model's state onto `mesh` by the rules (e.g. after HF import)."""
  graphdef, state = nnx.split(model)
  _, shardings = state_shardings(model, mesh, rules)
  return nnx.merge(graphdef, jax.device_put(state, shardings))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, the rest replicated."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def maybe_initialize_distributed(config=None) -> bool:
  """Calls jax.distributed.initialize when `config.mesh.distributed` or JAX_COORDINATOR_ADDRESS.

  Explicit launches set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID; on TPU/GPU
  clusters the arguments are auto-detected. Returns True when this call initialised it.
  """
  wanted = bool(config is not None and config.get("mesh", {}).get("distributed", False))
  address = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if not (wanted or address) or jax.distributed.is_initialized():
    return False
  kwargs = {}
  if address:
    kwargs["coordinator_address"] = address
    if "JAX_NUM_PROCESSES" in os.environ:
      kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
    if "JAX_PROCESS_ID" in os.environ:
      kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
  if os.environ.get("JAX_PLATFORMS", "").split(",")[0] == "cpu":
    # CPU processes need a cross-process collectives backend.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  log.info("jax.distributed.initialize(%s)", kwargs)
  jax.distributed.initialize(**kwargs)
  return True


def axis_rules_context():
  """Context in which NNX resolves the model's logical axis names to mesh axes (needed when an
  abstract model is built under `jax.set_mesh`)."""
  return nnx.logical_axis_rules(LOGICAL_AXIS_RULES)


def pure_dict_shardings(abstract_model, abstract_params, mesh: Mesh):
  """NamedShardings shaped like `abstract_params`, the pure dict (`nnx.to_pure_dict`) of the model's
  parameters that the trainer keeps (`state_shardings` gives them per nnx Variable)."""
  _, shardings = state_shardings(abstract_model, mesh)
  flat = {
    jax.tree_util.keystr(k): v
    for k, v in jax.tree_util.tree_flatten_with_path(
      nnx.to_pure_dict(shardings), is_leaf=lambda x: isinstance(x, jax.sharding.Sharding)
    )[0]
  }
  paths, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
  return jax.tree.unflatten(treedef, [flat[jax.tree_util.keystr(k)] for k, _ in paths])


def sharded_init(init_fn, shardings):
  """Runs `init_fn` under jit so each device only materialises its own shard."""
  return jax.jit(init_fn, out_shardings=shardings)()
