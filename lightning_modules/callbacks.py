"""Callbacks the ``convnn`` command always adds: what a run prints and writes for the user.

* :class:`RunReport` (``fit``): the run directory at the start; the best and last checkpoints
  and the best value of the monitored metric at the end (of the whole run when resumed).
* :class:`EpochLog` (``fit``): one plain line per epoch with its metrics when no progress bar
  is shown or the output is not a terminal (a log file), e.g. ``epoch 3/30  train/acc1 86.1%
  train/loss 0.412  val/acc1 88.6%  val/loss 0.391  lr 3.20e-03  12.3s`` (one line). When
  the environment names a file in ``CONVNN_PROGRESS_FILE`` (the ablation runner does, for
  its live view), the same epoch, metrics and time are also written there as JSON, with
  ``history``: every epoch's metrics so far (the runner's convergence check), and as a
  table, one row per epoch, in ``metrics.csv`` beside it (across resumed attempts).
* :class:`PredictionWriter` (``predict``): ``predictions.csv`` in the run directory (written
  atomically): the sample's index (and file, when the dataset lists files), its label when the
  batch carries one, and the top-5 classes with their probabilities.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint

from .files import PROGRESS_FILE_ENV, atomic_write_json, atomic_write_text
from .notes import report

__all__ = ["EpochLog", "PredictionWriter", "RunReport", "run_directory"]


def run_directory(trainer: L.Trainer) -> str | None:
    """The run's directory (the logger's version directory), without a collective call:
    ``trainer.log_dir`` broadcasts, which hangs when only rank zero asks."""
    logger = trainer.logger
    if logger is not None:
        directory = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
        if directory:
            return str(directory)
    return trainer.default_root_dir


def _number(name: str, value: float) -> str:
    """Accuracies in percent (one decimal, ``%``), other values with three significant digits."""
    if "acc" in name.rsplit("/", 1)[-1]:
        return f"{100 * value:.1f}%"
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _better(score: float, than: float, mode: str) -> bool:
    """Whether ``score`` beats ``than`` for a metric monitored in ``mode`` (``max``/``min``)."""
    return score < than if mode == "min" else score > than


class RunReport(L.Callback):
    """Print where a ``fit`` run goes and, at its end, what it left there: for a resumed run
    the best checkpoint of the whole run, before the resume included."""

    def __init__(self) -> None:
        self.directory: str | None = None
        self.resumed_best: dict[str, tuple[float, str]] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # before the model summary and data loading: the first thing a run says
        if stage != "fit" or trainer.fast_dev_run or not trainer.is_global_zero:
            return
        self.directory = run_directory(trainer)
        report(f"run directory {self.directory}", "fit")

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """The resumed checkpoint's best score and file per monitored metric, from its
        checkpoint callbacks' states: a run resumed into a new version directory starts
        its callback's best afresh (Lightning keeps no scores across directories)."""
        for state in (checkpoint.get("callbacks") or {}).values():
            if isinstance(state, dict) and state.get("monitor"):
                score, path = state.get("best_model_score"), state.get("best_model_path")
                if score is not None and path:
                    self.resumed_best[state["monitor"]] = (float(score), str(path))

    def best(self, callback: ModelCheckpoint) -> tuple[float | None, str]:
        """``(score, path)`` of the best checkpoint of ``callback``'s metric over the whole
        run: the resumed checkpoint's best (path marked) when no epoch since beat it."""
        score = None if callback.best_model_score is None else float(callback.best_model_score)
        earlier = self.resumed_best.get(str(callback.monitor))
        if earlier is not None and (score is None or _better(earlier[0], score, callback.mode)):
            return earlier[0], f"{earlier[1]} (saved before the resume)"
        return score, callback.best_model_path

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run or not trainer.is_global_zero:
            return
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint):
                continue
            if callback.monitor and callback.best_model_path:
                score, path = self.best(callback)
                value = "" if score is None else f" {_number(callback.monitor, score)}"
                report(f"best {callback.monitor}{value}: {path}", "fit")
            elif callback.last_model_path or callback.best_model_path:
                path = callback.last_model_path or callback.best_model_path
                report(f"last checkpoint: {path}", "fit")


class EpochLog(L.Callback):
    """One line per training epoch: epoch number, the epoch's train and val metrics, the
    learning rate at the end of the epoch and the epoch's wall time.

    Args:
        always: print even when a progress bar draws on a terminal (by default the lines
            are for logs: no progress bar, or output that is not a terminal).
    """

    def __init__(self, always: bool = False) -> None:
        self.always = always
        self._start = 0.0
        self._validated = False

    def _active(self, trainer: L.Trainer) -> bool:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return False
        bar = trainer.progress_bar_callback
        return self.always or bar is None or not sys.stdout.isatty()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run resumed mid-epoch starts no epoch: its first line times the epoch's rest
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._validated = False

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        progress_file = os.environ.get(PROGRESS_FILE_ENV)
        if progress_file and trainer.is_global_zero and not trainer.sanity_checking:
            epochs, epoch, metrics = (
                _epochs(trainer),
                trainer.current_epoch + 1,
                self.metrics(trainer),
            )
            progress = {
                "epoch": epoch,
                "max_epochs": int(epochs) if epochs.isdigit() else None,
                "metrics": metrics,
                "time": time.time(),
                "history": _history(Path(progress_file), epoch, metrics),
            }
            atomic_write_json(Path(progress_file), progress)
            write_metrics_csv(Path(progress_file).with_name("metrics.csv"), progress["history"])
        if self._active(trainer):
            print(self.line(trainer), flush=True)

    def metrics(self, trainer: L.Trainer) -> dict[str, float]:
        """The epoch's train and val metrics (val only after a validation this epoch)."""
        metrics = {k: v for k, v in trainer.callback_metrics.items() if "/" in k}
        values: dict[str, float] = {}
        for name, value in sorted(metrics.items()):
            split = name.split("/", 1)[0]
            if split not in ("train", "val") or (split == "val" and not self._validated):
                continue
            if name == "train/loss" and "train/loss_epoch" in metrics:
                continue  # the last step's loss; the epoch's mean follows
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                continue
            values[name.replace("train/loss_epoch", "train/loss")] = float(value)
        return values

    def line(self, trainer: L.Trainer) -> str:
        values = self.metrics(trainer)
        order = sorted(values, key=lambda n: (not n.startswith("train"), n))
        parts = [f"epoch {trainer.current_epoch + 1}/{_epochs(trainer)}"]
        parts += [f"{name} {_number(name, values[name])}" for name in order]
        if trainer.optimizers:  # the schedule's rate: with layer_decay, the head's (the highest)
            rate = max(group["lr"] for group in trainer.optimizers[0].param_groups)
            parts.append(f"lr {rate:.2e}")
        parts.append(f"{time.perf_counter() - self._start:.1f}s")
        return "  ".join(parts)


