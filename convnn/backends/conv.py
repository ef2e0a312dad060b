"""The ``map`` paths: ConvNN2d configurations computed on the feature map ``(B, C, H, W)``.

* ``conv`` (:func:`as_convolution`) — a configuration that is exactly a convolution
  (the whole kernel window selected, offset order, no weighting) runs as ``F.conv2d``.
* ``window_attention`` — zero-padded neighborhood attention with identity features
  (``softmax(dot)``, ``sum``, stride 1, "same" padding), fused
  (:mod:`~convnn.backends.window_attention`).
* ``shifts`` (:func:`window_by_shifts`) — zero-padded windows with every position
  selected (``k = sh*sw``) and weighted: each window offset is a strided view of the
  padded map, so nothing is gathered and no ``(B, N, k, C)`` tensor exists.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.aggregation import kernel_spec
from ..ops.scores import weighting_spec
from ..ops.similarity import autocast_off, feature_similarity, score_dtype, similarity_spec
from ..options import ConvNNOptions
from . import MapCall, Path, register
from .window_attention import window_attention


def location_as_window(opts: ConvNNOptions, kernel_size: tuple[int, int]) -> ConvNNOptions:
    """Location selection among all tokens, as a window table (no N x N distances).

    The ``k`` nearest positions (Chebyshev, ties to the lower index) lie in the
    ``s x s`` window, ``s`` the smallest odd side with ``s*s >= k``; in a map
    zero-padded like a convolution that window stays inside the map whenever
    ``s <= kernel_size``, so both candidate sets give the same neighbors.
    """
    if not (opts.candidates == "all" and opts.similarity == "location" and opts.k):
        return opts
    side = math.isqrt(opts.k - 1) + 1
    side += 1 - side % 2
    if opts.score_for_weights == "mixed" or side > min(kernel_size):
        return opts
    return dataclasses.replace(opts, candidates="window", window_size=side, window_border="pad")


def is_convolution(opts: ConvNNOptions, kernel_size: tuple[int, int]) -> bool:
    """True when ConvNN with ``opts`` computes exactly a convolution of ``kernel_size``."""
    opts = location_as_window(opts, kernel_size)
    return (
        opts.selects_whole_padded_window
        and opts.window_shape == kernel_size
        and not weighting_spec(opts.weighting).weighted
        and opts.resolved_order == "offset"
        and not (opts.positional_encoding == "coords" and opts.coords_to_values)
    )


def as_convolution(call: MapCall) -> Tensor:
    """``(B, C, H, W) -> (B, O, Ho, Wo)`` through ``F.conv2d`` (taps in raster order)."""
    conv2d = kernel_spec(call.options.kernel).conv2d
    window = (call.kernel_size, call.stride, call.padding)
    return conv2d(call.x, call.weight, call.pointwise_weight, call.bias, *window)


def shifts_apply(
    opts: ConvNNOptions, kernel_size: tuple[int, int], out_channels: int, in_channels: int
) -> bool:
    """Whether :func:`window_by_shifts` computes this configuration."""
    return (
        opts.selects_whole_padded_window
        and weighting_spec(opts.weighting).weighted
        and opts.positional_encoding == "none"
        and opts.resolved_order == "offset"
        and (
            opts.kernel in ("sum", "separable")
            or (opts.kernel == "depthwise" and out_channels == in_channels)
        )
    )


def _window_scores(
    kind: str,
    opts: ConvNNOptions,
    query: Tensor,
    taps: list[Tensor],
    offsets: list[tuple[int, int]],
) -> Tensor:
    """Scores of the window taps: ``(B, k, Ho, Wo)`` in at least float32.

    ``query`` ``(B, C, Ho, Wo)``, ``taps`` ``k`` such maps at ``offsets`` ``(dy, dx)``; the
    formula is the table entry's ``window`` (:data:`~convnn.ops.similarity.SIMILARITIES`).
    """
    dtype = score_dtype(query.dtype)
    spec = similarity_spec(kind)
    feature = spec.feature_kind(opts.mixed_feature)
    scores = location = None
    if feature is not None:
        with autocast_off(query.device):
            q, ts = query.to(dtype), [t.to(dtype) for t in taps]
            scores = feature_similarity(feature).window(q, ts)  # type: ignore[misc]
    if spec.location:
        dist = torch.tensor(
            [max(abs(dy), abs(dx)) for dy, dx in offsets], dtype=dtype, device=query.device
        )
        location = (-dist).view(1, -1, 1, 1).expand(query.shape[0], -1, *query.shape[2:])
    return spec.combine(scores, location, opts.lam, None, 1)


def window_by_shifts(call: MapCall) -> Tensor:
    """Weighted zero-padded windows: ``(B, C, H, W) -> (B, O, Ho, Wo)``."""
    x, opts, weight, pointwise_weight, bias = (
        call.x, call.options, call.weight, call.pointwise_weight, call.bias
    )  # fmt: skip
    kernel_size, stride, padding = call.kernel_size, call.stride, call.padding
    (sh, sw), (kh, kw) = opts.window_shape, kernel_size
    rh, rw = sh // 2, sw // 2
    xp = F.pad(x, (padding[1] + rw, padding[1] + rw, padding[0] + rh, padding[0] + rh))
    Ho, Wo = call.window.output_size(x.shape[2], x.shape[3])

    def tap(dy: int, dx: int) -> Tensor:  # (B, C, Ho, Wo) view at offset (dy, dx)
        r0, c0 = kh // 2 + rh + dy, kw // 2 + rw + dx
        return xp[:, :, r0 : r0 + (Ho - 1) * stride[0] + 1 : stride[0],
                  c0 : c0 + (Wo - 1) * stride[1] + 1 : stride[1]]  # fmt: skip

    offsets = [(dy, dx) for dy in range(-rh, rh + 1) for dx in range(-rw, rw + 1)]
    taps = [tap(dy, dx) for dy, dx in offsets]
    scores = _window_scores(opts.score_for_weights, opts, tap(0, 0), taps, offsets)
    weights = weighting_spec(opts.weighting).weights(scores, dim=1)  # (B, k, Ho, Wo)
    weights = weights.to(x.dtype)
    kernel = kernel_spec(opts.kernel)
    per_tap = None
    if kernel.per_tap:
        per_tap = weight.t()[:, :, None, None]  # (k, C, 1, 1)
    out = 0
    for j, t in enumerate(taps):
        term = weights[:, j : j + 1] * t
        out = out + (term if per_tap is None else term * per_tap[j])
    if kernel.pointwise:
        out = F.conv2d(out, pointwise_weight[:, :, None, None])
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def window_attention_applies(
    opts: ConvNNOptions, kernel_size, stride, padding, out_channels: int, C: int
) -> bool:
    """Whether :func:`~convnn.backends.window_attention.window_attention` computes this
    ConvNN2d configuration."""
    return (
        opts.selects_whole_padded_window
        and opts.window_shape == tuple(kernel_size)
        and opts.weighting == "softmax"
        and opts.score_for_weights == "dot"
        and opts.kernel == "sum"
        and opts.positional_encoding == "none"
        and tuple(stride) == (1, 1)
        and tuple(padding) == (kernel_size[0] // 2, kernel_size[1] // 2)
        and out_channels == C
    )


WHOLE_WINDOW = "candidates='window' (or location among all tokens), window_border='pad', k = "
register(
    Path(
        "conv",
        "map",
        lambda call: is_convolution(call.options, call.kernel_size),
        as_convolution,
        WHOLE_WINDOW + "the kernel's taps, weighting='none', offset order and no coords values",
    )
)
register(
    Path(
        "window_attention",
        "map",
        lambda call: window_attention_applies(
            call.options,
            call.kernel_size,
            call.stride,
            call.padding,
            call.out_channels,
            call.in_channels,
        ),  # fmt: skip
        lambda call: window_attention(call.x, call.kernel_size, call.bias),
        WHOLE_WINDOW + "the kernel's taps, weighting='softmax' by 'dot', kernel='sum', "
        "no positional encoding, stride 1 and 'same' padding",
    )
)
register(
    Path(
        "shifts",
        "map",
        lambda call: shifts_apply(
            call.options, call.kernel_size, call.out_channels, call.in_channels
        ),
        window_by_shifts,
        WHOLE_WINDOW + "the window's taps, a weighting, offset order, no positional encoding "
        "and kernel 'sum', 'separable' or 'depthwise' with out_channels == in_channels",
    )
)
