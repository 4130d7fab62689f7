"""Catalogue scale (issue 16, "scale to 10M items"): semantic IDs, the prefix trie, constrained
decoding and train-step memory for N items.

  python -m gr_jax.bench --modes=scale --num_items=1000000 --batch_size=8 --encoder_len=32 \\
      --num_beams=60 --num_beam_groups=30 --num_return_sequences=30 --diversity_penalty=0.25

Parts (`--scale_parts`), each one JSON record:
  ids     "scale_ids": clustered synthetic embeddings (a Gaussian mixture, fixed seed, unit-normed as
          `build_semantic_ids` does; generation not timed) -> RQ-KMeans codes (`rq_kmeans`) ->
          disambiguation -> diagnostics -> the device prefix trie
          (`PrefixTrieConstraint.from_sequences`). Wall time and peak resident memory per phase,
          the trie's device bytes, and two checks: every item has exactly one ID, and the trie
          accepts exactly the catalogue's IDs (`verify_trie`).
  decode  "scale_decode": constrained diverse beam search over that trie with a random T5 of
          `--preset` (text vocabulary `--scale_text_vocab`, item tokens = the semantic ID tokens):
          queries/s after warm-up, and the share of returned sequences that are catalogue items.
  memory  "scale_memory", one per ID scheme: XLA's memory analysis of the train step compiled for
          abstract shapes (`train_bench.compiled_train_memory`, nothing allocated) with N atomic
          item tokens against the semantic ID tokens (levels x codebook + disambiguation).

Peak memory is the process's resident high-water mark (VmHWM), reset before each phase through
/proc/self/clear_refs where Linux allows it (`rss_peak_reset` says whether it did; otherwise the
peak is the process's so far, as `ru_maxrss`).
"""

from __future__ import annotations

import datetime
import os
import resource
import sys
import time
from typing import Any, Sequence

import numpy as np

from gr_jax.bench import protocol

EOS_ID = 1
PARTS = ("ids", "decode", "memory")


# ------------------------------------------------------------------------------ resident memory


def _status_kib(field: str) -> int | None:
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1])
  except OSError:
    pass
  return None


def reset_peak_rss() -> bool:
  """Resets the process's VmHWM to its current RSS (Linux >= 4.0); False where not allowed."""
  try:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
      f.write("5")
    return True
  except OSError:
    return False


def peak_rss_bytes() -> int:
  """Resident high-water mark since the last reset (VmHWM), else the process's ru_maxrss."""
  kib = _status_kib("VmHWM")
  if kib is None:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
  return int(kib) * 1024


def rss_bytes() -> int | None:
  kib = _status_kib("VmRSS")
  return None if kib is None else kib * 1024


class Phase:
  """Times a block and records its wall seconds, peak and end RSS into `rec` under `name`."""

  def __init__(self, rec: dict[str, Any], name: str):
    self.rec, self.name = rec, name

  def __enter__(self):
    self.rec["rss_peak_reset"] = reset_peak_rss() and self.rec.get("rss_peak_reset", True)
    self.t0 = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.rec[f"{self.name}_s"] = time.perf_counter() - self.t0
    self.rec[f"{self.name}_peak_rss_bytes"] = peak_rss_bytes()
    self.rec[f"{self.name}_end_rss_bytes"] = rss_bytes()
    return False


# ------------------------------------------------------------------------------ inputs


def synthetic_embeddings(
  n: int, dim: int = 128, clusters: int = 1024, seed: int = 0, spread: float = 0.35
) -> np.ndarray:
  """float32 [n, dim] unit rows from a Gaussian mixture: `clusters` centres N(0, I/dim), each row
  its centre plus N(0, spread^2 I/dim) noise, then L2-normalised (`build_semantic_ids` normalises
  by default). Generated in blocks so that no float64 [n, dim] copy is ever made."""
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((clusters, dim), dtype=np.float32) / np.sqrt(dim)
  out = np.empty((n, dim), np.float32)
  block = 1 << 18
  for s in range(0, n, block):
    e = min(n, s + block)
    x = out[s:e]
    rng.standard_normal(out=x, dtype=np.float32)
    x *= spread / np.sqrt(dim)
    x += centres[rng.integers(0, clusters, e - s)]
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  return out


