"""Sharded training: state (optimizer and train state), step (loss, train/eval step), loop (the
trainer), early_stopping (the selection rule), data_adapter (batches for the mesh). The model it
trains is built by gr_jax/model/build.py on gr_jax/model/partitioning.py's mesh rules, and saved by
gr_jax/checkpointing.py (which the evaluator restores from, too).

  gr_jax.training.train(config, workdir) -> summary dict
"""

__all__ = ["train"]


def __getattr__(name):
  # Lazy: importing the package does not build the whole trainer.
  if name == "train":
    from gr_jax.training.loop import train

    return train
  raise AttributeError(name)
