"""Tolerances for comparing float32 results of two computations that sum in different orders.

Two programs that compute the same reduction in a different order (chunked vs full softmax,
an einsum vs a fused kernel, JAX vs PyTorch) agree only up to float32 rounding, and how much
rounding there is depends on the CPU: its vector width changes the order XLA sums in. A fixed
`rtol=1e-5` is then either too tight (it fails on one machine and passes on another) or
meaningless. These helpers derive the tolerance from what is being compared instead:

- A sum of `n` float32 terms computed in two orders differs by at most about
  `eps * n * sum|x_i|` in the worst case and by about `eps * sqrt(n) * sum|x_i|` for random-signed
  rounding errors (Higham, "Accuracy and Stability of Numerical Algorithms", section 4.2). We use
  the random-walk bound times a safety factor, so the check stays about 100x tighter than any real
  bug (a dropped vocabulary chunk, a wrong mask) changes the result.
- The error of a reduction scales with the magnitude of its *terms*, not of its result: a
  gradient entry that cancels to near zero still carries the rounding of the large terms that
  cancelled. So the absolute tolerance of an array is scaled by the array's largest magnitude.

Bitwise checks (`assert_array_equal`) stay where the same program runs twice: resume after a kill,
determinism for a seed, golden parameter shapes.
"""

from __future__ import annotations

import math

import jax
import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-07
SAFETY = 16.0  # head-room over the random-walk bound; still far below any real bug's effect


def reduction_rtol(n_terms: int, safety: float = SAFETY) -> float:
  """Relative tolerance for float32 reductions over `n_terms` terms, summed in two orders."""
  return safety * EPS32 * math.sqrt(max(int(n_terms), 1))


def assert_close_f32(
  actual, desired, *, n_terms: int, safety: float = SAFETY, err_msg: str = ""
) -> None:
  """`actual` equals `desired` to float32 accuracy for reductions of `n_terms` terms.

  Absolute tolerance: `rtol * max|desired|` (the magnitude of the terms that were summed, see the
  module docstring); relative tolerance: `rtol`.
  """
  actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
  rtol = reduction_rtol(n_terms, safety)
  scale = float(np.max(np.abs(desired))) if desired.size else 0.0
  np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale + 1e-30, err_msg=err_msg)


def assert_trees_close_f32(actual, desired, *, n_terms: int, safety: float = SAFETY) -> None:
  """`assert_close_f32` leaf by leaf (each leaf scaled by its own largest magnitude)."""
  paths = jax.tree_util.tree_flatten_with_path(desired)[0]
  got = jax.tree.leaves(actual)
  assert len(got) == len(paths), (len(got), len(paths))
  for (path, want), have in zip(paths, got):
    assert_close_f32(have, want, n_terms=n_terms, safety=safety, err_msg=jax.tree_util.keystr(path))


def t5_forward_terms(config) -> int:
  """Terms per output of a T5 forward pass, for `n_terms`: each layer's widest contraction
  (d_ff or d_model) summed over the layers, since each layer adds its own rounding."""
  width = max(int(config.d_ff), int(config.d_model), int(config.num_heads * config.d_kv))
  return width * (int(config.num_encoder_layers) + int(config.num_decoder_layers))
