"""The ``convnn_*`` timm models (docs/method.md §3): registry, parameter counts, baseline
equivalence and a training step of every registered variant.

Baseline weights go in through timm's own ``pretrained`` mechanism (a local file as
``pretrained_cfg_overlay``), exactly as published weights would.
"""

from __future__ import annotations

import pytest
import timm
import torch
from model_helpers import randomize_norms
from torch import nn

from convnn import BranchingConv2d, ConvNN2d, ConvNNAttention
from convnn.errors import OptionError
from convnn.models import MODEL_NAMES

LAYERS = {  # variant -> model kwargs (the baseline layer is filled in per model)
    "baseline": {},
    "convnn": dict(layer="convnn"),
    "branching": dict(layer="branching"),
    "branching_0": dict(layer="branching", branch_ratio=0.0),
    "branching_1": dict(layer="branching", branch_ratio=1.0),
}
EXACT_CONV = dict(candidates="window", similarity="location")


def _baseline_layer(name: str) -> str:
    return "attention" if "_vit_" in name else "conv"


def _input_size(name: str) -> int:
    return 64 if "patch16" in name else 32


def _small_kwargs(name: str) -> dict:
    if name.endswith("_mlp"):  # the 4096-wide head has 120M parameters: the same head, narrow
        return dict(num_classes=5, head_hidden_size=16)
    return dict(num_classes=5, img_size=64) if "patch16" in name else dict(num_classes=5)


def _load_baseline(name: str, baseline: nn.Module, tmp_path, **kwargs) -> nn.Module:
    path = tmp_path / "baseline.pth"
    torch.save(baseline.state_dict(), path)
    model = timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs
    )
    return model.double().eval()


def _assert_same(out: torch.Tensor, ref: torch.Tensor) -> None:
    scale = ref.abs().max().item()
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9 * scale)


def test_registry_lists_every_model():
    assert sorted(timm.list_models("convnn_*")) == sorted(MODEL_NAMES)
    assert "convnn_resnet50.a1_in1k" in timm.list_pretrained("convnn_*")


@pytest.mark.parametrize(
    ("name", "baseline", "params"),
    [
        ("convnn_resnet50", "resnet50", 25_557_032),
        ("convnn_vit_base_patch16_224", "vit_base_patch16_224", 86_567_656),
    ],
)
def test_baseline_parameter_counts_equal_timm(name, baseline, params):
    model = timm.create_model(name, layer=_baseline_layer(name))
    reference = timm.create_model(baseline)
    assert sum(p.numel() for p in model.parameters()) == params
    assert sum(p.numel() for p in reference.parameters()) == params
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in reference.named_parameters()]


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("variant", list(LAYERS))
def test_every_model_trains(name, variant):
    """Forward and backward at a small size: shape, finite values, a gradient everywhere."""
    torch.manual_seed(0)
    kwargs = {"layer": _baseline_layer(name), **LAYERS[variant], **_small_kwargs(name)}
    model = timm.create_model(name, **kwargs).train()
    kinds = (ConvNN2d, ConvNNAttention, BranchingConv2d)
    converted = any(isinstance(m, kinds) for m in model.modules())
    assert converted == (variant != "baseline")
    size = _input_size(name)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient for {bad[:5]}"


def test_resnet50_branching_ratio0_with_baseline_weights_gives_baseline_logits(tmp_path):
    baseline = randomize_norms(timm.create_model("resnet50")).double().eval()
    model = _load_baseline(
        "convnn_resnet50", baseline, tmp_path, layer="branching", branch_ratio=0.0
    )
    assert isinstance(model.layer2[0].conv2, BranchingConv2d)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        _assert_same(model(x), baseline(x))


@pytest.mark.parametrize("layer", ["convnn", "branching"])
def test_resnet18_exact_options_with_baseline_weights_give_baseline_logits(tmp_path, layer):
    """Window/location ConvNN keeps the baseline's filters (split between the branches)."""
    baseline = randomize_norms(timm.create_model("resnet18")).double().eval()
    model = _load_baseline("convnn_resnet18", baseline, tmp_path, layer=layer, **EXACT_CONV)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        _assert_same(model(x), baseline(x))


