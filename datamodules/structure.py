"""Two generated tasks whose structure is known, for the spectrum study (docs/results.md).

- :class:`TextureDataModule` (local): grey images strewn with short line segments; the class
  is the orientation most segments share. A 3x3 filter sees a whole segment, so one
  convolution and a global average solve it; nothing far apart needs comparing.
- :class:`MarkersDataModule` (long-range): two coloured squares far apart; the class is
  whether their colours are the same. Each marker alone says nothing: the answer needs a
  comparison of two distant positions.

Both are pure functions of ``(seed, split)`` (one CPU ``torch.Generator``), generated in
memory, balanced over classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from convnn.errors import OptionError
from convnn.validation import check_int

from .base import ImageClassificationDataModule, Split, TensorImageDataset, check_image_size
from .synthetic import class_colors
from .transforms import tensor_transform

ORIENTATIONS = ((0, 1), (1, 1), (1, 0), (1, -1))
"""``(dy, dx)`` step of each texture class's segments: horizontal, diagonal, vertical,
anti-diagonal."""
SEGMENTS, DISTRACTORS = 5, 3  # texture: segments of the class's orientation, of others
MARKER, MIN_CELLS, COLOURS = 4, 3, 6  # markers: square side, least cell distance, colours


def _generator(seed: int, split: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, split, 7]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def texture_images(
    num_images: int, image_size: int, seed: int, split: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``float32 (N, 1, S, S)`` in [0, 1] and balanced labels ``int64 (N,)`` in 0..3.

    Background: uniform noise in [0, 0.35]. Then ``SEGMENTS`` 3-pixel segments along
    ``ORIENTATIONS[label]`` and ``DISTRACTORS`` along a random other orientation, each at a
    uniform centre at least one pixel from the border, brightness in [0.7, 1].
    """
    gen = _generator(seed, split)
    S = image_size
    labels = torch.randperm(num_images, generator=gen) % len(ORIENTATIONS)
    images = torch.rand(num_images, 1, S, S, generator=gen) * 0.35
    steps = torch.tensor(ORIENTATIONS)  # (4, 2)
    count = SEGMENTS + DISTRACTORS
    other = (labels[:, None] + torch.randint(1, 4, (num_images, DISTRACTORS), generator=gen)) % 4
    kinds = torch.cat([labels[:, None].expand(-1, SEGMENTS), other], 1)  # (N, count)
    centres = torch.randint(1, S - 1, (num_images, count, 2), generator=gen)
    brightness = torch.rand(num_images, count, generator=gen) * 0.3 + 0.7
    n = torch.arange(num_images)[:, None].expand(-1, count)
    for t in (-1, 0, 1):
        yx = centres + t * steps[kinds]  # (N, count, 2)
        images[n, 0, yx[..., 0], yx[..., 1]] = brightness
    return images, labels


def _far_pairs(side: int, min_distance: int) -> torch.Tensor:
    """``(P, 2, 2)``: ordered pairs of cells ``(row, col)`` of a ``side x side`` grid at
    Chebyshev distance ``>= min_distance``."""
    cells = torch.cartesian_prod(torch.arange(side), torch.arange(side))  # (side^2, 2)
    a, b = torch.meshgrid(torch.arange(len(cells)), torch.arange(len(cells)), indexing="ij")
    far = (cells[a] - cells[b]).abs().amax(-1) >= min_distance
    return torch.stack([cells[a[far]], cells[b[far]]], 1)


def marker_images(
    num_images: int, image_size: int, seed: int, split: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``float32 (N, 3, S, S)`` in [0, 1] and balanced labels ``int64 (N,)`` in {0, 1}.

    The image is a grid of ``MARKER x MARKER`` cells (the ViT's 4x4 patches at 16x16); two
    cells at least ``MIN_CELLS`` apart along a row or a column (``MIN_CELLS * MARKER - MARKER``
    pixels between them, more than a 7x7 receptive field spans) are filled with one of
    ``COLOURS`` colours each; ``label = 1`` when the two colours are the same. Background:
    grey noise in [0, 0.3]. Each marker alone says nothing about the label, and neither does
    any sum over positions of what a window that sees one marker computes.
    """
    gen = _generator(seed, split)
    S = image_size
    side = S // MARKER
    if side <= MIN_CELLS:
        raise OptionError(
            f"image_size={S} is not allowed; expected >= {(MIN_CELLS + 1) * MARKER} for the "
            "markers",
            key="image_size",
        )
    labels = torch.randperm(num_images, generator=gen) % 2
    images = (torch.rand(num_images, 1, S, S, generator=gen) * 0.3).repeat(1, 3, 1, 1)
    pairs = _far_pairs(side, MIN_CELLS)
    where = pairs[torch.randint(0, len(pairs), (num_images,), generator=gen)]  # (N, 2, 2)
    first = torch.randint(0, COLOURS, (num_images,), generator=gen)
    other = (first + torch.randint(1, COLOURS, (num_images,), generator=gen)) % COLOURS
    second = torch.where(labels == 1, first, other)
    palette = torch.from_numpy(class_colors(COLOURS))
    for marker, colour in enumerate((first, second)):
        for i in range(num_images):
            r, c = (where[i, marker] * MARKER).tolist()
            images[i, :, r : r + MARKER, c : c + MARKER] = palette[colour[i]][:, None, None]
    return images, labels


class _GeneratedTask(ImageClassificationDataModule):
    """A generated task: ``num_train`` / ``num_val`` images from ``seed``."""

    num_classes = 4
    make_images: Any = None  # (num_images, image_size, seed, split) -> (images, labels)

    def __init__(
        self,
        image_size: int = 16,
        num_train: int = 2048,
        num_val: int = 512,
        seed: int = 0,
        **loader: Any,
    ) -> None:
        settings = dict(image_size=image_size, num_train=num_train, num_val=num_val, seed=seed)
        super().__init__(**loader, **settings)
        check_image_size(image_size)
        check_int("num_train", num_train, 1)
        check_int("num_val", num_val, 1)
        check_int("seed", seed, 0)

    def make_dataset(self, split: Split) -> TensorImageDataset:
        count = self.num_train if split == "train" else self.num_val
        images, labels = type(self).make_images(
            count, self.image_size, self.seed, 0 if split == "train" else 1
        )
        transform = tensor_transform(False, self.image_size, self.mean, self.std)
        return TensorImageDataset(images, labels, transform)


class TextureDataModule(_GeneratedTask):
    """The local task: the orientation most of an image's line segments share (4 classes).

    See :func:`texture_images`. No augmentation; validation also serves test and predict.

    Args:
        image_size: side of the square images (>= 8).
        num_train: training images (>= 1).
        num_val: validation images (>= 1).
        seed: generator seed; the same seed gives identical images and labels.
    """

    mean = (0.235, 0.235, 0.235)  # of 2,048 training images
    std = (0.217, 0.217, 0.217)
    make_images = staticmethod(texture_images)


class MarkersDataModule(_GeneratedTask):
    """The long-range task: are two far-apart squares the same colour (2 classes)?

    See :func:`marker_images`. No augmentation; validation also serves test and predict.

    Args:
        image_size: side of the square images (>= 8).
        num_train: training images (>= 1).
        num_val: validation images (>= 1).
        seed: generator seed; the same seed gives identical images and labels.
    """

    num_classes = 2
    mean = (0.207, 0.194, 0.191)  # of 2,048 training images
    std = (0.219, 0.190, 0.192)
    make_images = staticmethod(marker_images)
