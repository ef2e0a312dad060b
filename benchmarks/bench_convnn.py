"""Speed and memory of ConvNN against baselines run in the same process.

    python benchmarks/bench_convnn.py [--json OUT] [--repeats 10] [--only NAME]

Each case times forward+backward (median of ``--repeats`` runs after warm-up)
and measures the peak memory of the tensors it allocates, for ConvNN and for its
baseline: the reference backend (dense similarity, k-fold copy), ``nn.Conv2d``
for CNN cases, multi-head attention through ``F.scaled_dot_product_attention``
(timm ``Attention``) for attention cases. Prints a Markdown table of ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("KINETO_LOG_LEVEL", "5")

import torch  # noqa: E402
from timm.layers import Attention  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from measure import median_time, peak_memory  # noqa: E402

import convnn  # noqa: E402

Step = Callable[[], None]


@dataclass
class Case:
    name: str
    target: str
    convnn: Step
    baseline: Step
    baseline_name: str
    max_time_ratio: float | None = None
    max_memory_ratio: float | None = None
    max_memory_bytes: int | None = None
    min_throughput_ratio: float | None = None


def step(module: nn.Module, x: torch.Tensor) -> Step:
    """One forward+backward of ``module`` on a fresh leaf copy of ``x``."""

    def run() -> None:
        inp = x.detach().requires_grad_(True)
        module(inp).sum().backward()

    return run


def map_input(B: int, C: int, H: int) -> torch.Tensor:
    return torch.randn(B, C, H, H)


def conv3x3(C: int) -> nn.Conv2d:
    return nn.Conv2d(C, C, 3, padding=1)


def cases() -> list[Case]:
    out = []
    x = map_input(2, 64, 56)
    layer = dict(kernel_size=3, padding=1, similarity="cosine", k=9)
    fast = convnn.ConvNN2d(64, 64, backend="fast", **layer)
    ref = convnn.ConvNN2d(64, 64, backend="reference", **layer)
    ref.load_state_dict(fast.state_dict())
    out.append(
        Case(
            "ConvNN2d all cosine k=9, C=64 56x56 B=2",
            "time <= 0.5x, memory <= 0.3x",
            step(fast, x),
            step(ref, x),
            "reference backend",
            0.5,
            0.3,
        )
    )

    x = map_input(8, 64, 56)
    conv = conv3x3(64)
    out.append(
        Case(
            "ConvNN2d as 3x3 conv, C=64 56x56 B=8",
            "time <= 1.2x",
            step(convnn.ConvNN2d.from_conv2d(conv), x),
            step(conv, x),
            "nn.Conv2d",
            1.2,
        )
    )

    na = convnn.ConvNN2d(
        64,
        64,
        3,
        padding=1,
        candidates="window",
        similarity="dot",
        weighting="softmax",
        kernel="sum",
    )
    out.append(
        Case(
            "ConvNN2d 3x3 window softmax(dot), C=64 56x56 B=8",
            "time, memory <= 3x",
            step(na, x),
            step(conv, x),
            "nn.Conv2d 3x3",
            3.0,
            3.0,
        )
    )

    for dim, heads, B in ((192, 3, 32), (768, 12, 8)):
        t = torch.randn(B, 197, dim)
        attn = Attention(dim, heads, qkv_bias=True)
        cnn = convnn.ConvNNAttention.from_attention(attn, k=9)
        out.append(
            Case(
                f"ConvNNAttention all k=9, dim {dim}, {heads} heads, 197 tok, B={B}",
                "time <= 2.0x, memory <= 1.5x",
                step(cnn, t),
                step(attn, t),
                "SDPA attention",
                2.0,
                1.5,
            )
        )
    t = torch.randn(32, 197, 192)
    attn = Attention(192, 3, qkv_bias=True)
    out.append(
        Case(
            "ConvNNAttention k=N, dim 192, B=32",
            "time <= 1.1x",
            step(convnn.ConvNNAttention.from_attention(attn), t),
            step(attn, t),
            "SDPA attention",
            1.1,
        )
    )

    x = map_input(1, 64, 112)
    big = convnn.ConvNN2d(64, 64, **layer)
    out.append(
        Case(
            "ConvNN2d all cosine k=9, C=64 112x112 B=1",
            "peak memory < 1 GiB",
            step(big, x),
            step(conv3x3(64), x),
            "nn.Conv2d 3x3",
            max_memory_bytes=2**30,
        )
    )
    return out


def run_case(case: Case, repeats: int) -> dict:
    t_new, t_base = median_time(case.convnn, repeats), median_time(case.baseline, repeats)
    m_new, m_base = peak_memory(case.convnn), peak_memory(case.baseline)
    row = dict(
        name=case.name,
        baseline=case.baseline_name,
        target=case.target,
        time_s=t_new,
        baseline_time_s=t_base,
        time_ratio=t_new / t_base,
        memory_bytes=m_new,
        baseline_memory_bytes=m_base,
        memory_ratio=m_new / max(m_base, 1),
    )
    ok = True
    if case.max_time_ratio is not None:
        ok &= row["time_ratio"] <= case.max_time_ratio
    if case.max_memory_ratio is not None:
        ok &= row["memory_ratio"] <= case.max_memory_ratio
    if case.max_memory_bytes is not None:
        ok &= m_new < case.max_memory_bytes
    row["met"] = bool(ok)
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "| case | baseline | time ratio | memory ratio | ConvNN time | ConvNN peak | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['baseline']} | {r['time_ratio']:.2f}x | {r['memory_ratio']:.2f}x "
            f"| {r['time_s'] * 1e3:.1f} ms | {r['memory_bytes'] / 2**20:.0f} MiB | {r['target']} "
            f"| {'yes' if r['met'] else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write the numbers to this file")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--only", help="run the cases whose name contains this text")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for case in cases():
        if args.only and args.only not in case.name:
            continue
        rows.append(run_case(case, args.repeats))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(f"torch {torch.__version__}, {args.threads} threads, float32")
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(torch=torch.__version__, threads=args.threads, rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
