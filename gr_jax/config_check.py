"""Validation of an experiment config (the knobs of configs/base.py) before any work starts.

`validate(config)` is run by every binary right after flag parsing, so a nonsense value fails
at once with one line naming the key, its value and what is expected, instead of training a
step first or surfacing as a NumPy traceback. Rules are grouped by knob family below; a key
absent from the config (an older run's config.json, a partial test config) is not checked.
"""

from __future__ import annotations

import numbers
import re
from typing import Any

from gr_jax.schema import TASKS  # pure Python: validation stays free of JAX

# Kept here rather than imported so that validation stays light (no JAX import); tests check
# that these lists agree with the modules that own them.
SOURCES = ("simulate", "movielens", "mpd", "jsonl", "tfds_movielens")
SIM_SETTINGS = ("default", "S1", "S2", "S3")
HELDOUT_COVERAGE_RULES = ("trained_in_both", "paper")
SEARCH_SPLITS = ("by_query", "within_item")
PRESETS = ("tiny", "small", "base", "large", "flan-t5-small", "flan-t5-base", "flan-t5-large")
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLS = ("einsum", "dot_product_attention", "cudnn", "auto")
SCHEDULES = ("constant", "cosine", "linear")
LOSS_IMPLS = ("full", "chunked", "auto")
DROPOUT_PRNGS = ("threefry2x32", "rbg", "auto")
BEST_MODES = ("min", "max")
DECODE_METHODS = ("beam", "topk_exact")
SPLITS = ("test", "valid")
MODELS = ("search", "rec", "joint")
BUDGETS = ("epochs", "matched_steps", "converged")
STAT_TESTS = ("ttest", "randomization")
CORRECTIONS = ("holm", "bonferroni")
BASELINES = ("bm25", "sasrec", "bert4rec", "biencoder")
# What a reproduce.tune grid field may set (gr_jax/study/tune.py): the model and its training,
# never the data or the evaluation.
TUNE_GRID_SECTIONS = ("model.", "train.")
BM25_METHODS = ("lucene", "robertson", "atire")
_METRIC = re.compile(r"^(recall|ndcg|mrr)@(\d+)$")


class ConfigError(ValueError):
  """A config value out of its domain; the message names the key, the value and the domain."""

  def __init__(self, key: str, value: Any, expected: str):
    self.key, self.value, self.expected = key, value, expected
    super().__init__(f"config key {key} = {value!r}: expected {expected}")


_MISSING = object()


def _get(config, key: str):
  """The value at dotted `key`, or _MISSING when a section or the field is absent."""
  node = config
  for part in key.split("."):
    try:
      if part not in node:
        return _MISSING
      node = node[part]
    except TypeError:  # a leaf where a section was expected
      return _MISSING
  return node


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


class _Checker:
  """Applies the rules to one config; each method checks the keys present in it."""

  def __init__(self, config):
    self.config = config

  def value(self, key):
    return _get(self.config, key)

  def int_at_least(self, key: str, low: int, why: str = ""):
    v = self.value(key)
    if v is _MISSING:
      return
    if not _is_int(v) or v < low:
      what = "a positive integer" if low == 1 else f"an integer >= {low}"
      raise ConfigError(key, v, what + (f" ({why})" if why else ""))

  def number(self, key: str, low=None, high=None, low_open=False, high_open=False, why=""):
    v = self.value(key)
    if v is _MISSING:
      return
    ok = _is_num(v)
    if ok and low is not None:
      ok = v > low if low_open else v >= low
    if ok and high is not None:
      ok = v < high if high_open else v <= high
    if not ok:
      lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
      hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
      rng = " and ".join(x for x in (lo, hi) if x)
      raise ConfigError(
        key, v, "a number" + (f" {rng}" if rng else "") + (f" ({why})" if why else "")
      )

  def enum(self, key: str, choices):
    v = self.value(key)
    if v is _MISSING:
      return
    if not isinstance(v, (str, bool)) or v not in choices:
      raise ConfigError(key, v, "one of " + " | ".join(repr(c) for c in choices))

  def subset(self, key: str, choices, allow_empty=False):
    v = self.value(key)
    if v is _MISSING:
      return
    items = list(v) if isinstance(v, (tuple, list)) else None
    if items is None or (not items and not allow_empty) or any(x not in choices for x in items):
      raise ConfigError(
        key,
        v,
        ("a possibly empty" if allow_empty else "a non-empty")
        + " tuple of "
        + " | ".join(repr(c) for c in choices),
      )


