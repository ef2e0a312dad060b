"""Shared by the training tests: a tiny complete CLI config, TensorBoard reading, faults.

Every run is a 1-block ConvNN ViT on 16x16 synthetic images, on the CPU.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import yaml

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


def run_grid(grid: dict, tmp_path: Path) -> Path:
    """``convnn-ablate run`` of ``grid`` (written to ``tmp_path/grid.yaml``) into
    ``tmp_path/out`` in a fresh single-threaded process; asserts it succeeded and returns
    the output directory."""
    import subprocess
    import sys

    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ablations.ablate", "run", str(path), "--out", str(out)]
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


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
