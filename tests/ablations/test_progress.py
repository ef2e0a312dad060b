"""The live view of ``convnn-ablate run`` (ablations/progress.py) on cell directories written
as the runner and ``convnn fit`` write them, with a fake clock."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from ablations.progress import CellProgress, GridProgress, duration, estimate_left
from lightning_modules.callbacks import EpochLog


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write(cell: Path, name: str, data: dict) -> None:
    cell.mkdir(parents=True, exist_ok=True)
    (cell / name).write_text(json.dumps(data))


def printed(console: Console) -> list[str]:
    return console.export_text(clear=False).splitlines()


def cells_at(tmp_path: Path) -> list[Path]:
    """a: done in 100 s (top-1 50%); b: running since t=950, epoch 2 of 4; c, d: pending."""
    dirs = [tmp_path / name for name in "abcd"]
    write(dirs[0], "result.json", {"status": "done", "top1": 50.0, "wall_time_s": 100.0})
    write(dirs[1], "status.json", {"status": "running", "started": 950.0})
    write(dirs[1], "progress.json", {"epoch": 2, "max_epochs": 4, "metrics": {"val/acc1": 0.25}})
    for d in dirs[2:]:
        d.mkdir(exist_ok=True)
    return dirs


def test_estimate_left_shares_the_remaining_work_among_the_slots() -> None:
    cells = [
        CellProgress("a", "done", elapsed_s=100.0),
        CellProgress("b", "running", epoch=1, max_epochs=4, elapsed_s=25.0),  # 100 s in all
        CellProgress("c", "pending"),
        CellProgress("d", "pending"),
    ]
    assert estimate_left(cells, parallel=1) == pytest.approx(75 + 100 + 100)
    assert estimate_left(cells, parallel=2) == pytest.approx((75 + 200) / 2)
    assert estimate_left([CellProgress("c", "pending")], parallel=2) is None  # nothing measured
    assert [duration(s) for s in (None, 42, 185, 3725)] == ["?", "42s", "3m05s", "1h02m"]


def test_lines_when_not_a_terminal(tmp_path: Path) -> None:
    clock = Clock()
    dirs = cells_at(tmp_path)
    console = Console(record=True, force_terminal=False, width=200)
    with GridProgress(dirs, 2, console, live=False, clock=clock) as progress:
        progress.update(force=True)
        lines = printed(console)
        assert lines[0] == "a: done  top-1 50.0%  (1m40s)"
        assert lines[1] == "b: epoch 2/4  val/acc1 25.0%"
        # a: 100 s; b: 50 s of 100 s; c, d: 100 s each -> 250 s of work on 2 slots
        assert lines[2] == (
            "1 done, 1 running, 0 failed, 2 pending of 4 cells; elapsed 0s, about 2m05s left"
        )
        progress.update(force=True)  # nothing changed: nothing printed
        assert len(printed(console)) == 3
        clock.now += 30
        write(dirs[1], "progress.json", {"epoch": 3, "max_epochs": 4, "metrics": {}})
        write(dirs[2], "status.json", {"status": "running", "started": 1020.0})
        progress.update(force=True)
        new = printed(console)[3:]
        assert new == ["b: epoch 3/4", "c: started"]
        clock.now += 0.1  # within min_interval_s: not read again
        write(dirs[2], "status.json", {"status": "failed", "elapsed_s": 10.0})
        progress.update()
        assert len(printed(console)) == 5
    tail = printed(console)[5:]  # leaving the view forces a last update
    assert tail[0] == "c: failed  (10s)" and tail[1].startswith("1 done, 1 running, 1 failed")


def test_live_view_shows_counts_and_running_cells(tmp_path: Path) -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, color_system=None, width=120)
    with GridProgress(cells_at(tmp_path), 2, console, live=True, clock=Clock()) as progress:
        progress.update(force=True)
    text = screen.getvalue()
    assert "1 done, 1 running, 0 failed, 2 pending of 4 cells" in text
    rows = [line.replace("│", " ").split() for line in text.splitlines()]
    assert ["b", "running", "2/4", "25.0%", "50s"] in rows
    assert not any(row[:1] in (["a"], ["c"], ["d"]) for row in rows)  # only running/failed
    dirs = cells_at(tmp_path)
    write(dirs[1], "progress.json", {"epoch": 4, "max_epochs": 4, "metrics": {}})  # all done
    screen.truncate(0)
    with GridProgress(dirs, 2, console, live=True, clock=Clock()) as progress:
        progress.update(force=True)
    assert ["b", "evaluating", "4/4", "50s"] in [
        line.replace("│", " ").split() for line in screen.getvalue().splitlines()
    ]


def test_fit_writes_each_epoch_for_the_view(tmp_path: Path, monkeypatch) -> None:
    """``EpochLog`` writes ``CONVNN_PROGRESS_FILE`` after every epoch (checked through a
    one-epoch ``convnn fit`` in tests/ablations/test_ablations.py; here its content, directly)."""
    import torch

    target = tmp_path / "progress.json"
    monkeypatch.setenv("CONVNN_PROGRESS_FILE", str(target))

    class Trainer:
        is_global_zero, sanity_checking, current_epoch, max_epochs = True, False, 2, 10
        progress_bar_callback, optimizers = object(), []
        callback_metrics = {"val/acc1": torch.tensor(0.5), "train/loss_epoch": torch.tensor(1.0)}

    log = EpochLog()
    log.on_train_epoch_start(Trainer(), None)
    log.on_validation_epoch_end(Trainer(), None)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)  # a bar on a terminal: no line
    log.on_train_epoch_end(Trainer(), None)
    data = json.loads(target.read_text())
    assert data["epoch"] == 3 and data["max_epochs"] == 10
    assert data["metrics"] == {"val/acc1": 0.5, "train/loss": 1.0}
