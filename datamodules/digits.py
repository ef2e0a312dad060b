"""The 8x8 handwritten digits that ship inside scikit-learn: the default that needs no download.

``datamodules/digits_folder.py`` writes them as a folder of image files in ImageNet's layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convnn.validation import check_int, check_number

from .base import ImageClassificationDataModule, Split, TensorImageDataset, check_image_size
from .transforms import tensor_transform

NUM_DIGITS = 1797


def load_digit_images(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits: images ``float32 (N, 1, S, S)`` in [0, 1] (bilinear), labels ``(N,)``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16  # (N, 1, 8, 8)
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear")
    return images.clamp_(0, 1), torch.tensor(digits.target, dtype=torch.long)


def split_digits(
    labels: torch.Tensor, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` of the stratified split fixed by ``seed``."""
    from sklearn.model_selection import train_test_split

    return train_test_split(
        np.arange(len(labels)),
        test_size=val_fraction,
        random_state=seed,
        stratify=labels.numpy(),
    )


class DigitsDataModule(ImageClassificationDataModule):
    """scikit-learn's 1,797 handwritten digits (10 classes), upsampled and replicated to RGB.

    The 8x8 images (``sklearn.datasets.load_digits``, 16 grey levels) are scaled to [0, 1],
    upsampled bilinearly to ``image_size`` and replicated to 3 channels. A stratified split,
    fixed by ``seed``, holds out ``ceil(val_fraction * 1797)`` images for validation (360 for
    the default 0.2, leaving 1,437 for training); validation also serves test and predict.
    Training adds a random translation of up to ``translate`` pixels (default ``image_size //
    8``). The digits fill their 8x8 frame, so a shift of one original pixel crops strokes:
    ``translate=0`` trains much faster (the demo grid, ``ablations/grids/quickstart.yaml``).

    Args:
        image_size: side of the upsampled images (>= 8).
        val_fraction: share of the images held out for validation, in (0, 1).
        seed: seed of the split.
        translate: the training translation's largest shift in pixels (>= 0; ``None``:
            ``image_size // 8``, 0: no augmentation).
    """

    num_classes = 10
    mean = (0.305, 0.305, 0.305)
    std = (0.324, 0.324, 0.324)

    def __init__(
        self,
        image_size: int = 32,
        val_fraction: float = 0.2,
        seed: int = 0,
        translate: int | None = None,
        **loader: Any,
    ) -> None:
        settings = dict(image_size=image_size, val_fraction=val_fraction, seed=seed)
        settings["translate"] = translate
        super().__init__(**loader, **settings)
        check_image_size(image_size)
        low, high = 10 / NUM_DIGITS, 1 - 10 / NUM_DIGITS  # one image per class in each split
        allowed = f"in (0, 1), from {low:.4f} to {high:.4f} (each split needs all 10 classes)"
        check_number("val_fraction", val_fraction, allowed, lambda f: low <= f <= high)
        check_int("seed", seed, 0)
        if translate is not None:
            check_int("translate", translate, 0)
        self.val_fraction = float(val_fraction)  # recorded as given, used as a float
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if not self.splits:
            images, labels = load_digit_images(self.image_size)
            train, val = split_digits(labels, self.val_fraction, self.seed)
            for name, index in (("train", train), ("val", val)):
                index = torch.from_numpy(index)
                self.splits[name] = (images[index], labels[index])
        return self.splits

    def make_dataset(self, split: Split) -> TensorImageDataset:
        images, labels = self.load_splits()["train" if split == "train" else "val"]
        train = split == "train"
        transform = tensor_transform(
            train, self.image_size, self.mean, self.std, translate=self.translate
        )
        return TensorImageDataset(images, labels, transform)
