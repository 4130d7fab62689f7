"""Non-neural baselines written as runs: `popularity` (Pop_S, Pop_R, Pop_mix)."""
