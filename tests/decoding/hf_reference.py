"""Plain NumPy/Python re-statement of Hugging Face 4.56 beam search, for tests only.

Loops over batch rows, groups and ranks one at a time, the way `_group_beam_search` +
`BeamSearchScorer.process/finalize` + `BeamHypotheses` + `HammingDiversityLogitsProcessor` do, and
the vectorised `_beam_search` for num_beam_groups == 1. It is cross-checked against transformers
itself in test_hf_parity.py, and the jitted search is checked against it on hand-written
next-token functions (no model needed).

logits_fn(row, prefix) -> float logits [V] for batch row `row` and `prefix` (a tuple of token ids
starting with the decoder start token). allowed_fn(row, prefix) -> bool [V] or None.
"""

from __future__ import annotations

import numpy as np

INIT_NEG = np.float32(-1e9)


def log_softmax(x):
  x = np.asarray(x, np.float32)
  m = x.max()
  return (x - m - np.log(np.exp(x - m).sum(dtype=np.float32))).astype(np.float32)


def topk_desc(x, k):
  idx = np.argsort(-x, kind="stable")[:k]
  return x[idx], idx


class Heap:
  """BeamHypotheses: the best `size` finished hypotheses (score, tokens)."""

  def __init__(self, size, length_penalty, early_stopping, max_length):
    self.size, self.lp, self.early, self.max_length = (
      size,
      length_penalty,
      early_stopping,
      max_length,
    )
    self.beams = []
    self.worst = 1e9

  def add(self, tokens, sum_logprobs, generated_len):
    score = float(sum_logprobs) / (generated_len**self.lp)
    if len(self.beams) < self.size or score > self.worst:
      self.beams.append((score, tuple(tokens)))
      if len(self.beams) > self.size:
        ranked = sorted((sc, i) for i, (sc, _) in enumerate(self.beams))
        del self.beams[ranked[0][1]]
        self.worst = ranked[1][0]
      else:
        self.worst = min(score, self.worst)

  def is_done(self, best, cur_len):  # decoder_prompt_len = 1
    if len(self.beams) < self.size:
      return False
    if self.early is True:
      return True
    if self.early == "never" and self.lp > 0.0:
      highest = float(best) / (self.max_length - 1) ** self.lp
    else:
      highest = float(best) / (cur_len - 1) ** self.lp
    return self.worst >= highest


def group_beam_search(
  logits_fn,
  batch_size,
  *,
  num_beams,
  num_beam_groups,
  diversity_penalty,
  length_penalty,
  max_new_tokens,
  num_return_sequences,
  early_stopping=False,
  eos_id=1,
  pad_id=0,
  start_id=0,
  allowed_fn=None,
):
  """HF `_group_beam_search` (also valid for G=1, which HF itself routes to `_beam_search`)."""
  n, g_, l, r = num_beams, num_beam_groups, max_new_tokens, num_return_sequences
  s = n // g_
  max_length = l + 1
  scores = np.full((batch_size, n), INIT_NEG, np.float32)
  scores[:, ::s] = 0.0
  seqs = [[(start_id,) for _ in range(n)] for _ in range(batch_size)]
  heaps = [
    [Heap(s, length_penalty, early_stopping, max_length) for _ in range(g_)]
    for _ in range(batch_size)
  ]
  done = np.zeros((batch_size, g_), bool)
  cur_len = 1
  while True:
    for row in range(batch_size):
      logits = [logits_fn(row, seqs[row][j]) for j in range(n)]
      current = np.zeros(n, np.int64)
      new_seqs = list(seqs[row])
      for g in range(g_):
        rows = range(g * s, (g + 1) * s)
        logp = np.stack([log_softmax(logits[j]) for j in rows])  # [S, V]
        v = logp.shape[-1]
        if g > 0 and diversity_penalty:
          freq = np.bincount(current[: g * s], minlength=v).astype(np.float32)
          logp = logp - np.float32(diversity_penalty) * freq
        if allowed_fn is not None:
          for i, j in enumerate(rows):
            logp[i] = np.where(allowed_fn(row, seqs[row][j]), logp[i], -np.inf)
        cand = (logp + scores[row, g * s : (g + 1) * s, None]).reshape(-1)
        top_v, top_i = topk_desc(cand, 2 * s)
        nxt_scores = np.zeros(s, np.float32)
        nxt_tok = np.zeros(s, np.int64)
        nxt_par = np.zeros(s, np.int64)
        if done[row, g]:
          nxt_tok[:] = pad_id
        else:
          k = 0
          for rank, (val, idx) in enumerate(zip(top_v, top_i)):
            par, tok = idx // v, idx % v
            if tok == eos_id:
              if rank >= s:
                continue
              heaps[row][g].add(seqs[row][g * s + par] + (tok,), val, cur_len + 1 - 1)
            else:
              nxt_scores[k], nxt_tok[k], nxt_par[k] = val, tok, par
              k += 1
            if k == s:
              break
          done[row, g] = done[row, g] or heaps[row][g].is_done(top_v.max(), cur_len + 1)
        scores[row, g * s : (g + 1) * s] = nxt_scores
        for i in range(s):
          new_seqs[g * s + i] = seqs[row][g * s + nxt_par[i]] + (int(nxt_tok[i]),)
          current[g * s + i] = nxt_tok[i]
      seqs[row] = new_seqs
    cur_len += 1
    if done.all() or cur_len >= max_length:
      break
  out_seqs = np.full((batch_size, r, l), pad_id, np.int64)
  out_scores = np.zeros((batch_size, r), np.float32)
  for row in range(batch_size):
    for g in range(g_):
      if done[row, g]:
        continue
      for i in range(s):
        heaps[row][g].add(seqs[row][g * s + i], scores[row, g * s + i], cur_len - 1)
    pool = sorted((b for h in heaps[row] for b in h.beams), key=lambda x: x[0])
    for j in range(r):
      sc, toks = pool.pop()
      out_seqs[row, j, : len(toks) - 1] = toks[1:]
      out_scores[row, j] = sc
  return out_seqs, out_scores


