"""Triton kernels of the ``blocked`` path's gather primitives (CUDA GPUs).

One fused kernel gathers neighbor rows and either sums them weighted
(:func:`gather_sum`) or takes their dot products with the query rows
(:func:`gather_dot`); the gathered ``(*, Nq, k, C)`` tensor is never written to memory.
:func:`convnn.backends.selfcheck.use_triton` decides when they run (``CONVNN_TRITON``);
``CONVNN_TRITON=force`` with ``TRITON_INTERPRET=1`` runs them on the CPU (the tests).

* Offsets are int64 (rows, taps, batch and channel strides), so outputs and index tables
  past 2**31 elements are addressed correctly.
* float64 inputs accumulate in float64, all others in float32.
* The taps are unrolled at compile time up to ``SMALL_K`` and looped at run time beyond:
  one compiled kernel for every ``k > SMALL_K``.
* The gathered tensor (``value``/``key``) is read through its strides: an expanded
  (broadcast) batch or a head slice is not copied. ``index``, the weights and the
  queries are read as contiguous ``(rows, k)`` / ``(rows, C)`` tables.
* An index outside ``[0, N)`` reads a zero row, never other memory: index ``N`` is the
  null token of zero-padded windows; any other is a bug that the debug check of
  :mod:`convnn.backends.blocked_gather` (``CONVNN_DEBUG=1``) reports.
* Each kernel is a PyTorch operator, ``torch.ops.convnn.gather_sum`` / ``gather_dot``
  (``torch.library.custom_op``, with a fake implementation, a FLOP formula and, in
  :mod:`~convnn.backends.blocked_gather`, its gradient): ``torch.export`` keeps it as one
  node, ``torch.compile`` calls it without a graph break, ``FlopCounterMode`` counts
  ``2 * rows * k * C``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None

__all__ = ["SMALL_K", "available", "batch_strides", "gather_dot", "gather_sum"]

SMALL_K = 16
"""Largest ``k`` whose taps are unrolled at compile time (one kernel per such ``k``)."""

BLOCK_R = 32
"""Query rows per program."""


def available() -> bool:
    """Whether Triton is installed (it ships with CUDA builds of torch)."""
    return triton is not None


def batch_strides(sizes: tuple[int, ...], strides: tuple[int, ...]) -> tuple[int, int, int] | None:
    """``(inner, outer_stride, inner_stride)`` addressing ``prod(sizes)`` flattened batches
    with two strides: batch ``b`` starts at ``(b // inner) * outer_stride + (b % inner) *
    inner_stride``; ``None`` when the dims cannot be merged into two.

    Dims of size 1 are dropped and neighbours merged where ``outer == inner * size``
    (contiguous and fully expanded runs merge; a head slice of a batch stays two dims).
    """
    dims: list[list[int]] = []
    for size, stride in zip(sizes, strides, strict=True):
        if size == 1:
            continue
        if dims and dims[-1][1] == stride * size:
            dims[-1] = [dims[-1][0] * size, stride]
        else:
            dims.append([size, stride])
    if len(dims) > 2:
        return None
    dims = [[1, 0]] * (2 - len(dims)) + dims
    return dims[1][0], dims[0][1], dims[1][1]


if triton is not None:

    @triton.jit
    def _rows(pid, BLOCK: tl.constexpr):
        """int64 numbers of the ``BLOCK`` rows (or channels) of program ``pid``."""
        return pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)

    @triton.jit
    def _batch_base(r, nq, inner, s_outer, s_inner):
        """int64 offset of the gathered tensor's batch slice that row ``r`` reads."""
        b = r // nq
        return (b // inner) * s_outer + (b % inner) * s_inner

    @triton.jit
    def _tap(X, IDX, A, OUT, acc, j, r, rmask, c, base, nv, k, C, s_n, s_c,
             DOT: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr,
             BLOCK_C: tl.constexpr):  # fmt: skip
        """Tap ``j`` of rows ``r``: add ``w * x[t]`` to ``acc``, or store ``q . x[t]``."""
        t = tl.load(IDX + r * k + j, mask=rmask, other=0)
        ok = rmask & (t >= 0) & (t < nv)  # an index out of range reads zeros
        src = X + base + t * s_n  # (BLOCK_R,) pointers to the neighbours' rows
        if DOT:
            s = tl.zeros((BLOCK_R,), dtype=ACC)
            for c0 in range(0, C, BLOCK_C):
                cc = c0 + c
                m = ok[:, None] & (cc < C)[None, :]
                qv = tl.load(A + r[:, None] * C + cc[None, :], mask=m, other=0.0)
                xv = tl.load(src[:, None] + cc[None, :] * s_c, mask=m, other=0.0)
                s += tl.sum(qv.to(ACC) * xv.to(ACC), axis=1)
            tl.store(OUT + r * k + j, s.to(OUT.dtype.element_ty), mask=rmask)
        else:
            wj = tl.load(A + r * k + j, mask=rmask, other=0.0).to(ACC)
            m = ok[:, None] & (c < C)[None, :]
            xv = tl.load(src[:, None] + c[None, :] * s_c, mask=m, other=0.0)
            acc += wj[:, None] * xv.to(ACC)
        return acc

    @triton.jit
    def _gather_kernel(X, IDX, A, OUT, rows, nq, nv, k, C, inner, s_outer, s_inner, s_n,
                       s_c, DOT: tl.constexpr, K: tl.constexpr, ACC: tl.constexpr,
                       BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
        """``DOT``: ``OUT[r, j] = A[r] . X[b, IDX[r, j]]``; else ``OUT[r] = sum_j A[r, j]
        X[b, IDX[r, j]]``, with ``b = r // nq``. ``K`` taps unrolled, ``k - K`` looped."""
        r = _rows(tl.program_id(0), BLOCK_R)
        c = _rows(tl.program_id(1), BLOCK_C)  # DOT: one program over C, from channel 0
        rmask = r < rows
        base = _batch_base(r, nq, inner, s_outer, s_inner)
        acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=ACC)
        for j in tl.static_range(K):
            acc = _tap(X, IDX, A, OUT, acc, j, r, rmask, c, base, nv, k, C, s_n, s_c, DOT,
                       ACC, BLOCK_R, BLOCK_C)  # fmt: skip
        for j in range(K, k):
            acc = _tap(X, IDX, A, OUT, acc, j, r, rmask, c, base, nv, k, C, s_n, s_c, DOT,
                       ACC, BLOCK_R, BLOCK_C)  # fmt: skip
        if not DOT:
            m = rmask[:, None] & (c < C)[None, :]
            tl.store(OUT + r[:, None] * C + c[None, :], acc.to(OUT.dtype.element_ty), mask=m)


def _launch(x: Tensor, index: Tensor, a: Tensor, dot: bool) -> Tensor:
    """Run :func:`_gather_kernel` over ``x`` ``(*x, N, C)`` (broadcast to the index's batch
    dims), ``index`` ``(*, Nq, k)`` and ``a`` (queries ``(*, Nq, C)`` or weights
    ``(*, Nq, k)``)."""
    *batch, nq, k = index.shape
    nv, C = x.shape[-2:]
    x = x.expand(*batch, nv, C)
    merged = batch_strides(tuple(batch), x.stride()[:-2])
    if merged is None:  # more than two unmergeable batch dims: copy once
        x = x.contiguous()
        merged = batch_strides(tuple(batch), x.stride()[:-2])
    rows = math.prod(batch) * nq
    idx = index.reshape(rows, k).contiguous()
    a = a.expand(*batch, *a.shape[-2:]).reshape(rows, a.shape[-1]).contiguous()
    out = x.new_empty(rows, k if dot else C)
    block_c = min(128 if x.dtype != torch.float64 else 64, triton.next_power_of_2(C))
    grid = (triton.cdiv(rows, BLOCK_R), 1 if dot else triton.cdiv(C, block_c))
    if rows:
        _gather_kernel[grid](
            x, idx, a, out, rows, nq, nv, k, C, *merged, x.stride(-2), x.stride(-1),
            DOT=dot, K=k if k <= SMALL_K else 0,
            ACC=tl.float64 if x.dtype == torch.float64 else tl.float32,
            BLOCK_R=BLOCK_R, BLOCK_C=block_c,
        )  # fmt: skip
    return out.view(*batch, nq, out.shape[-1])


def gather_sum(v: Tensor, index: Tensor, w: Tensor) -> Tensor:
    """``out[..., i, :] = sum_j w[..., i, j] v[..., index[..., i, j], :]``.

    Shapes: ``v`` ``(*v, N, C)`` (any strides, batch dims broadcast to ``*``), ``index``
    and ``w`` ``(*, Nq, k)`` -> ``(*, Nq, C)`` in ``v``'s dtype. Runs the operator
    ``torch.ops.convnn.gather_sum``.
    """
    return torch.ops.convnn.gather_sum(v, index, w)


def gather_dot(q: Tensor, key: Tensor, index: Tensor) -> Tensor:
    """``out[..., i, j] = q[..., i, :] . key[..., index[..., i, j], :]``.

    Shapes: ``q`` ``(*, Nq, D)``, ``key`` ``(*k, N, D)`` (any strides, batch dims broadcast
    to ``*``), ``index`` ``(*, Nq, k)`` -> ``(*, Nq, k)`` in ``key``'s dtype. Runs the
    operator ``torch.ops.convnn.gather_dot``.
    """
    return torch.ops.convnn.gather_dot(q, key, index)


# -- the kernels as PyTorch operators -------------------------------------------------------
# torch.export keeps each call as one node, torch.compile as one opaque call (no graph
# break), FlopCounterMode counts it by the formulas below; the gradients are registered by
# :mod:`convnn.backends.blocked_gather`, next to the gathers' other backward.


@torch.library.custom_op("convnn::gather_sum", mutates_args=())
def _gather_sum_op(v: Tensor, index: Tensor, w: Tensor) -> Tensor:
    return _launch(v, index, w, dot=False)


@torch.library.custom_op("convnn::gather_dot", mutates_args=())
def _gather_dot_op(q: Tensor, key: Tensor, index: Tensor) -> Tensor:
    return _launch(key, index, q, dot=True)


@_gather_sum_op.register_fake
def _gather_sum_fake(v: Tensor, index: Tensor, w: Tensor) -> Tensor:
    return v.new_empty(*index.shape[:-1], v.shape[-1])


@_gather_dot_op.register_fake
def _gather_dot_fake(q: Tensor, key: Tensor, index: Tensor) -> Tensor:
    return key.new_empty(index.shape)


@register_flop_formula(torch.ops.convnn.gather_sum)
def _gather_sum_flops(v_shape, index_shape, w_shape, *, out_shape=None, **kwargs) -> int:
    """A multiply and an add per tap and channel: ``2 * rows * k * C``."""
    return 2 * math.prod(index_shape) * v_shape[-1]


@register_flop_formula(torch.ops.convnn.gather_dot)
def _gather_dot_flops(q_shape, key_shape, index_shape, *, out_shape=None, **kwargs) -> int:
    """A multiply and an add per tap and channel: ``2 * rows * k * D``."""
    return 2 * math.prod(index_shape) * q_shape[-1]
