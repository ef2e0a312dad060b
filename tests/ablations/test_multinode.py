"""A grid cell over several nodes, on the CPU: ``trainer.num_nodes: 2`` submitted through the
SLURM launcher, its two tasks started as two local processes with the variables ``srun``
sets, reaches the metrics of the same cell as one process with 2-process DDP."""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import socket
import subprocess
import sys

import pytest
import torch
from test_ablations import ROOT, write_grid

from ablations.grid import load_grid
from ablations.runner import prepare_cells, read_state
from ablations.slurm import CellJob, node_args, submit

SET = {  # deterministic and small: no augmentation randomness across layouts
    "trainer.max_epochs": 1,
    "trainer.limit_train_batches": 3,
    "trainer.limit_val_batches": 2,
    "trainer.callbacks": [],
    "trainer.enable_model_summary": False,
    "trainer.precision": "32-true",
    "data": {
        "class_path": "datamodules.SyntheticDataModule",
        "init_args": {
            "num_classes": 4,
            "image_size": 16,
            "num_train": 48,
            "num_val": 16,
            "batch_size": 8,
            "num_workers": 0,
            "persistent_workers": False,
            "pin_memory": False,
        },
    },
}


class RecordingExecutor:
    """submitit's executor interface, recording what would go to SLURM."""

    def __init__(self) -> None:
        self.parameters: dict = {}
        self.submitted: list[tuple[dict, CellJob]] = []

    def update_parameters(self, **params) -> None:
        self.parameters.update(params)

    def batch(self):
        return contextlib.nullcontext()

    def submit(self, job: CellJob) -> CellJob:
        self.submitted.append((dict(self.parameters), job))
        return job


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports (held open together while chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def srun_env(rank: int, tasks: int, port: int) -> dict[str, str]:
    """What ``srun`` gives task ``rank`` of a job with ``tasks`` nodes x 1 task."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        SUBMITIT_EXECUTOR="slurm",
        SLURM_JOB_ID=str(random.randint(10_000, 99_999)),
        SLURM_JOB_NAME="ablate-cell",
        SLURM_NTASKS=str(tasks),
        SLURM_NNODES=str(tasks),
        SLURM_NTASKS_PER_NODE="1",
        SLURM_PROCID=str(rank),
        SLURM_NODEID=str(rank),
        SLURM_LOCALID="0",
        SLURM_NODELIST="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    return env


def test_shipped_four_node_grid_asks_slurm_for_one_task_per_gpu(tmp_path):
    grid = load_grid(ROOT / "ablations" / "grids" / "imagenet_vit_b16_4node.yaml")
    cells = prepare_cells(grid, grid.cells()[:2], tmp_path)
    executor = RecordingExecutor()
    submit(cells, tmp_path, grid.slurm, executor=executor)
    for params, job in executor.submitted:
        assert (params["nodes"], params["tasks_per_node"], job.ranks) == (4, 8, True)
        assert job.extra_args == node_args(4, 8, gpu=True)
        assert job.extra_args[job.extra_args.index("--trainer.devices") + 1] == "8"


def test_two_node_cell_matches_one_node_two_processes(tmp_path):
    """Two DDP trainings of a tiny model, side by side (about half a minute on 2 cores)."""
    axes = {"trainer.num_nodes": [1, 2]}
    grid = load_grid(write_grid(tmp_path, axes, set=SET))
    out = tmp_path / "out"
    one_node, two_nodes = prepare_cells(grid, grid.cells(), out)

    executor = RecordingExecutor()
    submit([one_node, two_nodes], out, {"gpus_per_node": 0}, executor=executor)
    (single_params, single), (multi_params, multi) = executor.submitted
    assert single_params | multi_params == single_params | {"nodes": 2, "tasks_per_node": 1}
    assert (single_params["nodes"], single.ranks, multi.ranks) == (1, False, True)
    assert multi.extra_args == node_args(2, 1, gpu=False)

    # the 2-node cell: the pickled job, run by two "srun" tasks; meanwhile (its own port, its
    # own cell directory) the same cell on one node: one process whose DDP starts the second
    job_file = tmp_path / "job.pkl"
    job_file.write_bytes(pickle.dumps(multi))
    code = f"import pickle; pickle.load(open({str(job_file)!r}, 'rb'))()"
    port, one_node_port = free_ports(2)
    tasks = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=srun_env(r, 2, port))
        for r in (0, 1)
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(one_node_port)}
    extra = ["--trainer.accelerator", "cpu", "--trainer.devices", "2"]
    cmd = [sys.executable, "-m", "ablations.runner", str(one_node), "--", *extra]
    cmd += ["--trainer.strategy", "ddp"]
    single_node = subprocess.Popen(cmd, cwd=ROOT, env=env)
    assert [t.wait(timeout=300) for t in tasks] == [0, 0]
    assert single_node.wait(timeout=300) == 0

    a, b = read_state(one_node), read_state(two_nodes)
    assert a["status"] == b["status"] == "done", (a, b)
    assert b["top1"] == pytest.approx(a["top1"], abs=1e-6)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    steps = [torch.load(s["checkpoint"], weights_only=False)["global_step"] for s in (a, b)]
    assert steps[0] == steps[1] > 0
    assert (two_nodes / "train.rank1.log").is_file() and not (one_node / "train.rank1.log").exists()
    for log in (one_node / "train.log", two_nodes / "train.log"):
        assert "MEMBER: 1/2" in log.read_text()  # Lightning: rank 0 of a world of 2
    assert "MEMBER: 2/2" in (two_nodes / "train.rank1.log").read_text()


def test_requeued_multi_node_job_resumes_every_rank(tmp_path):
    """Preemption: submitit requeues what ``checkpoint`` returns, the same cell as ranks
    (resuming from ``last.ckpt``, never a rerun that would start over)."""
    pytest.importorskip("submitit", reason="submitit is not installed")
    job = CellJob(str(tmp_path), node_args(2, 1, gpu=False), rerun=True, ranks=True)
    again = job.checkpoint().function
    assert isinstance(again, CellJob)
    assert (again.cell_dir, again.extra_args) == (job.cell_dir, job.extra_args)
    assert again.ranks and not again.rerun
