"""``LocalityMonitor``: watch the ConvNN layers become local or global while a model trains.

Every ``every_n_epochs`` epochs (and after the first and the last), right after validation,
the evaluation network runs once on the first ``num_images`` validation images under
:func:`convnn.record_selection`; the run's loggers then get, at the current step,

* scalars ``locality/<layer>/<statistic>`` (``mean_distance``, ``window_fraction``,
  ``self_fraction``, ``prefix_fraction``, ``padding_fraction``, ``coverage``: see
  :mod:`convnn.inspection.locality_stats`), over those images, through every logger's
  ``log_metrics`` (TensorBoard, CSV, W&B, MLflow, ...);
* an image ``neighbors/<layer>`` per ConvNN layer: the first validation image at three
  query points (rows) for every head (columns), neighbors lit (``docs/inspection.md``), to
  the loggers that take images (TensorBoard's ``add_image``, a logger's ``log_image``).

It does nothing in ``fast_dev_run``, in the sanity check, without a logger,
on ranks other than zero, or for a model without ConvNN layers. The shipped configs turn
it on (``trainer.callbacks+``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger

from convnn.inspection import (
    LocalityCounter,
    count_selections,
    layer_picture,
    record_selection,
    unnormalize,
)
from convnn.models.size_check import CONVNN_LAYERS
from convnn.validation import check_int

__all__ = ["STATISTICS", "LocalityMonitor"]

STATISTICS = (
    "mean_distance",
    "window_fraction",
    "self_fraction",
    "prefix_fraction",
    "padding_fraction",
    "coverage",
)
"""The scalars logged per layer."""


class LocalityMonitor(L.Callback):
    """Log locality statistics and neighbor pictures of every ConvNN layer to TensorBoard.

    Args:
        every_n_epochs: log after every ``every_n_epochs``-th epoch (and after the first
            and the last one).
        num_images: validation images the statistics are taken over (the first ones).
        pictures: also log one neighbor picture per layer.
    """

    def __init__(self, every_n_epochs: int = 5, num_images: int = 32, pictures: bool = True):
        check_int("every_n_epochs", every_n_epochs, 1)
        check_int("num_images", num_images, 1)
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.pictures = pictures
        self.logged_steps: list[int] = []

    def _due(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch == trainer.max_epochs - 1
        return epoch == 0 or last or (epoch + 1) % self.every_n_epochs == 0

    def _images(self, trainer: L.Trainer) -> torch.Tensor | None:
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        dataset = getattr(loader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__len__") or len(dataset) == 0:
            return None
        count = min(self.num_images, len(dataset))
        return torch.stack([dataset[i][0] for i in range(count)])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or not trainer.is_global_zero:
            return
        net = getattr(pl_module, "eval_model", pl_module)
        if not trainer.loggers or not self._due(trainer):
            return
        if not any(isinstance(m, CONVNN_LAYERS) for m in net.modules()):
            return
        images = self._images(trainer)
        if images is None:
            return
        self.log_locality(trainer.loggers, net, images, trainer.datamodule, trainer.global_step)

    @torch.no_grad()
    def log_locality(
        self,
        loggers: TensorBoardLogger | Logger | Sequence[Logger],
        net: torch.nn.Module,
        images: torch.Tensor,
        data: Any,
        step: int,
    ) -> None:
        """Run ``net`` on ``images`` ``(B, C, H, W)`` and write the scalars and pictures at
        ``step`` to ``loggers`` (one or several); ``data`` (a DataModule or ``None``) gives
        the normalization to undo."""
        loggers = [loggers] if isinstance(loggers, Logger) else list(loggers)
        training = net.training
        net.eval()
        try:
            device = next(net.parameters()).device
            with record_selection(net) as record:
                net(images.to(device))
        finally:
            net.train(training)
        counters: dict[str, LocalityCounter] = {}
        count_selections(record, counters)
        mean, std = getattr(data, "mean", None), getattr(data, "std", None)
        shown = unnormalize(images[:1], mean, std)[0] if self.pictures else None  # in [0, 1]
        for name, counter in counters.items():
            summary = counter.summary()
            scalars = {f"locality/{name}/{key}": float(summary[key]) for key in STATISTICS
                       if summary[key] is not None}  # fmt: skip
            for logger in loggers:
                logger.log_metrics(scalars, step)
            if self.pictures and summary["map"][0] > 1:
                picture = np.asarray(layer_picture(record, name, 0, shown))  # type: ignore[arg-type]
                for logger in loggers:
                    _log_image(logger, f"neighbors/{name}", picture, step)
        for logger in loggers:
            logger.save()
        self.logged_steps.append(step)


def _log_image(logger: Logger, key: str, picture: np.ndarray, step: int) -> None:
    """``picture`` ``(H, W, 3)`` uint8 to ``logger`` if it takes images: TensorBoard's
    ``add_image``, or a ``log_image(key, images, step)`` method (W&B); others skip it."""
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(key, picture, step, dataformats="HWC")
    elif callable(getattr(logger, "log_image", None)):
        logger.log_image(key=key, images=[picture], step=step)
