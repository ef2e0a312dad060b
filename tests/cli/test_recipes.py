"""Every shipped recipe through its own data pipeline, on small files in the real formats.

``tests/cli/test_configs.py`` runs every config with its data swapped for a tiny synthetic set.
Here each config keeps its own DataModule class and transform arguments and reads files the
tests write in the real on-disk formats (JPEG/PNG folders in ImageNet's layout, CIFAR's
pickled batches; the quickstart's digits ship with scikit-learn): thousands of augmented
samples through each distinct data pipeline with zero failures (timm's RandAugment used to
crash on about 1 image in 660 with ``rand-m9-mstd0.5-inc1``), one training step of every
config (each base config here; the experiment files, which keep their base's data, are
``long``), and a transform that fails inside a real run (one line naming the file and the
transform, or skipped with a counted warning). CPU only, no network.
"""

from __future__ import annotations

import importlib
import os
import pickle
import random
import re
import sys
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
import yaml
from PIL import Image
from test_configs import CONFIGS, CPU, cases, config_args

from datamodules import folder
from lightning_modules.cli import ConvNNCLI, main

IMAGENET_CLASSES = ["n01440764", "n01443537", "n01484850"]
ODD_IMAGE = f"train/{IMAGENET_CLASSES[0]}/{IMAGENET_CLASSES[0]}_3.JPEG"


# --- files in the real formats ------------------------------------------------------------


ODD_SIZE = (77, 11)  # the size of exactly one training image, ODD_IMAGE


def write_image_tree(root: Path, per_class: int = 4) -> Path:
    """``root/{train,val}/<wnid>/*``: small JPEGs and PNGs of varied sizes, shapes and modes
    (RGB, greyscale, RGBA, palette), as ImageNet-style folders hold; the last training image
    of the first class, ``ODD_IMAGE``, is the only one of size ``ODD_SIZE``."""
    rng = np.random.default_rng(0)
    shapes = [(40, 30), (13, 9), (64, 64), (9, 40), (120, 17)]
    for split in ("train", "val"):
        for c, wnid in enumerate(IMAGENET_CLASSES):
            (root / split / wnid).mkdir(parents=True)
            for i in range(per_class):
                width, height = shapes[(i + c) % len(shapes)]
                image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
                kind = (i + c) % 4
                if kind == 0:
                    image.save(root / split / wnid / f"{wnid}_{i}.JPEG", format="JPEG")
                elif kind == 1:
                    image.convert("L").save(root / split / wnid / f"{wnid}_{i}.JPEG", format="JPEG")
                elif kind == 2:
                    image.convert("RGBA").save(root / split / wnid / f"{wnid}_{i}.png")
                else:
                    image.convert("P").save(root / split / wnid / f"{wnid}_{i}.png")
    odd = root / ODD_IMAGE
    for path in odd.parent.glob(f"{odd.stem}.*"):
        path.unlink()
    Image.fromarray(rng.integers(0, 256, (ODD_SIZE[1], ODD_SIZE[0], 3), dtype=np.uint8)).save(odd)
    return root


def write_cifar_batches(root: Path, cls, num_classes: int, per_file: int = 6) -> Path:
    """torchvision's pickled CIFAR batches (``cls.base_folder``) with random pixels."""
    folder_ = root / cls.base_folder
    folder_.mkdir(parents=True)
    rng = np.random.default_rng(1)
    key = "labels" if num_classes == 10 else "fine_labels"
    for i, (name, _) in enumerate(cls.train_list + cls.test_list):
        labels = [(3 * j + i) % num_classes for j in range(per_file)]
        entry = {"batch_label": name, key: labels, "filenames": [f"{j}.png" for j in labels]}
        entry["data"] = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        if num_classes == 100:
            entry["coarse_labels"] = [label // 5 for label in labels]
        (folder_ / name).write_bytes(pickle.dumps(entry, protocol=2))
    names = [f"class_{c}" for c in range(num_classes)]
    (folder_ / cls.meta["filename"]).write_bytes(pickle.dumps({cls.meta["key"]: names}))
    return root


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory) -> dict[str, Path]:
    """One folder per dataset, written once for the module."""
    tmp = tmp_path_factory.mktemp("recipes")
    return {
        "datamodules.ImageNetDataModule": write_image_tree(tmp / "imagenet"),
        "datamodules.CIFAR10DataModule": write_cifar_batches(
            tmp / "cifar10", torchvision.datasets.CIFAR10, 10
        ),
        "datamodules.CIFAR100DataModule": write_cifar_batches(
            tmp / "cifar100", torchvision.datasets.CIFAR100, 100
        ),
    }


@pytest.fixture(autouse=True)
def _no_md5_and_plain_argv(monkeypatch):
    """torchvision checks the real files' MD5 sums; accept the written ones. The CLI reads
    ``sys.argv`` only when it is given no arguments."""
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda path, md5: os.path.isfile(path)
    )
    monkeypatch.setattr(sys, "argv", ["convnn"])


