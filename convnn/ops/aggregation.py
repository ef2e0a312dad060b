"""Aggregation kernels over the ``k`` weighted neighbors (docs/method.md §1.7).

Each is a 1-D convolution with kernel size ``k`` and stride ``k`` over the
concatenated neighbor list; tap ``j`` is applied to neighbor ``j``.

Weight layouts (``C`` input channels, ``O`` output channels):
    standard:  ``weight (O, C, k)`` — the layout of ``nn.Conv2d.weight.flatten(2)``.
    depthwise: ``weight (O, k)`` with ``O`` a multiple of ``C`` (channel multiplier).
    separable: ``weight (C, k)`` depthwise, then ``pointwise_weight (O, C)``.
    sum:       no weight, ``O = C``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from ..options import Kernel, check_option_table, option_entry


def _standard(neighbors: Tensor, weight: Tensor | None, pointwise: Tensor | None) -> Tensor:
    assert weight is not None
    *batch, Nq, k, C = neighbors.shape
    taps = weight.permute(2, 1, 0).reshape(k * C, -1)  # (k*C, O)
    return neighbors.reshape(*batch, Nq, k * C) @ taps.to(neighbors.dtype)


def _depthwise(neighbors: Tensor, weight: Tensor | None, pointwise: Tensor | None) -> Tensor:
    assert weight is not None
    multiplier = weight.shape[0] // neighbors.shape[-1]
    if multiplier > 1:
        neighbors = neighbors.repeat_interleave(multiplier, dim=-1)
    return (neighbors * weight.t().to(neighbors.dtype)).sum(-2)


def _separable(neighbors: Tensor, weight: Tensor | None, pointwise: Tensor | None) -> Tensor:
    assert weight is not None and pointwise is not None
    out = (neighbors * weight.t().to(neighbors.dtype)).sum(-2)
    return out @ pointwise.t().to(out.dtype)


def _sum(neighbors: Tensor, weight: Tensor | None, pointwise: Tensor | None) -> Tensor:
    return neighbors.sum(-2)


# As convolutions of a map ``x`` ``(B, C, H, W)`` with the taps in raster order:
# ``(x, weight, pointwise, bias, kernel_size, stride, padding) -> (B, O, Ho, Wo)``.


def _conv_standard(x, weight, pointwise, bias, kernel_size, stride, padding) -> Tensor:
    C = x.shape[1]
    return F.conv2d(x, weight.view(weight.shape[0], C, *kernel_size), bias, stride, padding)


def _conv_depthwise(x, weight, pointwise, bias, kernel_size, stride, padding) -> Tensor:
    C = x.shape[1]
    return F.conv2d(x, weight.view(-1, 1, *kernel_size), bias, stride, padding, groups=C)


def _conv_separable(x, weight, pointwise, bias, kernel_size, stride, padding) -> Tensor:
    C = x.shape[1]
    y = F.conv2d(x, weight.view(-1, 1, *kernel_size), None, stride, padding, groups=C)
    return F.conv2d(y, pointwise[:, :, None, None], bias)


def _conv_sum(x, weight, pointwise, bias, kernel_size, stride, padding) -> Tensor:
    C = x.shape[1]
    ones = x.new_ones(C, 1, *kernel_size)
    return F.conv2d(x, ones, bias, stride, padding, groups=C)


@dataclass(frozen=True)
class KernelSpec:
    """One value of the ``kernel`` option and everything every path needs of it.

    Attributes:
        name: the option value.
        shapes: ``(C, O, k) -> {"weight": shape, "pointwise_weight": shape}`` of its
            parameters (the layouts above; none for ``sum``).
        apply: ``(neighbors (*, Nq, k, C), weight, pointwise_weight) -> (*, Nq, O)`` on
            already weighted neighbors (:func:`aggregate`).
        conv2d: the kernel as ``F.conv2d`` of a map, taps in raster order
            (``backends.conv``).
        flops: ``(Nq, k, C, O) -> FLOPs`` (``2 x`` multiply-adds, ``tools.profile``).
        per_tap: ``weight`` is ``(channels, k)``, one factor per channel and tap
            (``depthwise``, ``separable``).
        pointwise: a ``pointwise_weight`` ``(O, C)`` follows (``separable``).
    """

    name: str
    shapes: Callable[[int, int, int], dict[str, tuple]]
    apply: Callable[[Tensor, Tensor | None, Tensor | None], Tensor]
    conv2d: Callable[..., Tensor]
    flops: Callable[[int, int, int, int], int]
    per_tap: bool = False
    pointwise: bool = False


KERNELS: dict[str, KernelSpec] = {
    spec.name: spec
    for spec in (
        KernelSpec(
            "standard",
            lambda c, o, k: {"weight": (o, c, k)},
            _standard,
            _conv_standard,
            lambda nq, k, c, o: 2 * nq * k * c * o,
        ),
        KernelSpec(
            "depthwise",
            lambda c, o, k: {"weight": (o, k)},
            _depthwise,
            _conv_depthwise,
            lambda nq, k, c, o: 2 * nq * k * o,
            per_tap=True,
        ),
        KernelSpec(
            "separable",
            lambda c, o, k: {"weight": (c, k), "pointwise_weight": (o, c)},
            _separable,
            _conv_separable,
            lambda nq, k, c, o: 2 * nq * k * c + 2 * nq * c * o,
            per_tap=True,
            pointwise=True,
        ),
        KernelSpec("sum", lambda c, o, k: {}, _sum, _conv_sum, lambda nq, k, c, o: nq * k * c),
    )
}
"""Every value of the ``kernel`` option (:data:`convnn.options.Kernel`), by name."""
check_option_table("kernel", KERNELS, get_args(Kernel))


def kernel_spec(kernel: str, key: str = "kernel") -> KernelSpec:
    """The table entry of ``kernel``; an unknown one raises
    :class:`~convnn.errors.OptionError` naming ``key`` and the allowed values."""
    return option_entry(KERNELS, key, kernel)


def weight_shapes(kernel: str, in_channels: int, out_channels: int, k: int) -> dict[str, tuple]:
    """Parameter shapes of each kernel: ``{"weight": ..., "pointwise_weight": ...}``."""
    return kernel_spec(kernel).shapes(in_channels, out_channels, k)


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
    spec = kernel_spec(kernel)
    scale = None
    if weights is not None:
        # each query's weights at most 1 in size, their scale applied after the kernel: a
        # value times a raw similarity (a distance, a dot product) can exceed float16's range
        # before the kernel's weights bring it back
        scale = weights.detach().abs().amax(-1, keepdim=True)  # (*, Nq, 1)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        neighbors = neighbors * (weights / scale).unsqueeze(-1).to(neighbors.dtype)
    out = spec.apply(neighbors, weight, pointwise_weight)
    if scale is not None:
        out = (out * scale).to(out.dtype)  # the product in at least the weights' precision
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out
