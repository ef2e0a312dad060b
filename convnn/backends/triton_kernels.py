"""Triton kernels of the fast backend's gather primitives (CUDA GPUs).

Fused gather + weighting + aggregation: the gathered neighbors are never written
to memory. On a CUDA device they replace the blocked PyTorch code of
:mod:`convnn.gather_ops` automatically; ``CONVNN_TRITON=0`` turns them off and
``CONVNN_TRITON=force`` uses them on any device, which with ``TRITON_INTERPRET=1``
runs them on the CPU (how the tests check them against the reference).

Layouts (flattened batch ``Bf``): ``v``/``key`` ``(Bf, Nv, C)``, ``q``/``out``
``(Bf, Nq, C)``, ``index``/``w`` ``(Bf, Nq, k)``; all contiguous.
"""

from __future__ import annotations

import os

from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None


def use_triton(x: Tensor) -> bool:
    """Whether the gather primitives run as Triton kernels for tensors like ``x``."""
    mode = os.environ.get("CONVNN_TRITON", "auto")
    if triton is None or mode == "0":
        return False
    return mode == "force" or x.is_cuda


if triton is not None:

    @triton.jit
    def _gather_sum_kernel(
        V, IDX, W, OUT, rows, nq, nv, C, K: tl.constexpr, BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        rmask, cmask = r < rows, c < C
        base = (r // nq) * nv
        acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
        for j in tl.static_range(K):
            t = tl.load(IDX + r * K + j, mask=rmask, other=0)
            wj = tl.load(W + r * K + j, mask=rmask, other=0.0).to(tl.float32)
            ptr = V + (base + t)[:, None] * C + c[None, :]
            vals = tl.load(ptr, mask=rmask[:, None] & cmask[None, :], other=0.0)
            acc += wj[:, None] * vals.to(tl.float32)
        out_ptr = OUT + r[:, None] * C + c[None, :]
        tl.store(out_ptr, acc.to(OUT.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])

    @triton.jit
    def _gather_dot_kernel(
        Q, KEY, IDX, OUT, rows, nq, nv, C, K: tl.constexpr, BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = r < rows
        base = (r // nq) * nv
        for j in tl.static_range(K):
            t = tl.load(IDX + r * K + j, mask=rmask, other=0)
            acc = tl.zeros((BLOCK_R,), dtype=tl.float32)
            for c0 in range(0, C, BLOCK_C):
                c = c0 + tl.arange(0, BLOCK_C)
                m = rmask[:, None] & (c < C)[None, :]
                qv = tl.load(Q + r[:, None] * C + c[None, :], mask=m, other=0.0)
                kv = tl.load(KEY + (base + t)[:, None] * C + c[None, :], mask=m, other=0.0)
                acc += tl.sum(qv.to(tl.float32) * kv.to(tl.float32), axis=1)
            tl.store(OUT + r * K + j, acc.to(OUT.dtype.element_ty), mask=rmask)


def _flat(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-2], x.shape[-1]).contiguous()


def _block_c(C: int) -> int:
    return min(128, triton.next_power_of_2(C))


def gather_sum(v: Tensor, index: Tensor, w: Tensor) -> Tensor:
    """``out[..., i, :] = sum_j w[..., i, j] v[..., index[..., i, j], :]`` -> ``(*, Nq, C)``."""
    *batch, nq, k = index.shape
    vf, idx, wf = _flat(v), _flat(index), _flat(w)
    C = vf.shape[-1]
    out = v.new_empty(idx.shape[0], nq, C)
    rows, block_r, block_c = idx.shape[0] * nq, 32, _block_c(C)
    grid = (triton.cdiv(rows, block_r), triton.cdiv(C, block_c))
    _gather_sum_kernel[grid](vf, idx, wf, out, rows, nq, vf.shape[1], C, k, block_r, block_c)
    return out.view(*batch, nq, C)


def gather_dot(q: Tensor, key: Tensor, index: Tensor) -> Tensor:
    """``out[..., i, j] = q[..., i, :] . key[..., index[..., i, j], :]`` -> ``(*, Nq, k)``."""
    *batch, nq, k = index.shape
    qf, kf, idx = _flat(q), _flat(key), _flat(index)
    C = qf.shape[-1]
    out = q.new_empty(idx.shape[0], nq, k)
    rows, block_r = idx.shape[0] * nq, 32
    grid = (triton.cdiv(rows, block_r),)
    _gather_dot_kernel[grid](qf, kf, idx, out, rows, nq, kf.shape[1], C, k, block_r, _block_c(C))
    return out.view(*batch, nq, k)
