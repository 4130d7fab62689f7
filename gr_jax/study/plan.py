"""Expands one experiment config into the runs and stages of the study.

A config describes one experiment; `reproduce.sweep` optionally names a dotted config field whose
values (`reproduce.sweep_values`) make several *points* (e.g. the S1 sweep over
`data.sim.shuffle_fraction`). A sweep value may instead be a mapping of dotted fields to values
that its point sets together (e.g. `{"data.id_scheme": "atomic"}` beside the plain values of a
`data.semantic.embedding` sweep); `reproduce.sweep` still names the sweep and is the field its
plain values set. A plain value's point is named `<last part of the field>=<value>`, a mapping's
the same for each of its fields, joined by commas in the mapping's order (`id_scheme=atomic`).
Each point has one processed dataset and, for every model kind and seed and training budget
(`reproduce.budgets`), one training run. A simulated study draws one dataset per seed
(`reproduce.dataset_per_seed`: the simulator's seed is `data.sim.seed + seed`), so the spread over
seeds includes data variance; a real-data study has one dataset per point.

Directory layout under the study's workdir:

  data/<point>/<data>/                         processed dataset ("seed<k>" or "shared")
  runs/<point>/<budget>/<model>/seed<k>/       a training run (config.json, checkpoints/, eval/...)
  tuning/                                      per-model tuning on validation, when asked
                                               (gr_jax/study/tune.py: its own data/, runs/ and
                                               tuning.json, which `reproduce.tune.use` reads)
  baselines/<point>/seed<k>/<name>/            baseline runs of seed k's dataset (pop_*, bm25,
                                               sasrec, bert4rec, biencoder; trained with seed k)
  baselines/<point>/shared/<name>/             deterministic baselines of the shared dataset
                                               (pop_*, bm25): one run for every seed
  baselines/<point>/shared/<name>/seed<k>/     trained baselines of the shared dataset (sasrec,
                                               bert4rec, biencoder): one run per study seed
                                               (each baseline run has eval/<split>/ and eval/valid/)
  analysis/<point>/                            statistics and H1/H2 analyses as JSON
  plots/                                       PNGs
  report.md  report.json
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import ml_collections

# Which tasks the data pipeline mixes for each model kind: the only difference between Gen_S,
# Gen_R and Gen_R+S (docs/study_design.md).
MODEL_TASKS = {"search": ("search",), "rec": ("rec",), "joint": ("search", "rec")}
MODEL_LABELS = {"search": "Gen_S", "rec": "Gen_R", "joint": "Gen_R+S"}
BUDGETS = ("epochs", "matched_steps", "converged")
DECODERS = ("beam", "topk_exact")
# reproduce.* keys that no stage fingerprints as such, and that run configs (config.json) leave out:
# the wall-time estimate changes no file; the tuning section (gr_jax/study/tune.py) reaches the
# runs only through the values `tune.use` sets in their configs, and the report through
# tuning.json, so a study that does not use it keeps every fingerprint.
STUDY_ONLY_KEYS = ("estimate_time", "tune")


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """One processed dataset of a point: per seed (simulated) or shared by all seeds."""

  key: str  # "seed<k>" or "shared"
  data_dir: str
  config: ml_collections.ConfigDict  # the point's config with this dataset's sim seed


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One training run of the study."""

  point: str  # sweep point name ("default" without a sweep)
  model: str  # search | rec | joint
  seed: int
  run_dir: str
  config: ml_collections.ConfigDict
  budget: str = "epochs"  # epochs | matched_steps | converged (steps resolved at train time)
  data: str = "shared"  # DataSpec.key of the dataset it trains on


@dataclasses.dataclass(frozen=True)
class Point:
  """One dataset of the study: the whole study, or one value of a sweep."""

  name: str
  sweep_value: Any
  data_dir: str  # the first dataset (kept for callers that read one dataset's catalogue)
  config: ml_collections.ConfigDict  # the experiment config with the sweep value applied
  runs: tuple[RunSpec, ...]
  datasets: tuple[DataSpec, ...] = ()

  def dataset(self, key: str) -> DataSpec:
    return next(d for d in self.datasets if d.key == key)


@dataclasses.dataclass(frozen=True)
class Plan:
  workdir: str
  config: ml_collections.ConfigDict
  points: tuple[Point, ...]

  @property
  def runs(self) -> list[RunSpec]:
    return [r for p in self.points for r in p.runs]


def set_dotted(
  config: ml_collections.ConfigDict, dotted: str, value: Any, what: str = "reproduce.sweep"
) -> None:
  """Sets `config.a.b.c = value` from "a.b.c", with an error naming the missing field (`what`:
  the config key that named it). A leaf of an `overrides` section (model.overrides: the preset's
  fields to change, empty by default) may be new."""
  *parents, leaf = dotted.split(".")
  node = config
  for i, name in enumerate(parents):
    if name not in node:
      raise KeyError(
        f"{what}: config has no field {'.'.join(parents[: i + 1])!r} (field {dotted!r})"
      )
    node = node[name]
  if leaf not in node and not (parents and parents[-1] == "overrides"):
    raise KeyError(f"{what}: config has no field {dotted!r}")
  with node.ignore_type():
    node[leaf] = value


def sweep_fields(sweep: str, value: Any) -> dict[str, Any]:
  """The dotted fields one sweep point sets: `{sweep: value}`, or the value itself when it is a
  mapping of fields to values."""
  if isinstance(value, Mapping):
    if not value or not all(isinstance(k, str) and k for k in value):
      raise ValueError(
        f"reproduce.sweep_values: a sweep point given as a mapping needs one or more dotted "
        f"field names as keys, got {dict(value)!r}"
      )
    return dict(value)
  return {sweep: value}


