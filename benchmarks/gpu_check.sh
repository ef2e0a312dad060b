#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one command (about 5 minutes, at most 8): see docs/gpu.md.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      # default: $OUT, else runs/gpu_check
#
# Stages, each under its own `timeout` (a stage that hangs is killed and reported):
#   doctor      `convnn doctor`: versions, devices, paths, the Triton self-check of each GPU
#   cuda-tests  the CUDA tests (compiled Triton kernels vs PyTorch, offsets past 2**31,
#               float64 fast == reference to 1e-10, the self-check)
#   bench       benchmarks/bench_gpu.py cases: ViT-B/16 attention k=9/16 vs flash attention,
#               ResNet-50 stage sizes vs cuDNN, training steps of convnn_vit_base_patch16_224
#               and convnn_resnet50 at batch 64 vs their baselines (bf16, peak memory)
#   quickstart  200 bf16 steps of configs/quickstart.yaml on the GPU vs the same on the CPU
# Output: a summary table on stdout, logs and JSON in OUT_DIR (gpu_check.json lists the
# stages; bench_gpu.json, quickstart.json, doctor.json hold the numbers). Exit status 1
# when a precondition is missing (at once) or any stage failed (after all stages ran).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT_DIR=${1:-${OUT:-runs/gpu_check}}

fail() {
    echo "gpu_check: error: $*" >&2
    exit 1
}

command -v timeout >/dev/null || fail "the 'timeout' command (coreutils) is missing"
[ -x "$PY" ] || fail "no Python at $PY: run 'make test' once (it creates .venv) or set PY=..."
why=$(timeout 30 "$PY" -c '
import torch
if not torch.cuda.is_available():
    print(f"no CUDA device (torch.cuda.is_available() is False; torch {torch.__version__}, "
          f"built for CUDA {torch.version.cuda})")
' 2>&1) || fail "cannot import torch with $PY: ${why##*$'\n'}"
[ -z "$why" ] || fail "$why"
mkdir -p "$OUT_DIR" || fail "cannot create $OUT_DIR"
command -v nvidia-smi >/dev/null && timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

names=() states=() seconds=()
stage() {  # stage NAME LIMIT_S COMMAND...: run, log to OUT_DIR/NAME.log, record the result
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "== $name (limit ${limit}s): $*"
    timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log"
    rc=${PIPESTATUS[0]}
    names+=("$name") seconds+=($((SECONDS - start)))
    case $rc in
        0) states+=(ok) ;;
        124 | 137) states+=("TIMEOUT after ${limit}s") ;;
        *) states+=("FAILED (exit $rc)") ;;
    esac
}

export PYTHONUNBUFFERED=1
stage doctor 45 sh -c "\"$PY\" -m lightning_modules.cli doctor && \"$PY\" -m lightning_modules.cli doctor --json > \"$OUT_DIR/doctor.json\""
stage cuda-tests 110 "$PY" -m pytest -q -x -p no:cacheprovider -k cuda tests/test_triton.py tests/test_fast_paths.py
stage bench 140 "$PY" benchmarks/bench_gpu.py cases --json "$OUT_DIR/bench_gpu.json"
stage quickstart 100 "$PY" benchmarks/bench_gpu.py quickstart --steps 200 --json "$OUT_DIR/quickstart.json"

echo
echo "| stage | result | seconds | log |"
echo "|---|---|---|---|"
failed=0
json="["
for i in "${!names[@]}"; do
    echo "| ${names[$i]} | ${states[$i]} | ${seconds[$i]} | $OUT_DIR/${names[$i]}.log |"
    [ "${states[$i]}" = ok ] || failed=1
    json+="{\"stage\": \"${names[$i]}\", \"result\": \"${states[$i]}\", \"seconds\": ${seconds[$i]}}"
    [ "$i" -eq $((${#names[@]} - 1)) ] || json+=", "
done
echo "{\"stages\": $json], \"total_seconds\": $SECONDS}" > "$OUT_DIR/gpu_check.json"
echo "total: ${SECONDS}s; numbers: $OUT_DIR/bench_gpu.json, $OUT_DIR/quickstart.json"
[ "$failed" -eq 0 ] || fail "a stage failed (see the table above)"
