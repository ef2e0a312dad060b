"""ImageNet-style folders of images, with timm's training and evaluation transforms."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from torchvision.datasets import ImageFolder

from .base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageClassificationDataModule,
    Split,
    check_image_size,
    check_number,
)
from .transforms import imagenet_transform

Interpolation = Literal["bicubic", "bilinear", "nearest", "random"]


def class_folders(split_dir: Path) -> list[str]:
    """Sorted class-folder names of ``split_dir`` (ImageFolder's order); clear errors if absent.

    Raises ``FileNotFoundError`` when ``split_dir`` is missing, and ``ValueError`` when it has no
    class folders or a class folder is empty.
    """
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"image folder '{split_dir}' is missing; expected {split_dir}/<class>/<image> files"
        )
    with os.scandir(split_dir) as entries:
        classes = sorted(entry.name for entry in entries if entry.is_dir())
    if not classes:
        raise ValueError(
            f"image folder '{split_dir}' is empty: no class folders; "
            f"expected {split_dir}/<class>/<image> files"
        )
    for name in classes:
        with os.scandir(split_dir / name) as entries:
            if next(entries, None) is None:
                raise ValueError(f"class folder '{split_dir / name}' is empty")
    return classes


class ImageNetDataModule(ImageClassificationDataModule):
    """Images in the standard layout ``root/train/<class>/*.JPEG``, ``root/val/<class>/*.JPEG``.

    Any ImageFolder tree works (``.jpg``, ``.png``, ...); ``num_classes`` is the number of class
    folders in ``train``, read at construction, and ``val`` must hold the same classes. The
    labels are the indices of the sorted class-folder names. For ImageNet-1k the splits hold
    1,281,167 training and 50,000 validation images (the validation split also serves test
    and predict; 50,000 divides by 1, 2, 4, 5, 8, 10 and 16 processes).

    Training uses timm's transform: random-resized crop to ``image_size``, horizontal flip,
    ``auto_augment`` (timm policy string; ``None`` for colour jitter instead), normalization,
    random erasing with probability ``re_prob``. Evaluation resizes to ``image_size /
    crop_pct`` and center-crops ``image_size``.

    Args:
        root: folder that holds ``train`` and ``val``.
        image_size: side of the network's input (>= 8).
        auto_augment: timm augmentation policy, e.g. ``"rand-m9-mstd0.5-inc1"``, or ``None``.
        re_prob: random-erasing probability, in [0, 1].
        crop_pct: evaluation center-crop fraction, in (0, 1].
        interpolation: resize interpolation.
        mean: per-channel normalization mean.
        std: per-channel normalization standard deviation.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        batch_size: int = 128,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        auto_augment: str | None = "rand-m9-mstd0.5-inc1",
        re_prob: float = 0.25,
        crop_pct: float = 0.875,
        interpolation: Interpolation = "bicubic",
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, persistent_workers)
        check_image_size(image_size)
        check_number("re_prob", re_prob, "in [0, 1]", lambda p: 0 <= p <= 1)
        check_number("crop_pct", crop_pct, "in (0, 1]", lambda p: 0 < p <= 1)
        if interpolation not in Interpolation.__args__:
            raise ValueError(
                f"interpolation={interpolation!r} is not allowed; "
                f"expected one of {list(Interpolation.__args__)}"
            )
        self.root = str(root)
        self.image_size = image_size
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.transform_args = dict(
            image_size=image_size,
            mean=self.mean,
            std=self.std,
            auto_augment=auto_augment,
            re_prob=re_prob,
            crop_pct=crop_pct,
            interpolation=interpolation,
        )
        try:
            self.transforms = {train: self.make_transform(train) for train in (True, False)}
        except (AssertionError, KeyError, ValueError) as err:
            raise ValueError(
                f"auto_augment={auto_augment!r} is not allowed; expected None or a timm policy "
                f"such as 'rand-m9-mstd0.5-inc1', 'original' or 'augmix-m5-w4-d2' ({err})"
            ) from err
        root_dir = Path(self.root)
        if not root_dir.is_dir():
            raise FileNotFoundError(
                f"image root '{root_dir}' does not exist; expected {root_dir}/train/<class>/* "
                f"and {root_dir}/val/<class>/*"
            )
        self.classes = class_folders(root_dir / "train")
        val_classes = class_folders(root_dir / "val")
        if val_classes != self.classes:
            only_train = sorted(set(self.classes) - set(val_classes))[:3]
            only_val = sorted(set(val_classes) - set(self.classes))[:3]
            raise ValueError(
                f"'{root_dir / 'train'}' and '{root_dir / 'val'}' must hold the same class "
                f"folders; only in train: {only_train}, only in val: {only_val}"
            )
        self.num_classes = len(self.classes)

    def make_transform(self, train: bool):
        return imagenet_transform(train, **self.transform_args)

    def make_dataset(self, split: Split) -> ImageFolder:
        """The ImageFolder of ``split`` (the hook for a tolerant image loader)."""
        folder = Path(self.root) / ("train" if split == "train" else "val")
        dataset = ImageFolder(str(folder), transform=self.transforms[split == "train"])
        if dataset.classes != self.classes:
            raise ValueError(f"class folders of '{folder}' changed since construction")
        return dataset
