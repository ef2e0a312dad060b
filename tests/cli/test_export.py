"""``convnn export``: a checkpoint's network shared the timm way, walked as a user does:
the command in a subprocess, then ``timm.create_model("local-dir:DIR", pretrained=True)``,
which must give the run's logits exactly (its EMA weights when it kept them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from training_helpers import TINY_VIT, ablate_here, run_grid, tiny_config, write_config

import convnn  # noqa: F401  (registers the models)
from lightning_modules.checkpoint_io import load_checkpoint
from lightning_modules.evaluation import build_model

ROOT = Path(__file__).resolve().parents[2]
OLD_RUN = ROOT / "tests" / "fixtures" / "pre_move" / "last.ckpt"


def _convnn(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "lightning_modules.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _export(ckpt: Path, out: Path) -> None:
    done = _convnn("export", "--ckpt", str(ckpt), "--out", str(out), cwd=out.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    files = ["README.md", "config.json", "model.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == files


def _same_logits(ckpt: Path, out: Path, ema: bool) -> None:
    module = build_model(load_checkpoint(ckpt), ckpt).eval()
    network = (module.ema.module if ema else module.model).eval()
    reloaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.randn(4, 3, module.image_size, module.image_size)
    with torch.no_grad():
        assert torch.equal(reloaded(x), network(x))
        if ema:  # the EMA weights, not the trained ones, were exported
            assert not torch.equal(reloaded(x), module.model.eval()(x))


def test_export_reloads_in_timm_with_the_runs_logits(tmp_path: Path) -> None:
    out = tmp_path / "shared"
    _export(OLD_RUN, out)
    _same_logits(OLD_RUN, out, ema=False)
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "convnn_vit_tiny_patch4_32"
    assert config["model_args"]["num_classes"] == 2 and config["model_args"]["k"] == 5
    card = (out / "README.md").read_text()
    assert "# convnn_vit_tiny_patch4_32" in card and '"optimizer": "adamw"' in card
    assert "No published row for this network" in card


def test_export_of_a_run_that_kept_ema_weights_exports_them(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "runs", ema=True, ema_decay=0.5)
    config["trainer"]["max_epochs"] = 1
    path = write_config(tmp_path / "ema.yaml", config)
    done = _convnn("fit", "--config", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    [ckpt] = (tmp_path / "runs").glob("tiny/version_0/checkpoints/last.ckpt")
    out = tmp_path / "shared"
    _export(ckpt, out)
    _same_logits(ckpt, out, ema=True)
    card = (out / "README.md").read_text()
    assert "(EMA weights)" in card and "- commit: " in card and "commit: unknown" not in card


def test_export_of_a_grid_cell_names_its_setting_and_seeds(tmp_path: Path) -> None:
    base = tiny_config(tmp_path / "runs", model_kwargs={**TINY_VIT, "k": 4})
    base["trainer"]["max_epochs"] = 1
    grid = {"name": "tiny", "base": str(write_config(tmp_path / "base.yaml", base))}
    grid |= {"seeds": [0, 1], "axes": {"k": {"k4": {}}}}
    out = run_grid(grid, tmp_path)
    report = ablate_here("report", str(out))
    assert report.returncode == 0, report.stdout + report.stderr
    ckpt = next(out.glob("k_k4-s1-*/version_0/checkpoints/last.ckpt"))
    _export(ckpt, tmp_path / "shared")
    card = (tmp_path / "shared" / "README.md").read_text()
    assert "k=k4, seed 1" in card
    assert "- the setting over 2 seeds: top-1 " in card and "95% interval [" in card


@pytest.mark.parametrize("existing", ["file", "nonempty_dir"])
def test_an_existing_output_is_never_overwritten(tmp_path: Path, existing: str) -> None:
    out = tmp_path / "shared"
    if existing == "file":
        out.write_text("keep me")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
    done = _convnn("export", "--ckpt", str(OLD_RUN), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"convnn export: error: --out '{out}' exists and is not empty; choose a new directory"
    )
    kept = out if existing == "file" else out / "notes.txt"
    assert kept.read_text() == "keep me"
