"""What deterministic mode costs the fast path's backward, measured in one process.

    python benchmarks/bench_deterministic.py [--device cuda|cpu] [--repeats 10] [--json OUT]

Under ``torch.use_deterministic_algorithms(True)`` the scatter-add of the gather
primitives' backward (``convnn/backends/blocked_gather.py``, ``_scatter_sum``) accumulates with
``index_put_(accumulate=True)`` (sorted) instead of ``index_add_`` (atomic adds on CUDA).
Times forward+backward of ConvNNAttention on the ``blocked`` path (softmax weights, sum
kernel: both primitives) in both modes, alternating the modes between repeats, and prints
the ratio deterministic / default: the whole layer, and the scatter-add alone.
Sizes: the ViT-B/16 layout (197 tokens, dim 768, 12 heads, k = 9, batch 64, bf16) on CUDA;
batch 8 in float32 on the CPU (``--batch`` changes it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS under deterministic mode


def timed(fn: Callable[[], object], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare(fn: Callable[[], object], device: str, repeats: int) -> dict:
    """Median seconds of ``fn`` with deterministic mode off and on (alternating)."""
    before = torch.are_deterministic_algorithms_enabled()
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for mode in (False, True):  # warm-up, both modes
            torch.use_deterministic_algorithms(mode)
            fn()
        for _ in range(repeats):
            for mode in (False, True):
                torch.use_deterministic_algorithms(mode)
                times[mode].append(timed(fn, device))
    finally:
        torch.use_deterministic_algorithms(before)
    default, det = statistics.median(times[False]), statistics.median(times[True])
    return dict(default_ms=default * 1e3, deterministic_ms=det * 1e3, ratio=det / default)


def layer_step(device: str, dtype: torch.dtype, batch: int) -> Callable[[], None]:
    import convnn

    torch.manual_seed(0)
    layer = convnn.ConvNNAttention(768, 12, k=9, qkv_bias=True, backend="blocked").to(device)
    x = torch.randn(batch, 197, 768, device=device)

    def run() -> None:
        inp = x.detach().requires_grad_(True)
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            layer(inp).float().sum().backward()

    return run


def scatter_step(device: str, dtype: torch.dtype, batch: int) -> Callable[[], None]:
    """The scatter-add alone, at the layer's sizes (heads x tokens x k into 64 channels)."""
    from convnn.backends.blocked_gather import _scatter_sum

    g = torch.Generator().manual_seed(0)
    index = torch.randint(0, 197, (batch, 12, 197, 9), generator=g).to(device)
    w = torch.randn(batch, 12, 197, 9, generator=g).to(device, dtype)
    x = torch.randn(batch, 12, 197, 64, generator=g).to(device, dtype)
    return lambda: _scatter_sum(197, index, w, x)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--batch", type=int, help="default: 64 on CUDA, 8 on the CPU")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", help="write the rows to this file")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_deterministic: error: no CUDA device")
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    batch = args.batch or (64 if args.device == "cuda" else 8)
    rows = []
    for name, build in (("ConvNNAttention fwd+bwd", layer_step), ("scatter-add", scatter_step)):
        row = compare(build(args.device, dtype, batch), args.device, args.repeats)
        rows.append(dict(case=f"{name}, ViT-B/16 layout, k=9, B={batch}", **row))
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {where}, {dtype}, median of {args.repeats}")
    print("| case | default | deterministic | ratio |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['default_ms']:.2f} ms | {r['deterministic_ms']:.2f} ms | "
              f"{r['ratio']:.2f}x |")  # fmt: skip
    if args.json:
        info = dict(torch=torch.__version__, device=where, dtype=str(dtype), rows=rows)
        Path(args.json).write_text(json.dumps(info, indent=2))
    return rows


if __name__ == "__main__":
    main()
