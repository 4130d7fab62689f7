"""report.md, report.json, summary.txt and the plots of a study, from each point's analysis.json."""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from gr_jax.data import TASKS
from gr_jax.study.plan import MODEL_LABELS, Plan, Point

TASK_LABELS = {"search": "search", "rec": "recommendation"}


def _load(plan: Plan, point: Point) -> dict:
  path = os.path.join(plan.workdir, "analysis", point.name, "analysis.json")
  with open(path) as f:
    return json.load(f)


def _fmt(x, digits=4) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "n/a"
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
        names.append(name.replace("pop_", "Pop_").replace("Pop_s", "Pop_S").replace("Pop_r", "Pop_R"))
        means.append(tasks[task][ks_metric])
        stds.append(0.0)
    colors = ["#4C72B0" if n.startswith("Gen") and "+" not in n else
              "#DD8452" if "+" in n else "#999999" for n in names]
    ax.bar(range(len(names)), means, yerr=stds, capsize=3, color=colors)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_title(f"{TASK_LABELS[task]}: {_label(ks_metric)}")
    ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path


def _sweep_plot(plan: Plan, analyses: list[dict], path: str) -> tuple[str, list[dict]]:
  """Joint model's relative headline-metric gain against the swept (realised) statistic, per task."""
  from gr_jax.analysis.report import line_plot
  stat = plan.config.reproduce.sweep_statistic
  rows, series, errors = [], {}, {}
  for a in analyses:
    x = a["sweep_value"]
    if stat:
      found = a.get("manifest_stats", {}).get(stat)
      if not isinstance(found, (int, float)):
        raise KeyError(f"reproduce.sweep_statistic={stat!r} is not among the dataset statistics "
                       f"of point {a['point']}: {sorted(a.get('manifest_stats', {}))}")
      x = float(found)
    for task in TASKS:
      gains = seed_gains(a["headline"]["results"], task, task, a["headline_metric"])
      if not gains:
        continue
      rows.append({"point": a["point"], "x": x, "task": task, "gain_pct_mean": float(np.mean(gains)),
                   "gain_pct_std": float(np.std(gains)), "per_seed": gains})
      xs, ys = series.setdefault(f"{TASK_LABELS[task]} gain", ([], []))
      xs.append(x)
      ys.append(float(np.mean(gains)))
      errors.setdefault(f"{TASK_LABELS[task]} gain", []).append(float(np.std(gains)))
  xlabel = stat or plan.config.reproduce.sweep
  metric = _label(analyses[0]["headline_metric"]) if analyses else "Recall"
  line_plot(path, series, xlabel=xlabel, ylabel=f"Gen_R+S gain in {metric} (%)",
            title=f"{plan.config.name}: joint-model gain", errors=errors)
  return path, rows


