"""Experiment configs: `base` holds every knob; the others start from it (`from configs import`).

The binaries load a config by path (`--config configs/quickstart.py`); importing `gr_jax` puts
this checkout's root on sys.path (gr_jax/__init__.py), so `configs` resolves from any cwd.
"""
