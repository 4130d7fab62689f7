"""The one KL divergence of the project (simulator statistics, dataset manifests, the H1 analysis).

NumPy only, so the data package can import it without the analysis stack.
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
