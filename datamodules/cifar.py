"""CIFAR-10 and CIFAR-100 through torchvision's loaders and on-disk format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchvision.datasets import CIFAR10, CIFAR100

from convnn.errors import DataNotFoundError
from convnn.models._builder import CIFAR10_MEAN, CIFAR10_STD

from .base import ImageClassificationDataModule, Split
from .transforms import cifar_transform


class CIFAR10DataModule(ImageClassificationDataModule):
    """CIFAR-10: 50,000 training and 10,000 validation images (32x32, 10 classes).

    Reads torchvision's format, ``root/cifar-10-batches-py/{data_batch_1..5, test_batch,
    batches.meta}`` (the extracted ``cifar-10-python.tar.gz``); torchvision verifies the files'
    MD5 sums when loading. The official test batch is the validation split and also serves
    test and predict. Training: random 32 crop of the 4-pixel zero-padded image, horizontal
    flip; all splits: normalization with the dataset's channel mean and std.

    Args:
        root: folder that holds (or, with ``download``, receives) ``cifar-10-batches-py``;
            ``None``: ``data/cifar10`` (``data/cifar100`` for CIFAR-100).
        download: download and extract the archive in ``prepare_data`` when it is missing.
    """

    dataset_cls: type[CIFAR10] = CIFAR10
    title = "CIFAR-10"
    default_root = "data/cifar10"
    num_classes = 10
    image_size = 32
    mean = CIFAR10_MEAN
    std = CIFAR10_STD

    def __init__(
        self,
        root: str | None = None,
        download: bool = False,
        **loader: Any,
    ) -> None:
        settings = dict(root=str(root or self.default_root), download=download)
        super().__init__(**loader, **settings)
        if not download:
            self.check_files()

    @property
    def folder(self) -> Path:
        return Path(self.root) / self.dataset_cls.base_folder

    def check_files(self) -> None:
        """Raise ``DataNotFoundError`` (a ``FileNotFoundError``; one line: the folder, the file,
        how to get the data)."""
        cls = self.dataset_cls
        names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        missing = [name for name in names if not (self.folder / name).is_file()]
        if not missing:
            return
        problem = "does not exist" if not self.folder.is_dir() else f"lacks {missing[0]!r}"
        raise DataNotFoundError(
            f"{self.title} not found: '{self.folder}' {problem}; set `download: true` in the "
            f"data config to fetch it, or extract {cls.filename} "
            f"({cls.url}) so that '{cls.base_folder}' lies in root '{self.root}'"
        )

    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                self.dataset_cls(self.root, train=train, download=True)

    def make_dataset(self, split: Split) -> CIFAR10:
        self.check_files()
        train = split == "train"
        transform = cifar_transform(train, self.mean, self.std)
        return self.dataset_cls(self.root, train=train, transform=transform, download=False)


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100: 50,000 training and 10,000 validation images (32x32, 100 fine classes).

    Reads ``root/cifar-100-python/{train, test, meta}`` (the extracted
    ``cifar-100-python.tar.gz``); otherwise as :class:`CIFAR10DataModule`.
    """

    dataset_cls = CIFAR100
    title = "CIFAR-100"
    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    default_root = "data/cifar100"
