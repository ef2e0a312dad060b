"""Running cells: one ``convnn fit`` process per cell in its own directory ``OUT/<cell_id>/``.

A cell directory holds ``cell.json`` (its values), ``config.yaml`` (the complete merged
config), ``version_<n>/`` (one per attempt: checkpoints, TensorBoard events), ``train.log``,
``status.json`` (running/failed/interrupted, rewritten), ``progress.json`` (the last
finished epoch and its metrics, rewritten by ``convnn fit``), ``evaluation.json`` and
``locality.json`` (the ``last.ckpt``'s metrics and locality, written by a one-process
``convnn fit`` after training, :mod:`lightning_modules.cell_evaluation`; else by the runner)
and, once finished, ``result.json`` (written atomically, never overwritten without
``rerun``). A restarted cell resumes from the newest ``last.ckpt``; ``status.json`` keeps
the ``versions`` its training went through, so that the result records the best epoch over
all of them (:func:`best_epoch`) beside the last.
``python -m ablations.runner CELL_DIR`` runs one cell; the local scheduler runs many, on CPU
(``parallel``) or on distinct GPUs (``gpus``, ``gpus_per_cell``).

Preemption: while a cell trains, ``SIGTERM``, ``SIGUSR1`` and ``SIGUSR2`` to the runner go
on to its ``convnn fit``, which writes ``last.ckpt`` at its next step and exits with
:data:`~lightning_modules.files.PREEMPTED` (:mod:`lightning_modules.preemption`); the runner
waits for it (at most :data:`PREEMPT_GRACE_S`, then kills it), records the cell as
``interrupted`` (resumable, not failed), then hands the signal to the handler it had set
aside (submitit's requeues the job) and returns ``PREEMPTED``. The local scheduler passes
such a signal on to its running cells the same way and starts no new one.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from convnn.errors import CheckpointError, GridError
from lightning_modules.files import (
    EVALUATE_ENV,
    PREEMPTED,
    PROGRESS_FILE_ENV,
    atomic_write_json,
    atomic_write_text,
)

from .grid import Cell, Grid, merged_config
from .staleness import describe, stale_cells

__all__ = [
    "GpuPool",
    "Scheduler",
    "best_epoch",
    "prepare_cells",
    "read_json",
    "read_state",
    "run_cell",
    "run_local",
]

BUSY = 75  # exit status of a cell already being run by another process
EVALUATION_FILE = "evaluation.json"  # the metrics the cell's convnn fit wrote after training

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
"""Signals passed on to the running ``convnn fit`` (SLURM's ``--signal``, submitit's USR2)."""
PREEMPT_GRACE_S = 120.0
"""Seconds a signalled ``convnn fit`` has to write its checkpoint and exit before it is killed."""
_received: list[int] = []  # the preemption signals this process passed on to a cell


class _PassOn:
    """While child processes run (``procs()``): a preemption signal to this process goes on
    to each of them instead of ending it (and, through ``_die_with_parent``, them), recorded
    in ``received``. A child started after the signal gets it at the next :meth:`pass_on`
    (the owner calls it as it polls). The replaced handlers are restored at the exit of the
    ``with``."""

    def __init__(self, procs: Callable[[], Iterable[Any]]) -> None:
        self.procs = procs
        self.received: int | None = None
        self.at = 0.0  # time.monotonic() of the first signal
        self.previous: dict[int, Any] = {}
        self._sent: set[int] = set()  # id() of the children that got it

    def __enter__(self) -> _PassOn:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in PREEMPTION_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received, self.at = signum, time.monotonic()
            _received.append(signum)
        self.pass_on()

    def pass_on(self) -> None:
        """Send the signal received (if any) to every running child that has not had it."""
        if self.received is None:
            return
        for proc in list(self.procs()):
            if id(proc) not in self._sent and proc.poll() is None:
                self._sent.add(id(proc))
                proc.send_signal(self.received)

    def wait(self, proc: subprocess.Popen, grace_s: float = PREEMPT_GRACE_S) -> int:
        """``proc``'s exit status; killed ``grace_s`` seconds after a signal if still running."""
        while True:
            try:
                return proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                self.pass_on()
                if self.received is not None and time.monotonic() - self.at > grace_s:
                    proc.kill()


