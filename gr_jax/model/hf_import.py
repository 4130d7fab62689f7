"""Load a Hugging Face T5 checkpoint directory into a `gr_jax.model.T5` (no torch, no pickle).

Reads `config.json` and either `model.safetensors` or sharded `model-0000x-of-0000y.safetensors`
files listed by `model.safetensors.index.json`, with safetensors' numpy API. bfloat16 tensors
(which that API cannot represent) are read from the file's own header with `ml_dtypes.bfloat16`.

Layout conversion (torch `nn.Linear.weight` is [out, in]; ours are [in, ...]):
  q/k/v [H*Dh, D] -> [D, H, Dh]     o [D, H*Dh] -> [H, Dh, D]
  wi*/wo [out, in] -> [in, out]     lm_head [V, D] -> [D, V]
  shared [V, D], relative_attention_bias [buckets, H], layer norms [D]: as stored.

Item tokens: `num_item_tokens` new rows are appended to the embedding (and to the untied output
projection). They are drawn from N(mean, std) of the pretrained rows of the same matrix (per
column mean, one global std), with `seed`, so item tokens start in the same region and scale as
real words instead of at zero (which would make all items tie) or at std 1 (far off the trained
scale of flan-t5's embedding).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gr_jax.model import T5, T5Config

_SUPPORTED_ARCHS = ("T5ForConditionalGeneration", "T5Model", "T5WithLMHeadModel")
_SUPPORTED_FF = ("relu", "gated-gelu", "gated-relu", "gelu")


class CheckpointError(ValueError):
  """A Hugging Face checkpoint that cannot be loaded; the message names the file and tensor."""


# ------------------------------------------------------------------------------------ config


def config_from_hf(path: str, **overrides) -> T5Config:
  """Builds a T5Config from `<path>/config.json`; `overrides` replace fields (e.g. dtype)."""
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_path):
    raise CheckpointError(f"{cfg_path}: not found (expected a Hugging Face T5 directory)")
  try:
    with open(cfg_path) as f:
      hf = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{cfg_path}: line {e.lineno}: invalid JSON: {e.msg}") from e
  archs = hf.get("architectures") or []
  model_type = hf.get("model_type")
  if model_type != "t5" or (archs and not any(a in _SUPPORTED_ARCHS for a in archs)):
    raise CheckpointError(
      f"{cfg_path}: field 'model_type'/'architectures' = {model_type!r}/{archs!r}: expected "
      f"model_type 't5' with one of {_SUPPORTED_ARCHS}"
    )
  ff = hf.get("feed_forward_proj", "relu")
  if ff not in _SUPPORTED_FF:
    raise CheckpointError(
      f"{cfg_path}: field 'feed_forward_proj' = {ff!r}: expected one of {_SUPPORTED_FF}"
    )

  def need(key):
    if key not in hf:
      raise CheckpointError(f"{cfg_path}: missing field {key!r}")
    return hf[key]

  fields = dict(
    vocab_size=int(need("vocab_size")),
    d_model=int(need("d_model")),
    d_kv=int(need("d_kv")),
    d_ff=int(need("d_ff")),
    num_heads=int(need("num_heads")),
    num_encoder_layers=int(need("num_layers")),
    num_decoder_layers=int(hf.get("num_decoder_layers") or hf["num_layers"]),
    relative_attention_num_buckets=int(hf.get("relative_attention_num_buckets", 32)),
    relative_attention_max_distance=int(hf.get("relative_attention_max_distance", 128)),
    dropout_rate=float(hf.get("dropout_rate", 0.1)),
    layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
    feed_forward_proj=ff,
    tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
    pad_token_id=int(hf.get("pad_token_id", 0) or 0),
    eos_token_id=int(hf.get("eos_token_id", 1) or 1),
    decoder_start_token_id=int(hf.get("decoder_start_token_id", 0) or 0),
  )
  fields.update(overrides)
  return T5Config(**fields)


# ------------------------------------------------------------------------------------ tensors


class _TensorSource:
  """Name -> numpy array over one or several safetensors files."""

  def __init__(self, path: str):
    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    self.files: dict[str, str] = {}  # tensor name -> file
    if os.path.isfile(index):
      try:
        with open(index) as f:
          weight_map = json.load(f)["weight_map"]
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index}: expected JSON with a 'weight_map' object ({e})") from e
      if not isinstance(weight_map, dict):
        raise CheckpointError(
          f"{index}: field 'weight_map': expected an object, got {type(weight_map).__name__}"
        )
      for name, fname in weight_map.items():
        # A shard name is a file of this directory: refuse "../x" and absolute paths (the index
        # must not make us read arbitrary files). Checked on the name, not the realpath: the
        # Hugging Face cache's shards are symlinks into its blobs/ directory.
        norm = os.path.normpath(fname) if isinstance(fname, str) and fname else ""
        if not norm or os.path.isabs(norm) or norm == ".." or norm.startswith(".." + os.sep):
          raise CheckpointError(
            f"{index}: weight_map[{name!r}] = {fname!r}: expected a file "
            f"name inside the model directory {path}"
          )
        full = os.path.join(path, norm)
        if not os.path.isfile(full):
          raise CheckpointError(f"{index}: weight_map[{name!r}] names missing file {fname!r}")
        self.files[name] = full
    elif os.path.isfile(single):
      from safetensors import safe_open

      with safe_open(single, framework="np") as f:
        for name in f.keys():
          self.files[name] = single
    else:
      raise CheckpointError(
        f"{path}: neither model.safetensors nor model.safetensors.index.json found (only "
        f"safetensors checkpoints are read; pytorch_model.bin is pickle and is refused)"
      )

  def __contains__(self, name: str) -> bool:
    return name in self.files

  def get(self, name: str) -> np.ndarray:
    from safetensors import safe_open

    fname = self.files[name]
    with safe_open(fname, framework="np") as f:
      if name not in f.keys():
        raise CheckpointError(f"{fname}: tensor {name!r} listed in the index but not in the file")
      try:
        return f.get_tensor(name)
      except (KeyError, TypeError, ValueError):
        pass
    return _read_raw(fname, name)


def _read_raw(fname: str, name: str) -> np.ndarray:
  """Reads one tensor straight from the safetensors layout (for dtypes numpy lacks, e.g. BF16)."""
  import ml_dtypes

  dtypes = {
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
  }
  with open(fname, "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(n))
  info = header[name]
  if info["dtype"] not in dtypes:
    raise CheckpointError(f"{fname}: tensor {name!r} has unsupported dtype {info['dtype']}")
  start, end = info["data_offsets"]
  arr = np.memmap(fname, dtype=np.uint8, mode="r", offset=8 + n + start, shape=(end - start,))
  return np.array(arr).view(dtypes[info["dtype"]]).reshape(info["shape"])


# ------------------------------------------------------------------------------------ mapping


def _param_map(cfg: T5Config) -> list[tuple[tuple, str, tuple[int, ...], Callable]]:
  """(our state path, HF tensor name, expected HF shape, HF -> ours transform) for every param."""
  d, h, k, f = cfg.d_model, cfg.num_heads, cfg.d_kv, cfg.d_ff
  ident = lambda w: w
  to_in = lambda w: w.T  # [out, in] -> [in, out]
  qkv = lambda w: w.T.reshape(d, h, k)  # [H*Dh, D] -> [D, H, Dh]
  out = lambda w: w.T.reshape(h, k, d)  # [D, H*Dh] -> [H, Dh, D]
  entries = []

  def attn(ours, hf):
    for n in ("q", "k", "v"):
      entries.append((ours + (n,), f"{hf}.{n}.weight", (h * k, d), qkv))
    entries.append((ours + ("o",), f"{hf}.o.weight", (d, h * k), out))

  def mlp(ours, hf):
    names = ("wi_0", "wi_1") if cfg.is_gated else ("wi",)
    for n in names:
      entries.append((ours + (n,), f"{hf}.{n}.weight", (f, d), to_in))
    entries.append((ours + ("wo",), f"{hf}.wo.weight", (d, f), to_in))

  def norm(ours, hf):
    entries.append((ours + ("scale",), f"{hf}.weight", (d,), ident))

  nb = cfg.relative_attention_num_buckets
  for stack, n_layers in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
    entries.append(
      (
        (stack, "relpos_bias", "embedding"),
        f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        (nb, h),
        ident,
      )
    )
    for i in range(n_layers):
      ours, hf = (stack, "layers", i), f"{stack}.block.{i}.layer"
      if stack == "encoder":
        norm(ours + ("attn_norm",), f"{hf}.0.layer_norm")
        attn(ours + ("attn",), f"{hf}.0.SelfAttention")
        norm(ours + ("mlp_norm",), f"{hf}.1.layer_norm")
        mlp(ours + ("mlp",), f"{hf}.1.DenseReluDense")
      else:
        norm(ours + ("self_attn_norm",), f"{hf}.0.layer_norm")
        attn(ours + ("self_attn",), f"{hf}.0.SelfAttention")
        norm(ours + ("cross_attn_norm",), f"{hf}.1.layer_norm")
        attn(ours + ("cross_attn",), f"{hf}.1.EncDecAttention")
        norm(ours + ("mlp_norm",), f"{hf}.2.layer_norm")
        mlp(ours + ("mlp",), f"{hf}.2.DenseReluDense")
    norm((stack, "final_norm"), f"{stack}.final_layer_norm")
  return entries


def extend_rows(w: np.ndarray, n_new: int, rng: np.random.Generator) -> np.ndarray:
  """Appends `n_new` rows ~ N(column mean, global std) of `w`'s rows: [V, D] -> [V + n_new, D]."""
  if n_new == 0:
    return w
  w32 = w.astype(np.float32)
  mean = w32.mean(axis=0, keepdims=True)  # [1, D]
  std = float(w32.std())
  new = mean + std * rng.standard_normal((n_new, w.shape[1]), dtype=np.float32)
  return np.concatenate([w32, new], axis=0)


