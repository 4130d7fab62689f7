#!/usr/bin/env bash
# Downloads the wheels the GPU image lacks into the repo's ignored .whl/ (run here, with PyPI).
# The GPU image (Python 3.12, jax 0.11.2 cuda, flax 0.12.10, orbax-checkpoint 0.12.4, torch 2.11,
# transformers 5.17) already has absl-py, etils, cloudpickle, protobuf, pyyaml, packaging, numpy,
# psutil, sentencepiece and safetensors; it lacks the packages below (versions = this repo's venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DEST=.whl
mkdir -p "$DEST"
# Pure-python wheels (py3-none-any): no platform flags needed.
PURE=(ml-collections==1.1.0 tensorboardX==2.6.5 portpicker==1.6.0)
# Compiled wheels for CPython 3.12 on x86-64 Linux.
BINARY=(grain==0.2.18 array-record==0.8.6)
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  -d "$DEST" "${PURE[@]}"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DEST" "${BINARY[@]}"
ls -la "$DEST"
du -sh "$DEST"
