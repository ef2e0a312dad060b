"""The fast backend's special paths equal the reference, forward and backward.

Map paths of ``convnn2d`` (a convolution run as ``F.conv2d``, shifted windows,
fused window attention), the memory-light gather primitives, blocked selection,
the backend switch and ``torch.compile(fullgraph=True)``. The Triton kernels (on the CPU
interpreter) are in ``tests/convnn/test_triton.py``.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.autograd import gradcheck

import convnn
import convnn.functional as cf
import convnn.modules  # noqa: F401  (imported before `forbid_generic` stubs functional.convnn)
from convnn.backends import blocked_gather as gather_ops
from convnn.backends import conv as map_paths
from convnn.backends import window_attention

F64 = torch.float64


def pair(**kwargs) -> tuple[convnn.ConvNN2d, convnn.ConvNN2d]:
    """The same ConvNN2d (float64) on the fast and on the reference backend."""
    torch.manual_seed(0)
    fast = convnn.ConvNN2d(backend="fast", **kwargs).double()
    ref = convnn.ConvNN2d(backend="reference", **kwargs).double()
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def assert_same(fast: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor) -> None:
    """Outputs and gradients (input and parameters) agree to 1e-10."""
    x = x.detach().requires_grad_(True)
    y_fast, y_ref = fast(x), ref(x)
    assert y_fast.shape == y_ref.shape
    torch.testing.assert_close(y_fast, y_ref, atol=1e-10, rtol=0)
    g = torch.randn_like(y_fast)
    params_f, params_r = list(fast.parameters()), list(ref.parameters())
    grads_f = torch.autograd.grad(y_fast, [x, *params_f], g)
    grads_r = torch.autograd.grad(y_ref, [x, *params_r], g)
    for a, b in zip(grads_f, grads_r, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.fixture
def forbid_generic(monkeypatch):
    """Make the generic token path fail, to prove a map fast path was taken."""

    def boom(*args, **kwargs):
        raise AssertionError("generic path used")

    monkeypatch.setattr(cf, "convnn", boom)
    return monkeypatch


@pytest.mark.parametrize("kernel", ["standard", "depthwise", "separable", "sum"])
@pytest.mark.parametrize("candidates", ["window", "all"])
@pytest.mark.parametrize("stride", [1, 2])
def test_convolution_dispatch(kernel, candidates, stride, forbid_generic):
    """Whole-window selection without weighting runs as F.conv2d and equals the reference."""
    out = 6 if kernel in ("standard", "separable") else (8 if kernel == "depthwise" else 4)
    kw = dict(in_channels=4, out_channels=out, kernel_size=3, stride=stride, padding=1,
              kernel=kernel, candidates=candidates, similarity="location")  # fmt: skip
    fast, ref = pair(**kw)
    x = torch.randn(2, 4, 7, 9, dtype=F64)
    assert map_paths.is_convolution(fast.options, fast.kernel_size)
    with pytest.raises(AssertionError, match="generic"):
        ref(x)
    if kernel == "standard":
        torch.testing.assert_close(fast(x), _as_conv(fast)(x), atol=1e-10, rtol=0)
    forbid_generic.undo()
    assert_same(fast, ref, x)


def _as_conv(layer: convnn.ConvNN2d) -> torch.nn.Conv2d:
    conv = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                           layer.stride, layer.padding).double()  # fmt: skip
    with torch.no_grad():
        conv.weight.copy_(layer.weight.view_as(conv.weight))
        conv.bias.copy_(layer.bias)
    return conv


@pytest.mark.parametrize("similarity", ["dot", "cosine", "euclidean", "location", "mixed"])
@pytest.mark.parametrize("weighting", ["similarity", "softmax"])
@pytest.mark.parametrize("kernel", ["sum", "depthwise", "separable"])
def test_shifted_windows(similarity, weighting, kernel):
    """Weighted whole windows computed from strided views equal the reference."""
    out = 6 if kernel == "separable" else 4
    for stride, window in ((1, 3), (2, 5)):
        kw = dict(in_channels=4, out_channels=out, kernel_size=3, stride=stride, padding=1,
                  candidates="window", window_size=window, k=window * window, similarity="dot",
                  weighting=weighting, weighting_similarity=similarity, kernel=kernel)  # fmt: skip
        fast, ref = pair(**kw)
        assert map_paths.shifts_apply(fast.options, (3, 3), out, 4)
        assert_same(fast, ref, torch.randn(2, 4, 6, 7, dtype=F64))


@pytest.mark.parametrize("s", [3, 5])
def test_fused_window_attention(s, monkeypatch):
    """Zero-padded neighborhood attention (softmax(dot), sum) by the fused function."""
    kw = dict(in_channels=5, out_channels=5, kernel_size=s, padding=s // 2, candidates="window",
              similarity="dot", weighting="softmax", kernel="sum")  # fmt: skip
    fast, ref = pair(**kw)
    shifts = convnn.backends.PATHS["shifts"]
    monkeypatch.setitem(convnn.backends.PATHS, "shifts", dataclasses.replace(shifts, run=None))
    assert map_paths.window_attention_applies(fast.options, (s, s), (1, 1), (s // 2,) * 2, 5, 5)
    assert_same(fast, ref, torch.randn(2, 5, 6, 9, dtype=F64))
    x = torch.randn(1, 3, 4, 5, dtype=F64, requires_grad=True)
    assert gradcheck(lambda t: window_attention.window_attention(t, (s, s)), (x,))


@pytest.mark.parametrize("has_null", [False, True])
def test_gather_primitives_gradcheck(has_null):
    """gather_dot and weighted_gather_sum have exact gradients (re-gathered in backward)."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 5, 4, dtype=F64, generator=g, requires_grad=True)
    key = torch.randn(2, 3, 6, 4, dtype=F64, generator=g, requires_grad=True)
    w = torch.randn(2, 3, 5, 3, dtype=F64, generator=g, requires_grad=True)
    idx = torch.randint(0, 6 + has_null, (2, 3, 5, 3), generator=g)
    assert gradcheck(lambda a, b: gather_ops.gather_dot(a, b, idx, has_null), (q, key))
    assert gradcheck(lambda v, ww: gather_ops.weighted_gather_sum(v, idx, ww, has_null), (key, w))


