"""Repeated augmentation (``aug_repeats``): each drawn image read ``repeats`` times per epoch,
the copies split over the DDP processes, the order a function of ``(seed, epoch)`` only, and
the sampler left in place by Lightning under DDP (not wrapped in a second split)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from torch.utils.data import DistributedSampler
from training_helpers import tiny_config, write_config

from convnn.errors import OptionError
from datamodules import SyntheticDataModule
from datamodules.repeat_aug import RepeatAugmentSampler

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def shares(n: int, world: int, seed: int, epoch: int, repeats: int = 3) -> list[list[int]]:
    """Each rank's indices of one epoch over ``n`` images."""
    out = []
    for rank in range(world):
        sampler = RepeatAugmentSampler(range(n), world, rank, repeats, seed)
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


def test_each_drawn_image_is_read_repeats_times_across_the_processes():
    a, b = shares(1024, world=2, seed=0, epoch=0)
    assert len(a) == len(b) == 512  # one pass over the data in all: 1024 / 2 per process
    merged = [i for pair in zip(a, b, strict=True) for i in pair]  # the global order
    runs = [merged[j : j + 3] for j in range(0, len(merged) - 2, 3)]
    assert all(len(set(run)) == 1 for run in runs)  # 3 consecutive copies of one image
    assert len(set(merged)) == len(runs) + (len(merged) % 3 > 0)  # about 1024 / 3 images
    # the copies of an image go to both processes: each reads a different augmentation
    assert len(set(a) & set(b)) >= len(runs) - 1


def test_the_order_depends_on_seed_and_epoch_only():
    first = shares(300, world=1, seed=5, epoch=2)
    assert shares(300, world=1, seed=5, epoch=2) == first
    assert shares(300, world=1, seed=5, epoch=3) != first
    assert shares(300, world=1, seed=6, epoch=2) != first
    (one,) = first
    assert len(one) == 256  # timm's selected_round: 300 images rounded down to 256


def test_a_datamodule_with_aug_repeats_trains_on_repeated_images():
    data = SyntheticDataModule(num_train=64, num_val=8, image_size=16, batch_size=8,
                               num_workers=0, aug_repeats=3)  # fmt: skip
    data.setup("fit")
    sampler = data.train_dataloader().sampler
    assert isinstance(sampler, RepeatAugmentSampler) and isinstance(sampler, DistributedSampler)
    order = list(sampler)
    assert len(order) == 64 and all(order[j] == order[j + 1] == order[j + 2] for j in (0, 3, 60))
    plain = SyntheticDataModule(num_train=64, num_val=8, image_size=16, num_workers=0)
    plain.setup("fit")
    assert not isinstance(plain.train_dataloader().sampler, RepeatAugmentSampler)
    with pytest.raises(OptionError, match="aug_repeats"):
        SyntheticDataModule(aug_repeats=-1)


class RecordOrder(L.Callback):
    """Each training epoch's sampler class and indices, written per rank to
    ``<out>/rank<r>.json``."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.epochs: list[dict] = []

    def on_train_epoch_start(self, trainer, module) -> None:
        sampler = trainer.train_dataloader.sampler
        sampler.set_epoch(trainer.current_epoch)
        self.epochs.append({"sampler": type(sampler).__name__, "order": list(sampler)})

    def on_train_end(self, trainer, module) -> None:
        path = Path(self.out) / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.epochs))


def test_ddp_fit_splits_the_copies_over_the_processes(tmp_path):
    """`convnn fit` on 2 CPU processes with aug_repeats 3: Lightning keeps the sampler, the
    two ranks' indices interleave into runs of 3 copies, and epoch 1 differs from epoch 0."""
    config = tiny_config(tmp_path / "runs")
    config["trainer"] |= {"max_epochs": 2, "devices": 2, "strategy": "ddp"}
    config["trainer"]["callbacks"] = [
        {"class_path": "test_repeat_aug.RecordOrder", "init_args": {"out": str(tmp_path)}}
    ]
    config["data"]["init_args"]["aug_repeats"] = 3
    path = write_config(tmp_path / "ddp.yaml", config)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE), str(HERE.parent / "helpers")]),
    }
    command = [sys.executable, "-m", "lightning_modules.cli", "fit", "--config", str(path)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for epoch in (0, 1):
        a, b = (ranks[r][epoch] for r in (0, 1))
        assert a["sampler"] == b["sampler"] == "RepeatAugmentSampler"
        assert len(a["order"]) == len(b["order"]) == 64  # 128 images over 2 processes
        merged = [i for pair in zip(a["order"], b["order"], strict=True) for i in pair]
        assert all(len(set(merged[j : j + 3])) == 1 for j in range(0, 126, 3))
    assert ranks[0][0]["order"] != ranks[0][1]["order"]
