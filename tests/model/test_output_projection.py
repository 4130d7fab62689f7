"""The output layer in bf16: float32 logits, and a backward pass whose matmuls stay bf16."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gr_jax.model.layers import output_projection
from tests import numerics

SPECS = {"untied": ("...d,dv->...v", (16, 40)), "tied": ("...d,vd->...v", (40, 16))}


def _dot_operand_types(hlo_text):
  """(lhs, rhs) tensor types of every dot_general in lowered StableHLO text."""
  return re.findall(
    r"stablehlo.dot_general[^\n]*:\s*\((tensor<[^>]*>), (tensor<[^>]*>)\)", hlo_text
  )


def _inputs(w_shape, dtype):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 5, 16)), dtype)
  w = jnp.asarray(rng.normal(size=w_shape) * 0.2, dtype)
  g = jnp.asarray(rng.normal(size=(3, 5, 40)), jnp.float32)
  return x, w, g


@pytest.mark.parametrize("layout", sorted(SPECS))
def test_bf16_values_and_gradients_match_float32_autodiff(layout):
  spec, w_shape = SPECS[layout]
  x, w, g = _inputs(w_shape, jnp.bfloat16)
  out, vjp = jax.vjp(lambda a, b: output_projection(a, b, spec), x, w)
  assert out.dtype == jnp.float32
  # Reference: the same math in float32 from the same bf16-representable inputs (NumPy einsum).
  xf, wf, gf = (np.asarray(t, np.float32) for t in (x, w, g))
  # float32 accumulation of bf16 products vs NumPy's float32 einsum: one contraction of 40 terms.
  numerics.assert_close_f32(
    np.asarray(out), np.einsum(spec.replace("...", "ab"), xf, wf), n_terms=40
  )
  dx, dw = vjp(g)
  assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16
  ins, o = spec.replace("...", "ab").split("->")
  xs, ws = ins.split(",")
  gb = np.asarray(g.astype(jnp.bfloat16), np.float32)  # the cotangent is rounded to bf16 first
  np.testing.assert_allclose(
    np.asarray(dx, np.float32), np.einsum(f"{o},{ws}->{xs}", gb, wf), rtol=2e-2, atol=2e-2
  )
  np.testing.assert_allclose(
    np.asarray(dw, np.float32), np.einsum(f"{xs},{o}->{ws}", xf, gb), rtol=2e-2, atol=2e-2
  )


@pytest.mark.parametrize("layout", sorted(SPECS))
def test_backward_matmuls_take_bf16_operands(layout):
  spec, w_shape = SPECS[layout]
  x, w, g = _inputs(w_shape, jnp.bfloat16)

  def loss(a, b):
    return jnp.sum(output_projection(a, b, spec) * g)

  text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).as_text()
  dots = _dot_operand_types(text)
  assert len(dots) == 2, dots  # dx and dw (the forward dot is dead code under grad-only)
  for a, b in dots:
    assert a.endswith("xbf16>") and b.endswith("xbf16>"), (a, b)
  # Plain autodiff would have promoted them to float32: the reason the custom rule exists.
  plain = jax.jit(
    jax.grad(
      lambda a, b: jnp.sum(jnp.einsum(spec, a, b, preferred_element_type=jnp.float32) * g),
      argnums=(0, 1),
    )
  )
  plain_dots = _dot_operand_types(plain.lower(x, w).as_text())
  assert any(a.endswith("xf32>") for a, _ in plain_dots)


def test_float32_is_plain_autodiff():
  spec, w_shape = SPECS["untied"]
  x, w, g = _inputs(w_shape, jnp.float32)
  ours = jax.vjp(lambda a, b: output_projection(a, b, spec), x, w)[1](g)
  ref = jax.vjp(lambda a, b: jnp.einsum(spec, a, b, preferred_element_type=jnp.float32), x, w)[1](g)
  for a, b in zip(ours, ref):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
