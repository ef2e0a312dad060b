"""Branching convolution (docs/method.md §3): ConvNN and Conv2d side by side."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import OptionError
from ..options import ConvNNOptions
from ..validation import check_positive_int, check_ratio
from .conv_layers import ConvNN2d


def convnn_share(ratio: float, total: int, what: str) -> int:
    """How many of ``total`` channels (or heads) a branching ``ratio`` gives the ConvNN
    branch: ``floor(ratio * total + 0.5)``, halves rounded up (0.5 of 5 is 3, of 7 is 4),
    computed on the ratio's decimal value (``0.29`` of 50 is 14.5, so 15; in binary floats
    ``0.29 * 50`` is 14.499999999999998).

    A ratio strictly between 0 and 1 must leave both branches non-empty; one that rounds
    to 0 or to ``total`` is an :class:`~convnn.errors.OptionError`.
    """
    check_ratio("ratio", ratio)
    share = math.floor(Fraction(repr(float(ratio))) * total + Fraction(1, 2))
    if 0 < ratio < 1 and share in (0, total):
        branch = "ConvNN" if share == 0 else "baseline"
        raise OptionError(
            f"ratio={ratio} of {total} {what} gives the {branch} branch no {what}; "
            f"allowed: a ratio with 0.5 / {total} <= ratio < 1 - 0.5 / {total}, or exactly 0 or 1",
            key="ratio",
        )
    return share


class BranchingConv2d(nn.Module):
    """``convnn_share(ratio, out_channels)`` output channels from a :class:`ConvNN2d`
    branch (``convnn``), the rest from an ``nn.Conv2d`` branch (``conv``); both read
    all input channels and their outputs are concatenated (ConvNN first), then an
    optional 1x1 ``mix`` projection. ``ratio=0`` builds only ``conv`` (exactly the
    baseline layer), ``ratio=1`` only ``convnn``.

    ``options``/``overrides`` configure the ConvNN branch (as in :class:`ConvNN2d`).

    ``(B, C, H, W) -> (B, out_channels, Ho, Wo)`` with Conv2d's output size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | str = 1,
        bias: bool = True,
        *,
        ratio: float = 0.5,
        mix: bool = False,
        options: ConvNNOptions | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        check_positive_int("out_channels", out_channels)
        self.ratio = ratio
        self.convnn_channels = convnn_share(ratio, out_channels, "output channels")
        conv_channels = out_channels - self.convnn_channels
        dd = {"device": device, "dtype": dtype}
        self.convnn = None
        self.conv = None
        if self.convnn_channels:
            self.convnn = ConvNN2d(
                in_channels,
                self.convnn_channels,
                kernel_size,
                stride,
                padding,
                bias,
                options=options,
                **overrides,
                **dd,
            )
        if conv_channels:
            self.conv = nn.Conv2d(
                in_channels, conv_channels, kernel_size, stride, padding, bias=bias, **dd
            )
        self.mix = nn.Conv2d(out_channels, out_channels, 1, **dd) if mix else None
        self._register_load_state_dict_pre_hook(_baseline_names, with_module=True)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, O, Ho, Wo)``."""
        parts = [branch(x) for branch in (self.convnn, self.conv) if branch is not None]
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return out if self.mix is None else self.mix(out)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, convnn_channels={self.convnn_channels}"


def _baseline_names(layer: BranchingConv2d, state_dict: dict, prefix: str, *args: Any) -> None:
    """A ``ratio=0`` layer without ``mix`` is exactly its ``nn.Conv2d``: load that layer's
    ``weight``/``bias`` into ``conv`` (so a baseline's state dict loads)."""
    if layer.convnn is not None or layer.mix is not None:
        return
    for name in ("weight", "bias"):
        if prefix + name in state_dict and prefix + "conv." + name not in state_dict:
            state_dict[prefix + "conv." + name] = state_dict.pop(prefix + name)
