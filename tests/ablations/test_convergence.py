"""Whether a cell converged: the per-epoch history ``convnn fit`` keeps in the progress file
(across resumed attempts), the runner's ``val_top1_by_epoch`` and the report's ``converged``
column (a real grid walks the same path in tests/ablations/test_demo_results.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ablations.report import markdown, summarize
from ablations.runner import val_top1_by_epoch
from ablations.stats import converged
from lightning_modules.callbacks import EpochLog


def test_converged_is_the_last_three_epochs_within_one_point_of_the_best() -> None:
    assert converged([90.0, 95.0, 94.5, 95.0, 94.8]) is True  # last 3: 94.77 >= 95 - 1
    assert converged([50.0, 95.0, 94.0, 93.5, 94.0]) is False  # 93.83 < 94
    assert converged([80.0, 90.0, 94.0]) is False  # still rising: 88 < 93
    assert converged([94.0, 94.0, 93.0]) is True  # exactly 1 point below: 93.67 >= 93
    assert converged([97.0, 98.0]) is None  # fewer epochs than the window


def _epoch(log: EpochLog, epoch: int, acc: float | None) -> None:
    class Trainer:
        is_global_zero, sanity_checking, max_epochs = True, False, 6
        progress_bar_callback, optimizers = object(), []
        current_epoch = epoch - 1
        callback_metrics = {"train/loss_epoch": torch.tensor(1.0)}

    if acc is not None:
        Trainer.callback_metrics = {**Trainer.callback_metrics, "val/acc1": torch.tensor(acc)}
    log.on_train_epoch_start(Trainer(), None)
    if acc is not None:
        log.on_validation_epoch_end(Trainer(), None)
    log.on_train_epoch_end(Trainer(), None)


def test_history_survives_a_resume_and_drops_the_epochs_redone(tmp_path, monkeypatch) -> None:
    """Attempt 1 validates epochs 1-3 and dies; attempt 2 resumes at epoch 3 (from the last
    checkpoint of epoch 2): the epoch-3 entry is replaced, not duplicated."""
    cell = tmp_path / "cell"
    cell.mkdir()
    monkeypatch.setenv("CONVNN_PROGRESS_FILE", str(cell / "progress.json"))
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    first = EpochLog()
    for epoch, acc in [(1, 0.5), (2, 0.75), (3, 0.8)]:
        _epoch(first, epoch, acc)
    second = EpochLog()  # a new process
    for epoch, acc in [(3, 0.85), (4, 0.875)]:
        _epoch(second, epoch, acc)
    history = json.loads((cell / "progress.json").read_text())["history"]
    assert [e["epoch"] for e in history] == [1, 2, 3, 4]
    assert val_top1_by_epoch(cell) == pytest.approx([50.0, 75.0, 85.0, 87.5])


def test_an_epoch_without_validation_leaves_no_complete_history(tmp_path, monkeypatch) -> None:
    cell = tmp_path / "cell"
    cell.mkdir()
    monkeypatch.setenv("CONVNN_PROGRESS_FILE", str(cell / "progress.json"))
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    log = EpochLog()
    for epoch, acc in [(1, 0.5), (2, None), (3, 0.8)]:
        _epoch(log, epoch, acc)
    assert val_top1_by_epoch(cell) is None  # epoch 2 is unknown: no verdict from a gap
    assert val_top1_by_epoch(tmp_path / "missing") is None


def _cell(setting: str, seed: int, history: list[float] | None) -> dict:
    top1 = history[-1] if history else 90.0
    return {"setting": setting, "values": {"layer": setting}, "axes": ["layer"], "seed": seed,
            "status": "done", "top1": top1, "top5": 100.0, "baseline": setting == "a",
            "best_top1": max(history) if history else None, "best_epoch": None,
            "last_epoch": len(history or []), "val_top1_by_epoch": history}  # fmt: skip


def test_report_counts_the_converged_seeds(tmp_path: Path) -> None:
    cells = [
        _cell("a", 0, [80.0, 95.0, 95.0, 95.0]),
        _cell("a", 1, [70.0, 80.0, 90.0, 95.0]),  # still rising
        _cell("b", 0, [90.0, 96.0, 96.0, 96.0]),
        _cell("b", 1, None),  # trained before histories were kept
    ]
    axes, rows = summarize(cells)
    by = {r["setting"]: r for r in rows}
    assert (by["a"]["converged"], by["a"]["converged_of"]) == (1, 2)
    assert (by["b"]["converged"], by["b"]["converged_of"]) == (1, 1)
    text = markdown(axes, rows, {"grid": "g", "epochs": "4", "seeds": [0, 1]})
    head = next(line for line in text.splitlines() if line.startswith("| layer"))
    assert "converged" in head.split(" | ")
    rows_md = [line for line in text.splitlines() if line.startswith("| a ")]
    assert " 1/2 " in rows_md[0]
    assert "within 1 point of their best" in text
    assert "converged" not in markdown(*summarize([_cell("a", 0, None)]))
