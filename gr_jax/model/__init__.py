"""T5 network (Flax NNX), Hugging Face checkpoint import and FLOPs accounting."""

from gr_jax.model.t5 import PRESETS, T5, T5Config, count_params, param_logical_axes

__all__ = ["PRESETS", "T5", "T5Config", "count_params", "param_logical_axes", "load_hf_checkpoint"]


def __getattr__(name):
  # Lazy so that importing the network does not pull in safetensors.
  if name == "load_hf_checkpoint":
    from gr_jax.model.hf_import import load_hf_checkpoint
    return load_hf_checkpoint
  raise AttributeError(name)
