"""``convnn.convert`` on whole timm networks (docs/method.md §2 special cases end to end) and
``convnn.profile`` (parameters and GFLOPs, docs/method.md §4 baselines).

Equivalence runs in float64 at small resolutions with random weights and random
BatchNorm statistics, so every converted layer affects the logits.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import timm
import torch
from model_helpers import randomize_norms
from rich.console import Console
from timm.layers import Attention
from torch import nn

import convnn
from convnn import BranchingAttention, BranchingConv2d, ConvNN2d, ConvNNAttention
from convnn.errors import OptionError
from convnn.models.convert import convert
from convnn.tools.profile import convnn_flops, markdown_table, print_profiles, profile


def _assert_same(out: torch.Tensor, ref: torch.Tensor) -> None:
    scale = ref.abs().max().item()
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9 * scale)


def _count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.fixture(scope="module")
def image64() -> torch.Tensor:
    return torch.randn(
        2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
@pytest.mark.parametrize(
    "options",
    [{}, dict(candidates="all", similarity="location")],
    ids=["window", "location_all"],
)
def test_converted_resnet_gives_original_logits(name, options, image64):
    """Location selection recovers every convolution, stem and stride-2 blocks included."""
    torch.manual_seed(0)
    model = randomize_norms(timm.create_model(name)).double().eval()
    converted = convert(copy.deepcopy(model), **options)
    spatial = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert _count(converted, ConvNN2d) == len(spatial)
    assert any(m.stride == (2, 2) for m in converted.modules() if isinstance(m, ConvNN2d))
    with torch.no_grad():
        _assert_same(converted(image64), model(image64))


def test_non_exact_conversion_changes_the_logits(image64):
    model = randomize_norms(timm.create_model("resnet18")).double().eval()
    options = dict(candidates="all", similarity="cosine")
    converted = convert(copy.deepcopy(model), include=["layer1.*"], **options)
    with torch.no_grad():
        assert not torch.allclose(converted(image64), model(image64))


def test_branching_conversion_splits_the_filters(image64):
    model = randomize_norms(timm.create_model("resnet18")).double().eval()
    converted = convert(copy.deepcopy(model), "branching", branch_ratio=0.25, include=["layer*"])
    layer = converted.layer1[0].conv1
    assert isinstance(layer, BranchingConv2d) and layer.convnn_channels == 16
    assert isinstance(converted.conv1, nn.Conv2d)  # the stem is not in layer*
    with torch.no_grad():
        _assert_same(converted(image64), model(image64))


class _KVTAttention(Attention):
    """timm Attention with every score outside each query's top-k set to -inf (KVT)."""

    top_k = 5

    def forward(self, x, attn_mask=None, is_causal=False):
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        scores = (q * self.scale) @ k.transpose(-2, -1)
        kth = scores.topk(self.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, N, self.attn_dim)
        return self.proj(out)


@pytest.fixture(scope="module")
def vit_tiny() -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=10)
    return model.double().eval()


@pytest.mark.parametrize("layer", ["convnn", "branching"])
def test_converted_vit_with_all_tokens_gives_original_logits(vit_tiny, image64, layer):
    converted = convert(copy.deepcopy(vit_tiny), layer)
    kind = BranchingAttention if layer == "branching" else ConvNNAttention
    assert _count(converted, kind) == 12 and _count(converted, Attention) == 0
    assert converted.blocks[0].attn.num_prefix_tokens == 1
    with torch.no_grad():
        _assert_same(converted(image64), vit_tiny(image64))


def test_converted_vit_with_k_below_n_gives_kvt_logits(vit_tiny, image64):
    converted = convert(copy.deepcopy(vit_tiny), k=_KVTAttention.top_k)
    kvt = copy.deepcopy(vit_tiny)
    for block in kvt.blocks:
        block.attn.__class__ = _KVTAttention
    with torch.no_grad():
        out, ref = converted(image64), kvt(image64)
        _assert_same(out, ref)
        assert not torch.allclose(ref, vit_tiny(image64))


def test_convert_selects_by_name_and_keeps_mode():
    model = timm.create_model("resnet18").train()
    convert(model, include=["layer2.*", "layer3.*"], exclude=["layer3.1.*"], k=4)
    names = [n for n, m in model.named_modules() if isinstance(m, ConvNN2d)]
    assert names == ["layer2.0.conv1", "layer2.0.conv2", "layer2.1.conv1", "layer2.1.conv2"] + [
        "layer3.0.conv1",
        "layer3.0.conv2",
    ]
    layer = model.layer2[0].conv1
    assert layer.training and layer.options.k == 4 and layer.weight.shape[-1] == 4
    with pytest.raises(OptionError, match="matched no convertible module"):
        convert(model, include=["layer2.*"])  # already converted


