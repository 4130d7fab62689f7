#!/usr/bin/env bash
# Create a Cloud TPU VM, install gr-jax on every worker, and run the train binary on all of them.
#
#   launch/tpu_vm.sh NAME ZONE ACCELERATOR_TYPE RUNTIME -- --config configs/movielens.py \
#       --workdir gs://BUCKET/runs/ml_joint [--config.a.b=value ...]
#   e.g. launch/tpu_vm.sh gr-v4 us-central2-b v4-32 tpu-ubuntu2204-base -- --config ...
#
# Environment: PROJECT (gcloud project; default: the configured one), REPO_URL (git URL to clone;
# default: copy this checkout with `gcloud compute tpus tpu-vm scp`), SKIP_CREATE=1 (reuse an
# existing VM), DELETE_AFTER=1 (delete the VM when the run ends), DTYPE (compute dtype, default
# bfloat16).
#
# Multi-host: every worker runs the same command; jax.distributed is initialised from the TPU
# metadata (config.mesh.distributed=True is passed), each host reads its own slice of every global
# batch, and Orbax writes one checkpoint from all hosts, so --workdir must be shared storage (a
# gs:// bucket or a mounted filesystem). Rerunning the same command resumes from the last checkpoint.
set -euo pipefail

if [[ $# -lt 5 || "$5" != "--" ]]; then
  sed -n '2,16p' "$0"
  exit 2
fi
NAME=$1 ZONE=$2 TYPE=$3 RUNTIME=$4
shift 5
TRAIN_ARGS=$(printf ' %q' "$@")
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" $PROJECT_FLAG --worker=all --command="$1"
}

if [[ "${SKIP_CREATE:-0}" != 1 ]]; then
  gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$TYPE" \
    --version="$RUNTIME" $PROJECT_FLAG
fi

if [[ -n "${REPO_URL:-}" ]]; then
  ssh_all "rm -rf ~/gr-jax && git clone --depth 1 '$REPO_URL' ~/gr-jax"
else
  ROOT=$(cd "$(dirname "$0")/.." && pwd)
  tar -C "$ROOT" --exclude=.venv --exclude=.git --exclude=runs -czf /tmp/gr-jax-src.tgz .
  gcloud compute tpus tpu-vm scp /tmp/gr-jax-src.tgz "$NAME":~/ --zone="$ZONE" $PROJECT_FLAG \
    --worker=all
  ssh_all "rm -rf ~/gr-jax && mkdir -p ~/gr-jax && tar -C ~/gr-jax -xzf ~/gr-jax-src.tgz"
fi

ssh_all "cd ~/gr-jax && python3 -m venv .venv && .venv/bin/pip install -q -U pip && \
  .venv/bin/pip install -q 'jax[tpu]' -e . "

# bf16 compute with float32 master weights on TPU; every worker runs the same command.
# The processed dataset is memory-mapped, so it lives on each worker's disk (each prepares the same
# files); the workdir (checkpoints, metrics) is the shared bucket. Unless the arguments set it.
DATA_ARG=""
[[ "$TRAIN_ARGS" == *processed_dir* ]] || DATA_ARG="--config.data.processed_dir=\$HOME/gr-jax-data"
ssh_all "cd ~/gr-jax && .venv/bin/python -m gr_jax.train $TRAIN_ARGS $DATA_ARG \
  --config.mesh.distributed=True --config.model.dtype=${DTYPE:-bfloat16} 2>&1 | tee -a ~/train.log"

if [[ "${DELETE_AFTER:-0}" == 1 ]]; then
  gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" $PROJECT_FLAG --quiet
fi
