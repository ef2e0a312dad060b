"""SLURM launcher: every unfinished cell one submitit job (job arrays per node count).

Resources come from the grid's ``slurm:`` mapping (submitit's ``AutoExecutor`` parameters
without the ``slurm_`` prefix where submitit has a generic name: ``timeout_min``,
``gpus_per_node``, ``cpus_per_task``, ``mem_gb``, ``slurm_partition``, ...). A preempted or
timed-out job is requeued by submitit (``checkpoint`` below) and resumes from the cell's
newest ``last.ckpt``: submitit's signal (``USR2``, ``slurm_signal_delay_s`` = 90 s before the
end) reaches the runner, which passes it on to the cell's ``convnn fit``; that writes
``last.ckpt`` at its next step and exits, and only then does the runner let submitit requeue
the job (:mod:`ablations.runner`), so a preemption costs minutes of training, not an epoch.

A cell whose config sets ``trainer.num_nodes: N`` (N > 1) runs on N nodes with one task per
GPU (``nodes=N``, ``tasks_per_node=gpus_per_node``, or the grid's ``tasks_per_node`` without
GPUs): every task runs ``convnn fit`` with ``--trainer.num_nodes N --trainer.devices
<tasks per node> --trainer.strategy ddp`` in the environment ``srun`` gives it, from which
Lightning's SLURM environment takes the ranks and the main node; task 0 keeps the cell's
files (:func:`~ablations.runner.run_cell`). Other cells are one task each, as before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from lightning_modules.files import PREEMPTED

from .runner import gpu_args, run_cell

__all__ = ["CellJob", "cell_nodes", "node_args", "submit"]


class CellJob:
    """A picklable cell run; submitit calls ``checkpoint`` on preemption to requeue it.

    ``ranks``: the cell is several SLURM tasks (``trainer.num_nodes > 1``); each task runs
    its rank, ``SLURM_PROCID``."""

    def __init__(
        self, cell_dir: str, extra_args: list[str], rerun: bool = False, ranks: bool = False
    ) -> None:
        self.cell_dir = cell_dir
        self.extra_args = extra_args
        self.rerun = rerun
        self.ranks = ranks

    def __call__(self) -> int:
        rank = int(os.environ["SLURM_PROCID"]) if self.ranks else None
        code = run_cell(self.cell_dir, self.extra_args, rerun=self.rerun, rank=rank)
        if code == PREEMPTED:  # not requeued by submitit (a SIGTERM): the next run resumes it
            raise RuntimeError(
                f"cell {self.cell_dir} was preempted; its last.ckpt is kept and it resumes "
                "when the job is requeued or the grid is run again"
            )
        if code != 0:
            log = "train.log" if not rank else f"train.rank{rank}.log"
            raise RuntimeError(f"cell {self.cell_dir} failed (exit {code}); see its {log}")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        job = CellJob(self.cell_dir, self.extra_args, ranks=self.ranks)  # resume, not rerun
        return submitit.helpers.DelayedSubmission(job)


def cell_nodes(cell_dir: Path) -> int:
    """``trainer.num_nodes`` of the cell's merged ``config.yaml`` (1 when unset)."""
    config = yaml.safe_load((cell_dir / "config.yaml").read_text()) or {}
    return int((config.get("trainer") or {}).get("num_nodes") or 1)


def node_args(nodes: int, tasks_per_node: int, gpu: bool) -> list[str]:
    """``convnn fit`` arguments of one task of a cell on ``nodes`` nodes."""
    accelerator = "gpu" if gpu else "cpu"
    return [
        *("--trainer.accelerator", accelerator, "--trainer.num_nodes", str(nodes)),
        *("--trainer.devices", str(tasks_per_node), "--trainer.strategy", "ddp"),
    ]


def submit(
    cell_dirs: list[Path],
    out: Path,
    slurm: dict[str, Any] | None = None,
    executor: Any = None,
    rerun: bool = False,
) -> list[Any]:
    """Submit the unfinished cells, one batch per node count; returns submitit's jobs.

    ``executor`` defaults to ``submitit.AutoExecutor`` (SLURM, or local without SLURM);
    tests pass ``submitit.LocalExecutor``.
    """
    params = dict(slurm or {})
    gpus = int(params.get("gpus_per_node", 0) or 0)
    tasks = int(params.pop("tasks_per_node", 0) or gpus or 1)  # of a multi-node cell
    if executor is None:
        import submitit

        executor = submitit.AutoExecutor(folder=out / ".submitit" / "%j", slurm_max_num_timeout=20)
        params.setdefault("timeout_min", 60 * 24)
        params.setdefault("slurm_array_parallelism", 64)
        params.setdefault("name", f"ablate-{out.name}")
        executor.update_parameters(**params)  # submitit rejects unknown keys by name
    todo = [d for d in cell_dirs if rerun or not (d / "result.json").exists()]
    by_nodes: dict[int, list[Path]] = {}
    for cell_dir in todo:
        by_nodes.setdefault(cell_nodes(cell_dir), []).append(cell_dir)
    jobs = []
    for nodes, dirs in sorted(by_nodes.items()):
        if nodes > 1:
            executor.update_parameters(nodes=nodes, tasks_per_node=tasks)
            extra = node_args(nodes, tasks, gpu=gpus > 0)
        else:
            executor.update_parameters(nodes=1, tasks_per_node=1)
            extra = gpu_args(gpus) if gpus else []
        with executor.batch():
            jobs += [executor.submit(CellJob(str(d), extra, rerun, nodes > 1)) for d in dirs]
    return jobs
