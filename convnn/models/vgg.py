"""ConvNN VGGs with batch norm for 32x32 inputs (the paper's CIFAR experiments).

The network is the CIFAR VGG: timm's VGG feature layout (``features`` = 3x3
conv -> BatchNorm -> ReLU blocks and 2x2 max-pools, the same module indices as
timm's ``vgg*_bn``) followed by global pooling and one linear classifier instead of
the 4096-wide ImageNet MLP. Every 3x3 convolution is converted.

``convnn_vgg{11,13,16,19}`` take ``layer`` (``"convnn"``, the default, ``"branching"`` or
the plain ``"conv"``), ``branch_ratio`` (0.5), ``mix`` (``False``) and every ConvNN option
(see :class:`convnn.ConvNN2d`) as keyword arguments.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import ClassifierHead
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from ._builder import cifar_cfg
from ._common import create_convnn_model

__all__ = ["CifarVGG"]

VGG_CFGS: dict[str, tuple[int | str, ...]] = {
    "vgg_mini": (16, 32, 32),
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, "M"),
        *(512, 512, 512, "M", 512, 512, 512, "M"),
    ),
    "vgg19": (
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"),
        *(512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    ),
}


class CifarVGG(nn.Module):
    """VGG with batch norm: ``(B, in_chans, H, W) -> (B, num_classes)``, ``H, W`` at least
    ``2**pools`` (32 for the VGG-11 to 19 layouts).

    Args:
        cfg: channels of the 3x3 convolutions, ``"M"`` for a 2x2 max-pool.
        global_pool: timm pooling type before the classifier.
    """

    def __init__(
        self,
        cfg: tuple[int | str, ...],
        num_classes: int = 10,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.feature_info: list[dict[str, Any]] = []
        layers: list[nn.Module] = []
        chs, reduction = in_chans, 1
        for v in cfg:
            if v == "M":
                self.feature_info.append(
                    dict(num_chs=chs, reduction=reduction, module=f"features.{len(layers) - 1}")
                )
                layers.append(nn.MaxPool2d(2, 2))
                reduction *= 2
                continue
            layers += [nn.Conv2d(chs, v, 3, padding=1, **dd), nn.BatchNorm2d(v, **dd)]
            layers.append(nn.ReLU(inplace=True))
            chs = v  # type: ignore[assignment]
        self.features = nn.Sequential(*layers)
        self.num_features = self.head_hidden_size = chs
        self.head = ClassifierHead(
            chs, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, 512, H/32, W/32)``."""
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _create_baseline(variant: str, pretrained: bool, **kwargs: Any) -> CifarVGG:
    cfg = VGG_CFGS[variant.removeprefix("convnn_")]
    return build_model_with_cfg(
        CifarVGG,
        variant,
        pretrained,
        model_cfg=cfg,
        feature_cfg=dict(flatten_sequential=True),
        **kwargs,
    )


def _create_vgg(variant: str, pretrained: bool, **kwargs: Any) -> CifarVGG:
    return create_convnn_model(  # type: ignore[return-value]
        _create_baseline, variant, pretrained, kwargs, baseline="conv", include=["features.*"]
    )


default_cfgs = generate_default_cfgs(
    {
        f"convnn_{name}": cifar_cfg(first_conv="features.0", classifier="head.fc")
        for name in VGG_CFGS
    }
)


@register_model
def convnn_vgg_mini(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """Three 3x3 convolutions (16, 32, 32 channels, no pooling: a 7x7 receptive field) and a
    global average, for small inputs (the spectrum study's 16x16 tasks, docs/results.md):
    about 14k parameters."""
    return _create_vgg("convnn_vgg_mini", pretrained, **kwargs)


@register_model
def convnn_vgg11(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-11 with batch norm for 32x32 inputs (8 convolutions).

    ConvNN (``layer="convnn"``, the default), branching or plain (``"conv"``) convolutions;
    ConvNN options are keyword arguments (see :class:`convnn.ConvNN2d`).
    """
    return _create_vgg("convnn_vgg11", pretrained, **kwargs)


@register_model
def convnn_vgg13(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-13 with batch norm for 32x32 inputs (10 convolutions)."""
    return _create_vgg("convnn_vgg13", pretrained, **kwargs)


@register_model
def convnn_vgg16(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-16 with batch norm for 32x32 inputs (13 convolutions)."""
    return _create_vgg("convnn_vgg16", pretrained, **kwargs)


@register_model
def convnn_vgg19(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-19 with batch norm for 32x32 inputs (16 convolutions)."""
    return _create_vgg("convnn_vgg19", pretrained, **kwargs)
