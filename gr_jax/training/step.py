"""Loss, the jitted train step and the eval step.

All metrics are returned as *sums* (loss, token count, correct tokens, per task) so that they add
up exactly over micro-batches, steps, logging windows and validation batches; dividing happens on
the host at logging time. The loss that is optimised is the token cross-entropy on target tokens,
averaged over the non-pad target tokens of the whole (global, all micro-batches) batch.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from gr_jax.training import state as state_lib

NUM_TASKS = 2  # gr_jax.data.TASKS = ("search", "rec"): task_id 0 and 1
BATCH_KEYS = ("encoder_input_ids", "decoder_input_ids", "decoder_target_ids", "decoder_weights",
              "task_id")


def token_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-token cross-entropy in float32. logits [B, T, V], targets [B, T] -> [B, T]."""
  logits = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)  # [B, T]
  # One-hot contraction instead of take_along_axis: stays a dot when V is sharded.
  target_logit = jnp.einsum("btv,btv->bt", logits,
                            jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype))
  return lse - target_logit  # [B, T]


def loss_sums(logits: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Summed loss / token / correct counts overall and per task (see module docstring)."""
  w = batch["decoder_weights"].astype(jnp.float32)  # [B, T]
  ce = token_cross_entropy(logits, batch["decoder_target_ids"]) * w  # [B, T]
  correct = (jnp.argmax(logits, axis=-1) == batch["decoder_target_ids"]).astype(jnp.float32) * w
  task = jax.nn.one_hot(batch["task_id"], NUM_TASKS, dtype=jnp.float32)  # [B, K]
  # An example is right when every non-pad target token is (the item ID, for atomic IDs).
  example_ok = (jnp.sum(correct, -1) == jnp.sum(w, -1)).astype(jnp.float32)  # [B]
  return {
      "loss_sum": jnp.sum(ce),
      "weight_sum": jnp.sum(w),
      "task_loss_sum": jnp.einsum("bt,bk->k", ce, task),  # [K]
      "task_weight_sum": jnp.einsum("bt,bk->k", w, task),  # [K]
      "task_correct_sum": jnp.einsum("bt,bk->k", correct, task),  # [K] correct target tokens
      "task_examples": jnp.sum(task, 0),  # [K]
      "task_example_correct": jnp.einsum("b,bk->k", example_ok, task),  # [K]
  }


def _forward(parts: state_lib.ModelParts, params, batch, *, dropout_rng=None):
  model = state_lib.merge(parts, params)
  enc = batch["encoder_input_ids"]
  deterministic = dropout_rng is None
  kwargs = {} if deterministic else {"dropout_rng": dropout_rng}
  return model(enc, batch["decoder_input_ids"], encoder_mask=enc != 0,
               deterministic=deterministic, **kwargs)  # [B, T, V] float32


def _split_micro(batch, num_micro: int):
  """[B, ...] -> [A, B/A, ...]; micro-batch i takes examples i, i+A, ... so that each one spans
  every data shard (a contiguous split would put a whole micro-batch on one device)."""
  def f(x):
    b = x.shape[0]
    if b % num_micro:
      raise ValueError(f"config.train.batch_size={b} is not divisible by "
                       f"config.train.grad_accum_steps={num_micro}")
    return jnp.swapaxes(x.reshape((b // num_micro, num_micro) + x.shape[1:]), 0, 1)
  return jax.tree.map(f, batch)


def make_train_step(parts: state_lib.ModelParts, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, *, grad_accum_steps: int = 1,
                    use_dropout: bool = True) -> Callable:
  """A pure train step `(state, batch, rng) -> (state, metrics)`; jit it with `jit_train_step`."""

  def grads_and_sums(params, batch, rng):
    def loss_fn(p):
      logits = _forward(parts, p, batch, dropout_rng=rng if use_dropout else None)
      sums = loss_sums(logits, batch)
      return sums["loss_sum"], sums
    return jax.grad(loss_fn, has_aux=True)(params)

  def step(state, batch, rng):
    batch = {k: batch[k] for k in BATCH_KEYS}
    params = state["params"]
    step_rng = jax.random.fold_in(rng, state["step"])
    if grad_accum_steps <= 1:
      grad_sum, sums = grads_and_sums(params, batch, step_rng)
    else:
      micro = _split_micro(batch, grad_accum_steps)

      def body(carry, xs):
        g_acc, s_acc = carry
        i, mb = xs
        g, s = grads_and_sums(params, mb, jax.random.fold_in(step_rng, i))
        return (jax.tree.map(jnp.add, g_acc, g), jax.tree.map(jnp.add, s_acc, s)), None

      zeros_g = jax.tree.map(jnp.zeros_like, params)
      zeros_s = jax.tree.map(jnp.zeros_like,
                             jax.eval_shape(lambda: grads_and_sums(
                                 params, jax.tree.map(lambda x: x[0], micro), step_rng)[1]))
      (grad_sum, sums), _ = jax.lax.scan(
          body, (zeros_g, zeros_s), (jnp.arange(grad_accum_steps), micro))
    # Gradient of the mean over every non-pad target token of the global batch.
    denom = jnp.maximum(sums["weight_sum"], 1.0)
    grads = jax.tree.map(lambda g: g / denom, grad_sum)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    metrics = dict(sums)
    metrics["grad_norm"] = _global_norm(grads)
    metrics["learning_rate"] = jnp.asarray(schedule(state["step"]), jnp.float32)
    new_state = {"step": state["step"] + 1, "params": new_params, "opt_state": opt_state}
    return new_state, metrics

  return step


def _global_norm(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def jit_train_step(step_fn, state_shardings, batch_sharding, mesh) -> Callable:
  """Explicit in/out shardings; the state argument is donated (updated in place)."""
  repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch_sh = {k: batch_sharding for k in BATCH_KEYS}
  return jax.jit(step_fn, in_shardings=(state_shardings, batch_sh, repl),
                 out_shardings=(state_shardings, repl), donate_argnums=(0,))


def make_eval_step(parts: state_lib.ModelParts, param_shardings, batch_sharding, mesh) -> Callable:
  """Jitted `(params, batch) -> sums` in eval mode (no dropout) for validation loss."""
  repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch_sh = {k: batch_sharding for k in BATCH_KEYS}

  def eval_step(params, batch):
    batch = {k: batch[k] for k in BATCH_KEYS}
    return loss_sums(_forward(parts, params, batch), batch)

  return jax.jit(eval_step, in_shardings=(param_shardings, batch_sh), out_shardings=repl)


def summarize(sums: dict[str, Any], tasks=("search", "rec")) -> dict[str, float]:
  """Host-side: sums (numpy, possibly added over steps) -> loss / accuracy, overall and per task."""
  out = {}
  w = float(sums["weight_sum"])
  out["loss"] = float(sums["loss_sum"]) / w if w > 0 else float("nan")
  tw = sums["task_weight_sum"]
  for k, name in enumerate(tasks):
    if float(tw[k]) > 0:
      out[f"loss/{name}"] = float(sums["task_loss_sum"][k]) / float(tw[k])
      out[f"token_accuracy/{name}"] = float(sums["task_correct_sum"][k]) / float(tw[k])
      out[f"accuracy/{name}"] = (float(sums["task_example_correct"][k])
                                 / max(float(sums["task_examples"][k]), 1.0))
  correct = float(sum(sums["task_correct_sum"]))
  out["token_accuracy"] = correct / w if w > 0 else float("nan")
  return out