def validate_tune(config) -> None:
  """The reproduce.tune section alone (gr_jax/study/tune.py checks a config built in code with
  it, as the binaries check every config with `validate`)."""
  c = _Checker(config)
  _tune(c, c.value("reproduce.seeds"))
  # Only when the tuning runs or is read: a config that never tunes keeps the section's defaults.
  if c.value("reproduce.tune.decoder") == "topk_exact" and c.value("data.id_scheme") not in (
    "atomic",
    _MISSING,
  ):
    raise ConfigError(
      "reproduce.tune.decoder",
      "topk_exact",
      f"'beam' with data.id_scheme = {c.value('data.id_scheme')!r} (topk_exact decodes atomic "
      "IDs only)",
    )


def validate(config) -> None:
  """Raises ConfigError for the first knob outside its domain; returns None when all are fine."""
  c = _Checker(config)
  _data(c)
  _model(c)
  _train(c)
  _checkpoint(c)
  _mesh(c)
  _decode(c)
  _eval(c)
  _reproduce(c)
  _baselines(c)


def _data(c: _Checker) -> None:
  c.enum("data.source", SOURCES)
  c.enum("data.heldout_coverage_rule", HELDOUT_COVERAGE_RULES)
  c.enum("data.search_split", SEARCH_SPLITS)
  c.subset("data.tasks", TASKS)
  c.number("data.task_ratio", 0, 1, high_open=True)
  c.int_at_least("data.item_cap", 0)
  c.enum("data.item_cap_task", ("",) + TASKS)
  # One content token plus EOS at least, else every input is just EOS.
  c.int_at_least("data.encoder_len", 2, "room for one token plus EOS")
  c.int_at_least("data.max_query_tokens", 2, "room for one token plus EOS")
  c.int_at_least("data.decoder_len", 2, "<item> </s>")
  c.int_at_least("data.max_history", 1)
  c.int_at_least("data.min_session_len", 3, "leave-last-out needs a train, valid and test item")
  c.int_at_least("data.tokenizer.vocab_size", 1)
  for key in ("data.search_valid_fraction", "data.search_test_fraction"):
    c.number(key, 0, 1, high_open=True)
  valid, test = c.value("data.search_valid_fraction"), c.value("data.search_test_fraction")
  if valid is not _MISSING and test is not _MISSING and valid + test >= 1:
    raise ConfigError(
      "data.search_valid_fraction + data.search_test_fraction",
      valid + test,
      "a sum < 1 (the rest of the distinct queries are the training split)",
    )
  c.int_at_least("data.mpd.max_slices", 0, "0 = all")
  c.enum("data.sim.setting", SIM_SETTINGS)
  for key in ("num_items", "num_clusters", "words_per_item", "query_words"):
    c.int_at_least(f"data.sim.{key}", 1)
  c.int_at_least("data.sim.session_len", 3, "the last two items are rec valid and test")
  for key in (
    "words_per_cluster",
    "num_users",
    "queries_per_item",
    "eval_queries",
    "s2_num_users",
    "s3_query_set_size",
  ):
    c.int_at_least(f"data.sim.{key}", 0)
  for key in (
    "stay_in_cluster",
    "shuffle_fraction",
    "agreement",
    "query_set_coherence",
    "search_side_fraction",
    "rec_side_fraction",
  ):
    c.number(f"data.sim.{key}", 0, 1)
  c.number("data.sim.zipf_exponent", 0)
  c.enum("data.sim.s1_cover_all_items", (False, True))
  c.number("data.sim.s3_queries_per_item", 0)
  c.number("data.sim.side_weight", 0)
  c.number("data.movielens.min_rating", 0)
  c.subset("data.movielens.query_sources", ("tags", "titles", "genres"))
  c.int_at_least("data.movielens.min_tag_count", 1)


def _model(c: _Checker) -> None:
  c.enum("model.preset", PRESETS)
  c.enum("model.dtype", DTYPES)
  c.enum("model.param_dtype", DTYPES)
  c.number("model.dropout_rate", 0, 1, high_open=True)
  c.enum("model.attention_impl", ATTENTION_IMPLS)


