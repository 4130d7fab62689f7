"""Significance across seeds and models: paired tests per query and per seed, corrections, power.

How runs are compared:
- Each model has several run directories (one per seed), each with `eval/<split>/metrics.json`,
  `per_query.json` and `{task}.qrels` (written by the evaluator or the popularity baselines).
  All three are required; a missing one is an error naming its path.
- Runs are comparable only when they were evaluated on the same data: every run's
  `{task}.qrels` must be identical (query ids and relevant items), and when two metrics.json
  `info` sections both carry `dataset_sha256` (else both `dataset`), the values must match.
  They must also have been evaluated the same way: metrics.json `info.decode_method`, `split`,
  `ks`, `decode.num_return_sequences` (compared where both record them) and `exclude_seen`
  (missing = false) must match. Otherwise `IncomparableRunsError` names both run directories and
  the field that differs. One evaluation listed twice for a model, or two runs of a model with the
  same config.json seed, is a ValueError (it would count one seed twice).
- Mean and std over seeds use each seed's mean metric (std with ddof=1; 0 with one seed).
- Seed-level test ("unit": "seed", the paper's paired t-test across runs): per-seed means paired
  by the `seed` in each run's config.json (by position in the list when a run has none). The
  verdict rests on it. Beside it: the exact sign-flip test over the same seed differences
  (`p_signflip`, distribution-free, never below 2 / 2^n), the two-stage bootstrap interval of the
  mean difference (`ci95_bootstrap`: seeds, then queries within them, so it includes the trained
  models' variance), and the minimum detectable difference at 80% power (`mdd80`).
- Query-level test ("unit": "query"): a query's value for a model is its mean over that
  model's seeds; queries are paired by query id, and both models must hold the same queries. It is
  conditional on the trained models (every query of a seed shares one model pair), labelled so,
  and not evidence for the verdict.
- Relative gain = (mean_a - mean_b) / mean_b * 100, a = the baseline model ("joint" by default);
  "diff" = mean(a - b), absolute, with an unadjusted t-based 95% confidence interval "ci95", and
  Bonferroni-simultaneous intervals over the correction's family ("ci_simultaneous").
- The correction (Holm or Bonferroni) runs over every comparison of one `compare_models` call,
  separately for the query-level and the seed-level p-values; `adjust_family` re-runs it over a
  larger family (e.g. every test of a study).
- Verdicts (VERDICTS): "joint ahead (significant)" / "joint behind (significant)" when the adjusted
  seed-level p < 0.05; otherwise "inconclusive (underpowered)" when mdd80 > 16% of the
  task-specific model's mean (or no seed-level test was possible), else "no significant
  difference".
"""

from __future__ import annotations

import copy
import functools
import math
import os
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as sps

from gr_jax.evaluation import runs as runs_lib

TESTS = ("ttest", "randomization")
CORRECTIONS = ("holm", "bonferroni", "none")


class IncomparableRunsError(ValueError):
  """Runs evaluated on different data (the message names both run dirs and what differs)."""


