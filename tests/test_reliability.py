"""Reliability of the training stack: determinism, resume after SIGKILL, saves that fail
without losing the previous file, bad output directories and checkpoints, memory.

Tests marked ``long`` run with ``make test-long`` (CI runs both).
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from training_helpers import TINY_VIT, events, final_scalars, tiny_config, write_config

from convnn.errors import CheckpointError
from lightning_modules import checkpoint_io
from lightning_modules.checkpoint_io import SafeCheckpointIO
from lightning_modules.cli import ConvNNCLI, main
from lightning_modules.files import atomic_write_json
from lightning_modules.seeding import step_seed

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
HELPERS = TESTS / "helpers"

# stochastic everywhere: fresh random candidates, drop-path, Mixup/CutMix
STOCHASTIC_VIT = {**TINY_VIT, "candidates": "random", "num_samples": 9, "drop_path_rate": 0.1}
STOCHASTIC = {"model_kwargs": STOCHASTIC_VIT, "mixup": 0.8, "cutmix": 1.0}


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["convnn"])


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    """``convnn ARGS`` started in a fresh single-threaded process (the tests' helpers
    importable for callbacks); stdout and stderr are captured as text. The repository comes
    first on the path: ``tests/`` holds folders named like the packages (``tests/datamodules``)
    that would otherwise be imported as namespace packages (DDP's child processes did)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), str(HELPERS)]),
    }
    cmd = [sys.executable, "-m", "lightning_modules.cli", *args]
    return subprocess.Popen(
        cmd, env=env, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def finish(proc: subprocess.Popen, timeout: float = 600) -> subprocess.CompletedProcess:
    """Wait for a :func:`start_cli` process, at most ``timeout`` seconds."""
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``convnn ARGS`` in a fresh process, to the end."""
    return finish(start_cli(args, cwd))


def all_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard scalar series of a run: ``tag -> [(step, value), ...]``."""
    scalars = events(run)
    return {t: [(e.step, e.value) for e in scalars.Scalars(t)] for t in scalars.Tags()["scalars"]}


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- determinism ------------------------------------------------------------------------------


@pytest.mark.long
def test_two_quickstart_runs_with_one_seed_give_bit_identical_metrics(tmp_path):
    """The README's quickstart, twice, concurrently in two processes: every logged value
    (losses per step, learning rates, val/test metrics per epoch) is bit for bit equal."""
    config = str(ROOT / "configs" / "quickstart.yaml")
    procs = []
    for name in ("a", "b"):
        args = ["fit", "--config", config, "--trainer.logger.init_args.save_dir", str(tmp_path)]
        args += ["--trainer.logger.init_args.name", name, "--trainer.enable_progress_bar", "false"]
        procs.append(start_cli(args, cwd=tmp_path))
    for proc in procs:
        done = finish(proc, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = (all_scalars(tmp_path / name / "version_0") for name in ("a", "b"))
    assert len(a["val/acc1"]) == 30 and a["val/acc1"][-1][1] > 0.8
    assert a == b


def test_step_seeds_differ_by_rank_epoch_and_batch():
    seeds = {step_seed(0, r, e, b) for r in range(4) for e in range(3) for b in range(50)}
    assert len(seeds) == 4 * 3 * 50
    assert step_seed(0, 1, 2, 3) == step_seed(0, 1, 2, 3) != step_seed(1, 1, 2, 3)


class RecordDraws(L.Callback):
    """After every training batch, one draw of NumPy's and torch's global generators, written
    per rank to ``<out>/rank<r>.json`` at the end."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.draws: list[list[float]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.draws.append([trainer.current_epoch, batch_idx, float(np.random.rand())])

    def on_train_end(self, trainer, module) -> None:
        path = Path(self.out) / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.draws))


def test_generators_are_seeded_per_rank_under_ddp(tmp_path):
    """DDP on 2 CPU processes: before every batch each rank reseeds from (seed, rank, epoch,
    batch), so the two ranks' random streams differ and each is the predicted one."""
    config = tiny_config(tmp_path / "runs")
    config["trainer"] |= {"max_epochs": 2, "devices": 2, "strategy": "ddp"}
    config["trainer"]["callbacks"] = [
        {"class_path": "test_reliability.RecordDraws", "init_args": {"out": str(tmp_path)}}
    ]
    path = write_config(tmp_path / "ddp.yaml", config)
    done = run_cli(["fit", "--config", str(path)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    draws = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(draws[0]) == len(draws[1]) == 2 * 4  # 128 images / 2 ranks / batch 16, 2 epochs
    for rank, rank_draws in enumerate(draws):
        for epoch, batch, value in rank_draws:
            # no Mixup: NumPy's generator is untouched by the step, so its next draw is known
            expected = np.random.RandomState(step_seed(0, rank, epoch, batch)).rand()
            assert value == expected
    assert [d[2] for d in draws[0]] != [d[2] for d in draws[1]]


# -- faults -----------------------------------------------------------------------------------


@pytest.mark.long
def test_sigkilled_run_resumes_to_the_same_final_metrics(tmp_path):
    """Uninterrupted vs. SIGKILLed in epoch 2 and resumed from its last.ckpt (end of epoch 1):
    the same weights, optimizer state, scheduler state and final metrics, bit for bit."""
    config = tiny_config(tmp_path / "runs", **STOCHASTIC)
    config["trainer"]["max_epochs"] = 4
    straight = write_config(tmp_path / "straight.yaml", config)
    config["trainer"]["callbacks"] = [
        {"class_path": "training_helpers.KillAtBatch", "init_args": {"epoch": 2, "batch": 3}}
    ]
    killed = write_config(tmp_path / "killed.yaml", config)

    done = run_cli(["fit", "--config", str(straight)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    done = run_cli(["fit", "--config", str(killed)], cwd=tmp_path)
    assert done.returncode == -9, done.stderr[-3000:]  # died by SIGKILL
    runs = tmp_path / "runs" / "tiny"
    last = runs / "version_1" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    done = run_cli(["fit", "--config", str(straight), "--ckpt_path", str(last)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    a = torch.load(runs / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(runs / "version_2" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3 and a["global_step"] == b["global_step"] == 32
    assert state_dicts_equal(a["state_dict"], b["state_dict"])
    (opt_a,), (opt_b,) = a["optimizer_states"], b["optimizer_states"]
    for key, state in opt_a["state"].items():
        assert all(torch.equal(state[n], opt_b["state"][key][n]) for n in state)
    assert a["lr_schedulers"] == b["lr_schedulers"]
    final_a, final_b = final_scalars(runs / "version_0"), final_scalars(runs / "version_2")
    assert final_a == final_b and final_a["val/acc1"] > 0.2


def _fail_midway(checkpoint, f) -> None:
    """A ``torch.save`` stand-in that writes some bytes, then hits a full disk."""
    f.write(b"PK\x03\x04 partial checkpoint")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = SafeCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "hyper_parameters": {}}, path)
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint_io.torch, "save", _fail_midway)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "hyper_parameters": {}}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no partial file left
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))


def test_unwritable_directory_while_saving_keeps_the_previous_result(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    atomic_write_json(path, {"top1": 0.9})

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(PermissionError):
        atomic_write_json(path, {"top1": 0.1})
    assert json.loads(path.read_text()) == {"top1": 0.9}


def test_full_disk_during_training_keeps_last_checkpoint(tmp_path, monkeypatch):
    """A run that fails to save its next checkpoint stops, and the previous last.ckpt still
    loads with the weights it had."""
    path = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))
    cli = ConvNNCLI(args=["fit", "--config", str(path), "--trainer.max_epochs", "1"])
    assert type(cli.trainer.strategy.checkpoint_io) is SafeCheckpointIO
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    monkeypatch.setattr(checkpoint_io.torch, "save", _fail_midway)
    with pytest.raises(OSError, match="No space left"):
        ConvNNCLI(
            args=["fit", "--config", str(path), "--trainer.max_epochs", "2"]
            + ["--ckpt_path", str(last), "--last_checkpoint.dirpath", str(last.parent)]
        )
    assert last.read_bytes() == before
    assert sorted(p.name for p in last.parent.iterdir() if p.name.startswith(".")) == []


@pytest.mark.long
def test_no_memory_growth_over_1000_training_steps(tmp_path):
    """1,000 steps of a small ConvNN ViT with fresh random candidates every step: resident
    memory after warm-up (step 200) grows by less than 8 MiB until step 1,000."""
    rss = {}

    class Rss(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            if trainer.global_step in (200, 600, 1000):
                rss[trainer.global_step] = _rss_mib()

    config = tiny_config(tmp_path / "runs", **STOCHASTIC)
    config["trainer"] |= {"max_steps": 1000, "max_epochs": -1, "log_every_n_steps": 50}
    config["data"]["init_args"]["num_train"] = 256
    path = write_config(tmp_path / "tiny.yaml", config)
    cli = ConvNNCLI(args=["--config", str(path)], run=False)
    cli.trainer.callbacks.append(Rss())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 1000
    print(f"RSS MiB at steps 200/600/1000: {rss}")
    assert rss[1000] - rss[200] < 8, rss


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


# -- bad input --------------------------------------------------------------------------------


def _one_line_error(args: list[str], match: str) -> None:
    with pytest.raises(SystemExit, match=match) as err:
        main(args)
    assert "\n" not in str(err.value)


def test_unwritable_output_directory_is_rejected_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    path = write_config(tmp_path / "tiny.yaml", tiny_config(blocker / "runs"))
    _one_line_error(
        ["fit", "--config", str(path)], r"^convnn: error: .*'.*a_file/runs' cannot be written"
    )


def test_resuming_from_a_non_checkpoint_or_another_model_is_a_one_line_error(tmp_path):
    path = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))
    cli = ConvNNCLI(args=["fit", "--config", str(path), "--trainer.max_epochs", "1"])
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    fit = ["fit", "--config", str(path), "--ckpt_path"]
    _one_line_error([*fit, str(text)], "^convnn: error: .*notes.ckpt is not a checkpoint")
    _one_line_error([*fit, str(tmp_path / "none.ckpt")], "--ckpt_path .* does not exist")
    # the checkpoint's hyper-parameters win over the config, but num_classes comes from the data
    other_data = ["--data.init_args.num_classes", "5"]
    expected = r"^convnn: error: .*last.ckpt: state dict does not fit .* 2 shape \(e.g. model.head"
    _one_line_error([*fit, str(last), *other_data], expected)
    assert sorted(p.name for p in last.parent.parent.parent.iterdir()) == ["version_0"]


def test_unreadable_image_is_a_one_line_error_naming_the_file(tmp_path):
    """Through the CLI, with the image decoded in a DataLoader worker process."""
    from test_datamodules import damage_images, write_folder_tree

    root = tmp_path / "images"
    write_folder_tree(root, ["n01", "n02"])
    truncated, garbage = damage_images(root)
    garbage.unlink()  # the truncated training image is the only bad one
    config = tiny_config(tmp_path / "runs")
    config["data"] = {
        "class_path": "datamodules.ImageNetDataModule",
        "init_args": {"root": str(root), "image_size": 16, "batch_size": 5, "num_workers": 1},
    }
    config["trainer"]["max_epochs"] = 1
    path = write_config(tmp_path / "images.yaml", config)
    expected = f"^convnn: error: unreadable image '{re.escape(str(truncated))}'"
    lazy = ["--data.init_args.scan_images", "false"]  # small folders are scanned by default
    _one_line_error(["fit", "--config", str(path), *lazy], expected)
    scan = ["--data.init_args.scan_images", "true", "--data.init_args.num_workers", "0"]
    _one_line_error(["fit", "--config", str(path), *scan], expected)


def test_evaluate_rejects_unwritable_out_before_evaluating(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    args = ["evaluate", "--ckpt", str(tmp_path / "x.ckpt"), "--out", str(blocker / "r.json")]
    _one_line_error(args, r"^convnn evaluate: error: --out directory '.*a_file' cannot be written")


class _Trap:
    """Unpickling this would create ``path``: a stand-in for code hidden in a checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_checkpoints_never_run_code_from_the_file(tmp_path):
    marker = tmp_path / "code_ran"
    ckpt = tmp_path / "trap.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "trap": _Trap(marker)}, ckpt)
    path = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))
    expected = r"trap.ckpt is not a checkpoint that loads safely \(weights_only=True\)"
    _one_line_error(["fit", "--config", str(path), "--ckpt_path", str(ckpt)], expected)
    _one_line_error(["evaluate", "--ckpt", str(ckpt)], expected)
    with pytest.raises(CheckpointError, match="weights_only=False is refused"):
        SafeCheckpointIO().load_checkpoint(ckpt, weights_only=False)
    assert not marker.exists()


def test_seed_is_applied_before_the_model_is_built(tmp_path):
    path = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))
    models = [
        ConvNNCLI(args=["--config", str(path), "--seed_everything", seed], run=False).model
        for seed in ("3", "3", "4")
    ]
    same, other = (state_dicts_equal(models[0].state_dict(), m.state_dict()) for m in models[1:])
    assert same and not other


def test_no_memory_growth_over_changing_shapes():
    """Forward and backward over 56 map shapes of about 240 pixels (h x 240 // h) and 8
    token grids (4x4 to 11x11, about 1,200 tokens a batch), every one new: no cache keyed
    by shape (candidate tables, grids, position tables) grows resident memory. After the
    first cycle (7 maps, 1 grid), the other 7 add less than 4 MiB. PyTorch's own oneDNN
    primitive cache, keyed by convolution shapes and bounded (1,024 entries), would grow
    too (``nn.Conv2d`` alone: 1.3 MiB per 7 shapes), so it is switched off."""
    from convnn import ConvNN2d, ConvNNAttention

    torch.manual_seed(0)
    layers = [
        ConvNN2d(8, 8, 3, padding=1, k=9, candidates="all", similarity="cosine"),
        ConvNN2d(8, 8, 3, padding=1, k=9, candidates="window", similarity="dot"),
        ConvNN2d(8, 8, 3, padding=1, k=5, candidates="random", num_samples=9),
    ]
    attention = ConvNNAttention(32, 2, k=5, positional_encoding="rope")
    shapes = [(h, 240 // h) for h in range(5, 61)]
    rss = []
    no_onednn = torch.backends.mkldnn.flags(enabled=False)
    with warnings.catch_warnings(), no_onednn:
        warnings.simplefilter("ignore")  # oneDNN's TF32 notice
        for cycle in range(8):
            grow_shapes(layers, attention, shapes[cycle * 7 : (cycle + 1) * 7], 4 + cycle)
            rss.append(_rss_mib())
    assert rss[-1] - rss[0] < 4, rss


def grow_shapes(layers: list, attention, shapes: list[tuple[int, int]], side: int) -> None:
    """Forward and backward of every layer on ``(2, 8, h, w)`` maps of ``shapes``, and of
    ``attention`` on sequences of a class token and a ``side x side`` grid."""
    for h, w in shapes:
        x = torch.randn(2, 8, h, w, requires_grad=True)
        for layer in layers:
            layer(x).sum().backward()
    tokens = 1 + side * side
    attention(torch.randn(1200 // tokens, tokens, 32)).sum().backward()


def test_evaluate_data_errors_are_one_line(tmp_path):
    """`convnn evaluate --data` on a missing or empty folder, and on an unreadable image."""
    from test_datamodules import damage_images, write_folder_tree

    path = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))
    cli = ConvNNCLI(args=["fit", "--config", str(path), "--trainer.fast_dev_run", "1"])
    ckpt = tmp_path / "tiny.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    images = tmp_path / "images"
    write_folder_tree(images, [f"n{i:02d}" for i in range(10)], per_class=1)
    _, garbage = damage_images(images)

    def data(root: Path) -> str:
        init = {"root": str(root), "image_size": 16, "num_workers": 0}
        return json.dumps({"class_path": "datamodules.ImageNetDataModule", "init_args": init})

    evaluate = ["evaluate", "--ckpt", str(ckpt), "--out", str(tmp_path / "r.json"), "--data"]
    _one_line_error([*evaluate, data(tmp_path / "none")], r"image root '.*none' does not exist")
    _one_line_error([*evaluate, data(empty)], r"image folder '.*train' is empty")
    expected = f"^convnn evaluate: error: unreadable image '{re.escape(str(garbage))}'"
    _one_line_error([*evaluate, data(images)], expected)
    assert not (tmp_path / "r.json").exists()