def _train(c: _Checker) -> None:
  c.int_at_least("train.batch_size", 1)
  c.int_at_least("train.num_epochs", 0)
  c.int_at_least("train.num_steps", 0, "0 = use num_epochs")
  epochs, steps = c.value("train.num_epochs"), c.value("train.num_steps")
  if epochs is not _MISSING and steps is not _MISSING and epochs == 0 and steps == 0:
    raise ConfigError("train.num_epochs", epochs, "a positive integer when train.num_steps is 0")
  c.number("train.learning_rate", 0, low_open=True)
  c.number("train.weight_decay", 0)
  c.number("train.warmup_fraction", 0, 1, high_open=True)
  c.enum("train.schedule", SCHEDULES)
  c.number("train.grad_clip_norm", 0, why="0 = off")
  c.int_at_least("train.grad_accum_steps", 1)
  batch, accum = c.value("train.batch_size"), c.value("train.grad_accum_steps")
  if batch is not _MISSING and accum is not _MISSING and batch % accum:
    raise ConfigError("train.batch_size", batch, f"a multiple of train.grad_accum_steps ({accum})")
  c.int_at_least("train.log_every_steps", 1)
  c.int_at_least("train.eval_every_steps", 0, "0 = once per epoch")
  metric = c.value("train.select_metric")
  if metric is not _MISSING and metric != "":
    if not isinstance(metric, str) or not _METRIC.match(metric):
      raise ConfigError("train.select_metric", metric, "'' or recall@K | ndcg@K | mrr@K")
  c.int_at_least("train.select_every_steps", 0, "0 = once per epoch")
  c.int_at_least("train.select_evals_per_epoch", 0, "0 = every train.select_every_steps")
  c.enum("train.select_per_task", (False, True))
  c.int_at_least("train.patience", 0, "0 = never stop early")
  c.int_at_least("train.select_max_queries", 0, "0 = all")
  c.enum("train.loss_impl", LOSS_IMPLS)
  c.int_at_least("train.loss_chunk_size", 1)
  c.number("train.peak_tflops", 0)
  c.enum("train.dropout_prng", DROPOUT_PRNGS)


def _checkpoint(c: _Checker) -> None:
  c.int_at_least("checkpoint.every_steps", 1)
  c.int_at_least("checkpoint.keep", 1)
  c.enum("checkpoint.best_mode", BEST_MODES)


def _mesh(c: _Checker) -> None:
  v = c.value("mesh.data")
  if v is not _MISSING and (not _is_int(v) or (v < 1 and v != -1)):
    raise ConfigError("mesh.data", v, "a positive integer or -1 (the rest of the devices)")
  c.int_at_least("mesh.model", 1)


def _decode(c: _Checker) -> None:
  c.enum("decode.method", DECODE_METHODS)
  c.int_at_least("decode.num_beams", 1)
  c.int_at_least("decode.num_beam_groups", 1)
  c.int_at_least("decode.num_return_sequences", 1)
  c.int_at_least("decode.max_new_tokens", 1)
  c.int_at_least("decode.batch_size", 1)
  c.number("decode.diversity_penalty", 0)
  c.number("decode.length_penalty")
  early = c.value("decode.early_stopping")
  if early is not _MISSING and early not in (True, False, "never"):
    raise ConfigError("decode.early_stopping", early, "False | True | 'never'")
  beams, groups = c.value("decode.num_beams"), c.value("decode.num_beam_groups")
  if beams is not _MISSING and groups is not _MISSING and beams % groups:
    raise ConfigError("decode.num_beams", beams, f"a multiple of decode.num_beam_groups ({groups})")
  n_ret = c.value("decode.num_return_sequences")
  method = c.value("decode.method")
  if (
    method in (_MISSING, "beam")
    and beams is not _MISSING
    and n_ret is not _MISSING
    and n_ret > beams
  ):
    raise ConfigError(
      "decode.num_return_sequences", n_ret, f"at most decode.num_beams ({beams}) for beam search"
    )


