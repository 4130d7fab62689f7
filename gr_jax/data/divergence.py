"""The one KL divergence of the project (simulator statistics, dataset manifests, the H1 analysis).

It lives in data/, the lowest package that needs it (the simulator's statistics and the
manifests' KL of prepare); analysis/ reads it from here, as every layer above may.
"""

from __future__ import annotations

import numpy as np


def kl_divergence(p, q) -> float:
  """KL(p || q) in nats of two distributions over the same support.

  Terms with p = 0 contribute 0 (the limit of p log p); a term with q = 0 < p makes it inf.
  Callers that need a finite value smooth their counts first (see where each calls it).
  """
  p = np.asarray(p, np.float64)
  q = np.asarray(q, np.float64)
  if p.shape != q.shape:
    raise ValueError(f"KL of distributions over different supports: {p.shape} vs {q.shape}")
  mask = p > 0
  with np.errstate(divide="ignore"):
    return float(np.sum(p[mask] * (np.log(p[mask]) - np.log(q[mask]))))
