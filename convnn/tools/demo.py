"""``make demo``: build ConvNN at its exact special cases and print the errors.

Run with ``python -m convnn.tools.demo``. Each row configures ConvNN as a known
PyTorch operation, runs both in float64 and reports the maximum absolute error,
for the plain reference backend and for the fast backend (which may dispatch an
exact special case to the PyTorch op itself, hence errors of 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from timm.layers import Attention
from torch import nn

from .. import ConvNN2d, ConvNNAttention, ConvNNOptions, Grid, convnn


def _conv_case(kernel_size: int, stride: int, groups: int, backend: str) -> float:
    conv = nn.Conv2d(8, 8, kernel_size, stride, kernel_size // 2, groups=groups).double()
    x = torch.randn(2, 8, 13, 17, dtype=torch.float64)
    return (ConvNN2d.from_conv2d(conv, backend=backend)(x) - conv(x)).abs().max().item()


def _attention_case(k: int | None, backend: str) -> float:
    attn = Attention(64, num_heads=4, qkv_bias=True).double().eval()
    x = torch.randn(2, 50, 64, dtype=torch.float64)
    layer = ConvNNAttention.from_attention(attn, k=k, backend=backend).eval()
    if k is None:
        return (layer(x) - attn(x)).abs().max().item()
    B, N, _ = x.shape
    q, key, v = attn.qkv(x).reshape(B, N, 3, 4, 16).permute(2, 0, 3, 1, 4)
    scores = q @ key.transpose(-2, -1) / 4.0
    kth = scores.topk(k, dim=-1).values[..., -1:]
    scores = scores.masked_fill(scores < kth, float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, N, 64)
    return (layer(x) - attn.proj(out)).abs().max().item()


def _neighborhood_case(s: int, backend: str) -> float:
    H, W, D = 9, 12, 16
    q, key, v = torch.randn(3, 2, H * W, D, dtype=torch.float64)
    rows = (torch.arange(H) - s // 2).clamp(0, H - s)
    cols = (torch.arange(W) - s // 2).clamp(0, W - s)
    r_in = (torch.arange(H)[None] >= rows[:, None]) & (torch.arange(H)[None] < rows[:, None] + s)
    c_in = (torch.arange(W)[None] >= cols[:, None]) & (torch.arange(W)[None] < cols[:, None] + s)
    mask = (r_in[:, None, :, None] & c_in[None, :, None, :]).reshape(H * W, H * W)
    expected = F.scaled_dot_product_attention(q, key, v, attn_mask=mask)
    opts = ConvNNOptions(
        k=s * s, similarity="dot", weighting="softmax", kernel="sum",
        candidates="window", window_size=s, window_border="shift", backend=backend,
    )  # fmt: skip
    return (convnn(v, q, key, options=opts, grid=Grid(H, W)) - expected).abs().max().item()


def main() -> None:
    torch.manual_seed(0)
    cases = [
        ("nn.Conv2d 3x3", "window/location, k=9, offset order, standard", _conv_case, (3, 1, 1)),
        ("nn.Conv2d 7x7 stride 2", "window/location, k=49, standard", _conv_case, (7, 2, 1)),
        ("depthwise nn.Conv2d 5x5", "window/location, k=25, depthwise", _conv_case, (5, 1, 8)),
        ("multi-head self-attention", "dot, k=N, softmax, sum", _attention_case, (None,)),
        ("KVT top-k attention", "dot, k=8 < N, softmax, sum", _attention_case, (8,)),
        ("neighborhood attention 3x3", "window shift, k=9, softmax(dot)", _neighborhood_case, (3,)),
        ("neighborhood attention 5x5", "window shift, k=25, softmax dot", _neighborhood_case, (5,)),
    ]  # fmt: skip
    table = Table(title="ConvNN exact special cases (float64, max abs error vs PyTorch)")
    for col in ("PyTorch operation", "ConvNN settings", "reference backend", "fast backend"):
        table.add_column(col)
    for name, settings, case, args in cases:
        cells = []
        for backend in ("reference", "fast"):
            err = case(*args, backend)
            style = "green" if err < 1e-10 else "red"
            cells.append(f"[{style}]{err:.1e}[/{style}]")
        table.add_row(name, settings, *cells)
    Console().print(table)


if __name__ == "__main__":
    main()
