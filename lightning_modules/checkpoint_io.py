"""Checkpoints that load without running code and save without ever corrupting the last one.

* :func:`load_checkpoint` (:mod:`lightning_modules.checkpoint_files`, torch alone) reads with
  ``torch.load(weights_only=True)``: tensors, containers and plain values only, so no code
  stored in the file runs; anything else is a one-line :class:`CheckpointError`.
* :func:`check_state_dict` compares a state dict with a model, key by key and shape by shape,
  and names what does not fit (a checkpoint of another model).
* :class:`SafeCheckpointIO` is Lightning's checkpoint plugin with both: ``convnn fit
  --ckpt_path`` resumes through it, and every save goes through :func:`atomic_write`
  (temporary file, ``fsync``, rename), so a full disk or a kill while saving leaves the
  previous ``last.ckpt`` intact.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from convnn.errors import CheckpointError

from .checkpoint_files import load_checkpoint
from .files import atomic_write

__all__ = ["SafeCheckpointIO", "check_state_dict", "load_checkpoint"]


def check_state_dict(model: nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly the keys and shapes of
    ``model.state_dict()``; the message counts missing, unexpected and reshaped entries."""
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(own.keys() & state.keys())
        if own[k].shape != state[k].shape
    ]
    if not (missing or unexpected or shapes):
        return
    problems = [
        f"{len(items)} {what} (e.g. {items[0]})"
        for what, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if items
    ]
    hparams = getattr(model, "hparams", {})
    name = hparams.get("model", type(model).__name__)
    raise CheckpointError(
        f"{path}: state dict does not fit the {name} model: " + "; ".join(problems)
    )


def _is_local(path: str | Path) -> bool:
    return "://" not in str(path)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO``: atomic local saves, ``weights_only`` loads.

    Remote paths (``s3://``, ...) keep Lightning's fsspec handling for saving; loading is
    ``weights_only=True`` everywhere.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(
        self,
        path: str | Path,
        map_location: Callable | Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if weights_only is False:
            raise CheckpointError(f"{path}: weights_only=False is refused (it can run code)")
        if not _is_local(path):
            return super().load_checkpoint(path, map_location, weights_only=True)
        return load_checkpoint(path, map_location)