# --- the recipes' data pipelines ------------------------------------------------------------


def merge(base: dict, update: dict) -> dict:
    """``update`` over ``base`` key by key (nested mappings too), as ``-c`` files merge."""
    out = dict(base)
    for key, value in update.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge(out[key], value) if both else value
    return out


def data_section(files: list[str]) -> dict:
    """The ``data:`` section of config files applied in order."""
    data: dict = {}
    for name in files:
        data = merge(data, yaml.safe_load((CONFIGS / name).read_text()).get("data") or {})
    return data


CASES = [(case_id, files) for case_id, files, _ in cases()]


def pipelines() -> dict[str, dict]:
    """The distinct data pipelines of every config (experiment files add no ``data:``),
    keyed by the first config id that uses each."""
    out: dict[str, dict] = {}
    for case_id, files in CASES:
        data = data_section(files)
        if data not in out.values():
            out[case_id] = data
    return out


PIPELINES = pipelines()
DRAWS = {"ImageNetDataModule": 4000, "CIFAR10DataModule": 2000, "CIFAR100DataModule": 2000}


def test_every_recipe_pipeline_is_drawn_from() -> None:
    classes = sorted(data["class_path"] for data in PIPELINES.values())
    assert classes == [
        "datamodules.CIFAR100DataModule",
        "datamodules.CIFAR10DataModule",
        "datamodules.DigitsDataModule",
        "datamodules.ImageNetDataModule",
        "datamodules.ImageNetDataModule",
        "datamodules.MarkersDataModule",  # configs/spectrum.yaml
    ]
    policies = {data["init_args"].get("auto_augment") for data in PIPELINES.values()}
    assert {"rand-m9-mstd0.5-inc1", "rand-m7-mstd0.5-inc1"} <= policies


