"""The model's dropout (`gr_jax.model.layers`): 16-bit keep decisions packed four to a threefry
call, checked against a NumPy Threefry-2x32 written from the Random123 specification."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gr_jax.model import layers

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32_numpy(k0: int, k1: int, x0: np.ndarray, x1: np.ndarray):
  """Threefry-2x32, 20 rounds (Salmon et al., SC 2011; Random123), in uint32 NumPy."""
  m = np.uint64(0xFFFFFFFF)
  ks = [np.uint64(k0), np.uint64(k1), np.uint64(k0 ^ k1 ^ 0x1BD11BDA)]
  a, b = (x0.astype(np.uint64) + ks[0]) & m, (x1.astype(np.uint64) + ks[1]) & m
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      a = (a + b) & m
      b = ((b << np.uint64(r)) | (b >> np.uint64(32 - r))) & m
      b = a ^ b
    a = (a + ks[(i + 1) % 3]) & m
    b = (b + ks[(i + 2) % 3] + np.uint64(i + 1)) & m
  return a.astype(np.uint32), b.astype(np.uint32)


def _reference_multiplier(key, rate: float, shape) -> np.ndarray:
  """What `dropout_multiplier` promises: jax's threefry_2x32 of counters 0..ceil(n/2)-1 (its
  count array split in halves: one hash per pair), each word's low 16 bits then, after all
  low halves, the high 16 bits, as the draws of elements 0..n-1; keep when below the threshold."""
  k0, k1 = (int(v) for v in np.asarray(jax.random.key_data(key)))
  n = int(np.prod(shape))
  count = np.arange((n + 1) // 2, dtype=np.uint32)
  padded = np.concatenate([count, np.zeros(len(count) % 2, np.uint32)])
  half = len(padded) // 2
  a, b = _threefry2x32_numpy(k0, k1, padded[:half], padded[half:])
  words = np.concatenate([a, b])[: len(count)]
  draws = np.concatenate([words & 0xFFFF, words >> 16])[:n]
  threshold = round((1.0 - rate) * 65536)
  return np.where(draws < threshold, np.float32(65536 / threshold), np.float32(0)).reshape(shape)


@pytest.mark.parametrize("shape", [(7,), (3, 5), (4, 6, 8), (2, 3, 5, 7)])
def test_multiplier_equals_numpy_threefry_reference(shape):
  key = jax.random.key(11)
  got = np.asarray(layers.dropout_multiplier(key, 0.1, shape, jnp.float32))
  np.testing.assert_array_equal(got, _reference_multiplier(key, 0.1, shape))


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_dropout_rate_and_expectation(impl, rate):
  x = jnp.ones((256, 1024), jnp.float32)
  y = np.asarray(layers.dropout(x, rate, jax.random.key(3, impl=impl), site=0))
  threshold = round((1.0 - rate) * 65536)
  scale = np.float32(65536 / threshold)
  assert set(np.unique(y).tolist()) == {0.0, float(scale)}
  n = y.size
  keep = threshold / 65536
  kept = float((y != 0).mean())
  # Binomial: 5 standard deviations of the kept fraction.
  assert abs(kept - keep) < 5 * np.sqrt(keep * (1 - keep) / n), (kept, keep)
  # Inverted dropout is unbiased: the scale is the inverse of the keep probability drawn.
  assert abs(float(y.mean()) - 1.0) < 5 * float(scale) * np.sqrt(keep * (1 - keep) / n)


def test_sites_and_keys_draw_independent_masks():
  x = jnp.ones((64, 512), jnp.float32)
  k = jax.random.key(0)
  a = np.asarray(layers.dropout(x, 0.5, k, 0)) != 0
  b = np.asarray(layers.dropout(x, 0.5, k, 1)) != 0
  c = np.asarray(layers.dropout(x, 0.5, jax.random.key(1), 0)) != 0
  np.testing.assert_array_equal(a, np.asarray(layers.dropout(x, 0.5, k, 0)) != 0)
  for other in (b, c):
    agree = float((a == other).mean())
    assert 0.45 < agree < 0.55, agree  # independent halves agree about half the time


def test_deterministic_and_zero_rate_are_the_identity():
  x = jax.random.normal(jax.random.key(1), (8, 16))
  np.testing.assert_array_equal(layers.dropout(x, 0.1, None, 0), x)
  np.testing.assert_array_equal(layers.dropout(x, 0.0, jax.random.key(0), 0), x)
  np.testing.assert_array_equal(layers.relu_dropout(x, 0.1, None, 0), jax.nn.relu(x))


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_relu_dropout_equals_dropout_of_relu_values_and_gradients(impl):
  x = jax.random.normal(jax.random.key(2), (32, 48))
  key = jax.random.key(9, impl=impl)

  def fused(v):
    return layers.relu_dropout(v, 0.2, key, 3)

  def plain(v):
    return layers.dropout(jax.nn.relu(v), 0.2, key, 3)

  # Equal values; a negative input times a zero multiplier may give -0.0 where relu gives 0.0.
  np.testing.assert_array_equal(np.asarray(fused(x)) + 0.0, np.asarray(plain(x)) + 0.0)
  w = jax.random.normal(jax.random.key(4), x.shape)
  g_fused = jax.grad(lambda v: jnp.sum(fused(v) * w))(x)
  g_plain = jax.grad(lambda v: jnp.sum(plain(v) * w))(x)
  np.testing.assert_array_equal(np.asarray(g_fused), np.asarray(g_plain))
  assert float(jnp.sum(g_fused != 0)) > 0.5 * x.size * 0.8 * 0.5  # gradients flow where kept


def test_backward_does_not_regenerate_the_bits():
  """The multiplier is materialised once: the compiled forward+backward of one dropout holds as
  many threefry loops as the forward alone (XLA:CPU lowers threefry2x32 to a while loop)."""
  x = jnp.ones((64, 256), jnp.float32)
  key = jax.random.key(0)

  def f(v):
    return jnp.sum(jnp.sin(layers.dropout(v, 0.1, key, 0)))

  def loops(fn):
    return jax.jit(fn).lower(x).compile().as_text().count(" while(")

  assert loops(f) >= 1
  assert loops(jax.grad(f)) == loops(f)