def write_report(plan: Plan) -> str:
  analyses = [_load(plan, p) for p in plan.points]
  plots_dir = os.path.join(plan.workdir, "plots")
  results, tests, sweep_rows = [], [], []
  md = [f"# gr-jax study: {plan.config.name}", "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M')} from `{plan.workdir}`. "
        f"Models: {', '.join(MODEL_LABELS[m] for m in plan.config.reproduce.models)}; "
        f"seeds: {list(plan.config.reproduce.seeds)}; split: {plan.config.eval.split}. "
        "Recall@K here is Recall (each query's relevant items found in the top K); with one relevant "
        "item per query, as in recommendation, it equals Success@K. Tests are paired over queries "
        f"({plan.config.reproduce.test}, {plan.config.reproduce.correction}-corrected), "
        "joint model against each task-specific one.", ""]
  summary_lines = []
  for a in analyses:
    r, t = _headline_rows(a)
    results += r
    tests += t
    md += [f"## {a['point']}", ""]
    if a.get("manifest_stats"):
      stats_text = ", ".join(f"{k} = {_fmt(v) if isinstance(v, float) else v}"
                             for k, v in sorted(a["manifest_stats"].items())
                             if isinstance(v, (int, float, str)))
      md += [f"Dataset statistics: {stats_text}.", ""]
    hm = a["headline_metric"]
    md += [f"| task | model | {_label(hm)} mean ± std | per seed | gain of Gen_R+S | p (adjusted) |",
           "|---|---|---|---|---|---|"]
    for task in TASKS:
      for rec in [x for x in a["headline"]["results"] if x["task"] == task]:
        model = rec["model"]
        cmp = next((c for c in a["headline"]["comparisons"]
                    if c["task"] == task and c["b"] == model), None)
        gain = f"{cmp['gain_pct']:+.1f}%" if cmp else ""
        p = f"{_fmt_p(cmp['p_value'])} ({_fmt_p(cmp['p_adjusted'])})" if cmp else ""
        per_seed = ", ".join(_fmt(v, 3) for v in rec["per_seed"])
        md.append(f"| {task} | {MODEL_LABELS.get(model, model)} | {_fmt(rec['mean'])} ± "
                  f"{_fmt(rec['std'])} | {per_seed} | {gain} | {p} |")
      for name, tasks in sorted(a.get("baselines", {}).items()):
        if task in tasks:
          md.append(f"| {task} | {name} (baseline) | {_fmt(tasks[task].get(hm))} | | | |")
    md.append("")
    # Effect size across seeds, in words.
    for task in TASKS:
      gains = seed_gains(a["headline"]["results"], task, task, hm)
      cmp = next((c for c in a["headline"]["comparisons"]
                  if c["task"] == task and c["b"] == task), None)
      if gains and cmp:
        ahead = sum(g > 0 for g in gains)
        line = (f"{TASK_LABELS[task]}: Gen_R+S vs {MODEL_LABELS[task]} on {_label(hm)}: "
                f"{cmp['gain_pct']:+.1f}% (mean over seeds), per-seed gains "
                f"{', '.join(f'{g:+.1f}%' for g in gains)}; joint ahead in {ahead}/{len(gains)} "
                f"seeds; paired {cmp['method']} p = {_fmt_p(cmp['p_value'])}, "
                f"adjusted p = {_fmt_p(cmp['p_adjusted'])} over {cmp['num_queries']} queries.")
        md += [f"- {line}"]
        summary_lines.append(f"[{a['point']}] {line}")
    md.append("")
    plot = _bar_plot(os.path.join(plots_dir, f"recall_{a['point']}.png"), a, hm)
    md += [f"![{_label(hm)}]({os.path.relpath(plot, plan.workdir)})", ""]
    other = [x for x in a["all_metrics"] if x["metric"] != hm]
    if other:
      metrics = sorted({x["metric"] for x in other}, key=lambda m: (m.split("@")[0], int(m.split("@")[1])))
      md += ["All metrics (mean over seeds):", "",
             "| task | model | " + " | ".join(metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
      for task in TASKS:
        for model in plan.config.reproduce.models:
          vals = {x["metric"]: x["mean"] for x in other if x["task"] == task and x["model"] == model}
          if vals:
            md.append(f"| {task} | {MODEL_LABELS[model]} | " +
                      " | ".join(_fmt(vals.get(m)) for m in metrics) + " |")
      md.append("")
    if a.get("h1"):
      md += ["### H1: popularity", "",
             "KL between the popularity of predicted items (top-K) and of test targets, and "
             f"{_label(hm)} on head / torso / tail items (by training popularity).", "",
             "| task | model | KL(pred ‖ target) | recall head | recall torso | recall tail |",
             "|---|---|---|---|---|---|"]
      for h in a["h1"]:
        kl = h.get("kl_pred_target", h.get("kl", math.nan))
        md.append(f"| {h['task']} | {MODEL_LABELS.get(h['model'], h['model'])} | {_fmt(kl)} | "
                  f"{_fmt(h.get('recall_head'))} | {_fmt(h.get('recall_torso'))} | "
                  f"{_fmt(h.get('recall_tail'))} |")
      md.append("")
    if a.get("h2"):
      md += ["### H2: item-pair co-occurrence in the predictions", "",
             "Pairs of items that appear together in top-K lists; how the counts change from the "
             "task-specific to the joint model, and the share of that change on pairs related in "
             "the other task (co-occurring in sessions, or relevant to the same queries).", "",
             "| task | co-occurrences (task-specific → joint) | pairs added by joint | share on related pairs | related base rate | lift | mean change related / unrelated |",
             "|---|---|---|---|---|---|---|"]
      for h in a["h2"]:
        md.append(f"| {h['task']} | {h['cooc_specific']} → {h['cooc_joint']} | "
                  f"{h['positive_change']:.0f} | {_fmt(h['share_on_related'], 3)} | "
                  f"{_fmt(h['related_base_rate'], 3)} | {_fmt(h['lift'], 2)} | "
                  f"{_fmt(h['mean_delta_related'], 2)} / {_fmt(h['mean_delta_unrelated'], 2)} |")
      md += ["", "A lift above 1 means the joint model's added co-occurrences fall on pairs the other "
             "task relates more often than chance (H2). Related pairs: search task = co-occurring in "
             "rec sessions; rec task = relevant to the same training query.", ""]
    for model, path in sorted(a.get("tsne", {}).items()):
      md += [f"![t-SNE {MODEL_LABELS.get(model, model)}]({path})", ""]
  if plan.config.reproduce.sweep:
    path, sweep_rows = _sweep_plot(plan, analyses, os.path.join(plots_dir, "sweep_gain.png"))
    md += ["## Sweep", "",
           f"Joint-model gain in {_label(analyses[0]['headline_metric'])} against `{plan.config.reproduce.sweep_statistic or plan.config.reproduce.sweep}`.",
           "", "| point | x | task | gain % (mean ± std over seeds) |", "|---|---|---|---|"]
    for row in sweep_rows:
      md.append(f"| {row['point']} | {_fmt(row['x'])} | {row['task']} | "
                f"{row['gain_pct_mean']:+.1f} ± {row['gain_pct_std']:.1f} |")
    md += ["", f"![sweep]({os.path.relpath(path, plan.workdir)})", ""]
  report = {"name": plan.config.name, "workdir": plan.workdir,
            "seeds": list(plan.config.reproduce.seeds), "split": plan.config.eval.split,
            "results": results, "tests": tests, "sweep": sweep_rows,
            "points": analyses, "config": json.loads(plan.config.to_json())}
  from gr_jax.evaluation.runs import write_text
  for name, text in (("report.md", "\n".join(md) + "\n"),
                     ("report.json", json.dumps(report, indent=1, sort_keys=True, default=str)),
                     ("summary.txt", "\n".join(summary_lines) + "\n")):
    write_text(os.path.join(plan.workdir, name), text)
  return os.path.join(plan.workdir, "report.md")
