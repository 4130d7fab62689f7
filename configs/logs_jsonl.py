"""Your own logs in the shape of the paper's private podcast data (generic JSONL).

`path` is a directory with three files (names configurable under data.jsonl):
  search.jsonl    {"query": "true crime", "item": "show_42"}                     one per line
  sessions.jsonl  {"user": "u1", "items": ["show_1", "show_42"], "timestamps": [1, 5]}
  items.jsonl     {"item": "show_42", "title": "..."}                            the catalogue

Arg: path=DIR, size=small, init=DIR, seeds=N, epochs=N.
Runtime and result depend on your data; the pipeline is the same as MovieLens.

  python -m gr_jax.reproduce --config configs/logs_jsonl.py:path=/data/podcasts --workdir runs/podcasts
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, path="", size="small", init="", seeds=2, epochs=5)
  return common.real_data(name="logs_jsonl", source="jsonl", args=args)
