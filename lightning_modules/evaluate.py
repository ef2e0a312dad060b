"""``convnn evaluate --ckpt PATH``: accuracy, loss, cost and throughput of a checkpoint.

The checkpoint is read with ``torch.load(weights_only=True)``, so no code stored in the
file runs; the model is rebuilt from the checkpoint's own hyper-parameters (its class
path must name a subclass of :class:`ImageClassifier` in an allowed package) and the
state dict must fit it exactly. Data: the run's DataModule (saved in the checkpoint's
``datamodule_hyper_parameters``) or ``--data``. Results: a rich table and a JSON file
(written atomically; its directory is checked for writing before the evaluation starts).
"""

from __future__ import annotations

import importlib
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import RichProgressBar
from rich.console import Console
from rich.table import Table

import convnn
from convnn.errors import cli_error, first_line, root_cause
from datamodules import DataError, ImageClassificationDataModule

from .checkpoint_io import check_state_dict, load_checkpoint
from .classifier import ImageClassifier
from .files import UsageError, atomic_write_json, check_writable

__all__ = ["EvaluationError", "evaluate", "main"]

TRUSTED_PACKAGES = ("lightning_modules", "datamodules")
"""Packages whose classes a checkpoint's class path may name (besides imported modules)."""


class EvaluationError(UsageError):
    """A checkpoint or data argument that cannot be evaluated; the message is one line."""


