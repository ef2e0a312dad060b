"""``convnn evaluate --ckpt PATH``: accuracy, loss, cost and throughput of a checkpoint, beside
the paper's numbers when the checkpoint's network is a published row (``lightning_modules.paper``).

The checkpoint is read with ``torch.load(weights_only=True)``, so no code stored in the
file runs; the model is rebuilt from the checkpoint's own hyper-parameters (its class
path must name a subclass of :class:`ImageClassifier` in an allowed package) and the
state dict must fit it exactly. Data: the run's DataModule (saved in the checkpoint's
``datamodule_hyper_parameters``) or ``--data``. Results: a rich table and a JSON file
(written atomically; its directory is checked for writing before the evaluation starts).
"""

from __future__ import annotations

import importlib
import math
import os
import statistics
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

import convnn
from convnn.errors import EvaluationError, first_line, root_cause
from datamodules import ImageClassificationDataModule

from .checkpoint_files import MONITOR, checkpoint_info, load_checkpoint
from .checkpoint_io import check_state_dict
from .classifier import ImageClassifier, check_input_size

__all__ = [
    "EvaluationError",
    "Run",
    "checkpoint_info",
    "evaluate",
    "load_run",
]

TRUSTED_PACKAGES = ("lightning_modules", "datamodules")
"""Packages whose classes a checkpoint's class path may name (besides imported modules)."""


SLACK_CPUS = 0.25
"""A throughput is "measured under load" when other processes kept busy more than the CPUs
its threads left free plus this many (``others_cpus > cpus - threads + SLACK_CPUS``)."""


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


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy on this process's CPUs (``/proc/stat``,
    Linux; ``None`` elsewhere)."""
    try:
        cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        busy = 0
        with open("/proc/stat") as stat:
            for line in stat:
                name, *ticks = line.split()
                if name in cpus:
                    values = [int(t) for t in ticks[:8]]
                    busy += sum(values) - values[3] - values[4]  # all but idle and iowait
        return busy / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


@torch.inference_mode()
def throughput(
    net: torch.nn.Module,
    shape: tuple[int, ...],
    device: torch.device,
    bf16: bool,
    repeats: int = 5,
    min_time_s: float = 0.2,
) -> dict[str, Any]:
    """Images per second of ``net`` on random inputs of ``shape``: after 2 warm-up passes,
    ``repeats`` timed repeats of as many passes as fill ``min_time_s``; their median.

    Also returned: the slowest and fastest repeat and, on the CPU (Linux), ``others_cpus``:
    how many of this process's CPUs other processes kept busy on average during the repeats
    (``/proc/stat`` minus this process), and ``under_load``: whether they took more than the
    CPUs that this process's threads left free (:data:`SLACK_CPUS` of slack)."""
    x = torch.randn(shape, device=device)
    autocast = torch.autocast(device.type, torch.bfloat16) if bf16 else nullcontext()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(passes: int) -> float:
        start = time.perf_counter()
        for _ in range(passes):
            net(x)
        sync()
        return time.perf_counter() - start

    with autocast:
        timed(2)
        passes, elapsed = 1, timed(1)
        while elapsed < min_time_s and passes < 4096:
            passes = min(4096, max(2 * passes, math.ceil(1.2 * passes * min_time_s / elapsed)))
            elapsed = timed(passes)
        busy, own, start = _busy_seconds(), _own_seconds(), time.perf_counter()
        rates = sorted(passes * shape[0] / timed(passes) for _ in range(max(1, repeats)))
        wall = time.perf_counter() - start
        busy_after, own_after = _busy_seconds(), _own_seconds()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = min(torch.get_num_threads(), cpus or 1) if device.type == "cpu" else None
    others = loaded = None
    if threads is not None and busy is not None and busy_after is not None:
        others = max(0.0, ((busy_after - busy) - (own_after - own)) / wall)
        loaded = others > cpus - threads + SLACK_CPUS
    return {
        "images_per_second": statistics.median(rates),
        "slowest": rates[0],
        "fastest": rates[-1],
        "repeats": len(rates),
        "passes": passes,
        "batch_size": shape[0],
        "threads": threads,
        "cpus": cpus,
        "others_cpus": others,
        "under_load": loaded,
    }


def measured_statistic(info: dict[str, Any]) -> str | None:
    """The :data:`lightning_modules.paper.STATISTICS` entry a checkpoint's top-1 is: ``best``
    for its run's best checkpoint or a last one saved at its run's best epoch, ``last`` for another
    last one, ``None`` when unknown (also a best checkpoint of ``save_top_k > 1`` that was
    not the best when saved)."""
    best_epoch = (info.get("run_best") or {}).get("epoch")
    if info["kind"] == "best":
        return "best" if best_epoch == info["epoch"] else None
    if info["kind"] == "last":
        return "best" if best_epoch == info["epoch"] else "last"
    return None


