"""Evaluates a trained run: `python -m gr_jax.evaluate --workdir RUN [--split S] [--step N]`.

Restores the checkpoint and config of RUN, decodes every query of the split for each task the model
was trained on, and writes `RUN/eval/<split>/{search,rec}.{run,qrels}`, `metrics.json`,
`per_query.json`. The run's config.json is the base config; change decoding settings like in the
other binaries: `--config.decode.num_beams=8 --config.decode.diversity_penalty=0.5` (any dotted
config field). The exact top-K decoder beside beam search's results:
`--config.decode.method=topk_exact --out_subdir test_topk` writes `RUN/eval/test_topk/`. Without
`--out_subdir`, an evaluation whose decoder differs from the one whose results are already in
`RUN/eval/<split>` stops with one error line naming `--out_subdir` (it never replaces another
decoder's results; `eval/<split>` stays what every reader expects).
`--set decode.num_beams=8` is the older spelling (deprecated, still accepted).
A `gs://` (or other object-store) workdir is read and written through epath; its processed dataset
must be on a local disk (`--config.data.processed_dir`). A store this machine cannot reach, or a
dataset path that is a URL, stops before any work with one error line naming the path.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import sys

from absl import app, flags

from gr_jax import runtime
from gr_jax import workdir as workdir_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory (holds config.json and checkpoints/).")
flags.DEFINE_enum("split", "test", ["test", "valid"], "Which split to decode.")
flags.DEFINE_string(
  "step",
  None,
  "Checkpoint step: an integer, empty for the latest, 'best' (by checkpoint.best_metric), "
  "'best_search' / 'best_rec' (by that task's validation metric, kept by a run selected per "
  "task) or 'best_per_task' (each task at its own best validation step).",
)
flags.DEFINE_multi_string(
  "set", [], "Deprecated spelling of --config.FIELD=VALUE (FIELD=VALUE, dotted path), repeatable."
)
flags.DEFINE_string(
  "out_subdir",
  None,
  "Write to RUN/eval/<out_subdir> instead of "
  "RUN/eval/<split> (several decoders' results side by side).",
)

_CONFIG_PREFIX = "--config."
# --config.* overrides taken out of argv before absl parses it (the base config is the run's
# config.json, not a config file flag, so config_flags cannot own them).
_CONFIG_OVERRIDES: dict = {}


def _parse_value(text: str):
  """A command-line value: a Python literal when it is one, true/false, else the bare string."""
  if text.strip().lower() in ("true", "false"):
    return text.strip().lower() == "true"
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_overrides(items) -> dict:
  """`--set` items FIELD=VALUE -> {FIELD: value}."""
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise ValueError(f"--set {item!r}: expected FIELD=VALUE, e.g. decode.num_beams=8")
    out[key.strip()] = _parse_value(value)
  return out


def split_config_overrides(argv: list[str]) -> tuple[list[str], dict]:
  """(argv less --config.*, {dotted field: value}); `--config.a.b=V` or `--config.a.b V`."""
  rest, overrides = [], {}
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg == "--":  # absl's end of flags: leave the rest alone
      rest += argv[i:]
      break
    if arg.startswith(_CONFIG_PREFIX):
      key, sep, value = arg[len(_CONFIG_PREFIX) :].partition("=")
      if not sep:
        if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
          raise app.UsageError(f"{arg}: expected {arg}=VALUE, e.g. --config.decode.num_beams=8")
        value = argv[i + 1]
        i += 1
      if not key or key.endswith(".") or ".." in key:
        raise app.UsageError(f"{arg}: expected --config.FIELD=VALUE with a dotted FIELD")
      overrides[key] = _parse_value(value)
    elif arg in ("--config", "-config") or arg.startswith(("--config=", "-config=")):
      raise app.UsageError(
        f"{arg}: evaluate takes the run's config.json as the base config; "
        "change fields with --config.FIELD=VALUE"
      )
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def checked_overrides(workdir: str, overrides: dict, set_overrides: dict | None = None) -> dict:
  """The `--set` then `--config.*` overrides ({dotted field: value}) merged, validated on the
  run's config.json before any work: an unknown key is one line naming the closest real one (in
  the spelling given); the run directory's store must be reachable and the processed dataset
  local (gr_jax.workdir), never a local `./gs:` directory."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top

  from gr_jax import config_check  # pylint: disable=g-import-not-at-top
  from gr_jax.evaluation import evaluator  # pylint: disable=g-import-not-at-top

  set_overrides = dict(set_overrides or {})
  spelling = {k: "--set " for k in set_overrides} | {k: "--config." for k in overrides}
  overrides = {**set_overrides, **overrides}
  workdir_lib.reachable(workdir, "the run directory (--workdir)")
  cfg_path = os.path.join(workdir, "config.json")
  cfg_file = epath.Path(workdir_lib.absolute(cfg_path))
  if not cfg_file.is_file():
    return overrides  # evaluator.evaluate names what is missing
  try:
    base = ml_collections.ConfigDict(json.loads(cfg_file.read_text()))
  except json.JSONDecodeError as e:
    raise ValueError(f"{cfg_path}:{e.lineno}: invalid JSON ({e.msg})") from None
  base = evaluator.with_decode_defaults(base)
  for key in overrides:  # one line naming the closest real key, e.g. decode.num_beams
    unknown = config_check.unknown_key_message(base, key, flag=spelling[key])
    if unknown is not None:
      raise ValueError(unknown)
  config = evaluator.apply_overrides(base, overrides)
  runtime.validate_config(config)
  # Memory-mapped: a URL here would be read as a local directory named `gs:`.
  workdir_lib.local_dir(
    workdir_lib.processed_dir(config, workdir), "the processed dataset", workdir_lib.DATASET_REMEDY
  )
  return overrides


def parse_step(text: str | None):
  """--step: None (the last checkpoint), a step number, or a named step of the evaluator ("best",
  "best_<task>", "best_per_task")."""
  from gr_jax.evaluation import evaluator  # pylint: disable=g-import-not-at-top

  if not text:
    return None
  named = evaluator.step_names()
  if text in named:
    return text
  try:
    return int(text)
  except ValueError:
    raise ValueError(
      f"--step {text!r}: expected an integer, one of {', '.join(named)}, or nothing"
    ) from None


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from gr_jax.evaluation import evaluator  # pylint: disable=g-import-not-at-top

  logging.getLogger().setLevel(logging.INFO)
  step = parse_step(FLAGS.step)
  overrides = checked_overrides(FLAGS.workdir, _CONFIG_OVERRIDES, parse_overrides(FLAGS.set))
  import jax  # pylint: disable=g-import-not-at-top

  logging.info("devices: %s", jax.devices())
  metrics = evaluator.evaluate(
    FLAGS.workdir, FLAGS.split, step, overrides, out_subdir=FLAGS.out_subdir or None
  )
  print(json.dumps({k: v for k, v in metrics.items() if k != "info"}, indent=1, sort_keys=True))


def run(argv: list[str] | None = None) -> None:
  global _CONFIG_OVERRIDES
  flags.mark_flag_as_required("workdir")
  argv = list(sys.argv if argv is None else argv)
  try:
    argv, _CONFIG_OVERRIDES = split_config_overrides(argv)
  except app.UsageError as e:
    sys.exit(f"error: {e}")
  runtime.run_app(main, path_hint=lambda: FLAGS.workdir, argv=argv)


if __name__ == "__main__":
  run()
