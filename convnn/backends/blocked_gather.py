"""Memory-light gather primitives of the ``blocked`` path.

One autograd function that never keeps the gathered ``(*, Nq, k, C)`` tensor: the
forward pass gathers in blocks of queries (or runs a Triton kernel, see
:mod:`~convnn.backends.selfcheck`) and the backward pass re-gathers.

* :func:`gather_dot` — ``s[..., i, j] = q[..., i, :] . key[..., index[i, j], :]``
* :func:`weighted_gather_sum` — ``out[..., i, :] = sum_j w[..., i, j] v[..., index[i, j], :]``

Each one's backward is the other one plus a scatter-add, so gradients are exact; the
same backward is registered as the gradient of the Triton kernels' operators
(``convnn::gather_sum``, ``convnn::gather_dot``). Index ``N`` (one past the last token)
reads a zero row when ``has_null``. With ``CONVNN_DEBUG=1`` every index is checked first
(:func:`check_index`).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..errors import ConvNNError
from ..ops.gather import flat_rows, gather_rows, with_null_row
from ..ops.similarity import autocast_off
from . import triton_kernels
from .selfcheck import use_triton

__all__ = ["DEBUG_ENV", "check_index", "debug_checks", "gather_dot", "weighted_gather_sum"]

BLOCK_BYTES = 16 * 2**20
DEBUG_ENV = "CONVNN_DEBUG"


def debug_checks() -> bool:
    """Whether ``CONVNN_DEBUG`` (any value but empty or ``0``) asks for the index check."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def check_index(index: Tensor, num_rows: int) -> None:
    """Raise a one-line :class:`~convnn.errors.ConvNNError` unless every entry of ``index``
    lies in ``[0, num_rows)`` (one synchronizing reduction: debug mode only)."""
    if index.numel() == 0 or index.is_meta or torch.compiler.is_compiling():
        return  # shapes only (a model's size check), or traced: no values to read
    lo, hi = index.min().item(), index.max().item()
    if lo < 0 or hi >= num_rows:
        raise ConvNNError(
            f"neighbor index out of range: found {lo}..{hi}, allowed 0..{num_rows - 1} "
            f"({num_rows} rows incl. a null row if any)"
        )