def build_datamodule(data: dict, roots: dict[str, Path], **overrides):
    module, name = data["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    init_args = dict(data["init_args"], num_workers=0, pin_memory=False)
    if data["class_path"] in roots:
        init_args["root"] = str(roots[data["class_path"]])
    return cls(**(init_args | overrides))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: threads only add overhead
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("recipe", list(PIPELINES))
def test_recipe_pipeline_draws_thousands_of_samples(recipe, data_roots) -> None:
    """Thousands of training samples through the recipe's own DataModule and transform
    arguments, with no failure, and the validation split once. ImageNet recipes draw at
    32x32 instead of 224x224 (7x faster; the augmentation ops and their random magnitudes
    are the same at any size)."""
    data = PIPELINES[recipe]
    name = data["class_path"].rsplit(".", 1)[1]
    small = {"image_size": 32} if name == "ImageNetDataModule" else {}
    dm = build_datamodule(data, data_roots, **small)
    train = dm.dataset("train")
    L.seed_everything(0, verbose=False)
    count = DRAWS.get(name, 3000)
    labels = set()
    for i in range(count):
        image, label = train[i % len(train)]
        labels.add(int(label))
    assert image.shape == (3, dm.image_size, dm.image_size) and image.dtype == torch.float32
    assert torch.isfinite(image).all() and len(labels) > 1
    val = dm.dataset("val")
    assert all(val[i][0].shape == image.shape for i in range(len(val)))
    if name == "ImageNetDataModule":
        assert train.skipped == 0 and "RandAugment" in repr(train.transform)


# --- one training step of every config with its own data ------------------------------------


def real_data(files: list[str], roots: dict[str, Path]) -> list[str]:
    """Overrides: the written folder as root, batch 2, no workers; the ImageNet networks
    shrunk (ResNet-50 one block per stage, ViT-B/16 one block) but fed the recipe's own
    224x224 pipeline; the authors' VGG-11 with a 16-wide head."""
    data = data_section(files)
    out = ["--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0"]
    if data["class_path"] in roots:
        out += ["--data.init_args.root", str(roots[data["class_path"]])]
    key = "--model.init_args.model_kwargs."
    if "imagenet_resnet50.yaml" in files:
        out += [key + "layers", "[1, 1, 1, 1]"]
    if "imagenet_vit_b16.yaml" in files:
        out += [key + "depth", "1"]
    if any(name.startswith("cifar/vgg11_") for name in files):
        out += [key + "head_hidden_size", "16"]
    return out


STEP_CASES = [c for c in CASES if c[0] != "quickstart"]  # test_configs runs it on its digits


def test_every_config_steps_on_its_own_data() -> None:
    """Every config is stepped; an experiment file (configs/cifar/, configs/imagenet/) keeps
    its base file's data pipeline exactly, so stepping each base (here) covers every data
    pipeline and the experiments' steps (``long``) add only their models, which
    tests/cli/test_configs.py steps too."""
    covered = {name for _, files in STEP_CASES for name in files} | {"quickstart.yaml"}
    assert covered == {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")}
    for _, files in STEP_CASES:
        assert data_section(files) == data_section(files[:1])


@pytest.mark.parametrize(
    "files",
    [
        pytest.param(files, id=case_id, marks=[pytest.mark.extra] if len(files) > 1 else [])
        for case_id, files in STEP_CASES
    ],
)
def test_config_steps_on_real_files(files, data_roots, tmp_path) -> None:
    logger = ["--trainer.logger.init_args.save_dir", str(tmp_path)]
    logger += ["--trainer.default_root_dir", str(tmp_path)]
    args = ["fit", *config_args(files), *CPU, *logger, "--trainer.fast_dev_run", "1"]
    cli = ConvNNCLI(args=[*args, *real_data(files, data_roots)])
    assert type(cli.datamodule).__name__ == data_section(files)["class_path"].rsplit(".")[-1]
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss_epoch"]) and "val/acc1" in metrics


# --- a transform that fails inside a run ---------------------------------------------------


class FailOnSize:
    """A transform step that raises on images of ``ODD_SIZE`` (a stand-in for any op that
    breaks on one image out of many)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        if image.size == ODD_SIZE:
            raise ValueError(f"cannot handle a {image.size} image")
        return image


def fit_args(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    """The quickstart on the written folder: one step on one batch of all 12 training
    images (so the failing one is in it) and one validation step."""
    args = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), *CPU]
    args += ["--trainer.logger.init_args.save_dir", str(tmp_path)]
    args += ["--trainer.default_root_dir", str(tmp_path), "--trainer.fast_dev_run", "1"]
    args += ["--data", "datamodules.ImageNetDataModule", "--data.root", str(root)]
    return args + ["--data.image_size", "16", "--data.batch_size", "12", *extra]


@pytest.fixture
def failing_transform(monkeypatch, data_roots) -> Path:
    """Every ImageNetDataModule transform starts with :class:`FailOnSize`, which raises on
    exactly one training image of the written tree, ``ODD_IMAGE``; returns its path."""
    make = folder.imagenet_transform

    def with_failing_step(train, **kwargs):
        transform = make(train, **kwargs)
        transform.transforms.insert(0, FailOnSize())
        return transform

    monkeypatch.setattr(folder, "imagenet_transform", with_failing_step)
    return data_roots["datamodules.ImageNetDataModule"] / ODD_IMAGE


@pytest.mark.parametrize("workers", [0, 2])
def test_failing_transform_stops_the_run_with_one_line(
    failing_transform, data_roots, tmp_path, workers
) -> None:
    root = data_roots["datamodules.ImageNetDataModule"]
    with pytest.raises(SystemExit) as exit_:
        main(fit_args(root, tmp_path, "--data.num_workers", str(workers)))
    message = str(exit_.value)
    assert "\n" not in message
    path = re.escape(str(failing_transform))
    assert re.fullmatch(
        rf"convnn: error: transform FailOnSize failed on image '{path}' \(ValueError: cannot "
        r"handle a \(77, 11\) image\); .*corrupt_images: skip",
        message,
    )


def test_failing_transform_is_skipped_with_a_counted_warning(
    failing_transform, data_roots, tmp_path
) -> None:
    root = data_roots["datamodules.ImageNetDataModule"]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        extra = ("--data.num_workers", "0", "--data.corrupt_images", "skip")
        cli = ConvNNCLI(args=fit_args(root, tmp_path, *extra))
    skipped = [str(w.message) for w in record if "skipped image" in str(w.message)]
    assert skipped == [
        f"skipped image '{failing_transform}': transform FailOnSize failed (ValueError: "
        f"cannot handle a (77, 11) image); 1 skipped so far in '{root / 'train'}'"
    ]
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss_epoch"])  # the run went on
    assert cli.datamodule.datasets["train"].skipped == 1


# --- the documented small-image recipe parses on the command line ---------------------------


def test_small_image_recipe_flags(data_roots, tmp_path) -> None:
    """docs/training.md's flags for small non-photographic images, through the CLI."""
    root = data_roots["datamodules.ImageNetDataModule"]
    args = ["--config", str(CONFIGS / "quickstart.yaml"), *CPU]
    args += ["--trainer.logger.init_args.save_dir", str(tmp_path)]
    args += ["--data", "datamodules.ImageNetDataModule", "--data.root", str(root)]
    args += ["--data.image_size", "16", "--data.scale", "[0.6, 1.0]", "--data.hflip", "0"]
    args += ["--data.color_jitter", "0", "--data.auto_augment", "null", "--data.re_prob", "0"]
    args += ["--data.crop_pct", "1"]
    dm = ConvNNCLI(args=args, run=False).datamodule
    steps = [type(t).__name__ for t in dm.transforms[True].transforms]
    assert steps == ["RandomResizedCropAndInterpolation", "MaybeToTensor", "Normalize"]
    assert dm.transforms[True].transforms[0].scale == (0.6, 1.0)
    assert tuple(dm.hparams["scale"]) == (0.6, 1.0) and dm.hparams["hflip"] == 0
    random.seed(0)
    assert dm.dataset("train")[0][0].shape == (3, 16, 16)
