"""Convolution-style ConvNN layers: drop-ins for ``nn.Conv2d`` and ``nn.Conv1d``.

Identity selection features (``q = key = v = x``); the layer owns the
aggregation kernel (and a learned positional table) and calls
:func:`convnn.functional.convnn2d`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..call_checks import check_location_kernel
from ..errors import OptionError
from ..functional import convnn2d
from ..ops.aggregation import weight_shapes
from ..ops.geometry import ConvWindow
from ..options import ConvNNOptions, make_options, options_repr
from ..validation import check_input, check_positive_int


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = value if isinstance(value, tuple) else (value, value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in pair):
        raise OptionError(f"{name}={value!r} must be an int or a pair of ints", key=name)
    return pair  # type: ignore[return-value]


def conv_layer_options(
    options: ConvNNOptions | None,
    overrides: dict[str, Any],
    taps: int,
    window: int | tuple[int, int],
) -> ConvNNOptions:
    """Options of a convolution-style layer: ``k`` defaults to the kernel's ``taps``
    (``k=None`` means the same here), and ``window`` candidates to the kernel's window."""
    if "k" in overrides and overrides["k"] is None:
        del overrides["k"]
    candidates = overrides.get("candidates", options.candidates if options else "all")
    has_window = overrides.get("window_size") or (options and options.window_size)
    if candidates == "window" and not has_window:
        overrides["window_size"] = window
    return make_options(options, {"k": taps}, **overrides)


def conv2d_issue(conv: nn.Conv2d) -> str | None:
    """Why ``conv`` has no exact ConvNN2d equivalent, or ``None``."""
    if conv.dilation != (1, 1) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return "only dilation 1 and numeric zero padding are supported"
    if any(s % 2 == 0 for s in conv.kernel_size):
        return f"kernel_size={conv.kernel_size} is even"
    if conv.groups not in (1, conv.in_channels):
        return f"groups={conv.groups} (allowed: 1 or in_channels)"
    return None


def exact_conv_settings(conv: nn.Conv2d) -> dict[str, Any]:
    """The options under which ConvNN2d computes exactly ``conv``: its zero-padded window
    in offset order, no weighting, the ``standard`` (``depthwise`` for groups = C) kernel."""
    return dict(
        candidates="window",
        similarity="location",
        order="offset",
        weighting="none",
        kernel="depthwise" if conv.groups > 1 else "standard",
    )


class _ConvNNNd(nn.Module):
    """Shared body of :class:`ConvNN2d` and :class:`ConvNN1d` (2-D geometry inside)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        window: ConvWindow,
        bias: bool,
        options: ConvNNOptions,
        pos_grid_size: tuple[int, int],
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        kernel_size, stride, padding = window
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        for name, pair in (("kernel_size", kernel_size), ("stride", stride)):
            for v in pair:
                check_positive_int(name, v)
        if any(p < 0 for p in padding):
            raise OptionError(f"padding={padding} must be >= 0", key="padding")
        if options.draws_from_input_only and any(
            p > (ks - 1) // 2 for p, ks in zip(padding, kernel_size, strict=True)
        ):
            raise OptionError(
                f"padding={padding} with shifted windows or sampled candidates must be <= "
                "(kernel_size - 1) // 2 (query centres inside the map)",
                key="padding",
            )
        value_channels = in_channels + 2 * (
            options.positional_encoding == "coords" and options.coords_to_values
        )
        if options.kernel == "sum" and out_channels != value_channels:
            raise OptionError(
                f"kernel='sum' needs out_channels == {value_channels} "
                f"(the value channels), got out_channels={out_channels}",
                key="out_channels",
            )
        if options.kernel == "depthwise" and out_channels % value_channels:
            raise OptionError(
                f"kernel='depthwise' needs out_channels a multiple of "
                f"{value_channels}, got out_channels={out_channels}",
                key="out_channels",
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.options = options
        dd = {"device": device, "dtype": dtype}
        k = options.k
        assert k is not None
        shapes = weight_shapes(options.kernel, value_channels, out_channels, k)
        self.weight = nn.Parameter(torch.empty(shapes["weight"], **dd)) if shapes else None
        pw = shapes.get("pointwise_weight")
        self.pointwise_weight = nn.Parameter(torch.empty(pw, **dd)) if pw else None
        self.bias = nn.Parameter(torch.empty(out_channels, **dd)) if bias else None
        self.pos_table = None
        if options.positional_encoding == "learned":
            self.pos_table = nn.Parameter(torch.zeros(in_channels, *pos_grid_size, **dd))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform like ``nn.Conv2d``: fan-in = input channels x taps."""
        fan_in = self.weight[0].numel() if self.weight is not None else 1
        for p in (self.weight, self.pointwise_weight):
            if p is not None:
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        if self.pos_table is not None:
            nn.init.trunc_normal_(self.pos_table, std=0.02)

    def _forward_map(self, x: Tensor) -> Tensor:
        return convnn2d(
            x,
            options=self.options,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            weight=self.weight,
            pointwise_weight=self.pointwise_weight,
            bias=self.bias,
            pos_table=self.pos_table,
            training=self.training,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}, "
            + options_repr(self.options)
        )


