"""Ablation driver: grids, local runs with resume, GPU scheduling, SLURM via submitit, report."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from training_helpers import ablate_here

from ablations import ablate as cli
from ablations.grid import load_grid
from ablations.runner import Scheduler, read_state
from convnn.errors import GridError

ROOT = Path(__file__).resolve().parents[2]
SET = {
    "trainer.max_epochs": 1,
    "trainer.limit_train_batches": 2,
    "trainer.limit_val_batches": 1,
    "trainer.callbacks": [],
    "trainer.enable_model_summary": False,
    "data": {
        "class_path": "datamodules.SyntheticDataModule",
        "init_args": {
            "num_classes": 4,
            "image_size": 16,
            "num_train": 32,
            "num_val": 16,
            "batch_size": 16,
            "num_workers": 0,
            "persistent_workers": False,
            "pin_memory": False,
        },
    },
}
AXES = {
    "model.init_args.model_kwargs.layer": ["attention", "convnn"],
    "model.init_args.model_kwargs.depth": [1, 2],
}


def write_grid(tmp_path: Path, axes: dict | None = None, **extra) -> Path:
    spec = {"name": "t", "base": "configs/quickstart.yaml", "set": SET, "axes": axes or AXES}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**spec, **extra}, sort_keys=False))
    return path


def ablate(*args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ablations.ablate", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def results(out: Path) -> list[Path]:
    return sorted(out.glob("*/result.json"))


def test_grid_expansion_ids_zip_exclude_seeds(tmp_path):
    axes = {"model.init_args.model_kwargs.k": [3, 9], "layer": {"a": {"x.y": 1}, "b": {}}}
    zips = [{"model.init_args.lr": [0.1, 0.2], "model.init_args.weight_decay": [0.0, 0.1]}]
    grid = load_grid(write_grid(tmp_path, axes, zip=zips, exclude=[{"k": 9, "layer": "b"}]))
    grid.seeds = [0, 1]
    cells = grid.cells()
    assert len(cells) == (2 * 2 - 1) * 2 * 2
    assert len({c.id for c in cells}) == len(cells)
    first = cells[0]
    assert first.values == {"k": 3, "layer": "a", "lr+weight_decay": "0.1,0.0"}
    assert first.overrides["x.y"] == 1 and first.overrides["model.init_args.lr"] == 0.1
    more = load_grid(write_grid(tmp_path, {**axes, "model.init_args.model_kwargs.k": [3, 9, 16]}))
    assert {c.id for c in load_grid(write_grid(tmp_path, axes)).cells()} <= {
        c.id for c in more.cells()
    }


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("trainer.max_epoch", 2, "trainer.max_epoch"),
        ("model.init_args.model_kwargs.similarity", "cosin", "similarity"),
        ("model.init_args.optimizer", "adamx", "model.init_args.optimizer"),
    ],
)
def test_plan_rejects_bad_key_or_value(tmp_path, capsys, key, value, needle):
    grid = write_grid(tmp_path, {key: [value]})
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["plan", str(grid)])
    assert exit_info.value.code == 2
    out = capsys.readouterr().err  # the one error line goes to stderr
    assert "error" in out and needle in out
    assert f"cell '{key.rsplit('.', 1)[-1]}={value}'" in out


def running_cells(out: Path) -> list[Path]:
    """The cells a runner is training or evaluating now (no result yet)."""
    return [d for d in out.iterdir() if d.is_dir() and read_state(d)["status"] == "running"]


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory) -> dict:
    """The 4-cell grid (layer x depth) run with ``--parallel 2`` by a driver that is SIGKILLed
    once two cells are done and a third one runs, then by a fresh driver that finishes it,
    then ``convnn-ablate report``. Returns the output directory, both drivers' output and
    exit status, and the result files of the cells done before the kill with their mtimes."""
    tmp = tmp_path_factory.mktemp("grid")
    out, grid = tmp / "out", str(write_grid(tmp))
    proc = ablate("run", grid, "--out", str(out), "--parallel", "2")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # the third cell starts
        if len(results(out)) == 2 and running_cells(out):
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("no third cell started after two were done: " + proc.communicate()[0].decode())
    before = {p: p.stat().st_mtime_ns for p in results(out)}
    os.kill(proc.pid, signal.SIGKILL)
    killed_log = proc.communicate()[0].decode()
    time.sleep(0.5)  # the cells' processes die with their parent
    resumed = ablate_here("run", grid, "--out", str(out), "--parallel", "2")  # a fresh driver
    report = ablate_here("report", str(out))
    return {"out": out, "before": before, "killed_log": killed_log, "resumed": resumed,
            "report": report}  # fmt: skip


def test_run_parallel_and_report(killed_then_resumed):
    out, resumed = killed_then_resumed["out"], killed_then_resumed["resumed"]
    log = resumed.stdout
    assert resumed.returncode == 0, log + resumed.stderr
    assert len(results(out)) == 4
    # not a terminal: one line per event, with each cell's epochs and val/acc1 as they end
    both = killed_then_resumed["killed_log"] + log  # two cells each
    for cell in (p.parent.name for p in results(out)):
        assert re.search(rf"^{cell}: epoch 1/1  val/acc1 \d+\.\d%$", both, re.M), both
        assert re.search(rf"^{cell}: done  top-1 \d+\.\d%  \(\S+\)$", both, re.M), both
    assert "4 done, 0 running, 0 failed, 0 pending of 4 cells; elapsed" in log
    report = killed_then_resumed["report"]
    assert report.returncode == 0, report.stdout + report.stderr
    rows = (out / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 5 and rows[0].startswith("layer,depth,top1_mean")
    md = (out / "results.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 6  # head, rule, one row per setting
    assert "| layer | depth | seeds | top-1 (%) | top-1 95% CI | Δ top-1 |" in table[0]
    assert table[2].startswith("| attention | 1 | 1 |") and "| baseline |" in table[2]
    assert all("| n/a |" in row for row in table[2:])  # one seed: no interval
    assert "± 0.00" not in md and md.startswith("# t: 1 epochs")
    assert (out / "plot_layer.png").stat().st_size > 0 and (out / "plot_depth.png").is_file()
    assert list((out / "hparams").rglob("events.out.tfevents.*"))
    result = json.loads(results(out)[0].read_text())
    assert result["status"] == "done" and result["params"] > 0 and result["gflops"] > 0
    speed = result["throughput"]  # median of timed repeats, with the load from other processes
    assert speed["slowest"] <= result["images_per_second"] <= speed["fastest"]
    assert speed["repeats"] == 5 and speed["others_cpus"] >= 0
    assert speed["under_load"] == (speed["others_cpus"] > speed["cpus"] - speed["threads"] + 0.25)


def test_each_cell_was_evaluated_by_its_own_fit(killed_then_resumed):
    """A one-process cell's ``convnn fit`` evaluates its ``last.ckpt`` after training (no
    second process importing torch and building the data again); the runner records those
    metrics, and they equal an evaluation of the checkpoint in a fresh process's way."""
    from ablations import runner
    from lightning_modules.cell_evaluation import evaluate_cell

    for path in results(killed_then_resumed["out"]):
        result = json.loads(path.read_text())
        done = json.loads((path.parent / runner.EVALUATION_FILE).read_text())
        assert done["evaluated"] == str(Path(result["checkpoint"]).resolve())
        assert (done["top1"], done["loss"]) == (result["top1"], result["loss"])
        assert (path.parent / "locality.json").is_file()
    again = evaluate_cell(Path(result["checkpoint"]))
    assert (again["top1"], again["loss"]) == (done["top1"], done["loss"])


