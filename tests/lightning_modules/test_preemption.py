"""Preemption: a signalled ``convnn fit`` writes ``last.ckpt`` at its next step and exits with
``PREEMPTED``; resumed from it, the run ends as an uninterrupted one (weights, optimizer,
every epoch's metrics); the ablation runner passes the signal on and keeps the cell
resumable. Also the training loader's mid-epoch resume and the step-interval checkpoint.

Tests marked ``long`` run with ``make test-long`` (a real ``convnn fit`` in a subprocess).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, Dataset
from training_helpers import TINY_VIT, tiny_config, write_config

from datamodules.base import EpochShuffleSampler, ResumableDataLoader
from lightning_modules.cli import ConvNNCLI
from lightning_modules.files import PREEMPTED
from lightning_modules.preemption import PreemptionCheckpoint

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parent
HELPERS = TESTS.parent / "helpers"
# stochastic everywhere (fresh random candidates, drop-path, Mixup/CutMix): an exact resume
# needs the generators, the batches and the metric states to pick up where they were
STOCHASTIC_VIT = {**TINY_VIT, "candidates": "random", "num_samples": 9, "drop_path_rate": 0.1}
STOCHASTIC = {"model_kwargs": STOCHASTIC_VIT, "mixup": 0.8, "cutmix": 1.0}
BATCHES = 8  # per epoch in tiny_config: 128 images, batch 16


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["convnn"])


# -- callbacks (also loaded by the convnn fit subprocesses: tests/ is on their PYTHONPATH) ------


class StepFile(L.Callback):
    """After every training batch, ``{"step": global_step}`` into ``path`` (atomically), then
    ``sleep`` seconds: a test watching the file signals the run at a known step."""

    def __init__(self, path: str, sleep: float = 0.0) -> None:
        self.path = path
        self.sleep = sleep

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        tmp = f"{self.path}.tmp"
        Path(tmp).write_text(json.dumps({"step": trainer.global_step}))
        os.replace(tmp, self.path)
        time.sleep(self.sleep)


class SignalAt(L.Callback):
    """Send ``signum`` to this process as training step ``step`` (0-based) starts, in the
    process of global rank ``rank`` only."""

    def __init__(self, step: int, signum: int = int(signal.SIGUSR1), rank: int = 0) -> None:
        self.step = step
        self.signum = signum
        self.rank = rank

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            os.kill(os.getpid(), self.signum)


class SignalAtSanityCheck(L.Callback):
    """Send SIGTERM to this process as the sanity check's validation starts."""

    def on_sanity_check_start(self, trainer, module) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


class CrashAt(L.Callback):
    """Raise at the start of training step ``step``: a crash that leaves what was written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"crash at step {self.step}")


class Record(L.Callback):
    """Each epoch's train and val metrics, ``epochs[epoch] = {name: value}``."""

    def __init__(self) -> None:
        self.epochs: dict[int, dict[str, float]] = {}

    def _keep(self, trainer, prefix: str) -> None:
        epoch = self.epochs.setdefault(trainer.current_epoch, {})
        for name, value in trainer.callback_metrics.items():
            if name.startswith(prefix) and name != "train/loss":  # the last step's loss
                epoch[name] = float(value)

    def on_train_epoch_end(self, trainer, module) -> None:
        self._keep(trainer, "train/")

    def on_validation_end(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self._keep(trainer, "val/")


def fit(config: Path, *callbacks: L.Callback, ckpt: Path | None = None) -> ConvNNCLI:
    """``convnn fit`` in this process, with ``callbacks`` first."""
    cli = ConvNNCLI(args=["--config", str(config)], run=False)
    cli.trainer.callbacks[:0] = list(callbacks)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt)
    return cli


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def assert_same_training(a: dict, b: dict) -> None:
    """Two checkpoints hold the same step, weights, optimizer and scheduler states."""
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    (opt_a,), (opt_b,) = a["optimizer_states"], b["optimizer_states"]
    for key, state in opt_a["state"].items():
        assert all(torch.equal(state[n], opt_b["state"][key][n]) for n in state)
    assert a["lr_schedulers"] == b["lr_schedulers"]


# -- the training loader ---------------------------------------------------------------------


class Indices(Dataset):
    def __len__(self) -> int:
        return 40

    def __getitem__(self, index: int) -> int:
        return index


