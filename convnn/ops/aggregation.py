"""Aggregation kernels over the ``k`` weighted neighbors (SPEC §1.7).

Each is a 1-D convolution with kernel size ``k`` and stride ``k`` over the
concatenated neighbor list; tap ``j`` is applied to neighbor ``j``.

Weight layouts (``C`` input channels, ``O`` output channels):
    standard:  ``weight (O, C, k)`` — the layout of ``nn.Conv2d.weight.flatten(2)``.
    depthwise: ``weight (O, k)`` with ``O`` a multiple of ``C`` (channel multiplier).
    separable: ``weight (C, k)`` depthwise, then ``pointwise_weight (O, C)``.
    sum:       no weight, ``O = C``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def weight_shapes(kernel: str, in_channels: int, out_channels: int, k: int) -> dict[str, tuple]:
    """Parameter shapes of each kernel: ``{"weight": ..., "pointwise_weight": ...}``."""
    if kernel == "standard":
        return {"weight": (out_channels, in_channels, k)}
    if kernel == "depthwise":
        return {"weight": (out_channels, k)}
    if kernel == "separable":
        return {"weight": (in_channels, k), "pointwise_weight": (out_channels, in_channels)}
    return {}


def aggregate(
    neighbors: Tensor,
    weights: Tensor | None,
    kernel: str,
    weight: Tensor | None = None,
    pointwise_weight: Tensor | None = None,
    bias: Tensor | None = None,
) -> Tensor:
    """Weighted neighbors ``(*, Nq, k, C)`` -> ``(*, Nq, O)``.

    Args:
        neighbors: gathered values of the selected neighbors, ``(*, Nq, k, C)``.
        weights: per-neighbor weights ``(*, Nq, k)`` or ``None`` (all ones).
        kernel: ``standard``, ``depthwise``, ``separable`` or ``sum``.
    """
    scale = None
    if weights is not None:
        # each query's weights at most 1 in size, their scale applied after the kernel: a
        # value times a raw similarity (a distance, a dot product) can exceed float16's range
        # before the kernel's weights bring it back
        scale = weights.detach().abs().amax(-1, keepdim=True)  # (*, Nq, 1)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        neighbors = neighbors * (weights / scale).unsqueeze(-1).to(neighbors.dtype)
    *batch, Nq, k, C = neighbors.shape
    if kernel == "standard":
        assert weight is not None
        taps = weight.permute(2, 1, 0).reshape(k * C, -1)  # (k*C, O)
        out = neighbors.reshape(*batch, Nq, k * C) @ taps.to(neighbors.dtype)
    elif kernel == "depthwise":
        assert weight is not None
        multiplier = weight.shape[0] // C
        if multiplier > 1:
            neighbors = neighbors.repeat_interleave(multiplier, dim=-1)
        out = (neighbors * weight.t().to(neighbors.dtype)).sum(-2)
    elif kernel == "separable":
        assert weight is not None and pointwise_weight is not None
        out = (neighbors * weight.t().to(neighbors.dtype)).sum(-2)
        out = out @ pointwise_weight.t().to(out.dtype)
    else:
        out = neighbors.sum(-2)
    if scale is not None:
        out = (out * scale).to(out.dtype)  # the product in at least the weights' precision
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out