class ConvNN2d(_ConvNNNd):
    """Drop-in for ``nn.Conv2d``: ``(B, C, H, W) -> (B, O, Ho, Wo)`` with Conv2d's output size.

    Each output position is a query at the centre of the matching convolution
    window; its ``k`` neighbors (default ``kernel_size**2``) are chosen by
    ``similarity`` among ``candidates`` of the zero-padded map. Any ``H, W`` on
    every call. ``ConvNN2d.from_conv2d(conv)`` computes exactly ``conv``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        bias: bool = True,
        *,
        options: ConvNNOptions | None = None,
        pos_grid_size: tuple[int, int] = (14, 14),
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **overrides: Any,
    ) -> None:
        ks = _pair(kernel_size, "kernel_size")
        if padding == "same":
            padding = (ks[0] // 2, ks[1] // 2)
        elif isinstance(padding, str):
            raise OptionError(
                f"padding={padding!r} is not allowed; use an int, a pair or 'same'", key="padding"
            )
        window = ks[0] if ks[0] == ks[1] else ks
        options = conv_layer_options(options, overrides, ks[0] * ks[1], window)
        check_location_kernel(options, ks, rows=2)  # a 2-D map: refused before any input
        super().__init__(
            in_channels,
            out_channels,
            ConvWindow(ks, _pair(stride, "stride"), _pair(padding, "padding")),
            bias,
            options,
            pos_grid_size,
            device,
            dtype,
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, O, Ho, Wo)``."""
        check_input("ConvNN2d", x, "(B, C, H, W)", self.in_channels, 1, "in_channels")
        return self._forward_map(x)

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, **overrides) -> ConvNN2d:
        """A ConvNN2d computing exactly ``conv`` (zero padding, dilation 1, groups 1 or C).

        Window candidates of the kernel size, offset order, no weighting and the
        ``standard`` (or, for ``groups == in_channels``, ``depthwise``) kernel.
        """
        issue = conv2d_issue(conv)
        if issue is not None:
            raise OptionError(f"from_conv2d cannot convert this convolution: {issue}", key="conv")
        ks = conv.kernel_size
        depthwise = conv.groups > 1
        settings = {**exact_conv_settings(conv), **overrides}
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            ks,
            conv.stride,
            conv.padding,
            conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            **settings,
        )
        with torch.no_grad():
            w = conv.weight.flatten(2)  # (O, C/groups, k)
            layer.weight.copy_(w[:, 0] if depthwise else w)  # type: ignore[union-attr]
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)  # type: ignore[union-attr]
        return layer


class ConvNN1d(_ConvNNNd):
    """Drop-in for ``nn.Conv1d`` on sequences: ``(B, C, L) -> (B, O, Lo)``.

    Same options as :class:`ConvNN2d`; ``k`` defaults to ``kernel_size`` and a
    ``window`` holds ``kernel_size`` (or ``window_size``) consecutive tokens.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | str = 0,
        bias: bool = True,
        *,
        options: ConvNNOptions | None = None,
        pos_grid_size: int = 64,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **overrides: Any,
    ) -> None:
        check_positive_int("kernel_size", kernel_size)
        if padding == "same":
            padding = kernel_size // 2
        elif isinstance(padding, str):
            raise OptionError(
                f"padding={padding!r} is not allowed; use an int or 'same'", key="padding"
            )
        if isinstance(overrides.get("window_size"), int):
            overrides["window_size"] = (1, overrides["window_size"])
        overrides["sequence"] = True
        options = conv_layer_options(options, overrides, kernel_size, (1, kernel_size))
        super().__init__(
            in_channels,
            out_channels,
            ConvWindow((1, kernel_size), (1, stride), (0, padding)),
            bias,
            options,
            (1, pos_grid_size),
            device,
            dtype,
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, L) -> (B, O, Lo)``."""
        check_input("ConvNN1d", x, "(B, C, L)", self.in_channels, 1, "in_channels")
        return self._forward_map(x.unsqueeze(2)).squeeze(2)
