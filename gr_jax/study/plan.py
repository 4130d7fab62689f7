"""Expands one experiment config into the runs and stages of the study.

A config describes one experiment; `reproduce.sweep` optionally names a dotted config field whose
values (`reproduce.sweep_values`) make several *points* (e.g. the S1 sweep over
`data.sim.shuffle_fraction`). Each point has one processed dataset and, for every model kind and
seed, one training run. Directory layout under the study's workdir:

  data/<point>/                      processed dataset (gr_jax.data.prepare)
  runs/<point>/<model>/seed<k>/      a training run (config.json, checkpoints/, eval/...)
  baselines/<point>/                 popularity runs (Pop_S, Pop_R, their mix)
  analysis/<point>/                  statistics and H1/H2 analyses as JSON
  plots/                             PNGs
  report.md  report.json
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

# Which tasks the data pipeline mixes for each model kind: the only difference between Gen_S,
# Gen_R and Gen_R+S (PAPER.md "The three models").
MODEL_TASKS = {"search": ("search",), "rec": ("rec",), "joint": ("search", "rec")}
MODEL_LABELS = {"search": "Gen_S", "rec": "Gen_R", "joint": "Gen_R+S"}


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One training run of the study."""
  point: str  # sweep point name ("default" without a sweep)
  model: str  # search | rec | joint
  seed: int
  run_dir: str
  config: ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class Point:
  """One dataset of the study: the whole study, or one value of a sweep."""
  name: str
  sweep_value: Any
  data_dir: str
  config: ml_collections.ConfigDict  # the experiment config with the sweep value applied
  runs: tuple[RunSpec, ...]


@dataclasses.dataclass(frozen=True)
class Plan:
  workdir: str
  config: ml_collections.ConfigDict
  points: tuple[Point, ...]

  @property
  def runs(self) -> list[RunSpec]:
    return [r for p in self.points for r in p.runs]


def set_dotted(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  """Sets `config.a.b.c = value` from "a.b.c", with an error naming the missing field."""
  *parents, leaf = dotted.split(".")
  node = config
  for i, name in enumerate(parents):
    if name not in node:
      raise KeyError(f"reproduce.sweep: config has no field {'.'.join(parents[:i + 1])!r} "
                     f"(sweep field {dotted!r})")
    node = node[name]
  if leaf not in node:
    raise KeyError(f"reproduce.sweep: config has no field {dotted!r}")
  with node.ignore_type():
    node[leaf] = value


def point_name(sweep: str, value: Any) -> str:
  if not sweep:
    return "default"
  return f"{sweep.rsplit('.', 1)[-1]}={value}"


def build_plan(config: ml_collections.ConfigDict, workdir: str) -> Plan:
  """Every point and run the config asks for; pure (touches no file)."""
  r = config.reproduce
  unknown = [m for m in r.models if m not in MODEL_TASKS]
  if unknown:
    raise ValueError(f"reproduce.models: unknown model kind(s) {unknown}; expected a subset of "
                     f"{sorted(MODEL_TASKS)}")
  if r.sweep and not r.sweep_values:
    raise ValueError(f"reproduce.sweep={r.sweep!r} needs reproduce.sweep_values")
  values = list(r.sweep_values) if r.sweep else [None]
  points = []
  for value in values:
    name = point_name(r.sweep, value)
    point_config = ml_collections.ConfigDict(config.to_dict())
    if r.sweep:
      set_dotted(point_config, r.sweep, value)
    data_dir = os.path.join(workdir, "data", name)
    with point_config.ignore_type():
      point_config.data.processed_dir = data_dir
    runs = []
    for model in r.models:
      for seed in r.seeds:
        run_config = ml_collections.ConfigDict(point_config.to_dict())
        with run_config.ignore_type():
          run_config.seed = int(seed)
          run_config.data.tasks = MODEL_TASKS[model]
          if model != "joint":
            # The per-item cap limits the task *added* in the joint model; the task-specific
            # references train on their full data (PAPER.md: the 5/10/50/500 analysis).
            run_config.data.item_cap = 0
        run_dir = os.path.join(workdir, "runs", name, model, f"seed{seed}")
        runs.append(RunSpec(point=name, model=model, seed=int(seed), run_dir=run_dir,
                            config=run_config))
    points.append(Point(name=name, sweep_value=value, data_dir=data_dir, config=point_config,
                        runs=tuple(runs)))
  return Plan(workdir=workdir, config=config, points=tuple(points))
