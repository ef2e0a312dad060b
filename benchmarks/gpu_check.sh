#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one command, set-up included: at most 8 minutes (the
# limits below add up to that), on a bare machine whose python3 has torch: see docs/gpu.md.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      # default: $OUT, else runs/gpu_check
#
# PY: the Python (default .venv/bin/python when it exists, else python3). Set-up: what it
# lacks of pyproject's dependencies is installed from benchmarks/wheels (`make gpu-wheels`)
# with the project itself into runs/gpu_site (GPU_SITE), without the network and without
# touching torch or anything else installed (benchmarks/gpu_setup.py); then every stage
# runs under its own `timeout` (a stage that hangs is killed and reported):
#   doctor         `convnn doctor` (doctor.json, then the text): versions, devices, self-check
#   selfcheck      the Triton self-check's result on each GPU, read from doctor.json
#   cuda-tests     the CUDA tests: compiled Triton kernels vs PyTorch, offsets past 2**31,
#                  float64 fast == reference, bit-identical gradients in deterministic mode
#   deterministic  benchmarks/bench_deterministic.py: what deterministic mode costs
#   bench          benchmarks/bench_gpu.py cases: layers and training steps vs their baselines
#   compile        torch.compile of the ConvNN ViT-B block: compiles, agrees, time
#   memory         peak memory of ConvNN2d (all candidates, 56x56, batch 64) vs its 3x3 conv
#   quickstart     bf16 quickstart on the GPU, 2 seeds, vs a CPU float32 run
# Output in OUT_DIR, two files: gpu_check.log (every stage's output, up to 1 MiB each) and
# gpu_check.json (each stage's result, seconds and limit; the stages' numbers under
# "results"). The summary table is printed last. Exit status 1 when a precondition is
# missing (at once, one `gpu_check: error:` line) or any stage failed (after all ran).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT_DIR=${1:-${OUT:-runs/gpu_check}}
SITE=${GPU_SITE:-runs/gpu_site}
WHEELS=${GPU_WHEELS:-benchmarks/wheels}
KILL=2                # seconds between a stage's TERM and KILL
BUDGET=480            # the whole check, set-up included: every limit below, plus KILL each
LIMITS=(setup:30 preflight:30 nvidia-smi:5 doctor:30 selfcheck:5 cuda-tests:70
    deterministic:20 bench:85 compile:45 memory:20 quickstart:100 report:10)
limit() { local e; for e in "${LIMITS[@]}"; do [ "${e%%:*}" = "$1" ] && echo "${e#*:}"; done; }
LOG_CAP=1048576       # bytes of one stage's output kept (the rest is read and dropped)

fail() {
    echo "gpu_check: error: $*" >&2
    exit 1
}

total=0
for e in "${LIMITS[@]}"; do total=$((total + ${e#*:} + KILL)); done
[ "$total" -le "$BUDGET" ] || fail "the stage limits add up to ${total}s, over ${BUDGET}s"
if [ "${GPU_CHECK_LIMITS:-}" = print ]; then  # for the tests: the limits, then stop
    echo "budget $BUDGET kill $KILL total $total ${LIMITS[*]}"
    exit 0
fi
command -v timeout >/dev/null || fail "the 'timeout' command (coreutils) is missing"
command -v "$PY" >/dev/null || fail "no Python at $PY: set PY=... (default .venv/bin/python, else python3)"
mkdir -p "$OUT_DIR" || fail "cannot create $OUT_DIR"
LOG=$OUT_DIR/gpu_check.log
: >"$LOG"
export PYTHONUNBUFFERED=1

names=() states=() seconds=()
run() {  # run NAME COMMAND...: under NAME's limit, output to the terminal and the log
    local name=$1 lim start=$SECONDS rc
    lim=$(limit "$1")
    shift
    echo "== $name (limit ${lim}s): $*" | tee -a "$LOG"
    timeout --kill-after=$KILL "$lim" "$@" 2>&1 | { head -c $LOG_CAP; cat >/dev/null; } | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    names+=("$name") seconds+=($((SECONDS - start)))
    case $rc in
        0) states+=(ok) ;;
        124 | 137) states+=("TIMEOUT after ${lim}s") ;;
        *) states+=("FAILED (exit $rc)") ;;
    esac
    return "$rc"
}

