"""The shared image-classification DataModule: argument checks, splits and loaders.

Every DataModule yields batches ``(images, labels)``: images ``float32 (B, in_chans, S, S)``
normalized with the module's ``mean``/``std``, labels ``int64 (B,)`` in ``[0, num_classes)``.
A subclass sets ``num_classes``, ``image_size``, ``mean`` and ``std`` (class attributes, or
settings passed to the base ``__init__``; the CLI reads them right after construction) and
implements ``make_dataset(split)``.

Under DDP, Lightning gives validation and test loaders a ``DistributedSampler``, which pads
the split by repeating samples until its size is a multiple of the world size; a validation
metric is exact only when the split size is divisible by the number of processes (each
subclass documents its split sizes).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from convnn.errors import DataError, OptionError
from convnn.validation import check_int, check_names, init_parameter_names

from .repeat_aug import RepeatAugmentSampler

Split = Literal["train", "val", "test"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_image_size(image_size: int) -> None:
    check_int("image_size", image_size, 8)


class TensorImageDataset(Dataset):
    """In-memory images ``(N, C, S, S)`` (uint8, or float in [0, 1]) with labels ``(N,)``.

    ``transform`` receives one ``float32 (C, S, S)`` image in [0, 1].
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
        return self.transform(image), int(self.labels[index])


def epoch_order_seed() -> int:
    """What the training order of an epoch is drawn from: the run's ``seed_everything`` seed
    (``PL_GLOBAL_SEED``, as ``lightning_modules.seeding.run_seed`` reads it), else torch's
    initial seed (an unseeded run)."""
    return int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))


class EpochShuffleSampler(RandomSampler):
    """A random order per epoch that depends only on ``(seed, epoch)``, like DistributedSampler.

    Lightning calls ``set_epoch`` before every epoch, so a run resumed from a checkpoint
    reads the same batches as an uninterrupted one. Under DDP Lightning replaces it (a
    ``RandomSampler``) by a ``DistributedSampler`` with the run's seed, which does the same per
    rank. ``seed`` defaults to the run's ``seed_everything`` seed (``PL_GLOBAL_SEED``).
    """

    def __init__(self, data_source: Dataset, seed: int | None = None) -> None:
        super().__init__(data_source)
        self.seed = epoch_order_seed() if seed is None else seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class _SkipOnce:
    """A loader's index sampler whose next iteration to draw starts ``loader.skip`` items in
    (then ``loader.skip`` is 0; read at the first draw: a worker iterator creates two and
    draws from the second); its length stays the full one (Lightning counts an epoch's
    batches with it)."""

    def __init__(self, indices: Iterable[Any], loader: ResumableDataLoader) -> None:
        self.indices = indices
        self.loader = loader

    def __len__(self) -> int:
        return len(self.indices)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        skip, self.loader.skip = self.loader.skip, 0
        yield from itertools.islice(iter(self.indices), skip, None)


class _Deferred(Iterator[Any]):
    """An iterator over a :class:`ResumableDataLoader` that starts the loader's own iterator
    (and its workers) when the first batch is asked for."""

    def __init__(self, loader: ResumableDataLoader) -> None:
        self.loader = loader
        self.iterator: Iterator[Any] | None = None

    def __next__(self) -> Any:
        if self.iterator is None:
            self.iterator = self.loader._start()
        return next(self.iterator)


