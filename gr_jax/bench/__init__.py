"""Benchmarks, one binary: `python -m gr_jax.bench` (console script `gr-jax-bench`).

Modules: `cli` (the binary's flags and modes), `protocol` (interleaved timing, paired ratios,
record layout, machine fields), `train_bench` (the trainer's step, the fast step, compiled
memory), `decode_bench` (beam search), `hf_reference` (PyTorch T5, torch imported only with
--compare_hf), `diverse_decode` (diverse constrained beam search vs HF), `data_bench` (prepare and
input pipeline). FLOPs, device peaks and MFU live in `gr_jax.model.flops`. Nothing else under
gr_jax imports this package.
"""


def run():
  """Entry point of `gr-jax-bench` and `python -m gr_jax.bench`."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from gr_jax.bench import cli  # pylint: disable=g-import-not-at-top  (defines the flags)

  app.run(cli.main)
