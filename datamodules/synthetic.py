"""Procedurally generated, learnable images for tests and throughput runs."""

from __future__ import annotations

import colorsys
import math
from typing import Any

import numpy as np
import torch

from convnn.validation import check_int

from .base import ImageClassificationDataModule, Split, TensorImageDataset, check_image_size
from .transforms import tensor_transform

ORIENTATIONS = 8
WAVELENGTHS = (0.25, 0.17, 0.12)  # stripe period as a fraction of the image size
CHUNK = 256  # images generated at once (bounds the float32 working memory)


def class_colors(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` RGB in [0, 1]: hues spread by the golden ratio, saturated."""
    hues = (np.arange(num_classes) * 0.618033988749895) % 1.0
    return np.array([colorsys.hsv_to_rgb(h, 0.9, 0.95) for h in hues], dtype=np.float32)


def synthetic_images(
    num_images: int, num_classes: int, image_size: int, seed: int, split: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced labels ``int64 (N,)`` and images ``uint8 (N, 3, S, S)``.

    Class ``c`` is a patch of stripes at orientation ``pi * (c % 8) / 8`` with wavelength
    ``WAVELENGTHS[(c // 8) % 3] * S``, coloured ``class_colors(...)[c]``, inside a Gaussian
    envelope (sigma ``S / 6``) centered uniformly in the inner ``2S/3`` square, with a random stripe
    phase, over uniform per-pixel noise around a random grey level. A pure function of its
    arguments: one CPU ``torch.Generator`` seeded from ``(seed, split)`` drives every draw, so
    every process produces identical data.
    """
    state = np.random.SeedSequence([seed, split]).generate_state(1, np.uint64)[0]
    gen = torch.Generator().manual_seed(int(state) >> 1)
    labels = torch.randperm(num_images, generator=gen) % num_classes
    colors = torch.from_numpy(class_colors(num_classes))
    classes = torch.arange(num_classes)
    theta = math.pi * (classes % ORIENTATIONS) / ORIENTATIONS
    wavelength = torch.tensor(WAVELENGTHS)[(classes // ORIENTATIONS) % len(WAVELENGTHS)]
    frequency = 2 * math.pi / (wavelength * image_size)
    grid = torch.arange(image_size, dtype=torch.float32) + 0.5
    images = torch.empty((num_images, 3, image_size, image_size), dtype=torch.uint8)
    for start in range(0, num_images, CHUNK):
        c = labels[start : start + CHUNK]
        n = len(c)
        center = (torch.rand(2, n, 1, 1, generator=gen) * 4 + 1) * (image_size / 6)
        phase = torch.rand(n, 1, 1, generator=gen) * (2 * math.pi)
        grey = torch.rand(n, 1, 1, 1, generator=gen) * 0.4 + 0.3
        noise = torch.rand(n, 3, image_size, image_size, generator=gen) - 0.5
        dy = grid[None, :, None] - center[0]  # (n, S, 1)
        dx = grid[None, None, :] - center[1]  # (n, 1, S)
        envelope = torch.exp((dx**2 + dy**2) * (-0.5 * (6 / image_size) ** 2))  # (n, S, S)
        along = dx * theta[c].cos()[:, None, None] + dy * theta[c].sin()[:, None, None]
        stripes = 0.5 + 0.5 * torch.cos(along * frequency[c][:, None, None] + phase)  # (n, S, S)
        pattern = colors[c][:, :, None, None] * stripes[:, None]  # (n, 3, S, S)
        mix = envelope[:, None]  # (n, 1, S, S)
        image = torch.lerp(noise.mul_(0.5).add_(grey), pattern, mix)
        images[start : start + n] = image.mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    return images, labels


class SyntheticDataModule(ImageClassificationDataModule):
    """Generated images: each class a coloured, oriented stripe patch at a random position.

    Splits: ``num_train`` training and ``num_val`` validation images (validation also serves
    test and predict), balanced over classes, generated in memory in ``setup`` from ``seed``
    (identical in every process; a few ms per hundred 32x32 images). No augmentation. Under
    DDP, choose ``num_val`` divisible by the number of processes for exact validation metrics.

    Args:
        num_classes: number of classes (>= 2).
        image_size: side of the square images (>= 8).
        num_train: training images (>= 1).
        num_val: validation images (>= 1).
        seed: generator seed; the same seed gives identical images and labels.
    """

    mean = (0.46, 0.46, 0.46)
    std = (0.19, 0.19, 0.19)

    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 32,
        num_train: int = 512,
        num_val: int = 128,
        seed: int = 0,
        **loader: Any,
    ) -> None:
        settings = dict(
            num_classes=num_classes,
            image_size=image_size,
            num_train=num_train,
            num_val=num_val,
            seed=seed,
        )
        super().__init__(**loader, **settings)
        check_int("num_classes", num_classes, 2)
        check_image_size(image_size)
        check_int("num_train", num_train, 1)
        check_int("num_val", num_val, 1)
        check_int("seed", seed, 0)

    def make_dataset(self, split: Split) -> TensorImageDataset:
        count = self.num_train if split == "train" else self.num_val
        images, labels = synthetic_images(
            count, self.num_classes, self.image_size, self.seed, split=0 if split == "train" else 1
        )
        transform = tensor_transform(False, self.image_size, self.mean, self.std)
        return TensorImageDataset(images, labels, transform)
