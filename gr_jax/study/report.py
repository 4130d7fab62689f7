"""report.md, report.json, summary.txt and the plots of a study, from each point's analysis.json."""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from gr_jax.schema import TASK_LABELS, TASKS
from gr_jax.study import tune
from gr_jax.study.plan import MODEL_LABELS, MODEL_TASKS, Plan, Point


def _load(plan: Plan, point: Point) -> dict:
  path = os.path.join(plan.workdir, "analysis", point.name, "analysis.json")
  with open(path) as f:
    return json.load(f)


def _fmt(x, digits=4) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "n/a"
  if isinstance(x, str):  # a categorical sweep value (an embedding source, a point name)
    return x
  return f"{x:.{digits}f}"


def _fmt_p(p) -> str:
  if p is None or (isinstance(p, float) and math.isnan(p)):
    return "n/a"
  return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


def seed_gains(results: list[dict], task: str, other: str, metric: str) -> list[float]:
  """Relative gain (%) of the joint model over `other`, seed by seed (paired by seed order)."""
  by_model = {r["model"]: r for r in results if r["task"] == task and r["metric"] == metric}
  if "joint" not in by_model or other not in by_model:
    return []
  out = []
  for j, s in zip(by_model["joint"]["per_seed"], by_model[other]["per_seed"]):
    out.append((j - s) / s * 100.0 if s else math.nan)
  return out


def _label(metric: str) -> str:
  return metric.replace("recall@", "Recall@")


def _headline_rows(a: dict) -> tuple[list[dict], list[dict]]:
  results = [dict(r, point=a["point"]) for r in a["headline"]["results"]]
  tests = [dict(c, point=a["point"]) for c in a["headline"]["comparisons"]]
  return results, tests


def _baseline_label(name: str) -> str:
  """pop_s -> Pop_S, pop_r -> Pop_R, pop_mix -> Pop_mix; other baselines as named."""
  return name.replace("pop_", "Pop_").replace("Pop_s", "Pop_S").replace("Pop_r", "Pop_R")


def _bar_plot(path: str, a: dict, ks_metric: str) -> str:
  from gr_jax.analysis.report import pyplot

  plt = pyplot()
  fig, axes = plt.subplots(1, len(TASKS), figsize=(4.2 * len(TASKS), 3.4), dpi=120)
  for ax, task in zip(np.atleast_1d(axes), TASKS):
    names, means, stds = [], [], []
    for r in a["headline"]["results"]:
      if r["task"] == task and r["metric"] == ks_metric:
        names.append(MODEL_LABELS.get(r["model"], r["model"]))
        means.append(r["mean"])
        stds.append(r["std"])
    for name, tasks in sorted(a.get("baselines", {}).items()):
      if task in tasks and ks_metric in tasks[task]:
        names.append(_baseline_label(name))
        means.append(tasks[task][ks_metric])
        stds.append(0.0)
    colors = [
      "#4C72B0" if n.startswith("Gen") and "+" not in n else "#DD8452" if "+" in n else "#999999"
      for n in names
    ]
    ax.bar(range(len(names)), means, yerr=stds, capsize=3, color=colors)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_title(f"{TASK_LABELS[task]}: {_label(ks_metric)}")
    ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path


def _sweep_x(plan: Plan, a: dict):
  """A point's x in the sweep table, plot and slope test: the realised
  `reproduce.sweep_statistic` from its dataset statistics when set (the knob is only a proxy
  for it), else its sweep value (a number, or a name for a categorical sweep)."""
  stat = plan.config.reproduce.sweep_statistic
  if not stat:
    return a["sweep_value"]
  found = a.get("manifest_stats", {}).get(stat)
  if not isinstance(found, (int, float)):
    raise KeyError(
      f"reproduce.sweep_statistic={stat!r} is not among the dataset statistics "
      f"of point {a['point']}: {sorted(a.get('manifest_stats', {}))}"
    )
  return float(found)


def _sweep_plot(plan: Plan, analyses: list[dict], path: str) -> tuple[str, list[dict]]:
  """Joint model's relative headline-metric gain against the swept (realised) statistic, per task."""
  from gr_jax.analysis.report import line_plot

  stat = plan.config.reproduce.sweep_statistic
  rows, series, errors = [], {}, {}
  for a in analyses:
    x = _sweep_x(plan, a)
    for task in TASKS:
      gains = seed_gains(a["headline"]["results"], task, task, a["headline_metric"])
      if not gains:
        continue
      rows.append(
        {
          "point": a["point"],
          "x": x,
          "task": task,
          "gain_pct_mean": float(np.mean(gains)),
          "gain_pct_std": float(np.std(gains)),
          "per_seed": gains,
        }
      )
      xs, ys = series.setdefault(f"{TASK_LABELS[task]} gain", ([], []))
      xs.append(x)
      ys.append(float(np.mean(gains)))
      errors.setdefault(f"{TASK_LABELS[task]} gain", []).append(float(np.std(gains)))
  xlabel = stat or plan.config.reproduce.sweep
  metric = _label(analyses[0]["headline_metric"]) if analyses else "Recall"
  line_plot(
    path,
    series,
    xlabel=xlabel,
    ylabel=f"Gen_R+S gain in {metric} (%)",
    title=f"{plan.config.name}: joint-model gain",
    errors=errors,
  )
  return path, rows


# The slope test reads a significant seed-level verdict as a direction along the sweep: a > b
# here means the joint model's gain is larger at the highest x than at the lowest.
_SLOPE_VERDICTS = {
  "joint ahead (significant)": "gain grows (significant)",
  "joint behind (significant)": "gain shrinks (significant)",
  "no significant difference": "no significant change",
}


def _block_gains(a: dict, block: dict, task: str, metric: str) -> dict | None:
  """Seed id -> absolute gain (joint - task-specific, per-seed means of `metric`) of one point's
  (budget, decoder) block, and the task-specific model's mean; None when the block lacks either
  model. The per-seed values are paired by seed order as `seed_gains` pairs them; the seed ids are
  the headline seed test's (config.json seeds, in the runs' order), positions when it has none."""
  by_model = {
    r["model"]: r
    for r in block["headline"]["results"]
    if r["task"] == task and r["metric"] == metric
  }
  if "joint" not in by_model or task not in by_model:
    return None
  joint, specific = by_model["joint"]["per_seed"], by_model[task]["per_seed"]
  if len(joint) != len(specific):
    raise ValueError(
      f"point {a['point']} ({block['budget']}, {block['decode']}), {task}: Gen_R+S has "
      f"{len(joint)} seeds and {MODEL_LABELS[task]} {len(specific)}; the slope test pairs them "
      "by seed order and needs the same seeds"
    )
  seeds = next(
    (
      c["seed_test"].get("seeds")
      for c in block["headline"].get("comparisons", [])
      if (c["task"], c["metric"], c["a"], c["b"]) == (task, metric, "joint", task)
    ),
    None,
  )
  if seeds is None:  # an analysis.json from before the seed ids: the position is the seed
    seeds = list(range(len(joint)))
  if len(seeds) != len(joint) or len(set(map(str, seeds))) != len(seeds):
    raise ValueError(
      f"point {a['point']} ({block['budget']}, {block['decode']}), {task}: Gen_R+S and "
      f"{MODEL_LABELS[task]} do not share their {len(joint)} seeds (paired: {seeds}); the slope "
      "test needs every seed of both models"
    )
  gains = {s: float(j) - float(b) for s, j, b in zip(seeds, joint, specific)}
  return {"gains": gains, "mean_b": float(by_model[task]["mean"])}