def _hand_on(signum: int) -> None:
    """Call the handler that was set for ``signum`` before the runner passed it on (submitit's
    checkpoints and requeues the job, and exits); the default action is not taken (the
    runner returns :data:`PREEMPTED` instead of dying by the signal)."""
    handler = signal.getsignal(signum)
    if callable(handler):
        handler(signum, None)


def read_json(path: Path) -> Any:
    """The JSON content of ``path``, or ``None`` when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_state(cell_dir: Path) -> dict[str, Any]:
    """``result.json`` when the cell is done, else ``status.json``, else pending."""
    return (
        read_json(cell_dir / "result.json")
        or read_json(cell_dir / "status.json")
        or {"status": "pending"}
    )


def _die_with_parent() -> None:
    """Child side of ``Popen``: get SIGKILL when the parent dies (Linux), own process group."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def latest_checkpoint(cell_dir: Path) -> Path | None:
    """``last.ckpt`` of the newest attempt that wrote one."""
    versions = [p for p in cell_dir.glob("version_*") if p.name[8:].isdigit()]
    for version in sorted(versions, key=lambda p: int(p.name[8:]), reverse=True):
        ckpt = version / "checkpoints" / "last.ckpt"
        if ckpt.is_file():
            return ckpt
    return None


def _versions(cell_dir: Path) -> set[str]:
    return {p.name for p in cell_dir.glob("version_*") if p.name[8:].isdigit()}


def _lineage(cell_dir: Path, status: dict[str, Any], ckpt: Path | None) -> list[str]:
    """The version directories the training resumed from ``ckpt`` went through so far: none
    for a fresh start; else ``status.json``'s ``versions`` (written when an attempt starts and
    ends) and the one holding ``ckpt`` (an attempt killed before it ended); for a cell
    recorded before versions were kept, every version up to the one holding ``ckpt``."""
    if ckpt is None:
        return []
    own = ckpt.parent.parent.name
    if "versions" in status:
        return [*status["versions"], *([own] if own not in status["versions"] else [])]
    upto = int(own[8:])
    return sorted((v for v in _versions(cell_dir) if int(v[8:]) <= upto), key=lambda v: int(v[8:]))


def best_epoch(
    cell_dir: Path, versions: Iterable[str], last: dict[str, Any], last_top1: float | None
) -> dict[str, Any]:
    """The best epoch of a cell's training over every version directory in ``versions``
    (one per attempt; a resumed attempt starts its own best checkpoint, since Lightning keeps
    no scores across directories): ``best_top1`` (%), ``best_epoch`` (1-based),
    ``best_checkpoint``, ``best_source``. Scores are the ``val/acc1`` of the best checkpoints
    those attempts wrote (:func:`lightning_modules.checkpoint_files.checkpoint_info`, read
    with torch alone); the last epoch counts with ``last_top1``, its evaluation (``last``: the
    last checkpoint's info), which also stands for the best when the last epoch is the best,
    so best >= last. Ties: the earliest epoch. Without best checkpoints (no ``val/acc1``
    monitor) every field is ``None``."""
    from lightning_modules.checkpoint_files import checkpoint_info, load_checkpoint

    found = []
    for version in versions:
        for path in sorted((cell_dir / version / "checkpoints").glob("*.ckpt")):
            try:
                info = checkpoint_info(load_checkpoint(path, mmap=True), path)
            except CheckpointError:
                continue
            if info["kind"] == "best" and info["val_top1"] is not None and info["epoch"]:
                found.append((info["val_top1"], -info["epoch"], str(path)))
    best = max(found, default=None)
    last_epoch = last.get("epoch")
    if best is None:  # no per-epoch scores: the best epoch is unknown, not the last
        return {"best_top1": None, "best_epoch": None, "best_checkpoint": None, "best_source": None}
    if last_top1 is not None and (-best[1] == last_epoch or last_top1 > best[0]):
        return {"best_top1": last_top1, "best_epoch": last_epoch,
                "best_checkpoint": last["path"], "best_source": "last checkpoint"}  # fmt: skip
    return {"best_top1": best[0], "best_epoch": -best[1], "best_checkpoint": best[2],
            "best_source": "val/acc1 of the best checkpoint"}  # fmt: skip