def beam_search(
  logits_fn,
  batch_size,
  *,
  num_beams,
  length_penalty,
  max_new_tokens,
  num_return_sequences,
  early_stopping=False,
  eos_id=1,
  pad_id=0,
  start_id=0,
  allowed_fn=None,
):
  """HF `_beam_search` (num_beam_groups == 1), one row at a time."""
  n, l, r = num_beams, max_new_tokens, num_return_sequences
  k = 2 * n
  max_length = l + 1
  out_seqs = np.full((batch_size, r, l), pad_id, np.int64)
  out_scores = np.zeros((batch_size, r), np.float32)
  for row in range(batch_size):
    run_seqs = [(start_id,)] * n
    run_scores = np.full(n, INIT_NEG, np.float32)
    run_scores[0] = 0.0
    fin_seqs = [(start_id,)] * n
    fin_scores = np.full(n, INIT_NEG, np.float32)
    fin_flags = np.zeros(n, bool)
    unsatisfied = True
    cur_len = 1
    while True:
      logp = np.stack([log_softmax(logits_fn(row, q)) for q in run_seqs])  # [N, V]
      v = logp.shape[-1]
      if allowed_fn is not None:
        for j, q in enumerate(run_seqs):
          logp[j] = np.where(allowed_fn(row, q), logp[j], -np.inf)
      cand = (logp + run_scores[:, None]).reshape(-1)
      top_v, top_i = topk_desc(cand, k)
      top_seqs = [run_seqs[i // v] + (int(i % v),) for i in top_i]
      hits = np.array([q[-1] == eos_id or cur_len + 1 >= max_length for q in top_seqs])
      # running beams for the next step
      run_v = (top_v + hits.astype(np.float32) * INIT_NEG).astype(np.float32)
      _, keep = topk_desc(run_v, n)
      run_seqs = [top_seqs[i] for i in keep]
      run_scores = run_v[keep]
      # finished beams
      just = hits & (np.arange(k) < n)
      fin_v = (top_v / np.float32((cur_len + 1 - 1) ** length_penalty)).astype(np.float32)
      if fin_flags.all() and early_stopping is True:
        fin_v = fin_v + INIT_NEG
      if not unsatisfied:
        fin_v = fin_v + INIT_NEG
      fin_v = fin_v + (~just).astype(np.float32) * INIT_NEG
      merged_v = np.concatenate([fin_scores, fin_v])
      merged_q = fin_seqs + top_seqs
      merged_f = np.concatenate([fin_flags, just])
      _, keep = topk_desc(merged_v, n)
      fin_scores, fin_flags = merged_v[keep], merged_f[keep]
      fin_seqs = [merged_q[i] for i in keep]
      cur_len += 1
      if early_stopping == "never" and length_penalty > 0.0:
        hyp_len = max_length - 1
      else:
        hyp_len = cur_len - 1
      best = run_scores[0] / np.float32(hyp_len**length_penalty)
      worst = np.where(fin_flags, fin_scores.min(), INIT_NEG)
      unsatisfied = unsatisfied and bool(np.any(best > worst))
      open_beam = not (fin_flags.all() and early_stopping is True)
      if not (unsatisfied and open_beam and not hits.all()):
        break
    for j in range(r):
      toks = fin_seqs[j][1:]
      out_seqs[row, j, : len(toks)] = toks
      out_scores[row, j] = fin_scores[j]
  return out_seqs, out_scores


def brute_force(
  logits_fn,
  batch_size,
  *,
  vocab_size,
  max_new_tokens,
  num_return_sequences,
  length_penalty,
  eos_id=1,
  pad_id=0,
  start_id=0,
  allowed_fn=None,
):
  """Exact top-R over every sequence: ends with EOS at some length, or has max_new_tokens tokens.

  Score = sum of log-probs / len ** length_penalty (what beam search approximates). Sequences
  through a disallowed token are excluded.
  """
  out_seqs = np.full((batch_size, num_return_sequences, max_new_tokens), pad_id, np.int64)
  out_scores = np.zeros((batch_size, num_return_sequences), np.float32)
  for row in range(batch_size):
    found = []

    def walk(prefix, total):
      logp = log_softmax(logits_fn(row, prefix))
      ok = allowed_fn(row, prefix) if allowed_fn is not None else np.ones(vocab_size, bool)
      for tok in range(vocab_size):
        if not ok[tok]:
          continue
        q, tot = prefix + (tok,), np.float32(total + logp[tok])
        n = len(q) - 1
        if tok == eos_id or n == max_new_tokens:
          found.append((float(tot) / n**length_penalty, q[1:]))
        else:
          walk(q, tot)

    walk((start_id,), np.float32(0.0))
    found.sort(key=lambda x: -x[0])
    for j, (sc, q) in enumerate(found[:num_return_sequences]):
      out_seqs[row, j, : len(q)] = q
      out_scores[row, j] = sc
  return out_seqs, out_scores
