"""Loss, the jitted train step and the eval step.

All metrics are returned as *sums* (loss, token count, correct tokens, per task) so that they add
up exactly over micro-batches, steps, logging windows and validation batches; dividing happens on
the host at logging time. The loss that is optimised is the token cross-entropy on target tokens,
averaged over the non-pad target tokens of the whole (global, all micro-batches) batch.

Two ways to compute it (`config.train.loss_impl`, carried on `ModelParts`): "full" takes the model's
`[B, T, V]` logits; "chunked" takes the decoder outputs `[B, T, D]` and the output projection and
runs `loss.chunked_token_cross_entropy` (no `[B, T, V]` tensor, forward or backward). Both give the
same sums, accuracy included (the chunked pass also returns the argmax). "auto" = chunked when the
vocabulary (text + items) exceeds `AUTO_CHUNKED_VOCAB`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from gr_jax.schema import BATCH_KEYS, NUM_TASKS, TASKS  # noqa: F401  (step_lib.BATCH_KEYS)
from gr_jax.training import loss as loss_lib
from gr_jax.model import build as build_lib

LOSS_IMPLS = ("auto", "full", "chunked")
# Above this many output tokens the float32 logits (and their gradient) of a batch are big enough
# that chunking pays: T5-base, batch 128 x 2 targets, 65,536 tokens = 2 x 64 MiB.
AUTO_CHUNKED_VOCAB = 65_536

DROPOUT_PRNGS = ("auto", "threefry2x32", "rbg")
_DROPOUT_SALT = 0x44524F50  # separates the dropout key stream from the init key of the same seed


def resolve_dropout_prng(name: str, platform: str | None = None) -> str:
  """`train.dropout_prng` -> a jax PRNG implementation name ("auto": rbg off CPU)."""
  if name not in DROPOUT_PRNGS:
    raise ValueError(f"train.dropout_prng: expected one of {DROPOUT_PRNGS}, got {name!r}")
  if name == "auto":
    platform = platform or jax.default_backend()
    return "threefry2x32" if platform == "cpu" else "rbg"
  return name


def dropout_key(seed: int, prng: str = "auto") -> jax.Array:
  """The run's dropout base key; step s uses fold_in(key, s) (`make_train_step`), so the masks are
  a function of (seed, step, prng) alone and a resumed run draws the same ones."""
  impl = resolve_dropout_prng(prng)
  return jax.random.fold_in(jax.random.key(int(seed), impl=impl), _DROPOUT_SALT)


def token_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-token cross-entropy in float32. logits [B, T, V], targets [B, T] -> [B, T]."""
  logits = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)  # [B, T]
  # One-hot contraction instead of take_along_axis: stays a dot when V is sharded.
  target_logit = jnp.einsum(
    "btv,btv->bt", logits, jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype)
  )
  return lse - target_logit  # [B, T]


