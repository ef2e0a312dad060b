"""Every config in configs/ is parsed and instantiated by the CLI and runs one step.

The data is swapped for tiny synthetic data where the real set is absent (CIFAR, ImageNet;
the quickstart's digits ship with scikit-learn) and the trainer for one CPU process in
float32; everything else (model, ConvNN options, optimizer, schedule, Mixup, EMA, loss)
is the config's own. The 224x224 ImageNet networks are also built at full size (checking
their parameter counts) but run their step shrunk: ResNet-50 with one block per stage on
128x128 images (the stride-32 map then still has more than r = 32 candidates), ViT-B/16
with one block at 224x224 (196 tokens, as in the real model). So does the authors' VGG-11
of the CIFAR experiments (``convnn_vgg11_mlp``), stepped with a 16-wide head.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from lightning_modules.cli import ConvNNCLI

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.num_nodes", "1"]
CPU += ["--trainer.strategy", "auto", "--trainer.precision", "32-true"]

RESNET50_PARAMS = 25_557_032  # docs/models.md, 1000 classes (branching keeps the count)
VIT_B16_PARAMS = 86_567_656
VGG11_MLP_PARAMS = 129_181_540  # the authors' VGG-11 at 100 classes (128,812,810 at 10)
# with the authors' branching layers (a 1x1 convolution after both branches, `mix`): 130,015,690
# at 10 classes, their recorded run's count
VGG11_MLP_BRANCHING_PARAMS = 130_384_420


def synthetic(num_classes: int, image_size: int) -> list[str]:
    args = {"num_classes": num_classes, "image_size": image_size, "num_train": 4, "num_val": 2}
    args |= {"batch_size": 2, "num_workers": 0}
    out = ["--data", "datamodules.SyntheticDataModule"]
    for key, value in args.items():
        out += [f"--data.init_args.{key}", str(value)]
    return out


def shrink(arch: str) -> list[str]:
    key = "--model.init_args.model_kwargs."
    if arch == "resnet50":
        return [key + "layers", "[1, 1, 1, 1]", *synthetic(10, 128)]
    return [key + "depth", "1", *synthetic(10, 224)]


def cases() -> list[tuple[str, list[str], list[str]]]:
    """``(id, config files, overrides)`` of every config, alone or on its complete default."""
    out = [("quickstart", ["quickstart.yaml"], [])]  # real digits: no download needed
    out.append(("spectrum", ["spectrum.yaml"], []))  # generated markers: nothing to download
    for dataset, classes in (("cifar10", 10), ("cifar100", 100)):
        out.append((dataset, [f"{dataset}.yaml"], synthetic(classes, 32)))
    for path in sorted((CONFIGS / "cifar").glob("*.yaml")):
        files = ["cifar10.yaml", f"cifar/{path.name}"]
        narrow = path.stem.startswith("vgg11_")  # the authors' head, 16 wide instead of 4096
        head = ["--model.init_args.model_kwargs.head_hidden_size", "16"] if narrow else []
        out.append((f"cifar10+{path.stem}", files, [*head, *synthetic(10, 32)]))
    for arch in ("resnet50", "vit_b16"):
        base = f"imagenet_{arch}.yaml"
        out.append((f"imagenet_{arch}", [base], shrink(arch)))
        for path in sorted((CONFIGS / "imagenet").glob(f"{arch}_*.yaml")):
            out.append((f"imagenet+{path.stem}", [base, f"imagenet/{path.name}"], shrink(arch)))
    return out


def full_size_cases() -> list[tuple[str, list[str], list[str], int | None]]:
    """Instantiate only: CIFAR-100 experiments, and the ImageNet rows at full size."""
    out = []
    for path in sorted((CONFIGS / "cifar").glob("*.yaml")):
        files = ["cifar100.yaml", f"cifar/{path.name}"]
        params = VGG11_MLP_PARAMS if path.stem.startswith("vgg11_") else None
        params = VGG11_MLP_BRANCHING_PARAMS if path.stem == "vgg11_branching" else params
        out.append((f"cifar100+{path.stem}", files, synthetic(100, 32), params))
    for arch, params in (("resnet50", RESNET50_PARAMS), ("vit_b16", VIT_B16_PARAMS)):
        for path in sorted((CONFIGS / "imagenet").glob(f"{arch}_*.yaml")):
            files = [f"imagenet_{arch}.yaml", f"imagenet/{path.name}"]
            out.append((f"imagenet+{path.stem}", files, synthetic(1000, 224), params))
    return out


def config_args(files: list[str]) -> list[str]:
    return [arg for name in files for arg in ("--config", str(CONFIGS / name))]


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["convnn"])


def test_every_config_is_covered():
    covered = {name for _, files, _ in cases() for name in files}
    covered |= {name for _, files, _, _ in full_size_cases() for name in files}
    found = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")}
    assert found == covered
    assert len(list((CONFIGS / "imagenet").glob("*.yaml"))) == 10  # docs/method.md §4 rows
    assert len(list((CONFIGS / "cifar").glob("*.yaml"))) == 9  # x CIFAR-10 and CIFAR-100


CASES = cases()
FULL_SIZE_CASES = full_size_cases()


@pytest.mark.parametrize(("files", "overrides"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_config_runs_one_step(files, overrides, tmp_path):
    logger = ["--trainer.logger.init_args.save_dir", str(tmp_path)]
    logger += ["--trainer.default_root_dir", str(tmp_path)]  # nothing lands in the cwd
    args = ["fit", *config_args(files), *CPU, *logger, "--trainer.fast_dev_run", "1", *overrides]
    cli = ConvNNCLI(args=args)
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss_epoch"]) and "val/acc1" in metrics


@pytest.mark.parametrize(
    ("files", "overrides", "params"),
    [c[1:] for c in FULL_SIZE_CASES],
    ids=[c[0] for c in FULL_SIZE_CASES],
)
def test_config_instantiates_at_full_size(files, overrides, params, tmp_path):
    logger = ["--trainer.logger.init_args.save_dir", str(tmp_path)]
    logger += ["--trainer.default_root_dir", str(tmp_path)]
    cli = ConvNNCLI(args=[*config_args(files), *CPU, *logger, *overrides], run=False)
    hparams = cli.model.hparams
    assert hparams.num_classes == cli.datamodule.num_classes
    if params is not None:
        assert sum(p.numel() for p in cli.model.model.parameters()) == params
    options = {k: v for k, v in hparams.model_kwargs.items() if k != "drop_path_rate"}
    layers = {type(m).__name__ for m in cli.model.model.modules()}
    if options.get("layer") == "convnn":
        assert layers & {"ConvNN2d", "ConvNNAttention"}
    if options.get("layer") == "branching":
        assert layers & {"BranchingConv2d", "BranchingAttention"}