def _set(tree: dict, path: tuple, value) -> None:
  for p in path[:-1]:
    tree = tree[p]
  tree[path[-1]] = value


def load_hf_checkpoint(
  path: str,
  *,
  num_item_tokens: int = 0,
  dtype: Any = "float32",
  param_dtype: Any = "float32",
  seed: int = 0,
  **overrides,
) -> T5:
  """Reads a Hugging Face T5 directory into a `T5` (eval-ready; dropout from config.json).

  Args:
    path: directory with config.json and model.safetensors (or a sharded index).
    num_item_tokens: atomic item tokens appended to the vocabulary (see module docstring).
    dtype: compute dtype; param_dtype: storage dtype of the parameters.
    seed: numpy seed for the new item-token rows.
    **overrides: other T5Config fields to replace (e.g. dropout_rate, remat).
  Raises:
    CheckpointError naming the file and tensor for unknown architectures, missing tensors and
    shape mismatches.
  """
  cfg = config_from_hf(
    path, num_item_tokens=num_item_tokens, dtype=dtype, param_dtype=param_dtype, **overrides
  )
  src = _TensorSource(path)
  where = os.path.join(path, "model.safetensors")

  abstract = nnx.eval_shape(lambda: T5(cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  pure = nnx.to_pure_dict(state)
  pdt = jnp.dtype(cfg.param_dtype)

  def fetch(name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in src:
      raise CheckpointError(f"{where}: missing tensor {name!r} (expected shape {shape})")
    w = src.get(name)
    if tuple(w.shape) != tuple(shape):
      raise CheckpointError(
        f"{src.files[name]}: tensor {name!r} has shape {tuple(w.shape)}, "
        f"expected {tuple(shape)} from config.json"
      )
    return w

  for ours, name, shape, fn in _param_map(cfg):
    _set(pure, ours, jnp.asarray(fn(fetch(name, shape).astype(np.float32)), pdt))

  rng = np.random.default_rng(seed)
  v, d = cfg.vocab_size, cfg.d_model
  # save_pretrained keeps one of the tied copies; any of them is the shared embedding.
  emb_name = next(
    (
      n
      for n in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
      if n in src
    ),
    "shared.weight",
  )
  emb = fetch(emb_name, (v, d))
  _set(pure, ("shared", "embedding"), jnp.asarray(extend_rows(emb, num_item_tokens, rng), pdt))
  if not cfg.tie_word_embeddings:
    lm = fetch("lm_head.weight", (v, d))
    _set(pure, ("lm_head", "kernel"), jnp.asarray(extend_rows(lm, num_item_tokens, rng).T, pdt))

  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)
