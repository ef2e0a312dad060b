"""ImageNet-style folders of images, with timm's training and evaluation transforms."""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from timm.data.auto_augment import AugmentOp
from torchvision.datasets import ImageFolder

from convnn.errors import DataError, DataNotFoundError, OptionError
from convnn.validation import check_number

from .base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageClassificationDataModule,
    Split,
    check_image_size,
)
from .transforms import DEFAULT_RATIO, DEFAULT_SCALE, TRAIN_AUGMENT_DEFAULTS, imagenet_transform

Interpolation = Literal["bicubic", "bilinear", "nearest", "random"]
CorruptImages = Literal["fail", "skip"]
ColorJitter = float | tuple[float, float, float] | tuple[float, float, float, float] | None
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
"""What PIL raises for a truncated, corrupt or non-image file."""

SCAN_LIMIT = 5000
"""``scan_images=None`` (the default) decodes every image of a split in ``setup`` when the
split holds at most this many: a bad file in a small folder stops ``fit`` before any
training, for a fraction of one epoch's decoding; larger folders are read lazily."""


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_range(name: str, value: Any, allowed: str, ok: Any) -> None:
    """Raise ``OptionError`` unless ``value`` is two numbers ``(low, high)`` with ``ok(low,
    high)``; ``allowed`` describes the condition."""
    pair = isinstance(value, list | tuple) and len(value) == 2 and all(map(is_number, value))
    if not pair or not ok(*value):
        raise OptionError(
            f"{name}={value!r} is not allowed; expected [low, high] {allowed}", key=name
        )


def check_jitter(value: Any) -> None:
    """``color_jitter``: ``None``, a number >= 0, or 3 or 4 of them (the 4th, hue, <= 0.5)."""
    values = [value] if is_number(value) else value
    ok = value is None or (
        isinstance(values, list | tuple)
        and len(values) in (1, 3, 4)
        and all(is_number(v) and v >= 0 for v in values)
        and (len(values) < 4 or values[3] <= 0.5)
    )
    if not ok:
        raise OptionError(
            f"color_jitter={value!r} is not allowed; expected None, a number >= 0, or 3 "
            "numbers >= 0 (brightness, contrast, saturation) or 4 (and hue <= 0.5)",
            key="color_jitter",
        )


class TransformError(Exception):
    """A transform step raised: ``step`` names it (with the timm op that failed, if any),
    ``detail`` is the error on one line."""

    def __init__(self, step: str, err: Exception) -> None:
        message = " ".join(str(err).split())
        self.step = step
        self.detail = f"{type(err).__name__}: {message}" if message else type(err).__name__
        super().__init__(f"{step} ({self.detail})")


def step_name(step: Any, err: BaseException) -> str:
    """``step``'s class name; for timm's RandAugment, AutoAugment and AugMix also the name of
    the ``AugmentOp`` that raised (found in the traceback), e.g. ``RandAugment op Posterize``."""
    name = type(step).__name__
    tb = err.__traceback__
    while tb is not None:
        op = tb.tb_frame.f_locals.get("self")
        if isinstance(op, AugmentOp) and op is not step:
            return f"{name} op {op.name}"
        tb = tb.tb_next
    return name


def apply_transform(transform: Any, image: Any) -> Any:
    """``transform(image)``, one step of a ``Compose`` at a time; a step that raises is named
    in the :class:`TransformError` raised from its error."""
    steps = transform.transforms if hasattr(transform, "transforms") else [transform]
    for step in steps:
        try:
            image = step(image)
        except Exception as err:
            raise TransformError(step_name(step, err), err) from err
    return image


def class_folders(split_dir: Path) -> list[str]:
    """Sorted class-folder names of ``split_dir`` (ImageFolder's order); clear errors if absent.

    Raises ``DataNotFoundError`` (a ``FileNotFoundError``) when ``split_dir`` is missing, and
    ``DataError`` when it has no class folders or a class folder is empty.
    """
    if not split_dir.is_dir():
        raise DataNotFoundError(
            f"image folder '{split_dir}' is missing; expected {split_dir}/<class>/<image> files"
        )
    with os.scandir(split_dir) as entries:
        classes = sorted(entry.name for entry in entries if entry.is_dir())
    if not classes:
        raise DataError(
            f"image folder '{split_dir}' is empty: no class folders; "
            f"expected {split_dir}/<class>/<image> files"
        )
    for name in classes:
        with os.scandir(split_dir / name) as entries:
            if next(entries, None) is None:
                raise DataError(f"class folder '{split_dir / name}' is empty")
    return classes


def read_image(path: str) -> Image.Image:
    """The image at ``path`` fully decoded as RGB (a truncated file raises ``OSError``)."""
    with open(path, "rb") as f:
        image = Image.open(f)
        return image.convert("RGB")