def sweep_slope_tests(plan: Plan, analyses: list[dict]) -> list[dict]:
  """The sweep's slope tests, before the family correction: per (budget, decoder) block (the
  first point's blocks, in its order: the first is the sweep table's) and task, the joint model's
  per-seed absolute gain over the task-specific model at the highest x minus at the lowest x
  (`_sweep_x`: the realised sweep statistic when set), tested paired over seeds with
  `stats.seed_level_test(gain_high, gain_low)`: its diff is the mean slope.

  Records: `{"kind": "slope", "unit": "seed", "a": "joint", "b": <task>, "task", "metric",
  "budget", "decode", "point_low", "point_high", "x_low", "x_high", "x_name", "seeds",
  "gain_low", "gain_high", "per_seed" (gain_high - gain_low), "mean_b"}` plus the seed_level_test
  fields ("diff", "sd", "ci95", "p_value", "p_signflip", "mdd80", ...). mean_b is the
  task-specific model's mean at the LOW point: `_annotate` judges a non-significant slope
  underpowered when mdd80 exceeds 16% of it, i.e. when the test cannot detect a change in the gain
  as large as the paper's average gain measured from where the sweep starts.

  [] without a sweep, with fewer than two points, when some x is not a number (a categorical sweep
  without a realised statistic has no order) or when every x is the same. Ties at an end keep the
  plan's order (the first of the lowest, the last of the highest). Raises ValueError when the two
  ends do not hold the same seeds (a slope pairs each seed with itself) or the same metric.
  """
  from gr_jax.analysis import stats

  r = plan.config.reproduce
  if not r.sweep or len(analyses) < 2:
    return []
  xs = [_sweep_x(plan, a) for a in analyses]
  if any(_num(x) is None for x in xs):
    return []
  order = sorted(range(len(analyses)), key=lambda i: float(xs[i]))  # stable: ties keep plan order
  lo, hi = order[0], order[-1]
  if float(xs[lo]) == float(xs[hi]):
    return []
  low, high = analyses[lo], analyses[hi]
  metric = low["headline_metric"]
  if high["headline_metric"] != metric:
    raise ValueError(
      f"sweep slope: point {low['point']} reports {metric} and point {high['point']} "
      f"{high['headline_metric']}; the slope needs one headline metric"
    )
  blocks = {
    end: {(b["budget"], b["decode"]): b for b in a["blocks"]}
    for end, a in (("low", low), ("high", high))
  }
  out = []
  for key in [(b["budget"], b["decode"]) for b in analyses[0]["blocks"]]:
    for task in TASKS:
      ends = {}
      for end, a in (("low", low), ("high", high)):
        if key not in blocks[end]:
          raise ValueError(
            f"sweep slope: point {a['point']} has no ({key[0]}, {key[1]}) block; every point "
            "of a sweep is analysed with the same budgets and decoders"
          )
        ends[end] = _block_gains(a, blocks[end][key], task, metric)
      if ends["low"] is None and ends["high"] is None:
        continue  # the task is not trained in this study (e.g. no Gen_R)
      if ends["low"] is None or ends["high"] is None:
        missing = low if ends["low"] is None else high
        raise ValueError(
          f"sweep slope: point {missing['point']} ({key[0]}, {key[1]}) lacks Gen_R+S or "
          f"{MODEL_LABELS[task]} on {task}, which the other end of the sweep has"
        )
      seeds = list(ends["low"]["gains"])
      if sorted(map(str, seeds)) != sorted(map(str, ends["high"]["gains"])):
        raise ValueError(
          f"sweep slope ({key[0]}, {key[1]}, {task}): the lowest point {low['point']} has seeds "
          f"{seeds} and the highest point {high['point']} seeds {list(ends['high']['gains'])}; "
          "each seed's gain is paired with its own, so both ends need the same seeds"
        )
      gain_low = [ends["low"]["gains"][s] for s in seeds]
      gain_high = [ends["high"]["gains"][s] for s in seeds]
      t = stats.seed_level_test(gain_high, gain_low)
      out.append(
        {
          **t,
          "kind": "slope",
          "unit": "seed",
          "a": "joint",
          "b": task,
          "task": task,
          "metric": metric,
          "budget": key[0],
          "decode": key[1],
          "point_low": low["point"],
          "point_high": high["point"],
          "x_low": xs[lo],
          "x_high": xs[hi],
          "x_name": r.sweep_statistic or r.sweep,
          "seeds": seeds,
          "gain_low": gain_low,
          "gain_high": gain_high,
          "per_seed": [h - g for h, g in zip(gain_high, gain_low)],
          "mean_b": ends["low"]["mean_b"],
        }
      )
  return out


def _slope_verdict(st: dict) -> str:
  """A corrected slope record's verdict as a direction along the sweep (`_SLOPE_VERDICTS`), an
  underpowered one with what it could not detect."""
  return _SLOPE_VERDICTS.get(st.get("verdict"), _verdict(st))


def _slope_md(slopes: list[dict], correction: str, family: int) -> list[str]:
  """The sweep section's slope table (corrected, annotated slope records)."""
  level = next((s["ci_simultaneous_level"] for s in slopes if s.get("ci_simultaneous_level")), None)
  sim = f"simultaneous {100 * level:.2f}% CI" if level else "simultaneous CI"
  md = [
    "Slope (gain at the highest point minus at the lowest, paired over seeds; absolute "
    f"{_label(slopes[0]['metric'])} gain of Gen_R+S over the task-specific model; {correction} "
    f"correction in the study's family of {family} tests; simultaneous: Bonferroni over that "
    "family):",
    "",
    f"| budget | decoder | task | points (x) | mean slope [95% CI, unadjusted] | {sim} | "
    "p seed (adjusted) | p sign-flip (unadjusted) | mdd80 | verdict |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for s in slopes:
    md.append(
      f"| {s['budget']} | {s['decode']} | {s['task']} | {s['point_low']} ({_fmt(s['x_low'])}) → "
      f"{s['point_high']} ({_fmt(s['x_high'])}) | "
      f"{'n/a' if _num(s['diff']) is None else format(s['diff'], '+.4f')} "
      f"[{_fmt(s['ci95'][0])}, {_fmt(s['ci95'][1])}] | "
      f"[{_fmt(s['ci_simultaneous'][0])}, {_fmt(s['ci_simultaneous'][1])}] | "
      f"{_fmt_p(s['p_adjusted'])} | {_fmt_p(s.get('p_signflip'))} | {_fmt(s.get('mdd80'))} | "
      f"{s['slope_verdict']} |"
    )
  return md


# The popularity baseline drawn beside each task's validation curves: the task's own.
_OWN_POPULARITY = {"search": "pop_s", "rec": "pop_r"}


def validation_curves(plan: Plan, point: Point) -> dict | None:
  """What the converged budget's models scored on validation while they trained.

  Per task: each run's `val/<task>/recall@K` (K = the largest of eval.ks) by training step (one
  scale for all models: a task-specific model's epochs are shorter than the joint model's), from its
  metrics.jsonl (the trainer's selection decodes, on the valid split, never test), and the task's
  own popularity baseline (Pop_S / Pop_R) on the same valid split, averaged over the point's
  datasets: whether a model learned more than popularity can be read off here without a test
  result. None when the point has no converged run.
  """
  runs = [r for r in point.runs if r.budget == "converged"]
  if not runs:
    return None
  from gr_jax import workdir as workdir_lib
  from gr_jax.baselines import popularity
  from gr_jax.data import ProcessedDataset

  k = max(int(x) for x in plan.config.eval.ks)
  metric = f"recall@{k}"
  curves = []
  for r in runs:
    # ([] for a run not trained yet; a resumed run's log holds each step once: MetricsLog)
    rows = workdir_lib.read_jsonl(os.path.join(r.run_dir, "metrics.jsonl"))
    for task in TASKS if r.model == "joint" else (r.model,):
      key = f"val/{task}/{metric}"
      pts = [(int(row["step"]), float(row[key])) for row in rows if key in row]
      if pts:
        curves.append(
          {
            "task": task,
            "model": r.model,
            "seed": r.seed,
            "step": [e for e, _ in pts],
            metric: [v for _, v in pts],
          }
        )
  dirs = [d.data_dir for d in point.datasets] or [point.data_dir]
  pops = [
    popularity.popularity_means(
      ProcessedDataset(d), "valid", ks=(k,), baselines=tuple(_OWN_POPULARITY.values())
    )
    for d in dirs
  ]
  baseline = {}
  for task, name in _OWN_POPULARITY.items():
    values = [p[name][task][metric] for p in pops if task in p[name]]
    if values:
      baseline[task] = {"name": name, metric: float(np.mean(values))}
  return {"metric": metric, "curves": curves, "popularity": baseline}


# ------------------------------------------------------------ how each result was selected


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      out = json.load(f)
  except (OSError, ValueError):
    return {}
  return out if isinstance(out, dict) else {}


def run_capped(run_dir: str) -> bool | None:
  """Whether a run with model selection stopped at its step cap before patience ended it, i.e.
  did not converge (the trainer's `capped` on its last validation decode in metrics.jsonl; for a
  run trained before that field, whether it reached train.num_steps). None: no model selection,
  or not known."""
  from gr_jax import workdir as workdir_lib

  train = _read_json(os.path.join(run_dir, "config.json")).get("train") or {}
  if not train.get("select_metric"):
    return None
  recs = workdir_lib.read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
  flags = [r["capped"] for r in recs if isinstance(r.get("capped"), bool)]
  if flags:
    return flags[-1]
  cap = int(train.get("num_steps") or 0)
  if not cap or not recs:
    return None
  return max(int(r.get("step", 0)) for r in recs) >= cap


def selection_label(info: dict, task: str, model: str) -> str:
  """report.json `selected_by` of one evaluation (its metrics.json `info`) for `task`: "final
  step", or "best valid <metric> (<task> | mean of tasks)"."""
  sel = info.get("selected_by") if isinstance(info, dict) else None
  if not isinstance(sel, dict):
    return "final step"
  entry = (sel.get("per_task") or {}).get(task) if "per_task" in sel else sel
  if not isinstance(entry, dict) or not entry.get("metric"):
    return "unknown"
  parts = str(entry["metric"]).split("/")  # val/recall@30, or val/<task>/recall@30
  if len(parts) >= 3:
    which = parts[-2]
  elif len(MODEL_TASKS.get(model, ())) > 1:
    which = "mean of tasks"
  else:
    which = task
  return f"best valid {parts[-1]} ({which})"


def _short_selection(label: str) -> str:
  """The markdown's form of a `selection_label`: "final", "best val (search)"."""
  if label.startswith("best valid "):
    return "best val (" + label.split("(", 1)[1]
  return label.replace("final step", "final")


def _selection(run_dirs: list[str], subdir: str, task: str, model: str, metric: str) -> dict:
  """How the evaluations of one result row were chosen, seed by seed: `selected_by` (one label,
  or the distinct ones joined by "; "), the evaluated checkpoint's step, whether the run was
  `capped`, and the best validation value of the task's own metric (metrics.jsonl)."""
  from gr_jax import workdir as workdir_lib

  infos = [
    _read_json(os.path.join(d, "eval", subdir, "metrics.json")).get("info") or {} for d in run_dirs
  ]
  labels = [selection_label(i, task, model) for i in infos]
  best_val = []
  for d in run_dirs:
    key = f"val/{task}/{metric}"
    vals = [
      float(r[key])
      for r in workdir_lib.read_jsonl(os.path.join(d, "metrics.jsonl"))
      if isinstance(r.get(key), (int, float))
    ]
    best_val.append(max(vals) if vals else None)
  return {
    "selected_by": "; ".join(dict.fromkeys(labels)) if labels else None,
    "selected_steps": [(i.get("steps") or {}).get(task, i.get("step")) for i in infos],
    "capped": [run_capped(d) for d in run_dirs],
    "best_val_task": best_val,
  }


def _mean_rule(run_dirs: list[str], subdir: str, task: str, metric: str) -> dict | None:
  """A converged multi-task run's one-checkpoint result (every task at the best checkpoint by
  the mean of its tasks' validation metric; `stages.mean_rule_subdir`), seed by seed; None when
  an evaluation is missing (runs of a study made before it)."""
  from gr_jax.analysis import stats

  per_seed, steps = [], []
  for d in run_dirs:
    m = _read_json(os.path.join(d, "eval", subdir, "metrics.json"))
    value = (m.get(task) or {}).get(metric)
    if not isinstance(value, (int, float)):
      return None
    per_seed.append(float(value))
    steps.append((m.get("info") or {}).get("step"))
  return {
    "selected_by": f"best valid {metric} (mean of tasks)",
    "per_seed": per_seed,
    "mean": float(np.mean(per_seed)),
    "std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
    "ci95": stats.mean_ci95(per_seed),
    "selected_steps": steps,
  }


def _capped_text(runs: list[tuple[str, int, bool | None]]) -> str | None:
  """ "k of n converged runs hit the step cap (Gen_R seeds 0, 1)" for (model, seed, capped)
  triples of runs with model selection; None when none of them has model selection."""
  known = [(m, s, c) for m, s, c in runs if c is not None]
  if not known:
    return None
  hit: dict[str, list[str]] = {}
  for m, s, c in known:
    if c:
      hit.setdefault(MODEL_LABELS.get(m, m), []).append(str(s))
  which = "; ".join(
    f"{label} seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}"
    for label, seeds in hit.items()
  )
  text = f"{sum(bool(c) for _, _, c in known)} of {len(known)} converged runs hit the step cap"
  return text + (f" ({which})" if which else "")


def _validation_plot(path: str, vc: dict) -> str:
  from gr_jax.analysis.report import pyplot

  plt = pyplot()
  tasks = [t for t in TASKS if any(c["task"] == t for c in vc["curves"])]
  fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.4 * max(1, len(tasks)), 3.4), dpi=120)
  metric = vc["metric"]
  for ax, task in zip(np.atleast_1d(axes), tasks):
    labelled = set()
    for c in (c for c in vc["curves"] if c["task"] == task):
      label = MODEL_LABELS.get(c["model"], c["model"])
      ax.plot(
        c["step"],
        c[metric],
        marker="o",
        markersize=3,
        color="#DD8452" if c["model"] == "joint" else "#4C72B0",
        label=None if label in labelled else label,
      )
      labelled.add(label)
    pop = vc["popularity"].get(task)
    if pop:
      ax.axhline(
        pop[metric],
        color="#555555",
        linestyle="--",
        label=f"{_baseline_label(pop['name'])} (valid)",
      )
    ax.set_xlabel("training step")
    ax.set_ylabel(f"validation {_label(metric)}")
    ax.set_title(TASK_LABELS[task])
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path


