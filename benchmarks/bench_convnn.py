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


def vit_tiny_32(attn_layer: type[nn.Module]) -> nn.Module:
    """ViT-Tiny (192 wide, 12 blocks, 3 heads) on 32x32 images with 4x4 patches."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3,
                             num_classes=10, attn_layer=attn_layer)  # fmt: skip


def train_step(model: nn.Module, images: torch.Tensor) -> Step:
    """One SGD training step (forward, cross-entropy, backward, update)."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    labels = torch.arange(images.shape[0]) % 10

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        opt.step()

    return run


def gpu_cases() -> list[Case]:
    """ViT-B/16 attention at 224 (197 tokens, B=64, bf16) and ResNet-50 stage sizes."""
    out = []
    dev, bf16 = "cuda", torch.bfloat16
    t = torch.randn(64, 197, 768, device=dev, dtype=bf16)
    attn = Attention(768, 12, qkv_bias=True).to(dev, bf16)
    for k in (9, 16):
        cnn = convnn.ConvNNAttention.from_attention(attn, k=k)
        out.append(Case(f"[cuda bf16] ConvNNAttention k={k}, ViT-B/16, B=64", "time <= 1.3x",
                        step(cnn, t), step(attn, t), "flash attention (SDPA)", 1.3))  # fmt: skip
    for C, H in ((64, 56), (128, 28), (256, 14), (512, 7)):
        x = torch.randn(64, C, H, H, device=dev, dtype=bf16)
        conv = conv3x3(C).to(dev, bf16)
        cnn = convnn.ConvNN2d(C, C, 3, padding=1, similarity="cosine", k=9).to(dev, bf16)
        out.append(Case(f"[cuda bf16] ConvNN2d all cosine k=9, C={C} {H}x{H}, B=64", "report",
                        step(cnn, x), step(conv, x), "nn.Conv2d 3x3"))  # fmt: skip
    return out


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
    images = torch.randn(16, 3, 32, 32)
    torch.manual_seed(0)
    cnn_vit = vit_tiny_32(convnn.ConvNNAttention)
    torch.manual_seed(0)
    vit = vit_tiny_32(Attention)
    out.append(Case("training step convnn ViT-Tiny patch4 32x32 (k=9), B=16", "throughput >= 0.7x",
                    train_step(cnn_vit, images), train_step(vit, images), "timm ViT-Tiny",
                    max_time_ratio=1 / 0.7))  # fmt: skip
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
        "| case | baseline | time ratio | memory ratio | ConvNN time | ConvNN peak | target "
        "| met |",
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
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    all_cases = gpu_cases() if args.device == "cuda" else cases()
    for case in all_cases:
        if args.only and args.only not in case.name:
            continue
        rows.append(run_case(case, args.repeats))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    print()
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{args.threads} threads"
    print(f"torch {torch.__version__}, {where}")
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(torch=torch.__version__, threads=args.threads, rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
