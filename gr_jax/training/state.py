"""Train state and optimizer (pure-NNX style; the model itself is built by gr_jax/model/build.py).

The model is split once with `nnx.split` into a static `graphdef` and its parameters; training then
works on a plain pytree

  {"step": int32 [], "params": nested dict of arrays, "opt_state": optax state}

so that jitted steps are pure functions of (state, batch) and Orbax saves ordinary dicts. The model
is rebuilt inside jit with `nnx.merge(graphdef, params)` (MaxText `pure_nnx`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from gr_jax.model import build as build_lib

TrainState = dict  # {"step", "params", "opt_state"}; see module docstring


# --------------------------------------------------------------------------------------- optimizer


def make_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up to `train.learning_rate`, then constant, cosine or linear decay to 0.

  The warm-up is a fraction of the run (`train.warmup_fraction`), not a step count, so that runs
  of different lengths (Gen_S, Gen_R and Gen_R+S under the epochs budget) all spend the same
  share of their steps warming up, and a short run is never all warm-up.
  """
  t = config.train
  lr = float(t.learning_rate)
  fraction = float(t.warmup_fraction)
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"config.train.warmup_fraction must be in [0, 1), got {fraction}")
  warmup = max(0, min(int(round(fraction * total_steps)), max(total_steps - 1, 0)))
  rest = max(total_steps - warmup, 1)
  if t.schedule == "constant":
    after = optax.constant_schedule(lr)
  elif t.schedule == "cosine":
    after = optax.cosine_decay_schedule(lr, rest)
  elif t.schedule == "linear":
    after = optax.linear_schedule(lr, 0.0, rest)
  else:
    raise ValueError(
      f"config.train.schedule: expected constant | cosine | linear, got {t.schedule!r}"
    )
  if warmup == 0:
    return after
  # Warm-up starts at lr/warmup (not 0) so the very first step already moves the weights.
  return optax.join_schedules([optax.linear_schedule(lr / warmup, lr, warmup), after], [warmup])


def _decay_mask(params):
  # HF Trainer (the paper's) exempts biases and LayerNorm weights from weight decay; T5 has no
  # biases, so this leaves the 1-D layer-norm scales undecayed.
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(
  config: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW (paper: lr 0.002, weight decay 0.01) with clipping; gradient accumulation is in step."""
  t = config.train
  schedule = make_schedule(config, total_steps)
  parts = []
  if t.grad_clip_norm and float(t.grad_clip_norm) > 0:
    parts.append(optax.clip_by_global_norm(float(t.grad_clip_norm)))
  parts.append(
    optax.adamw(
      schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=float(t.weight_decay), mask=_decay_mask
    )
  )
  return optax.chain(*parts), schedule


# ------------------------------------------------------------------------------------- train state


def init_train_state(params, tx: optax.GradientTransformation) -> TrainState:
  return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}


def state_shardings(
  parts: build_lib.ModelParts, tx: optax.GradientTransformation, mesh, abstract_params
) -> Any:
  """Shardings of the whole train state: params from the partitioner; optimizer moments follow
  their parameter (read back from the compiled init, so no buffer is allocated)."""
  repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  compiled = (
    jax.jit(lambda p: init_train_state(p, tx), in_shardings=(parts.param_shardings,))
    .lower(abstract_params)
    .compile()
  )
  # Rebuilt on `mesh` without a memory kind, like the parameter shardings, so that jit sees one
  # consistent set (compiled shardings carry memory_kind="device").
  shardings = jax.tree.map(
    lambda s: (
      jax.sharding.NamedSharding(mesh, s.spec)
      if isinstance(s, jax.sharding.NamedSharding)
      else repl
    ),
    compiled.output_shardings,
  )
  shardings["params"] = parts.param_shardings
  shardings["step"] = repl
  return shardings


def create_train_state(params, tx, shardings) -> TrainState:
  """The step-0 state, laid out by `shardings` (params are donated into it)."""
  return jax.jit(lambda p: init_train_state(p, tx), out_shardings=shardings, donate_argnums=(0,))(
    params
  )


def abstract_train_state(abstract_params, tx, shardings) -> TrainState:
  shapes = jax.eval_shape(lambda p: init_train_state(p, tx), abstract_params)
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings
  )
