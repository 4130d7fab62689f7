#!/usr/bin/env bash
# The GPU benchmark matrix, gr-jax beside Hugging Face, in under 8 minutes on one H100/H200.
# Run on the lent GPU machine from the repo root, with .whl/ carried (bench/fetch_wheels.sh):
#   bash bench/gpu_matrix.sh            # results: $OUT/gpu_matrix.jsonl (or bench/results/)
# Each row is one `python -m gr_jax.bench` process with its own timeout; within a row the sides
# (gr-jax settings, HF) are timed interleaved, repeat by repeat. A failing row is logged and
# skipped, and rows are skipped once the time budget (BUDGET_S, default 450 s) is spent, so the
# script always ends with whatever it measured. Rows are ordered by importance.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET_S=${BUDGET_S:-450}
RESULTS=${OUT:-bench/results}
mkdir -p "$RESULTS"
JSONL="$RESULTS/gpu_matrix.jsonl"
LOG="$RESULTS/gpu_matrix.log"
TRACE_ROOT=$(mktemp -d)
PY=${PY:-python3}

if [[ -z "${SKIP_WHEELS:-}" ]] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
# Compiled executables are reused by later rows and by a rerun on the same warm machine.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jax_cache}
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # torch shares the GPU in the same process
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
"$PY" -c "import jax, flax, torch, transformers; print('jax', jax.__version__, jax.devices(), \
'flax', flax.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)" \
  2>&1 | tee -a "$LOG"

# Preflight: an XLA flag unknown to this jaxlib aborts every process, so drop ours if it does.
EXTRA=()
if ! "$PY" -c "from gr_jax.bench import train_bench as t; t.apply_gpu_xla_flags(); \
import jax; jax.devices()" >>"$LOG" 2>&1; then
  echo "recommended XLA_FLAGS rejected by this jaxlib: running without them" | tee -a "$LOG"
  EXTRA=(--nogpu_xla_flags)
fi

# SMOKE=1: the same rows at tiny shapes (preset tiny, batch 2, 8 encoder tokens, 1,000 items, one
# timed window, no torch.compile), to check the script end to end on a CPU before device time is
# spent on it (tests/benchmark/test_gpu_matrix_smoke.py).
smoke_args() {
  local a out=()
  for a in "$@"; do
    case "$a" in
      --preset=*) out+=(--preset=tiny) ;;
      --batch_size=*) out+=(--batch_size=2) ;;
      --encoder_len=*) out+=(--encoder_len=8) ;;
      --num_items=*) out+=(--num_items=1000) ;;
      --hf_compile) ;;
      *) out+=("$a") ;;
    esac
  done
  out+=(--warmup=0 --repeats=1 --steps_per_repeat=1)
  printf '%s\n' "${out[@]}"
}

row() {  # row TIMEOUT_S ARGS...: one bench process, unless the budget is spent
  local limit=$1; shift
  if [[ -n "${SMOKE:-}" ]]; then mapfile -t _args < <(smoke_args "$@"); set -- "${_args[@]}"; fi
  # The row limits are sized for a GPU; a smoke run compiles on a (possibly shared) CPU instead.
  if [[ -n "${SMOKE:-}" ]]; then limit=$(( limit * ${SMOKE_TIMEOUT_SCALE:-5} )); fi
  local now=$(( $(date +%s) - START ))
  if (( now + 20 > BUDGET_S )); then echo "SKIP (budget) $*" | tee -a "$LOG"; return; fi
  (( limit > BUDGET_S - now )) && limit=$(( BUDGET_S - now ))
  echo "=== [${now}s] $*" | tee -a "$LOG"
  timeout --signal=TERM --kill-after=10 "$limit" "$PY" -m gr_jax.bench --out="$JSONL" \
    --warmup=2 --repeats=5 --steps_per_repeat=5 ${EXTRA[@]+"${EXTRA[@]}"} "$@" >>"$LOG" 2>&1 \
    || echo "FAILED rc=$? $*" | tee -a "$LOG"
}

# 1. The headline: T5-base, batch 128, enc 64 / dec 8, the trainer's step with hardware dropout
#    bits (rbg, the accelerator default) and with threefry (the portable generator), HF eager
#    beside.
#    A profiler trace of one extra window of each comes back as trace_headline.tgz (where the
#    step's time goes, per kernel: open it with TensorBoard's profile plugin or xprof).
row 150 --preset=base --batch_size=128 --encoder_len=64 --decoder_len=8 --impl=trainer \
  --dropout_prng=rbg,threefry2x32 --compare_hf --profile_dir="$TRACE_ROOT/trace_headline"