@pytest.mark.parametrize("workers", [0, 2])
def test_resumable_loader_reads_the_rest_of_the_epoch_it_resumes(workers):
    """From position (epoch 2, 3 batches done) the loader reads batches 3.. of epoch 2's
    order, drawn first (its workers' indices too); the next iteration reads a full epoch."""
    dataset = Indices()
    order = list(EpochShuffleSampler(dataset, seed=7).__iter__())  # epoch 0
    sampler = EpochShuffleSampler(dataset, seed=7)
    sampler.set_epoch(2)
    epoch2 = list(sampler)
    assert epoch2 != order
    where = [(2, 3)]
    loader = ResumableDataLoader(
        dataset,
        batch_size=4,
        sampler=EpochShuffleSampler(dataset, seed=7),  # at epoch 0, as Lightning leaves it
        num_workers=workers,
        persistent_workers=workers > 0,
        position=lambda: where[0],
    )
    iterator = iter(loader)  # created early (configure_optimizers does), before the restore
    assert len(loader) == 10
    first = [int(i) for batch in iterator for i in batch]
    assert first == epoch2[12:]
    where[0] = (3, 0)
    sampler.set_epoch(3)
    assert [int(i) for batch in loader for i in batch] == list(sampler)
    assert isinstance(loader.state_dict(), dict)  # Lightning: a loader that resumes
    plain = DataLoader(dataset, batch_size=4, sampler=EpochShuffleSampler(dataset, seed=7))
    assert [int(i) for batch in plain for i in batch] == order  # no position: as before


# -- convnn fit in this process ---------------------------------------------------------------


def test_signal_names_and_handlers_are_restored():
    with pytest.raises(ValueError, match="unknown signal 'SIGFOO'"):
        PreemptionCheckpoint(signals=["SIGFOO"])
    callback = PreemptionCheckpoint(signals=["usr1", "SIGTERM"])
    before = signal.getsignal(signal.SIGUSR1)
    with callback.catching():
        assert signal.getsignal(signal.SIGUSR1) == callback.handle
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.01)  # Python runs the handler between bytecodes
    assert callback.received == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) == before


@pytest.mark.parametrize(
    ("step", "saved"),
    [
        (11, 12),  # epoch 1, batch 3: saved at the end of that batch
        (7, 8),  # the last batch of epoch 0: after the epoch (validated), before epoch 1
    ],
)
def test_signalled_run_saves_at_the_next_step_and_resumes_exactly(tmp_path, step, saved):
    """SIGUSR1 as step ``step`` starts: ``last.ckpt`` holds step ``saved``, the run exits with
    PREEMPTED and restores the signal handler; resumed, it ends with the weights, optimizer
    state and every epoch's train and val metrics of an uninterrupted run."""
    config = tiny_config(tmp_path / "runs", **STOCHASTIC)
    config["trainer"]["max_epochs"] = 2
    path = write_config(tmp_path / "tiny.yaml", config)
    straight = Record()
    done = fit(path, straight)
    final = load(Path(done.trainer.log_dir) / "checkpoints" / "last.ckpt")

    before = signal.getsignal(signal.SIGUSR1)
    first = Record()
    cli = ConvNNCLI(args=["--config", str(path)], run=False)
    cli.trainer.callbacks[:0] = [first, SignalAt(step)]
    with pytest.raises(SystemExit) as stopped:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert stopped.value.code == PREEMPTED
    assert signal.getsignal(signal.SIGUSR1) == before
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    ckpt = load(last)
    assert ckpt["global_step"] == saved
    assert not list(last.parent.glob(".*"))  # no temporary file left
    mid_epoch = saved % BATCHES != 0
    assert ("metric_states" in ckpt) == mid_epoch
    batches = ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]
    assert batches == (saved % BATCHES or BATCHES)  # of its epoch, when it was saved

    second = Record()
    again = fit(path, second, ckpt=last)
    assert_same_training(final, load(Path(again.trainer.log_dir) / "checkpoints" / "last.ckpt"))
    assert not first.epochs.keys() & second.epochs.keys()  # the interrupted epoch: once
    assert {**first.epochs, **second.epochs} == straight.epochs
    assert len(straight.epochs) == 2 and all("val/acc1" in m for m in straight.epochs.values())