def test_gather_blocks(monkeypatch):
    """Tiny gather blocks and a tiny selection budget change nothing."""
    attn = convnn.ConvNNAttention(16, 2, k=4, similarity="cosine").double()
    x = torch.randn(3, 17, 16, dtype=F64)
    expected = attn(x)
    monkeypatch.setattr(gather_ops, "BLOCK_BYTES", 64)
    attn.options = convnn.ConvNNOptions(**{**attn.options.__dict__, "selection_budget_mb": 1e-4})
    torch.testing.assert_close(attn(x), expected, atol=1e-12, rtol=0)


def test_spatial_samples_avoid_padding():
    """random/spatial candidates come from the input's own tokens, never from padding."""
    layer = convnn.ConvNN2d(3, 3, 3, padding=1, candidates="spatial", num_samples=9,
                            kernel="sum", similarity="dot", k=1)  # fmt: skip
    x = torch.randn(1, 3, 7, 7)
    grid, qi, _ = convnn.ops.geometry.conv_queries(7, 7, (3, 3), (1, 1), (1, 1), False)
    assert grid.height == 7 and int(qi.min()) == 0 and int(qi.max()) == 48
    assert layer(x).shape == (1, 3, 7, 7)


def test_backend_switch(monkeypatch, forbid_generic):
    """CONVNN_BACKEND=reference sends an exact convolution through the generic path."""
    layer = convnn.ConvNN2d.from_conv2d(torch.nn.Conv2d(3, 3, 3, padding=1))
    x = torch.randn(1, 3, 5, 5)
    layer(x)  # fast backend: F.conv2d, generic path not touched
    monkeypatch.setenv("CONVNN_BACKEND", "reference")
    with pytest.raises(AssertionError, match="generic"):
        layer(x)


COMPILE_CASES = {
    "all_cosine": lambda: (convnn.ConvNN2d(4, 4, 3, padding=1), (2, 4, 6, 6)),
    "window_softmax": lambda: (
        convnn.ConvNN2d(
            4,
            4,
            3,
            padding=1,
            candidates="window",
            similarity="dot",
            weighting="softmax",
            kernel="sum",
        ),  # fmt: skip
        (2, 4, 6, 6),
    ),
    "attention_k5": lambda: (convnn.ConvNNAttention(16, 2, k=5), (2, 17, 16)),
    "attention_random": lambda: (
        convnn.ConvNNAttention(16, 2, k=3, candidates="random", num_samples=6),
        (2, 17, 16),
    ),
    "branching": lambda: (convnn.BranchingAttention(16, 4, ratio=0.5, k=3), (2, 17, 16)),
}


