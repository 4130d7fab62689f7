"""Diverse (group) beam search in one jitted `lax.while_loop`, with Hugging Face 4.56 semantics.

Two layers:
- `beam_search_core(step_fn, ...)`: a pure function of a `step_fn` (t5x `tokens_to_logits` style),
  so it can be tested with hand-written next-token functions.
- `beam_search(model, encoder_input_ids, ...)`: the T5 adapter (encode once, cross-attention keys /
  values once per query and broadcast over its beams, KV cache or prefix recompute), jitted with the
  penalties as traced arguments so sweeping them does not recompile.
Step 0 runs the decoder once per query, not once per beam (every beam is then the decoder start
token), and broadcasts its logits and cache to the beams: at the paper's one-token item IDs that is
almost half of all decoder work saved (`first_step_once`).

Semantics (docs/diverse_beam_search.md; transformers 4.56.2's source is the reference):
- num_beam_groups > 1: `GenerationMixin._group_beam_search` + `BeamSearchScorer` (one
  `BeamHypotheses` heap of size S = num_beams // G per (query, group)) +
  `HammingDiversityLogitsProcessor`. Finished candidates: EOS tokens among the first S ranks of the
  group's top-2S. At max length the S live beams of groups that are not done are added (`finalize`).
  Done check uses the best top-k candidate score (EOS candidates included).
- num_beam_groups == 1: `GenerationMixin._beam_search` (the vectorised refactor). It differs from
  group search with G=1 in two places, both reproduced here: (a) on the last step every candidate
  among the first S ranks finishes (the max-length stopping criterion), instead of "EOS ranks < S,
  then the first S non-EOS candidates"; (b) the early-stop heuristic uses the best *live* (non-EOS)
  score, and a row whose heap is not full counts its worst score as -1e9.
- Scores are float32 cumulative (penalised) log-probs; hypotheses store score / len ** length_penalty
  with len = generated tokens (EOS included), exactly as HF with decoder_prompt_len = 1.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array

# HF initial score of all but the first beam of a group (keeps beams of a group from being
# identical at step 0) and placeholder scores.
INIT_NEG = -1e9

EARLY_STOPPING_VALUES = (False, True, "never")


@dataclasses.dataclass(frozen=True)
class SearchSpec:
  """Static (compile-time) settings of one search; hashable, used as a jit static argument."""

  num_beams: int
  num_beam_groups: int
  vocab_size: int
  max_new_tokens: int
  num_return_sequences: int
  eos_id: int
  pad_id: int
  decoder_start_id: int
  early_stopping: Any = False  # False | True | "never"

  def __post_init__(self):
    n, g = self.num_beams, self.num_beam_groups
    if not isinstance(n, (int, np.integer)) or n < 2:
      raise ValueError(f"beam_search: num_beams must be an int >= 2 (HF), got {n!r}")
    if not isinstance(g, (int, np.integer)) or g < 1 or n % g:
      raise ValueError(f"beam_search: num_beam_groups must divide num_beams={n}, got {g!r}")
    if not 1 <= self.num_return_sequences <= n:
      raise ValueError(
        f"beam_search: num_return_sequences must be in [1, num_beams={n}], got "
        f"{self.num_return_sequences!r}"
      )
    if self.max_new_tokens < 1:
      raise ValueError(f"beam_search: max_new_tokens must be >= 1, got {self.max_new_tokens!r}")
    if not any(
      self.early_stopping is v or self.early_stopping == v and isinstance(v, str)
      for v in EARLY_STOPPING_VALUES
    ):
      raise ValueError(
        f"beam_search: early_stopping must be False, True or 'never', got {self.early_stopping!r}"
      )
    if not 0 <= self.eos_id < self.vocab_size:
      raise ValueError(
        f"beam_search: eos_id {self.eos_id} outside vocabulary [0, {self.vocab_size})"
      )

  @property
  def group_size(self) -> int:
    return self.num_beams // self.num_beam_groups

  @property
  def top_k(self) -> int:
    # HF: max(2, 1 + n_eos) * group_size with one EOS id: enough candidates that S are not EOS.
    return 2 * self.group_size


@functools.partial(
  jax.tree_util.register_dataclass,
  data_fields=[
    "t",
    "live_seqs",
    "live_scores",
    "hyp_seqs",
    "hyp_scores",
    "hyp_valid",
    "done",
    "cache",
    "constraint_state",
  ],
  meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class BeamState:
  """The loop state of `beam_search_core` (B queries, G groups of S beams, L = max_new_tokens)."""

  t: Array  # int32 []: the step being generated (0-based)
  live_seqs: Array  # int32 [B, G, S, L]: tokens of the live beams, pad after position t
  live_scores: Array  # float32 [B, G, S]: cumulative (penalised) log-probs of the live beams
  hyp_seqs: Array  # int32 [B, G, S, L]: finished hypotheses (one heap of S per query and group)
  hyp_scores: Array  # float32 [B, G, S]: their length-normalised scores (-inf where empty)
  hyp_valid: Array  # bool [B, G, S]: heap slot holds a hypothesis
  done: Array  # bool [B, G]: the group can no longer improve (HF BeamHypotheses.is_done)
  cache: Any  # step_fn's cache, every leaf [B, N = G*S, ...]; None without one
  constraint_state: Any  # the constraint's state, leaves [B, N, ...]; None without constraint


def gather_beams(x: Array, parents: Array, *, one_hot: bool = False) -> Array:
  """x [B, N, ...], parents int [B, M] (indices into axis 1) -> [B, M, ...].

  `one_hot=True` uses an einsum with a one-hot matrix (t5x style; keeps the batch axis sharded
  without a gather); it is exact only for float leaves, so ints always use take_along_axis.
  """
  if one_hot and jnp.issubdtype(x.dtype, jnp.floating):
    oh = jax.nn.one_hot(parents, x.shape[1], dtype=x.dtype)  # [B, M, N]
    return jnp.einsum("bmn,bn...->bm...", oh, x, precision=jax.lax.Precision.HIGHEST)
  idx = parents.reshape(parents.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)


def _merge_hyps(hyp_scores, hyp_valid, hyp_seqs, cand_scores, cand_add, cand_seqs):
  """Keep the best S of a heap plus candidates, like repeated `BeamHypotheses.add`.

  hyp_* [B, S(, L)], cand_* [B, K(, L)]. Valid entries first, then by score; the sort is stable
  with the heap before the candidates (in rank order), so a candidate that only ties the worst
  entry of a full heap is not added (HF: `score > worst_score`).
  """
  s = hyp_scores.shape[1]
  scores = jnp.concatenate([hyp_scores, cand_scores], axis=1)  # [B, S+K]
  valid = jnp.concatenate([hyp_valid, cand_add], axis=1)
  seqs = jnp.concatenate([hyp_seqs, cand_seqs], axis=1)  # [B, S+K, L]
  scores = jnp.where(valid, scores, -jnp.inf)
  iota = jax.lax.broadcasted_iota(jnp.int32, scores.shape, 1)
  _, _, order = jax.lax.sort(
    ((~valid).astype(jnp.int32), -scores, iota), dimension=1, is_stable=True, num_keys=2
  )
  keep = order[:, :s]  # [B, S]
  return (
    jnp.take_along_axis(scores, keep, axis=1),
    jnp.take_along_axis(valid, keep, axis=1),
    jnp.take_along_axis(seqs, keep[..., None], axis=1),
  )


def _is_done(spec: SearchSpec, hyp_scores, hyp_valid, best, t, length_penalty, *, beam_mode):
  """BeamHypotheses.is_done (group search) / _check_early_stop_heuristic (beam search). [B]."""
  full = jnp.all(hyp_valid, axis=1)  # [B]
  worst = jnp.min(jnp.where(hyp_valid, hyp_scores, jnp.inf), axis=1)  # [B]
  cur = (t + 1).astype(jnp.float32)  # generated tokens after this step
  if spec.early_stopping == "never":
    n = jnp.where(length_penalty > 0.0, jnp.float32(spec.max_new_tokens), cur)
  else:
    n = cur
  highest = best / n**length_penalty
  if beam_mode:
    # HF _beam_search: unsatisfied while best > where(finished, min score, -1e9) for any slot.
    worst_eff = jnp.where(full, worst, INIT_NEG)
    done = ~(highest > worst_eff)
    if spec.early_stopping is True:
      done = done | full
    return done
  if spec.early_stopping is True:
    return full
  return full & (worst >= highest)


def beam_search_core(
  step_fn: Callable,
  cache: Any,
  batch_size: int,
  spec: SearchSpec,
  diversity_penalty,
  length_penalty,
  *,
  constraint=None,
  one_hot_gather: bool = False,
  first_step_once: bool = True,
):
  """Runs the search; call inside `jax.jit`.

  step_fn(tokens [B, N] int32 (last token of each beam; decoder start at t=0), t int32 scalar,
          seqs [B, N, max_new_tokens] int32 (generated so far, pad after), cache)
      -> (logits [B, N, V], new cache). Every cache leaf has leading [B, N]; the search reorders
      them along axis 1 after each step. Its shapes must follow the inputs' N (see below).
  first_step_once: at t = 0 every beam of a query holds only the decoder start token, so step_fn
      is called once per query (N = 1: tokens [B, 1], seqs [B, 1, L], cache leaves [B, 1, ...],
      sliced from the given cache) and its logits and cache are broadcast to the N beams; the
      decoder does 1/N of step 0's work. False calls it on all N identical beams (the reference
      for tests and the benchmark). The search is bitwise the same when step_fn's rows do not
      depend on N; a real decoder's may differ in the last bits, since XLA picks other kernels
      for other shapes (XLA:CPU: a plain loop for matrix-vector products such as one decoder
      position's cross-attention, a YNNPACK GEMM for several rows; each sums in its own order).
  constraint: None or an object with `init_state(B, N)`, `allowed(state, t, V)` -> bool
      broadcastable to [B, N, V], `advance(state, tokens [B, N], t)` (see constraints.py).
  Returns (sequences int32 [B, R, max_new_tokens], scores float32 [B, R]), best first.
  """
  b, g_, s, v, l = (
    batch_size,
    spec.num_beam_groups,
    spec.group_size,
    spec.vocab_size,
    spec.max_new_tokens,
  )
  n, k, r = spec.num_beams, spec.top_k, spec.num_return_sequences
  beam_mode = g_ == 1
  dp = jnp.asarray(diversity_penalty, jnp.float32)
  lp = jnp.asarray(length_penalty, jnp.float32)
  pos_l = jnp.arange(l, dtype=jnp.int32)

  init_scores = jnp.where(jnp.arange(s) == 0, 0.0, INIT_NEG).astype(jnp.float32)
  state = BeamState(
    t=jnp.zeros((), jnp.int32),
    live_seqs=jnp.full((b, g_, s, l), spec.pad_id, jnp.int32),
    live_scores=jnp.broadcast_to(init_scores, (b, g_, s)),
    hyp_seqs=jnp.full((b, g_, s, l), spec.pad_id, jnp.int32),
    hyp_scores=jnp.full((b, g_, s), -jnp.inf, jnp.float32),
    hyp_valid=jnp.zeros((b, g_, s), bool),
    done=jnp.zeros((b, g_), bool),
    cache=cache,
    constraint_state=constraint.init_state(b, n) if constraint is not None else None,
  )

  def group_step(t, logp, live_seqs, live_scores, hyp_scores, hyp_valid, hyp_seqs, done, counts, g):
    """One group: Hamming penalty, top-2S, BeamSearchScorer.process (+ finalize at max length)."""
    lp_g = jax.lax.dynamic_index_in_dim(logp, g, axis=1, keepdims=False)  # [B, S, V]
    sc_g = jax.lax.dynamic_index_in_dim(live_scores, g, axis=1, keepdims=False)  # [B, S]
    seq_g = jax.lax.dynamic_index_in_dim(live_seqs, g, axis=1, keepdims=False)  # [B, S, L]
    hs = jax.lax.dynamic_index_in_dim(hyp_scores, g, axis=1, keepdims=False)  # [B, S]
    hv = jax.lax.dynamic_index_in_dim(hyp_valid, g, axis=1, keepdims=False)
    hq = jax.lax.dynamic_index_in_dim(hyp_seqs, g, axis=1, keepdims=False)  # [B, S, L]
    dn = jax.lax.dynamic_index_in_dim(done, g, axis=1, keepdims=False)  # [B]

    # Hamming diversity: tokens picked at this step by earlier groups (0 for group 0).
    lp_g = lp_g - dp * counts[:, None, :]  # [B, S, V]
    cand = (lp_g + sc_g[..., None]).reshape(b, s * v)  # [B, S*V]
    # The barrier keeps XLA from fusing top_k's result slice into the gathers below: without it
    # XLA:CPU cannot match its TopK kernel and sorts all S*V candidates of every group (60 full
    # sorts of [B, 5024] per step at the paper's 30 groups: 55x slower; tested on the HLO).
    topv, topi = jax.lax.optimization_barrier(jax.lax.top_k(cand, k))  # [B, K], descending
    parent = topi // v  # [B, K] beam within the group
    tok = topi % v
    is_eos = tok == spec.eos_id
    rank_ok = jnp.arange(k) < s  # only the first S ranks may finish

    # Candidate sequences: the parent's tokens plus this token at position t.
    cand_seqs = jnp.take_along_axis(seq_g, parent[..., None], axis=1)  # [B, K, L]
    cand_seqs = jnp.where(pos_l == t, tok[..., None], cand_seqs)
    norm = topv / (t + 1).astype(jnp.float32) ** lp  # [B, K]

    last = t == l - 1
    add = is_eos & rank_ok & ~dn[:, None]
    if beam_mode:  # max-length stopping criterion: every top-S candidate finishes at the end
      add = add | (rank_ok & ~dn[:, None] & last)
    hs, hv, hq = _merge_hyps(hs, hv, hq, norm, add, cand_seqs)

    # Next live beams: the first S non-EOS candidates in rank order.
    non_eos = ~is_eos
    rank_among = jnp.cumsum(non_eos, axis=1) - 1  # [B, K]
    sel = non_eos[:, None, :] & (rank_among[:, None, :] == jnp.arange(s)[None, :, None])
    live_idx = jnp.argmax(sel, axis=-1)  # [B, S]
    new_scores = jnp.take_along_axis(topv, live_idx, axis=1)  # [B, S]
    new_tok = jnp.take_along_axis(tok, live_idx, axis=1)
    new_parent = jnp.take_along_axis(parent, live_idx, axis=1)

    best = new_scores[:, 0] if beam_mode else topv[:, 0]
    dn_new = dn | _is_done(spec, hs, hv, best, t, lp, beam_mode=beam_mode)

    if not beam_mode:  # BeamSearchScorer.finalize: open groups add their live beams at the end
      live_seqs_new = jnp.take_along_axis(cand_seqs, live_idx[..., None], axis=1)  # [B, S, L]
      fin = jnp.broadcast_to((last & ~dn_new)[:, None], (b, s))
      hs, hv, hq = _merge_hyps(hs, hv, hq, new_scores / jnp.float32(l) ** lp, fin, live_seqs_new)

    # Groups done before this step emit pad with score 0 from their first beam (HF quirk: the
    # pad tokens still count in later groups' Hamming penalty).
    new_tok = jnp.where(dn[:, None], spec.pad_id, new_tok)
    new_scores = jnp.where(dn[:, None], 0.0, new_scores)
    new_parent = jnp.where(dn[:, None], 0, new_parent)
    counts = counts.at[jnp.arange(b)[:, None], new_tok].add(1.0)
    return counts, (new_tok, new_parent, new_scores, hs, hv, hq, dn_new)

  def log_probs(st: BeamState, first: bool):
    """The decoder step at st.t -> (masked log-probs [B, G, S, V], new cache [B, N, ...])."""
    t = st.t
    flat_seqs = st.live_seqs.reshape(b, n, l)  # [B, N, L]
    if first:
      # Step 0: all beams of a query are the decoder start token with an empty cache, so one
      # beam per query computes what every beam would, and its copies stand in for them.
      tokens = jnp.full((b, 1), spec.decoder_start_id, jnp.int32)
      cache1 = jax.tree.map(lambda x: x[:, :1], st.cache)
      logits, cache = step_fn(tokens, t, flat_seqs[:, :1], cache1)
      cache = jax.tree.map(lambda x: jnp.broadcast_to(x, (b, n) + x.shape[2:]), cache)
    else:
      prev = jnp.take(flat_seqs, jnp.maximum(t - 1, 0), axis=2)  # [B, N]
      prev = jnp.where(t == 0, spec.decoder_start_id, prev)
      logits, cache = step_fn(prev, t, flat_seqs, st.cache)
    # Broadcast before the log-softmax: XLA:CPU reduces a [B, 1, V] array in another order than
    # [B, N, V] (last-bit differences), and given the same logits the search stays bitwise that of
    # the per-beam step. The decoder is the costly part; this is [B, N, V] elementwise work.
    logits = jnp.broadcast_to(logits, (b, n, v))
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [B, N, V]
    if constraint is not None:
      # The mask is applied after the penalty in HF; both are elementwise and -inf - c = -inf,
      # so masking once here is the same.
      allowed = constraint.allowed(st.constraint_state, t, v)  # broadcastable to [B, N, V]
      logp = jnp.where(allowed, logp, -jnp.inf)
    return logp.reshape(b, g_, s, v), cache  # [B, G, S, V]

  def advance(st: BeamState, logp, cache, *, reorder_cache: bool = True) -> BeamState:
    """Groups in turn (Hamming penalty, top-2S, hypotheses), then reorder all per-beam state."""
    t = st.t
    flat_seqs = st.live_seqs.reshape(b, n, l)  # [B, N, L]
    step = functools.partial(
      group_step,
      t,
      logp,
      st.live_seqs,
      st.live_scores,
      st.hyp_scores,
      st.hyp_valid,
      st.hyp_seqs,
      st.done,
    )
    _, ys = jax.lax.scan(step, jnp.zeros((b, v), jnp.float32), jnp.arange(g_))
    ys = jax.tree.map(lambda y: jnp.moveaxis(y, 0, 1), ys)  # [B, G, ...]
    new_tok, new_parent, new_scores, hs, hv, hq, done = ys

    # Global reorder of all per-beam state (HF reordering_indices): parent within the row.
    parents = (new_parent + (jnp.arange(g_) * s)[None, :, None]).reshape(b, n)  # [B, N]
    tokens = new_tok.reshape(b, n)
    seqs = gather_beams(flat_seqs, parents)  # [B, N, L]
    seqs = jnp.where(pos_l == t, tokens[..., None], seqs)
    if reorder_cache:
      cache = jax.tree.map(lambda x: gather_beams(x, parents, one_hot=one_hot_gather), cache)
    cstate = st.constraint_state
    if constraint is not None:
      cstate = jax.tree.map(lambda x: gather_beams(x, parents), cstate)
      cstate = constraint.advance(cstate, tokens, t)
    return BeamState(
      t=t + 1,
      live_seqs=seqs.reshape(b, g_, s, l),
      live_scores=new_scores,
      hyp_seqs=hq,
      hyp_scores=hs,
      hyp_valid=hv,
      done=done,
      cache=cache,
      constraint_state=cstate,
    )

  def body(st: BeamState) -> BeamState:
    return advance(st, *log_probs(st, first=False))

  def cond(st: BeamState):
    return (st.t < l) & ~jnp.all(st.done)

  if first_step_once:
    # Step 0 outside the loop, where its decoder call can have its own (per-query) shape. Its
    # cache rows are broadcast copies, so reordering them by parent is the identity; only the
    # one-hot einsum is kept, as it is not bitwise the identity for every value (-0.0 + 0.0).
    state = advance(state, *log_probs(state, first=True), reorder_cache=one_hot_gather)
  st = jax.lax.while_loop(cond, body, state)

  # BeamSearchScorer.finalize: pool the heaps of all groups of a query, best first.
  scores = st.hyp_scores.reshape(b, n)
  valid = st.hyp_valid.reshape(b, n)
  seqs = st.hyp_seqs.reshape(b, n, l)
  scores = jnp.where(valid, scores, -jnp.inf)
  iota = jax.lax.broadcasted_iota(jnp.int32, scores.shape, 1)
  _, _, order = jax.lax.sort(
    ((~valid).astype(jnp.int32), -scores, iota), dimension=1, is_stable=True, num_keys=2
  )
  top = order[:, :r]  # [B, R]
  out_seqs = jnp.take_along_axis(seqs, top[..., None], axis=1)  # [B, R, L]
  out_valid = jnp.take_along_axis(valid, top, axis=1)
  out_seqs = jnp.where(out_valid[..., None], out_seqs, spec.pad_id)
  return out_seqs, jnp.take_along_axis(scores, top, axis=1)


# ----------------------------------------------------------------------------- T5 adapter

# Number of times the model search has been traced (= jit cache misses); tests use it to check
# that sweeping the traced penalties does not recompile.
_TRACES = {"model_search": 0}


def trace_count() -> int:
  return _TRACES["model_search"]


@functools.partial(
  jax.jit,
  static_argnames=("graphdef", "spec", "use_cache", "one_hot_gather", "first_step_once"),
)
def _model_search(
  graphdef,
  params,
  encoder_input_ids,
  encoder_mask,
  diversity_penalty,
  length_penalty,
  constraint,
  *,
  spec,
  use_cache,
  one_hot_gather,
  first_step_once,
):
  _TRACES["model_search"] += 1
  model = nnx.merge(graphdef, params)
  b = encoder_input_ids.shape[0]
  n, l = spec.num_beams, spec.max_new_tokens
  # Each query is encoded once; cross-attention keys/values [B, Le, H, Dh] are computed once and
  # the decoder broadcasts them over the N beams (never tiled per beam).
  encoded = model.encode(encoder_input_ids, encoder_mask)  # [B, Le, D]
  ckv = model.cross_kv(encoded)

  if use_cache:

    def step_fn(tokens, t, seqs, cache):
      del seqs
      return model.decode_step(tokens, t, cache, ckv, encoder_mask)  # [B, N, V]

    cache = model.init_cache(b, n, l)
  else:

    def step_fn(tokens, t, seqs, cache):
      del tokens
      start = jnp.full(seqs.shape[:2] + (1,), spec.decoder_start_id, jnp.int32)
      dec_in = jnp.concatenate([start, seqs[..., : l - 1]], axis=-1)  # [B, N or 1, L]
      # Causal attention: positions after t see only pad and do not change position t.
      logits = model.decode(dec_in, ckv, encoder_mask)  # [B, N, L, V]
      return jnp.take(logits, t, axis=2), cache

    cache = None
  return beam_search_core(
    step_fn,
    cache,
    b,
    spec,
    diversity_penalty,
    length_penalty,
    constraint=constraint,
    one_hot_gather=one_hot_gather,
    first_step_once=first_step_once,
  )


def _shard_batch(params, ids, mask):
  """Queries split over the params' mesh "data" axis (each device searches its own queries) when
  the model lives on a multi-device mesh and the batch divides; else left to jit's placement."""
  leaf = next((x for x in jax.tree.leaves(params) if isinstance(x, jax.Array)), None)
  sharding = getattr(leaf, "sharding", None)
  mesh = getattr(sharding, "mesh", None)
  if mesh is None or "data" not in getattr(mesh, "axis_names", ()):
    return ids, mask
  data = mesh.shape["data"]
  if data <= 1 or ids.shape[0] % data:
    return ids, mask
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  return jax.device_put(ids, batch_sharding), jax.device_put(mask, batch_sharding)


def beam_search(
  model,
  encoder_input_ids,
  *,
  encoder_mask=None,
  num_beams: int,
  num_beam_groups: int = 1,
  diversity_penalty=0.0,
  length_penalty=1.0,
  max_new_tokens: int,
  num_return_sequences: int,
  early_stopping=False,
  constraint=None,
  use_cache: bool = True,
  one_hot_gather: bool = False,
  exclude_items=None,
  first_step_once: bool = True,
):
  """Diverse beam search over a T5 (`gr_jax.model.T5`), Hugging Face 4.56 semantics.

  encoder_input_ids int [B, Le] (0-padded); encoder_mask [B, Le] (default ids != pad).
  diversity_penalty / length_penalty are traced: new values reuse the compiled search.
  constraint: None, `AtomicItemConstraint` or `PrefixTrieConstraint` (gr_jax.decoding.constraints).
  use_cache: KV-cached decoder steps (True) or recompute of the short prefix (False).
  one_hot_gather: reorder caches with a one-hot einsum instead of take_along_axis.
  exclude_items: None, or bool [B, num_items]: items query b must not generate (`eval.exclude_seen`;
    needs an item constraint, which forbids them: `constraint.excluding(exclude_items)`).
  first_step_once: run the decoder's step 0 once per query, not once per beam (the same
    sequences, scores up to the decoder's last bits; False only for comparisons, see
    `beam_search_core`).
  Returns (sequences int32 [B, R, max_new_tokens]: decoder start excluded, EOS kept, pad after;
  scores float32 [B, R]: HF `sequences_scores`), best first.
  """
  cfg = model.config
  spec = SearchSpec(
    num_beams=int(num_beams),
    num_beam_groups=int(num_beam_groups),
    vocab_size=cfg.total_vocab_size,
    max_new_tokens=int(max_new_tokens),
    num_return_sequences=int(num_return_sequences),
    eos_id=cfg.eos_token_id,
    pad_id=cfg.pad_token_id,
    decoder_start_id=cfg.decoder_start_token_id,
    early_stopping=early_stopping,
  )
  ids = jnp.asarray(encoder_input_ids, jnp.int32)
  if ids.ndim != 2:
    raise ValueError(
      f"beam_search: encoder_input_ids must be [batch, length], got shape {ids.shape}"
    )
  mask = ids != cfg.pad_token_id if encoder_mask is None else jnp.asarray(encoder_mask)
  if mask.shape != ids.shape:
    raise ValueError(
      f"beam_search: encoder_mask shape {mask.shape} != encoder_input_ids shape {ids.shape}"
    )
  if exclude_items is not None:
    if constraint is None:
      raise ValueError("beam_search: exclude_items needs an item constraint (atomic or trie)")
    constraint = constraint.excluding(exclude_items)
  if getattr(constraint, "excluded", None) is not None and constraint.excluded.shape[0] != len(ids):
    raise ValueError(
      f"beam_search: the constraint excludes items for {constraint.excluded.shape[0]} queries, "
      f"the batch has {len(ids)}"
    )
  if constraint is not None:
    constraint.check_vocab(cfg.total_vocab_size, cfg.eos_token_id)
  graphdef, params = nnx.split(model)
  ids, mask = _shard_batch(params, ids, mask)
  return _model_search(
    graphdef,
    params,
    ids,
    mask,
    jnp.float32(diversity_penalty),
    jnp.float32(length_penalty),
    constraint,
    spec=spec,
    use_cache=bool(use_cache),
    one_hot_gather=bool(one_hot_gather),
    first_step_once=bool(first_step_once),
  )
