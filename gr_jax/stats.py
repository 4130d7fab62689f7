"""Compares models across seeds: `python -m gr_jax.stats --runs joint=RUN_J0,RUN_J1 --runs search=...`.

Each `--runs MODEL=DIR[,DIR...]` names one model and its run directories (one per seed; shell globs
are expanded). Reads `DIR/eval/<split>/metrics.json`, `per_query.json` and `{task}.qrels`, prints
and writes mean ± std over seeds and, for `--baseline` (default joint) against each other model:
the paired t-test over seeds (the verdict's test, with Holm or Bonferroni correction), the exact
sign-flip test over seeds, the two-stage bootstrap interval (seeds, then queries), the minimum
detectable difference at 80% power, the verdict (`gr_jax.analysis.stats.VERDICTS`) and the paired
per-query test (conditional on the trained models), as `<out>/stats.json` and `<out>/stats.md`.

Exits 1 with a one-line `error: ...` when a file is missing (its path is named), when runs were
evaluated on different data (different qrels or dataset identity) or differently (decoder, split,
cut-offs, list depth or exclude_seen in metrics.json `info`; both run dirs and the field are
named), when a model lists one run twice or two runs with the same seed, when a run directory is
an object-store URL (the eval files are read from a local disk), or when `--out` is on an object
store this machine cannot reach (checked before any work).
"""

from __future__ import annotations

import glob
import os

from absl import flags

from gr_jax import runtime
from gr_jax import workdir as workdir_lib

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("runs", [], "MODEL=DIR[,DIR...] (one directory per seed), repeatable.")
flags.DEFINE_list("tasks", ["search", "rec"], "Tasks to compare.")
flags.DEFINE_list("metrics", ["recall@30"], "Metrics to compare (names in metrics.json).")
flags.DEFINE_enum("split", "test", ["test", "valid"], "Which evaluation split.")
flags.DEFINE_enum("test", "ttest", ["ttest", "randomization"], "Paired test per query.")
flags.DEFINE_enum(
  "correction", "holm", ["holm", "bonferroni", "none"], "Multiple-testing correction."
)
flags.DEFINE_string("baseline", "joint", "Model compared against every other one.")
flags.DEFINE_integer("num_samples", 10000, "Randomisation test samples.", lower_bound=1)
flags.DEFINE_string("out", "", "Directory for stats.json and stats.md (empty: print only).")


def parse_groups(items) -> dict[str, list[str]]:
  groups: dict[str, list[str]] = {}
  for item in items:
    name, sep, dirs = item.partition("=")
    if not sep or not name or not dirs:
      raise ValueError(f"--runs {item!r}: expected MODEL=DIR[,DIR...]")
    paths = []
    for d in dirs.split(","):
      matched = sorted(glob.glob(d)) if any(c in d for c in "*?[") else [d]
      if not matched:
        raise ValueError(f"--runs {name}: pattern {d!r} matches no directory")
      for p in matched:  # the eval files are read with local file calls
        workdir_lib.local_dir(
          p, f"--runs {name}: a run directory", "copy its eval/ directory to a local disk"
        )
      paths += matched
    groups.setdefault(name, []).extend(paths)
  if not groups:
    raise ValueError(
      "no --runs given; expected e.g. --runs joint=runs/j0,runs/j1 --runs search=..."
    )
  return groups


def main(argv) -> None:
  del argv
  from gr_jax.analysis import stats

  # Errors (ValueError, KeyError, OSError) reach main_guard: one line naming the path or the two
  # run dirs; a traceback would bury it.
  out = FLAGS.out and workdir_lib.reachable(FLAGS.out, "--out (the stats directory)")
  groups = parse_groups(FLAGS.runs)
  result = stats.compare_models(
    groups,
    task=FLAGS.tasks,
    metric=FLAGS.metrics,
    test=FLAGS.test,
    correction=FLAGS.correction,
    baseline=FLAGS.baseline,
    split=FLAGS.split,
    num_samples=FLAGS.num_samples,
  )
  md = stats.to_markdown(result)
  print(md)
  if out:  # through gr_jax.workdir: atomic locally, epath on an object store
    workdir_lib.write_json(os.path.join(out, "stats.json"), result)
    workdir_lib.write_text(os.path.join(out, "stats.md"), md)


def run() -> None:
  runtime.run_app(main, path_hint=lambda: FLAGS.out or None)


if __name__ == "__main__":
  run()