def loss_sums(logits: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Summed loss / token / correct counts overall and per task (see module docstring)."""
  return _sums(
    token_cross_entropy(logits, batch["decoder_target_ids"]), jnp.argmax(logits, axis=-1), batch
  )


def chunked_loss_sums(
  hidden: jax.Array,
  proj: jax.Array,
  batch: dict[str, jax.Array],
  *,
  logit_scale: float,
  vocab_axis: int,
  chunk_size: int,
) -> dict[str, jax.Array]:
  """`loss_sums` from decoder outputs hidden [B, T, D] and the output projection `proj`
  (`T5.lm_head_weights()`: [V, D] with vocab_axis 0, or [D, V] with 1), chunked over V."""
  b, t, d = hidden.shape
  ce, pred = loss_lib.chunked_token_cross_entropy(
    hidden.reshape(b * t, d),
    proj,
    batch["decoder_target_ids"].reshape(b * t),
    chunk_size=chunk_size,
    logit_scale=logit_scale,
    vocab_axis=vocab_axis,
  )  # [B*T] each
  return _sums(ce.reshape(b, t), pred.reshape(b, t), batch)


def resolve_loss_impl(loss_impl: str, total_vocab_size: int) -> str:
  """ "auto" | "full" | "chunked" -> "full" | "chunked"."""
  if loss_impl not in LOSS_IMPLS:
    raise ValueError(f"config.train.loss_impl: expected one of {LOSS_IMPLS}, got {loss_impl!r}")
  if loss_impl == "auto":
    return "chunked" if total_vocab_size > AUTO_CHUNKED_VOCAB else "full"
  return loss_impl


def _sums(ce: jax.Array, pred: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """ce float32 [B, T] (unweighted), pred int [B, T] argmax -> the summed metrics."""
  w = batch["decoder_weights"].astype(jnp.float32)  # [B, T]
  ce = ce * w  # [B, T]
  correct = (pred == batch["decoder_target_ids"]).astype(jnp.float32) * w  # [B, T]
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


def _loss_options(
  parts: build_lib.ModelParts, loss_impl: str | None, loss_chunk_size: int | None
) -> tuple[str, int]:
  """(resolved impl, chunk size); None = the run's choice carried on `parts`."""
  impl = resolve_loss_impl(
    parts.loss_impl if loss_impl is None else loss_impl, parts.model_config.total_vocab_size
  )
  chunk = int(parts.loss_chunk_size if loss_chunk_size is None else loss_chunk_size)
  if chunk < 1:
    raise ValueError(f"config.train.loss_chunk_size: expected a positive integer, got {chunk}")
  return impl, chunk


def _forward_sums(
  parts: build_lib.ModelParts,
  params,
  batch,
  *,
  dropout_rng=None,
  loss_impl: str = "full",
  chunk_size: int = 16384,
):
  """The model on `batch`, then the summed loss metrics (full logits or chunked)."""
  model = build_lib.merge(parts, params)
  enc = batch["encoder_input_ids"]
  deterministic = dropout_rng is None
  kwargs = {} if deterministic else {"dropout_rng": dropout_rng}
  out = model(
    enc,
    batch["decoder_input_ids"],
    encoder_mask=enc != 0,
    deterministic=deterministic,
    return_hidden=loss_impl == "chunked",
    **kwargs,
  )  # [B, T, D] hidden (chunked) or [B, T, V] float32 logits
  if loss_impl != "chunked":
    return loss_sums(out, batch)
  proj, scale = model.lm_head_weights()
  return chunked_loss_sums(
    out, proj, batch, logit_scale=scale, vocab_axis=model.lm_head_vocab_axis, chunk_size=chunk_size
  )


def _split_micro(batch, num_micro: int):
  """[B, ...] -> [A, B/A, ...]; micro-batch i takes examples i, i+A, ... so that each one spans
  every data shard (a contiguous split would put a whole micro-batch on one device)."""

  def f(x):
    b = x.shape[0]
    if b % num_micro:
      raise ValueError(
        f"config.train.batch_size={b} is not divisible by config.train.grad_accum_steps={num_micro}"
      )
    return jnp.swapaxes(x.reshape((b // num_micro, num_micro) + x.shape[1:]), 0, 1)

  return jax.tree.map(f, batch)


def make_train_step(
  parts: build_lib.ModelParts,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  *,
  grad_accum_steps: int = 1,
  use_dropout: bool = True,
  loss_impl: str | None = None,
  loss_chunk_size: int | None = None,
) -> Callable:
  """A pure train step `(state, batch, rng) -> (state, metrics)`; jit it with `jit_train_step`.

  loss_impl / loss_chunk_size: None = `parts.loss_impl` / `parts.loss_chunk_size` (the run config).
  """
  impl, chunk = _loss_options(parts, loss_impl, loss_chunk_size)

  def grads_and_sums(params, batch, rng):
    def loss_fn(p):
      sums = _forward_sums(
        parts, p, batch, dropout_rng=rng if use_dropout else None, loss_impl=impl, chunk_size=chunk
      )
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
      zeros_s = jax.tree.map(
        jnp.zeros_like,
        jax.eval_shape(
          lambda: grads_and_sums(params, jax.tree.map(lambda x: x[0], micro), step_rng)[1]
        ),
      )
      (grad_sum, sums), _ = jax.lax.scan(
        body, (zeros_g, zeros_s), (jnp.arange(grad_accum_steps), micro)
      )
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
  return jax.jit(
    step_fn,
    in_shardings=(state_shardings, batch_sh, repl),
    out_shardings=(state_shardings, repl),
    donate_argnums=(0,),
  )


def run_train_step(config, parts, tx, schedule, shardings, batch_sharding, mesh):
  """The run's jitted train step and its dropout base key (replicated on `mesh`): what the trainer
  runs and what the study's time estimate times, built one way for both."""
  step = jit_train_step(
    make_train_step(
      parts,
      tx,
      schedule,
      grad_accum_steps=int(config.train.grad_accum_steps),
      use_dropout=float(config.model.dropout_rate) > 0,
    ),
    shardings,
    batch_sharding,
    mesh,
  )
  rng = dropout_key(int(config.seed), config.train.get("dropout_prng", "auto"))
  rng = jax.device_put(rng, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  return step, rng


def make_eval_step(
  parts: build_lib.ModelParts,
  param_shardings,
  batch_sharding,
  mesh,
  *,
  loss_impl: str | None = None,
  loss_chunk_size: int | None = None,
) -> Callable:
  """Jitted `(params, batch) -> sums` in eval mode (no dropout) for validation loss."""
  repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch_sh = {k: batch_sharding for k in BATCH_KEYS}
  impl, chunk = _loss_options(parts, loss_impl, loss_chunk_size)

  def eval_step(params, batch):
    batch = {k: batch[k] for k in BATCH_KEYS}
    return _forward_sums(parts, params, batch, loss_impl=impl, chunk_size=chunk)

  return jax.jit(eval_step, in_shardings=(param_shardings, batch_sh), out_shardings=repl)


def summarize(sums: dict[str, Any], tasks=TASKS) -> dict[str, float]:
  """Host-side: sums (numpy, possibly added over steps) -> loss / accuracy, overall and per task."""
  out = {}
  w = float(sums["weight_sum"])
  out["loss"] = float(sums["loss_sum"]) / w if w > 0 else float("nan")
  tw = sums["task_weight_sum"]
  for k, name in enumerate(tasks):
    if float(tw[k]) > 0:
      out[f"loss/{name}"] = float(sums["task_loss_sum"][k]) / float(tw[k])
      out[f"token_accuracy/{name}"] = float(sums["task_correct_sum"][k]) / float(tw[k])
      out[f"accuracy/{name}"] = float(sums["task_example_correct"][k]) / max(
        float(sums["task_examples"][k]), 1.0
      )
  correct = float(sum(sums["task_correct_sum"]))
  out["token_accuracy"] = correct / w if w > 0 else float("nan")
  return out