if [[ -d "$TRACE_ROOT/trace_headline" ]]; then
  tar czf "$RESULTS/trace_headline.tgz" -C "$TRACE_ROOT" trace_headline
  if (( $(stat -c %s "$RESULTS/trace_headline.tgz") > 15000000 )); then
    echo "trace_headline.tgz over 15 MB: not returned" | tee -a "$LOG"
    rm -f "$RESULTS/trace_headline.tgz"
  fi
fi
# 2. Atomic items: 100k and 1M item tokens (decoder <item> </s>); the 1M row checks the fit.
row 90 --preset=base --batch_size=128 --encoder_len=64 --decoder_len=2 --num_items=1000000 \
  --impl=trainer,fast
row 60 --preset=base --batch_size=128 --encoder_len=64 --decoder_len=2 --num_items=100000 \
  --impl=trainer,fast
# 3. Decode: 30 and 60 beams, beside HF generate (plain beam search, 2 new tokens).
row 120 --modes=decode --preset=base --batch_size=64 --encoder_len=64 --num_beams=30,60 \
  --compare_hf --repeats=3
# 3b. The headline with XLA's GEMMs from cuBLAS only (no Triton GEMM autotuning): which backend
#     serves T5-base's small decoder matmuls better is a measurement, not a guess.
XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_triton_gemm=false" \
  row 90 --preset=base --batch_size=128 --encoder_len=64 --decoder_len=8 --impl=trainer
# 4. Shapes: T5-small beside HF; larger batch; longer encoder (remat off and on).
row 60 --preset=small --batch_size=128 --encoder_len=64 --decoder_len=8 --compare_hf
row 60 --preset=base --batch_size=512 --encoder_len=64 --decoder_len=8
row 60 --preset=base --batch_size=128 --encoder_len=256 --decoder_len=8
row 60 --preset=base --batch_size=512 --encoder_len=256 --decoder_len=8 --remat
row 60 --preset=small --batch_size=512 --encoder_len=256 --decoder_len=2 --num_items=1000000 \
  --impl=fast
# 5. Seeds side by side: the quickstart's model (tiny, d_model 64, batch 64, encoder 16), 10 seeds
#    as one vmapped step over stacked states against one jitted step per seed in turn; one tiny
#    model leaves most of the GPU idle (issue "Ten seeds in the time of three").
row 60 --modes=seed_batch --config=configs/quickstart.py --preset=tiny --batch_size=64 \
  --encoder_len=16 --decoder_len=2 --num_items=80 --vocab_size=290 --num_seeds=10
# 6. torch.compile beside (slow to compile: last).
row 120 --preset=base --batch_size=128 --encoder_len=64 --decoder_len=8 --compare_hf \
  --hf_compile --impl=trainer

echo "done in $(( $(date +%s) - START ))s; $(wc -l <"$JSONL") records in $JSONL" | tee -a "$LOG"
"$PY" - "$JSONL" <<'PYEOF' | tee -a "$LOG"
import json, sys
for line in open(sys.argv[1]):
  r = json.loads(line)
  if r["kind"] == "compare":
    spread = (f" [{r['ratio_min']:.2f}..{r['ratio_max']:.2f}, {r['pairs']} pairs]"
              if r.get("paired") else " (unpaired)")
    print(f"compare {r['what']:6} {r['impl']:18} {r.get('dropout_prng') or '':12} "
          f"vs {r['vs_impl']:18} {r.get('preset')} "
          f"b{r['batch_size']} e{r['encoder_len']} beams={r.get('num_beams')}: "
          f"x{r['ratio']:.2f}{spread} load={r.get('load_avg_1m')}")
  elif r["kind"] in ("train", "decode", "seed_batch"):
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "-"
    tag = " no-triton-gemm" if "triton_gemm=false" in (r.get("xla_flags") or "") else ""
    print(f"{r['kind']:6} {r['impl']:18} {r.get('dropout_prng') or '':12} {r.get('preset')}{tag} "
          f"b{r['batch_size']} e{r['encoder_len']}{' remat' if r.get('remat') else ''}"
          f" d{r['decoder_len']} items={r['num_items']} {r['examples_per_s']:.1f} ex/s MFU {mfu}"
          f" peak_mem={r.get('peak_memory_bytes')}")
PYEOF