def val_top1_by_epoch(cell_dir: Path) -> list[float] | None:
    """The cell's validation top-1 (%) of epoch 1, 2, ... from ``progress.json``'s
    ``history`` (:class:`lightning_modules.callbacks.EpochLog`); ``None`` when an epoch is
    missing (a cell trained before the history was kept, or one not validated every epoch)."""
    history = (read_json(cell_dir / "progress.json") or {}).get("history") or []
    values = {int(e["epoch"]): 100 * float(e["val/acc1"]) for e in history if "val/acc1" in e}
    if not values or sorted(values) != list(range(1, len(values) + 1)):
        return None
    return [values[e] for e in sorted(values)]


def prepare_cells(grid: Grid, cells: Iterable[Cell], out: Path, rerun: bool = False) -> list[Path]:
    """Write ``cell.json`` and ``config.yaml`` of every cell to (re)train; return the dirs.

    A finished or checkpointed cell whose stored config differs from the grid's merged one
    is never reused: without ``rerun`` it is a :class:`GridError` naming each such cell and
    its changed keys (before anything is written); with ``rerun`` it gets the new config."""
    planned = {out / cell.id: cell for cell in cells}
    configs = {d: merged_config(grid, cell, d.resolve()) for d, cell in planned.items()}
    stale = stale_cells(configs)
    if stale and not rerun:
        lines = [f"{name}: {describe(changes)}" for name, changes in stale.items()]
        raise GridError(
            f"{len(stale)} cells under {out} trained with another config than the grid's "
            f"now; rerun them with --rerun (their results are replaced) or restore the grid: "
            + "; ".join(lines)
        )
    for cell_dir, cell in planned.items():
        cell_dir.mkdir(parents=True, exist_ok=True)
        if rerun or not (cell_dir / "result.json").exists():
            info = {**cell.to_json(), "grid": grid.name, "axes": [a.name for a in grid.axes]}
            atomic_write_json(cell_dir / "cell.json", info)
            config = yaml.safe_dump(configs[cell_dir], sort_keys=False)
            atomic_write_text(cell_dir / "config.yaml", config)
    return list(planned)


def _fit_command(cell_dir: Path, ckpt: Path | None, extra: list[str]) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "lightning_modules.cli",
        "fit",
        "-c",
        str(cell_dir / "config.yaml"),
    ]
    cmd += extra
    if ckpt is not None:
        cmd += ["--ckpt_path", str(ckpt)]
    return cmd


def _without_slurm(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("SLURM_")}


@contextlib.contextmanager
def _slurm_hidden() -> Iterator[None]:
    """Hide ``SLURM_*`` from Lightning in this process for a while (submitit reads them
    again afterwards)."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("SLURM_")}
    try:
        yield
    finally:
        os.environ.update(saved)


def _fit_rank(cell_dir: Path, extra: list[str], rerun: bool, rank: int) -> int:
    """Rank ``rank > 0`` of a multi-task cell: ``convnn fit`` only, from the same checkpoint
    as rank 0, in the SLURM environment; rank 0 keeps the cell's files."""
    if (cell_dir / "result.json").exists() and not rerun:
        return 0
    ckpt = None if rerun else latest_checkpoint(cell_dir)
    return _fit(cell_dir, ckpt, extra, f"train.rank{rank}.log")


