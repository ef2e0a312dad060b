"""scikit-learn's digits as a folder of PNG files in ImageNet's layout, for ImageNetDataModule.

    python -m datamodules.digits_folder data/digits_folder

writes ``data/digits_folder/{train,val}/<digit>/<index>.png`` (8x8 greyscale, the split of
:class:`~datamodules.DigitsDataModule`: 1,437 training and 360 validation images), a small
real image folder to try the folder DataModule and its transform arguments on
(docs/training.md, "Small or non-photographic images").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from .digits import load_digit_images, split_digits


def write_digit_folders(root: str | Path, val_fraction: float = 0.2, seed: int = 0) -> Path:
    """Write the 1,797 digits as 8x8 greyscale PNGs in ImageNet's folder layout; returns root.

    ``root/train/<digit>/<index>.png`` and ``root/val/<digit>/<index>.png`` (``index``: the
    position in ``sklearn.datasets.load_digits``), grey levels 0-16 scaled to 0-255, split as
    :class:`DigitsDataModule` with the same ``val_fraction`` and ``seed`` (by default 1,437
    training and 360 validation images, the quickstart's validation set). Existing files of
    the same names are overwritten.
    """
    root = Path(root)
    images, labels = load_digit_images(8)
    pixels = (images[:, 0] * 255).round().to(torch.uint8).numpy()  # (N, 8, 8)
    for split, indices in zip(
        ("train", "val"), split_digits(labels, val_fraction, seed), strict=True
    ):
        for index in indices:
            folder = root / split / str(int(labels[index]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[index]).save(folder / f"{index:04d}.png")
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m datamodules.digits_folder",
        description="Write scikit-learn's digits as an ImageNet-layout folder of PNG files.",
    )
    parser.add_argument("root", help="output folder (receives train/ and val/)")
    parser.add_argument("--val_fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_digit_folders(args.root, args.val_fraction, args.seed))


if __name__ == "__main__":
    main()
