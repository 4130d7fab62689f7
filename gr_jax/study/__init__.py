"""The study: the paper's whole experiment as a resumable plan of stages (prepare, train, evaluate,
baselines, statistics, analyses, report). `gr_jax.reproduce` is the thin binary over it."""

from gr_jax.study.plan import MODEL_TASKS, Plan, RunSpec, build_plan
from gr_jax.study.runner import run_plan

__all__ = ["MODEL_TASKS", "Plan", "RunSpec", "build_plan", "run_plan"]
