"""`python -m gr_jax.bench`: the benchmark binary (flags and modes in `gr_jax.bench.cli`)."""

import sys

from gr_jax.bench import run

if __name__ == "__main__":
  sys.exit(run())
