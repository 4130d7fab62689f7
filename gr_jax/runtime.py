"""Process-wide runtime settings shared by the binaries (logging, the compilation cache)."""

import logging as std_logging
import os


def setup(workdir: str | None = None) -> None:
  """Quiet noisy libraries and share compiled programs across the runs of one study.

  The persistent compilation cache matters on CPU: Gen_S, Gen_R and Gen_R+S of one study have the
  same shapes, so after the first run each train and decode step loads instead of compiling.
  """
  import jax
  for name in ("absl", "orbax", "jax._src.xla_bridge", "jax._src.compilation_cache"):
    std_logging.getLogger(name).setLevel(std_logging.WARNING)
  cache_dir = os.environ.get("GR_JAX_COMPILATION_CACHE")
  if cache_dir is None and workdir is not None:
    cache_dir = os.path.join(workdir, ".jax_cache")
  if cache_dir:
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
