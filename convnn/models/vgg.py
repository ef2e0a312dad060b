"""ConvNN VGGs with batch norm for 32x32 inputs (the paper's CIFAR experiments).

The network is the CIFAR VGG: timm's VGG feature layout (``features`` = 3x3
conv -> BatchNorm -> ReLU blocks and 2x2 max-pools, the same module indices as
timm's ``vgg*_bn``) followed by global pooling and one linear classifier instead of
the 4096-wide ImageNet MLP. Every 3x3 convolution is converted.

``convnn_vgg11_mlp`` is the VGG-11 the paper's authors ran on CIFAR-10: the same features,
then torchvision's ImageNet classifier (:class:`MlpClassifierHead`, about 119.6M of its
128.8M parameters); ``head_hidden_size=`` gives any of the VGGs that head.

``convnn_vgg{11,13,16,19}`` and ``convnn_vgg11_mlp`` take ``layer`` (``"convnn"``, the
default, ``"branching"`` or the plain ``"conv"``), ``branch_ratio`` (0.5), ``mix``
(``False``) and every ConvNN option (see :class:`convnn.ConvNN2d`) as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from timm.layers import ClassifierHead
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from ..errors import OptionError
from ..validation import check_positive_int
from ._builder import cifar_cfg
from ._common import create_convnn_model

__all__ = ["CifarVGG", "MlpClassifierHead"]

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


class MlpClassifierHead(nn.Module):
    """torchvision's VGG classifier, as the paper's authors ran it at 32x32:
    ``(B, C, H, W) -> (B, num_classes)``.

    Adaptive average pooling to ``pool_size x pool_size`` (a 1x1 map of a 32x32 input is
    repeated ``pool_size**2`` times), flattening, then ``Linear(C * pool_size**2, hidden) -
    ReLU - Dropout - Linear(hidden, hidden) - ReLU - Dropout - Linear(hidden, num_classes)``.
    The dropout before ``fc`` is the one of timm's ``ClassifierHead``; ``pre_logits=True``
    returns the ``(B, hidden)`` features it sees.

    Args:
        in_features: channels ``C`` of the feature map.
        num_classes: outputs of ``fc``; 0 leaves it out (``fc`` is the identity).
        hidden_size: width of the two hidden layers (4096 in the authors' network).
        pool_size: side of the pooled grid (7: the 512 x 7 x 7 input of ``fc1``).
        drop_rate: probability of both dropouts (0.5 in the authors' network).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden_size: int = 4096,
        pool_size: int = 7,
        drop_rate: float = 0.5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.num_features = hidden_size
        self.global_pool = nn.AdaptiveAvgPool2d(pool_size)
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(in_features * pool_size**2, hidden_size, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.drop1 = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden_size, hidden_size, **dd)
        self.act2 = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc = self._classifier(num_classes, **dd)

    def _classifier(self, num_classes: int, **dd: Any) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        return nn.Linear(self.num_features, num_classes, **dd)

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        """A new ``fc`` with ``num_classes`` outputs (0: none). The pooling cannot change:
        ``fc1``'s width depends on it, so ``pool_type`` must be ``None``."""
        if pool_type is not None:
            raise OptionError(
                f"global_pool={pool_type!r}: the MLP head's {self.global_pool.output_size}x"
                f"{self.global_pool.output_size} average pooling is fixed (fc1's width depends "
                "on it); leave global_pool out",
                key="global_pool",
            )
        weight = self.fc1.weight
        self.fc = self._classifier(num_classes, device=weight.device, dtype=weight.dtype)

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.flatten(self.global_pool(x))  # (B, C * pool_size**2)
        x = self.drop1(self.act1(self.fc1(x)))  # (B, hidden)
        x = self.drop(self.act2(self.fc2(x)))  # (B, hidden)
        return x if pre_logits else self.fc(x)


class CifarVGG(nn.Module):
    """VGG with batch norm: ``(B, in_chans, H, W) -> (B, num_classes)``, ``H, W`` at least
    ``2**pools`` (32 for the VGG-11 to 19 layouts).

    Args:
        cfg: channels of the 3x3 convolutions, ``"M"`` for a 2x2 max-pool.
        global_pool: timm pooling type before the classifier (``"avg"`` only with
            ``head_hidden_size``, whose pooling is fixed).
        drop_rate: dropout before the classifier (and after the first hidden layer of the
            MLP head).
        head_hidden_size: ``None`` (the default): global pooling and one linear layer
            (``timm.layers.ClassifierHead``); an int: :class:`MlpClassifierHead` with two
            hidden layers of this width (4096: the authors' VGG).
    """

    def __init__(
        self,
        cfg: tuple[int | str, ...],
        num_classes: int = 10,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        head_hidden_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("head_hidden_size", head_hidden_size, allow_none=True)
        if head_hidden_size is not None and global_pool != "avg":
            raise OptionError(
                f"global_pool={global_pool!r} with head_hidden_size: the MLP head pools to "
                "7x7 by averaging; leave global_pool out",
                key="global_pool",
            )
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
        self.num_features = chs
        self.head: ClassifierHead | MlpClassifierHead
        if head_hidden_size is None:
            self.head = ClassifierHead(
                chs, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd
            )
        else:
            self.head = MlpClassifierHead(
                chs, num_classes, head_hidden_size, drop_rate=drop_rate, **dd
            )
        self.head_hidden_size = self.head.num_features
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

    def group_matcher(self, coarse: bool = False) -> Callable[[str], tuple[float]]:
        """timm's parameter grouping (layer-wise learning-rate decay): a parameter's layer is
        its convolution block (the convolution or ConvNN layer with its batch norm, counted
        from the input), the head after the last block."""
        block_of, seen = {}, 0
        for index, module in enumerate(self.features):
            block_of[str(index)] = seen
            seen += isinstance(module, nn.BatchNorm2d)

        def layer(name: str) -> tuple[float]:
            parts = name.split(".")
            return (float(block_of[parts[1]]),) if parts[0] == "features" else (float("inf"),)

        return layer

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
    cfg = VGG_CFGS[variant.removeprefix("convnn_").removesuffix("_mlp")]
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
        for name in (*VGG_CFGS, "vgg11_mlp")
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
def convnn_vgg11_mlp(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """The authors' VGG-11 of the paper's CIFAR-10 sweep: ``convnn_vgg11``'s features (the
    same module indices, converted the same way), then :class:`MlpClassifierHead`
    (``head_hidden_size=4096``, ``drop_rate=0.5``); 128,812,810 parameters at 10 classes
    with ``layer="conv"``, against 9,231,114 for ``convnn_vgg11``."""
    kwargs = {"head_hidden_size": 4096, "drop_rate": 0.5, **kwargs}
    return _create_vgg("convnn_vgg11_mlp", pretrained, **kwargs)


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
