"""Hand-written next-token functions: a random logits table indexed by (row, prefix).

The prefix (generated tokens so far) is numbered in base V+1, so every prefix up to max_new_tokens
has its own logits row; the same table serves the jitted search (as a step_fn) and the NumPy
reference / brute force (as logits_fn(row, prefix)).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gr_jax.decoding import SearchSpec, beam_search_core


class TableLM:
  def __init__(self, seed, batch, vocab, max_len, *, scale=2.0, eos_bias=0.0, eos_id=1):
    rng = np.random.default_rng(seed)
    self.vocab, self.max_len = vocab, max_len
    num_prefixes = (vocab + 1) ** max_len
    self.table = (rng.normal(size=(batch, num_prefixes, vocab)) * scale).astype(np.float32)
    # Per-row, per-prefix EOS bias so that beams (and groups) finish at different steps.
    self.table[..., eos_id] += eos_bias * rng.uniform(-1, 1, size=(batch, num_prefixes))
    self.weights = (vocab + 1) ** np.arange(max_len)

  def prefix_index(self, prefix):
    toks = np.asarray(prefix[1:], np.int64)  # drop the decoder start token
    return int(((toks + 1) * self.weights[: len(toks)]).sum())

  def logits_fn(self, row, prefix):
    return self.table[row, self.prefix_index(prefix)]


def table_step_fn(table, max_len):
  """step_fn over a logits table [B, P, V] (a traced argument, so one compile serves all seeds).

  tokens [B, N], seqs [B, N, L] -> logits [B, N, V]. With a cache (float32 [B, N], the beam's
  prefix number) the prefix comes from the cache and the fed-back token only, so a wrong cache
  reorder changes the result; without one (None), from seqs.
  """
  vocab = table.shape[-1]
  weights = jnp.asarray((vocab + 1) ** np.arange(max_len), jnp.int32)

  def step_fn(tokens, t, seqs, cache):
    l = seqs.shape[-1]
    w = weights[:l]
    if cache is None:
      used = jnp.arange(l) < t
      idx = jnp.sum(jnp.where(used, (seqs + 1) * w, 0), axis=-1)  # [B, N]
    else:
      step_w = jnp.take(w, jnp.maximum(t - 1, 0))
      cache = cache + jnp.where(t > 0, (tokens + 1) * step_w, 0).astype(cache.dtype)
      idx = cache.astype(jnp.int32)
    logits = jnp.take_along_axis(table, idx[..., None], axis=1)  # [B, N, V]
    return logits, cache

  return step_fn


def table_spec(vocab, n, g, l, r, early=False):
  """The search over a table: n beams in g groups, l new tokens, r returned; EOS 1, pad and
  decoder start 0 (as `TableLM` numbers its tokens)."""
  return SearchSpec(
    num_beams=n,
    num_beam_groups=g,
    vocab_size=vocab,
    max_new_tokens=l,
    num_return_sequences=r,
    eos_id=1,
    pad_id=0,
    decoder_start_id=0,
    early_stopping=early,
  )


@functools.partial(jax.jit, static_argnames=("spec", "use_cache", "one_hot", "first_step_once"))
def run_table_search(
  table, dp, lp=1.0, constraint=None, *, spec, use_cache=False, one_hot=False, first_step_once=True
):
  """`beam_search_core` over a logits table (diversity penalty dp, length penalty lp: traced).

  With a cache, each beam's prefix number is carried in it (see `table_step_fn`), so a wrong
  step-0 broadcast or cache reorder changes which logits row later steps read."""
  b = table.shape[0]
  cache = jnp.zeros((b, spec.num_beams), jnp.float32) if use_cache else None
  return beam_search_core(
    table_step_fn(table, spec.max_new_tokens),
    cache,
    b,
    spec,
    dp,
    lp,
    constraint=constraint,
    one_hot_gather=one_hot,
    first_step_once=first_step_once,
  )