def _hypotheses_md(a: dict, hm: str) -> list[str]:
  """The H1 / H2 tables and t-SNE images of one point, as markdown lines."""
  md: list[str] = []
  if a.get("h1"):
    md += [
      "### H1: popularity",
      "",
      "KL between the popularity of predicted items (top-K) and of test targets, and "
      f"{_label(hm)} on head / torso / tail items (by training popularity).",
      "",
      "| task | model | KL(pred ‖ target) | recall head | recall torso | recall tail |",
      "|---|---|---|---|---|---|",
    ]
    for h in a["h1"]:
      kl = h.get("kl_pred_target", h.get("kl", math.nan))
      md.append(
        f"| {h['task']} | {MODEL_LABELS.get(h['model'], h['model'])} | {_fmt(kl)} | "
        f"{_fmt(h.get('recall_head'))} | {_fmt(h.get('recall_torso'))} | "
        f"{_fmt(h.get('recall_tail'))} |"
      )
    md.append("")
  if a.get("h2"):
    md += [
      "### H2: item-pair co-occurrence in the predictions",
      "",
      "Pairs of items that appear together in top-K lists; how the counts change from the "
      "task-specific to the joint model, and the share of that change on pairs related in "
      "the other task (co-occurring in sessions, or relevant to the same queries).",
      "",
      "| task | co-occurrences (task-specific → joint) | pairs added by joint | share on related pairs | related base rate | lift | mean change related / unrelated |",
      "|---|---|---|---|---|---|---|",
    ]
    for h in a["h2"]:
      md.append(
        f"| {h['task']} | {h['cooc_specific']} → {h['cooc_joint']} | "
        f"{h['positive_change']:.0f} | {_fmt(h['share_on_related'], 3)} | "
        f"{_fmt(h['related_base_rate'], 3)} | {_fmt(h['lift'], 2)} | "
        f"{_fmt(h['mean_delta_related'], 2)} / {_fmt(h['mean_delta_unrelated'], 2)} |"
      )
    md += [
      "",
      "A lift above 1 means the joint model's added co-occurrences fall on pairs the other "
      "task relates more often than chance (H2). Related pairs: search task = co-occurring in "
      "rec sessions; rec task = relevant to the same training query.",
      "",
    ]
  for model, path in sorted(a.get("tsne", {}).items()):
    md += [f"![t-SNE {MODEL_LABELS.get(model, model)}]({path})", ""]
  return md


# ------------------------------------------------------------ H1 and H2 over seeds

HYPOTHESIS_VERDICTS = ("supported", "not supported", "inconclusive")
# Fewer seeds than this decide nothing: with 2 the t interval is 12.7 sd wide, and the exact
# sign-flip test cannot go below 2 / 2^n = 0.5.
HYPOTHESIS_MIN_SEEDS = 3
HYPOTHESIS_RULE = (
  "Per task, budget and decoder: the per-seed statistic d (oriented so that d > 0 is the "
  "hypothesis's direction), its mean over the seeds that have both models, its unadjusted 95% "
  "t interval, and its Bonferroni-simultaneous t interval over the study's family of hypothesis "
  f"rows (every row with at least {HYPOTHESIS_MIN_SEEDS} seeds and varying d, all points, both "
  f"hypotheses). Fewer than {HYPOTHESIS_MIN_SEEDS} seeds, or seed values of d that do not vary "
  "(no interval): inconclusive. Otherwise supported when the simultaneous interval lies above 0, "
  "not supported when it lies below 0, inconclusive when it holds 0: a verdict is a directional "
  "claim, so the interval it rests on covers every row the report makes one for. The exact "
  "sign-flip p over the same seeds is reported beside it (never below 2 / 2^n) but does not "
  "enter the verdict."
)
H1_STATISTIC = (
  "H1 (popularity): per seed, P_m = the predicted-item distribution of model m on the task's "
  "test queries (how many top-k lists hold each item, smoothed by eval.kl_eps), and pi_t = a "
  "task's popularity (its training targets, smoothed the same way). "
  "d = KL(P_specific || pi_other) - KL(P_joint || pi_other): how much closer to the OTHER task's "
  "popularity the joint model's predictions are than the task-specific model's (H1: joint training "
  "pulls each item's popularity estimate toward the other task's, so the joint model sits between "
  "the task-specific model and the other task's popularity). Beside it, not in the verdict: "
  "KL(P_joint || pi_own) - KL(P_specific || pi_own), how far the pull moves away from the task's "
  "own popularity."
)
H2_STATISTIC = (
  "H2 (representation): per seed, share_m = the share of model m's predicted co-occurrences "
  "(pairs of items in one top-k list, summed over the task's test lists) that fall on pairs the "
  "OTHER task relates (search predictions: pairs co-occurring in rec training sessions; rec "
  "predictions: pairs relevant to the same training query). d = share_joint - share_specific (H2: "
  "the joint model's item representations carry the other task's relations, so its lists group "
  "the items that task relates more often)."
)
_RELATED = {
  "search": "pairs co-occurring in rec sessions",
  "rec": "pairs relevant to the same search query",
}


def _num(x):
  """A finite number, or None (the report's sections never print NaN as a value)."""
  if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
    return float(x)
  return None


