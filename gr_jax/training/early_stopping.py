"""Early stopping on one validation metric (higher is better): the best value so far, its step,
and the decodes since it improved. One rule for the T5 trainer (gr_jax/training/loop.py, one per
tracked metric) and the trained baselines (gr_jax/baselines/sequential.py)."""

from __future__ import annotations

import math


class EarlyStopping:
  """Strictly better only: a tie keeps the earlier (cheaper) step. `patience` decodes without
  improvement make it `converged` (0: never). The state is plain numbers, so a resumed run can
  rebuild it (the trainer replays metrics.jsonl; the baselines store it in checkpoint meta)."""

  def __init__(self, patience: int, best: float = -math.inf, best_step: int = 0, since_best=0):
    self.patience = int(patience)
    self.best = float(best)
    self.best_step = int(best_step)
    self.since_best = int(since_best)

  @property
  def converged(self) -> bool:
    return self.patience > 0 and self.since_best >= self.patience

  def update(self, step: int, value: float) -> bool:
    """Records one decode; True when it is the new best."""
    if value > self.best:
      self.best, self.best_step, self.since_best = float(value), int(step), 0
      return True
    self.since_best += 1
    return False
