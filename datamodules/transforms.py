"""Image transforms: timm's ImageNet recipe, CIFAR crop-and-flip, and tensor-only helpers.

Every transform returns a normalized ``float32 (C, S, S)`` tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from timm.data import create_transform
from torchvision.transforms import v2


def imagenet_transform(
    train: bool,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    auto_augment: str | None,
    re_prob: float,
    crop_pct: float,
    interpolation: str,
) -> Callable:
    """timm's transform for PIL images.

    Training: random-resized crop, horizontal flip, ``auto_augment`` (a timm policy string such
    as ``"rand-m9-mstd0.5-inc1"``; ``None`` disables it, and then colour jitter 0.4 is used),
    normalization, random erasing with probability ``re_prob``. Evaluation: resize to
    ``image_size / crop_pct``, center crop ``image_size``, normalization.
    """
    if train:
        return create_transform(
            image_size,
            is_training=True,
            auto_augment=auto_augment,
            re_prob=re_prob,
            re_mode="pixel",
            interpolation=interpolation,
            mean=tuple(mean),
            std=tuple(std),
        )
    return create_transform(
        image_size,
        is_training=False,
        crop_pct=crop_pct,
        interpolation=interpolation,
        mean=tuple(mean),
        std=tuple(std),
    )


def cifar_transform(train: bool, mean: Sequence[float], std: Sequence[float]) -> Callable:
    """PIL 32x32 image -> tensor; training adds a random crop of the 4-padded image and a flip."""
    augment = [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()] if train else []
    return v2.Compose(
        [
            v2.PILToTensor(),
            *augment,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


class ExpandChannels(torch.nn.Module):
    """``(1 or channels, H, W)`` -> ``(channels, H, W)`` by replication (a view).

    A module rather than a lambda, so datasets pickle into spawned loader workers.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(self.channels, -1, -1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def tensor_transform(
    train: bool, image_size: int, mean: Sequence[float], std: Sequence[float], in_chans: int = 3
) -> Callable:
    """``float (1 or C, S, S)`` image in [0, 1] -> normalized ``(in_chans, S, S)``.

    Training adds a random translation of up to ``image_size // 8`` pixels (zero-padded crop).
    """
    augment = [v2.RandomCrop(image_size, padding=image_size // 8)] if train else []
    return v2.Compose(
        [
            *augment,
            ExpandChannels(in_chans),
            v2.Normalize(list(mean), list(std)),
        ]
    )
