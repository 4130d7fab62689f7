"""Significance across seeds and models: paired tests per query, multiple-testing corrections.

How runs are compared (the paper runs paired t-tests over seeds; we test per query):
- Each model has several run directories (one per seed), each with `eval/<split>/metrics.json`
  and `per_query.json` (written by the evaluator or the popularity baselines).
- Mean and std over seeds use each seed's mean metric (std with ddof=1; 0 with one seed).
- The paired test pairs *queries*: a query's value for a model is its mean over that model's seeds;
  only queries present in both models are paired.
- Relative gain = (mean_a - mean_b) / mean_b * 100, a = the baseline model ("joint" by default).
- The correction (Holm or Bonferroni) runs over every comparison of one `compare_models` call.
"""

from __future__ import annotations

import itertools
import math
import os
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as sps

from gr_jax.evaluation import runs as runs_lib

TESTS = ("ttest", "randomization")
CORRECTIONS = ("holm", "bonferroni", "none")


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> dict:
  """Two-sided paired t-test of mean(a - b) = 0 (what scipy.stats.ttest_rel computes)."""
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  n = d.size
  if n < 2:
    return {"statistic": math.nan, "p_value": math.nan, "df": max(n - 1, 0)}
  mean = d.mean()
  sd = d.std(ddof=1)
  if sd == 0.0:
    # No variation: identical samples are not different; a constant shift is as different as it gets.
    return {"statistic": math.nan if mean == 0 else math.copysign(math.inf, mean),
            "p_value": 1.0 if mean == 0 else 0.0, "df": n - 1}
  t = mean / (sd / math.sqrt(n))
  p = 2.0 * sps.t.sf(abs(t), df=n - 1)
  return {"statistic": float(t), "p_value": float(min(p, 1.0)), "df": n - 1}


def randomization_test(a: Sequence[float], b: Sequence[float], *, num_samples: int = 10000,
                       seed: int = 0, exact: bool | None = None) -> dict:
  """Two-sided paired randomisation (sign-flip) test on the mean difference.

  Under H0 each query's difference is equally likely to have either sign. exact=True enumerates
  all 2^n sign patterns (p = share with |mean| >= observed); otherwise Monte Carlo with
  p = (hits + 1) / (num_samples + 1), which never returns 0. exact=None: exact when n <= 16.
  """
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  n = d.size
  if n == 0:
    return {"statistic": math.nan, "p_value": math.nan, "exact": True}
  observed = abs(d.mean())
  # Tolerance so that permutations equal to the observed value up to rounding count as extreme.
  tol = 1e-12 * max(1.0, np.abs(d).max())
  if exact is None:
    exact = n <= 16
  if exact:
    if n > 24:
      raise ValueError(f"exact randomisation test needs 2^{n} permutations; use exact=False")
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))  # [2^n, n]
    means = np.abs(signs @ d) / n  # [2^n]
    p = float(np.mean(means >= observed - tol))
  else:
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = 1000
    for start in range(0, num_samples, chunk):
      m = min(chunk, num_samples - start)
      signs = rng.choice((1.0, -1.0), size=(m, n))  # [m, n]
      hits += int(np.sum(np.abs(signs @ d) / n >= observed - tol))
    p = (hits + 1) / (num_samples + 1)
  return {"statistic": float(d.mean()), "p_value": float(p), "exact": bool(exact)}


def adjust_pvalues(p_values: Sequence[float], method: str = "holm") -> list[float]:
  """Family-wise corrections (equal to statsmodels multipletests). NaN p-values are left out."""
  if method not in CORRECTIONS:
    raise ValueError(f"unknown correction {method!r}; expected one of {CORRECTIONS}")
  p = np.asarray(p_values, np.float64)
  out = np.full_like(p, np.nan)
  ok = ~np.isnan(p)
  q = p[ok]
  m = q.size
  if m == 0:
    return out.tolist()
  if method == "none":
    adj = q
  elif method == "bonferroni":
    adj = np.minimum(q * m, 1.0)
  else:  # Holm step-down: sorted p_(i) * (m - i), running max, capped at 1.
    order = np.argsort(q, kind="stable")
    stepped = q[order] * (m - np.arange(m))
    stepped = np.minimum(np.maximum.accumulate(stepped), 1.0)
    adj = np.empty_like(q)
    adj[order] = stepped
  out[ok] = adj
  return out.tolist()


def _load_model_runs(model: str, run_dirs: Sequence[str], task: str, metric: str, split: str):
  seed_means, per_query = [], []
  for d in run_dirs:
    summary, pq = runs_lib.load_eval(d, split)
    if task not in summary:
      return None  # this model was not trained / evaluated on the task
    if metric not in summary[task]:
      raise KeyError(f"{d}: eval/{split}/metrics.json has no {task}/{metric}; "
                     f"it has {sorted(summary[task])}")
    seed_means.append(float(summary[task][metric]))
    per_query.append(pq.get(task, {}).get(metric))
  return seed_means, per_query


def _mean_per_query(per_query: list) -> dict[str, float]:
  """Query -> mean over seeds (queries present in every seed)."""
  if not per_query or any(p is None for p in per_query):
    return {}
  common = set(per_query[0])
  for p in per_query[1:]:
    common &= set(p)
  return {q: float(np.mean([p[q] for p in per_query])) for q in sorted(common)}