class CheckedImageFolder(ImageFolder):
    """``ImageFolder`` whose unreadable images (truncated, corrupt, not an image) and images
    on which a transform step raises are handled.

    ``corrupt_images="fail"`` raises :class:`DataError` naming the file (and the transform
    step); ``"skip"`` warns with the file, the reason and the running count of skipped files
    (``skipped``, per process) and serves the next usable image instead, so batches keep
    their size. ``scan()`` decodes every image up front and drops the unreadable ones (or
    fails) before any training (transforms are random: their failures show when they happen).
    """

    def __init__(self, root: str, transform: Any, corrupt_images: CorruptImages) -> None:
        super().__init__(root, transform=transform, loader=read_image)
        self.corrupt_images = corrupt_images
        self.skipped = 0

    def _unreadable(self, path: str, err: Exception) -> None:
        if self.corrupt_images == "fail":
            raise DataError(
                f"unreadable image '{path}' ({type(err).__name__}: {err}); remove it or set "
                "the DataModule's corrupt_images: skip"
            )
        self.skipped += 1
        warnings.warn(
            f"skipped unreadable image '{path}' ({type(err).__name__}: {err}); "
            f"{self.skipped} skipped so far in '{self.root}'",
            stacklevel=3,
        )

    def _untransformable(self, path: str, err: TransformError) -> None:
        if self.corrupt_images == "fail":
            raise DataError(
                f"transform {err.step} failed on image '{path}' ({err.detail}); fix the "
                "transform or the image, or set the DataModule's corrupt_images: skip"
            ) from err.__cause__
        self.skipped += 1
        warnings.warn(
            f"skipped image '{path}': transform {err.step} failed ({err.detail}); "
            f"{self.skipped} skipped so far in '{self.root}'",
            stacklevel=3,
        )

    def __getitem__(self, index: int) -> tuple[Any, int]:
        for offset in range(len(self.samples)):
            path, target = self.samples[(index + offset) % len(self.samples)]
            try:
                image = self.loader(path)
            except UNREADABLE as err:
                self._unreadable(path, err)
                continue
            if self.transform is None:
                return image, target
            try:
                return apply_transform(self.transform, image), target
            except TransformError as err:
                self._untransformable(path, err)
        raise DataError(f"no usable image in '{self.root}'")

    def scan(self, threads: int = 1) -> None:
        """Decode every image now; unreadable ones fail or are dropped from ``samples``."""

        def readable(sample: tuple[str, int]) -> Exception | None:
            try:
                read_image(sample[0])
            except UNREADABLE as err:
                return err
            return None

        with ThreadPoolExecutor(max(1, threads)) as pool:
            errors = list(pool.map(readable, self.samples))
        for (path, _), err in zip(self.samples, errors, strict=True):
            if err is not None:
                self._unreadable(path, err)
        self.samples = [s for s, err in zip(self.samples, errors, strict=True) if err is None]
        self.imgs = self.samples
        self.targets = [target for _, target in self.samples]
        if not self.samples:
            raise DataError(f"no readable image in '{self.root}'")