def test_the_runner_evaluates_itself_when_the_fit_did_not(tmp_path, monkeypatch):
    """No ``evaluation.json``, or one of another checkpoint: the runner evaluates the newest
    ``last.ckpt`` itself."""
    from ablations import runner

    last = tmp_path / "version_1" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    monkeypatch.setattr(runner, "_evaluate", lambda ckpt: {"top1": 1.0, "by": "runner"})
    assert runner._metrics(tmp_path, last)["by"] == "runner"
    older = str(tmp_path / "version_0" / "checkpoints" / "last.ckpt")
    (tmp_path / runner.EVALUATION_FILE).write_text(json.dumps({"evaluated": older, "top1": 2.0}))
    assert runner._metrics(tmp_path, last)["by"] == "runner"
    (tmp_path / runner.EVALUATION_FILE).write_text(
        json.dumps({"evaluated": str(last.resolve()), "top1": 3.0})
    )
    assert runner._metrics(tmp_path, last) == {"top1": 3.0}


def test_sigkill_driver_then_resume(killed_then_resumed):
    out, before = killed_then_resumed["out"], killed_then_resumed["before"]
    resumed = killed_then_resumed["resumed"]
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert len(before) == 2 and len(results(out)) == 4
    for first, stamp in before.items():  # the cells done before the kill: not trained again
        assert first.stat().st_mtime_ns == stamp
        assert json.loads(first.read_text())["attempts"] == 1
        assert len(list(first.parent.glob("version_*"))) == 1
        assert f"{first.parent.name}: started" not in resumed.stdout


class FakeProc:
    """A ``Popen`` stand-in finishing after a few polls; records what ran concurrently."""

    running: list[FakeProc] = []
    overlaps: list[list[str]] = []

    def __init__(self, env: dict[str, str], polls: int) -> None:
        self.env, self.polls = env, polls
        FakeProc.running.append(self)
        FakeProc.overlaps.append([p.env["CUDA_VISIBLE_DEVICES"] for p in FakeProc.running])

    def poll(self) -> int | None:
        self.polls -= 1
        if self.polls > 0:
            return None
        FakeProc.running.remove(self)
        return 0


