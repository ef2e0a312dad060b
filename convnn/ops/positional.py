"""Positional encodings of the selection features (docs/method.md §1.2).

All functions take token positions in the input map from a
:class:`~convnn.ops.geometry.Grid`, independent of the zero padding around it: pixel
``(0, 0)`` of the input has coordinates ``(-1, -1)`` whatever the padding. Prefix tokens
(no position) and padding tokens get a zero encoding (``rope``: no rotation), so padding
tokens stay zero tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import OptionError
from ..options import ConvNNOptions
from .geometry import Grid


def coords(grid: Grid, index: Tensor, dtype: torch.dtype) -> Tensor:
    """Normalized ``(x, y)`` in ``[-1, 1]`` over the input map, to append as 2 extra
    channels: ``(N, 2)``; prefix and padding tokens get ``(0, 0)`` (they stay zero)."""
    pos, inside = grid.input_positions(index)
    H, W = grid.input_size
    span = torch.tensor([max(W - 1, 1), max(H - 1, 1)], dtype=dtype, device=index.device)
    xy = pos.flip(-1).to(dtype) / span * 2 - 1
    xy = xy * torch.tensor([W > 1, H > 1], dtype=dtype, device=index.device)  # 1-wide: 0
    return torch.where(inside[:, None], xy, 0.0)


def _frequencies(dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    return 1.0 / 10000 ** (torch.arange(dim, device=device, dtype=dtype) / dim)


def sincos(grid: Grid, index: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """Fixed 2-D sine-cosine encoding ``(N, dim)`` of input positions; ``dim`` divisible
    by 4; prefix and padding tokens get zeros.

    The first half encodes the column, the second the row (MAE / timm convention)."""
    pos, inside = grid.input_positions(index)
    pos = pos.to(dtype)
    freq = _frequencies(dim // 4, index.device, dtype)
    parts = []
    for axis in (1, 0):
        angle = pos[:, axis : axis + 1] * freq  # (N, dim/4)
        parts += [angle.sin(), angle.cos()]
    return torch.where(inside[:, None], torch.cat(parts, dim=-1), 0.0)


def learned(grid: Grid, index: Tensor, table: Tensor) -> Tensor:
    """Learned table ``(dim, H0, W0)`` resized bilinearly to the input map: ``(N, dim)``;
    prefix and padding tokens get zeros."""
    H, W = grid.input_size
    resized = F.interpolate(table[None], size=(H, W), mode="bilinear", align_corners=False)[0]
    flat = resized.flatten(1).t()  # (H*W, dim)
    pos, inside = grid.input_positions(index)
    enc = flat[pos[:, 0] * W + pos[:, 1]]
    return torch.where(inside[:, None], enc, 0.0)


def rope(x: Tensor, grid: Grid, index: Tensor) -> Tensor:
    """2-D rotary encoding of ``x`` ``(B, N, D)``, ``D`` divisible by 4: the first half of
    the channels is rotated by the input column, the second half by the row (prefix and
    padding tokens are not rotated)."""
    dim = x.shape[-1]
    pos = grid.input_positions(index)[0].to(x.dtype)
    freq = _frequencies(dim // 4, x.device, x.dtype)
    halves = []
    for half, axis in zip(x.chunk(2, dim=-1), (1, 0), strict=True):
        angle = pos[:, axis : axis + 1] * freq  # (N, D/4)
        cos, sin = angle.cos(), angle.sin()
        a, b = half[..., 0::2], half[..., 1::2]
        rotated = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
        halves.append(rotated.flatten(-2))
    return torch.cat(halves, dim=-1)


def encode_positions(
    opts: ConvNNOptions,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    grid: Grid | None,
    query_index: Tensor,
    pos_table: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Apply ``opts.positional_encoding`` to the selection features (and coords to values).

    ``query`` ``(*, Nq, D)``, ``key`` ``(*, N, D)``, ``value`` ``(*, N, C)``; ``coords``
    appends 2 channels, ``sincos``/``learned`` add to D, ``rope`` rotates q and key.
    """
    kind = opts.positional_encoding
    if kind == "none":
        return query, key, value
    assert grid is not None
    token_index = torch.arange(key.shape[-2], device=key.device)
    if kind == "rope":
        return rope(query, grid, query_index), rope(key, grid, token_index), value
    if kind == "coords":

        def add(x: Tensor, index: Tensor) -> Tensor:
            xy = coords(grid, index, x.dtype).expand(*x.shape[:-2], -1, -1)
            return torch.cat((x, xy), dim=-1)

        value = add(value, token_index) if opts.coords_to_values else value
        return add(query, query_index), add(key, token_index), value
    if kind == "sincos":

        def enc(index: Tensor) -> Tensor:
            return sincos(grid, index, key.shape[-1], key.dtype)
    else:
        if pos_table is None:
            raise OptionError(
                "pos_table=None is not allowed with positional_encoding='learned'; expected a "
                "(dim, H0, W0) table",
                key="pos_table",
            )

        def enc(index: Tensor) -> Tensor:
            return learned(grid, index, pos_table)

    return query + enc(query_index), key + enc(token_index), value
