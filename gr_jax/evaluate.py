"""Evaluates a trained run: `python -m gr_jax.evaluate --workdir RUN [--split test|valid] [--step N]`.

Restores the checkpoint and config of RUN, decodes every query of the split for each task the model
was trained on, and writes `RUN/eval/<split>/{search,rec}.{run,qrels}`, `metrics.json`,
`per_query.json`. Decoding settings come from the run's config; change them with
`--set decode.num_beams=8 --set decode.diversity_penalty=0.5` (any dotted config field).
The exact top-K decoder beside beam search's results:
`--set decode.method=topk_exact --out_subdir test_topk` writes `RUN/eval/test_topk/`.
"""

from __future__ import annotations

import ast
import json
import logging
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory (holds config.json and checkpoints/).")
flags.DEFINE_enum("split", "test", ["test", "valid"], "Which split to decode.")
flags.DEFINE_string("step", None, "Checkpoint step: an integer, 'best', or empty for the latest.")
flags.DEFINE_multi_string("set", [], "Config override FIELD=VALUE (dotted path), repeatable.")
flags.DEFINE_string("out_subdir", None, "Write to RUN/eval/<out_subdir> instead of "
                    "RUN/eval/<split> (several decoders' results side by side).")


def parse_overrides(items) -> dict:
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise ValueError(f"--set {item!r}: expected FIELD=VALUE, e.g. decode.num_beams=8")
    try:
      out[key.strip()] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key.strip()] = value  # a bare string
  return out


def main(argv) -> None:
  del argv
  from gr_jax.evaluation import evaluator
  logging.getLogger().setLevel(logging.INFO)
  import jax
  logging.info("devices: %s", jax.devices())
  try:
    step = FLAGS.step or None
    if step not in (None, "best"):
      try:
        step = int(step)
      except ValueError:
        raise ValueError(f"--step {step!r}: expected an integer, 'best' or nothing") from None
    metrics = evaluator.evaluate(FLAGS.workdir, FLAGS.split, step, parse_overrides(FLAGS.set),
                                 out_subdir=FLAGS.out_subdir or None)
  except (evaluator.EvaluationError, ValueError) as e:
    sys.exit(f"error: {' '.join(str(e).split())}")
  print(json.dumps({k: v for k, v in metrics.items() if k != "info"}, indent=1, sort_keys=True))


def run() -> None:
  flags.mark_flag_as_required("workdir")
  app.run(main)


if __name__ == "__main__":
  run()