def _fit(
    cell_dir: Path,
    ckpt: Path | None,
    extra: list[str],
    log_name: str,
    env: dict[str, str] | None = None,
    header: str = "",
) -> int:
    """Run ``convnn fit`` for the cell (from ``ckpt``), appending its output to
    ``cell_dir / log_name`` after ``header``; returns its exit status, :data:`PREEMPTED` when
    a preemption signal was passed on to it (:class:`_PassOn`) and it did not finish."""
    with open(cell_dir / log_name, "a") as log:
        log.write(header)
        log.flush()
        procs: list[subprocess.Popen] = []
        with _PassOn(lambda: procs) as passing:
            proc = subprocess.Popen(
                _fit_command(cell_dir, ckpt, extra),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,
            )
            procs.append(proc)
            code = passing.wait(proc)
    if passing.received is not None and code != 0:
        return PREEMPTED  # stopped by the signal, whether it saved (PREEMPTED) or not yet
    return code


def run_cell(
    cell_dir: str | Path,
    extra_args: list[str] | None = None,
    rerun: bool = False,
    rank: int | None = None,
) -> int:
    """Train and evaluate one cell; returns 0 when it is done (now or before).

    ``rank``: ``None`` for a cell run by one process (which may start DDP processes of its
    own); the task's global rank when the cell is one of several tasks that SLURM started
    (``srun``, one per GPU, over ``trainer.num_nodes`` nodes): each rank runs ``convnn fit``
    in the SLURM environment that Lightning reads, and rank 0 alone locks, records and
    evaluates the cell."""
    cell_dir = Path(cell_dir)
    extra = list(extra_args or [])
    _received.clear()
    if rank:
        return _fit_rank(cell_dir, extra, rerun, rank)
    lock = open(cell_dir / ".lock", "w")  # noqa: SIM115  (held until the process exits)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return BUSY
    result_path = cell_dir / "result.json"
    if result_path.exists():
        if not rerun:
            return 0
        os.replace(result_path, cell_dir / f"result.{int(time.time())}.json")
    ckpt = None if rerun else latest_checkpoint(cell_dir)
    status = read_json(cell_dir / "status.json") or {}
    attempt = int(status.get("attempt", 0)) + 1
    versions, before = _lineage(cell_dir, status, ckpt), _versions(cell_dir)
    state = {"status": "running", "attempt": attempt, "resumed_from": ckpt, "pid": os.getpid()}
    state["versions"] = versions
    atomic_write_json(cell_dir / "status.json", {**status, **state, "started": time.time()})
    env = dict(os.environ)
    if rank is None and env.get("SUBMITIT_EXECUTOR") == "slurm":
        env = _without_slurm(env)  # one task: Lightning would expect srun-launched ranks
    env[PROGRESS_FILE_ENV] = str(cell_dir / "progress.json")
    (cell_dir / EVALUATION_FILE).unlink(missing_ok=True)
    if rank is None:  # one process trains: it evaluates too (lightning_modules.cell_evaluation)
        env[EVALUATE_ENV] = str(cell_dir / EVALUATION_FILE)
    start = time.time()
    header = f"\n=== attempt {attempt}, resume from {ckpt}\n"
    code = _fit(cell_dir, ckpt, extra, "train.log", env, header)
    elapsed = time.time() - start + float(status.get("elapsed_s", 0.0))
    versions += sorted(_versions(cell_dir) - before, key=lambda v: int(v[8:]))
    state["versions"] = versions  # this attempt's version directory too
    last = latest_checkpoint(cell_dir)
    if _received:  # preempted: resumes from the newest last.ckpt (none: from the start)
        interrupted = {**state, "status": "interrupted", "exit": code, "elapsed_s": elapsed}
        interrupted["signal"] = signal.Signals(_received[0]).name
        atomic_write_json(cell_dir / "status.json", {**interrupted, "resume_from": last})
        _hand_on(_received[0])
        return PREEMPTED
    if code != 0 or last is None:
        error = f"convnn fit exited with {code}" if code else "no last.ckpt written"
        failed = {**state, "status": "failed", "error": error, "elapsed_s": elapsed}
        atomic_write_json(cell_dir / "status.json", failed)
        return code or 1
    try:
        with _slurm_hidden():  # one process, also on rank 0 of a multi-task cell
            metrics = _metrics(cell_dir, last)
    except Exception as err:  # noqa: BLE001  (reported in status.json)
        failed = {**state, "status": "failed", "error": f"evaluate: {err}", "elapsed_s": elapsed}
        atomic_write_json(cell_dir / "status.json", failed)
        return 1
    cell = read_json(cell_dir / "cell.json") or {}
    info = metrics.get("checkpoint_info") or {"path": str(last), "epoch": None}
    result = {
        **cell,
        "status": "done",
        "attempts": attempt,
        "wall_time_s": elapsed,
        "finished": time.time(),
        **{k: metrics.get(k) for k in ("top1", "top5", "loss", "params", "gflops")},
        "last_epoch": info.get("epoch"),  # top1, top5 and loss are this epoch's (last.ckpt)
        **best_epoch(cell_dir, versions, info, metrics.get("top1")),
        "versions": versions,
        "val_top1_by_epoch": val_top1_by_epoch(cell_dir),
        "images_per_second": metrics.get("images_per_second"),  # median of timed repeats
        "throughput": metrics.get("throughput"),  # spread, repeats, load from other processes
        "checkpoint": str(last),
        "device": metrics.get("device"),
    }
    atomic_write_json(result_path, result)
    atomic_write_json(cell_dir / "status.json", {**state, "status": "done", "elapsed_s": elapsed})
    return 0


