"""T5 network (Flax NNX), Hugging Face checkpoint import and FLOPs accounting.

config.py   T5Config, the presets, the attention-kernel choice
layers.py   norms, relative position bias, one attention function, MLP, encoder/decoder layers
network.py  Encoder / Decoder stacks and T5 (train forward, encode, decode, cached decode step)
hf_import.py  Hugging Face checkpoints -> T5;  flops.py  FLOPs per example and device peaks
"""

from gr_jax.model.config import PRESETS, T5Config
from gr_jax.model.network import T5, count_params, param_logical_axes

__all__ = ["PRESETS", "T5", "T5Config", "count_params", "param_logical_axes", "load_hf_checkpoint"]


def __getattr__(name):
  # Lazy so that importing the network does not pull in safetensors.
  if name == "load_hf_checkpoint":
    from gr_jax.model.hf_import import load_hf_checkpoint

    return load_hf_checkpoint
  raise AttributeError(name)