def _eval(c: _Checker) -> None:
  c.enum("eval.split", SPLITS)
  ks = c.value("eval.ks")
  if ks is not _MISSING:
    if not isinstance(ks, (tuple, list)) or not ks or any(not _is_int(k) or k < 1 for k in ks):
      raise ConfigError("eval.ks", ks, "a non-empty tuple of positive integers")
  c.number("eval.pop_mix_weight", 0, 1)
  c.enum("eval.exclude_seen", (False, True))
  c.int_at_least("eval.analysis_k", 0, "0 = the deepest of eval.ks")
  c.number("eval.kl_eps", 0, low_open=True)
  c.int_at_least("eval.session_window", 1)
  bounds = c.value("eval.bucket_bounds")
  if bounds is not _MISSING:
    b = list(bounds) if isinstance(bounds, (tuple, list)) else None
    if b is None or len(b) != 2 or not all(_is_num(x) for x in b) or not 0 < b[0] < b[1] < 1:
      raise ConfigError("eval.bucket_bounds", bounds, "two increasing shares (a, b), 0 < a < b < 1")


def _reproduce(c: _Checker) -> None:
  seeds = c.value("reproduce.seeds")
  if seeds is not _MISSING and (
    not isinstance(seeds, (tuple, list)) or not seeds or any(not _is_int(s) for s in seeds)
  ):
    raise ConfigError("reproduce.seeds", seeds, "a non-empty tuple of integers")
  if seeds is not _MISSING:
    twice = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if twice:
      # One seed run twice is the same run counted twice: a zero-width CI and a per-query test
      # over every query twice (a p value far too small).
      raise ConfigError(
        "reproduce.seeds",
        seeds,
        f"distinct integers (seed {twice[0]} is listed more than once; every seed is one "
        "independent run)",
      )
  c.subset("reproduce.models", MODELS)
  c.subset("reproduce.budgets", BUDGETS)
  c.subset("reproduce.decoders", DECODE_METHODS)
  c.subset("reproduce.baselines", BASELINES, allow_empty=True)
  c.enum("reproduce.test", STAT_TESTS)
  c.enum("reproduce.correction", CORRECTIONS)
  c.number("reproduce.converged_max_factor", 0, low_open=True)
  c.int_at_least("reproduce.converged_evals_per_epoch", 1)
  c.int_at_least("reproduce.patience", 1)
  sweep, values = c.value("reproduce.sweep"), c.value("reproduce.sweep_values")
  if sweep not in (_MISSING, "") and values is not _MISSING and not values:
    raise ConfigError(
      "reproduce.sweep_values", values, f"a non-empty tuple when reproduce.sweep is set ({sweep!r})"
    )
  _tune(c, seeds)


def _tune(c: _Checker, study_seeds) -> None:
  """reproduce.tune (gr_jax/study/tune.py): the grid, tuning seeds that are not study seeds."""
  for key in ("reproduce.tune.run", "reproduce.tune.use"):
    c.enum(key, (True, False))
  c.enum("reproduce.tune.budget", BUDGETS)
  c.enum("reproduce.tune.decoder", DECODE_METHODS)
  c.number("reproduce.tune.tolerance", 0)
  recorded = c.value("reproduce.tune.recorded")
  if recorded is not _MISSING and not isinstance(recorded, str):
    raise ConfigError("reproduce.tune.recorded", recorded, "a path to a tuning.json, or ''")
  fields, values = c.value("reproduce.tune.grid_fields"), c.value("reproduce.tune.grid_values")
  if fields is not _MISSING and (
    not isinstance(fields, (tuple, list))
    or not fields
    or any(not isinstance(f, str) or not f.startswith(TUNE_GRID_SECTIONS) for f in fields)
    or len(set(fields)) != len(fields)
  ):
    raise ConfigError(
      "reproduce.tune.grid_fields",
      fields,
      "a non-empty tuple of distinct dotted model.* or train.* fields (the grid tunes the model "
      "and its training, never the data or the evaluation)",
    )
  if values is not _MISSING and (
    not isinstance(values, (tuple, list))
    or any(not isinstance(v, (tuple, list)) or not v for v in values)
    or (fields is not _MISSING and len(values) != len(fields))
  ):
    raise ConfigError(
      "reproduce.tune.grid_values",
      values,
      "one non-empty tuple of values per reproduce.tune.grid_fields",
    )
  seeds = c.value("reproduce.tune.seeds")
  if seeds is _MISSING:
    return
  if not isinstance(seeds, (tuple, list)) or not seeds or any(not _is_int(s) for s in seeds):
    raise ConfigError("reproduce.tune.seeds", seeds, "a non-empty tuple of integers")
  shared = sorted(set(seeds) & set(study_seeds if study_seeds is not _MISSING else ()))
  if shared:
    raise ConfigError(
      "reproduce.tune.seeds",
      seeds,
      f"tuning seeds that are not study seeds (reproduce.seeds also has {shared}: a setting "
      "tuned on a seed's data would be reported on it)",
    )


