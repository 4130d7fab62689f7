"""Mesh, logical-axis rules and sharded T5 on 8 fake CPU devices (run in a subprocess because the
main pytest process has already started jax with a single device)."""

import os
import subprocess
import sys
import textwrap

import jax
import pytest
from jax.sharding import PartitionSpec as P

from gr_jax.model import partitioning as part

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_logical_to_spec():
  assert part.logical_to_spec(("vocab", "embed")) == P("model", None)
  assert part.logical_to_spec(("embed", "heads", "kv")) == P(None, "model", None)
  assert part.logical_to_spec(("batch", "length")) == P("data", None)
  # A mesh axis appears at most once in a spec.
  assert part.logical_to_spec(("heads", "mlp")) == P("model", None)
  with pytest.raises(ValueError, match="'bogus'"):
    part.logical_to_spec(("bogus",))


def test_indivisible_dimension_is_replicated_with_a_warning(caplog):
  """A catalogue size the model axis does not divide still shards the other dimensions."""

  class FakeMesh:  # logical_to_spec only reads axis sizes
    shape = {"data": 2, "model": 4}

  assert part.logical_to_spec(("vocab", "embed"), mesh=FakeMesh(), shape=(128, 16)) == P(
    "model", None
  )
  with caplog.at_level("WARNING"):
    spec = part.logical_to_spec(
      ("vocab", "embed"), mesh=FakeMesh(), shape=(90, 16), name="['shared']['embedding']"
    )
  assert spec == P(None, None)
  assert "['shared']['embedding']: dimension 0 (vocab, size 90) is not divisible" in caplog.text
  assert part.logical_to_spec(("embed", "mlp"), mesh=FakeMesh(), shape=(90, 64)) == P(None, "model")


def test_make_mesh_single_device_and_errors():
  mesh = part.make_mesh()
  assert dict(mesh.shape) == {"data": jax.device_count(), "model": 1}
  with pytest.raises(ValueError, match="mesh.model="):
    part.make_mesh(model=3 * jax.device_count() + 1)
  with pytest.raises(ValueError, match="devices"):
    part.make_mesh(data=jax.device_count() + 1)


def test_maybe_initialize_distributed_noop(monkeypatch):
  import ml_collections

  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
  cfg = ml_collections.ConfigDict({"mesh": {"distributed": False}})
  assert part.maybe_initialize_distributed(cfg) is False


_SCRIPT = textwrap.dedent("""
  import jax, jax.numpy as jnp, numpy as np
  from flax import nnx
  from tests import numerics
  from jax.sharding import NamedSharding, PartitionSpec as P
  from gr_jax.model import T5, T5Config, param_logical_axes
  from gr_jax.model import partitioning as part

  assert jax.device_count() == 8, jax.devices()
  mesh = part.make_mesh(data=4, model=2)
  assert dict(mesh.shape) == {"data": 4, "model": 2}
  # Sizes divisible by model=2 on sharded axes; 4 heads, d_ff 64, vocab 512 + 8 items.
  cfg = T5Config.from_preset("tiny", num_item_tokens=8)
  sharded = part.create_sharded_model(cfg, mesh, seed=7)
  ref = T5(cfg, rngs=nnx.Rngs(7))

  # Parameters are laid out by the rules: a single device holds half of each sharded matrix.
  emb = sharded.shared.embedding[...]
  assert emb.sharding.spec == P("model", None), emb.sharding
  assert emb.addressable_shards[0].data.shape == (260, 32)
  q = sharded.encoder.layers[0].attn.q[...]
  assert q.sharding.spec == P(None, "model", None)
  assert q.addressable_shards[0].data.shape == (32, 2, 8)
  np.testing.assert_array_equal(np.asarray(emb), np.asarray(ref.shared.embedding[...]))

  rng = np.random.default_rng(0)
  enc = rng.integers(2, 520, (8, 12)).astype(np.int32); enc[3, 7:] = 0
  dec = rng.integers(2, 520, (8, 3)).astype(np.int32); dec[:, 0] = 0
  enc_s = jax.device_put(enc, part.batch_sharding(mesh))
  dec_s = jax.device_put(dec, part.batch_sharding(mesh))

  @nnx.jit
  def fwd(m, e, d):
    return m(e, d)

  with jax.set_mesh(mesh):
    out = fwd(sharded, enc_s, dec_s)
  want = fwd(ref, jnp.asarray(enc), jnp.asarray(dec))
  # Sharded vs single-device forward: partial sums per shard are combined in another order.
  numerics.assert_close_f32(np.asarray(out), np.asarray(want),
                            n_terms=numerics.t5_forward_terms(ref.config))
  assert out.sharding.spec[0] == "data", out.sharding

  # logical_to_mesh_sharding over param_logical_axes gives the same layout as the model's arrays.
  shard_tree = part.logical_to_mesh_sharding(param_logical_axes(sharded), mesh)
  got = jax.tree.leaves(shard_tree, is_leaf=lambda x: isinstance(x, NamedSharding))
  arrays = jax.tree.leaves(nnx.state(sharded, nnx.Param))
  assert len(got) == len(arrays)
  assert all(g.is_equivalent_to(x.sharding, x.ndim) for g, x in zip(got, arrays))

  # shard_model (e.g. after HF import) lands on the same layout and values.
  moved = part.shard_model(ref, mesh)
  assert moved.shared.embedding[...].sharding.spec == P("model", None)
  print("OK")
""")


@pytest.mark.slow
def test_sharded_model_matches_unsharded_on_8_cpu_devices():
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run(
    [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600, cwd=REPO
  )
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr[-5000:]