def _block_rows(index: Tensor, channels: int) -> int:
    """Queries per block so that one gathered block stays under ``BLOCK_BYTES``."""
    *batch, nq, k = index.shape
    per_row = max(1, index[..., 0, 0].numel() * k * channels * 4)
    return max(1, min(nq, BLOCK_BYTES // per_row))


def _table(x: Tensor, index: Tensor, has_null: bool) -> Tensor:
    """``x`` ``(*x, N, C)`` broadcast to the batch dims of ``index``, contiguous, with the
    zero row ``N`` when ``has_null``: what the PyTorch row gathers need. The Triton kernels
    read any strides, and index ``N`` reads zeros there."""
    return with_null_row(x.expand(*index.shape[:-2], *x.shape[-2:]), has_null)


def _gather_dot(q: Tensor, key: Tensor, index: Tensor, has_null: bool = False) -> Tensor:
    if use_triton(q):
        return triton_kernels.gather_dot(q, key, index)
    key = _table(key, index, has_null)
    out = q.new_empty(index.shape)
    rows = _block_rows(index, key.shape[-1])
    for s in range(0, index.shape[-2], rows):
        block = index[..., s : s + rows, :]
        out[..., s : s + rows, :] = (gather_rows(key, block) * q[..., s : s + rows, None, :]).sum(
            -1
        )
    return out


def _gather_sum(v: Tensor, index: Tensor, w: Tensor, has_null: bool = False) -> Tensor:
    if use_triton(v):
        return triton_kernels.gather_sum(v, index, w)
    v = _table(v, index, has_null)
    out = v.new_empty(*index.shape[:-1], v.shape[-1])
    rows = _block_rows(index, v.shape[-1])
    with autocast_off(v.device):  # a weighted sum, in v's dtype
        for s in range(0, index.shape[-2], rows):
            block = index[..., s : s + rows, :]
            weights = w[..., s : s + rows, None, :].to(v.dtype)  # (*, rows, 1, k)
            out[..., s : s + rows, :] = (weights @ gather_rows(v, block)).squeeze(-2)
    return out


def _scatter_sum(num_rows: int, index: Tensor, w: Tensor, x: Tensor) -> Tensor:
    """``out[..., index[i, j], :] += w[..., i, j] * x[..., i, :]`` -> ``(*, num_rows, C)``.

    Under ``torch.use_deterministic_algorithms(True)`` the rows accumulate through
    ``index_put_(accumulate=True)``, PyTorch's sorted (deterministic) accumulation, instead
    of ``index_add_`` (atomic adds on CUDA: the order of the sums varies between runs)."""
    *batch, nq, k = index.shape
    C = x.shape[-1]
    out = x.new_zeros(*batch, num_rows, C)
    flat = out.view(-1, C)
    rows = _block_rows(index, C)
    deterministic = torch.are_deterministic_algorithms_enabled()
    for s in range(0, nq, rows):
        block = index[..., s : s + rows, :]
        contrib = w[..., s : s + rows, :, None] * x[..., s : s + rows, None, :]
        if deterministic:
            flat.index_put_((flat_rows(block, num_rows),), contrib.reshape(-1, C), accumulate=True)
        else:
            flat.index_add_(0, flat_rows(block, num_rows), contrib.reshape(-1, C))
    return out


class _Gather(torch.autograd.Function):
    """``dot``: ``gather_dot(a, x, index)``, else ``gather_sum(x, index, a)``; each one's
    backward is the other one plus a scatter-add into ``x``."""

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        index: Tensor,
        a: Tensor,
        has_null: bool,
        dot: bool,
        known: Tensor | None = None,
    ) -> Tensor:
        if debug_checks():
            check_index(index, x.shape[-2] + has_null)
        ctx.save_for_backward(x, index, a)
        ctx.has_null, ctx.dot = has_null, dot
        if known is not None:
            return known.to(a.dtype)
        return _gather_dot(a, x, index, has_null) if dot else _gather_sum(x, index, a, has_null)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, index, a = ctx.saved_tensors
        need_x, _, need_a, *_ = ctx.needs_input_grad
        grad_x, grad_a = _backward(x, index, a, grad, ctx.has_null, ctx.dot, need_x, need_a)
        return grad_x, None, grad_a, None, None, None


def _backward(
    x: Tensor, index: Tensor, a: Tensor, grad: Tensor, null: bool, dot: bool, need_x: bool,
    need_a: bool,
) -> tuple[Tensor | None, Tensor | None]:  # fmt: skip
    """The gradients of ``x`` and ``a`` (where needed) of the gather of :class:`_Gather`
    from its output's gradient ``grad``."""
    N = x.shape[-2]
    taps, rows = (grad, a) if dot else (a, grad)  # (*, Nq, k), (*, Nq, C)
    grad_x = grad_a = None
    if need_x:
        grad_x = _scatter_sum(N + null, index, taps, rows)[..., :N, :]
        grad_x = grad_x.sum_to_size(x.shape)  # a broadcast x: summed over its batch
    if need_a:
        grad_a = _gather_sum(x, index, grad, null) if dot else _gather_dot(grad, x, index, null)
    return grad_x, grad_a


# -- gradients of the operators convnn::gather_sum and convnn::gather_dot (the Triton
# kernels of triton_kernels.py, which read index N as a zero row) ----------------------------


def _sum_setup(ctx, inputs: tuple[Tensor, Tensor, Tensor], output: Tensor) -> None:
    ctx.save_for_backward(*inputs)  # v, index, w


def _sum_backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, Tensor | None]:
    v, index, w = ctx.saved_tensors
    need_v, _, need_w = ctx.needs_input_grad
    grad_v, grad_w = _backward(v, index, w, grad, True, False, need_v, need_w)
    return grad_v, None, grad_w


def _dot_setup(ctx, inputs: tuple[Tensor, Tensor, Tensor], output: Tensor) -> None:
    ctx.save_for_backward(*inputs)  # q, key, index


def _dot_backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
    q, key, index = ctx.saved_tensors
    need_q, need_key, _ = ctx.needs_input_grad
    grad_key, grad_q = _backward(key, index, q, grad, True, True, need_key, need_q)
    return grad_q, grad_key, None


torch.library.register_autograd("convnn::gather_sum", _sum_backward, setup_context=_sum_setup)
torch.library.register_autograd("convnn::gather_dot", _dot_backward, setup_context=_dot_setup)


def gather_dot(
    q: Tensor, key: Tensor, index: Tensor, has_null: bool = False, known: Tensor | None = None
) -> Tensor:
    """``(*, Nq, D)``, ``(*, N, D)``, ``(*, Nq, k)`` -> ``(*, Nq, k)`` dot products.

    ``known``: the same products already computed without gradient (e.g. by the
    selection pass); then the forward returns them and only the backward gathers.
    """
    return _Gather.apply(key, index, q, has_null, True, known)


def weighted_gather_sum(v: Tensor, index: Tensor, w: Tensor, has_null: bool = False) -> Tensor:
    """``(*, N, C)``, ``(*, Nq, k)``, ``(*, Nq, k)`` -> ``(*, Nq, C)`` weighted neighbor sums."""
    return _Gather.apply(v, index, w.to(v.dtype), has_null, False)
