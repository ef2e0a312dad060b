"""Memory-light gather primitives of the ``blocked`` path.

Two autograd functions that never keep the gathered ``(*, Nq, k, C)`` tensor:
the forward pass gathers in blocks of queries and the backward pass re-gathers.

* :func:`gather_dot` — ``s[..., i, j] = q[..., i, :] . key[..., index[i, j], :]``
* :func:`weighted_gather_sum` — ``out[..., i, :] = sum_j w[..., i, j] v[..., index[i, j], :]``

Each one's backward is the other one plus a scatter-add, so gradients are exact.
Index ``N`` (one past the last token) reads a zero row when ``has_null``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..ops.gather import flat_rows, gather_rows, with_null_row
from ..ops.similarity import autocast_off
from . import triton_kernels

BLOCK_BYTES = 16 * 2**20


def _block_rows(index: Tensor, channels: int) -> int:
    """Queries per block so that one gathered block stays under ``BLOCK_BYTES``."""
    *batch, nq, k = index.shape
    per_row = max(1, index[..., 0, 0].numel() * k * channels * 4)
    return max(1, min(nq, BLOCK_BYTES // per_row))


def _gather_dot(q: Tensor, key: Tensor, index: Tensor) -> Tensor:
    if triton_kernels.use_triton(q):
        return triton_kernels.gather_dot(q, key.expand(*index.shape[:-2], *key.shape[-2:]), index)
    out = q.new_empty(index.shape)
    rows = _block_rows(index, key.shape[-1])
    for s in range(0, index.shape[-2], rows):
        block = index[..., s : s + rows, :]
        out[..., s : s + rows, :] = (gather_rows(key, block) * q[..., s : s + rows, None, :]).sum(
            -1
        )
    return out


def _gather_sum(v: Tensor, index: Tensor, w: Tensor) -> Tensor:
    if triton_kernels.use_triton(v):
        return triton_kernels.gather_sum(v.expand(*index.shape[:-2], *v.shape[-2:]), index, w)
    out = v.new_empty(*index.shape[:-1], v.shape[-1])
    rows = _block_rows(index, v.shape[-1])
    with autocast_off(v.device):  # a weighted sum, in v's dtype
        for s in range(0, index.shape[-2], rows):
            block = index[..., s : s + rows, :]
            weights = w[..., s : s + rows, None, :].to(v.dtype)  # (*, rows, 1, k)
            out[..., s : s + rows, :] = (weights @ gather_rows(v, block)).squeeze(-2)
    return out


def _scatter_sum(num_rows: int, index: Tensor, w: Tensor, x: Tensor) -> Tensor:
    """``out[..., index[i, j], :] += w[..., i, j] * x[..., i, :]`` -> ``(*, num_rows, C)``."""
    *batch, nq, k = index.shape
    C = x.shape[-1]
    out = x.new_zeros(*batch, num_rows, C)
    flat = out.view(-1, C)
    rows = _block_rows(index, C)
    for s in range(0, nq, rows):
        block = index[..., s : s + rows, :]
        contrib = w[..., s : s + rows, :, None] * x[..., s : s + rows, None, :]
        flat.index_add_(0, flat_rows(block, num_rows), contrib.reshape(-1, C))
    return out


class _GatherDot(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, q: Tensor, key: Tensor, index: Tensor, has_null: bool, known: Tensor | None
    ) -> Tensor:
        keyn = with_null_row(key, has_null)
        q = q.contiguous()
        ctx.save_for_backward(q, keyn, index)
        ctx.num_tokens = key.shape[-2]
        return known.to(q.dtype) if known is not None else _gather_dot(q, keyn, index)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        q, keyn, index = ctx.saved_tensors
        grad_q = grad_key = None
        if ctx.needs_input_grad[0]:
            grad_q = _gather_sum(keyn, index, grad)
        if ctx.needs_input_grad[1]:
            grad_key = _scatter_sum(keyn.shape[-2], index, grad, q)[..., : ctx.num_tokens, :]
        return grad_q, grad_key, None, None, None


class _WeightedGatherSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: Tensor, index: Tensor, w: Tensor, has_null: bool) -> Tensor:
        vn = with_null_row(v, has_null)
        ctx.save_for_backward(vn, index, w)
        ctx.num_tokens = v.shape[-2]
        return _gather_sum(vn, index, w)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        vn, index, w = ctx.saved_tensors
        grad_v = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_v = _scatter_sum(vn.shape[-2], index, w, grad)[..., : ctx.num_tokens, :]
        if ctx.needs_input_grad[2]:
            grad_w = _gather_dot(grad, vn, index)
        return grad_v, None, grad_w, None


def gather_dot(
    q: Tensor, key: Tensor, index: Tensor, has_null: bool = False, known: Tensor | None = None
) -> Tensor:
    """``(*, Nq, D)``, ``(*, N, D)``, ``(*, Nq, k)`` -> ``(*, Nq, k)`` dot products.

    ``known``: the same products already computed without gradient (e.g. by the
    selection pass); then the forward returns them and only the backward gathers.
    """
    return _GatherDot.apply(q, key, index, has_null, known)


def weighted_gather_sum(v: Tensor, index: Tensor, w: Tensor, has_null: bool = False) -> Tensor:
    """``(*, N, C)``, ``(*, Nq, k)``, ``(*, Nq, k)`` -> ``(*, Nq, C)`` weighted neighbor sums."""
    return _WeightedGatherSum.apply(v, index, w.to(v.dtype), has_null)