def test_convert_root_module_and_depthwise():
    conv = nn.Conv2d(8, 8, 5, padding=2, groups=8).double()
    layer = convert(conv)
    assert isinstance(layer, ConvNN2d) and layer.options.kernel == "depthwise"
    x = torch.randn(1, 8, 9, 11, dtype=torch.float64)
    _assert_same(layer(x), conv(x))


def test_convert_rejects_bad_arguments():
    model = timm.create_model("resnet18")
    with pytest.raises(OptionError, match="unknown ConvNN options"):
        convert(model, similarty="dot")
    with pytest.raises(OptionError, match="layer='conv'"):
        convert(model, "conv")
    with pytest.raises(OptionError, match="branch_ratio"):
        convert(model, "branching", branch_ratio=2.0)
    dilated = nn.Sequential(nn.Conv2d(3, 3, 3, dilation=2))
    with pytest.warns(UserWarning, match="dilation"), pytest.raises(OptionError, match="matched"):
        convert(dilated, include=["0"])


@pytest.mark.parametrize(
    ("name", "layer", "params", "gflops"),
    [
        ("convnn_resnet50", "conv", 25_557_032, 8.18),
        ("convnn_vit_base_patch16_224", "attention", 86_567_656, 35.13),
    ],
)
def test_profile_of_the_paper_baselines(name, layer, params, gflops):
    result = profile(timm.create_model(name, layer=layer), 224)
    assert result.params == params
    assert result.gflops == pytest.approx(gflops, rel=0.01)
    assert result.topk_gcomparisons == 0


def test_profile_of_exact_conversions_equals_the_baseline(vit_tiny):
    resnet = timm.create_model("resnet18")
    base = profile(resnet, 64)
    converted = profile(convert(resnet), 64)
    assert converted.gflops == pytest.approx(base.gflops, rel=1e-12)
    assert converted.convnn["aggregation"] > 0 and converted.convnn["similarity"] == 0
    assert converted.topk_gcomparisons == 0  # window of k = s*s: nothing to select
    vit = profile(vit_tiny, 64)
    for layer in ("convnn", "branching"):
        result = profile(convert(copy.deepcopy(vit_tiny), layer), 64)
        assert result.gflops == pytest.approx(vit.gflops, rel=1e-12)


def test_public_entry_points():
    assert convnn.convert is convert and convnn.profile is profile


def test_convnn_flops_formula():
    layer = ConvNN2d(16, 32, 3, stride=2, padding=1, k=9, similarity="cosine")
    cost = convnn_flops(layer, (2, 16, 10, 12))
    nq, m = 2 * 5 * 6, 12 * 14  # queries (stride 2), candidates (zero-padded map)
    assert cost["similarity"] == 2 * nq * m * 16
    assert cost["aggregation"] == 2 * nq * 9 * 16 * 32
    assert cost["weighting"] == 0 and cost["topk"] == nq * m * math.ceil(math.log2(9))
    attn = BranchingAttention(64, 4, ratio=0.5, k=8, candidates="random", num_samples=20)
    cost = convnn_flops(attn, (3, 50, 64))
    nq = 3 * 2 * 50  # batch x ConvNN heads x tokens
    assert cost["similarity"] == 2 * nq * 21 * 16  # r + the query itself, head dim 16
    assert cost["weighting"] == cost["aggregation"] == nq * 8 * 16
    assert cost["attention"] == 4 * 3 * 2 * 50 * 50 * 16  # the two plain heads, as SDPA


def test_profile_counts_convnn_layers_by_formula():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), ConvNN2d(8, 8, 3, padding=1))
    result = profile(model, (3, 16, 16))
    conv = 2 * 16 * 16 * 8 * 3 * 9
    formula = convnn_flops(model[1], (1, 8, 16, 16))
    parts = sum(formula[p] for p in ("similarity", "weighting", "aggregation"))
    assert result.gflops * 1e9 == pytest.approx(conv + parts)
    assert result.topk_gcomparisons * 1e9 == pytest.approx(formula["topk"])


def test_profile_tables():
    model = timm.create_model("resnet18")
    profiles = {"conv": profile(model, 32), "convnn": profile(convert(model), 32)}
    buffer = io.StringIO()
    print_profiles(profiles, title="ResNet-18", console=Console(file=buffer, width=120))
    text = buffer.getvalue()
    assert "ResNet-18" in text and "convnn" in text and "11,689,512" in text
    table = markdown_table(profiles)
    assert table.count("\n") == 3 and "| 1.00 |" in table
