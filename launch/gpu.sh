#!/usr/bin/env bash
# Train on the GPUs of this machine (one process drives all local GPUs), or as one node of a
# multi-node job.
#
#   launch/gpu.sh --config configs/movielens.py --workdir runs/ml_joint [--config.a.b=value ...]
#
# Multi-node: run this script on every node with JAX_COORDINATOR_ADDRESS=host0:1234,
# JAX_NUM_PROCESSES=<nodes> and JAX_PROCESS_ID=<0..nodes-1> set (or under SLURM, where jax
# detects them); the workdir must be on a filesystem every node sees. Rerunning resumes.
# Environment: PYTHON (default: .venv/bin/python if present, else python3), DTYPE (default
# bfloat16), MEM_FRACTION (XLA_PYTHON_CLIENT_MEM_FRACTION, default 0.9).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-0.9}
# Latency-hiding scheduler overlaps the data-parallel all-reduce with the backward pass.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"

EXTRA=()
if [[ -n "${JAX_COORDINATOR_ADDRESS:-}" || -n "${SLURM_JOB_ID:-}" ]]; then
  EXTRA+=(--config.mesh.distributed=True)
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
# "$@" first: the overrides below need --config to have been read (DTYPE sets the dtype).
exec "$PYTHON" -m gr_jax.train "$@" --config.model.dtype="${DTYPE:-bfloat16}" "${EXTRA[@]}"
