"""Row gathers of neighbor tokens, with the zero "null" token of zero-padded windows."""

from __future__ import annotations

import torch
from torch import Tensor


def with_null_row(x: Tensor, has_null: bool) -> Tensor:
    """``x`` ``(*, N, C)`` as a contiguous tensor (row gathers need one), plus a zero row
    at index ``N`` (the null token outside the map) when ``has_null``."""
    if has_null:
        return torch.cat((x, x.new_zeros(*x.shape[:-2], 1, x.shape[-1])), dim=-2)
    return x.contiguous()


def flat_rows(index: Tensor, num_rows: int) -> Tensor:
    """Row numbers of ``index`` ``(*, Nq, k)`` in the ``(prod(*) * num_rows, C)`` view."""
    batches = index[..., 0, 0].numel()
    offsets = torch.arange(batches, device=index.device) * num_rows
    return (index + offsets.view(*index.shape[:-2], 1, 1)).reshape(-1)


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` ``(*, Nq, k)`` of contiguous ``x`` ``(*, N, C)`` -> ``(*, Nq, k, C)``,
    copied row by row (``index_select``, differentiable), much faster than an
    element-wise gather with an expanded index."""
    C = x.shape[-1]
    rows = x.reshape(-1, C).index_select(0, flat_rows(index, x.shape[-2]))
    return rows.view(*index.shape, C)


def gather_tokens(x: Tensor, index: Tensor, has_null: bool = False) -> Tensor:
    """Rows ``index`` ``(*, Nq, k)`` of ``x`` ``(*, N, C)`` -> ``(*, Nq, k, C)``.

    With ``has_null``, index ``N`` reads a zero row (the null token outside the map)."""
    x = x.expand(*index.shape[:-2], *x.shape[-2:])
    return gather_rows(with_null_row(x, has_null), index)