def semantic_tokens(codes: np.ndarray, levels: int, codebook_size: int, offset: int) -> np.ndarray:
  """Codes int [N, T] -> token ids int32 [N, T], the catalogue's layout (`ItemCatalog`): level l
  code c is offset + l*K + c; the disambiguation code d (column `levels`) is offset + L*K + d."""
  t = codes.shape[1]
  base = offset + codebook_size * np.arange(t, dtype=np.int64)
  return (codes.astype(np.int64) + base[None, :]).astype(np.int32)


def trie_nbytes(trie) -> int:
  """Bytes of the trie's device arrays."""
  return int(sum(int(a.nbytes) for a in trie.arrays.values()))


def verify_trie(trie, tokens: np.ndarray) -> dict[str, Any]:
  """Whether `trie` accepts exactly the rows of `tokens` int [N, T] (item i = row i), checked for
  all rows at once on the host tables: every row's path exists and ends at a terminal node whose
  item is i, and there are exactly N terminal nodes (a trie has one path per node, so no other
  sequence is accepted)."""
  h = trie._host_tables()  # pylint: disable=protected-access
  n, depth = tokens.shape
  count = h["count"]
  parent = np.repeat(np.arange(len(count), dtype=np.int64), count)  # edges sorted by parent
  bound = int(trie.vocab_bound)
  edge_key = parent * bound + h["tok"]  # sorted: edges are ordered by (parent, token)
  node = np.zeros(n, np.int64)
  found = np.ones(n, bool)
  for d in range(depth):
    key = node * bound + tokens[:, d]
    pos = np.minimum(np.searchsorted(edge_key, key), len(edge_key) - 1)
    hit = edge_key[pos] == key
    found &= hit
    # int64: the device table is int32, and node * bound overflows int32 past ~2^31 / bound
    # nodes (10M items: 16M nodes x 1,315 tokens).
    node = np.where(hit, h["child"][pos].astype(np.int64), 0)
  terminal = np.asarray(jax_get(trie.arrays["terminal"]))
  items_ok = found & terminal[node] & (h["item_of_node"][node] == np.arange(n))
  return {
    "trie_paths_found": int(found.sum()),
    "trie_items_mapped": int(items_ok.sum()),
    "trie_terminal_nodes": int(terminal.sum()),
    "trie_accepts_exactly_catalogue": bool(items_ok.all() and int(terminal.sum()) == n),
  }


def jax_get(x):
  import jax  # pylint: disable=g-import-not-at-top

  return jax.device_get(x)


def command_line() -> str:
  """This process's command line, `python -m gr_jax.bench ...` when run as the bench binary."""
  argv = list(sys.argv)
  if argv and argv[0].replace(os.sep, "/").endswith("gr_jax/bench/__main__.py"):
    argv[:1] = ["python", "-m", "gr_jax.bench"]
  return " ".join(argv)


def _base_record(kind: str, num_items: int, command: str | None) -> dict[str, Any]:
  return {
    "kind": kind,
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    **protocol.machine_info(),
    "command": command if command is not None else command_line(),
    "num_items": int(num_items),
  }


# ------------------------------------------------------------------------------ (a) IDs + trie