@pytest.mark.parametrize(("gpus_per_cell", "cells"), [(1, 9), (2, 5)])
def test_gpu_scheduler_distinct_devices(tmp_path, gpus_per_cell, cells):
    FakeProc.running, FakeProc.overlaps = [], []
    seen = []

    def launch(cell_dir, env):
        seen.append(env["CUDA_VISIBLE_DEVICES"])
        return FakeProc(env, polls=1 + len(seen) % 3)

    sched = Scheduler(launch, gpus=["0", "1", "2", "3"], gpus_per_cell=gpus_per_cell, poll_s=0)
    jobs = sched.run([tmp_path / str(i) for i in range(cells)])
    assert all(j.code == 0 for j in jobs) and len(seen) == cells
    assert all(len(s.split(",")) == gpus_per_cell for s in seen)
    for group in FakeProc.overlaps:
        devices = [d for env in group for d in env.split(",")]
        assert len(devices) == len(set(devices)) <= 4
    assert max(len(g) for g in FakeProc.overlaps) == 4 // gpus_per_cell
    with pytest.raises(GridError, match="gpus-per-cell"):
        Scheduler(launch, gpus=["0"], gpus_per_cell=2)


def test_slurm_launcher_local_executor(tmp_path):
    submitit = pytest.importorskip("submitit", reason="submitit is not installed")
    from ablations.runner import prepare_cells
    from ablations.slurm import submit

    grid = load_grid(write_grid(tmp_path, {"model.init_args.model_kwargs.layer": ["convnn"]}))
    out = tmp_path / "out"
    dirs = prepare_cells(grid, grid.cells(), out)
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=5)
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        jobs = submit(dirs, out, executor=executor)
        assert [job.result() for job in jobs] == [0]
    finally:
        os.chdir(cwd)
    assert len(results(out)) == 1
    assert submit(dirs, out, executor=executor) == []  # finished cells are not resubmitted


def _ablate_error(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    line = captured.err.strip()
    assert line.count("\n") == 0, line  # one line on stderr, before any cell is prepared
    assert "cells" not in captured.out, captured.out  # no plan table: nothing was planned
    return line


def test_run_rejects_unwritable_out_and_missing_data_before_any_cell(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    grid = str(write_grid(tmp_path))
    out = _ablate_error(["run", grid, "--out", str(blocker / "out")], capsys)
    assert out.startswith("convnn-ablate: error: --out directory") and "cannot be written" in out
    missing = {"class_path": "datamodules.CIFAR10DataModule", "init_args": {"root": "nowhere"}}
    grid = str(write_grid(tmp_path, set={**SET, "data": missing}))
    out = _ablate_error(["run", grid, "--out", str(tmp_path / "out")], capsys)
    assert "CIFAR-10 not found" in out and "nowhere" in out
    assert list((tmp_path / "out").iterdir()) == []


def test_plan_rejects_unknown_grid_key(tmp_path, capsys):
    grid = str(write_grid(tmp_path, axis={"k": [1]}))
    out = _ablate_error(["plan", grid], capsys)
    assert "unknown grid keys ['axis']" in out and "allowed:" in out


def test_missing_or_malformed_grid_and_empty_report_dir_are_one_line(tmp_path, capsys):
    out = _ablate_error(["plan", str(tmp_path / "none.yaml")], capsys)
    assert out.endswith("none.yaml' does not exist")
    (tmp_path / "bad.yaml").write_text("axes: [\n")
    assert "is not valid YAML" in _ablate_error(["plan", str(tmp_path / "bad.yaml")], capsys)
    (tmp_path / "list.yaml").write_text("- 1\n")
    assert "expected a mapping" in _ablate_error(["plan", str(tmp_path / "list.yaml")], capsys)
    out = _ablate_error(["report", str(tmp_path / "nothing")], capsys)
    assert "holds no ablation cells" in out


@pytest.mark.parametrize(
    "key, values",
    [
        ("model.init_args.label_smoothing", [0.0, 0.1]),
        ("data.init_args.batch_size", [8, 16]),
        ("model.init_args.model_kwargs.weighting", ["softmax", "similarity"]),
    ],
)
def test_any_config_key_is_an_axis(tmp_path, capsys, key, values):
    """docs/architecture.md "add a grid axis": a new axis is one grid-file entry, no code;
    the plan validates each of its cells (and the values reach the merged configs)."""
    from ablations.grid import merged_config

    grid = load_grid(write_grid(tmp_path, {key: values}))
    cells = cli.plan(grid, Console(file=io.StringIO()))
    assert [c.overrides[key] for c in cells] == values
    section, *rest = key.split(".")
    for cell, value in zip(cells, values, strict=True):
        node = merged_config(grid, cell)[section]
        for part in rest:
            node = node[part]
        assert node == value