def _t_interval(d: np.ndarray) -> tuple[float, float, list[float]]:
  """(mean, sd, 95% t interval) of paired differences `d`.

  n = 0: all NaN. n = 1: sd and interval NaN (no spread to estimate). sd = 0: the interval
  degenerates to [mean, mean].
  """
  n = d.size
  if n == 0:
    return math.nan, math.nan, [math.nan, math.nan]
  mean = float(d.mean())
  if n < 2:
    return mean, math.nan, [math.nan, math.nan]
  sd = float(d.std(ddof=1))
  half = float(sps.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
  return mean, sd, [mean - half, mean + half]


def mean_ci95(values: Sequence[float]) -> list[float]:
  """t-based 95% interval of the mean of `values` (NaN with fewer than two values)."""
  return _t_interval(np.asarray(values, float))[2]


def _differences(a: Sequence[float], b: Sequence[float], what: str) -> np.ndarray:
  a = np.asarray(a, np.float64).ravel()
  b = np.asarray(b, np.float64).ravel()
  if a.shape != b.shape:
    raise ValueError(f"{what}: paired samples differ in length ({a.size} vs {b.size})")
  return a - b


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> dict:
  """Two-sided paired t-test of mean(a - b) = 0 (what scipy.stats.ttest_rel computes).

  Returns `{"unit": "query", "method": "ttest_rel", "n", "df", "diff", "ci95", "ci_method": "t",
  "statistic", "p_value"}`. n < 2: statistic and p NaN. No variation in a - b: identical samples
  get p = 1, a constant shift p = 0 (statistic +-inf), and ci95 = [diff, diff].
  """
  d = _differences(a, b, "paired_ttest")
  n = d.size
  diff, sd, ci = _t_interval(d)
  out = {
    "unit": "query",
    "method": "ttest_rel",
    "n": int(n),
    "df": max(n - 1, 0),
    "diff": diff,
    "ci95": ci,
    "ci_method": "t",
  }
  if n < 2:
    return {**out, "statistic": math.nan, "p_value": math.nan}
  if sd == 0.0:
    # No variation: identical samples are not different; a constant shift is as different as it
    # gets.
    return {
      **out,
      "statistic": math.nan if diff == 0 else math.copysign(math.inf, diff),
      "p_value": 1.0 if diff == 0 else 0.0,
    }
  t = diff / (sd / math.sqrt(n))
  p = 2.0 * sps.t.sf(abs(t), df=n - 1)
  return {**out, "statistic": float(t), "p_value": float(min(p, 1.0))}


def seed_level_test(
  a_per_seed: Sequence[float], b_per_seed: Sequence[float], *, seed: int = 0
) -> dict:
  """Paired t-test over seeds of per-seed mean metric values (the paper's test across runs).

  a_per_seed[i] and b_per_seed[i] are the two models' means for the same seed (a = the joint
  model, b = the task-specific one). Returns `{"unit": "seed", "method": "ttest_rel", "n", "df",
  "diff": mean(a - b), "sd" (of a - b, ddof=1), "ci95": [low, high] (diff -+ t.ppf(0.975, n-1) *
  sd / sqrt(n), unadjusted), "ci_method": "t", "statistic", "p_value"}`, equal to
  scipy.stats.ttest_rel where that is finite, plus
  - "p_signflip", "signflip_exact", "p_signflip_min": `signflip_test` of the same differences
    (exact over all 2^n sign patterns for n <= 20, two-sided, unadjusted; p_signflip_min is the
    smallest p the test can give with n seeds, 2 / 2^n);
  - "mdd80": `min_detectable_difference(sd, n)`, the smallest true mean difference this test
    detects with 80% power at two-sided alpha 0.05 (None for n < 2 or an undefined sd).
  Degenerate cases never raise:
  - n = 0: diff, statistic, p and ci95 NaN; n = 1: statistic, p and ci95 NaN (diff is a - b).
  - a - b the same for every seed (sd = 0): statistic and p NaN, ci95 = [diff, diff]. scipy
    reports t = +-inf, p = 0 for a constant non-zero shift; a handful of seeds moving by exactly
    the same amount says nothing about the seed variance, so no p-value is claimed.
  Lists of different lengths are a ValueError (the pairing is the caller's job). seed: the Monte
  Carlo sign-flip test's generator (n > 20 only).
  """
  d = _differences(a_per_seed, b_per_seed, "seed_level_test")
  n = d.size
  diff, sd, ci = _t_interval(d)
  flip = signflip_test(d, np.zeros_like(d), seed=seed)
  out = {
    "unit": "seed",
    "method": "ttest_rel",
    "n": int(n),
    "df": max(n - 1, 0),
    "diff": diff,
    "sd": sd,
    "ci95": ci,
    "ci_method": "t",
    "statistic": math.nan,
    "p_value": math.nan,
    "p_signflip": flip["p_value"],
    "signflip_exact": flip["exact"],
    "p_signflip_min": flip["p_min"],
    "mdd80": min_detectable_difference(sd, n),
  }
  if n < 2 or not sd > 0.0:  # `not >` also catches a NaN sd from NaN inputs
    return out
  t = diff / (sd / math.sqrt(n))
  out["statistic"] = float(t)
  out["p_value"] = float(min(2.0 * sps.t.sf(abs(t), df=n - 1), 1.0))
  return out


def signflip_test(
  a_per_seed: Sequence[float],
  b_per_seed: Sequence[float],
  *,
  max_exact: int = 20,
  num_samples: int = 100000,
  seed: int = 0,
) -> dict:
  """Two-sided exact sign-flip (randomisation) test of mean(a - b) = 0 over paired seeds.

  Under H0 each seed's difference is equally likely to have either sign: p = the share of the
  2^n sign patterns whose |mean| is at least the observed one (`randomization_test` with
  exact=True), enumerated when n <= max_exact, else Monte Carlo with num_samples patterns.
  Returns `{"n", "diff", "p_value", "exact", "p_min"}`; p_min = 2 / 2^n is the smallest p any
  outcome can reach with n seeds (0.25 with 3, 0.0625 with 5), NaN for n = 0 (p NaN too).
  """
  d = _differences(a_per_seed, b_per_seed, "signflip_test")
  n = d.size
  if n == 0 or not np.all(np.isfinite(d)):
    return {"n": int(n), "diff": math.nan, "p_value": math.nan, "exact": True, "p_min": math.nan}
  exact = n <= max_exact
  res = randomization_test(d, np.zeros_like(d), exact=exact, num_samples=num_samples, seed=seed)
  return {
    "n": int(n),
    "diff": res["diff"],
    "p_value": res["p_value"],
    "exact": res["exact"],
    "p_min": min(1.0, 2.0 / 2.0**n),
  }


def min_detectable_difference(
  sd: float | None, n: int | None, alpha: float = 0.05, power: float = 0.8
) -> float | None:
  """Smallest true mean difference the two-sided paired t-test over n seeds detects with `power`.

  Exact noncentral-t solution (what statsmodels' `TTestPower.solve_power` computes): the effect
  size delta (in units of sd) with P(|T| > t_{1-alpha/2, n-1}) = power, T ~ nct(n - 1,
  delta * sqrt(n)), both tails counted; returns delta * sd. It is a little above the usual
  approximation (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n). sd is the standard
  deviation of the per-seed differences (ddof=1). None for n < 2 or a NaN / missing / negative
  sd; 0.0 for sd = 0.
  """
  if n is None or n < 2 or sd is None or not math.isfinite(sd) or sd < 0:
    return None
  if sd == 0:
    return 0.0
  return _standardized_mdd(int(n), float(alpha), float(power)) * float(sd)


@functools.lru_cache(maxsize=None)
def _standardized_mdd(n: int, alpha: float, power: float) -> float:
  """The effect size (in sd units) of `min_detectable_difference`; depends on n, alpha and power
  only, so it is solved once per process."""
  from scipy.integrate import quad
  from scipy.optimize import brentq

  df = n - 1
  crit = float(sps.t.ppf(1.0 - alpha / 2.0, df))

  def shortfall(delta: float) -> float:
    # P(|T| > crit), T = (Z + nc) / (X / sqrt(df)), X ~ chi(df), integrated over X: scipy's nct
    # returns NaN for df = 1 and large nc.
    nc = delta * math.sqrt(n)

    def tails(x: float) -> float:
      c = crit * x / math.sqrt(df)
      return float(sps.norm.cdf(nc - c) + sps.norm.cdf(-nc - c)) * float(sps.chi.pdf(x, df))

    return float(quad(tails, 0.0, math.inf, epsabs=1e-13, epsrel=1e-11, limit=200)[0]) - power

  high = 1.0
  while shortfall(high) < 0:
    high *= 2.0
  return float(brentq(shortfall, 0.0, high, xtol=1e-12, rtol=1e-12))


def two_stage_bootstrap_ci(
  per_seed_diffs: Sequence[Sequence[float]],
  *,
  shared_queries: bool = False,
  num_resamples: int = 2000,
  seed: int = 0,
  level: float = 0.95,
) -> list[float] | None:
  """Percentile interval of the mean paired difference, resampling seeds and then queries.

  per_seed_diffs[s] holds the paired per-query differences (a - b) of seed s; the statistic is
  the mean over seeds of each seed's mean difference (the seed-level test's `diff`). Each of the
  num_resamples replicates draws n seeds with replacement and then, for each drawn seed, its
  queries with replacement, so the interval carries both the seed-to-seed (trained model)
  variance and the query sampling variance.
  - shared_queries=False (one dataset per seed): queries are drawn independently within each
    drawn seed (a seed drawn twice gets two independent query draws).
  - shared_queries=True (one dataset shared by every seed; per_seed_diffs[s][q] is query q for
    every s): one query draw per replicate is applied to all of its seeds, so a query's effect
    common to all seeds is resampled once, as it occurs once in the data.
  Resampling at both stages counts the within-seed query noise about twice (conservative when it
  dominates); with few seeds the first stage sees little of the seed variance and the interval is
  too narrow (with 3 seeds there are 10 distinct seed draws). Deterministic for a given seed.
  Returns [low, high], or None with fewer than two seeds, an empty seed, a non-finite value or
  num_resamples = 0 (not wanted).
  """
  ds = [np.asarray(x, np.float64).ravel() for x in per_seed_diffs]
  n = len(ds)
  if num_resamples < 1 or n < 2 or any(x.size == 0 or not np.all(np.isfinite(x)) for x in ds):
    return None
  lens = np.array([x.size for x in ds])
  if shared_queries and len(set(lens.tolist())) != 1:
    raise ValueError(f"shared_queries: every seed must hold the same queries, got sizes {lens}")
  width = int(lens.max())
  table = np.zeros((n, width))
  for i, x in enumerate(ds):
    table[i, : x.size] = x
  rng = np.random.default_rng(seed)
  out = np.empty(num_resamples)
  chunk = max(1, min(num_resamples, 4_000_000 // max(width, 1)))
  for start in range(0, num_resamples, chunk):
    b = min(chunk, num_resamples - start)
    seeds = rng.integers(0, n, size=(b, n))  # [b, n] drawn seeds
    if shared_queries:
      weights = np.zeros((b, n))
      np.add.at(weights, (np.arange(b)[:, None], seeds), 1.0 / n)
      seed_mean = weights @ table  # [b, queries]: each query's mean over the drawn seeds
      queries = rng.integers(0, width, size=(b, width))
      out[start : start + b] = np.take_along_axis(seed_mean, queries, axis=1).mean(axis=1)
      continue
    acc = np.zeros(b)
    cols = np.arange(width)[None, :]
    for j in range(n):
      s = seeds[:, j]
      size = lens[s][:, None]  # [b, 1]: the drawn seed's number of queries
      queries = (rng.random((b, width)) * size).astype(np.int64)  # < size
      vals = table[s[:, None], queries]
      acc += np.where(cols < size, vals, 0.0).sum(axis=1) / size[:, 0]
    out[start : start + b] = acc / n
  tail = (1.0 - level) / 2.0
  low, high = np.quantile(out, [tail, 1.0 - tail])
  return [float(low), float(high)]


def simultaneous_ci(
  diff: float, sd: float | None, n: int | None, family_size: int, alpha: float = 0.05
) -> list[float]:
  """Bonferroni-simultaneous t interval of a seed-level mean difference in a family of m tests:
  diff -+ t_{1 - alpha / (2m), n-1} * sd / sqrt(n), each at level 1 - alpha / m, so all m cover
  together with probability >= 1 - alpha. One that excludes 0 implies a Holm-adjusted p < alpha
  (Holm rejects at least what Bonferroni rejects), so a directional claim read off it is covered
  by the correction. [NaN, NaN] for n < 2 or an undefined sd."""
  m = max(int(family_size or 1), 1)
  if n is None or n < 2 or sd is None or not math.isfinite(sd) or not math.isfinite(diff):
    return [math.nan, math.nan]
  half = float(sps.t.ppf(1.0 - alpha / (2.0 * m), n - 1)) * sd / math.sqrt(n)
  return [diff - half, diff + half]


VERDICTS = (
  "joint ahead (significant)",
  "joint behind (significant)",
  "no significant difference",
  "inconclusive (underpowered)",
)
# A non-significant comparison is "inconclusive (underpowered)" when the seed-level test could not
# detect (80% power) a difference this share of the task-specific model's score: the paper's
# average effect, +16% Recall@30.
UNDERPOWERED_SHARE = 0.16
QUERY_TEST_LABEL = "conditional on the trained models"


def _finite(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def verdict(
  p_adjusted: float | None,
  diff: float | None,
  mdd80: float | None,
  reference_mean: float | None,
  alpha: float = 0.05,
  share: float = UNDERPOWERED_SHARE,
) -> str:
  """One of VERDICTS for a comparison of the joint model (a) with a task-specific model (b).

  - adjusted seed-level p < alpha: "joint ahead (significant)" if diff > 0, else "joint behind
    (significant)";
  - otherwise "inconclusive (underpowered)" when the test had no power estimate (no p: fewer than
    two seeds or seed differences that do not vary; or no mdd80 / reference mean) or when mdd80 >
    share * |reference_mean| (reference_mean: the task-specific model's mean score);
  - otherwise "no significant difference".
  """
  if _finite(p_adjusted) and p_adjusted < alpha and _finite(diff) and diff != 0:
    return VERDICTS[0] if diff > 0 else VERDICTS[1]
  if not _finite(p_adjusted) or not _finite(mdd80) or not _finite(reference_mean):
    return VERDICTS[3]
  if mdd80 > share * abs(reference_mean):
    return VERDICTS[3]
  return VERDICTS[2]


def verdict_fields(seed_test: Mapping, reference_mean: float | None, alpha: float = 0.05) -> dict:
  """What a corrected seed-level test record adds for the report: "verdict" (`verdict` from its
  p_adjusted, diff and mdd80), "underpowered_below" (share * |reference_mean|, the mdd80 above
  which a non-significant result is inconclusive), and "ci_simultaneous" (`simultaneous_ci` over
  its family_size) with "ci_simultaneous_level" (1 - alpha / m, each interval's level)."""
  m = max(int(seed_test.get("family_size") or 1), 1)
  return {
    "verdict": verdict(
      seed_test.get("p_adjusted"),
      seed_test.get("diff"),
      seed_test.get("mdd80"),
      reference_mean,
      alpha,
    ),
    "underpowered_below": UNDERPOWERED_SHARE * abs(reference_mean)
    if _finite(reference_mean)
    else None,
    "ci_simultaneous": simultaneous_ci(
      seed_test.get("diff", math.nan), seed_test.get("sd"), seed_test.get("n"), m, alpha
    ),
    "ci_simultaneous_level": 1.0 - alpha / m,
  }


def verdict_text(seed_test: Mapping) -> str:
  """The verdict as the markdown prints it: an underpowered one says what it could not detect,
  "inconclusive (underpowered: could not detect less than X)" with X = mdd80."""
  v = seed_test.get("verdict") or VERDICTS[3]
  if v != VERDICTS[3]:
    return v
  mdd, n = seed_test.get("mdd80"), seed_test.get("n") or 0
  if _finite(seed_test.get("p_adjusted")) and _finite(mdd):
    return f"inconclusive (underpowered: could not detect less than {mdd:.4f})"
  if n < 2:
    return (
      f"inconclusive (underpowered: {n} paired seed{'s' if n != 1 else ''}, no seed-level test)"
    )
  return "inconclusive (underpowered: the seed differences do not vary, no seed-level test)"


def randomization_test(
  a: Sequence[float],
  b: Sequence[float],
  *,
  num_samples: int = 10000,
  seed: int = 0,
  exact: bool | None = None,
) -> dict:
  """Two-sided paired randomisation (sign-flip) test on the mean difference.

  Under H0 each query's difference is equally likely to have either sign. exact=True enumerates
  all 2^n sign patterns (p = share with |mean| >= observed); otherwise Monte Carlo with
  p = (hits + 1) / (num_samples + 1), which never returns 0. exact=None: exact when n <= 16.
  Returns `{"unit": "query", "method": "randomization", "n", "diff", "ci95", "ci_method": "t",
  "statistic" (= diff), "p_value", "exact"}`; ci95 is the t-based interval of the mean
  difference (as for the t-test), not derived from the permutation distribution.
  """
  d = _differences(a, b, "randomization_test")
  n = d.size
  diff, _, ci = _t_interval(d)
  out = {
    "unit": "query",
    "method": "randomization",
    "n": int(n),
    "diff": diff,
    "ci95": ci,
    "ci_method": "t",
  }
  if n == 0:
    return {**out, "statistic": math.nan, "p_value": math.nan, "exact": True}
  observed = abs(d.mean())
  # Tolerance so that permutations equal to the observed value up to rounding count as extreme.
  tol = 1e-12 * max(1.0, np.abs(d).max())
  if exact is None:
    exact = n <= 16
  if exact:
    if n > 24:
      raise ValueError(f"exact randomisation test needs 2^{n} permutations; use exact=False")
    p = _exact_signflip_share(d, observed - tol)
  else:
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = 1000
    for start in range(0, num_samples, chunk):
      m = min(chunk, num_samples - start)
      signs = rng.choice((1.0, -1.0), size=(m, n))  # [m, n]
      hits += int(np.sum(np.abs(signs @ d) / n >= observed - tol))
    p = (hits + 1) / (num_samples + 1)
  return {**out, "statistic": float(d.mean()), "p_value": float(p), "exact": bool(exact)}


def _exact_signflip_share(d: np.ndarray, threshold: float) -> float:
  """Share of the 2^n sign patterns s with |mean(s * d)| >= threshold (every pattern enumerated,
  in chunks of 2^16 so that n = 20 needs no 2^20 x 20 array at once)."""
  n = d.size
  total = 1 << n
  bits = np.arange(n, dtype=np.int64)
  chunk = 1 << min(n, 16)
  hits = 0
  for start in range(0, total, chunk):
    idx = np.arange(start, min(start + chunk, total), dtype=np.int64)[:, None]
    signs = 1.0 - 2.0 * ((idx >> bits) & 1)  # [chunk, n]: bit i of the pattern flips d[i]
    hits += int(np.sum(np.abs(signs @ d) / n >= threshold))
  return hits / total


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


def adjust_family(
  tests: Sequence[Mapping], method: str = "holm", alpha: float = 0.05
) -> list[dict]:
  """Corrects the p-values of a family of tests together.

  tests: dicts that each have "p_value" (e.g. `compare_models` comparisons or their "seed_test").
  Returns deep copies with "p_adjusted", "family_size" (the number of tests with a non-NaN p,
  the m of the correction), "correction" (the method) and "significant" (p_adjusted < alpha).
  A NaN (or None) p stays NaN, is not counted and is never significant. method: "holm",
  "bonferroni" or "none" (p_adjusted = p).
  """
  if method not in CORRECTIONS:
    raise ValueError(f"unknown correction {method!r}; expected one of {CORRECTIONS}")
  ps = []
  for i, t in enumerate(tests):
    if "p_value" not in t:
      raise ValueError(f"tests[{i}] has no 'p_value'; it has {sorted(t)}")
    p = t["p_value"]
    ps.append(math.nan if p is None else float(p))
  adjusted = adjust_pvalues(ps, method)
  size = int(sum(not math.isnan(p) for p in ps))
  out = []
  for t, p in zip(tests, adjusted):
    c = copy.deepcopy(dict(t))
    c.update(
      {
        "p_adjusted": p,
        "family_size": size,
        "correction": method,
        "significant": bool(p < alpha) if not math.isnan(p) else False,
      }
    )
    out.append(c)
  return out


class _EvalFiles:
  """Reads (once) the eval files of run directories; a missing file is an error naming its path."""

  def __init__(self, split: str):
    self.split = split
    self._cache: dict = {}

  def _path(self, run_dir: str, name: str) -> str:
    return os.path.join(runs_lib.resolve_eval_dir(run_dir, self.split), name)

  def _read(self, run_dir: str, name: str, reader, hint: str):
    key = (run_dir, name)
    if key not in self._cache:
      path = self._path(run_dir, name)
      if not os.path.isfile(path):
        raise FileNotFoundError(
          f"{run_dir}: no {os.path.join('eval', self.split, name)} ({path}); {hint}"
        )
      self._cache[key] = reader(path)
    return self._cache[key]

  def _evaluate_hint(self, run_dir: str) -> str:
    return (
      f"run `python -m gr_jax.evaluate --workdir {run_dir} --split {self.split}` "
      "(again) to write the complete eval directory"
    )

  def summary(self, run_dir: str) -> dict:
    out = self._read(run_dir, "metrics.json", runs_lib.read_json, self._evaluate_hint(run_dir))
    if not isinstance(out, dict):
      raise ValueError(
        f"{self._path(run_dir, 'metrics.json')}: expected a JSON object of "
        f"task -> metric -> value, got {type(out).__name__}"
      )
    return out

  def per_query(self, run_dir: str, task: str, metric: str) -> dict[str, float]:
    pq = self._read(
      run_dir,
      "per_query.json",
      runs_lib.read_json,
      "the per-query values are needed to pair queries; " + self._evaluate_hint(run_dir),
    )
    values = pq.get(task, {}).get(metric) if isinstance(pq, dict) else None
    if not isinstance(values, dict):
      raise ValueError(
        f"{self._path(run_dir, 'per_query.json')}: no {task}/{metric} "
        "(expected task -> metric -> {query id: value}); it does not match "
        "metrics.json, " + self._evaluate_hint(run_dir)
      )
    return values

  def qrels(self, run_dir: str, task: str) -> dict[str, dict[str, int]]:
    return self._read(
      run_dir,
      f"{task}.qrels",
      runs_lib.read_qrels,
      "the qrels identify the evaluated queries; " + self._evaluate_hint(run_dir),
    )


def _few(ids: Sequence[str], k: int = 3) -> str:
  shown = ", ".join(map(str, ids[:k]))
  return shown + (", ..." if len(ids) > k else "") if ids else "none"


def _id_set_difference(a, b) -> str | None:
  """How two id collections differ, in words (None when equal)."""
  only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
  if not only_a and not only_b:
    return None
  return (
    f"{len(only_a)} query ids only in the first ({_few(only_a)}), "
    f"{len(only_b)} only in the second ({_few(only_b)})"
  )


def _check_same_qrels(files: _EvalFiles, ref: str, other: str, task: str) -> None:
  qa, qb = files.qrels(ref, task), files.qrels(other, task)
  problems = []
  ids = _id_set_difference(qa, qb)
  if ids:
    problems.append(ids)
  changed = sorted(q for q in set(qa) & set(qb) if qa[q] != qb[q])
  if changed:
    problems.append(f"different relevant items for {len(changed)} shared queries ({_few(changed)})")
  if problems:
    raise IncomparableRunsError(
      f"{ref} and {other} were evaluated on different data: "
      f"eval/{files.split}/{task}.qrels differ: {'; '.join(problems)}. Runs are compared only "
      "on identical evaluation queries (same dataset and split)"
    )


_DATASET_KEYS = ("dataset_sha256", "dataset")


def _check_same_dataset(files: _EvalFiles, ref: str, other: str) -> None:
  """Compares the first identity field both metrics.json `info` sections carry (sha first)."""
  ia, ib = files.summary(ref).get("info"), files.summary(other).get("info")
  if not isinstance(ia, dict) or not isinstance(ib, dict):
    return
  for key in _DATASET_KEYS:
    if key in ia and key in ib:
      if ia[key] != ib[key]:
        raise IncomparableRunsError(
          f"{ref} and {other} were evaluated on different datasets: eval/{files.split}/"
          f"metrics.json info.{key} is {ia[key]!r} vs {ib[key]!r}"
        )
      return


# Evaluation settings two paired runs must share: metrics.json `info` fields (label, how to read it,
# value assumed when a run does not record it; None = compared only when both record it).
_PROTOCOL = (
  (
    "decoder (info.decode_method)",
    lambda i: i.get("decode_method", _get(i, "decode", "method")),
    None,
  ),
  ("split (info.split)", lambda i: i.get("split"), None),
  ("cut-offs (info.ks)", lambda i: _sorted_ks(i.get("ks")), None),
  (
    "ranked list depth (info.decode.num_return_sequences)",
    lambda i: _get(i, "decode", "num_return_sequences"),
    None,
  ),
  # Before the option existed no evaluation excluded seen items.
  ("exclude_seen (info.exclude_seen)", lambda i: i.get("exclude_seen"), False),
)


def _get(d, *keys):
  for k in keys:
    if not isinstance(d, dict) or k not in d:
      return None
    d = d[k]
  return d


def _sorted_ks(ks):
  if not isinstance(ks, (list, tuple)):
    return None
  try:
    return sorted(int(k) for k in ks)
  except (TypeError, ValueError):
    return list(ks)


def _check_same_protocol(files: _EvalFiles, ref: str, other: str) -> None:
  """Refuses to pair evaluations made under different settings (decoder, split, cut-offs, list
  depth, exclude_seen): the first field whose metrics.json `info` values differ, naming both runs.
  A field only one run records is compared only where _PROTOCOL gives a default (a baseline
  records no decoder and is paired with any)."""
  ia, ib = files.summary(ref).get("info"), files.summary(other).get("info")
  ia = ia if isinstance(ia, dict) else {}
  ib = ib if isinstance(ib, dict) else {}
  for label, read, default in _PROTOCOL:
    va, vb = read(ia), read(ib)
    if default is not None:
      va = default if va is None else va
      vb = default if vb is None else vb
    if va is None or vb is None or va == vb:
      continue
    raise IncomparableRunsError(
      f"{ref} and {other} were evaluated differently: eval/{files.split}/metrics.json "
      f"{label} is {va!r} vs {vb!r}; paired tests need the same evaluation protocol "
      "(re-evaluate one of them with the other's settings)"
    )


def _same_path(path: str) -> str:
  """A directory's identity for duplicate checks (local: resolved; remote: as written)."""
  path = os.fspath(path)
  if "://" in path:
    return path.rstrip("/")
  return os.path.realpath(path)


def _check_no_repeats(files: _EvalFiles, groups: Mapping[str, Sequence[str]], repeated) -> None:
  """Refuses one evaluation listed twice in a model's runs (`A,A`, or `A` and `A/eval/test`) and
  two runs of a model with the same config.json seed: either would count one seed twice. Models in
  `repeated` may list one run several times on purpose (a baseline run once, paired with every
  seed of the others); they must list nothing else."""
  for name, dirs in groups.items():
    dirs = [os.fspath(d) for d in dirs]
    evals = [_same_path(runs_lib.resolve_eval_dir(d, files.split)) for d in dirs]
    if name in repeated:
      if len(set(evals)) > 1:
        raise ValueError(f"model {name!r}: a repeated single run must be one directory, got {dirs}")
      continue
    first: dict = {}
    for d, e in zip(dirs, evals):
      if e in first:
        raise ValueError(
          f"model {name!r}: {first[e]} and {d} are the same evaluation ({e}) listed twice; "
          "each seed's run must be listed once (a repeated run would count as another seed)"
        )
      first[e] = d
    by_seed: dict = {}
    for d in dirs:
      seed = _run_seed(d)
      if seed is None:
        continue
      if seed in by_seed:
        raise ValueError(
          f"model {name!r}: {by_seed[seed]} and {d} both ran seed {seed} (config.json); "
          "duplicate seeds would count one seed twice"
        )
      by_seed[seed] = d


def _load_model_runs(
  files: _EvalFiles, model: str, run_dirs: Sequence[str], task: str, metric: str
):
  """(per-seed means, per-seed {query: value}) of one model, or None without the task."""
  has = [task in files.summary(d) for d in run_dirs]
  if not any(has):
    return None  # this model was not trained / evaluated on the task
  if not all(has):
    missing = [d for d, h in zip(run_dirs, has) if not h]
    present = run_dirs[has.index(True)]
    raise ValueError(
      f"model {model!r}: {missing[0]}/eval/{files.split}/metrics.json has no task "
      f"{task!r} but {present} has it; every seed of a model must be evaluated on "
      "the same tasks"
    )
  seed_means, per_query = [], []
  for d in run_dirs:
    summary = files.summary(d)
    if metric not in summary[task]:
      raise KeyError(
        f"{d}: eval/{files.split}/metrics.json has no {task}/{metric}; "
        f"it has {sorted(summary[task])}"
      )
    seed_means.append(float(summary[task][metric]))
    per_query.append(files.per_query(d, task, metric))
  return seed_means, per_query


def _mean_per_query(per_query: list) -> dict[str, float]:
  """Query -> mean over seeds (every seed holds the same queries; checked by the caller)."""
  return {q: float(np.mean([p[q] for p in per_query])) for q in sorted(per_query[0])}


def _run_seed(run_dir: str):
  """The `seed` of a run's config.json, or None (no file, unreadable, or no integer seed)."""
  path = os.path.join(run_dir, "config.json")
  try:
    seed = runs_lib.read_json(path).get("seed")
  except (OSError, ValueError, AttributeError):
    return None
  return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _seed_pairs(a_dirs: Sequence[str], b_dirs: Sequence[str]) -> tuple[str, list, list, list]:
  """(pairing, keys, index into a, index into b): seeds both models ran, in a's order.

  Pairs by config.json seed when every run of both models has one and no seed repeats within a
  model; otherwise by position in the run lists (pairing "position", keys 0..).
  """
  sa, sb = [_run_seed(d) for d in a_dirs], [_run_seed(d) for d in b_dirs]
  if None not in sa and None not in sb and len(set(sa)) == len(sa) and len(set(sb)) == len(sb):
    pairing, ka, kb = "seed", sa, sb
  else:
    pairing, ka, kb = "position", list(range(len(a_dirs))), list(range(len(b_dirs)))
  keys = [k for k in ka if k in kb]
  return pairing, keys, [ka.index(k) for k in keys], [kb.index(k) for k in keys]


def _bootstrap_fields(diffs, shared_queries: bool, resamples: int, seed: int) -> dict:
  """The seed test's two-stage bootstrap interval and how it was drawn (see
  `two_stage_bootstrap_ci`)."""
  return {
    "ci95_bootstrap": two_stage_bootstrap_ci(
      diffs, shared_queries=shared_queries, num_resamples=resamples, seed=seed
    ),
    "bootstrap": {
      "resamples": int(resamples),
      "seed": int(seed),
      "queries": "shared by all seeds" if shared_queries else "one set per seed",
      "interval": "percentile",
    },
  }


def compare_models(
  groups: Mapping[str, Sequence[str]],
  task: str | Sequence[str] = "search",
  metric: str | Sequence[str] = "recall@30",
  test: str = "ttest",
  correction: str = "holm",
  baseline: str = "joint",
  split: str = "test",
  num_samples: int = 10000,
  seed: int = 0,
  repeated: Sequence[str] = (),
  bootstrap_resamples: int = 2000,
) -> dict:
  """Mean/std over seeds per model, and paired tests of `baseline` against every other model.

  groups: model name -> run directories (one per seed). task/metric: one or several.
  Returns `{"results": [...], "comparisons": [...], "test", "correction", "split", "baseline"}`;
  results records `{"model", "task", "metric", "mean", "std", "per_seed", "run_dirs",
  "num_queries"}`, comparison records `{"task", "metric", "a", "b", "p_value", "p_adjusted",
  "method", "gain_pct", "mean_a", "mean_b", "num_queries", "statistic", "significant",
  "correction", "family_size", "unit": "query", "diff", "ci95", "ci_method", "label",
  "seed_test", "verdict"}`.
  The top-level p/statistic/diff/ci95 are the query-level test's, labelled (`label`) "conditional
  on the trained models": it treats queries as independent although all of a seed's queries share
  one trained model pair, so it says nothing about retraining; "significant" is its p_adjusted <
  0.05. "seed_test" is `seed_level_test` of the per-seed means (with "sd", "p_signflip",
  "signflip_exact", "p_signflip_min", "mdd80") plus "pairing" ("seed" or "position"), "seeds" (the
  paired keys), "ci95_bootstrap" (`two_stage_bootstrap_ci` of the per-(seed, query) differences,
  queries shared by all seeds, bootstrap_resamples replicates, generator `seed`) with "bootstrap"
  (how it was drawn), its own "p_adjusted"/"family_size"/"significant" (corrected over the seed
  tests of this call) and `verdict_fields` ("verdict", "underpowered_below", "ci_simultaneous",
  "ci_simultaneous_level"); the comparison's "verdict" is the seed test's.

  repeated: models whose single run is deliberately listed once per seed of the others (a
  baseline run once); every other model's runs must be distinct evaluations with distinct
  config.json seeds.

  Raises FileNotFoundError naming the path of a missing metrics.json, per_query.json or
  {task}.qrels, IncomparableRunsError (a ValueError) naming two run dirs whose qrels, dataset
  identity, per-query query ids or evaluation protocol (decoder, split, cut-offs, list depth,
  exclude_seen; see `_check_same_protocol`) differ, and ValueError for a run listed twice or two
  runs of one model with the same seed.
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
  files = _EvalFiles(split)
  _check_no_repeats(files, groups, set(repeated))
  all_dirs = [os.fspath(d) for dirs in groups.values() for d in dirs]
  for i, d in enumerate(all_dirs):  # every pair: a run without an identity field skips no one
    for other in all_dirs[i + 1 :]:
      _check_same_dataset(files, d, other)
      _check_same_protocol(files, d, other)
  results, comparisons = [], []
  for t in tasks:
    checked_qrels = False
    for met in metric_list:
      loaded, ref = {}, None  # ref: (run dir, its query ids) every other run must match
      for name, dirs in groups.items():
        dirs = [os.fspath(d) for d in dirs]
        r = _load_model_runs(files, name, dirs, t, met)
        if r is None:
          continue
        seed_means, pq = r
        for d, values in zip(dirs, pq):
          if ref is None:
            ref = (d, values)
            # Every run matches the reference's qrels and query ids, so checking its per-query
            # ids against its own qrels covers all runs (a per_query.json from another step).
            extra = sorted(set(values) - set(files.qrels(d, t)))
            if extra:
              raise IncomparableRunsError(
                f"{d}: eval/{split}/per_query.json {t}/{met} holds {len(extra)} queries not in "
                f"{t}.qrels ({_few(extra)}); the files come from different evaluations, "
                "re-run the evaluation"
              )
            continue
          if not checked_qrels:
            _check_same_qrels(files, ref[0], d, t)
          ids = _id_set_difference(ref[1], values)
          if ids:
            raise IncomparableRunsError(
              f"{ref[0]} and {d}: eval/{split}/per_query.json {t}/{met} hold different "
              f"queries: {ids}. Queries are paired by id, so both runs must hold the same "
              "ones (a torn or stale per_query.json; re-run the evaluation)"
            )
        qmeans = _mean_per_query(pq)
        loaded[name] = (dirs, seed_means, qmeans, pq)
        results.append(_result(name, t, met, seed_means, dirs, len(qmeans)))
      checked_qrels = checked_qrels or ref is not None  # qrels are per task, not per metric
      if baseline not in loaded:
        continue
      a_dirs, a_seeds, a_q, a_pq = loaded[baseline]
      for other, (b_dirs, b_seeds, b_q, b_pq) in loaded.items():
        if other == baseline:
          continue
        qids = sorted(a_q)  # == sorted(b_q): every run matched the reference's query ids
        va = [a_q[q] for q in qids]
        vb = [b_q[q] for q in qids]
        if test == "ttest":
          res = paired_ttest(va, vb)
        else:
          res = randomization_test(va, vb, num_samples=num_samples, seed=seed)
        pairing, keys, ia, ib = _seed_pairs(a_dirs, b_dirs)
        seed_test = seed_level_test([a_seeds[i] for i in ia], [b_seeds[i] for i in ib], seed=seed)
        seed_test.update({"pairing": pairing, "seeds": keys})
        # One dataset: seed i's per-query differences, every seed on the same queries.
        diffs = [[a_pq[i][q] - b_pq[j][q] for q in qids] for i, j in zip(ia, ib)]
        seed_test.update(_bootstrap_fields(diffs, True, bootstrap_resamples, seed))
        comparisons.append(
          _comparison(
            t,
            met,
            baseline,
            other,
            test,
            res,
            seed_test,
            float(np.mean(a_seeds)),
            float(np.mean(b_seeds)),
            len(qids),
          )
        )
  return _corrected(results, comparisons, test, correction, split, baseline)


def _result(model, task, metric, seed_means, run_dirs, num_queries) -> dict:
  """One model's record: mean and std over its seeds (see compare_models)."""
  return {
    "model": model,
    "task": task,
    "metric": metric,
    "mean": float(np.mean(seed_means)),
    "std": float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else 0.0,
    "per_seed": seed_means,
    "run_dirs": run_dirs,
    "num_queries": num_queries,
  }


def _comparison(task, metric, a, b, test, res, seed_test, mean_a, mean_b, n) -> dict:
  """One comparison record of `a` (the joint model) against `b` (see compare_models)."""
  return {
    "task": task,
    "metric": metric,
    "a": a,
    "b": b,
    "p_value": res["p_value"],
    "statistic": res["statistic"],
    "method": test,
    "gain_pct": (mean_a - mean_b) / mean_b * 100.0 if mean_b != 0 else math.nan,
    "mean_a": mean_a,
    "mean_b": mean_b,
    "num_queries": n,
    "unit": "query",
    "diff": res["diff"],
    "ci95": res["ci95"],
    "ci_method": res["ci_method"],
    "seed_test": seed_test,
  }


def _corrected(results, comparisons, test, correction, split, baseline) -> dict:
  """The comparison dict with `correction` applied over the call's query tests and, separately,
  over its seed tests (a study applies `adjust_family` over all of its tests again)."""
  comparisons = adjust_family(comparisons, correction)
  seed_tests = adjust_family([c["seed_test"] for c in comparisons], correction)
  for c, st in zip(comparisons, seed_tests):
    st.update(verdict_fields(st, c["mean_b"]))
    c["seed_test"] = st
    c["verdict"] = st["verdict"]
    c["label"] = QUERY_TEST_LABEL  # the top-level (query) test
  return {
    "results": results,
    "comparisons": comparisons,
    "test": test,
    "correction": correction,
    "split": split,
    "baseline": baseline,
  }


def compare_within_seeds(
  groups: Mapping[str, Sequence[str]],
  task: str | Sequence[str] = "search",
  metric: str | Sequence[str] = "recall@30",
  test: str = "ttest",
  correction: str = "holm",
  baseline: str = "joint",
  split: str = "test",
  num_samples: int = 10000,
  seed: int = 0,
  repeated: Sequence[str] = (),
  bootstrap_resamples: int = 2000,
) -> dict:
  """`compare_models` for studies with one dataset per seed (a fresh simulated dataset each).

  Runs are paired by seed (config.json `seed`), dataset identity and qrels are checked within each
  pair only (the evaluation protocol across all runs), and the query-level test's units are (seed,
  query) pairs: the joint and the task-specific model of one seed answered the same query of the
  same dataset. The seed-level test is the paired t-test over the per-seed means; its bootstrap
  draws queries independently within each drawn seed (each seed has its own queries). Same return
  layout as `compare_models` (`num_queries` counts the (seed, query) units).
  """
  if test not in TESTS:
    raise ValueError(f"unknown test {test!r}; expected one of {TESTS}")
  tasks = [task] if isinstance(task, str) else list(task)
  metric_list = [metric] if isinstance(metric, str) else list(metric)
  if correction not in CORRECTIONS:
    raise ValueError(f"unknown correction {correction!r}; expected one of {CORRECTIONS}")
  files = _EvalFiles(split)
  _check_no_repeats(files, groups, set(repeated))
  all_dirs = [os.fspath(d) for dirs in groups.values() for d in dirs]
  for i, d in enumerate(all_dirs):  # every pair: the datasets differ, the protocol may not
    for other in all_dirs[i + 1 :]:
      _check_same_protocol(files, d, other)
  results, comparisons = [], []
  for t in tasks:
    for met in metric_list:
      loaded = {}
      for name, dirs in groups.items():
        dirs = [os.fspath(d) for d in dirs]
        r = _load_model_runs(files, name, dirs, t, met)
        if r is None:
          continue
        seed_means, pq = r
        loaded[name] = (dirs, seed_means, pq)
        results.append(_result(name, t, met, seed_means, dirs, int(sum(len(p) for p in pq))))
      if baseline not in loaded:
        continue
      a_dirs, a_seeds, a_pq = loaded[baseline]
      for other, (b_dirs, b_seeds, b_pq) in loaded.items():
        if other == baseline:
          continue
        pairing, keys, ia, ib = _seed_pairs(a_dirs, b_dirs)
        va, vb, diffs = [], [], []
        for i, j in zip(ia, ib):
          _check_same_dataset(files, a_dirs[i], b_dirs[j])
          _check_same_qrels(files, a_dirs[i], b_dirs[j], t)
          diff = _id_set_difference(a_pq[i], b_pq[j])
          if diff:
            raise IncomparableRunsError(
              f"{a_dirs[i]} and {b_dirs[j]}: eval/{split}/per_query.json {t}/{met} hold "
              f"different queries: {diff} (a torn or stale per_query.json; re-evaluate)"
            )
          qs = sorted(a_pq[i])
          va += [a_pq[i][q] for q in qs]
          vb += [b_pq[j][q] for q in qs]
          diffs.append([a_pq[i][q] - b_pq[j][q] for q in qs])
        if test == "ttest":
          res = paired_ttest(va, vb)
        else:
          res = randomization_test(va, vb, num_samples=num_samples, seed=seed)
        seed_test = seed_level_test([a_seeds[i] for i in ia], [b_seeds[j] for j in ib], seed=seed)
        seed_test.update({"pairing": pairing, "seeds": keys})
        seed_test.update(_bootstrap_fields(diffs, False, bootstrap_resamples, seed))
        mean_a = float(np.mean([a_seeds[i] for i in ia]))
        mean_b = float(np.mean([b_seeds[j] for j in ib]))
        comparisons.append(
          _comparison(t, met, baseline, other, test, res, seed_test, mean_a, mean_b, len(va))
        )
  return _corrected(results, comparisons, test, correction, split, baseline)


def _fmt(x: float, digits: int = 4) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "n/a"
  return f"{x:.{digits}f}"


def _metric_label(metric: str) -> str:
  from gr_jax.analysis import report

  return report.metric_label(metric)


def _fmt_ci(ci) -> str:
  if not ci or any(x is None or math.isnan(x) for x in ci):
    return "n/a"
  return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def _fmt_p(p) -> str:
  return "n/a" if p is None or math.isnan(p) else f"{p:.3g}"


def to_markdown(result: dict) -> str:
  """Two markdown tables: mean ± std over seeds, then the paired comparisons."""
  from gr_jax.analysis import report

  rows = [
    [
      r["model"],
      r["task"],
      _metric_label(r["metric"]),
      f"{_fmt(r['mean'])} ± {_fmt(r['std'])}",
      str(len(r["per_seed"])),
      str(r["num_queries"]),
    ]
    for r in result["results"]
  ]
  out = [report.markdown_table(["model", "task", "metric", "mean ± std", "seeds", "queries"], rows)]
  if result["comparisons"]:
    corr = result["correction"]
    rows = []
    for c in result["comparisons"]:
      st = c.get("seed_test") or {}
      level = st.get("ci_simultaneous_level")
      rows.append(
        [
          c["task"],
          _metric_label(c["metric"]),
          f"{c['a']} vs {c['b']}",
          _fmt(c["mean_a"]),
          _fmt(c["mean_b"]),
          f"{c['gain_pct']:+.1f}%" if not math.isnan(c["gain_pct"]) else "n/a",
          f"{_fmt(st.get('diff'))} (n={st.get('n', 0)})",
          _fmt_ci(st.get("ci95")),
          _fmt_ci(st.get("ci_simultaneous"))
          + (f" ({100 * level:.2f}%)" if isinstance(level, float) else ""),
          _fmt_ci(st.get("ci95_bootstrap")),
          _fmt_p(st.get("p_value")),
          _fmt_p(st.get("p_adjusted")),
          _fmt_p(st.get("p_signflip")),
          _fmt(st.get("mdd80")),
          verdict_text(st),
          _fmt_p(c["p_value"]),
          _fmt_p(c["p_adjusted"]),
        ]
      )
    out.append(
      report.markdown_table(
        [
          "task",
          "metric",
          "comparison",
          "mean a",
          "mean b",
          "gain",
          "diff (seeds)",
          "95% CI, unadjusted",
          f"simultaneous CI ({corr} family)",
          "two-stage bootstrap 95% CI",
          "p seeds (t)",
          f"p seeds ({corr})",
          "sign-flip p (exact, unadjusted)",
          "mdd80",
          "verdict",
          "p queries (conditional on the trained models)",
          f"p queries ({corr})",
        ],
        rows,
      )
    )
    method = result["comparisons"][0]["method"]
    n_cmp = len(result["comparisons"])
    out.append(
      "The verdict rests on the paired t-test over seeds (per-seed means, paired by seed), "
      f"{corr}-corrected over the {n_cmp} comparisons: significant when the adjusted p < 0.05; "
      "otherwise inconclusive (underpowered) when mdd80, the smallest difference that test "
      "detects with 80% power (exact noncentral t, two-sided alpha 0.05), exceeds 16% of b's "
      "mean, else no significant difference. The 95% CI is the t interval of the seed "
      "differences, unadjusted (no directional claim from it); the simultaneous CI is the "
      "Bonferroni interval at level 1 - 0.05/m over the m seed tests, whose exclusion of 0 "
      "implies significance after the correction. The two-stage bootstrap resamples seeds, then "
      "queries within them (percentile interval). The sign-flip test is exact over all 2^n sign "
      "patterns of the seed differences (its p is never below 2/2^n). "
      f"The paired {method} per query (values averaged over seeds, paired by query id; "
      f"{corr} over the comparisons) is conditional on the trained models: it treats queries as "
      "independent although every query of a seed shares one model pair, so it is not evidence "
      "for the verdict. Recall@K equals Success@K when each query has one relevant item."
    )
  return "\n\n".join(out) + "\n"