# -- set-up: what PY lacks, from the wheel folder, into SITE (nothing when nothing lacks) ---
run setup "$PY" benchmarks/gpu_setup.py --wheels "$WHEELS" --site "$SITE" \
    || fail "set-up failed (${states[-1]}): $(tail -1 "$LOG" | sed 's/^gpu_setup: error: //')"
if [ -d "$SITE" ]; then
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
fi
# the project and its CLI import; then a GPU, or stop at once
run preflight "$PY" benchmarks/gpu_setup.py --preflight || {
    why=$(tail -1 "$LOG")
    case $why in
        "no CUDA device"*) fail "$why" ;;
        *) fail "the project does not import with $PY: $why" ;;
    esac
}
command -v nvidia-smi >/dev/null \
    && run nvidia-smi nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# -- the stages: each runs even if one before failed --------------------------------------
J=$OUT_DIR  # each stage's numbers: $J/<stage>.json, merged into gpu_check.json at the end
CUBLAS=(env CUBLAS_WORKSPACE_CONFIG=:4096:8)  # cuBLAS under deterministic mode
run doctor sh -c "\"$PY\" -m lightning_modules.cli doctor --json > \"$J/doctor.json\"; rc=\$?; \"$PY\" -m lightning_modules.cli doctor; exit \$rc"
run selfcheck "$PY" benchmarks/gpu_setup.py --selfcheck "$J/doctor.json"
run cuda-tests "${CUBLAS[@]}" "$PY" -m pytest -q -x -p no:cacheprovider -k cuda \
    tests/convnn/test_triton.py tests/convnn/test_fast_paths.py tests/convnn/test_deterministic.py
run deterministic "${CUBLAS[@]}" "$PY" benchmarks/bench_deterministic.py --json "$J/deterministic.json"
run bench "$PY" benchmarks/bench_gpu.py cases --json "$J/bench.json"
run compile "$PY" benchmarks/bench_gpu.py compile --json "$J/compile.json"
run memory "$PY" benchmarks/bench_gpu.py memory --json "$J/memory.json"
run quickstart "$PY" benchmarks/bench_gpu.py quickstart --json "$J/quickstart.json"

# -- gpu_check.json (every stage; the numbers merged), then the table, last ----------------
stages="["
for i in "${!names[@]}"; do
    stages+="{\"stage\": \"${names[$i]}\", \"result\": \"${states[$i]}\", \"seconds\": ${seconds[$i]}, \"limit\": $(limit "${names[$i]}")}"
    [ "$i" -eq $((${#names[@]} - 1)) ] || stages+=", "
done
echo "{\"stages\": $stages], \"total_seconds\": $SECONDS}" >"$OUT_DIR/gpu_check.json"
timeout --kill-after=$KILL "$(limit report)" "$PY" - "$OUT_DIR" >>"$LOG" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
report = json.loads((out / "gpu_check.json").read_text())
merged = sorted(p for p in out.glob("*.json") if p.name != "gpu_check.json")
report["results"] = {}
for p in merged:
    try:
        report["results"][p.stem] = json.loads(p.read_text())
    except ValueError as e:
        report["results"][p.stem] = {"unreadable": str(e)}
(out / "gpu_check.json").write_text(json.dumps(report, indent=2))
for p in merged:
    p.unlink()
EOF
failed=()
for i in "${!names[@]}"; do [ "${states[$i]}" = ok ] || failed+=("${names[$i]}"); done
[ ${#failed[@]} -eq 0 ] || echo "gpu_check: error: ${#failed[@]} stage(s) failed: ${failed[*]} (see $LOG)" >&2
{
    echo
    echo "| stage | result | seconds | limit |"
    echo "|---|---|---|---|"
    for i in "${!names[@]}"; do
        echo "| ${names[$i]} | ${states[$i]} | ${seconds[$i]} | $(limit "${names[$i]}") |"
    done
    echo "| total | ${#failed[@]} failed | $SECONDS | $BUDGET |"
} | tee -a "$LOG"
[ ${#failed[@]} -eq 0 ] || exit 1
