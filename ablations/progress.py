"""What ``convnn-ablate run`` shows while a grid runs.

On a terminal, a live view (``rich``): cells done / running / failed / pending of the
total, the elapsed time and an estimate of the time left, and one row per running cell with
its epoch, latest ``val/acc1`` and elapsed time. Otherwise (a log file, a pipe) one line per
event: a cell starts, finishes an epoch, is done or fails.

A cell's epoch and metrics come from ``<cell>/progress.json``, which ``convnn fit`` writes
after every epoch (the runner sets ``CONVNN_PROGRESS_FILE``); its state from
``result.json`` / ``status.json`` (:func:`~ablations.runner.read_state`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table

from .runner import Job, read_json, read_state

__all__ = ["CellProgress", "GridProgress", "duration", "estimate_left"]

STYLE = {
    "pending": "dim",
    "running": "yellow",
    "done": "green",
    "failed": "red",
    "interrupted": "magenta",  # preempted: resumes from its last.ckpt on the next run
}


@dataclass
class CellProgress:
    """One cell as the view sees it."""

    name: str
    status: str  # pending | running | done | failed | interrupted
    epoch: int | None = None
    max_epochs: int | None = None
    val_acc1: float | None = None  # fraction in [0, 1]
    elapsed_s: float | None = None  # of this attempt (running) or of the cell (finished)

    @property
    def fraction(self) -> float | None:
        """Share of the cell's epochs finished, when known."""
        if self.epoch is None or not self.max_epochs:
            return None
        return min(1.0, self.epoch / self.max_epochs)


def read_cell(cell_dir: Path, now: float) -> CellProgress:
    """State, epoch and latest ``val/acc1`` of one cell directory."""
    state = read_state(cell_dir)
    status = state.get("status", "pending")
    progress = (read_json(cell_dir / "progress.json") or {}) if status != "pending" else {}
    acc = progress.get("metrics", {}).get("val/acc1")
    if status == "done":
        acc = state["top1"] / 100 if state.get("top1") is not None else acc
    if status == "running":
        elapsed = now - state["started"] if "started" in state else None
    else:
        elapsed = state.get("wall_time_s", state.get("elapsed_s"))
    return CellProgress(
        cell_dir.name, status, progress.get("epoch"), progress.get("max_epochs"), acc, elapsed
    )


def estimate_left(cells: list[CellProgress], parallel: int) -> float | None:
    """Seconds until the last cell ends: the remaining work of the running cells and the
    pending ones (each as long as the mean finished or extrapolated running cell), shared by
    ``parallel`` slots. ``None`` before any cell has a measured duration or epoch."""
    totals = [c.elapsed_s for c in cells if c.status == "done" and c.elapsed_s]
    running = [c for c in cells if c.status == "running"]
    for c in running:
        if c.fraction and c.elapsed_s:
            totals.append(c.elapsed_s / c.fraction)
    if not totals:
        return None
    per_cell = sum(totals) / len(totals)
    pending = sum(c.status == "pending" for c in cells)
    work = pending * per_cell
    for c in running:
        done = c.elapsed_s or 0.0
        total = done / c.fraction if c.fraction else per_cell
        work += max(0.0, total - done)
    slots = max(1, min(parallel, len(running) + pending))
    return work / slots


def duration(seconds: float | None) -> str:
    """``1h02m``, ``3m05s``, ``42s``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _acc(cell: CellProgress) -> str:
    return "" if cell.val_acc1 is None else f"{100 * cell.val_acc1:.1f}%"


def _epoch(cell: CellProgress) -> str:
    if cell.epoch is None:
        return "starting"
    return f"{cell.epoch}/{cell.max_epochs or '?'}"


class GridProgress:
    """Follows the cells of one ``run``; ``update(jobs)`` is the scheduler's callback.

    Args:
        cell_dirs: the cells to run, in order.
        parallel: cells at once (for the estimate of the time left).
        console: where to draw or print.
        live: draw a live view (a terminal) rather than print one line per event.
        clock: ``time.time`` (tests pass a fake clock).
        min_interval_s: the view is redrawn at most this often (the scheduler polls faster).
    """

    def __init__(
        self,
        cell_dirs: list[Path],
        parallel: int,
        console: Console,
        live: bool,
        clock: Callable[[], float] = time.time,
        min_interval_s: float = 0.5,
    ) -> None:
        self.cell_dirs = list(cell_dirs)
        self.parallel = parallel
        self.console = console
        self.live = live
        self.clock = clock
        self.start = clock()
        self.min_interval_s = min_interval_s
        self._last_draw = -float("inf")
        self._seen: dict[str, tuple[str, int | None]] = {}
        self._view: Any = None

    def cells(self) -> list[CellProgress]:
        now = self.clock()
        return [read_cell(d, now) for d in self.cell_dirs]

    def summary(self, cells: list[CellProgress]) -> str:
        counts = {s: sum(c.status == s for c in cells) for s in STYLE}
        elapsed = duration(self.clock() - self.start)
        left = duration(estimate_left(cells, self.parallel))
        return (
            f"{counts['done']} done, {counts['running']} running, {counts['failed']} failed, "
            f"{counts['pending']} pending of {len(cells)} cells; elapsed {elapsed}, "
            f"about {left} left"
        )

    def table(self, cells: list[CellProgress]) -> Group:
        """The live view: the summary line and the running (then failed) cells."""
        table = Table(show_edge=False)
        for column in ("cell", "status", "epoch", "val/acc1", "elapsed"):
            table.add_column(column)
        for cell in cells:
            if cell.status in ("running", "failed", "interrupted"):
                status = f"[{STYLE[cell.status]}]{cell.status}[/]"
                if cell.status == "running" and cell.fraction == 1:
                    status = f"[{STYLE['running']}]evaluating[/]"  # throughput, locality
                table.add_row(cell.name, status, _epoch(cell), _acc(cell), duration(cell.elapsed_s))
        return Group(self.summary(cells), table)

    def events(self, cells: list[CellProgress]) -> list[str]:
        """Lines for what changed since the last call (a start, an epoch, an end)."""
        lines, ended = [], False
        for cell in cells:
            key = (cell.status, cell.epoch)
            if self._seen.get(cell.name, ("pending", None)) == key:
                continue
            self._seen[cell.name] = key
            if cell.status == "running" and cell.epoch is None:
                lines.append(f"{cell.name}: started")
            elif cell.status == "running":
                acc = f"  val/acc1 {_acc(cell)}" if cell.val_acc1 is not None else ""
                lines.append(f"{cell.name}: epoch {_epoch(cell)}{acc}")
            elif cell.status in ("done", "failed", "interrupted"):
                acc = f"  top-1 {_acc(cell)}" if cell.val_acc1 is not None else ""
                lines.append(f"{cell.name}: {cell.status}{acc}  ({duration(cell.elapsed_s)})")
                ended = True
        if ended:  # the counts and the estimate after every finished cell
            lines.append(self.summary(cells))
        return lines

    def update(self, jobs: list[Job] | None = None, force: bool = False) -> None:
        """Redraw or print what changed; at most every ``min_interval_s`` unless ``force``."""
        now = self.clock()
        if not force and now - self._last_draw < self.min_interval_s:
            return
        self._last_draw = now
        cells = self.cells()
        if self.live and self._view is not None:
            self._view.update(self.table(cells))
        elif not self.live:
            for line in self.events(cells):
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def __enter__(self) -> GridProgress:
        if self.live:
            from rich.live import Live

            self._view = Live(self.table(self.cells()), console=self.console)
            self._view.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.update(force=True)
        if self._view is not None:
            self._view.__exit__(*exc)
            self._view = None