def build_ids_and_trie(
  *,
  num_items: int,
  dim: int = 128,
  clusters: int = 1024,
  levels: int = 3,
  codebook_size: int = 256,
  kmeans_iters: int = 50,
  max_points_per_code: int = 256,
  seed: int = 0,
  text_vocab: int = 512,
  command: str | None = None,
):
  """Returns ("scale_ids" record, token ids int32 [N, T], the trie, codes int32 [N, T])."""
  import jax  # pylint: disable=g-import-not-at-top

  from gr_jax.data import semantic_ids  # pylint: disable=g-import-not-at-top
  from gr_jax.decoding import PrefixTrieConstraint  # pylint: disable=g-import-not-at-top

  rec = _base_record("scale_ids", num_items, command)
  rec.update(
    dim=dim,
    mixture_components=clusters,
    levels=levels,
    codebook_size=codebook_size,
    kmeans_iters=kmeans_iters,
    max_points_per_code=max_points_per_code,
    seed=seed,
    backend=jax.default_backend(),
    jax_version=jax.__version__,
  )
  t0 = time.perf_counter()
  box = {"emb": synthetic_embeddings(num_items, dim, clusters, seed)}
  rec["generate_s_untimed"] = time.perf_counter() - t0
  rec["embeddings_bytes"] = int(box["emb"].nbytes)
  with Phase(rec, "rq_kmeans"):
    # On device first, then drop the host copy: a caller's argument stays referenced for the
    # whole call, and at 10M x 128 each copy is 5 GB.
    box["emb"] = jax.device_put(box["emb"])
    rq = semantic_ids.rq_kmeans(
      box.pop("emb"),
      levels=levels,
      codebook_size=codebook_size,
      seed=seed,
      iters=kmeans_iters,
      max_points_per_code=max_points_per_code,
    )
  with Phase(rec, "disambiguate"):
    dis = semantic_ids.disambiguate(rq.codes)
  with Phase(rec, "diagnostics"):
    diag = semantic_ids.diagnostics(rq.codes, codebook_size)
  num_dis = int(dis.max()) + 1 if len(dis) and dis.max() > 0 else 0
  codes = np.concatenate([rq.codes, dis[:, None]], 1) if num_dis else rq.codes
  tokens = semantic_tokens(codes, levels, codebook_size, text_vocab)
  with Phase(rec, "trie_build"):
    trie = PrefixTrieConstraint.from_sequences(tokens, EOS_ID, source="scale benchmark")
    jax.block_until_ready(trie.arrays)
  # One ID row per item, and no two items share one.
  rec["id_rows"] = int(len(codes))
  rec["ids_unique"] = bool(len(np.unique(codes, axis=0)) == len(codes) == num_items)
  rec.update(verify_trie(trie, tokens))
  rec.update(
    residual_mse=rq.residual_mse,
    num_disambiguation=num_dis,
    tokens_per_item=int(tokens.shape[1]),
    num_id_tokens=levels * codebook_size + num_dis,
    trie_bytes=trie_nbytes(trie),
    trie_array_bytes={k: int(v.nbytes) for k, v in sorted(trie.arrays.items())},
    trie_nodes=int(trie.arrays["child_count"].shape[0]),
    trie_edges=int(trie.arrays["edge_tok"].shape[0]),
    trie_max_fanout=int(trie.max_fanout),
    **{f"diag_{k}": v for k, v in diag.items()},
    peak_rss_bytes_process=int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
    load_avg_1m=protocol.load_avg_1m(),
  )
  return rec, tokens, trie, codes


# ------------------------------------------------------------------------------ (b) decoding


