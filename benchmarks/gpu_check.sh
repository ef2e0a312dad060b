#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one call (the lent GPU machine has ~15 min):
# the fast-path and exactness tests on the GPU's default backend (Triton kernels
# compiled, not interpreted), then the GPU benchmark. Usage: bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv || true
timeout 300 "$PY" -m pytest -q -x tests/test_fast_paths.py tests/test_exactness.py
timeout 240 "$PY" benchmarks/bench_convnn.py --device cuda --repeats 10 --json "${OUT:-.}/bench_gpu.json"
