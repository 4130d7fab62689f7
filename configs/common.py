"""Helpers shared by the experiment configs (`from configs import common`)."""

import os

from configs import base  # every knob and its default

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")


def parse_arg(arg: str | None, **defaults) -> dict:
  """Parses "a=1,b=x,flag" (big_vision style) into a dict typed like `defaults`.

  A bare name is True; unknown names are an error naming the expected ones.
  """
  out = dict(defaults)
  if not arg:
    return out
  for part in arg.split(","):
    part = part.strip()
    if not part:
      continue
    key, eq, value = part.partition("=")
    if key not in defaults:
      raise ValueError(f"config arg {key!r} is unknown; expected one of {sorted(defaults)}")
    if not eq:
      out[key] = True
      continue
    kind = type(defaults[key])
    if kind is bool:
      out[key] = value.lower() in ("1", "true", "yes", "on")
    elif kind in (int, float):
      out[key] = kind(value)
    else:
      out[key] = value
  return out


def get_base():
  return base.get_config()


def sim_sweep(*, name: str, setting: str, field: str, values: tuple, statistic: str, arg=None):
  """A simulated sweep (S1/S2/S3): the quickstart's model and training, one dataset per value."""
  from configs import quickstart  # imported here: quickstart itself imports this module

  args = parse_arg(arg, seeds=3)
  c = quickstart.get_config(f"seeds={args['seeds']}")
  c.name = name
  c.data.sim.setting = setting
  c.reproduce.sweep = field
  c.reproduce.sweep_values = values
  c.reproduce.sweep_statistic = statistic  # realised, from each point's manifest
  c.reproduce.analyses = False  # the sweep plot is the analysis; t-SNE etc. per point is noise here
  # Equal optimizer steps for the three models of a seed: the sweep measures "the other task
  # helps", not "trained longer" (docs/study_design.md).
  c.reproduce.budgets = ("matched_steps",)
  c.reproduce.decoders = ("beam", "topk_exact")
  c.reproduce.baselines = ()  # popularity only: the sweep is about the joint model's gain
  return without_recorded_tuning(c)


def without_recorded_tuning(c):
  """The quickstart's recorded per-model tuning was chosen on its default world, not on a sweep's
  worlds: a sweep built on the quickstart uses the config's own values unless it is tuned itself
  (`--tune` with --config.reproduce.tune.use=True)."""
  c.reproduce.tune.use = False
  c.reproduce.tune.recorded = ""
  return c


def real_data(*, name: str, source: str, args: dict, vocab_size: int = 4000):
  """A study on real data: `args` holds path, size (model preset), init (a local HF T5 directory,
  whose spiece.model then tokenizes too), seeds and epochs."""
  c = get_base()
  c.name = name
  c.data.source = source
  c.data.path = args["path"]
  c.data.tokenizer.path = args["init"]
  c.data.tokenizer.vocab_size = vocab_size  # used when no init: SentencePiece trained on queries
  c.model.preset = args["size"]
  c.model.init_from = args["init"]
  c.train.num_epochs = args["epochs"]
  c.reproduce.seeds = tuple(range(args["seeds"]))
  return c
