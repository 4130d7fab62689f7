"""Sharded training: state (optimizer, model construction), step (loss, train/eval step), loop (the
trainer), checkpointing (Orbax), partitioning (mesh and logical axis rules).

  gr_jax.training.train(config, workdir) -> summary dict
  gr_jax.training.restore_for_inference(workdir, step=None) -> (model, config, step)
  gr_jax.training.best_step(workdir) -> int | None
"""

__all__ = ["train", "restore_for_inference", "best_step", "latest_step"]


def __getattr__(name):
  # Lazy: importing the package (e.g. for partitioning) does not build the whole trainer.
  if name == "train":
    from gr_jax.training.loop import train

    return train
  if name in ("restore_for_inference", "best_step", "latest_step"):
    from gr_jax.training import checkpointing

    return getattr(checkpointing, name)
  raise AttributeError(name)