def decode_over_trie(
  trie,
  *,
  num_id_tokens: int,
  tokens_per_item: int,
  preset: str = "small",
  text_vocab: int = 512,
  batch_size: int = 8,
  encoder_len: int = 32,
  num_beams: int = 60,
  num_beam_groups: int = 30,
  diversity_penalty: float = 0.25,
  num_return_sequences: int = 30,
  warmup: int = 1,
  repeats: int = 3,
  dtype: str = "float32",
  seed: int = 0,
  model_overrides: dict | None = None,
  command: str | None = None,
) -> dict[str, Any]:
  """Constrained diverse beam search over `trie` with a random T5: the "scale_decode" record."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from gr_jax.decoding import beam_search  # pylint: disable=g-import-not-at-top
  from gr_jax.decoding import sequences_to_items  # pylint: disable=g-import-not-at-top
  from gr_jax.model import T5, T5Config  # pylint: disable=g-import-not-at-top

  ov = dict(model_overrides or {})
  ov.update(
    vocab_size=int(text_vocab),
    num_item_tokens=int(num_id_tokens),
    dtype=dtype,
    param_dtype="float32",
    dropout_rate=0.0,
  )
  config = T5Config.from_preset(preset, **ov)
  model = T5(config, rngs=nnx.Rngs(seed))
  rng = np.random.default_rng(seed)
  ids = rng.integers(2, text_vocab, size=(batch_size, encoder_len)).astype(np.int32)
  ids[:, -1] = EOS_ID
  ids = jax.device_put(ids)
  max_new = tokens_per_item + 1  # the ID's tokens, then EOS
  last = {}

  def run():
    last["out"] = jax.block_until_ready(
      beam_search(
        model,
        ids,
        num_beams=num_beams,
        num_beam_groups=num_beam_groups,
        diversity_penalty=diversity_penalty,
        max_new_tokens=max_new,
        num_return_sequences=num_return_sequences,
        constraint=trie,
      )
    )
    return last["out"]

  t0 = time.perf_counter()
  run()  # compiles
  compile_s = time.perf_counter() - t0
  side = protocol.Side("gr_jax_trie", run, block=lambda _: None)
  (times,), (warm,) = protocol.interleaved_times([side], warmup=warmup, repeats=repeats)
  seqs, scores = (np.asarray(a) for a in last["out"])
  finite = np.isfinite(scores)
  items = sequences_to_items(seqs, trie, scores)
  n_items = sum(len(x) for x in items)
  spelled = sum(trie.to_items(s) is not None for s in seqs[finite])
  rec = protocol.make_record(
    kind="scale_decode",
    impl="gr_jax_cache",
    step_times_s=times,
    batch_size=batch_size,
    encoder_len=encoder_len,
    decoder_len=max_new,
    num_items=trie.num_items,
    dtype=dtype,
    device_kind=jax.devices()[0].device_kind,
    num_devices=1,
    flops_per_example=0.0,
    peak_tflops=None,
    warmup_s=warm,
    peak_memory_bytes=None,
    extra={
      "command": command if command is not None else command_line(),
      "preset": preset,
      "text_vocab": text_vocab,
      "vocab": config.total_vocab_size,
      "d_model": config.d_model,
      "num_layers": config.num_encoder_layers,
      "num_beams": num_beams,
      "num_beam_groups": num_beam_groups,
      "diversity_penalty": diversity_penalty,
      "num_return_sequences": num_return_sequences,
      "compile_s": compile_s,
      "trie_bytes": trie_nbytes(trie),
      "trie_max_fanout": int(trie.max_fanout),
      # Returned sequences with a finite score, and how many spell a catalogue item (all, if the
      # constraint holds); distinct items: groups may return the same item.
      "finite_returns": int(finite.sum()),
      "returns_spelling_an_item": int(spelled),
      "distinct_items_returned": int(n_items),
      "process_peak_rss_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
      "backend": jax.default_backend(),
      "jax_version": jax.__version__,
    },
  )
  rec["queries_per_s"] = rec["examples_per_s"]
  return rec


# ------------------------------------------------------------------------------ (c) train memory


def train_memory(
  *,
  num_items: int,
  num_id_tokens: int,
  tokens_per_item: int,
  preset: str = "small",
  batch_size: int = 128,
  encoder_len: int = 64,
  dtype: str = "float32",
  command: str | None = None,
) -> list[dict[str, Any]]:
  """The train step's compiled memory for N atomic item tokens and for the semantic ID tokens
  ("scale_memory" records; abstract shapes, nothing allocated). Decoder length = ID tokens + EOS."""
  from gr_jax.bench import train_bench  # pylint: disable=g-import-not-at-top

  recs = []
  for scheme, vocab_items, dec in (
    ("atomic", num_items, 2),
    ("semantic", num_id_tokens, tokens_per_item + 1),
  ):
    t0 = time.perf_counter()
    mem = train_bench.compiled_train_memory(
      preset=preset,
      batch_size=batch_size,
      encoder_len=encoder_len,
      decoder_len=dec,
      num_items=vocab_items,
      dtype=dtype,
    )
    rec = _base_record("scale_memory", num_items, command)
    rec.update(mem)
    rec.update(
      num_items=int(num_items),
      id_scheme=scheme,
      item_tokens_in_vocab=int(vocab_items),
      compile_s=time.perf_counter() - t0,
      # float32 master parameters alone; compiled_argument_bytes adds AdamW's moments and the batch.
      param_bytes=4 * int(mem["num_params"]),
      # XLA's temporaries of the step: activations, gradients, the loss's logits (chunked or not).
      activation_bytes=mem.get("compiled_temp_bytes"),
    )
    recs.append(rec)
  return recs


# ------------------------------------------------------------------------------ all parts


def run_scale_benchmark(
  *,
  num_items: int,
  parts: Sequence[str] = PARTS,
  dim: int = 128,
  clusters: int = 1024,
  levels: int = 3,
  codebook_size: int = 256,
  kmeans_iters: int = 50,
  max_points_per_code: int = 256,
  text_vocab: int = 512,
  preset: str = "small",
  batch_size: int = 8,
  encoder_len: int = 32,
  num_beams: int = 60,
  num_beam_groups: int = 30,
  diversity_penalty: float = 0.25,
  num_return_sequences: int = 30,
  warmup: int = 1,
  repeats: int = 3,
  train_batch_size: int = 128,
  train_encoder_len: int = 64,
  dtype: str = "float32",
  seed: int = 0,
  model_overrides: dict | None = None,
  command: str | None = None,
  emit=None,
) -> list[dict[str, Any]]:
  """Runs the parts in order and returns their records (`emit(rec)` as each one is done).

  decode and memory need the IDs (the trie; the number of ID tokens), so "ids" always runs.
  """
  unknown = set(parts) - set(PARTS)
  if unknown:
    raise ValueError(f"scale parts: expected some of {PARTS}, got {sorted(unknown)}")
  recs = []

  def out(rec):
    recs.append(rec)
    if emit is not None:
      emit(rec)

  ids_rec, _, trie, _ = build_ids_and_trie(
    num_items=num_items,
    dim=dim,
    clusters=clusters,
    levels=levels,
    codebook_size=codebook_size,
    kmeans_iters=kmeans_iters,
    max_points_per_code=max_points_per_code,
    seed=seed,
    text_vocab=text_vocab,
    command=command,
  )
  out(ids_rec)
  if "decode" in parts:
    out(
      decode_over_trie(
        trie,
        num_id_tokens=ids_rec["num_id_tokens"],
        tokens_per_item=ids_rec["tokens_per_item"],
        preset=preset,
        text_vocab=text_vocab,
        batch_size=batch_size,
        encoder_len=encoder_len,
        num_beams=num_beams,
        num_beam_groups=num_beam_groups,
        diversity_penalty=diversity_penalty,
        num_return_sequences=num_return_sequences,
        warmup=warmup,
        repeats=repeats,
        dtype=dtype,
        seed=seed,
        model_overrides=model_overrides,
        command=command,
      )
    )
  del trie  # the compile-only memory part needs none of it
  if "memory" in parts:
    for rec in train_memory(
      num_items=num_items,
      num_id_tokens=ids_rec["num_id_tokens"],
      tokens_per_item=ids_rec["tokens_per_item"],
      preset=preset,
      batch_size=train_batch_size,
      encoder_len=train_encoder_len,
      dtype=dtype,
      command=command,
    ):
      out(rec)
  return recs