class ResumableDataLoader(DataLoader):
    """The training ``DataLoader``: a run resumed from a checkpoint saved mid-epoch reads
    exactly the batches an uninterrupted run reads next.

    Lightning alone does not: it counts on from the saved batch but restarts the epoch's
    order from its first batch; and with workers, the first iterator of a run draws its
    indices when it is created, which a classifier's ``configure_optimizers`` does (through
    ``trainer.estimated_stepping_batches``) before the checkpoint is restored and the
    sampler's epoch is set, so a resumed run read its first epoch in epoch 0's order. Here an
    iterator starts when its first batch is asked for: ``position()`` then says where the
    fit stands (epoch, batches of it already done); the sampler is set to that epoch and the
    iterator skips those batches (only their indices are drawn: no image is read).

    ``state_dict`` is empty, there being nothing to save (the fit loop's progress in the
    checkpoint is the position), and tells Lightning that the loader resumes mid-epoch.

    Args:
        position: ``(epoch, batches done)`` when training, else ``None`` (the DataModule
            passes its trainer's; ``None``: an ordinary loader).
        args, kwargs: ``DataLoader``'s.
    """

    def __init__(
        self,
        *args: Any,
        position: Callable[[], tuple[int, int] | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.position = position
        self.skip = 0  # items of the index sampler the next iterator skips

    @property
    def _index_sampler(self) -> Any:  # DataLoader's: what its iterators draw indices from
        return _SkipOnce(super()._index_sampler, self)

    def __iter__(self) -> Iterator[Any]:
        return _Deferred(self) if self.position is not None else super().__iter__()

    def _start(self) -> Iterator[Any]:
        """The loader's iterator, from where the fit stands."""
        where = self.position() if self.position is not None else None
        if where is not None:
            epoch, self.skip = where
            for sampler in (self.sampler, self.batch_sampler):
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(epoch)
        return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        """Nothing: the checkpoint's fit loop progress is where a resumed run goes on."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore (see :meth:`state_dict`)."""


class ImageClassificationDataModule(L.LightningDataModule):
    """Base class: batch size and loader settings shared by every image-classification dataset.

    Args:
        batch_size: images per batch and per process (>= 1).
        num_workers: loader worker processes (0 loads in the main process).
        pin_memory: pin host memory for faster copies; used only when CUDA is available.
        persistent_workers: keep workers alive between epochs; used only when
            ``num_workers > 0``.
        aug_repeats: repeated augmentation (DeiT's recipe: 3): each training image drawn
            this many times per epoch, the copies augmented independently and, under DDP,
            read by different processes (:class:`~datamodules.repeat_aug.RepeatAugmentSampler`);
            0 or 1: every image once per epoch.
        settings: a subclass's own arguments, stored as attributes of the same names (the
            subclass checks them). Pass them in the order of its signature: the hyper-parameters
            (these and every subclass argument) keep the order in which they are first seen.

    Subclasses take these five loader arguments as ``**loader`` and pass them on with their
    own settings, ``super().__init__(**loader, **settings)``, so the five are written once:
    LightningCLI (jsonargparse) follows ``**loader`` here and offers them, typed and with
    their defaults, as ``--data.batch_size`` etc. A misspelled name is refused with a close
    match.

    The training loader shuffles with an :class:`EpochShuffleSampler` (the order of an epoch
    depends only on the run's seed and the epoch number, so resumed runs read the same
    batches; it is a :class:`ResumableDataLoader`, so a run resumed mid-epoch reads the rest
    of that epoch), and drops the last incomplete batch when at least one full batch exists
    (no batch of one image reaches batch norm). Validation, test and predict loaders keep every
    sample once, in order. ``test_dataloader`` serves the validation split unless the dataset
    has a separate test split (``has_test_split``).
    """

    num_classes: int
    image_size: int
    in_chans: int = 3
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    has_test_split: bool = False

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        aug_repeats: int = 0,
        **settings: Any,
    ) -> None:
        super().__init__()
        check_names(f"{type(self).__name__} arguments", settings, init_parameter_names(type(self)))
        check_int("batch_size", batch_size, 1)
        check_int("num_workers", num_workers, 0)
        check_int("aug_repeats", aug_repeats, 0)
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.aug_repeats = aug_repeats
        for name, value in settings.items():
            setattr(self, name, value)
        self.datasets: dict[str, Dataset] = {}

    def make_dataset(self, split: Split) -> Dataset:
        """Build the dataset of one split with its transform (called from ``setup``)."""
        raise NotImplementedError

    def splits_for(self, stage: str | None) -> tuple[Split, ...]:
        test: Split = "test" if self.has_test_split else "val"
        by_stage: dict[str | None, tuple[Split, ...]] = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": (test,),
            "predict": (test,),
            None: ("train", "val", test),
        }
        if stage not in by_stage:
            raise OptionError(
                f"stage={stage!r} is not allowed; expected one of {list(by_stage)}", key="stage"
            )
        return by_stage[stage]

    def setup(self, stage: str | None = None) -> None:
        for split in self.splits_for(stage):
            self.dataset(split)

    def dataset(self, split: Split) -> Dataset:
        """The dataset of ``split``, built on first use."""
        if split not in self.datasets:
            self.datasets[split] = self.make_dataset(split)
        return self.datasets[split]

    def loader(self, dataset: Dataset, train: bool) -> DataLoader:
        """The loader of one split; the training one is a :class:`ResumableDataLoader`."""
        workers = self.num_workers
        drop_last = train and len(dataset) >= self.batch_size
        settings: dict[str, Any] = {
            "batch_size": self.batch_size,
            "drop_last": drop_last,
            "num_workers": workers,
            "pin_memory": self.pin_memory and torch.cuda.is_available(),
            "persistent_workers": self.persistent_workers and workers > 0,
        }
        if not train:
            return DataLoader(dataset, **settings)
        sampler = self._train_sampler(dataset)
        return ResumableDataLoader(dataset, sampler=sampler, position=self._position, **settings)

    def _train_sampler(self, dataset: Dataset) -> Sampler[int]:
        """A per-epoch shuffle, with ``aug_repeats`` copies of each drawn image when set
        (its share of the processes' indices under DDP)."""
        if self.aug_repeats < 2:
            return EpochShuffleSampler(dataset)
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        return RepeatAugmentSampler(dataset, world, rank, self.aug_repeats, epoch_order_seed())

    def _position(self) -> tuple[int, int] | None:
        """``(epoch, batches of it done)`` of the trainer's fit, read as an epoch's first
        batch is drawn; ``None`` when no trainer is training (the loader then starts at the
        beginning, in the sampler's epoch)."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return None
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        return trainer.current_epoch, done

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("val"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("test" if self.has_test_split else "val"), train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, image_size={self.image_size}, "
            f"batch_size={self.batch_size}, num_workers={self.num_workers}"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    __str__ = __repr__  # Lightning's __str__ would build every dataset to print its size