def describe_checkpoint(info: dict[str, Any]) -> str:
    """One line: the checkpoint's path, epoch and kind, and its run's best beside a last one,
    e.g. ``runs/x/last.ckpt: last checkpoint, epoch 30 (the run's best val/acc1: 88.61% at
    epoch 27, best-epoch026-acc1=0.8861.ckpt)``."""
    epoch = "epoch unknown" if info["epoch"] is None else f"epoch {info['epoch']}"
    kind = {"best": "best checkpoint", "last": "last checkpoint"}.get(
        info["kind"], "checkpoint saved outside the fit callbacks"
    )
    text = f"{info['path']}: {kind}, {epoch}"
    if info["kind"] == "best" and info["val_top1"] is not None:
        text += f" ({MONITOR} {info['val_top1']:.2f}% when saved)"
    best = info.get("run_best")
    if info["kind"] != "best" and best is not None:
        at = f" at epoch {best['epoch']}" if best.get("epoch") is not None else ""
        score = f": {best['top1']:.2f}%" if best.get("top1") is not None else ""
        same = " (this epoch)" if best.get("epoch") in (info["epoch"],) and at else ""
        text += f" (the run's best {MONITOR}{score}{at}{same}, {Path(best['path']).name})"
    return text


Run = tuple[dict[str, Any], ImageClassifier, ImageClassificationDataModule, dict[str, Any]]
"""What :func:`load_run` returns: ``(checkpoint, model, datamodule, data spec)``."""


def load_run(
    ckpt_path: str | Path, data: Any, batch_size: int | None, num_workers: int | None
) -> Run:
    """``(checkpoint, model, datamodule, data spec)`` of a run: the checkpoint's model and
    ``data`` (``None``: the run's own DataModule), their input sizes checked to agree."""
    ckpt = load_checkpoint(ckpt_path)
    model = build_model(ckpt, ckpt_path)
    spec = _data_spec(data) if data is not None else _checkpoint_data_spec(ckpt, ckpt_path)
    dm = build_datamodule(spec, data is None, batch_size=batch_size, num_workers=num_workers)
    check_input_size(model.hparams.model, model.image_size, dm.image_size, str(ckpt_path))
    return ckpt, model, dm, spec


def evaluate(
    ckpt_path: str | Path,
    data: Any = None,
    split: Literal["val", "test"] = "val",
    accelerator: str = "auto",
    precision: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    run: Run | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint; the returned dict is what ``convnn evaluate`` writes as JSON.

    ``run``: the checkpoint already loaded by :func:`load_run` (then ``data``,
    ``batch_size`` and ``num_workers`` are not read), so that a caller that also measures
    locality loads the checkpoint and the data once.

    ``top1``/``top5`` are percentages; ``loss`` the mean cross-entropy; ``gflops`` and
    ``params`` from :func:`convnn.profile` at the data's image size (batch 1);
    ``images_per_second`` of the network alone (no data loading) at the data's batch size,
    the median of timed repeats (``throughput``: their spread and the load from other
    processes, see :func:`throughput`); ``checkpoint_info``: which checkpoint this is (epoch,
    best or last, :func:`checkpoint_info`); ``paper``: the published row of this network and
    measured - paper when the checkpoint's epoch is the row's statistic
    (:func:`paper_comparison`).
    """
    ckpt, model, dm, spec = run or load_run(ckpt_path, data, batch_size, num_workers)
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
    speed = throughput(net, batch, model.device, bf16)
    top1 = 100 * float(metrics[f"{split}/acc1"])
    info = checkpoint_info(ckpt, ckpt_path)
    return {
        "checkpoint": str(ckpt_path),
        "checkpoint_info": info,
        "model": model.hparams.model,
        "model_kwargs": ckpt["hyper_parameters"].get("model_kwargs"),
        "data": spec["class_path"],
        "split": split,
        "num_images": len(loader.dataset) if hasattr(loader, "dataset") else None,
        "image_size": dm.image_size,
        "top1": top1,
        "top5": 100 * float(metrics[f"{split}/acc5"]),
        "loss": float(metrics[f"{split}/loss"]),
        "params": cost.params,
        "gflops": cost.gflops,
        "images_per_second": speed["images_per_second"],
        "throughput_batch_size": batch[0],
        "throughput": speed,
        "device": str(model.device),
        "precision": str(trainer.precision),
        "num_classes": dm.num_classes,
        "paper": paper_comparison(model, top1, spec["class_path"], dm.num_classes, info),
    }


def paper_comparison(
    model: ImageClassifier,
    top1: float,
    data: str,
    num_classes: int,
    info: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The published number of the model's method §4 row (``lightning_modules.paper``) beside the
    measured top-1 of the checkpoint ``info`` describes (:func:`checkpoint_info`): a
    difference only on the row's statistic (the best epoch); ``None`` when no row has this
    network."""
    from .paper import compare, find_row

    row = find_row(model.hparams.model, model.hparams.get("model_kwargs"))
    if row is None:
        return None
    statistic = None if info is None else measured_statistic(info)
    hint = ""
    best = (info or {}).get("run_best")
    if statistic != row.statistic and best is not None and row.statistic == "best":
        hint = f"; evaluate {best['path']} for the paper's statistic"
    return compare(row, top1, data, num_classes, statistic, hint)