def compare_models(groups: Mapping[str, Sequence[str]], task: str | Sequence[str] = "search",
                   metric: str | Sequence[str] = "recall@30", test: str = "ttest",
                   correction: str = "holm", baseline: str = "joint", split: str = "test",
                   num_samples: int = 10000, seed: int = 0) -> dict:
  """Mean/std over seeds per model, and paired tests of `baseline` against every other model.

  groups: model name -> run directories (one per seed). task/metric: one or several.
  Returns `{"results": [...], "comparisons": [...], "test", "correction", "split"}`; results
  records `{"model", "task", "metric", "mean", "std", "per_seed", "run_dirs", "num_queries"}`,
  comparison records `{"task", "metric", "a", "b", "p_value", "p_adjusted", "method", "gain_pct",
  "mean_a", "mean_b", "num_queries", "statistic", "significant"}` (at 0.05 after correction).
  """
  if test not in TESTS:
    raise ValueError(f"unknown test {test!r}; expected one of {TESTS}")
  if correction not in CORRECTIONS:
    raise ValueError(f"unknown correction {correction!r}; expected one of {CORRECTIONS}")
  tasks = [task] if isinstance(task, str) else list(task)
  metric_list = [metric] if isinstance(metric, str) else list(metric)
  for name, dirs in groups.items():
    if not dirs:
      raise ValueError(f"model {name!r} has no run directory")
  results, comparisons = [], []
  for t in tasks:
    for met in metric_list:
      loaded = {}
      for name, dirs in groups.items():
        r = _load_model_runs(name, dirs, t, met, split)
        if r is None:
          continue
        seed_means, pq = r
        qmeans = _mean_per_query(pq)
        loaded[name] = (seed_means, qmeans)
        results.append({
            "model": name, "task": t, "metric": met,
            "mean": float(np.mean(seed_means)),
            "std": float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else 0.0,
            "per_seed": seed_means, "run_dirs": [os.fspath(d) for d in dirs],
            "num_queries": len(qmeans)})
      if baseline not in loaded:
        continue
      a_seeds, a_q = loaded[baseline]
      for other, (b_seeds, b_q) in loaded.items():
        if other == baseline:
          continue
        common = sorted(set(a_q) & set(b_q))
        va = [a_q[q] for q in common]
        vb = [b_q[q] for q in common]
        if test == "ttest":
          res = paired_ttest(va, vb)
        else:
          res = randomization_test(va, vb, num_samples=num_samples, seed=seed)
        mean_a, mean_b = float(np.mean(a_seeds)), float(np.mean(b_seeds))
        comparisons.append({
            "task": t, "metric": met, "a": baseline, "b": other,
            "p_value": res["p_value"], "statistic": res["statistic"], "method": test,
            "gain_pct": (mean_a - mean_b) / mean_b * 100.0 if mean_b != 0 else math.nan,
            "mean_a": mean_a, "mean_b": mean_b, "num_queries": len(common)})
  adjusted = adjust_pvalues([c["p_value"] for c in comparisons], correction)
  for c, p in zip(comparisons, adjusted):
    c["p_adjusted"] = p
    c["correction"] = correction
    c["significant"] = bool(p < 0.05) if not math.isnan(p) else False
  return {"results": results, "comparisons": comparisons, "test": test,
          "correction": correction, "split": split, "baseline": baseline}


def _fmt(x: float, digits: int = 4) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "n/a"
  return f"{x:.{digits}f}"


def _metric_label(metric: str) -> str:
  from gr_jax.analysis import report
  return report.metric_label(metric)


def to_markdown(result: dict) -> str:
  """Two markdown tables: mean ± std over seeds, then the paired comparisons."""
  from gr_jax.analysis import report
  rows = [[r["model"], r["task"], _metric_label(r["metric"]),
           f"{_fmt(r['mean'])} ± {_fmt(r['std'])}", str(len(r["per_seed"])), str(r["num_queries"])]
          for r in result["results"]]
  out = [report.markdown_table(["model", "task", "metric", "mean ± std", "seeds", "queries"], rows)]
  if result["comparisons"]:
    rows = [[c["task"], _metric_label(c["metric"]), f"{c['a']} vs {c['b']}", _fmt(c["mean_a"]),
             _fmt(c["mean_b"]), f"{c['gain_pct']:+.1f}%" if not math.isnan(c["gain_pct"]) else "n/a",
             f"{c['p_value']:.3g}", f"{c['p_adjusted']:.3g}", "yes" if c["significant"] else "no"]
            for c in result["comparisons"]]
    out.append(report.markdown_table(
        ["task", "metric", "comparison", "mean a", "mean b", "gain", "p",
         f"p ({result['correction']})", "significant"], rows))
    out.append(f"Paired {result['comparisons'][0]['method']} per query (values averaged over seeds); "
               f"{result['correction']} correction over {len(result['comparisons'])} comparisons. "
               "Recall@K equals Success@K when each query has one relevant item.")
  return "\n\n".join(out) + "\n"
