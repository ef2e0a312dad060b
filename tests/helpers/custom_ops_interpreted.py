"""Checks of the operators ``convnn::gather_sum`` and ``convnn::gather_dot`` (the Triton kernels,
run on Triton's CPU interpreter), run by ``tests/convnn/test_custom_ops.py`` in one subprocess
(``TRITON_INTERPRET=1 CONVNN_TRITON=force``, set before Triton is imported):
``python tests/helpers/custom_ops_interpreted.py [NAME ...]`` prints one JSON object,
``{name: "ok" or the error}``.
"""

from __future__ import annotations

import sys

import torch
from interpreted_checks import Checks
from triton_interpreted import reference

import convnn
from convnn.backends import triton_kernels as tk

F64 = torch.float64
OPS = (torch.ops.convnn.gather_sum.default, torch.ops.convnn.gather_dot.default)
CHECKS = Checks()
check = CHECKS.add


def inputs(dtype: torch.dtype = F64, k: int = 3) -> dict[str, torch.Tensor]:
    """A gathered table broadcast over the batch (``(1, 2, 7, 5)`` read as ``(3, 2, 7, 5)``),
    queries, weights and indices up to 7, the null row."""
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(1, 2, 7, 5, generator=g, dtype=dtype),
        "q": torch.randn(3, 2, 4, 5, generator=g, dtype=dtype),
        "w": torch.randn(3, 2, 4, k, generator=g, dtype=dtype),
        "index": torch.randint(0, 8, (3, 2, 4, k), generator=g),
    }


@check
def ops_equal_pytorch_in_float64() -> None:
    """Both operators and their gradients (registered autograd) equal PyTorch's gathers in
    float64, for a broadcast table and index N read as a zero row."""
    for op, dot in ((torch.ops.convnn.gather_sum, False), (torch.ops.convnn.gather_dot, True)):
        t = inputs()
        x, a = t["x"].requires_grad_(True), t["q" if dot else "w"].requires_grad_(True)
        got = op(a, x, t["index"]) if dot else op(x, t["index"], a)
        want = reference(x, t["index"], a, dot)
        torch.testing.assert_close(got, want, atol=1e-13, rtol=0)
        grads = torch.autograd.grad(got.square().sum(), [x, a])
        expected = torch.autograd.grad(want.square().sum(), [x, a])
        for name, g, e in zip(("table", "a"), grads, expected, strict=True):
            assert g.shape == e.shape, (op, name, g.shape)
            torch.testing.assert_close(g, e, atol=1e-12, rtol=0, msg=f"{op} grad {name}")


@check
def opcheck_passes() -> None:
    """``torch.library.opcheck`` (schema, autograd registration, fake tensor, AOT dispatch
    with dynamic shapes, backward included) of both operators."""
    t = inputs(torch.float32)
    x, q, w = (t[n].requires_grad_(True) for n in ("x", "q", "w"))
    for op, args in zip(OPS, ((x, t["index"], w), (q, x, t["index"])), strict=True):
        results = torch.library.opcheck(op, args)
        failed = {name: r for name, r in results.items() if r != "SUCCESS"}
        assert not failed, (op, failed)


class CountLaunches:
    """Counts the kernel launches (``triton_kernels._launch``) inside the ``with`` block."""

    def __enter__(self) -> list[int]:
        self.launch, self.launches = tk._launch, []
        tk._launch = lambda *args, **kwargs: self.launches.append(1) or self.launch(*args, **kwargs)
        return self.launches

    def __exit__(self, *exc) -> None:
        tk._launch = self.launch


def attention(requires_grad: bool = False) -> tuple[torch.nn.Module, torch.Tensor]:
    """A float64 ConvNNAttention on the blocked path (N > 2 * head_dim) and its input."""
    torch.manual_seed(0)
    attn = convnn.ConvNNAttention(16, 2, k=4, weighting="softmax").double()
    return attn, torch.randn(2, 17, 16, dtype=F64, requires_grad=requires_grad)


@check
def exported_layer_calls_the_ops() -> None:
    """``torch.export`` of a ConvNNAttention whose gathers run as the kernels: the program
    holds the operator of its weighted sum (exporting launches no kernel), and running it
    launches the kernel and equals the eager layer."""
    attn, x = attention()
    attn.eval()
    with CountLaunches() as launches:
        exported = torch.export.export(attn, (x,))
    assert not launches, "torch.export ran a kernel"
    targets = {str(n.target) for gm in exported.graph_module.modules() for n in gm.graph.nodes}
    assert "convnn.gather_sum.default" in targets, targets
    with CountLaunches() as launches:
        got = exported.module()(x)
    assert launches, "the exported program ran no kernel"
    torch.testing.assert_close(got, attn(x), atol=1e-12, rtol=0)


@check
def compiled_layer_calls_the_ops() -> None:
    """``torch.compile(fullgraph=True)`` (AOT eager) of the same layer, forward and
    backward through the operators, equals eager."""
    attn, x = attention(requires_grad=True)
    compiled = torch.compile(attn, fullgraph=True, backend="aot_eager")
    with CountLaunches() as launches:
        got = compiled(x)
        grads = torch.autograd.grad(got.square().sum(), [x, attn.qkv.weight])
    assert launches, "the compiled layer ran no kernel"
    want = attn(x)
    expected = torch.autograd.grad(want.square().sum(), [x, attn.qkv.weight])
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-11, rtol=0)


if __name__ == "__main__":
    CHECKS.main(sys.argv[1:])
