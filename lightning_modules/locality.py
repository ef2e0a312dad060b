"""``convnn inspect --ckpt CKPT --out DIR``: which neighbors a trained model's ConvNN layers
select, and how local they are.

The checkpoint and its data are loaded as by ``convnn evaluate`` (its helpers: no code in the
file runs; ``--data`` or the run's own DataModule). Writes into ``DIR``:

* ``locality.json``: per ConvNN layer (``layers: {name: {...}}``, forward order) the
  statistics of :mod:`convnn.inspection.locality_stats` over the split's images (all, or
  ``--max_images``), and the run's identity;
* ``neighbors_<i>.png``: for the first ``--images`` images, every layer (rows) x query point
  and head (columns): the image, the query outlined, its neighbors lit
  (``docs/inspection.md`` explains how to read them);
* ``locality_depth.png``: mean distance per layer depth;

and prints the statistics as a table.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch

from convnn.errors import UsageError
from convnn.inspection import (
    AUTO_POINTS,
    depth_plot,
    image_picture,
    measure_locality,
    record_selection,
    save_png,
    unnormalize,
)
from convnn.validation import check_choice, check_int
from datamodules import ImageClassificationDataModule

from .classifier import ImageClassifier
from .evaluation import Run, load_run
from .files import atomic_write, atomic_write_json, check_writable

__all__ = ["checkpoint_locality", "inspect", "parse_queries"]

ACCELERATORS = ("auto", "cpu", "gpu", "cuda")


def parse_queries(text: str, image_size: int) -> list[tuple[float, float]]:
    """``auto`` or pixel positions ``"y,x y,x ..."`` (each in ``[0, image_size)``) as
    ``(y, x)`` fractions of the image (pixel centres)."""
    if text.strip() == "auto":
        return list(AUTO_POINTS)
    pairs = re.findall(r"(\d+)\s*,\s*(\d+)", text)
    rest = re.sub(r"\d+\s*,\s*\d+|[\s;]", "", text)
    points = [(int(y), int(x)) for y, x in pairs]
    if not points or rest or any(max(p) >= image_size for p in points):
        raise UsageError(
            f"--queries {text!r} is not allowed; expected 'auto' or pixel positions 'y,x' "
            f"separated by spaces, each in [0, {image_size})"
        )
    return [((y + 0.5) / image_size, (x + 0.5) / image_size) for y, x in points]


def _device(accelerator: str) -> torch.device:
    check_choice("--accelerator", accelerator, ACCELERATORS)
    gpu = accelerator != "cpu" and torch.cuda.is_available()
    if accelerator in ("gpu", "cuda") and not gpu:
        raise UsageError(f"--accelerator {accelerator}: no CUDA device is available")
    return torch.device("cuda" if gpu else "cpu")


def _batches(
    dm: ImageClassificationDataModule, split: str, limit: int | None, device: torch.device
) -> Iterator[torch.Tensor]:
    """The split's images, batch by batch, at most ``limit`` of them."""
    dm.setup("validate" if split == "val" else "test")
    loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
    seen = 0
    for images, *_ in loader:
        if limit is not None:
            images = images[: limit - seen]
        if len(images):
            yield images.to(device)
        seen += len(images)
        if limit is not None and seen >= limit:
            return


def _prepare(
    ckpt_path: str | Path,
    data: Any,
    max_images: int | None,
    accelerator: str,
    batch_size: int | None,
    num_workers: int | None,
    run: Run | None = None,
) -> tuple[ImageClassifier, torch.nn.Module, ImageClassificationDataModule, dict[str, Any]]:
    """Checked arguments, the model (its evaluation network on the device) and the data
    (``run``: already loaded by :func:`~lightning_modules.evaluation.load_run`)."""
    if max_images is not None:
        check_int("--max_images", max_images, 1)
    device = _device(accelerator)
    _, model, dm, spec = run or load_run(ckpt_path, data, batch_size, num_workers)
    return model, model.eval_model.eval().to(device), dm, spec


def _measure(
    ckpt_path: str | Path,
    model: ImageClassifier,
    net: torch.nn.Module,
    dm: ImageClassificationDataModule,
    spec: dict[str, Any],
    split: str,
    max_images: int | None,
) -> dict[str, Any]:
    device = next(net.parameters()).device
    layers = measure_locality(net, _batches(dm, split, max_images, device))
    return {
        "checkpoint": str(ckpt_path),
        "model": model.hparams.model,
        "model_kwargs": model.hparams.get("model_kwargs"),
        "data": spec["class_path"],
        "split": split,
        "num_images": next(iter(layers.values()), {}).get("images"),
        "image_size": dm.image_size,
        "layers": layers,
    }


def checkpoint_locality(
    ckpt_path: str | Path,
    data: Any = None,
    split: Literal["val", "test"] = "val",
    max_images: int | None = None,
    accelerator: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    run: Run | None = None,
) -> dict[str, Any]:
    """The content of ``locality.json`` (without pictures): the run's identity and, under
    ``layers``, every ConvNN layer's statistics over ``max_images`` images of ``split``
    (all with ``None``); ``run`` as in :func:`~lightning_modules.evaluation.evaluate`."""
    model, net, dm, spec = _prepare(
        ckpt_path, data, max_images, accelerator, batch_size, num_workers, run
    )
    return _measure(ckpt_path, model, net, dm, spec, split, max_images)


@torch.no_grad()
def inspect(
    ckpt_path: str | Path,
    out: str | Path,
    data: Any = None,
    split: Literal["val", "test"] = "val",
    images: int = 4,
    queries: str = "auto",
    max_images: int | None = None,
    accelerator: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """Write ``locality.json``, ``neighbors_<i>.png`` (the first ``images`` images of
    ``split``, at the ``queries`` points) and ``locality_depth.png`` into ``out``; returns
    the ``locality.json`` content (with ``pictures``: the files written)."""
    check_int("--images", images, 0)
    out = Path(out)
    check_writable(out, "--out directory")
    model, net, dm, spec = _prepare(
        ckpt_path, data, max_images, accelerator, batch_size, num_workers
    )
    points = parse_queries(queries, dm.image_size)
    results = _measure(ckpt_path, model, net, dm, spec, split, max_images)
    results["queries"] = [[round(y * dm.image_size - 0.5), round(x * dm.image_size - 0.5)]
                          for y, x in points]  # fmt: skip
    pictures = []
    if results["layers"] and images:
        batch = torch.cat(list(_batches(dm, split, images, next(net.parameters()).device)))
        shown = unnormalize(batch, dm.mean, dm.std)
        with record_selection(net) as record:
            net(batch)
        for i in range(len(batch)):
            title = f"{results['model']}, {split} image {i}: query outlined, neighbors lit"
            path = out / f"neighbors_{i}.png"
            picture = image_picture(record, i, shown[i], points, title)
            atomic_write(path, lambda f, p=picture: save_png(p, f))
            pictures.append(str(path))
    if results["layers"]:
        path = out / "locality_depth.png"
        atomic_write(path, lambda f: depth_plot(results["layers"], f, results["model"]))
        pictures.append(str(path))
    results["pictures"] = pictures
    atomic_write_json(out / "locality.json", results)
    return results
