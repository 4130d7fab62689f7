"""Item embeddings of bi-encoder semantic IDs, the step before prepare (prepare trains no model).

  python -m gr_jax.embed_items --config configs/semantic_ids.py --workdir runs/emb \
      --config.data.semantic.embedding=joint --out runs/emb/joint.npy
  python -m gr_jax.prepare --config configs/semantic_ids.py --workdir runs/sem \
      --config.data.semantic.embedding=joint \
      --config.data.semantic.embedding_file=runs/emb/joint.npy

For `data.semantic.embedding` = search | rec | joint: prepares the config's data with atomic IDs in
`<workdir>/atomic-<hash>/`, trains the bi-encoder of `baselines.biencoder` (tasks of the kind, seed
`data.semantic.seed`) on its training splits in `<workdir>/<kind>-<hash>/` (resumed, or reloaded
when finished) and writes every item's vector in catalogue order to `--out` (.npy float32
[num_items, dim]; default `<workdir>/item_embeddings-<kind>.npy`) with its description beside it
(`<out without .npy>.json`), which prepare checks against its own config
(gr_jax/baselines/embed_items.py). `reproduce` runs this step itself in its prepare stage.
"""

from __future__ import annotations

import json
import os

from absl import app, flags
from ml_collections import config_flags

from gr_jax import runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)")
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "directory of the atomic dataset and the bi-encoder's run (reused when rerun)"
)
_OUT = flags.DEFINE_string(
  "out", None, "the .npy to write (default <workdir>/item_embeddings-<kind>.npy)"
)


def output_path(config, workdir: str) -> str:
  return _OUT.value or os.path.join(
    workdir, f"item_embeddings-{config.data.semantic.embedding}.npy"
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  runtime.validate_config(config)  # before any work (and before the heavy imports)
  from gr_jax import workdir  # pylint: disable=g-import-not-at-top

  # The atomic dataset is memory-mapped and the file written with local calls: gs://... is refused
  # in one line here, not written under ./gs:/ by os.path.
  work = workdir.local_dir(_WORKDIR.value, "--workdir (the atomic dataset and bi-encoder run)")
  out = workdir.local_dir(output_path(config, work), "--out (the item embeddings .npy)")
  runtime.setup(work)
  from gr_jax.baselines.embed_items import embed_items  # pylint: disable=g-import-not-at-top

  desc = embed_items(config, work, out)
  info = desc["embedding_info"]
  print(
    json.dumps(
      {
        "embeddings": out,
        "embedding": desc["embedding"],
        "num_items": desc["num_items"],
        "dim": desc["dim"],
        "valid_recall": info["biencoder"]["valid_recall"],
        "run_dir": info["run_dir"],
        "prepare_with": f"--config.data.semantic.embedding_file={out}",
      },
      indent=1,
    )
  )


def run():
  """Console-script entry point (`gr-jax-embed-items`)."""
  flags.mark_flags_as_required(["config", "workdir"])
  runtime.run_app(main, path_hint=lambda: _WORKDIR.value)


if __name__ == "__main__":
  run()