def _import_class(class_path: str, base: type, from_checkpoint: bool = True) -> type:
    """Import a class named by a checkpoint (only from trusted or already imported modules)
    or by the user (``from_checkpoint=False``) and check that it subclasses ``base``."""
    module_name, _, name = class_path.rpartition(".")
    trusted = module_name.split(".")[0] in TRUSTED_PACKAGES or module_name in sys.modules
    if from_checkpoint and not trusted:
        raise EvaluationError(
            f"class path {class_path!r} is outside {TRUSTED_PACKAGES} and not imported; refusing "
            "to import it from a checkpoint"
        )
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise EvaluationError(f"cannot import {class_path!r}: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise EvaluationError(f"{class_path!r} is not a {base.__name__}")
    return cls


def build_model(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> ImageClassifier:
    """Rebuild the LightningModule from the checkpoint's hyper-parameters and load its weights."""
    hparams = dict(ckpt["hyper_parameters"])
    hparams.pop("_instantiator", None)
    class_path = hparams.pop("_class_path", "lightning_modules.classifier.ImageClassifier")
    cls = _import_class(class_path, ImageClassifier)
    hparams["compile"] = False  # evaluation needs no compilation; the weights are the same
    hparams["model_kwargs"] = {**(hparams.get("model_kwargs") or {}), "pretrained": False}
    try:
        model = cls(**hparams)
    except (TypeError, ValueError, RuntimeError) as err:
        raise EvaluationError(f"{path}: cannot rebuild {class_path}: {err}") from err
    check_state_dict(model, ckpt["state_dict"], path)
    model.load_state_dict(ckpt["state_dict"])
    return model


def _data_spec(value: Any) -> dict[str, Any]:
    """``--data``: a YAML file (a run config with ``data:`` or a class_path mapping), a
    YAML/JSON mapping string, or a class name."""
    if isinstance(value, str) and Path(value).is_file():
        value = yaml.safe_load(Path(value).read_text())
    elif isinstance(value, str) and value.lstrip().startswith("{"):
        value = yaml.safe_load(value)
    if isinstance(value, str):
        value = {"class_path": value}
    if isinstance(value, dict) and "data" in value and "class_path" not in value:
        value = value["data"]
    if not isinstance(value, dict) or "class_path" not in value:
        raise EvaluationError(f"--data {value!r}: expected a class path, a mapping or a YAML file")
    return value


def _checkpoint_data_spec(ckpt: dict[str, Any], path: str | Path) -> dict[str, Any]:
    hparams = dict(ckpt.get("datamodule_hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    class_path = hparams.pop("_class_path", None) or ckpt.get("datamodule_class_path")
    if not class_path:
        raise EvaluationError(f"{path} does not record its DataModule; pass --data")
    return {"class_path": class_path, "init_args": hparams}


def build_datamodule(
    spec: dict[str, Any], from_checkpoint: bool = True, **overrides: Any
) -> ImageClassificationDataModule:
    """Instantiate a DataModule from ``{"class_path": ..., "init_args": {...}}``."""
    spec = {"class_path": spec["class_path"], "init_args": dict(spec.get("init_args") or {})}
    _import_class(spec["class_path"], ImageClassificationDataModule, from_checkpoint)
    spec["init_args"].update({k: v for k, v in overrides.items() if v is not None})
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(ImageClassificationDataModule, "data")
    try:
        cfg = parser.parse_object({"data": spec})
        return parser.instantiate_classes(cfg).data
    except Exception as err:  # noqa: BLE001  (jsonargparse and the class raise many kinds)
        reason = first_line(root_cause(err))
        raise EvaluationError(f"cannot build DataModule {spec['class_path']}: {reason}") from err


@torch.inference_mode()
def throughput(
    net: torch.nn.Module, shape: tuple[int, ...], device: torch.device, bf16: bool, steps: int = 5
) -> float:
    """Images per second of ``net`` on random inputs of ``shape`` (after 2 warm-up passes)."""
    x = torch.randn(shape, device=device)
    autocast = torch.autocast(device.type, torch.bfloat16) if bf16 else nullcontext()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with autocast:
        for _ in range(2):
            net(x)
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            net(x)
        sync()
    return steps * shape[0] / (time.perf_counter() - start)


def evaluate(
    ckpt_path: str | Path,
    data: Any = None,
    split: Literal["val", "test"] = "val",
    accelerator: str = "auto",
    precision: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a checkpoint; the returned dict is what ``convnn evaluate`` writes as JSON.

    ``top1``/``top5`` are percentages; ``loss`` the mean cross-entropy; ``gflops`` and
    ``params`` from :func:`convnn.profile` at the data's image size (batch 1);
    ``images_per_second`` of the network alone (no data loading) at the data's batch size.
    """
    ckpt = load_checkpoint(ckpt_path)
    model = build_model(ckpt, ckpt_path)
    spec = _data_spec(data) if data is not None else _checkpoint_data_spec(ckpt, ckpt_path)
    dm = build_datamodule(spec, data is None, batch_size=batch_size, num_workers=num_workers)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        callbacks=[RichProgressBar()] if progress else None,
    )
    run = trainer.validate if split == "val" else trainer.test
    metrics = run(model, datamodule=dm, verbose=False)[0]
    loader = trainer.val_dataloaders if split == "val" else trainer.test_dataloaders
    net = model.eval_model.eval()
    size = (dm.in_chans, dm.image_size, dm.image_size)
    cost = convnn.profile(net, size)
    bf16 = str(trainer.precision).startswith("bf16")
    batch = (getattr(loader, "batch_size", None) or 1, *size)
    return {
        "checkpoint": str(ckpt_path),
        "model": model.hparams.model,
        "model_kwargs": ckpt["hyper_parameters"].get("model_kwargs"),
        "data": spec["class_path"],
        "split": split,
        "num_images": len(loader.dataset) if hasattr(loader, "dataset") else None,
        "image_size": dm.image_size,
        "top1": 100 * float(metrics[f"{split}/acc1"]),
        "top5": 100 * float(metrics[f"{split}/acc5"]),
        "loss": float(metrics[f"{split}/loss"]),
        "params": cost.params,
        "gflops": cost.gflops,
        "images_per_second": throughput(net, batch, model.device, bf16),
        "throughput_batch_size": batch[0],
        "device": str(model.device),
        "precision": str(trainer.precision),
    }


def print_results(results: dict[str, Any], console: Console | None = None) -> None:
    table = Table(title=f"{results['model']} on {results['data'].rsplit('.', 1)[-1]}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("top-1 (%)", f"{results['top1']:.2f}"),
        ("top-5 (%)", f"{results['top5']:.2f}"),
        ("loss", f"{results['loss']:.4f}"),
        ("images", str(results["num_images"])),
        ("params", f"{results['params']:,}"),
        ("GFLOPs", f"{results['gflops']:.3f}"),
        ("images/s", f"{results['images_per_second']:.1f} ({results['device']})"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    (console or Console()).print(table)


def _parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="convnn evaluate",
        description="Evaluate a checkpoint: top-1/top-5, loss, params, GFLOPs, images/s.",
    )
    parser.add_argument("--ckpt", type=str, required=True, help="Lightning checkpoint (.ckpt).")
    parser.add_argument(
        "--data",
        type=str | None,
        default=None,
        help="DataModule: a YAML file (run config or class_path/init_args), a mapping, or a "
        "class path. Default: the run's DataModule saved in the checkpoint.",
    )
    parser.add_argument("--split", type=Literal["val", "test"], default="val")
    parser.add_argument("--out", type=str | None, default=None, help="JSON output path.")
    parser.add_argument("--accelerator", type=str, default="auto")
    parser.add_argument("--precision", type=str | None, default=None, help="e.g. bf16-mixed")
    parser.add_argument("--batch_size", type=int | None, default=None)
    parser.add_argument("--num_workers", type=int | None, default=None)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``convnn evaluate``; errors about the checkpoint or data exit with one line."""
    args = _parser().parse_args(argv)
    out = Path(args.out) if args.out else Path(args.ckpt).with_suffix(f".{args.split}.json")
    try:
        check_writable(out.parent, "--out directory")
        results = evaluate(
            args.ckpt,
            args.data,
            args.split,
            args.accelerator,
            args.precision,
            args.batch_size,
            args.num_workers,
        )
    except (UsageError, DataError) as err:
        raise cli_error("convnn evaluate", err, cause=False) from None
    atomic_write_json(out, results)
    console = Console()
    print_results(results, console)
    console.print(f"wrote {out}")
    return results