def hypothesis_verdict(
  n: int, sd, ci95, interval: str = "the 95% interval"
) -> tuple[str, str | None]:
  """(verdict, why) of `HYPOTHESIS_RULE` for a statistic over n seeds with spread sd (ddof=1) and
  the interval ci95 the verdict rests on (named `interval` in "why"); "why" says what made it
  inconclusive (None otherwise)."""
  if n < HYPOTHESIS_MIN_SEEDS:
    return (
      "inconclusive",
      f"{n} paired seed{'s' if n != 1 else ''}, fewer than {HYPOTHESIS_MIN_SEEDS}",
    )
  if _num(sd) is None or sd <= 0 or any(_num(x) is None for x in ci95 or (None,)):
    return "inconclusive", "the seed values do not vary: no interval"
  if ci95[0] > 0:
    return "supported", None
  if ci95[1] < 0:
    return "not supported", None
  return "inconclusive", f"{interval} holds 0"


def hypothesis_family(rows: list[dict], alpha: float = 0.05) -> int:
  """Decides the verdicts of a study's hypothesis rows (report.json "h1" + "h2", every point)
  together: each row with numbers gains `ci_simultaneous` (Bonferroni over the m such rows, each
  at level 1 - alpha / m: `stats.simultaneous_ci`), `ci_simultaneous_level` and `family_size`, and
  its verdict is re-read off that interval (`HYPOTHESIS_RULE`). Returns m."""
  from gr_jax.analysis import stats

  family = [
    r
    for r in rows
    if r.get("verdict") is not None
    and r.get("n_seeds", 0) >= HYPOTHESIS_MIN_SEEDS
    and _num(r.get("sd")) is not None
    and r["sd"] > 0
  ]
  m = len(family)
  for row in family:
    ci = [_num(x) for x in stats.simultaneous_ci(row["mean"], row["sd"], row["n_seeds"], m, alpha)]
    row["ci_simultaneous"] = ci
    row["ci_simultaneous_level"] = 1.0 - alpha / m
    row["family_size"] = m
    row["verdict"], row["reason"] = hypothesis_verdict(
      row["n_seeds"], row["sd"], ci, interval="the simultaneous interval"
    )
  return m


def hypothesis_test(a_per_seed, b_per_seed) -> dict:
  """The seed-level numbers of d = a - b (a, b: one value per seed, paired) and their verdict:
  `{"per_seed", "n_seeds", "mean", "sd", "ci95", "ci95_adjusted": False, "p_seed" (paired t-test),
  "p_signflip" (exact sign-flip, two-sided), "p_signflip_min", "verdict", "reason"}`, values None
  where undefined. None values in a or b drop their seed (kept as None in per_seed)."""
  from gr_jax.analysis import stats

  per_seed = [
    x - y if _num(x) is not None and _num(y) is not None else None
    for x, y in zip(a_per_seed, b_per_seed)
  ]
  kept = [i for i, x in enumerate(per_seed) if x is not None]
  t = stats.seed_level_test([a_per_seed[i] for i in kept], [b_per_seed[i] for i in kept])
  ci = [_num(x) for x in t["ci95"]]
  verdict, why = hypothesis_verdict(len(kept), t["sd"], ci)
  return {
    "per_seed": per_seed,
    "n_seeds": len(kept),
    "mean": _num(t["diff"]),
    "sd": _num(t["sd"]),
    "ci95": ci,
    "ci95_adjusted": False,
    "p_seed": _num(t["p_value"]),
    "p_signflip": _num(t["p_signflip"]),
    "p_signflip_min": _num(t["p_signflip_min"]),
    "verdict": verdict,
    "reason": why,
  }


def _null_row(hyp: str, point: str, task: str, reason: str, budget=None, decode=None) -> dict:
  """A hypothesis row that could not be computed: no numbers, no verdict, the reason."""
  return {
    "hypothesis": hyp,
    "point": point,
    "budget": budget,
    "decode": decode,
    "task": task,
    "seeds": [],
    "per_seed": [],
    "n_seeds": 0,
    "mean": None,
    "ci95": None,
    "p_signflip": None,
    "verdict": None,
    "reason": reason,
  }


def _h1_row(recs: list[dict]) -> dict:
  task = recs[0]["task"]
  other = next(t for t in TASKS if t != task)
  vals = {
    role: {key: [r[role][key] for r in recs] for key in ("kl_other", "kl_own", "kl_target")}
    for role in ("joint", "specific")
  }
  # d > 0: the joint model is closer to the other task's popularity (H1's direction).
  test = hypothesis_test(vals["specific"]["kl_other"], vals["joint"]["kl_other"])
  own = hypothesis_test(vals["joint"]["kl_own"], vals["specific"]["kl_own"])
  return {
    "statistic": "KL(P_specific || pi_other) - KL(P_joint || pi_other)",
    "other_task": other,
    "joint": vals["joint"],
    "specific": vals["specific"],
    **test,
    "own_popularity": {
      "statistic": "KL(P_joint || pi_own) - KL(P_specific || pi_own)",
      **{k: own[k] for k in ("per_seed", "n_seeds", "mean", "sd", "ci95", "p_signflip")},
    },
  }


def _h2_row(recs: list[dict]) -> dict:
  keys = ("related_share", "cooccurrences", "related_cooccurrences")
  vals = {
    role: {key: [r[role][key] for r in recs] for key in keys} for role in ("joint", "specific")
  }
  test = hypothesis_test(vals["joint"]["related_share"], vals["specific"]["related_share"])
  return {
    "statistic": "share_joint - share_specific",
    "related": _RELATED[recs[0]["task"]],
    "num_related_pairs": [r.get("num_related_pairs") for r in recs],
    "joint": vals["joint"],
    "specific": vals["specific"],
    **test,
  }


def hypothesis_rows(analysis: dict, analyses_on: bool = True) -> dict[str, list[dict]]:
  """report.json "h1" and "h2" rows of one point: per budget x decoder x task, the seed-level test
  of `H1_STATISTIC` / `H2_STATISTIC` from analysis.json "hypothesis_seeds"
  (`analyses.hypothesis_seeds`) with its `HYPOTHESIS_RULE` verdict.

  A row that cannot be computed has no numbers and verdict None, and says why in "reason": the
  analyses were off, the analysis.json predates the per-seed numbers (analyses_on: the study's
  reproduce.analyses, for the wording), or no seed has both models' run files.
  """
  point = analysis["point"]
  seeds = analysis.get("hypothesis_seeds")
  if not isinstance(seeds, dict):
    reason = (
      "analysis.json has no per-seed H1/H2 numbers (written before they existed): rerun the "
      "analyse stage"
      if analyses_on
      else "reproduce.analyses = False: the H1/H2 analyses were not run"
    )
    seeds = {"reason": reason}
  out: dict[str, list[dict]] = {"h1": [], "h2": []}
  if seeds.get("reason"):
    for hyp in out:
      out[hyp] = [_null_row(hyp, point, t, seeds["reason"]) for t in TASKS]
    return out
  keys = list(
    dict.fromkeys(
      (r["budget"], r["decode"]) for r in seeds["h1"] + seeds["h2"] + seeds.get("skipped", [])
    )
  )
  if not keys:
    why = "no seed has both Gen_R+S and a task-specific run"
    return {hyp: [_null_row(hyp, point, t, why) for t in TASKS] for hyp in out}
  for hyp, make in (("h1", _h1_row), ("h2", _h2_row)):
    for budget, decode in keys:
      for task in TASKS:
        recs = [
          r for r in seeds[hyp] if (r["budget"], r["decode"], r["task"]) == (budget, decode, task)
        ]
        skipped = [
          f"seed {r['seed']}: {r['reason']}"
          for r in seeds.get("skipped", [])
          if (r["budget"], r["decode"], r["task"]) == (budget, decode, task)
        ]
        if not recs:
          why = "; ".join(skipped) or f"no seed has both Gen_R+S and {MODEL_LABELS[task]}"
          out[hyp].append(_null_row(hyp, point, task, why, budget, decode))
          continue
        recs.sort(key=lambda r: (r["seed"], r["data"]))
        row = {
          "hypothesis": hyp,
          "point": point,
          "budget": budget,
          "decode": decode,
          "task": task,
          "seeds": [r["seed"] for r in recs],
          "data": [r["data"] for r in recs],
          "k": seeds.get("k"),
          **make(recs),
        }
        if skipped:
          row["skipped"] = skipped
        out[hyp].append(row)
  return out


