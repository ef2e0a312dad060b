"""Deterministic when asked: under ``torch.use_deterministic_algorithms(True)`` the fast
path's backward accumulates with ``index_put_(accumulate=True)`` (sorted, deterministic)
instead of ``index_add_`` (atomic adds on CUDA), and gives the same gradients.

The CPU tests compare both accumulations in float64; the CUDA tests (run by
``benchmarks/gpu_check.sh``'s ``cuda-tests`` stage) check bit-identical gradients over two
runs. Cost: ``benchmarks/bench_deterministic.py`` (docs/gpu.md).
"""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

import convnn
from convnn.backends import blocked_gather as gather_ops

# cuBLAS refuses deterministic mode without a fixed workspace (read when it is first used)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

F64 = torch.float64
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@contextlib.contextmanager
def deterministic(mode: bool = True):
    """``torch.use_deterministic_algorithms(mode)`` for the block, then the previous mode."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(mode)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


@pytest.fixture
def accumulations(monkeypatch):
    """Counts the ``index_add_`` and ``index_put_`` calls made from Python."""
    calls = {"index_add_": 0, "index_put_": 0}
    for name in calls:
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return calls


def primitive_inputs(device: str = "cpu", dtype: torch.dtype = F64, hot: int = 0):
    """Inputs of the gather primitives; ``hot`` > 0 points every neighbor at ``hot`` rows
    (many duplicate indices: where atomic adds would race)."""
    g = torch.Generator().manual_seed(0)
    B, N, k, C = 2, 40, 7, 16
    key = torch.randn(B, N, C, generator=g, dtype=F64)
    q = torch.randn(B, N, C, generator=g, dtype=F64)
    w = torch.randn(B, N, k, generator=g, dtype=F64)
    index = torch.randint(0, hot or N + 1, (B, N, k), generator=g)  # N: the null row
    tensors = [t.to(device, dtype).requires_grad_(True) for t in (key, q, w)]
    return (*tensors, index.to(device))


def primitive_grads(key, q, w, index):
    """Gradients of both primitives (their backward is the scatter-add under test)."""
    s = gather_ops.gather_dot(q, key, index, has_null=True)
    out = gather_ops.weighted_gather_sum(key, index, w, has_null=True)
    loss = (s * s.detach().sin()).sum() + (out * out.detach().cos()).sum()
    return torch.autograd.grad(loss, [key, q, w])


def test_deterministic_mode_switches_the_accumulation(accumulations):
    inputs = primitive_inputs()
    primitive_grads(*inputs)
    assert accumulations == {"index_add_": 2, "index_put_": 0}
    with deterministic():
        primitive_grads(*inputs)
    assert accumulations == {"index_add_": 2, "index_put_": 2}


def test_deterministic_primitive_gradients_equal_the_default():
    inputs = primitive_inputs()
    default = primitive_grads(*inputs)
    with deterministic():
        det = primitive_grads(*inputs)
    for a, b in zip(default, det, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def layer_grads(layer: torch.nn.Module, x: torch.Tensor):
    x = x.detach().requires_grad_(True)
    y = layer(x)
    return torch.autograd.grad(y, [x, *layer.parameters()], torch.ones_like(y) / y.numel())


LAYERS = {  # the blocked path: where the scatter-add runs
    "ConvNNAttention": lambda: (convnn.ConvNNAttention(32, 4, k=7, backend="blocked"), (2, 50, 32)),
    "ConvNN2d": lambda: (
        convnn.ConvNN2d(8, 8, 3, padding=1, backend="blocked", weighting="softmax"),
        (2, 8, 9, 9),
    ),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_deterministic_layer_gradients_equal_the_default(name, accumulations):
    """A whole layer on the blocked path (float64): same gradients in both modes."""
    torch.manual_seed(0)
    layer, shape = LAYERS[name]()
    layer = layer.double()
    x = torch.randn(shape, dtype=F64)
    default = layer_grads(layer, x)
    assert accumulations["index_add_"] > 0 and accumulations["index_put_"] == 0
    with deterministic():
        det = layer_grads(layer, x)
    assert accumulations["index_put_"] > 0
    for a, b in zip(default, det, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


# -- on a GPU (benchmarks/gpu_check.sh, stage cuda-tests) ---------------------------------------


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_deterministic_gradients_are_bit_identical(dtype):
    """Every neighbor points at one of 3 rows: atomic adds would race; sorted sums don't."""
    inputs = primitive_inputs("cuda", dtype, hot=3)
    with deterministic():
        first = primitive_grads(*inputs)
        second = primitive_grads(*inputs)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@CUDA
def test_cuda_deterministic_layer_is_bit_identical():
    """ConvNNAttention (ViT-B/16 layout, bf16 autocast) backward twice: identical bits."""
    torch.manual_seed(0)
    layer = convnn.ConvNNAttention(768, 12, k=9, qkv_bias=True).cuda()
    x = torch.randn(8, 197, 768, device="cuda")
    with deterministic(), torch.autocast("cuda", dtype=torch.bfloat16):
        first, second = layer_grads(layer, x), layer_grads(layer, x)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