def _evaluate(ckpt: Path) -> dict[str, Any]:
    """The metrics of the cell's ``ckpt`` (and its ``locality.json``), in this process."""
    from lightning_modules.cell_evaluation import evaluate_cell

    return evaluate_cell(ckpt)


def _metrics(cell_dir: Path, last: Path) -> dict[str, Any]:
    """The metrics of the cell's newest ``last.ckpt``: those its ``convnn fit`` wrote after
    training (:data:`~lightning_modules.files.EVALUATE_ENV`) when they are of that file, else
    evaluated here."""
    done = read_json(cell_dir / EVALUATION_FILE) or {}
    if done.get("evaluated") == str(last.resolve()):
        return {k: v for k, v in done.items() if k != "evaluated"}
    return _evaluate(last)


# ---------------------------------------------------------------- local scheduling


class GpuPool:
    """Free GPU ids; a cell takes ``n`` of them at once or waits."""

    def __init__(self, gpus: list[str]) -> None:
        self.free = list(gpus)
        self.total = len(gpus)

    def acquire(self, n: int) -> list[str] | None:
        if n > self.total:
            raise GridError(f"--gpus-per-cell {n} but only {self.total} GPUs given (--gpus)")
        if len(self.free) < n:
            return None
        taken, self.free = self.free[:n], self.free[n:]
        return taken

    def release(self, gpus: list[str]) -> None:
        self.free.extend(gpus)


@dataclass
class Job:
    cell_dir: Path
    proc: Any = None
    gpus: list[str] = field(default_factory=list)
    code: int | None = None


Launch = Callable[[Path, dict[str, str]], Any]
"""``launch(cell_dir, env_updates)`` starts a cell and returns a ``Popen``-like object."""