def _hypothesis_line(row: dict) -> str:
  """One report.md line of a hypothesis row: the verdict with its numbers."""
  name = "H1 (popularity)" if row["hypothesis"] == "h1" else "H2 (representation)"
  task = row["task"]
  where = f", {TASK_LABELS[task]}" + (
    f" ({row['budget']}, {row['decode']})" if row["budget"] is not None else ""
  )
  if row["verdict"] is None:
    return f"- {name}{where}: not computed: {row['reason']}."
  verdict = row["verdict"] + (f" ({row['reason']})" if row["reason"] else "")
  specific = MODEL_LABELS.get(task, task)

  def mean(values, digits=3):
    vals = [v for v in values if _num(v) is not None]
    return _fmt(float(np.mean(vals)), digits) if vals else "n/a"

  def signed(x, digits=3):
    return "n/a" if x is None else f"{x:+.{digits}f}"

  digits = 3 if row["hypothesis"] == "h1" else 4  # co-occurrence shares can be small
  seeds_text = ", ".join(f"{s}: {signed(v, digits)}" for s, v in zip(row["seeds"], row["per_seed"]))
  sim = row.get("ci_simultaneous")
  level = row.get("ci_simultaneous_level")
  sim_text = (
    f"simultaneous {100 * level:.2f}% CI {_interval(sim)} (over the {row['family_size']} "
    "hypothesis rows); "
    if sim is not None and level is not None
    else ""
  )
  tail = (
    f"{sim_text}95% CI {_interval(row['ci95'])} (t over {row['n_seeds']} seeds, unadjusted); sign-flip "
    f"p = {_fmt_p(row['p_signflip'])} (smallest possible {_fmt_p(row['p_signflip_min'])}); "
    f"per seed {seeds_text}"
  )
  if row["hypothesis"] == "h1":
    other = row["other_task"]
    own = row["own_popularity"]
    return (
      f"- {name}{where}: {verdict}: KL(predictions ‖ {other} popularity) {specific} "
      f"{mean(row['specific']['kl_other'])} → Gen_R+S {mean(row['joint']['kl_other'])}, shift "
      f"toward {other} popularity {signed(row['mean'])} nats, {tail}; KL to {task}'s own "
      f"popularity {mean(row['specific']['kl_own'])} → {mean(row['joint']['kl_own'])} "
      f"({signed(own['mean'])}, 95% CI {_interval(own['ci95'])})."
    )
  related = [n for n in row.get("num_related_pairs") or () if isinstance(n, int)]
  pairs = f" ({_count(float(np.mean(related)))} such pairs in training)" if related else ""
  return (
    f"- {name}{where}: {verdict}: share of predicted co-occurrences on {row['related']}{pairs}, "
    f"{specific} {mean(row['specific']['related_share'], 4)} → Gen_R+S "
    f"{mean(row['joint']['related_share'], 4)}, diff {signed(row['mean'], 4)}, {tail}."
  )


def _hypothesis_md(rows: list[dict]) -> list[str]:
  """The point's H1 / H2 verdict lines (rows of `hypothesis_rows`; one line per row, a reason
  shared by every task of a hypothesis said once)."""
  if not rows:
    return []
  md = [
    "Hypotheses over seeds (each seed's Gen_R+S against the same seed's task-specific model; "
    "supported / not supported when the simultaneous t interval of the mean per-seed statistic "
    "(Bonferroni over the study's hypothesis rows) lies above / below 0, inconclusive when it "
    "holds 0 or with fewer than "
    f'{HYPOTHESIS_MIN_SEEDS} seeds; the statistics: report.json "hypotheses", '
    'docs/study_design.md "Hypotheses and analyses"):',
    "",
  ]
  said = set()
  for row in rows:
    if row["verdict"] is None and row["budget"] is None:
      name = "H1 (popularity)" if row["hypothesis"] == "h1" else "H2 (representation)"
      if (row["hypothesis"], row["reason"]) not in said:
        said.add((row["hypothesis"], row["reason"]))
        md.append(f"- {name}: not computed: {row['reason']}.")
      continue
    md.append(_hypothesis_line(row))
  return md + [""]


def _verdict(seed_test: dict) -> str:
  """The verdict phrase of a corrected seed-level test record (`_annotate` added its "verdict"):
  one of stats.VERDICTS, an underpowered one with what it could not detect."""
  from gr_jax.analysis import stats

  return stats.verdict_text(seed_test)


def _annotate(tests: list[dict]) -> list[dict]:
  """Adds to each corrected test record what the report reads: a seed-level record gets
  `stats.verdict_fields` (verdict from its adjusted p, diff and mdd80 against 16% of the
  task-specific model's mean `mean_b`; Bonferroni-simultaneous interval over the family); a
  query-level record is labelled conditional on the trained models."""
  from gr_jax.analysis import stats

  for t in tests:
    if t["unit"] == "seed":
      t.update(stats.verdict_fields(t, t.get("mean_b")))
    else:
      t.update({"label": stats.QUERY_TEST_LABEL, "conditional_on_models": True})
  return tests


def _comparison_rows(tests: list[dict]) -> list[dict]:
  """report.json "comparisons": one flat record per comparison (point x budget x decoder x task x
  model), the seed-level test's numbers and verdict beside the query-level test's, which is
  labelled conditional on the trained models (`p_query_conditional`)."""
  query = {
    (t["point"], t["budget"], t["decode"], t["task"], t["b"]): t
    for t in tests
    if t["unit"] == "query"
  }
  rows = []
  for t in tests:
    if t["unit"] != "seed":
      continue
    q = query.get((t["point"], t["budget"], t["decode"], t["task"], t["b"]), {})
    rows.append(
      {
        **{k: t[k] for k in ("point", "budget", "decode", "task", "metric", "a", "b")},
        **{k: t.get(k) for k in ("mean_a", "mean_b", "gain_pct", "diff", "n", "seeds")},
        "ci95": t.get("ci95"),
        "ci95_adjusted": False,
        "ci_simultaneous": t.get("ci_simultaneous"),
        "ci_simultaneous_level": t.get("ci_simultaneous_level"),
        "ci95_bootstrap": t.get("ci95_bootstrap"),
        "p_seed": t.get("p_value"),
        "p_seed_adjusted": t.get("p_adjusted"),
        "p_signflip": t.get("p_signflip"),
        "p_signflip_min": t.get("p_signflip_min"),
        "mdd80": t.get("mdd80"),
        "underpowered_below": t.get("underpowered_below"),
        "verdict": t.get("verdict"),
        "p_query_conditional": q.get("p_value"),
        "p_query_conditional_adjusted": q.get("p_adjusted"),
        "num_queries": q.get("n"),
      }
    )
  return rows


def _interval(ci) -> str:
  if not ci or any(x is None or (isinstance(x, float) and math.isnan(x)) for x in ci):
    return "n/a"
  return f"{_fmt(ci[0])} to {_fmt(ci[1])}"


def _intervals(st: dict) -> str:
  """The seed test's intervals in words: unadjusted t, simultaneous, two-stage bootstrap."""
  level = st.get("ci_simultaneous_level")
  level_text = f"{100 * level:.2f}%" if isinstance(level, float) else "simultaneous"
  return (
    f"95% CI {_interval(st.get('ci95'))}, unadjusted; simultaneous {level_text} CI "
    f"{_interval(st.get('ci_simultaneous'))}; two-stage bootstrap 95% CI "
    f"{_interval(st.get('ci95_bootstrap'))}"
  )


def _mdd_text(st: dict, model: str) -> str:
  """mdd80 in words, as a share of the task-specific model's (b's) mean."""
  mdd, ref = st.get("mdd80"), st.get("mean_b")
  if mdd is None:
    return "mdd80 n/a (fewer than 2 seeds or no seed spread)"
  share = f", {100 * mdd / abs(ref):.0f}% of {model}'s mean" if ref else ""
  return f"mdd80 {mdd:.4f}{share} (underpowered above 16%)"


def _flat_tests(analyses: list[dict], key: str) -> list[dict]:
  """The comparisons `block[key]` of every point x budget x decoder, flat: one query-level and one
  seed-level test record each. key "headline": Gen_R+S against the task-specific models (the
  verdict's family); "vs_baseline": against the best baseline of each task (a family of its own:
  "is the joint model competitive?" is a different question)."""
  tests = []
  for a in analyses:
    for block in a["blocks"]:
      comparisons = block["headline"]["comparisons"] if key == "headline" else block.get(key, [])
      for c in comparisons:
        common = {
          "point": a["point"],
          "budget": block["budget"],
          "decode": block["decode"],
          "task": c["task"],
          "metric": c["metric"],
          "a": c["a"],
          "b": c["b"],
          "gain_pct": c["gain_pct"],
          "mean_a": c["mean_a"],
          "mean_b": c["mean_b"],
        }
        # Against a baseline: every baseline's mean on the study's split, and the split that chose
        # the best one with its means there (valid; absent from an analysis.json made before).
        for field in ("baseline_means", "chosen_on", "baseline_means_valid"):
          if field in c:
            common[field] = c[field]
        tests.append(
          {
            **common,
            "unit": "query",
            "method": c["method"],
            "p_value": c["p_value"],
            "diff": c["diff"],
            "ci95": c["ci95"],
            "n": c["num_queries"],
          }
        )
        st = c["seed_test"]
        tests.append(
          {
            **common,
            "unit": "seed",
            "method": st.get("method", "ttest_rel"),
            "p_value": st["p_value"],
            "diff": st["diff"],
            "ci95": st["ci95"],
            "n": st.get("n"),
            "seeds": st.get("seeds"),
            # (None where an analysis.json predates them: the verdict is then inconclusive)
            "sd": st.get("sd"),
            "p_signflip": st.get("p_signflip"),
            "signflip_exact": st.get("signflip_exact"),
            "p_signflip_min": st.get("p_signflip_min"),
            "mdd80": st.get("mdd80"),
            "ci95_bootstrap": st.get("ci95_bootstrap"),
            "bootstrap": st.get("bootstrap"),
          }
        )
  return tests


