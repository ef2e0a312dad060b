"""A grid cell's evaluation: its checkpoint's metrics and ``locality.json``.

``convnn-ablate`` evaluates every finished cell (:func:`evaluate_cell`). A one-process cell
asks its own ``convnn fit`` to do it right after training (:data:`EVALUATE_ENV` names the
JSON file to write), so that the second import of torch, Lightning and timm that an
evaluation process would cost is saved (the checkpoint is still read back from its file and
the data built again, as any evaluation of it does); the runner uses that file when it is of
the cell's newest ``last.ckpt`` and evaluates itself otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch

from .evaluation import Run, evaluate, load_run
from .files import EVALUATE_ENV, atomic_write_json
from .locality import checkpoint_locality

__all__ = [
    "EVALUATE_ENV",
    "LOCALITY_IMAGES",
    "evaluate_after_fit",
    "evaluate_cell",
    "write_locality",
]

LOCALITY_IMAGES = 1024
"""Validation images a cell's ``locality.json`` is measured over (at most)."""


def _accelerator() -> str:
    gpu = torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "x") != ""
    return "gpu" if gpu else "cpu"


def evaluate_cell(ckpt: Path) -> dict[str, Any]:
    """:func:`~lightning_modules.evaluation.evaluate`'s metrics of ``ckpt`` (on one GPU when
    the cell may use one), after writing the cell's ``locality.json`` (:func:`write_locality`);
    the checkpoint and the data are loaded once for both."""
    accelerator = _accelerator()
    run = load_run(ckpt, None, None, None)
    metrics = evaluate(ckpt, accelerator=accelerator, progress=False, run=run)
    write_locality(ckpt, accelerator, run)
    return metrics


def write_locality(ckpt: Path, accelerator: str = "cpu", run: Run | None = None) -> Path:
    """``locality.json`` of the cell whose ``version_<n>/checkpoints/`` holds ``ckpt``: the
    ConvNN layers' locality statistics over up to :data:`LOCALITY_IMAGES` validation images
    (``convnn inspect`` without pictures), for the report's locality columns. A failure is
    recorded in the file (``error``) and printed; it does not fail the trained cell.
    ``run``: the checkpoint already loaded (:func:`lightning_modules.evaluation.load_run`)."""
    path = Path(ckpt).parent.parent.parent / "locality.json"
    try:
        result = checkpoint_locality(
            ckpt, max_images=LOCALITY_IMAGES, accelerator=accelerator, run=run
        )
    except Exception as err:  # noqa: BLE001  (the cell's accuracy stands without it)
        print(f"locality of {ckpt}: {type(err).__name__}: {err}", file=sys.stderr)
        result = {"checkpoint": str(ckpt), "error": f"{type(err).__name__}: {err}", "layers": {}}
    atomic_write_json(path, result)
    return path


def evaluate_after_fit(trainer: L.Trainer) -> Path | None:
    """In a ``convnn fit`` that finished its training, with :data:`EVALUATE_ENV` set and one
    process: evaluate the ``last.ckpt`` it wrote into that file; returns the file (``None``
    when nothing was asked or there is no such checkpoint)."""
    target = os.environ.get(EVALUATE_ENV)
    if not target or trainer.world_size != 1:
        return None
    last = [
        Path(c.best_model_path)
        for c in trainer.checkpoint_callbacks
        if getattr(c, "filename", None) == "last" and c.best_model_path
    ]
    if not last or not last[0].is_file():
        return None
    metrics = evaluate_cell(last[0])
    atomic_write_json(Path(target), {**metrics, "evaluated": str(last[0].resolve())})
    return Path(target)