def point_name(sweep: str, value: Any) -> str:
  if not sweep:
    return "default"
  return ",".join(f"{f.rsplit('.', 1)[-1]}={v}" for f, v in sweep_fields(sweep, value).items())


def sweep_label(value: Any, name: str) -> Any:
  """A point's position on the sweep plot's x axis: a plain sweep value itself, or the point's
  name for a mapping (a dict is no axis value)."""
  return name if isinstance(value, Mapping) else value


def data_configs(
  point_config: ml_collections.ConfigDict, seeds, per_seed: bool, data_root: str
) -> list[DataSpec]:
  """The datasets of one point: one per seed ("seed<k>", simulator seed `data.sim.seed + k`)
  when `per_seed`, else one "shared" by every seed; each under `<data_root>/<key>`."""
  datasets = []
  for key, seed in [(f"seed{s}", int(s)) for s in seeds] if per_seed else [("shared", None)]:
    data_config = ml_collections.ConfigDict(point_config.to_dict())
    with data_config.ignore_type():
      data_config.data.processed_dir = os.path.join(data_root, key)
      if seed is not None:
        data_config.data.sim.seed = int(point_config.data.sim.seed) + seed
    datasets.append(DataSpec(key=key, data_dir=data_config.data.processed_dir, config=data_config))
  return datasets


def run_config(data: DataSpec, model: str, seed: int) -> ml_collections.ConfigDict:
  """The config of one training run of `model` with `seed` on `data`."""
  cfg = ml_collections.ConfigDict(data.config.to_dict())
  with cfg.ignore_type():
    cfg.seed = int(seed)
    cfg.data.tasks = MODEL_TASKS[model]
    if model != "joint":
      # The per-item cap limits the task *added* in the joint model; the task-specific
      # references train on their full data (the paper's 5/10/50/500 analysis).
      cfg.data.item_cap = 0
  return cfg


def without_study_only_keys(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of the config without `STUDY_ONLY_KEYS` (not in the runs' configs nor fingerprints)."""
  out = ml_collections.ConfigDict(config.to_dict())
  for key in STUDY_ONLY_KEYS:
    if key in out.reproduce:
      del out.reproduce[key]
  return out


def per_seed_data(config: ml_collections.ConfigDict) -> bool:
  """One simulated dataset per seed (`reproduce.dataset_per_seed`), else one shared dataset."""
  return bool(config.reproduce.get("dataset_per_seed", False)) and config.data.source == "simulate"


def build_plan(config: ml_collections.ConfigDict, workdir: str) -> Plan:
  """Every point and run the config asks for. Pure (touches no file), except that
  `reproduce.tune.use` reads `<workdir>/tuning/tuning.json` for each model kind's values."""
  r = config.reproduce
  unknown = [m for m in r.models if m not in MODEL_TASKS]
  if unknown:
    raise ValueError(
      f"reproduce.models: unknown model kind(s) {unknown}; expected a subset of "
      f"{sorted(MODEL_TASKS)}"
    )
  if r.sweep and not r.sweep_values:
    raise ValueError(f"reproduce.sweep={r.sweep!r} needs reproduce.sweep_values")
  if not r.sweep and any(isinstance(v, Mapping) for v in r.sweep_values):
    raise ValueError(
      "reproduce.sweep_values holds field mappings but reproduce.sweep is empty; set "
      "reproduce.sweep to the sweep's name (the plots' axis label)"
    )
  budgets = tuple(r.get("budgets", ("epochs",)))
  bad = [b for b in budgets if b not in BUDGETS] or ([] if budgets else ["(none)"])
  if bad:
    raise ValueError(f"reproduce.budgets: unknown or empty {bad}; expected a subset of {BUDGETS}")
  bad = [d for d in r.get("decoders", ("beam",)) if d not in DECODERS]
  if bad or not r.get("decoders", ("beam",)):
    raise ValueError(f"reproduce.decoders: unknown or empty {bad}; expected a subset of {DECODERS}")
  per_seed = per_seed_data(config)
  tuned = None
  if r.get("tune") is not None and bool(r.tune.get("use", False)):
    from gr_jax.study import tune  # pylint: disable=g-import-not-at-top

    tuned = tune.read_tuning(config, workdir)
    tune.check_sweep(config)
  values = list(r.sweep_values) if r.sweep else [None]
  names = [point_name(r.sweep, value) for value in values]
  twice = sorted({n for n in names if names.count(n) > 1})
  if twice:
    raise ValueError(f"reproduce.sweep_values: several points named {twice} (one directory each)")
  points = []
  for value, name in zip(values, names):
    point_config = without_study_only_keys(config)
    if r.sweep:
      for field, v in sweep_fields(r.sweep, value).items():
        set_dotted(point_config, field, v)
    datasets = data_configs(point_config, r.seeds, per_seed, os.path.join(workdir, "data", name))
    runs = []
    for budget in budgets:
      for model in r.models:
        for seed in r.seeds:
          data = datasets[list(r.seeds).index(seed)] if per_seed else datasets[0]
          cfg = run_config(data, model, seed)
          if tuned is not None:  # the model kind's values chosen on validation (tune.py)
            for field, v in tuned["chosen"][model].items():
              set_dotted(cfg, field, v, "reproduce.tune")
          run_dir = os.path.join(workdir, "runs", name, budget, model, f"seed{seed}")
          runs.append(
            RunSpec(
              point=name,
              model=model,
              seed=int(seed),
              run_dir=run_dir,
              config=cfg,
              budget=budget,
              data=data.key,
            )
          )
    points.append(
      Point(
        name=name,
        sweep_value=value,
        data_dir=datasets[0].data_dir,
        config=point_config,
        runs=tuple(runs),
        datasets=tuple(datasets),
      )
    )
  return Plan(workdir=workdir, config=config, points=tuple(points))
