"""Train state, optimizer and model construction (pure-NNX style).

The model is split once with `nnx.split` into a static `graphdef` and its parameters; training then
works on a plain pytree

  {"step": int32 [], "params": nested dict of arrays, "opt_state": optax state}

so that jitted steps are pure functions of (state, batch) and Orbax saves ordinary dicts. The model
is rebuilt inside jit with `nnx.merge(graphdef, params)` (MaxText `pure_nnx`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from gr_jax.training import partitioning

log = logging.getLogger(__name__)

TrainState = dict  # {"step", "params", "opt_state"}; see module docstring


# ------------------------------------------------------------------------------------------ config


_RUNTIME_FIELDS = ("dtype", "param_dtype", "dropout_rate", "remat", "attention_impl")


def _runtime_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return {
    "dtype": config.model.dtype,
    "param_dtype": config.model.param_dtype,
    "dropout_rate": float(config.model.dropout_rate),
    "remat": bool(config.train.get("remat", False)),
    # .get: config.json files written before the field existed restore with the default.
    "attention_impl": str(config.model.get("attention_impl", "auto")),
  }


def model_config_from(config: ml_collections.ConfigDict):
  """The `T5Config` a run config describes.

  Architecture: `model.init_from`'s config.json when set, else `model.preset` plus
  `model.overrides`; compute dtype, parameter dtype, dropout and remat always come from the run
  config. The vocabulary sizes must already be in model.overrides (`resolve_vocab`).
  """
  from gr_jax.model import T5Config  # pylint: disable=g-import-not-at-top

  overrides = dict(config.model.get("overrides", {}) or {})
  for k in _RUNTIME_FIELDS:
    overrides.pop(k, None)
  overrides.update(_runtime_overrides(config))
  if config.model.init_from:
    from gr_jax.model.hf_import import config_from_hf  # pylint: disable=g-import-not-at-top

    num_items = overrides.pop("num_item_tokens", 0)
    hf = config_from_hf(
      config.model.init_from,
      num_item_tokens=num_items,
      dtype=overrides.pop("dtype"),
      param_dtype=overrides.pop("param_dtype"),
      dropout_rate=overrides.pop("dropout_rate"),
      remat=overrides.pop("remat"),
      attention_impl=overrides.pop("attention_impl"),
    )
    return hf
  return T5Config.from_preset(config.model.preset, **overrides)


def architecture(model_config) -> dict[str, Any]:
  """T5Config fields that fix the parameter shapes (everything but the runtime fields)."""
  d = dict(model_config.to_dict())
  for k in _RUNTIME_FIELDS:
    d.pop(k, None)
  return d


def resolve_model(
  config: ml_collections.ConfigDict,
  *,
  text_vocab_size: int,
  num_item_tokens: int,
  token_offset: int | None = None,
  where: str = "dataset",
):
  """(resolved config copy, T5Config): model.overrides gets the full architecture.

  The dataset fixes the vocabulary: `vocab_size` = its text vocabulary (unless `model.init_from`
  brings its own, which must then be where the dataset's item tokens start) and `num_item_tokens` =
  its number of item-ID tokens. Writing every architecture field into the resolved config makes
  config.json self-contained (restoring never needs the Hugging Face directory again).
  """
  config = ml_collections.ConfigDict(config.to_dict())
  with config.unlocked():
    if "overrides" not in config.model or config.model.overrides is None:
      config.model.overrides = ml_collections.ConfigDict()
    if not config.model.init_from:
      config.model.overrides.vocab_size = int(text_vocab_size)
    config.model.overrides.num_item_tokens = int(num_item_tokens)
    model_config = model_config_from(config)
    offset = text_vocab_size if token_offset is None else token_offset
    if model_config.vocab_size != offset:
      raise ValueError(
        f"{where}: item tokens start at {offset} but the model's text vocabulary is "
        f"{model_config.vocab_size} (config.model.init_from={config.model.init_from!r}); "
        "prepare the dataset with that checkpoint's tokenizer (config.data.tokenizer.path)"
      )
    config.model.overrides = ml_collections.ConfigDict(architecture(model_config))
  return config, model_config


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


# ------------------------------------------------------------------------------------------- model


@dataclasses.dataclass
class ModelParts:
  """The static half of a split model plus how its parameters are laid out on the mesh."""

  graphdef: Any
  rest: Any  # non-parameter state (pure dict), normally empty
  param_shardings: Any  # pytree like params of NamedSharding
  model_config: Any
  # How the step computes the loss (config.train.loss_impl / loss_chunk_size), carried here so
  # that every step built from these parts (train, eval, benchmark) uses the run's choice.
  loss_impl: str = "auto"
  loss_chunk_size: int = 16384


def _split(model):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def build_model(
  config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *, abstract: bool = False
) -> tuple[ModelParts, Any]:
  """Creates (or, with `abstract`, only describes) the sharded model of a run.

  Random init uses `config.seed`; `config.model.init_from` loads a Hugging Face T5 directory.
  Returns the static parts and the parameters (ShapeDtypeStructs with shardings when abstract).
  """
  model_config = model_config_from(config)
  with partitioning.axis_rules_context():
    abstract_model = nnx.eval_shape(lambda: _new_model(model_config, 0))
    graphdef, abstract_params, rest = _split(abstract_model)
    param_shardings = partitioning.pure_dict_shardings(abstract_model, abstract_params, mesh)
    parts = ModelParts(
      graphdef,
      rest,
      param_shardings,
      model_config,
      loss_impl=str(config.train.get("loss_impl", "auto")),
      loss_chunk_size=int(config.train.get("loss_chunk_size", 16384)),
    )
    if abstract:
      return parts, jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract_params,
        param_shardings,
      )
    if config.model.init_from:
      from gr_jax.model import load_hf_checkpoint  # pylint: disable=g-import-not-at-top

      hf = load_hf_checkpoint(
        config.model.init_from,
        num_item_tokens=model_config.num_item_tokens,
        dtype=model_config.dtype,
        param_dtype=model_config.param_dtype,
        seed=int(config.seed),
        dropout_rate=model_config.dropout_rate,
        remat=model_config.remat,
      )
      _, params, _ = _split(hf)
      _check_same_shapes(abstract_params, params, config.model.init_from)
      params = jax.device_put(params, param_shardings)
    else:
      params = partitioning.sharded_init(
        lambda: _split(_new_model(model_config, int(config.seed)))[1], param_shardings
      )
  return parts, params


def _new_model(model_config, seed: int):
  from gr_jax.model import T5  # pylint: disable=g-import-not-at-top

  return T5(model_config, rngs=nnx.Rngs(seed))


def _check_same_shapes(expected, got, where: str):
  exp = {
    jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_flatten_with_path(expected)[0]
  }
  have = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_flatten_with_path(got)[0]}
  bad = [
    f"{k}: expected {exp.get(k)}, got {have.get(k)}"
    for k in sorted(set(exp) | set(have))
    if exp.get(k) != have.get(k)
  ]
  if bad:
    raise ValueError(
      f"{where}: parameters do not match config.model ({len(bad)} differ; first: {bad[0]})"
    )


def merge(parts: ModelParts, params):
  """The NNX model for `params` (inside or outside jit)."""
  return nnx.merge(parts.graphdef, params, parts.rest)


# ------------------------------------------------------------------------------------- train state


def init_train_state(params, tx: optax.GradientTransformation) -> TrainState:
  return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}


def state_shardings(
  parts: ModelParts, tx: optax.GradientTransformation, mesh, abstract_params
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


def num_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
