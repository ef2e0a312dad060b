"""LightningDataModules for image classification.

Every module yields ``(images float32 (B, 3, S, S), labels int64 (B,))`` and exposes
``num_classes``, ``image_size``, ``in_chans``, ``mean`` and ``std`` right after construction.
"""

from convnn.errors import DataError  # the suite's errors are all in convnn.errors

from .base import ImageClassificationDataModule, TensorImageDataset
from .cifar import CIFAR10DataModule, CIFAR100DataModule
from .digits import DigitsDataModule
from .folder import ImageNetDataModule
from .structure import MarkersDataModule, TextureDataModule
from .synthetic import SyntheticDataModule, synthetic_images

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DataError",
    "DigitsDataModule",
    "ImageClassificationDataModule",
    "ImageNetDataModule",
    "MarkersDataModule",
    "SyntheticDataModule",
    "TensorImageDataset",
    "TextureDataModule",
    "synthetic_images",
]
