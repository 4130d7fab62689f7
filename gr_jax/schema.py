"""Facts every layer agrees on, defined once: the task names, their labels and the batch layout.

Pure Python (no JAX, no NumPy) so the data, training, evaluation and report code can all import it
without pulling in each other.
"""

# The two tasks, in the order that fixes `task_id` in batches (0 search, 1 rec), the order of the
# concatenated training pool and of every per-task table.
TASKS = ("search", "rec")
NUM_TASKS = len(TASKS)

# How tables and plots name each task.
TASK_LABELS = {"search": "search", "rec": "recommendation"}

# A training batch: encoder_input_ids int32 [B, Le]; decoder_input_ids int32 [B, Ld]
# (`[0, <item>]`); decoder_target_ids int32 [B, Ld] (`[<item>, </s>]`); decoder_weights f32
# [B, Ld]; task_id int32 [B] (an index of TASKS).
BATCH_KEYS = (
  "encoder_input_ids",
  "decoder_input_ids",
  "decoder_target_ids",
  "decoder_weights",
  "task_id",
)
