"""gr-jax: generative retrieval (search + recommendation) with one T5 in JAX/Flax."""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _expose_configs() -> None:
  """Makes the checkout's `configs` package importable from any cwd.

  ml_collections loads `--config configs/x.py` by file path, outside any package, and the config
  files import each other as `from configs import common`. Every binary imports gr_jax before it
  loads a config, so this is the one place that puts the repository root on sys.path, and only
  for a checkout (a `configs/__init__.py` beside the package). Appended, so it never shadows what
  is already importable.
  """
  root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
  if _os.path.isfile(_os.path.join(root, "configs", "__init__.py")) and root not in _sys.path:
    _sys.path.append(root)


_expose_configs()
