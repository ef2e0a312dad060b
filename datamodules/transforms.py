"""Image transforms: timm's ImageNet recipe, CIFAR crop-and-flip, and tensor-only helpers.

Every transform returns a normalized ``float32 (C, S, S)`` tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from PIL import Image, ImageOps
from timm.data import auto_augment as timm_augment
from timm.data import create_transform
from torchvision.transforms import v2

DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3 / 4, 4 / 3)


def posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize op for every bit count timm's levels produce, 0 included.

    timm's ``PosterizeIncreasing`` (RandAugment ``inc1``, AutoAugment ``v0r``/``originalr``,
    AugMix) keeps ``4 - int(4 * magnitude / 10)`` bits: 0 bits at magnitude 10, which
    ``rand-m9-mstd0.5`` reaches when its Gaussian magnitude exceeds 10 (about 1 image in 660);
    its ``Posterize`` keeps ``int(4 * magnitude / 10)``: 0 below magnitude 2.5. Keeping 0 bits
    zeroes every pixel (as TensorFlow's reference op and Pillow without the ``1 <= bits <= 8``
    check did); timm passes the 0 to ``ImageOps.posterize``, which now raises ``ValueError:
    bits must be between or equal to 1 and 8``.
    """
    if bits_to_keep >= 8:
        return img
    if bits_to_keep >= 1:
        return ImageOps.posterize(img, bits_to_keep)
    return img.point([0] * (256 * len(img.getbands())))


def augment_ops(transform: Any) -> Iterator[timm_augment.AugmentOp]:
    """Every timm ``AugmentOp`` inside ``transform`` (a Compose, RandAugment, AutoAugment,
    AugMix, or lists of them)."""
    stack = [transform]
    while stack:
        item = stack.pop()
        if isinstance(item, timm_augment.AugmentOp):
            yield item
        elif isinstance(item, list | tuple):
            stack.extend(item)
        else:
            for name in ("transforms", "ops", "policy"):  # Compose; RandAugment, AugMix; AA
                children = getattr(item, name, None)
                if isinstance(children, list | tuple):
                    stack.extend(children)


def fix_posterize(transform: Any) -> Any:
    """``transform`` with :func:`posterize` in place of timm's in each of its ops (in place)."""
    for op in augment_ops(transform):
        if op.aug_fn is timm_augment.posterize:
            op.aug_fn = posterize
    return transform


TRAIN_AUGMENT_DEFAULTS: dict[str, Any] = dict(
    scale=DEFAULT_SCALE,
    ratio=DEFAULT_RATIO,
    hflip=0.5,
    vflip=0.0,
    color_jitter=0.4,
    auto_augment=None,
    re_prob=0.0,
)
"""timm's training-augmentation arguments that the folder DataModule exposes, under timm's
names (those of ``timm.data.create_transform``), with timm's defaults."""


def imagenet_transform(
    train: bool,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_pct: float,
    interpolation: str,
    **augment: Any,
) -> Callable:
    """timm's transform for PIL images (``timm.data.create_transform``, timm's argument names).

    Training: random-resized crop to ``image_size`` (area fraction ``scale``, aspect ratio
    ``ratio``), horizontal and vertical flips with probabilities ``hflip`` and ``vflip``,
    ``auto_augment`` (a timm policy string such as ``"rand-m9-mstd0.5-inc1"``, or ``None``),
    colour jitter ``color_jitter`` (brightness, contrast, saturation[, hue]; a number is used
    for the first three; timm leaves it out when ``auto_augment`` is set; 0 or ``None``: none),
    normalization, random erasing with probability ``re_prob``. ``augment`` holds any of
    :data:`TRAIN_AUGMENT_DEFAULTS` (the others keep timm's default); evaluation ignores it.
    timm's posterize op is replaced by :func:`posterize`, which accepts the 0 bits its
    levels can ask for.
    Evaluation: resize to ``image_size / crop_pct``, center crop ``image_size``, normalization.
    """
    unknown = sorted(set(augment) - set(TRAIN_AUGMENT_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown augmentation {unknown}; expected {list(TRAIN_AUGMENT_DEFAULTS)}")
    if train:
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()}
        args = TRAIN_AUGMENT_DEFAULTS | args  # lists (from YAML) as the tuples timm expects
        jitter = args["color_jitter"]
        if not jitter or (isinstance(jitter, tuple) and not any(jitter)):
            args["color_jitter"] = None  # no ColorJitter step rather than one that changes nothing
        transform = create_transform(
            image_size,
            is_training=True,
            re_mode="pixel",
            interpolation=interpolation,
            mean=tuple(mean),
            std=tuple(std),
            **args,
        )
        return fix_posterize(transform)
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
    train: bool,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_chans: int = 3,
    translate: int | None = None,
) -> Callable:
    """``float (1 or C, S, S)`` image in [0, 1] -> normalized ``(in_chans, S, S)``.

    Training adds a random translation of up to ``translate`` pixels (zero-padded crop;
    ``None``: ``image_size // 8``; 0: none).
    """
    shift = image_size // 8 if translate is None else translate
    augment = [v2.RandomCrop(image_size, padding=shift)] if train and shift > 0 else []
    return v2.Compose(
        [
            *augment,
            ExpandChannels(in_chans),
            v2.Normalize(list(mean), list(std)),
        ]
    )
