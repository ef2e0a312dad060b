"""Checks of the Triton kernels on Triton's CPU interpreter, run by ``tests/convnn/test_triton.py``
in one subprocess (``TRITON_INTERPRET=1 CONVNN_TRITON=force CONVNN_DEBUG=1``, set before
Triton is imported): ``python tests/helpers/triton_interpreted.py [NAME ...]`` prints one JSON
object, ``{name: "ok" or the error}``.
"""

from __future__ import annotations

import os
import sys

import torch
import triton
import triton.language as tl
from interpreted_checks import Checks

import convnn
from convnn.backends import blocked_gather, selfcheck
from convnn.backends import triton_kernels as tk
from convnn.ops.gather import gather_rows, with_null_row

F64 = torch.float64
CHECKS = Checks()
check = CHECKS.add


def reference(x: torch.Tensor, index: torch.Tensor, a: torch.Tensor, dot: bool) -> torch.Tensor:
    """PyTorch's gathers: ``x`` broadcast to the index's batch, plus its null row."""
    rows = gather_rows(with_null_row(x.expand(*index.shape[:-2], *x.shape[-2:]), True), index)
    return (rows * a[..., None, :]).sum(-1) if dot else (rows * a[..., None]).sum(-2)


def layouts(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A ``(2, 3, 13, 20)``-shaped gathered tensor in several memory layouts."""
    g = torch.Generator().manual_seed(1)
    full = torch.randn(2, 5, 13, 20, generator=g, dtype=dtype)
    return {
        "contiguous": full[:, :3].contiguous(),
        "broadcast batch": full[:1, :3],  # (1, 3, 13, 20), expanded by the kernel
        "broadcast heads": full[:, :1].expand(2, 3, 13, 20),  # stride 0
        "head slice": full[:, 1:4],  # non-contiguous batch
        "channels strided": full[:, :3].transpose(-1, -2).contiguous().transpose(-1, -2),
    }


@check
def kernels_match_pytorch() -> None:
    """Both kernels, float32 and float64, k unrolled (5) and looped (20 > SMALL_K), every
    layout, index N (the null row) read as zeros."""
    assert 5 <= tk.SMALL_K < 20
    g = torch.Generator().manual_seed(0)
    for dtype, tol in ((torch.float32, 1e-5), (F64, 1e-13)):
        for k in (5, 20):
            index = torch.randint(0, 14, (2, 3, 11, k), generator=g)  # 13 = the null row
            w = torch.randn(2, 3, 11, k, generator=g, dtype=dtype)
            q = torch.randn(2, 3, 11, 20, generator=g, dtype=dtype)
            for name, x in layouts(dtype).items():
                for dot, got in (
                    (True, tk.gather_dot(q, x, index)),
                    (False, tk.gather_sum(x, index, w)),
                ):
                    want = reference(x, index, q if dot else w, dot)
                    assert got.dtype == dtype and got.shape == want.shape, (name, got.shape)
                    err = (got - want).abs().max().item()
                    assert err <= tol, f"{dtype} k={k} {name} dot={dot}: error {err:.1e}"


@check
def float64_accumulates_in_float64() -> None:
    """Terms whose sum float32 cannot hold: 1 + 1e-9 * j summed exactly in float64."""
    k = 8
    v = torch.ones(1, 4, 2, dtype=F64) + torch.arange(4, dtype=F64)[None, :, None] * 1e-9
    index = torch.arange(k).remainder(4).view(1, 1, k)
    w = torch.full((1, 1, k), 1.0, dtype=F64)
    got = tk.gather_sum(v, index, w)[0, 0, 0].item()
    want = k + 1e-9 * 2 * (0 + 1 + 2 + 3)
    assert abs(got - want) < 1e-14, f"sum {got!r}, expected {want!r}"
    q = torch.full((1, 1, 2), 1.0 + 1e-9, dtype=F64)
    dots = tk.gather_dot(q, v, index)[0, 0]
    want_dots = (q[0, 0] * v[0, index[0, 0]]).sum(-1)
    assert (dots - want_dots).abs().max().item() < 1e-15, dots - want_dots


@triton.jit
def _offsets_probe(OUT, pid, nq, k, j, inner, s_outer, s_inner, BLOCK: tl.constexpr):
    """The kernel's row numbers, tap offsets and batch offsets for program ``pid``."""
    r = tk._rows(pid, BLOCK)
    lanes = tl.arange(0, BLOCK)
    tl.store(OUT + lanes, r)
    tl.store(OUT + BLOCK + lanes, r * k + j)
    tl.store(OUT + 2 * BLOCK + lanes, tk._batch_base(r, nq, inner, s_outer, s_inner))


@check
def offsets_past_2_31() -> None:
    """Row, tap and batch offsets of rows past 2**31 (program ids as the kernels get them,
    int32) equal Python's integer arithmetic: no int32 overflow."""
    block, nq, k, j, inner = tk.BLOCK_R, 197, 16, 15, 12
    s_outer, s_inner = 12 * 197 * 64, 197 * 64
    pid = 2**31 // block + 12345  # row numbers above 2**31
    out = torch.zeros(3 * block, dtype=torch.int64)
    _offsets_probe[(1,)](out, pid, nq, k, j, inner, s_outer, s_inner, BLOCK=block)
    rows = [pid * block + i for i in range(block)]
    bases = [(r // nq // inner) * s_outer + (r // nq % inner) * s_inner for r in rows]
    assert out[:block].tolist() == rows
    assert out[block : 2 * block].tolist() == [r * k + j for r in rows]
    assert out[2 * block :].tolist() == bases
    assert min(r * k for r in rows) > 2**34 and min(bases) > 2**31


@check
def out_of_range_index_reads_zeros() -> None:
    """Indices outside [0, N) read zeros in the kernel (no other memory); CONVNN_DEBUG=1
    reports them before any kernel runs."""
    v = torch.randn(1, 5, 4)
    index = torch.tensor([[[0, 7], [-3, 2], [5, 10**9]]])
    w = torch.ones(1, 3, 2)
    got = tk.gather_sum(v, index, w)[0]
    want = torch.stack([v[0, 0], v[0, 2], torch.zeros(4)])
    assert torch.equal(got, want), got
    assert os.environ.get(blocked_gather.DEBUG_ENV) == "1"
    try:
        blocked_gather.weighted_gather_sum(v, index, w)
    except convnn.ConvNNError as err:
        assert "out of range" in str(err) and "\n" not in str(err), err
    else:
        raise AssertionError("no error for an index out of range")


def compare_backends(layer: torch.nn.Module, x: torch.Tensor) -> int:
    """Output and every gradient of ``layer`` (float64) on ``fast`` (kernels) and
    ``reference`` agree to 1e-10; returns the number of kernel launches."""
    launches = []
    launch = tk._launch
    tk._launch = lambda *args, **kwargs: launches.append(1) or launch(*args, **kwargs)
    try:
        out = {}
        for backend in ("fast", "reference"):
            layer.options = convnn.ConvNNOptions(**{**layer.options.__dict__, "backend": backend})
            leaf = x.detach().requires_grad_(True)
            y = layer(leaf)
            params = [p for p in layer.parameters() if p.requires_grad]
            out[backend] = (y, *torch.autograd.grad(y.square().sum(), [leaf, *params]))
    finally:
        tk._launch = launch
    for a, b in zip(out["fast"], out["reference"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    return len(launches)


@check
def attention_float64_through_kernels() -> None:
    """ConvNNAttention in float64 through the kernels equals the reference to 1e-10,
    forward and backward (float32 accumulation gave errors near 2e-7)."""
    torch.manual_seed(0)
    attn = convnn.ConvNNAttention(16, 2, k=4, weighting="softmax").double()
    x = torch.randn(2, 17, 16, dtype=F64)  # N > 2 * head_dim: not the dense path
    launches = compare_backends(attn, x)
    assert launches == 3, launches  # weighted sum; its weight gradient; the q gradient


@check
def convnn2d_float64_through_kernels() -> None:
    """ConvNN2d (cosine over all tokens, softmax weights, ``sum``) likewise."""
    torch.manual_seed(0)
    layer = convnn.ConvNN2d(3, 3, 3, padding=1, similarity="cosine", k=5, weighting="softmax",
                            kernel="sum").double()  # fmt: skip
    assert compare_backends(layer, torch.randn(2, 3, 4, 4, dtype=F64)) >= 2


@check
def selfcheck_passes() -> None:
    """The self-check of a device passes where the kernels work (here: the interpreter)."""
    result = selfcheck.run_selfcheck("cpu")
    assert result.ok, result.detail
    assert "matches PyTorch" in result.detail


if __name__ == "__main__":
    CHECKS.main(sys.argv[1:])
