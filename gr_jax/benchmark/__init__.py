"""Throughput benchmarks: the trainer's train step, beam search, and Hugging Face side by side.

Modules: `peaks` (device peaks, MFU, analytic FLOPs cross-check), `train_bench` (train-step timing,
the fast step, compiled memory), `decode_bench` (beam search timing), `hf_reference` (PyTorch T5,
imported only with --compare_hf), `fused_ops` (chunked cross-entropy, fused T5 attention).
"""
