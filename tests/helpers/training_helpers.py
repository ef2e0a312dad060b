"""Shared by the training tests: a tiny complete CLI config, grid runs, TensorBoard reading,
faults.

Every run is a 1-block ConvNN ViT on 16x16 synthetic images, on the CPU.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import lightning as L
import yaml

ROOT = Path(__file__).resolve().parents[2]

TINY_VIT = {
    "img_size": 16,
    "patch_size": 4,
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 2,
    "k": 5,
}


def tiny_config(save_dir: Path, **model_args) -> dict:
    """A complete config: 1-block ConvNN ViT on 128 + 32 synthetic 16x16 images, 3 epochs."""
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "default_root_dir": str(save_dir),
            "max_epochs": 3,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "callbacks": [],
            "enable_model_summary": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {
                    "save_dir": str(save_dir),
                    "name": "tiny",
                    "default_hp_metric": False,
                },
            },
        },
        "model": {
            "class_path": "lightning_modules.ImageClassifier",
            "init_args": {
                "model": "convnn_vit_tiny_patch4_32",
                "model_kwargs": TINY_VIT,
                "lr": 0.003,
                "warmup_epochs": 0.5,
                **model_args,
            },
        },
        "data": {
            "class_path": "datamodules.SyntheticDataModule",
            "init_args": {
                "image_size": 16,
                "num_train": 128,
                "num_val": 32,  # divisible by 2 processes: DistributedSampler pads nothing
                "batch_size": 16,
                "num_workers": 0,
            },
        },
    }


def run_grid(grid: dict, tmp_path: Path, parallel: int = 2) -> Path:
    """``convnn-ablate run --parallel PARALLEL`` of ``grid`` (written to
    ``tmp_path/grid.yaml``) into ``tmp_path/out``, its cells single-threaded; asserts it
    succeeded and returns the output directory. The driver runs in this process
    (:func:`ablate_here`)."""
    import pytest

    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # the cells' processes inherit it
        done = ablate_here("run", str(path), "--out", str(out), "--parallel", str(parallel))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


def ablate_here(*args: str) -> subprocess.CompletedProcess:
    """``convnn-ablate ARGS`` in this process, from the repository root as the tests' driver
    subprocesses, printing as to a pipe (one line per event): its exit status and output.
    It saves the start-up of torch and Lightning that a fresh driver process pays (its plan
    builds every setting); the cells still run in their own processes
    (``python -m ablations.runner``)."""
    import pytest

    from ablations import ablate

    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                ablate.main(list(args))
                code = 0
            except SystemExit as exit_info:
                code = exit_info.code
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def events(run: Path):
    """The TensorBoard scalars of a run directory (an ``EventAccumulator``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run))
    accumulator.Reload()
    return accumulator


def final_scalars(run: Path, tags: tuple[str, ...] = ("val/acc1", "val/loss")) -> dict[str, float]:
    """The last logged value of each tag."""
    scalars = events(run)
    return {tag: scalars.Scalars(tag)[-1].value for tag in tags}


class KillAtBatch(L.Callback):
    """SIGKILL this process at the start of training batch ``batch`` of epoch ``epoch``: no
    handler, no ``finally`` and no teardown runs, as when a node dies or the OOM killer hits."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch = epoch
        self.batch = batch

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)