class Scheduler:
    """Runs cells ``parallel`` at a time; with a GPU pool each gets its own devices."""

    def __init__(
        self,
        launch: Launch,
        parallel: int = 1,
        gpus: list[str] | None = None,
        gpus_per_cell: int = 1,
        threads_per_cell: int | None = None,
        on_change: Callable[[list[Job]], None] | None = None,
        poll_s: float = 0.2,
    ) -> None:
        self.launch = launch
        self.pool = GpuPool(gpus) if gpus else None
        self.gpus_per_cell = gpus_per_cell
        if self.pool is not None:
            if gpus_per_cell > self.pool.total:
                raise GridError(
                    f"--gpus-per-cell {gpus_per_cell} but only {self.pool.total} GPUs (--gpus)"
                )
            parallel = self.pool.total // gpus_per_cell
        self.parallel = parallel
        self.threads = threads_per_cell
        self.on_change = on_change or (lambda jobs: None)
        self.poll_s = poll_s

    def _env(self, gpus: list[str]) -> dict[str, str]:
        env = {}
        if self.pool is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        elif self.threads and "OMP_NUM_THREADS" not in os.environ:  # the user's setting wins
            env["OMP_NUM_THREADS"] = str(self.threads)
        return env

    def run(self, cell_dirs: list[Path]) -> list[Job]:
        jobs = [Job(d) for d in cell_dirs]
        pending = list(jobs)
        running: list[Job] = []
        self.on_change(jobs)
        with _PassOn(lambda: [job.proc for job in running]) as passing:
            self._loop(jobs, pending, running, passing)
        return jobs

    def _loop(self, jobs: list[Job], pending: list[Job], running: list[Job], passing: _PassOn):
        """Start and poll cells until all ended; after a preemption signal (passed on to the
        running cells) no pending cell starts."""
        while pending or running:
            if passing.received is not None:
                pending.clear()
                passing.pass_on()  # also to a cell started as the signal came
            while pending and len(running) < self.parallel and passing.received is None:
                gpus: list[str] = []
                if self.pool is not None:
                    gpus = self.pool.acquire(self.gpus_per_cell) or []
                    if not gpus:
                        break
                job = pending.pop(0)
                job.gpus = gpus
                job.proc = self.launch(job.cell_dir, self._env(gpus))
                running.append(job)
                self.on_change(jobs)
            time.sleep(self.poll_s)
            for job in list(running):
                code = job.proc.poll()
                if code is None:
                    continue
                job.code = code
                running.remove(job)
                if self.pool is not None:
                    self.pool.release(job.gpus)
            self.on_change(jobs)  # every poll: running cells report epochs in between


def popen_launcher(extra_args: list[str], rerun: bool = False, log_dir: Path | None = None):
    """A :data:`Launch` running ``python -m ablations.runner CELL_DIR`` in a child process."""

    def launch(cell_dir: Path, env_updates: dict[str, str]) -> subprocess.Popen:
        env = {**os.environ, **env_updates}
        cmd = [sys.executable, "-m", "ablations.runner", str(cell_dir)]
        cmd += ["--rerun"] * rerun + ["--", *extra_args]
        out = open(cell_dir / "driver.log", "a")  # noqa: SIM115  (owned by the child)
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )

    return launch


def gpu_args(gpus_per_cell: int) -> list[str]:
    """``convnn fit`` arguments for a cell on ``gpus_per_cell`` GPUs (DDP for more than one)."""
    args = ["--trainer.accelerator", "gpu", "--trainer.devices", str(gpus_per_cell)]
    if gpus_per_cell > 1:
        args += ["--trainer.strategy", "ddp"]
    return args


def run_local(
    cell_dirs: list[Path],
    parallel: int = 1,
    gpus: list[str] | None = None,
    gpus_per_cell: int = 1,
    rerun: bool = False,
    on_change: Callable[[list[Job]], None] | None = None,
) -> list[Job]:
    """Run unfinished cells (all with ``rerun``) with the local scheduler."""
    todo = [d for d in cell_dirs if rerun or not (d / "result.json").exists()]
    extra = gpu_args(gpus_per_cell) if gpus else []
    threads = max(1, (os.cpu_count() or 1) // max(1, parallel))
    scheduler = Scheduler(
        popen_launcher(extra, rerun),
        parallel=parallel,
        gpus=gpus,
        gpus_per_cell=gpus_per_cell,
        threads_per_cell=threads,
        on_change=on_change,
    )
    return scheduler.run(todo)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    sys.exit(run_cell(own[0], extra, rerun="--rerun" in own))


if __name__ == "__main__":
    main()