def _baseline_md(point: str, btests: list[dict], correction: str) -> tuple[list[str], list[str]]:
  """The report's "Gen_R+S against the best baseline" table of one point, and summary lines."""
  seed = {
    (t["budget"], t["decode"], t["task"]): t
    for t in btests
    if t["point"] == point and t["unit"] == "seed"
  }
  query = {
    (t["budget"], t["decode"], t["task"]): t
    for t in btests
    if t["point"] == point and t["unit"] == "query"
  }
  if not seed:
    return [], []
  first = next(iter(seed.values()))
  family = first.get("family_size", 0)
  # An analysis.json made before the choice moved to validation chose on the compared split.
  chosen = (
    "chosen on validation: the baseline with the highest mean on the valid split, compared "
    "here on this split"
    if first.get("chosen_on") == "valid"
    else "the baseline with the highest mean on this split"
  )
  md = [
    f"Gen_R+S against the best baseline of each task ({chosen}; {correction} correction over "
    f"these {family} tests, a family of their own):",
    "",
    "| budget | decoder | task | best baseline | baseline | Gen_R+S | diff [95% CI, unadjusted] "
    "(seed test) | p seed / p query (adjusted; query: conditional on the trained models) | "
    "mdd80 | verdict |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  lines = []
  for key, st in seed.items():
    qt = query[key]
    verdict = _verdict(st)
    md.append(
      f"| {key[0]} | {key[1]} | {key[2]} | {st['b']} | {_fmt(st['mean_b'])} | "
      f"{_fmt(st['mean_a'])} | {st['diff']:+.4f} [{_fmt(st['ci95'][0])}, "
      f"{_fmt(st['ci95'][1])}] | {_fmt_p(st['p_adjusted'])} / "
      f"{_fmt_p(qt['p_adjusted'])} | {_fmt(st.get('mdd80'))} | {verdict} |"
    )
    on_valid = " (chosen on validation)" if st.get("chosen_on") == "valid" else ""
    lines.append(
      f"[{point}] {TASK_LABELS[key[2]]} ({key[0]}, {key[1]}) against the best "
      f"baseline {st['b']}{on_valid}: {verdict}: Gen_R+S {st['mean_a']:.4f} vs "
      f"{st['mean_b']:.4f}, adjusted p = {_fmt_p(st['p_adjusted'])} over seeds."
    )
  return md + [""], lines


def time_spent(plan: Plan) -> dict:
  """Where a study's wall time went, from its stage markers: seconds per stage kind, and the
  evaluate stage's queries/s per decoder (test queries of both tasks, from each run's
  per_query.json). Training's share includes the validation decodes of the `converged` budget.
  Each stage counts with its latest finished run; stages never finished are not counted."""
  from gr_jax.study import runner  # pylint: disable=g-import-not-at-top
  from gr_jax.study import stages as stages_lib  # pylint: disable=g-import-not-at-top

  stages = stages_lib.stages_for(plan)
  markers = {s.id: runner.read_marker(plan.workdir, s.id) for s in stages}  # each file read once
  kinds: dict[str, dict] = {}
  for stage in stages:
    marker = markers[stage.id]
    if marker is None:
      continue
    k = kinds.setdefault(stage.kind, {"stages": 0, "seconds": 0.0})
    k["stages"] += 1
    k["seconds"] += float(marker.get("seconds", 0.0))
  total = sum(k["seconds"] for k in kinds.values())
  for k in kinds.values():
    k["share"] = k["seconds"] / total if total > 0 else float("nan")
  decoders: dict[str, dict] = {}
  split = plan.config.eval.split
  for run in plan.runs:
    for decoder in plan.config.reproduce.get("decoders", ("beam",)):
      marker = markers.get(stages_lib.evaluate_stage_id(run, decoder))
      # A converged multi-task run's stage also decodes its mean-rule checkpoint.
      paths = [
        os.path.join(run.run_dir, "eval", sub(split, decoder), "per_query.json")
        for sub in (stages_lib.eval_subdir, stages_lib.mean_rule_subdir)
      ]
      if marker is None or not os.path.exists(paths[0]):
        continue
      n = 0
      for path in (p for p in paths if os.path.exists(p)):
        with open(path) as f:
          per_query = json.load(f)
        n += sum(len(next(iter(metrics.values()), {})) for metrics in per_query.values())
      d = decoders.setdefault(decoder, {"queries": 0, "seconds": 0.0})
      d["queries"] += n
      d["seconds"] += float(marker.get("seconds", 0.0))
  for d in decoders.values():
    d["queries_per_s"] = d["queries"] / d["seconds"] if d["seconds"] > 0 else float("nan")
  return {"total_seconds": total, "stages": kinds, "evaluate": decoders}


def _time_md(spent: dict) -> list[str]:
  if not spent["stages"]:
    return []
  md = [
    "## Where the time went",
    "",
    f"Stage wall time, {spent['total_seconds'] / 60:.1f} minutes in all (the latest finished "
    "run of each stage; training includes the validation decodes of the converged budget).",
    "",
    "| stage | stages | seconds | share |",
    "|---|---|---|---|",
  ]
  for kind, k in sorted(spent["stages"].items(), key=lambda kv: -kv[1]["seconds"]):
    md.append(f"| {kind} | {k['stages']} | {k['seconds']:.0f} | {100 * k['share']:.1f}% |")
  if spent["evaluate"]:
    md += ["", "Evaluate stage throughput (test queries of both tasks, compile included):", ""]
    for dec, d in sorted(spent["evaluate"].items()):
      md.append(
        f"- {dec}: {d['queries']} queries in {d['seconds']:.0f} s = {d['queries_per_s']:.0f} "
        "queries/s"
      )
  return md + [""]


def coverage(a: dict) -> dict:
  """report.json "coverage" of a point: the manifest's held-out coverage shares
  (`overlap.<task>_<split>_in_<other>_train`, the share of a task's valid/test targets that are
  training targets of `other`; mean over the point's datasets, None without examples), the
  `data.heldout_coverage_rule` that produced them and the held-out examples it dropped."""
  ms = a.get("manifest_stats", {})
  keys = [f"{t}_{s}_in_{o}_train" for t in TASKS for s in ("valid", "test") for o in TASKS]
  return {
    "rule": ms.get("heldout_coverage_rule"),  # None: an analysis.json from before the knob
    "shares": {k: ms.get(f"overlap.{k}") for k in keys},
    "dropped": {
      k.split(".", 1)[1]: v
      for k, v in sorted(ms.items())
      if k.startswith("counts.") and k.endswith("_dropped_not_trained_in_both")
    },
  }


def _count(v) -> str:
  """A count, or a mean of counts over per-seed datasets."""
  if v is None:
    return "n/a"
  return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def _coverage_md(cov: dict) -> list[str]:
  """One line per task: its held-out targets' shares in each task's training targets."""
  sh, dropped = cov["shares"], cov["dropped"]
  md = [
    f"Held-out coverage (data.heldout_coverage_rule = {cov['rule'] or 'unknown'}): the share of "
    "each task's valid / test targets that are training targets of search and of rec (below 1: "
    "a task-specific model is tested on items only the other task trains).",
    "",
  ]
  for task in TASKS:
    parts = [
      f"{split} {_fmt(sh[f'{task}_{split}_in_search_train'])} / "
      f"{_fmt(sh[f'{task}_{split}_in_rec_train'])}"
      for split in ("valid", "test")
    ]
    line = f"- {TASK_LABELS[task]}: in search / rec training targets: {', '.join(parts)}"
    if dropped:
      unit = "pairs" if task == "search" else "targets"
      line += "; dropped by the rule: " + ", ".join(
        f"{split} {_count(dropped.get(f'{task}_{split}_dropped_not_trained_in_both'))} {unit}"
        for split in ("valid", "test")
      )
    md.append(line + ".")
  return md + [""]


def write_report(plan: Plan) -> str:
  from gr_jax.analysis import stats
  from gr_jax.study.stages import eval_subdir, mean_rule_subdir

  analyses = [_load(plan, p) for p in plan.points]
  plots_dir = os.path.join(plan.workdir, "plots")
  r = plan.config.reproduce
  # One family: every test of the study (points x budgets x decoders x tasks x units) and the
  # sweep's slope tests, which carry its claim (H1/H2 predict how the gain changes along the
  # knob): corrected together, then split, so that the per-point tables, "comparisons" and the
  # index never see a slope record.
  family_tests = _annotate(
    stats.adjust_family(
      _flat_tests(analyses, "headline") + sweep_slope_tests(plan, analyses), r.correction
    )
  )
  tests = [t for t in family_tests if t.get("kind") != "slope"]
  sweep_slopes = [t for t in family_tests if t.get("kind") == "slope"]
  for t in sweep_slopes:
    t["slope_verdict"] = _slope_verdict(t)
  family = family_tests[0]["family_size"] if family_tests else 0
  index = {(t["point"], t["budget"], t["decode"], t["task"], t["b"], t["unit"]): t for t in tests}
  baseline_tests = _annotate(
    stats.adjust_family(_flat_tests(analyses, "vs_baseline"), r.correction)
  )
  results, sweep_rows, summary_lines = [], [], []
  curves: dict[str, dict] = {}  # point -> validation_curves
  coverages = {a["point"]: coverage(a) for a in analyses}
  hyp_rows: dict[str, list[dict]] = {"h1": [], "h2": []}  # report.json "h1", "h2"
  # H1/H2 rows of every point first: their verdicts are decided as one family.
  hyp_by_point = {a["point"]: hypothesis_rows(a, bool(r.get("analyses", True))) for a in analyses}
  hypothesis_family([row for f in hyp_by_point.values() for rows in f.values() for row in rows])
  md = [
    f"# gr-jax study: {plan.config.name}",
    "",
    f"Generated {time.strftime('%Y-%m-%d %H:%M')} from `{plan.workdir}`. "
    f"Models: {', '.join(MODEL_LABELS[m] for m in r.models)}; seeds: {list(r.seeds)}"
    + (
      " (one simulated dataset per seed)"
      if r.get("dataset_per_seed", False) and plan.config.data.source == "simulate"
      else ""
    )
    + f"; split: {plan.config.eval.split}; budgets: {', '.join(r.budgets)}; decoders: "
    f"{', '.join(r.decoders)}. Recall@K is Recall (each query's relevant items found in the "
    "top K); with one relevant item per query, as in recommendation, it equals Success@K. "
    "Each comparison of Gen_R+S with a task-specific model has two paired t-tests: over "
    "seeds (the per-seed means, the paper's test across runs) and over queries (units: (seed, "
    f"query) pairs); {r.correction} correction over all {family} tests of the study"
    + (" (the sweep's slope tests included)" if sweep_slopes else "")
    + ". The "
    "verdict follows the seed-level test: significant when its adjusted p < 0.05; otherwise "
    "inconclusive (underpowered) when mdd80, the smallest difference it detects with 80% "
    "power, exceeds 16% of the task-specific model's mean (the paper's average effect), else no "
    "significant difference. The query-level test is conditional on the trained models (every "
    "query of a seed shares one model pair) and is not evidence for the verdict; the two-stage "
    "bootstrap interval (seeds, then queries within them) carries the model variance instead. "
    "The exact sign-flip p over seeds is distribution-free and unadjusted (never below 2/2^n "
    "with n seeds). 95% CIs are unadjusted: a directional claim needs a significant verdict "
    "or the simultaneous interval (Bonferroni over the family), not the unadjusted one.",
    "",
    "Budgets: `epochs` = train.num_epochs over each model's own data (the paper; the joint "
    "model takes more steps); `matched_steps` = every model takes the joint model's steps; "
    "`converged` = each model is decoded on validation "
    f"{r.get('converged_evals_per_epoch', 'n/a')} times per epoch of its own data and trains "
    f"until its validation Recall has not improved for {r.get('patience', 0)} decodes "
    "(Gen_R+S: neither task's), within a step cap of "
    f"{r.get('converged_max_factor', 0)} x train.num_epochs of its own epochs; each task is "
    "evaluated at its own best-validation checkpoint (Gen_R+S: search at its best search step, "
    "rec at its best rec step; its one checkpoint by the mean of both tasks is shown beside it, "
    '"mean rule"). "selected by" says which checkpoint a row evaluates (at which steps); a '
    "run marked (cap) stopped at the step cap, not by patience: capped, not converged. "
    "Decoders: `beam` = the paper's diverse beam search; `topk_exact` = the exact top-K items of "
    "one decoder step.",
    "",
  ]
  for a in analyses:
    md += [f"## {a['point']}", ""]
    if a.get("manifest_stats"):
      stats_text = ", ".join(
        f"{k} = {_fmt(v) if isinstance(v, float) else v}"
        for k, v in sorted(a["manifest_stats"].items())
        if isinstance(v, (int, float, str))
      )
      md += [f"Dataset statistics (mean over datasets): {stats_text}.", ""]
    md += _coverage_md(coverages[a["point"]])
    hm = a["headline_metric"]
    point = next(p for p in plan.points if p.name == a["point"])
    seed_of = {run.run_dir: run.seed for run in point.runs}
    md += [
      "| budget | decoder | task | model | "
      f"{_label(hm)} mean ± std [95% CI] | per seed | steps | selected by (step) | "
      "distinct items/list | best val | diff vs joint [95% CI, unadjusted] (seed test) | "
      "p seed / p query (adjusted; query: conditional on the trained models) |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    capped_runs: dict[str, dict[str, tuple]] = {}  # budget -> run_dir -> (model, seed, capped)
    for block in a["blocks"]:
      for task in TASKS:
        for rec in [x for x in block["headline"]["results"] if x["task"] == task]:
          model = rec["model"]
          train = block["training"].get(model, [])
          steps = [t["steps"] for t in train]
          dirs = list(rec.get("run_dirs") or block["groups"].get(model, []))
          sel = _selection(
            dirs, eval_subdir(plan.config.eval.split, block["decode"]), task, model, hm
          )
          for d, capped in zip(dirs, sel["capped"]):
            capped_runs.setdefault(block["budget"], {})[d] = (model, seed_of.get(d), capped)
          best_val = [t["best_val_recall"] for t in train]
          distinct = block["distinct_items"].get(model, {}).get(task)
          ci = stats.mean_ci95(rec["per_seed"])
          st = index.get((a["point"], block["budget"], block["decode"], task, model, "seed"))
          qt = index.get((a["point"], block["budget"], block["decode"], task, model, "query"))
          results.append(
            {
              "point": a["point"],
              "budget": block["budget"],
              "decode": block["decode"],
              "task": task,
              "model": model,
              "metric": rec["metric"],
              "mean": rec["mean"],
              "std": rec["std"],
              "ci95": ci,
              "per_seed": rec["per_seed"],
              "steps": steps,
              "final_loss": [t["final_loss"] for t in train],
              "best_val": best_val,
              "distinct_items": distinct,
              "num_queries": rec["num_queries"],
              # Which checkpoint each seed's number comes from, and whether its run stopped
              # at the step cap instead of by patience (None: no model selection).
              "selected_by": sel["selected_by"],
              "selected_steps": sel["selected_steps"],
              "capped": sel["capped"],
              "best_val_task": sel["best_val_task"],
            }
          )
          mean_rule = None
          if block["budget"] == "converged" and len(MODEL_TASKS.get(model, ())) > 1:
            mean_rule = _mean_rule(
              dirs, mean_rule_subdir(plan.config.eval.split, block["decode"]), task, hm
            )
            results[-1]["mean_rule"] = mean_rule
          cmp_text = p_text = ""
          if st is not None:
            cmp_text = (
              f"{st['diff']:+.4f} [{_fmt(st['ci95'][0])}, {_fmt(st['ci95'][1])}] "
              f"({st['gain_pct']:+.1f}%)"
            )
            p_text = f"{_fmt_p(st['p_adjusted'])} / {_fmt_p(qt['p_adjusted'])}"
          capped_of = dict(zip(dirs, sel["capped"]))
          steps_text = ", ".join(
            f"{t['steps']} (cap)" if capped_of.get(t.get("run_dir")) else str(t["steps"])
            for t in train
          )
          picked = [x for x in sel["selected_steps"] if x is not None]
          sel_text = _short_selection(sel["selected_by"] or "n/a") + (
            f" ({', '.join(map(str, picked))})" if picked else ""
          )
          shown_val = [v for v in sel["best_val_task"] if v is not None] or [
            v for v in best_val if v is not None
          ]
          md.append(
            f"| {block['budget']} | {block['decode']} | {task} | "
            f"{MODEL_LABELS.get(model, model)} | {_fmt(rec['mean'])} ± {_fmt(rec['std'])} "
            f"[{_fmt(ci[0])}, {_fmt(ci[1])}] | {', '.join(_fmt(v, 3) for v in rec['per_seed'])}"
            f" | {steps_text} | {sel_text} | {_fmt(distinct, 1)} | "
            f"{', '.join(_fmt(v, 3) for v in shown_val) or 'n/a'} | "
            f"{cmp_text} | {p_text} |"
          )
          if mean_rule is not None:
            mr_ci = mean_rule["ci95"]
            md.append(
              f"| {block['budget']} | {block['decode']} | {task} | "
              f"{MODEL_LABELS.get(model, model)}, mean rule | {_fmt(mean_rule['mean'])} ± "
              f"{_fmt(mean_rule['std'])} [{_fmt(mr_ci[0])}, {_fmt(mr_ci[1])}] | "
              f"{', '.join(_fmt(v, 3) for v in mean_rule['per_seed'])} | {steps_text} | "
              f"{_short_selection(mean_rule['selected_by'])} "
              f"({', '.join(str(x) for x in mean_rule['selected_steps'])}) | | "
              f"{', '.join(_fmt(v, 3) for v in best_val if v is not None) or 'n/a'} | | |"
            )
    for name, tasks in sorted(a.get("baselines", {}).items()):
      for task in TASKS:
        if task in tasks and hm in tasks[task]:
          md.append(
            f"| (any) | {name} | {task} | baseline | {_fmt(tasks[task][hm])} | | | | | | | |"
          )
          results.append(
            {
              "point": a["point"],
              "budget": None,
              "decode": None,
              "task": task,
              "model": name,
              "metric": hm,
              "mean": tasks[task][hm],
              "baseline": True,
            }
          )
    md.append("")
    for budget, runs in capped_runs.items():
      text = _capped_text(list(runs.values()))
      if text:
        md += [
          f"Step cap ({budget}): {text}; a capped run's validation Recall was still improving "
          "within the patience window, so its selection is capped, not converged.",
          "",
        ]
    md += [
      "Verdicts (Gen_R+S against the task-specific model, seed-level test, "
      f"{r.correction}-adjusted over the {family} tests):",
      "",
    ]
    for block in a["blocks"]:
      for task in TASKS:
        st = index.get((a["point"], block["budget"], block["decode"], task, task, "seed"))
        qt = index.get((a["point"], block["budget"], block["decode"], task, task, "query"))
        if st is None:
          continue
        gains = seed_gains(block["headline"]["results"], task, task, hm)
        ahead = sum(g > 0 for g in gains)
        line = (
          f"{TASK_LABELS[task]} ({block['budget']}, {block['decode']}): {_verdict(st)}: "
          f"Gen_R+S vs {MODEL_LABELS[task]} on {_label(hm)} {st['mean_a']:.4f} vs "
          f"{st['mean_b']:.4f}, diff {st['diff']:+.4f} ({_intervals(st)}), joint ahead in "
          f"{ahead}/{len(gains)} seeds; adjusted p = {_fmt_p(st['p_adjusted'])} over seeds "
          f"(t-test), sign-flip p = {_fmt_p(st.get('p_signflip'))} (unadjusted, smallest "
          f"possible {_fmt_p(st.get('p_signflip_min'))}); {_mdd_text(st, MODEL_LABELS[task])}; query-level "
          f"adjusted p = {_fmt_p(qt['p_adjusted'])} over {qt['n']} queries (conditional on the "
          "trained models)."
        )
        compared = [
          v
          for d, v in capped_runs.get(block["budget"], {}).items()
          if d in block["groups"].get("joint", []) + block["groups"].get(task, [])
        ]
        capped_text = _capped_text(compared)
        if capped_text:
          line = line[:-1] + f"; {capped_text}."
        md.append(f"- {line}")
        summary_lines.append(f"[{a['point']}] {line}")
    md.append("")
    base_md, base_lines = _baseline_md(a["point"], baseline_tests, r.correction)
    md += base_md
    summary_lines += base_lines
    plot = _bar_plot(os.path.join(plots_dir, f"recall_{a['point']}.png"), a, hm)
    md += [
      f"![{_label(hm)}]({os.path.relpath(plot, plan.workdir)}) (first budget and decoder: "
      f"{a['blocks'][0]['budget']}, {a['blocks'][0]['decode']})",
      "",
    ]
    vc = validation_curves(plan, next(p for p in plan.points if p.name == a["point"]))
    if vc and vc["curves"]:
      curves[a["point"]] = vc
      plot = _validation_plot(os.path.join(plots_dir, f"validation_{a['point']}.png"), vc)
      md += [
        f"![validation]({os.path.relpath(plot, plan.workdir)}) Validation {_label(vc['metric'])} "
        "of the converged budget's runs during training (one line per seed; the selection "
        "decodes, which may use a sample of the valid queries: train.select_max_queries), and "
        "the task's own popularity baseline on the whole valid split (dashed).",
        "",
      ]
    other = [x for x in a["all_metrics"] if x["metric"] != hm]
    if other:
      metrics = sorted(
        {x["metric"] for x in other}, key=lambda m: (m.split("@")[0], int(m.split("@")[1]))
      )
      md += [
        f"All metrics (mean over seeds; {a['blocks'][0]['budget']}, {a['blocks'][0]['decode']}):",
        "",
        "| task | model | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
      ]
      for task in TASKS:
        for model in r.models:
          vals = {
            x["metric"]: x["mean"] for x in other if x["task"] == task and x["model"] == model
          }
          if vals:
            md.append(
              f"| {task} | {MODEL_LABELS[model]} | "
              + " | ".join(_fmt(vals.get(m)) for m in metrics)
              + " |"
            )
      md.append("")
    md += _hypotheses_md(a, hm)
    found = hyp_by_point[a["point"]]
    for hyp in hyp_rows:
      hyp_rows[hyp] += found[hyp]
    md += _hypothesis_md(found["h1"] + found["h2"])
  if plan.config.reproduce.sweep:
    path, sweep_rows = _sweep_plot(plan, analyses, os.path.join(plots_dir, "sweep_gain.png"))
    md += [
      "## Sweep",
      "",
      f"Joint-model gain in {_label(analyses[0]['headline_metric'])} against `{plan.config.reproduce.sweep_statistic or plan.config.reproduce.sweep}`.",
      f"({analyses[0]['blocks'][0]['budget']}, {analyses[0]['blocks'][0]['decode']})",
      "",
      "| point | x | task | gain % (mean ± std over seeds) | diff [95% CI, unadjusted] | p seed "
      "(adjusted) | verdict |",
      "|---|---|---|---|---|---|---|",
    ]
    first = analyses[0]["blocks"][0]
    for row in sweep_rows:
      st = index.get(
        (row["point"], first["budget"], first["decode"], row["task"], row["task"], "seed")
      )
      row.update(
        {
          "diff": st["diff"],
          "ci95": st["ci95"],
          "p_adjusted": st["p_adjusted"],
          "p_signflip": st.get("p_signflip"),
          "mdd80": st.get("mdd80"),
          "verdict": st["verdict"],
        }
        if st
        else {}
      )
      md.append(
        f"| {row['point']} | {_fmt(row['x'])} | {row['task']} | "
        f"{row['gain_pct_mean']:+.1f} ± {row['gain_pct_std']:.1f} | "
        + (
          f"{st['diff']:+.4f} [{_fmt(st['ci95'][0])}, {_fmt(st['ci95'][1])}] | "
          f"{_fmt_p(st['p_adjusted'])} | {_verdict(st)} |"
          if st
          else "| | |"
        )
      )
    md += [
      "",
      "The intervals are unadjusted, and each verdict (adjusted over the study's family) says "
      "whether the joint model differs from the task-specific one at that point: levels, not "
      "the change along the sweep.",
      "",
    ]
    if sweep_slopes:
      md += _slope_md(sweep_slopes, r.correction, family)
      md += [
        "",
        "The sweep's direction (does the joint model's gain grow or shrink along "
        f"`{sweep_slopes[0]['x_name']}`?) is read from this slope test, corrected in the "
        "study's family, not from the levels or the per-point verdicts above.",
        "",
      ]
      for s in sweep_slopes:
        summary_lines.append(
          f"[sweep] {TASK_LABELS[s['task']]} ({s['budget']}, {s['decode']}): slope "
          f"{s['point_low']} -> {s['point_high']}: {s['slope_verdict']}: mean "
          f"{'n/a' if _num(s['diff']) is None else format(s['diff'], '+.4f')}, adjusted p = "
          f"{_fmt_p(s['p_adjusted'])} over seeds, sign-flip p = {_fmt_p(s.get('p_signflip'))}."
        )
    else:
      md += [
        "No slope test: it needs two or more points with distinct numeric x (a categorical "
        "sweep without reproduce.sweep_statistic has no order), so this sweep makes no claim "
        "about a direction.",
        "",
      ]
    md += [f"![sweep]({os.path.relpath(path, plan.workdir)})", ""]
  tuning, tuning_md = tune.report_section(plan.config, plan.workdir)
  md += tuning_md
  spent = time_spent(plan)
  md += _time_md(spent)
  report = {
    "time": spent,
    "name": plan.config.name,
    "workdir": plan.workdir,
    "seeds": list(plan.config.reproduce.seeds),
    "split": plan.config.eval.split,
    "results": results,
    "tests": tests,
    "comparisons": _comparison_rows(tests),
    "verdicts": list(stats.VERDICTS),
    "family_size": family,
    "sweep": sweep_rows,
    # The slope tests (`sweep_slope_tests`), corrected in the family that family_size counts.
    "sweep_slopes": sweep_slopes,
    "validation_curves": curves,
    "coverage": coverages,
    "h1": hyp_rows["h1"],
    "h2": hyp_rows["h2"],
    "hypotheses": {
      "h1": H1_STATISTIC,
      "h2": H2_STATISTIC,
      "verdict_rule": HYPOTHESIS_RULE,
      "verdicts": list(HYPOTHESIS_VERDICTS),
      "min_seeds": HYPOTHESIS_MIN_SEEDS,
    },
    "baseline_tests": baseline_tests,
    "points": analyses,
    "config": json.loads(plan.config.to_json()),
  }
  if tuning is not None:  # grid, rule, every point's validation numbers, chosen values, run_at
    report["tuning"] = tuning
  from gr_jax.evaluation.runs import write_text

  for name, text in (
    ("report.md", "\n".join(md) + "\n"),
    ("report.json", json.dumps(report, indent=1, sort_keys=True, default=str)),
    ("summary.txt", "\n".join(summary_lines) + "\n"),
  ):
    write_text(os.path.join(plan.workdir, name), text)
  return os.path.join(plan.workdir, "report.md")