def _history(path: Path, epoch: int, metrics: dict[str, float]) -> list[dict[str, float]]:
    """Every finished epoch's metrics, ``[{"epoch": 1, "train/loss": 2.1, "val/acc1": 0.35,
    ...}, ...]`` (``val/*`` only for epochs that validated): the entries of the progress file
    before ``epoch`` (a resumed run keeps those of its earlier attempts) and this epoch's."""
    try:
        earlier = json.loads(path.read_text()).get("history") or []
    except (OSError, ValueError, AttributeError):
        earlier = []
    kept = [e for e in earlier if isinstance(e, dict) and int(e.get("epoch", epoch)) < epoch]
    return [*kept, {"epoch": epoch, **metrics}]


def write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    """``history`` (:func:`_history`) as a CSV table, one row per epoch, written atomically;
    a metric an epoch lacks is an empty cell."""
    names = sorted({k for entry in history for k in entry if k != "epoch"})
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, ["epoch", *names])
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, text.getvalue())


def _epochs(trainer: L.Trainer) -> str:
    epochs = trainer.max_epochs
    return "?" if epochs is None or epochs < 0 or math.isinf(epochs) else str(epochs)


def _files(dataset: Any) -> list[str] | None:
    """The file of every sample of an image-folder dataset (``samples``: ``(path, label)``)."""
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, (list, tuple)) and samples and isinstance(samples[0], (list, tuple)):
        return [str(s[0]) for s in samples]
    return None


class PredictionWriter(BasePredictionWriter):
    """``predictions.csv`` in the run directory: one row per predicted sample.

    Columns: ``index`` (the sample's position in the predict dataset), ``file`` (when the
    dataset lists its files), ``label`` (when batches carry labels), then ``class_1``,
    ``prob_1``, ..., ``class_5``, ``prob_5``: the five most probable classes (fewer with
    fewer classes) and their probabilities; ``class_1`` is the prediction. Under DDP the
    rows of every process are gathered and written by rank zero, sorted by index.
    """

    def __init__(self, filename: str = "predictions.csv", top_k: int = 5) -> None:
        super().__init__(write_interval="batch")
        self.filename = filename
        self.top_k = top_k
        self.rows: list[tuple[int, int | None, list[int], list[float]]] = []
        self.path: Path | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        probs = prediction.detach().float().cpu()  # (B, num_classes)
        k = min(self.top_k, probs.shape[-1])
        top = probs.topk(k, dim=-1)
        labels = None
        if isinstance(batch, (list, tuple)) and len(batch) > 1 and torch.is_tensor(batch[1]):
            labels = batch[1].cpu().tolist()
        if batch_indices is None:  # no index tracking: one process, batches in order
            batch_indices = range(len(self.rows), len(self.rows) + len(probs))
        for i, index in enumerate(batch_indices):
            label = labels[i] if labels is not None else None
            self.rows.append((int(index), label, top.indices[i].tolist(), top.values[i].tolist()))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = self.rows
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, rows)
            rows = [row for part in gathered for row in part]
        if not trainer.is_global_zero:
            return
        rows = sorted({row[0]: row for row in rows}.values())  # DDP padding repeats samples
        directory = Path(run_directory(trainer) or ".")
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / self.filename
        atomic_write_text(self.path, self._csv(trainer, rows))
        report(f"wrote {len(rows)} predictions to {self.path}", "predict")

    def _csv(self, trainer: L.Trainer, rows: list[Any]) -> str:
        loaders = trainer.predict_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        files = _files(getattr(loader, "dataset", None))
        k = max((len(row[2]) for row in rows), default=self.top_k)
        has_labels = any(row[1] is not None for row in rows)
        header = ["index"] + (["file"] if files else []) + (["label"] if has_labels else [])
        for j in range(1, k + 1):
            header += [f"class_{j}", f"prob_{j}"]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for index, label, classes, probs in rows:
            row: list[Any] = [index]
            if files:
                row.append(files[index] if index < len(files) else "")
            if has_labels:
                row.append("" if label is None else label)
            for c, p in zip(classes, probs, strict=True):
                row += [c, f"{p:.6f}"]
            writer.writerow(row)
        return out.getvalue()
