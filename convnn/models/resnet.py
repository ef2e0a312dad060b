"""ConvNN ResNets (docs/method.md §3): timm's ``ResNet`` with the 3x3 convolutions of its blocks
replaced by ConvNN or branching layers.

``stages`` picks the converted stages (1-4); within them every 3x3 convolution of a
block is converted (the middle conv of a bottleneck, both convs of a basic block),
stride-2 ones included. The stem and the 1x1 convolutions are never converted.

Each ``convnn_resnet*`` takes ``layer`` (``"convnn"``, the default, ``"branching"`` or the
plain ``"conv"``), ``branch_ratio`` (0.5), ``stages`` (``(1, 2, 3, 4)``), ``mix``
(``False``) and every ConvNN option (see :class:`convnn.ConvNN2d`) as keyword arguments.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from ..errors import OptionError
from ._builder import baseline_cfg, cifar_cfg
from ._common import create_convnn_model

__all__ = ["CifarResNet"]


class CifarResNet(ResNet):
    """timm ``ResNet`` with the CIFAR stem: one 3x3 stride-1 convolution, no max-pool.

    For 32x32 inputs; the stages then see 32, 16, 8 and 4 pixel maps.
    """

    def __init__(self, *args: Any, in_chans: int = 3, device=None, dtype=None, **kwargs: Any):
        super().__init__(*args, in_chans=in_chans, device=device, dtype=dtype, **kwargs)
        stem = self.bn1.num_features
        self.conv1 = nn.Conv2d(in_chans, stem, 3, padding=1, bias=False, device=device, dtype=dtype)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()
        for info in self.feature_info:
            info["reduction"] = max(1, info["reduction"] // (2 if info["module"] == "act1" else 4))


def _create_resnet(variant: str, pretrained: bool, cls: type[ResNet], **kwargs: Any) -> ResNet:
    stages = kwargs.pop("stages", (1, 2, 3, 4))
    if not stages or any(s not in (1, 2, 3, 4) for s in stages):
        raise OptionError(
            f"stages={stages!r} is not allowed; expected a non-empty subset of (1, 2, 3, 4)",
            key="stages",
        )
    include = [f"layer{s}.*" for s in stages]
    create_baseline = partial(build_model_with_cfg, cls)
    return create_convnn_model(  # type: ignore[return-value]
        create_baseline, variant, pretrained, kwargs, baseline="conv", include=include
    )


default_cfgs = generate_default_cfgs(
    {
        "convnn_resnet50.a1_in1k": baseline_cfg("resnet50.a1_in1k"),
        "convnn_resnet18.a1_in1k": baseline_cfg("resnet18.a1_in1k"),
        "convnn_resnet18_cifar": cifar_cfg(pool_size=(4, 4), first_conv="conv1", classifier="fc"),
    }
)


@register_model
def convnn_resnet50(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with ConvNN (``layer="convnn"``), branching or plain (``"conv"``) 3x3 convs.

    ``pretrained=True`` loads timm's ``resnet50.a1_in1k`` weights before conversion.
    ConvNN options are keyword arguments (see :class:`convnn.ConvNN2d`).
    """
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3))
    return _create_resnet("convnn_resnet50", pretrained, ResNet, **dict(model_args, **kwargs))


@register_model
def convnn_resnet18(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 (ImageNet layout) with ConvNN, branching or plain 3x3 convs.

    ``pretrained=True`` loads timm's ``resnet18.a1_in1k`` weights before conversion.
    """
    model_args = dict(block=BasicBlock, layers=(2, 2, 2, 2))
    return _create_resnet("convnn_resnet18", pretrained, ResNet, **dict(model_args, **kwargs))


@register_model
def convnn_resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 for 32x32 inputs (3x3 stem, no max-pool, 10 classes by default)."""
    model_args = dict(block=BasicBlock, layers=(2, 2, 2, 2))
    return _create_resnet(
        "convnn_resnet18_cifar", pretrained, CifarResNet, **dict(model_args, **kwargs)
    )
