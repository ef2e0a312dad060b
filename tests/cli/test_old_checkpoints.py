"""A run made before the command line moved into ``lightning_modules/cli/`` keeps loading.

``tests/fixtures/pre_move/`` holds what ``convnn fit`` wrote at commit d02c0d6 (its
``code_version.json``): the merged ``config.yaml`` (class paths
``lightning_modules.ImageClassifier``, ``lightning_modules.locality_callback.LocalityMonitor``,
``datamodules.ImageNetDataModule``) and ``last.ckpt`` (a 1-block ConvNN ViT after one epoch
on :func:`write_images`' folder; ``datamodule_class_path``
``datamodules.folder.ImageNetDataModule``). It then measured val/acc1 50.0% and val/loss
0.703 on that folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "tests" / "fixtures" / "pre_move"


def write_images(root: Path) -> Path:
    """The image folder the pre-move run trained on (same generator, same order)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _convnn(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "lightning_modules.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_stored_run_names_the_old_class_paths() -> None:
    """The fixture is what the test says it is (else the test below proves nothing)."""
    ckpt = torch.load(RUN / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["datamodule_class_path"] == "datamodules.folder.ImageNetDataModule"
    config = (RUN / "config.yaml").read_text()
    for path in ("lightning_modules.ImageClassifier", "lightning_modules.locality_callback."):
        assert path in config
    assert json.loads((RUN / "code_version.json").read_text())["git_commit"].startswith("d02c0d6")


def test_a_run_made_before_the_move_validates_to_its_numbers(tmp_path) -> None:
    data = write_images(tmp_path / "data")
    done = _convnn(
        [
            "validate",
            "-c",
            str(RUN / "config.yaml"),
            "--ckpt_path",
            str(RUN / "last.ckpt"),
            "--data.init_args.root",
            str(data),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "runs"),
            "--trainer.default_root_dir",
            str(tmp_path / "runs"),
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout + done.stderr
    assert "0.5" in out and "0.703" in out, out[-3000:]


def test_evaluate_reads_a_checkpoint_made_before_the_move(tmp_path) -> None:
    data = write_images(tmp_path / "data")
    spec = {
        "class_path": "datamodules.ImageNetDataModule",
        "init_args": {"root": str(data), "image_size": 16, "batch_size": 4, "num_workers": 0},
    }
    out = tmp_path / "results.json"
    done = _convnn(
        ["evaluate", "--ckpt", str(RUN / "last.ckpt"), "--data", json.dumps(spec)]
        + ["--accelerator", "cpu", "--out", str(out)],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["top1"] == 50.0 and abs(results["loss"] - 0.703) < 5e-4, results