@pytest.mark.parametrize("name", sorted(COMPILE_CASES))
@pytest.mark.parametrize("training", [True, False])
def test_compiles_without_graph_breaks(name, training):
    """torch.compile(fullgraph=True) traces forward and backward in one graph."""
    torch._dynamo.reset()
    layer, shape = COMPILE_CASES[name]()
    layer.train(training)
    x = torch.randn(shape, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    y = compiled(x)
    y.sum().backward()
    if not training:
        torch.testing.assert_close(y, layer(x), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fast_equals_reference():
    """On a GPU the fast backend (compiled Triton kernels) equals the reference."""
    torch.manual_seed(0)
    attn = convnn.ConvNNAttention(64, 4, k=7).cuda()
    x = torch.randn(3, 65, 64, device="cuda", requires_grad=True)
    outs = {}
    for backend in ("fast", "reference"):
        attn.options = convnn.ConvNNOptions(**{**attn.options.__dict__, "backend": backend})
        y = attn(x)
        outs[backend] = (y, *torch.autograd.grad(y.square().sum(), [x, attn.qkv.weight]))
    for a, b in zip(outs["fast"], outs["reference"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    fast, ref = pair(in_channels=8, out_channels=8, kernel_size=3, padding=1, k=9)
    assert_same(fast.cuda(), ref.cuda(), torch.randn(2, 8, 12, 12, dtype=F64, device="cuda"))


@pytest.mark.parametrize("similarity", ["dot", "cosine", "euclidean"])
@pytest.mark.parametrize("weighting", ["none", "similarity", "softmax"])
def test_dense_small_path(similarity, weighting):
    """Few tokens, many channels: P @ value with the top-k weights scattered into P."""
    g = torch.Generator().manual_seed(0)
    q, key, v = (torch.randn(2, 3, 10, 8, dtype=F64, generator=g) for _ in range(3))
    opts = dict(k=4, similarity=similarity, weighting=weighting, kernel="sum")
    options = convnn.ConvNNOptions(**opts)
    grads = {}
    for backend in ("dense", "reference"):  # "dense" raises if it cannot run
        leaves = [t.detach().requires_grad_(True) for t in (v, q, key)]
        y = convnn.convnn(*leaves, options=options, backend=backend)
        used = leaves if weighting != "none" else leaves[:1]
        grads[backend] = (y, *torch.autograd.grad(y.square().sum(), used))
    for a, b in zip(grads["dense"], grads["reference"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("k", [1, 4, 9, 13, 25])
@pytest.mark.parametrize("weighting", ["none", "softmax"])
def test_location_selection_by_window_table(k, weighting, monkeypatch):
    """Location similarity over all tokens runs on a window table, same neighbors."""
    kw = dict(in_channels=3, out_channels=4, kernel_size=5, padding=2, similarity="location",
              k=k, weighting=weighting, weighting_similarity="cosine")  # fmt: skip
    fast, ref = pair(**kw)
    calls = []
    real = convnn.ops.geometry.chebyshev_distance
    monkeypatch.setattr(
        convnn.ops.scores,
        "chebyshev_distance",
        lambda q, t, g: calls.append(t) or real(q, t, g),
    )
    x = torch.randn(2, 3, 6, 8, dtype=F64)
    assert_same(fast, ref, x)
    side = {1: 1, 4: 3, 9: 3, 13: 5, 25: 5}[k]
    sizes = [t.index.shape[-1] for t in calls]
    if k == 25 and weighting == "none":
        assert sizes == [10 * 12]  # fast: F.conv2d, no distances; reference: all tokens
    else:
        assert sizes == [side * side, 10 * 12]  # fast: window table; reference: all tokens


@pytest.mark.parametrize("kernel_size", [2, 4])
def test_even_kernel_location_is_not_a_convolution(kernel_size):
    """Even kernels: the k = s*s nearest positions are not the s x s conv window, so the
    fast backend must not run F.conv2d; it agrees with the reference."""
    kw = dict(in_channels=2, out_channels=3, kernel_size=kernel_size, padding=1,
              similarity="location", k=kernel_size**2)  # fmt: skip
    fast, ref = pair(**kw)
    assert not map_paths.is_convolution(fast.options, fast.kernel_size)
    assert_same(fast, ref, torch.randn(2, 2, 5, 6, dtype=F64))