class ImageNetDataModule(ImageClassificationDataModule):
    """Images in the standard layout ``root/train/<class>/*.JPEG``, ``root/val/<class>/*.JPEG``.

    Any ImageFolder tree works (``.jpg``, ``.png``, ...); ``num_classes`` is the number of class
    folders in ``train``, read at construction, and ``val`` must hold the same classes. The
    labels are the indices of the sorted class-folder names. For ImageNet-1k the splits hold
    1,281,167 training and 50,000 validation images (the validation split also serves test
    and predict; 50,000 divides by 1, 2, 4, 5, 8, 10 and 16 processes).

    Training uses timm's transform (``timm.data.create_transform``; the arguments below carry
    timm's names): random-resized crop to ``image_size``, flips, ``auto_augment`` (a timm
    policy string) or else colour jitter, normalization, random erasing with probability
    ``re_prob``. The defaults are timm's ImageNet recipe; small or non-photographic images
    (digits, glyphs, icons) usually want a milder crop and no flips or jitter, e.g.
    ``scale=(0.6, 1.0), hflip=0, color_jitter=0``. Evaluation resizes to ``image_size /
    crop_pct`` and center-crops ``image_size``. A transform step that raises on an image is
    handled like an unreadable image (``corrupt_images``), naming the file and the step.

    Args:
        root: folder that holds ``train`` and ``val``.
        image_size: side of the network's input (>= 8).
        scale: range of the random-resized crop's area, as fractions of the image's, with
            ``0 < low <= high <= 1`` (ImageNet: ``(0.08, 1.0)``).
        ratio: range of the crop's aspect ratio (width / height), ``0 < low <= high``.
        hflip: probability of a horizontal flip, in [0, 1] (0: none).
        vflip: probability of a vertical flip, in [0, 1].
        color_jitter: brightness, contrast and saturation jitter (one number for all three,
            or 3 numbers, or 4 with hue), each >= 0; 0 or ``None``: none. timm applies it only
            when ``auto_augment`` is ``None``.
        auto_augment: timm augmentation policy, e.g. ``"rand-m9-mstd0.5-inc1"``, or ``None``.
        re_prob: random-erasing probability, in [0, 1].
        crop_pct: evaluation center-crop fraction, in (0, 1].
        interpolation: resize interpolation.
        mean: per-channel normalization mean.
        std: per-channel normalization standard deviation.
        corrupt_images: an unreadable (truncated, corrupt) image ``fail``s the run naming the
            file, or is ``skip``ped with a warning that names it and counts the skipped files.
        scan_images: decode every image of a split in ``setup``, before any training
            (threads: ``max(1, num_workers)``), so a bad file fails or is dropped up front:
            ``None`` for splits of at most :data:`SCAN_LIMIT` (5,000) images, ``True`` for
            every split, ``False`` never (a bad file then shows when a batch reads it).
    """

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        scale: tuple[float, float] = DEFAULT_SCALE,
        ratio: tuple[float, float] = DEFAULT_RATIO,
        hflip: float = 0.5,
        vflip: float = 0.0,
        color_jitter: ColorJitter = 0.4,
        auto_augment: str | None = "rand-m9-mstd0.5-inc1",
        re_prob: float = 0.25,
        crop_pct: float = 0.875,
        interpolation: Interpolation = "bicubic",
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        corrupt_images: CorruptImages = "fail",
        scan_images: bool | None = None,
        **loader: Any,
    ) -> None:
        super().__init__(**loader)
        check_image_size(image_size)
        check_range("scale", scale, "with 0 < low <= high <= 1", lambda a, b: 0 < a <= b <= 1)
        check_range("ratio", ratio, "with 0 < low <= high", lambda a, b: 0 < a <= b)
        for name, p in (("hflip", hflip), ("vflip", vflip), ("re_prob", re_prob)):
            check_number(name, p, "in [0, 1]", lambda p: 0 <= p <= 1)
        check_jitter(color_jitter)
        check_number("crop_pct", crop_pct, "in (0, 1]", lambda p: 0 < p <= 1)
        for name, value, allowed in (
            ("interpolation", interpolation, Interpolation.__args__),
            ("corrupt_images", corrupt_images, CorruptImages.__args__),
        ):
            if value not in allowed:
                raise OptionError(
                    f"{name}={value!r} is not allowed; expected one of {list(allowed)}", key=name
                )
        self.corrupt_images = corrupt_images
        self.scan_images = scan_images
        self.root = str(root)
        self.image_size = image_size
        self.mean = tuple(mean)
        self.std = tuple(std)
        augment = {name: self.hparams[name] for name in TRAIN_AUGMENT_DEFAULTS}
        self.transform_args = dict(
            image_size=image_size,
            mean=self.mean,
            std=self.std,
            crop_pct=crop_pct,
            interpolation=interpolation,
            **augment,
        )
        try:
            self.transforms = {train: self.make_transform(train) for train in (True, False)}
        except (AssertionError, KeyError, ValueError) as err:
            raise OptionError(
                f"auto_augment={auto_augment!r} is not allowed; expected None or a timm policy "
                f"such as 'rand-m9-mstd0.5-inc1', 'original' or 'augmix-m5-w4-d2' ({err})",
                key="auto_augment",
            ) from None
        root_dir = Path(self.root)
        if not root_dir.is_dir():
            raise DataNotFoundError(
                f"image root '{root_dir}' does not exist; expected {root_dir}/train/<class>/* "
                f"and {root_dir}/val/<class>/*"
            )
        self.classes = class_folders(root_dir / "train")
        val_classes = class_folders(root_dir / "val")
        if val_classes != self.classes:
            only_train = sorted(set(self.classes) - set(val_classes))[:3]
            only_val = sorted(set(val_classes) - set(self.classes))[:3]
            raise DataError(
                f"'{root_dir / 'train'}' and '{root_dir / 'val'}' must hold the same class "
                f"folders; only in train: {only_train}, only in val: {only_val}"
            )
        self.num_classes = len(self.classes)

    def make_transform(self, train: bool):
        return imagenet_transform(train, **self.transform_args)

    def make_dataset(self, split: Split) -> CheckedImageFolder:
        """The image folder of ``split``, scanned first as ``scan_images`` says."""
        folder = Path(self.root) / ("train" if split == "train" else "val")
        transform = self.transforms[split == "train"]
        dataset = CheckedImageFolder(str(folder), transform, self.corrupt_images)
        if dataset.classes != self.classes:
            raise DataError(f"class folders of '{folder}' changed since construction")
        scan = self.scan_images
        if scan or (scan is None and len(dataset) <= SCAN_LIMIT):
            dataset.scan(self.num_workers)
        return dataset
