"""Checks of one operator call against its inputs' sizes, run before any computation.

The options were validated on their own when built (:class:`~convnn.ConvNNOptions`); here
they meet the token counts, channels and map of an input. Every error is an
:class:`~convnn.errors.OptionError` whose ``key`` names the option.
"""

from __future__ import annotations

import math

from torch import Tensor

from .errors import OptionError
from .ops.aggregation import weight_shapes
from .ops.geometry import Grid, conv_output_size
from .options import ConvNNOptions


def check_call(
    opts: ConvNNOptions,
    value: Tensor,
    query: Tensor,
    key: Tensor,
    grid: Grid | None,
    query_index: Tensor,
    weight_channels: int | None,
) -> None:
    """Every shape and size check of one call, before any computation: ``OptionError``s
    naming the option (``key``) and the sizes the input gives it."""
    if value.dim() < 3 or query.dim() != value.dim() or key.dim() != value.dim():
        raise OptionError(
            "value, query and key must be (*, N, C) token tensors with the same batch dims",
            key="value",
        )
    *batch, N, C = value.shape
    if key.shape[:-1] != value.shape[:-1]:
        raise OptionError(
            f"key has shape {tuple(key.shape)}; expected (*, N, D) with N={N}", key="key"
        )
    if query.shape[:-2] != value.shape[:-2] or query.shape[-2] != query_index.shape[0]:
        raise OptionError(
            f"query has shape {tuple(query.shape)}; expected (*, Nq, D) with Nq = "
            f"{query_index.shape[0]} queries",
            key="query",
        )
    if query.shape[-1] != key.shape[-1]:
        raise OptionError(
            f"query has {query.shape[-1]} channels but key has {key.shape[-1]}", key="query"
        )
    if weight_channels is not None and weight_channels != C:
        raise OptionError(
            f"input has {C} channels but the kernel expects in_channels={weight_channels}",
            key="in_channels",
        )
    if grid is None and opts.needs_grid:
        raise OptionError(
            "a grid (H, W) is required by the chosen similarity, candidates or positional_encoding",
            key="grid",
        )
    if grid is not None and grid.num_tokens != N:
        raise OptionError(
            f"grid {grid.num_prefix} + {grid.height}x{grid.width} does not match N={N} tokens",
            key="grid",
        )
    if opts.candidates in ("random", "spatial") and opts.num_samples > N:  # type: ignore[operator]
        raise OptionError(
            f"num_samples={opts.num_samples} is larger than the N={N} tokens; "
            f"allowed: k <= num_samples <= {N}",
            key="num_samples",
        )
    if opts.sequence and grid is not None and grid.height != 1:
        raise OptionError(
            f"sequence=True needs a one-row grid, got {grid.height}x{grid.width}", key="sequence"
        )
    if opts.candidates == "spatial" and grid.height > 1:  # type: ignore[union-attr]
        side = math.isqrt(opts.num_samples)  # type: ignore[arg-type]
        if side > min(grid.height, grid.width):  # type: ignore[union-attr]
            raise OptionError(
                f"num_samples={opts.num_samples} asks for a {side}x{side} grid, "
                f"larger than the {grid.height}x{grid.width} map",  # type: ignore[union-attr]
                key="num_samples",
            )
    if opts.candidates == "window":
        if grid.num_prefix:  # type: ignore[union-attr]
            raise OptionError(
                "candidates='window' does not support prefix (class) tokens", key="candidates"
            )
        sh, sw = opts.window_shape
        if opts.window_border == "shift" and (sh > grid.height or sw > grid.width):  # type: ignore
            raise OptionError(
                f"window_size={opts.window_size} is larger than the "
                f"{grid.height}x{grid.width} map; window_border='shift' needs "  # type: ignore
                "the window inside the map",
                key="window_size",
            )
    if opts.k is not None and opts.candidates == "all" and opts.k > N:
        raise OptionError(
            f"k={opts.k} is larger than the N={N} candidate tokens; allowed: 1 <= k <= {N}",
            key="k",
        )
    dim = key.shape[-1]
    if opts.positional_encoding in ("sincos", "rope") and dim % 4:
        raise OptionError(
            f"positional_encoding={opts.positional_encoding!r} needs the selection "
            f"feature dimension divisible by 4, got {dim}",
            key="positional_encoding",
        )


def check_location_kernel(opts: ConvNNOptions, kernel_size: tuple[int, int], rows: int) -> None:
    """Refuse ``location`` selection among all tokens with a non-square kernel on a map of
    more than one row (``rows``): the nearest positions (Chebyshev) form a square, so a
    ``kh x kw`` kernel would silently get other neighbors than its window."""
    kh, kw = kernel_size
    if opts.similarity == "location" and opts.candidates == "all" and kh != kw and rows > 1:
        raise OptionError(
            f"similarity='location' among all tokens selects the nearest positions, a square; "
            f"kernel_size={tuple(kernel_size)} is not square: use candidates='window' "
            "(window_size=kernel_size) for its window",
            key="similarity",
        )


def check_map_size(
    height: int,
    width: int,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> None:
    """Refuse a map on which ``nn.Conv2d``'s output grid is empty (every path, the window
    paths that run a convolution included, then answers with the same error)."""
    sizes = zip((height, width), kernel_size, stride, padding, strict=True)
    if any(conv_output_size(*axis) < 1 for axis in sizes):
        raise OptionError(
            f"input size {height}x{width} is smaller than kernel_size "
            f"{tuple(kernel_size)} with padding {tuple(padding)}",
            key="input",
        )


def check_kernel_weights(
    kernel: str, weight: Tensor | None, pointwise_weight: Tensor | None
) -> None:
    """Raise when the aggregation ``kernel`` needs a parameter the call did not pass (the
    parameters of its table entry, :data:`convnn.ops.aggregation.KERNELS`: ``standard`` and
    ``depthwise``: ``weight``; ``separable``: both; ``sum``: none)."""
    given = {"weight": weight, "pointwise_weight": pointwise_weight}
    needed = list(weight_shapes(kernel, 1, 1, 1))
    missing = [name for name in needed if given[name] is None]
    if missing:
        raise OptionError(
            f"kernel={kernel!r} needs {' and '.join(missing)} (layouts in "
            "convnn.ops.aggregation); only kernel='sum' needs none",
            key=missing[0],
        )