def test_step_interval_checkpoint_bounds_what_a_crash_loses(tmp_path):
    """``preemption.every_n_train_steps: 5``: a run that dies without a signal at step 14
    (a crash: nothing is saved then) left ``last.ckpt`` of step 10, mid-epoch; resumed from
    it, the run ends as an uninterrupted one."""
    config = tiny_config(tmp_path / "runs", **STOCHASTIC)
    config["trainer"]["max_epochs"] = 2
    config["preemption"] = {"every_n_train_steps": 5}
    path = write_config(tmp_path / "tiny.yaml", config)
    done = fit(path)
    final = load(Path(done.trainer.log_dir) / "checkpoints" / "last.ckpt")
    assert final["global_step"] == 2 * BATCHES  # the epoch-end checkpoint comes last

    cli = ConvNNCLI(args=["--config", str(path)], run=False)
    cli.trainer.callbacks.insert(0, CrashAt(14))
    with pytest.raises(RuntimeError, match="crash at step 14"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    ckpt = load(last)
    assert ckpt["global_step"] == 10 and "metric_states" in ckpt  # 4 steps lost, not 6
    again = fit(path, ckpt=last)
    assert_same_training(final, load(Path(again.trainer.log_dir) / "checkpoints" / "last.ckpt"))


# -- a real convnn fit, and the ablation runner, in subprocesses -------------------------------


def start(cmd: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    """``cmd`` in a fresh single-threaded process that can load this file's callbacks;
    stdout and stderr together, as text."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(HELPERS)]),
        **env,
    }
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def wait_for_step(proc: subprocess.Popen, path: Path, step: int, timeout: float = 300) -> int:
    """The step in ``path`` (:class:`StepFile`) once it reaches ``step``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode} before step {step}: {proc.stdout.read()}")
        try:
            seen = json.loads(path.read_text())["step"]
        except (OSError, ValueError):
            seen = -1
        if seen >= step:
            return seen
        time.sleep(0.01)
    pytest.fail(f"step {step} not reached in {timeout} s")


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    return proc.communicate(timeout=timeout)[0]


def step_file_config(path: Path, step_file: Path, sleep: float) -> Path:
    callback = {"class_path": "test_preemption.StepFile"}
    callback["init_args"] = {"path": str(step_file), "sleep": sleep}
    path.write_text(yaml.safe_dump({"trainer": {"callbacks+": [callback]}}))
    return path


@pytest.mark.long
def test_quickstart_signalled_mid_epoch_resumes_to_the_uninterrupted_metrics(tmp_path):
    """``convnn fit`` of configs/quickstart.yaml for 2 epochs (22 steps each), SIGUSR1 from
    outside once step 30 is done: it exits with PREEMPTED within seconds, its ``last.ckpt``
    at most 2 steps past the signal; resumed, every epoch's train and val metrics and the
    final weights equal those of an uninterrupted run. Augmentation off: the digits' random
    shifts are drawn from the global generator as a batch is loaded, before the per-batch
    reseed, so the first batch after any resume would get other shifts (docs/training.md)."""
    quickstart = str(ROOT / "configs" / "quickstart.yaml")
    procs = {}
    for name in ("straight", "signalled"):
        overlay = step_file_config(tmp_path / f"{name}.yaml", tmp_path / f"{name}.step", 0.02)
        args = ["-m", "lightning_modules.cli", "fit", "-c", quickstart, "-c", str(overlay)]
        args += ["--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"]
        args += ["--data.init_args.translate", "0"]
        args += ["--trainer.logger.init_args.save_dir", str(tmp_path)]
        args += ["--trainer.logger.init_args.name", name]
        progress = str(tmp_path / f"{name}.progress.json")
        procs[name] = start([sys.executable, *args], tmp_path, CONVNN_PROGRESS_FILE=progress)
        if name == "signalled":
            resume = [sys.executable, *args]

    proc = procs["signalled"]
    at = wait_for_step(proc, tmp_path / "signalled.step", 30)
    sent = time.monotonic()
    proc.send_signal(signal.SIGUSR1)
    out = finish(proc)
    assert proc.returncode == PREEMPTED, out[-3000:]
    assert time.monotonic() - sent < 15  # a few steps and one checkpoint, not the epoch
    last = tmp_path / "signalled" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"preempted by SIGUSR1 at step {load(last)['global_step']}: wrote" in out
    step = load(last)["global_step"]
    assert at <= step <= at + 2 and step % 22  # mid-epoch 2, lost nothing past the signal

    again = start(
        [*resume, "--ckpt_path", str(last)],
        tmp_path,
        CONVNN_PROGRESS_FILE=str(tmp_path / "signalled.progress.json"),
    )
    out = finish(again)
    assert again.returncode == 0, out[-3000:]
    out = finish(procs["straight"])
    assert procs["straight"].returncode == 0, out[-3000:]
    straight = load(tmp_path / "straight" / "version_0" / "checkpoints" / "last.ckpt")
    resumed = load(tmp_path / "signalled" / "version_1" / "checkpoints" / "last.ckpt")
    assert_same_training(straight, resumed)
    history = {n: json.loads((tmp_path / f"{n}.progress.json").read_text())["history"]
               for n in procs}  # fmt: skip
    assert len(history["straight"]) == 2 and "train/acc1" in history["straight"][1]
    assert history["signalled"] == history["straight"]  # epoch 2: half before, half after


@pytest.mark.long
def test_sigterm_to_the_runner_leaves_a_resumable_cell(tmp_path):
    """SIGTERM to ``python -m ablations.runner CELL`` mid-epoch: the runner passes it on, its
    ``convnn fit`` writes ``last.ckpt`` and the runner exits with PREEMPTED, the cell
    ``interrupted``; run again, the cell resumes from that checkpoint and its result (top-1,
    loss, validation top-1 of every epoch, weights) is that of a cell never interrupted."""
    from ablations.grid import load_grid
    from ablations.runner import latest_checkpoint, prepare_cells

    cells = {}
    for name, sleep in (("straight", 0.0), ("signalled", 0.05)):
        step_file = {"path": str(tmp_path / f"{name}.step"), "sleep": sleep}
        spec = {
            "name": name,
            "base": str(ROOT / "configs" / "quickstart.yaml"),
            "set": {
                "trainer.max_epochs": 2,  # 16 steps each
                "trainer.limit_val_batches": 2,
                "trainer.enable_model_summary": False,
                "trainer.callbacks": [
                    {"class_path": "test_preemption.StepFile", "init_args": step_file}
                ],
                "data": {
                    "class_path": "datamodules.SyntheticDataModule",
                    "init_args": {
                        "num_classes": 4,
                        "image_size": 16,
                        "num_train": 256,
                        "num_val": 32,
                        "batch_size": 16,
                        "num_workers": 0,
                    },
                },  # fmt: skip
            },
            "axes": {"model.init_args.model_kwargs.depth": [2]},
        }
        grid_file = tmp_path / f"{name}.grid.yaml"
        grid_file.write_text(yaml.safe_dump(spec, sort_keys=False))
        grid = load_grid(grid_file)
        (cells[name],) = prepare_cells(grid, grid.cells(), tmp_path / name)
    runner = [sys.executable, "-m", "ablations.runner"]
    straight = start([*runner, str(cells["straight"])], tmp_path)
    proc = start([*runner, str(cells["signalled"])], tmp_path)

    at = wait_for_step(proc, tmp_path / "signalled.step", 20)
    proc.send_signal(signal.SIGTERM)
    out = finish(proc, timeout=60)
    assert proc.returncode == PREEMPTED, out[-3000:]
    cell = cells["signalled"]
    status = json.loads((cell / "status.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == "SIGTERM", status
    assert status["exit"] == PREEMPTED and not (cell / "result.json").exists()
    last = latest_checkpoint(cell)
    assert status["resume_from"] == str(last)
    step = load(last)["global_step"]
    assert at <= step <= at + 2 and step % 16, (at, step)
    assert "preempted by SIGTERM" in (cell / "train.log").read_text()

    again = start([*runner, str(cell)], tmp_path)
    out = finish(again)
    assert again.returncode == 0, out[-3000:]
    out = finish(straight)
    assert straight.returncode == 0, out[-3000:]
    a, b = (json.loads((cells[n] / "result.json").read_text()) for n in ("straight", "signalled"))
    assert (
        b["status"] == "done"
        and b["attempts"] == 2
        and b["versions"]
        == [
            "version_0",
            "version_1",
        ]
    )
    assert json.loads((cell / "status.json").read_text())["resumed_from"] == str(last)
    for key in ("top1", "top5", "loss", "val_top1_by_epoch", "best_top1", "last_epoch"):
        assert a[key] == b[key], key
    assert len(a["val_top1_by_epoch"]) == 2
    assert_same_training(load(Path(a["checkpoint"])), load(Path(b["checkpoint"])))


class Cell:
    """A ``Popen`` stand-in for a cell's runner: runs until it gets a signal."""

    def __init__(self) -> None:
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return PREEMPTED if self.signals else None

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)


def test_scheduler_passes_a_signal_on_and_starts_no_new_cell(tmp_path):
    """SIGTERM to ``convnn-ablate run`` (the local scheduler) as its first cell starts: that
    cell gets it (it checkpoints and exits), the others never start, the scheduler returns
    rather than dying (and taking its cells down with it) and restores its handler."""
    from ablations.runner import Scheduler

    started = []

    def launch(cell_dir, env):
        started.append(Cell())
        if len(started) == 1:  # before the scheduler has recorded the cell as running
            os.kill(os.getpid(), signal.SIGTERM)
        return started[-1]

    before = signal.getsignal(signal.SIGTERM)
    jobs = Scheduler(launch, parallel=2, poll_s=0.01).run([tmp_path / c for c in "abcd"])
    assert [c.signals for c in started] == [[signal.SIGTERM]]
    assert [j.code for j in jobs] == [PREEMPTED, None, None, None]
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.long
def test_one_signalled_ddp_process_stops_both_at_one_step_and_resumes_exactly(tmp_path):
    """DDP on 2 CPU processes (4 steps an epoch), SIGUSR1 to rank 1 alone as step 5 starts:
    both stop after it (rank 0 exits with PREEMPTED), ``last.ckpt`` holds step 6 and both
    processes' metric states; resumed under DDP, the run ends with the weights and every
    epoch's (synced) metrics of an uninterrupted DDP run."""
    config = tiny_config(tmp_path / "runs", **STOCHASTIC)
    config["trainer"] |= {"devices": 2, "strategy": "ddp"}
    straight = write_config(tmp_path / "straight.yaml", config)
    config["trainer"]["callbacks"] = [
        {"class_path": "test_preemption.SignalAt", "init_args": {"step": 5, "rank": 1}}
    ]
    signalled = write_config(tmp_path / "signalled.yaml", config)
    fit_cmd = [sys.executable, "-m", "lightning_modules.cli", "fit", "--config"]

    def run(path: Path, name: str, *args: str) -> subprocess.Popen:
        progress = str(tmp_path / f"{name}.progress.json")
        args = (str(path), "--trainer.logger.init_args.name", name, *args)
        return start([*fit_cmd, *args], tmp_path, CONVNN_PROGRESS_FILE=progress)

    plain = run(straight, "straight")  # at the same time, in its own directory
    first = run(signalled, "signalled")
    out = finish(first)
    assert first.returncode == PREEMPTED, out[-3000:]
    assert "preempted by a signal to another rank at step 6" in out
    runs = tmp_path / "runs"
    last = runs / "signalled" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt = load(last)
    assert ckpt["global_step"] == 6 and sorted(ckpt["metric_states"]) == [0, 1]
    again = run(straight, "signalled", "--ckpt_path", str(last))
    out = finish(again)
    assert again.returncode == 0, out[-3000:]
    out = finish(plain)
    assert plain.returncode == 0, out[-3000:]
    resumed = load(runs / "signalled" / "version_1" / "checkpoints" / "last.ckpt")
    uninterrupted = load(runs / "straight" / "version_0" / "checkpoints" / "last.ckpt")
    assert_same_training(uninterrupted, resumed)
    history = {n: json.loads((tmp_path / f"{n}.progress.json").read_text())["history"]
               for n in ("straight", "signalled")}  # fmt: skip
    assert len(history["straight"]) == 3 and history["signalled"] == history["straight"]


def test_a_step_interval_does_not_make_a_finished_cell_stale():
    """Setting ``preemption.every_n_train_steps`` in a grid changes which checkpoints a cell
    writes, not what it trains: its finished cells are not refused as of another config."""
    from ablations.staleness import changed_keys

    old = {"trainer": {"max_epochs": 2}, "preemption": {"every_n_train_steps": 0}}
    new = {"trainer": {"max_epochs": 2}, "preemption": {"every_n_train_steps": 500}}
    assert changed_keys(old, new) == {}
    assert list(changed_keys(old, {**new, "trainer": {"max_epochs": 3}})) == ["trainer.max_epochs"]


def test_sigterm_before_training_exits_preempted_not_0(tmp_path):
    """SIGTERM to ``convnn fit`` before training starts (here in the sanity check): Lightning's
    own handler stops the run, which would exit with status 0 as if it had finished (the
    runner would then evaluate an old checkpoint as the result); the CLI exits with
    PREEMPTED, and the handlers are the previous ones afterwards."""
    config = tiny_config(tmp_path / "runs")
    config["trainer"]["callbacks"] = [{"class_path": "test_preemption.SignalAtSanityCheck"}]
    path = write_config(tmp_path / "tiny.yaml", config)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)
    with pytest.raises(SystemExit) as stopped:
        ConvNNCLI(args=["fit", "--config", str(path)])
    assert stopped.value.code == PREEMPTED
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)) == before
    assert not list((tmp_path / "runs").rglob("*.ckpt"))  # it stopped before any step
