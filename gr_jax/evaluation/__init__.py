"""Evaluation: ranking metrics (`metrics`), TREC run/qrels I/O (`runs`), checkpoint evaluation
(`evaluator.evaluate(workdir, split="test", step=None, overrides=None) -> metrics dict`).

Submodules are imported on use: `metrics` and `runs` are pure Python/NumPy and must stay importable
without JAX (the stats binary and the analyses read run files only).
"""
