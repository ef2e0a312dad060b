"""SLURM launcher: every unfinished cell one task of a submitit job array.

Resources come from the grid's ``slurm:`` mapping (submitit's ``AutoExecutor`` parameters
without the ``slurm_`` prefix where submitit has a generic name: ``timeout_min``,
``gpus_per_node``, ``cpus_per_task``, ``mem_gb``, ``slurm_partition``, ...). A preempted or
timed-out task is requeued by submitit (``checkpoint`` below) and resumes from the cell's
newest ``last.ckpt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .runner import gpu_args, run_cell

__all__ = ["CellJob", "submit"]


class CellJob:
    """A picklable cell run; submitit calls ``checkpoint`` on preemption to requeue it."""

    def __init__(self, cell_dir: str, extra_args: list[str], rerun: bool = False) -> None:
        self.cell_dir = cell_dir
        self.extra_args = extra_args
        self.rerun = rerun

    def __call__(self) -> int:
        code = run_cell(self.cell_dir, self.extra_args, rerun=self.rerun)
        if code != 0:
            raise RuntimeError(f"cell {self.cell_dir} failed (exit {code}); see its train.log")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(CellJob(self.cell_dir, self.extra_args))


def submit(
    cell_dirs: list[Path],
    out: Path,
    slurm: dict[str, Any] | None = None,
    executor: Any = None,
    rerun: bool = False,
) -> list[Any]:
    """Submit the unfinished cells as one job array; returns submitit's jobs.

    ``executor`` defaults to ``submitit.AutoExecutor`` (SLURM, or local without SLURM);
    tests pass ``submitit.LocalExecutor``.
    """
    import submitit

    params = dict(slurm or {})
    gpus = int(params.get("gpus_per_node", 0) or 0)
    if executor is None:
        executor = submitit.AutoExecutor(folder=out / ".submitit" / "%j", slurm_max_num_timeout=20)
        params.setdefault("timeout_min", 60 * 24)
        params.setdefault("slurm_array_parallelism", 64)
        params.setdefault("name", f"ablate-{out.name}")
        executor.update_parameters(**params)  # submitit rejects unknown keys by name
    extra = gpu_args(gpus) if gpus else []
    todo = [d for d in cell_dirs if rerun or not (d / "result.json").exists()]
    if not todo:
        return []
    with executor.batch():
        jobs = [executor.submit(CellJob(str(d), extra, rerun)) for d in todo]
    return jobs
