"""ConvNN's exact special cases equal PyTorch's own ops (docs/method.md §2).

Every test compares a ConvNN configuration with the operation it contains as a
special case, on both backends, in float64 (max abs error <= 1e-10) and float32
(<= 1e-5): ``nn.Conv2d`` (dense, depthwise, strided, valid), multi-head
self-attention (timm ``Attention`` and ``F.scaled_dot_product_attention``), KVT
top-k attention and neighborhood attention (NATTEN).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Attention
from torch import Tensor, nn

import convnn
from convnn import BranchingAttention, ConvNN2d, ConvNNAttention, ConvNNOptions, Grid

DTYPES = [torch.float64, torch.float32]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
BACKENDS = ["reference", "fast"]
# (in_channels, out_channels, groups) of dense and depthwise convolutions.
CONVS = {"dense": (3, 4, 1), "depthwise": (3, 3, 3), "depthwise_x2": (3, 6, 3)}
KIND_BIAS = [("dense", True), ("dense", False), ("depthwise", True), ("depthwise_x2", False)]

dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
backends = pytest.mark.parametrize("backend", BACKENDS)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def assert_exact(actual: Tensor, expected: Tensor, dtype: torch.dtype) -> None:
    """Same shape and max abs error within the tolerance of ``dtype``."""
    assert actual.shape == expected.shape
    assert actual.dtype == dtype
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= TOL[dtype], f"max abs error {err:.3e} > {TOL[dtype]:.0e}"


def make_conv(kind: str, s: int, stride: int, padding: int, bias: bool, dtype) -> nn.Conv2d:
    c, o, groups = CONVS[kind]
    return nn.Conv2d(c, o, s, stride, padding, groups=groups, bias=bias, dtype=dtype)


@backends
@dtypes
@pytest.mark.parametrize(("kind", "bias"), KIND_BIAS)
@pytest.mark.parametrize("size", [(7, 13), (16, 40)], ids=["7x13", "16x40"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("s", [1, 3, 5, 7])
def test_from_conv2d_equals_conv2d(s, stride, size, kind, bias, dtype, backend) -> None:
    """Conv2d (dense or depthwise, zero padding s//2): window candidates, offset order."""
    conv = make_conv(kind, s, stride, s // 2, bias, dtype)
    layer = ConvNN2d.from_conv2d(conv, backend=backend)
    x = torch.randn(2, conv.in_channels, *size, dtype=dtype)
    assert_exact(layer(x), conv(x), dtype)


@backends
@dtypes
@pytest.mark.parametrize("size", [(7, 13), (16, 40)], ids=["7x13", "16x40"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("s", [1, 3, 5, 7])
def test_location_all_candidates_equals_conv2d(s, stride, size, dtype, backend) -> None:
    """Conv2d: Chebyshev location selection over all tokens, zero padding tokens included."""
    conv = make_conv("dense", s, stride, s // 2, True, dtype)
    layer = ConvNN2d(
        conv.in_channels,
        conv.out_channels,
        s,
        stride,
        padding=s // 2,
        similarity="location",
        candidates="all",
        order="offset",
        weighting="none",
        kernel="standard",
        backend=backend,
        dtype=dtype,
    )
    with torch.no_grad():
        layer.weight.copy_(conv.weight.flatten(2))
        layer.bias.copy_(conv.bias)
    x = torch.randn(2, conv.in_channels, *size, dtype=dtype)
    assert_exact(layer(x), conv(x), dtype)


@backends
@dtypes
@pytest.mark.parametrize("candidates", ["window", "all"])
@pytest.mark.parametrize("kind", ["dense", "depthwise_x2"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("s", [3, 7])
def test_valid_conv2d(s, stride, kind, candidates, dtype, backend) -> None:
    """Conv2d with padding=0: query centres inside the map, no padding tokens."""
    conv = make_conv(kind, s, stride, 0, True, dtype)
    layer = ConvNN2d.from_conv2d(conv, candidates=candidates, backend=backend)
    x = torch.randn(2, conv.in_channels, 9, 12, dtype=dtype)
    assert_exact(layer(x), conv(x), dtype)


@backends
@dtypes
@pytest.mark.parametrize("kind", list(CONVS))
@pytest.mark.parametrize("padding", ["half", "zero"])
@pytest.mark.parametrize("s", [3, 5])
def test_strided_conv2d_odd_map(s, padding, kind, dtype, backend) -> None:
    """Strided Conv2d on a 9x11 map: sub-sampled query positions."""
    conv = make_conv(kind, s, 2, s // 2 if padding == "half" else 0, True, dtype)
    layer = ConvNN2d.from_conv2d(conv, backend=backend)
    x = torch.randn(2, conv.in_channels, 9, 11, dtype=dtype)
    assert_exact(layer(x), conv(x), dtype)


def timm_attention(dim: int, heads: int, qkv_bias: bool, qk_norm: bool, dtype) -> Attention:
    norm = nn.LayerNorm if qk_norm else None
    attn = Attention(dim, heads, qkv_bias=qkv_bias, qk_norm=qk_norm, norm_layer=norm, dtype=dtype)
    if qk_norm:  # non-trivial affine parameters of the q/k norms
        with torch.no_grad():
            for p in (*attn.q_norm.parameters(), *attn.k_norm.parameters()):
                p.copy_(torch.randn_like(p))
    return attn.eval()


@backends
@dtypes
@pytest.mark.parametrize("tokens", [17, 50])
@pytest.mark.parametrize("qk_norm", [False, True], ids=["plain", "qknorm"])
@pytest.mark.parametrize("qkv_bias", [False, True], ids=["nobias", "qkvbias"])
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_attention_equals_timm(heads, qkv_bias, qk_norm, tokens, dtype, backend) -> None:
    """Multi-head self-attention (k=None, softmax(dot), sum) with a class token; heads merged
    in timm's order."""
    attn = timm_attention(16, heads, qkv_bias, qk_norm, dtype)
    layer = ConvNNAttention.from_attention(attn, k=None, backend=backend).eval()
    x = torch.randn(2, tokens, 16, dtype=dtype)
    assert_exact(layer(x), attn(x), dtype)


@backends
@dtypes
@pytest.mark.parametrize("tokens", [17, 50])
def test_functional_equals_sdpa(tokens, dtype, backend) -> None:
    """Functional ConvNN with k=None, softmax(dot), sum kernel = F.scaled_dot_product_attention."""
    q, k, v = torch.randn(3, 2, tokens, 8, dtype=dtype).unbind(0)
    opts = ConvNNOptions(k=None, similarity="dot", weighting="softmax", kernel="sum")
    out = convnn.convnn(v, q, k, options=opts, backend=backend)
    assert_exact(out, F.scaled_dot_product_attention(q, k, v), dtype)


def topk_attention(attn: Attention, x: Tensor, kk: int) -> Tensor:
    """Multi-head attention with scores outside each query's top-kk set at -inf (KVT)."""
    B, N, _ = x.shape
    h, hd = attn.num_heads, attn.head_dim
    q, k, v = attn.qkv(x).reshape(B, N, 3, h, hd).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hd)
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep.scatter_(-1, scores.topk(kk, dim=-1).indices, True)
    out = scores.masked_fill(~keep, float("-inf")).softmax(-1) @ v
    return attn.proj(out.transpose(1, 2).reshape(B, N, h * hd))


@backends
@dtypes
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("kk", [1, 3, 8, 16])
def test_topk_attention_equals_kvt(kk, heads, dtype, backend) -> None:
    """KVT top-k attention: ConvNNAttention with k < N tokens (N = 1 + 4*4)."""
    attn = timm_attention(16, heads, True, False, dtype)
    layer = ConvNNAttention.from_attention(attn, k=kk, backend=backend).eval()
    x = torch.randn(2, 17, 16, dtype=dtype)
    with torch.no_grad():
        expected = topk_attention(copy.deepcopy(attn).double(), x.double(), kk)
    assert_exact(layer(x), expected, dtype)


def natten_mask(height: int, width: int, s: int) -> Tensor:
    """``(N, N)`` bool: key (a, b) is in the s x s window of query (i, j), shifted inward."""

    def axis(n: int) -> Tensor:
        start = (torch.arange(n) - s // 2).clamp(0, n - s)[:, None]
        j = torch.arange(n)[None, :]
        return (j >= start) & (j < start + s)  # (queries, keys)

    rows, cols = axis(height), axis(width)
    n = height * width
    return (rows[:, None, :, None] & cols[None, :, None, :]).reshape(n, n)


@backends
@dtypes
@pytest.mark.parametrize("size", [(6, 9), (7, 7)], ids=["6x9", "7x7"])
@pytest.mark.parametrize("s", [3, 5])
def test_neighborhood_attention_equals_natten(s, size, dtype, backend) -> None:
    """Neighborhood attention: shifted window candidates, k = s*s, softmax(dot), sum."""
    H, W = size
    q, k, v = torch.randn(3, 2, H * W, 8, dtype=dtype).unbind(0)
    opts = ConvNNOptions(
        k=s * s,
        similarity="dot",
        weighting="softmax",
        kernel="sum",
        candidates="window",
        window_size=s,
        window_border="shift",
    )
    out = convnn.convnn(v, q, k, options=opts, grid=Grid(H, W), backend=backend)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=natten_mask(H, W, s))
    assert_exact(out, expected, dtype)


@backends
@dtypes
@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
def test_branching_attention_equals_timm(ratio, dtype, backend) -> None:
    """Branching attention with all-token ConvNN heads (or ratio 0) = timm Attention:
    ConvNN heads first, then plain heads, merged in timm's order."""
    attn = timm_attention(16, 4, True, False, dtype)
    layer = BranchingAttention(
        16, 4, qkv_bias=True, ratio=ratio, k=None, backend=backend, dtype=dtype
    ).eval()
    layer.load_state_dict(attn.state_dict())
    assert layer.convnn_heads == round(4 * ratio)
    x = torch.randn(2, 17, 16, dtype=dtype)
    assert_exact(layer(x), attn(x), dtype)