class _ReferenceVGG11(nn.Module):
    """An independent CIFAR VGG-11 with batch norm, written out in plain PyTorch."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        chs = 3
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(chs, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                chs = v
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(chs, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(layer="conv"),
        dict(layer="branching", branch_ratio=0.0),
        dict(layer="convnn", **EXACT_CONV),
    ],
    ids=["conv", "branching_0", "convnn_exact"],
)
def test_vgg11_with_baseline_weights_gives_baseline_logits(tmp_path, kwargs):
    reference = randomize_norms(_ReferenceVGG11()).double().eval()
    state = {k.replace("fc.", "head.fc.", 1): v for k, v in reference.state_dict().items()}
    path = tmp_path / "vgg11.pth"
    torch.save(state, path)
    model = timm.create_model(
        "convnn_vgg11", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs
    )
    model = model.double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        _assert_same(model(x), reference(x))


def test_vit_all_tokens_through_create_model_is_self_attention(tmp_path):
    """``k="all"`` (timm drops ``k=None``) makes ConvNN-attention exactly self-attention."""
    baseline = timm.create_model("convnn_vit_tiny_patch4_32", layer="attention", depth=2)
    baseline = baseline.double().eval()
    model = _load_baseline("convnn_vit_tiny_patch4_32", baseline, tmp_path, k="all", depth=2)
    attn = model.blocks[0].attn
    assert isinstance(attn, ConvNNAttention) and attn.options.k is None
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        _assert_same(model(x), baseline(x))


def test_model_options_reach_the_layers():
    model = timm.create_model(
        "convnn_resnet18_cifar",
        layer="branching",
        branch_ratio=0.25,
        stages=(3, 4),
        similarity="mixed",
        k=5,
    )
    assert not any(isinstance(m, BranchingConv2d) for m in model.layer2.modules())
    layer = model.layer3[0].conv1
    assert isinstance(layer, BranchingConv2d) and layer.convnn_channels == 64
    assert layer.convnn.options.similarity == "mixed" and layer.convnn.options.k == 5
    vit = timm.create_model("convnn_vit_tiny_patch4_32", layer="branching", depth=1)
    assert vit.blocks[0].attn.convnn_heads == 2  # round(0.5 * 3)
    assert vit.blocks[0].attn.options.k == 9  # ConvNNAttention's default


def test_cifar_resnet_stem_and_features():
    model = timm.create_model("convnn_resnet18_cifar", layer="conv")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    feats = timm.create_model("convnn_resnet18_cifar", features_only=True)
    outs = feats(torch.randn(2, 3, 32, 32))
    assert [o.shape[-1] for o in outs] == [32, 32, 16, 8, 4]
    assert feats.feature_info.reduction() == [1, 1, 2, 4, 8]
    assert any(isinstance(m, ConvNN2d) for m in feats.modules())


@pytest.mark.parametrize(
    ("name", "kwargs", "error"),
    [
        ("convnn_resnet18", dict(layer="attention"), "layer='attention'"),
        ("convnn_vit_tiny_patch4_32", dict(layer="conv"), "layer='conv'"),
        ("convnn_resnet18", dict(stages=(0, 1)), "stages"),
        ("convnn_vgg11", dict(branch_ratio=1.5), "branch_ratio"),
        ("convnn_vgg11", dict(similarity="nearest"), "similarity='nearest'"),
    ],
)
def test_invalid_model_arguments_raise(name, kwargs, error):
    with pytest.raises(OptionError, match=error):
        timm.create_model(name, **kwargs)


def test_cifar_models_have_no_published_weights():
    with pytest.raises(RuntimeError, match="No pretrained weights"):
        timm.create_model("convnn_vgg11", pretrained=True)
