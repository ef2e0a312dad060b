"""Reading checkpoints with torch alone (no Lightning, no timm): the ablation runner and the
report read their cells' checkpoints through this module without the training stack's
import time.

* :func:`load_checkpoint` reads with ``torch.load(weights_only=True)``: tensors, containers and
  plain values only, so no code stored in the file runs; anything else is a one-line
  :class:`CheckpointError`.
* :func:`checkpoint_info` says which checkpoint a loaded one is (epoch, best or last, the
  run's best), from the checkpoint callbacks' states saved in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from convnn.errors import CheckpointError, first_line

from .files import saved_by_torch

__all__ = ["MONITOR", "checkpoint_info", "load_checkpoint"]


def load_checkpoint(
    path: str | Path, map_location: Any = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """The checkpoint dict of a Lightning checkpoint, loaded with ``weights_only=True``
    (``mmap``: tensors stay in the file's pages, cheap for a look at keys and shapes).

    Raises :class:`CheckpointError` when ``path`` is missing, does not unpickle safely, or is
    not a dict with ``state_dict`` and ``hyper_parameters``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    zipped = saved_by_torch(path)
    try:  # torch memory-maps the zip format only
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and zipped)
    except Exception as err:  # noqa: BLE001  (any failure means: not a safe checkpoint)
        raise CheckpointError(
            f"{path} is not a checkpoint that loads safely (weights_only=True): {_reason(err)}"
        ) from err
    if not isinstance(ckpt, dict) or not {"state_dict", "hyper_parameters"} <= ckpt.keys():
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint of an ImageClassifier "
            "(no 'state_dict' and 'hyper_parameters')"
        )
    return ckpt


def _reason(err: BaseException) -> str:
    """Why ``torch.load`` failed, in one line, without PyTorch's advice to load the file
    with ``weights_only=False`` (which would run any code it holds)."""
    text = str(err)
    _, found, detail = text.partition("WeightsUnpickler error: ")
    if found:  # e.g. "Unsupported global: GLOBAL __main__.Payload was not an allowed global"
        return detail.strip().splitlines()[0].split(" by default.")[0].rstrip(".")
    return first_line(err)


MONITOR = "val/acc1"
"""The metric the ``convnn fit`` best checkpoint is chosen by (``checkpoint.monitor``)."""


def _score(value: Any) -> float | None:
    return None if value is None else float(value)


def checkpoint_info(ckpt: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Which checkpoint ``ckpt`` (loaded from ``path``) is, from the checkpoint callbacks'
    states saved in it: ``epoch`` (1-based: the epoch it was saved after; ``None`` when not
    recorded), ``global_step``, ``kind``: ``best`` (written by the callback monitoring
    :data:`MONITOR` as one of its best, ``val_top1`` its score in %), ``last`` (the last
    epoch's, written by an unmonitored or ``save_last`` callback) or ``unknown`` (saved by
    hand), and ``run_best``: the best checkpoint its run had written by then (``path``,
    ``top1`` in %, ``epoch`` when that file is still there). A run resumed into a new version
    directory starts its own best (Lightning keeps no scores across directories), so
    ``run_best`` covers the epochs since the resume; the ablation runner takes the best over
    every attempt of a cell."""
    path = Path(path)
    epoch = ckpt.get("epoch")
    info: dict[str, Any] = {
        "path": str(path),
        "epoch": None if epoch is None else int(epoch) + 1,
        "global_step": ckpt.get("global_step"),
        "kind": "unknown",
        "val_top1": None,
        "run_best": None,
    }
    states = [s for s in (ckpt.get("callbacks") or {}).values() if isinstance(s, dict)]

    def named(value: Any) -> bool:
        return bool(value) and Path(str(value)).name == path.name

    for state in states:
        if state.get("monitor") != MONITOR:
            continue
        mine = [v for k, v in (state.get("best_k_models") or {}).items() if named(k)]
        if mine:
            info["kind"], info["val_top1"] = "best", 100 * float(mine[0])
        best, score = state.get("best_model_path"), _score(state.get("best_model_score"))
        if best and info["run_best"] is None:
            info["run_best"] = {"path": str(best), "top1": None if score is None else 100 * score}
    for state in states:  # an unmonitored callback's file, or a save_last one
        unmonitored = state.get("monitor") is None and named(state.get("best_model_path"))
        if info["kind"] == "unknown" and (unmonitored or named(state.get("last_model_path"))):
            info["kind"] = "last"
    best = info["run_best"]
    if best is not None:
        if info["kind"] == "best" and Path(best["path"]).name == path.name:
            best["epoch"] = info["epoch"]
        else:  # the file where it was written, or beside this one (a copied run directory)
            for candidate in (Path(best["path"]), path.parent / Path(best["path"]).name):
                if candidate.is_file():
                    try:
                        other = load_checkpoint(candidate, mmap=True)
                    except CheckpointError:
                        continue
                    best["epoch"] = None if other.get("epoch") is None else other["epoch"] + 1
                    break
    return info