def _baselines(c: _Checker) -> None:
  c.number("baselines.bm25.k1", 0)
  c.number("baselines.bm25.b", 0, 1)
  c.enum("baselines.bm25.method", BM25_METHODS)
  c.int_at_least("baselines.bm25.batch_size", 1)
  for name, losses in (("sasrec", ("ce", "bce")), ("bert4rec", ("ce",))):
    p = f"baselines.{name}"
    for key in (
      "hidden_size",
      "num_layers",
      "num_heads",
      "ffn_size",
      "max_len",
      "batch_size",
      "checkpoint_every_steps",
      "log_every_steps",
      "eval_batch_size",
    ):
      c.int_at_least(f"{p}.{key}", 1)
    for key in ("num_epochs", "num_steps", "eval_every_steps"):
      c.int_at_least(f"{p}.{key}", 0)
    c.enum(f"{p}.select_best", (False, True))
    c.int_at_least(f"{p}.patience", 0, "0 = never stop early")
    c.number(f"{p}.dropout", 0, 1, high_open=True)
    c.number(f"{p}.learning_rate", 0, low_open=True)
    c.number(f"{p}.weight_decay", 0)
    c.enum(f"{p}.loss", losses)
  c.number("baselines.bert4rec.mask_ratio", 0, 1, low_open=True, high_open=True)
  p = "baselines.biencoder"
  c.enum(f"{p}.preset", PRESETS)
  c.enum(f"{p}.item_tower", ("embedding", "text"))
  c.enum(f"{p}.similarity", ("cosine", "dot"))
  c.enum(f"{p}.loss", ("in_batch", "full"))
  for key in (
    "item_text_len",
    "batch_size",
    "checkpoint_every_steps",
    "log_every_steps",
    "eval_batch_size",
  ):
    c.int_at_least(f"{p}.{key}", 1)
  for key in ("projection_dim", "num_epochs", "num_steps", "eval_every_steps"):
    c.int_at_least(f"{p}.{key}", 0)
  c.number(f"{p}.temperature", 0, low_open=True)
  c.number(f"{p}.learning_rate", 0, low_open=True)
  c.number(f"{p}.dropout", 0, 1, high_open=True)
  c.number(f"{p}.weight_decay", 0)
  c.number(f"{p}.warmup_fraction", 0, 1, high_open=True)
  c.number(f"{p}.grad_clip_norm", 0)


# ------------------------------------------------------------------------------- unknown keys
def config_keys(config, prefix: str = "") -> list[str]:
  """Every dotted key of a config: sections and fields, depth first."""
  out = []
  for k in config.keys():
    path = f"{prefix}{k}"
    out.append(path)
    v = config[k]
    if hasattr(v, "keys") and hasattr(v, "items") and not isinstance(v, str):
      out += config_keys(v, path + ".")
  return out


def closest_key(config, key: str) -> str | None:
  """The real dotted key most like `key` (difflib), or None when none is close."""
  import difflib  # pylint: disable=g-import-not-at-top

  found = difflib.get_close_matches(key, config_keys(config), n=1, cutoff=0.6)
  return found[0] if found else None


def unknown_key_message(config, key: str, flag: str = "--config.") -> str | None:
  """None when dotted `key` names a section or field of config; else one line naming the key
  and the closest real one (a command-line override of a key that does not exist)."""
  node, parts = config, key.split(".")
  for depth, part in enumerate(parts):
    if not (hasattr(node, "keys") and not isinstance(node, str)) or part not in node:
      what = "field" if depth == len(parts) - 1 else "section"
      where = f" in {'.'.join(parts[:depth])!r}" if depth else ""
      near = closest_key(config, key)
      hint = f"; did you mean {flag}{near}?" if near else ""
      return f"{flag}{key}: no such config key (no {what} {part!r}{where}){hint}"
    node = node[part]
  return None
