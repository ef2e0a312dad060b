"""``convnn_vgg11_mlp``, the authors' VGG-11 of the paper's CIFAR-10 sweep: torchvision's
VGG-11-BN (features, ``AdaptiveAvgPool2d((7, 7))``, the 4096-wide classifier with ReLU and
dropout 0.5), as the authors' ``models/vgg.py`` builds it.

The full-size network is only built on the meta device (its 129M parameters are counted,
never allocated); the logits are compared with torchvision's layers at a small
``head_hidden_size``. A training step of each variant (forward on two 32x32 images, a finite
gradient for every parameter) is ``test_every_model_trains`` of ``test_models.py``.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from model_helpers import randomize_norms
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from convnn import BranchingConv2d, ConvNN2d
from convnn.errors import OptionError
from convnn.models import MlpClassifierHead

META = torch.device("meta")
AUTHORS_BRANCHING_PARAMS = 130_015_690
"""``total_params`` recorded by the authors' VGG-11 CIFAR-10 run with branching ratio 0.25
(``Final_Output/BR_test/VGG11-CIFAR10/BranchingConvNN_All_K9_Col_Col_br0250_s42/args.txt``);
their branching layer always ends in a 1x1 projection, ``mix=True`` here."""

TORCHVISION_KEYS = {
    "classifier.0.": "head.fc1.",
    "classifier.3.": "head.fc2.",
    "classifier.6.": "head.fc.",
}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]


def _as_ours(name: str) -> str:
    for theirs, ours in TORCHVISION_KEYS.items():
        name = name.replace(theirs, ours, 1)
    return name


def test_full_size_is_torchvision_vgg11_bn_parameter_for_parameter():
    """Same parameters, shapes and order as torchvision's ``vgg11_bn`` (the authors' class is
    its copy), ``classifier.{0,3,6}`` named ``head.{fc1,fc2,fc}``; 14 times the parameters of
    ``convnn_vgg11``, whose features are the same modules."""
    with META:
        reference = torchvision.models.vgg11_bn(num_classes=10)
    model = timm.create_model("convnn_vgg11_mlp", layer="conv", device=META)
    assert _shapes(model) == [(_as_ours(n), s) for n, s in _shapes(reference)]
    assert _params(model) == _params(reference) == 128_812_810
    small = timm.create_model("convnn_vgg11", layer="conv", device=META)
    assert _params(small) == 9_231_114
    assert [n for n, _ in small.features.named_modules()] == [
        n for n, _ in model.features.named_modules()
    ]


@pytest.mark.parametrize(
    ("kwargs", "params"),
    [
        (dict(layer="convnn"), 128_812_810),
        (dict(layer="branching", branch_ratio=0.25), 128_812_810),
        (dict(layer="branching", branch_ratio=0.25, mix=True), AUTHORS_BRANCHING_PARAMS),
        (dict(layer="conv", num_classes=100), 129_181_540),
    ],
    ids=["convnn", "branching", "branching_mix", "cifar100"],
)
def test_converted_full_size_parameter_counts(kwargs, params):
    """Conversion touches only the features, as for ``convnn_vgg11``: ConvNN and branching
    keep the count; with the 1x1 projection of the authors' branching layer it is the count
    their branching-0.25 run recorded."""
    model = timm.create_model("convnn_vgg11_mlp", device=META, **kwargs)
    assert _params(model) == params
    head = model.head
    assert isinstance(head, MlpClassifierHead) and not any(
        isinstance(m, (ConvNN2d, BranchingConv2d)) for m in head.modules()
    )
    assert head.global_pool.output_size == 7 and head.fc1.in_features == 512 * 7 * 7
    assert [head.drop1.p, head.drop.p] == [0.5, 0.5]


class _TorchvisionLayout(nn.Module):
    """torchvision's VGG-11-BN features and pooling with the authors' classifier at width
    ``hidden`` (torchvision fixes 4096), under torchvision's parameter names."""

    def __init__(self, hidden: int, num_classes: int = 10) -> None:
        super().__init__()
        self.features = make_layers(cfgs["A"], batch_norm=True)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, hidden),
            nn.ReLU(True),
            nn.Dropout(0.5),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(0.5),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(layer="conv"),
        dict(layer="branching", branch_ratio=0.0),
        dict(layer="convnn", candidates="window", similarity="location"),
    ],
    ids=["conv", "branching_0", "convnn_exact"],
)
@pytest.mark.parametrize("size", [32, 64])
def test_torchvision_weights_give_torchvision_logits(tmp_path, kwargs, size):
    """torchvision-layout weights, loaded through timm's ``pretrained`` mechanism, give the
    same float64 logits on 32x32 inputs (a 1x1 map repeated 7x7 times) and 64x64 ones (2x2),
    also where ConvNN is the exact special case of the convolution."""
    torch.manual_seed(0)
    reference = randomize_norms(_TorchvisionLayout(hidden=16)).double().eval()
    path = tmp_path / "vgg11_mlp.pth"
    torch.save({_as_ours(k): v for k, v in reference.state_dict().items()}, path)
    model = timm.create_model(
        "convnn_vgg11_mlp",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path)),
        head_hidden_size=16,
        **kwargs,
    )
    model = model.double().eval()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        out, ref = model(x), reference(x)
    assert out.shape == (2, 10)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9 * ref.abs().max().item())


def test_head_follows_timm_classifier_api():
    """``forward_head(pre_logits=True)`` gives the hidden features, ``reset_classifier``
    replaces only ``fc`` (0 classes: none), and the pooling, fixed by ``fc1``, cannot be
    changed."""
    torch.manual_seed(0)
    model = timm.create_model("convnn_vgg11_mlp", layer="conv", head_hidden_size=8).eval()
    assert (model.num_features, model.head_hidden_size, model.num_classes) == (512, 8, 10)
    assert model.get_classifier() is model.head.fc
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        hidden = model.forward_head(features, pre_logits=True)
        assert features.shape == (2, 512, 1, 1) and hidden.shape == (2, 8)
        torch.testing.assert_close(model.head.fc(hidden), model(x))
        fc1 = model.head.fc1
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.head.fc1 is fc1
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), hidden)
    with pytest.raises(OptionError, match="global_pool='max'") as err:
        model.reset_classifier(3, "max")
    assert err.value.key == "global_pool"


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(head_hidden_size=0), "head_hidden_size"),
        (dict(head_hidden_size=2.5), "head_hidden_size"),
        (dict(global_pool="max"), "global_pool"),
    ],
)
def test_bad_head_arguments_raise(kwargs, key):
    with pytest.raises(OptionError) as err:
        timm.create_model("convnn_vgg11_mlp", layer="conv", device=META, **kwargs)
    assert err.value.key == key


def test_any_vgg_takes_the_head_and_drop_rate_sets_both_dropouts():
    model = timm.create_model("convnn_vgg13", layer="conv", head_hidden_size=8, drop_rate=0.1)
    assert isinstance(model.head, MlpClassifierHead)
    assert [model.head.drop1.p, model.head.drop.p] == [0.1, 0.1]
    assert timm.create_model("convnn_vgg11_mlp", drop_rate=0.0, device=META).head.drop1.p == 0.0
