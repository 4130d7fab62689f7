"""Golden parameter table: every parameter's path, shape, dtype and logical axes.

The tiny and base presets are recorded in tests/model/golden/param_shapes_{tiny,base}.json (base
via nnx.eval_shape: nothing is allocated). A change to the network layout fails here on purpose.
To accept an intended change, regenerate and review the diff:

  GR_JAX_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q tests/model/test_param_golden.py
"""

import json
import os

import pytest
from flax import nnx

from gr_jax.model import T5, T5Config, param_logical_axes

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), "golden")


def param_table(preset: str) -> dict:
  """{"encoder/layers/0/attn/q": [shape, dtype, axes], ...} from the abstract model."""
  model = nnx.eval_shape(lambda: T5(T5Config.from_preset(preset), rngs=nnx.Rngs(0)))
  axes = param_logical_axes(model)
  table = {}
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    name = "/".join(str(k) for k in path)
    leaf_axes = axes
    for k in path:
      leaf_axes = leaf_axes[k]
    table[name] = [list(var.shape), str(var.dtype), list(leaf_axes)]
  return dict(sorted(table.items()))


@pytest.mark.parametrize("preset", ["tiny", "base"])
def test_param_table_matches_golden(preset):
  table = param_table(preset)
  path = os.path.join(GOLDEN_DIR, f"param_shapes_{preset}.json")
  if os.environ.get("GR_JAX_REGEN_GOLDEN"):
    with open(path, "w") as f:
      # One parameter per line so diffs stay readable.
      lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in table.items()]
      f.write("{\n" + ",\n".join(lines) + "\n}\n")
  with open(path) as f:
    golden = json.load(f)
  missing, extra = sorted(set(golden) - set(table)), sorted(set(table) - set(golden))
  assert not missing and not extra, f"params removed: {missing}; params added: {extra}"
  changed = {k: (golden[k], table[k]) for k in golden if golden[k] != table[k]}
  assert not changed, f"params changed (golden, now): {changed}"
