"""A run's model from its config: the T5Config a run config describes, and the sharded model
(or its abstract description) built on a mesh, split once into a static graphdef and a pure dict
of parameters (MaxText `pure_nnx`). The trainer, the checkpoint restore and the benchmarks build
models here; `gr_jax/training/state.py` adds the optimizer and the train state around them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from gr_jax.model import partitioning

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


def num_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
