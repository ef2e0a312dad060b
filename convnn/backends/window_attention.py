"""Fused neighborhood attention on maps: the math of the ``window_attention`` path.

ConvNN2d with zero-padded ``s x s`` windows, every position selected, softmax(dot)
weighting and the ``sum`` kernel, stride 1 and "same" padding: for each query
``out = sum_j softmax_j(q . x_j / sqrt(C)) x_j`` over the window offsets ``j``.

The autograd function keeps only the input and the ``(B, s*s, H, W)`` weights;
it works one sample at a time, so its temporaries are ``1/B`` of a feature map,
and the backward pass recomputes what it needs. Positions outside the map are
zero tokens: score 0 (they still take part in the softmax), value 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..ops.similarity import score_dtype


def _regions(H: int, W: int, dy: int, dx: int):
    """Slices of the queries whose neighbor at offset (dy, dx) is inside the map, and of
    those neighbors."""
    q = (slice(max(0, -dy), H - max(0, dy)), slice(max(0, -dx), W - max(0, dx)))
    n = (slice(max(0, dy), H + min(0, dy)), slice(max(0, dx), W + min(0, dx)))
    return q, n


def _offsets(window: tuple[int, int]) -> list[tuple[int, int]]:
    rh, rw = window[0] // 2, window[1] // 2
    return [(dy, dx) for dy in range(-rh, rh + 1) for dx in range(-rw, rw + 1)]


class _WindowAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, window: tuple[int, int]) -> Tensor:
        B, C, H, W = x.shape
        offsets = _offsets(window)
        scale = 1 / math.sqrt(C)
        dtype = score_dtype(x.dtype)
        weights = x.new_zeros(B, len(offsets), H, W, dtype=dtype)
        out = torch.zeros_like(x)
        for b in range(B):
            xb = x[b].to(dtype)
            for j, (dy, dx) in enumerate(offsets):
                (qr, qc), (nr, nc) = _regions(H, W, dy, dx)
                weights[b, j, qr, qc] = (xb[:, qr, qc] * xb[:, nr, nc]).sum(0)
            weights[b].mul_(scale)
            weights[b] = weights[b].softmax(0)
            for j, (dy, dx) in enumerate(offsets):
                (qr, qc), (nr, nc) = _regions(H, W, dy, dx)
                wj = weights[b, j, qr, qc].to(x.dtype)
                out[b, :, qr, qc].addcmul_(wj, x[b, :, nr, nc])
        ctx.save_for_backward(x, weights)
        ctx.offsets = offsets
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weights = ctx.saved_tensors
        B, C, H, W = x.shape
        scale = 1 / math.sqrt(C)
        grad_x = torch.zeros_like(x)
        for b in range(B):
            xb, gb, wb = x[b], grad[b], weights[b]
            grad_w = torch.zeros_like(wb)
            for j, (dy, dx) in enumerate(ctx.offsets):
                (qr, qc), (nr, nc) = _regions(H, W, dy, dx)
                grad_w[j, qr, qc] = (gb[:, qr, qc] * xb[:, nr, nc]).sum(0).to(wb.dtype)
                grad_x[b, :, nr, nc].addcmul_(wb[j, qr, qc].to(x.dtype), gb[:, qr, qc])
            grad_s = wb * (grad_w - (grad_w * wb).sum(0, keepdim=True))  # softmax backward
            grad_s.mul_(scale)
            for j, (dy, dx) in enumerate(ctx.offsets):
                (qr, qc), (nr, nc) = _regions(H, W, dy, dx)
                gs = grad_s[j, qr, qc].to(x.dtype)
                grad_x[b, :, qr, qc].addcmul_(gs, xb[:, nr, nc])
                grad_x[b, :, nr, nc].addcmul_(gs, xb[:, qr, qc])
        return grad_x, None


def window_attention(x: Tensor, window: tuple[int, int], bias: Tensor | None = None) -> Tensor:
    """Zero-padded neighborhood attention with identity features: ``(B, C, H, W)`` -> same."""
    out = _WindowAttention.apply(x, tuple(window))
    return out if bias is None else out + bias.view(1, -1, 1, 1)
