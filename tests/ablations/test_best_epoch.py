"""A cell's best epoch beside its last, on real cells: one trained, killed mid-epoch and
resumed by the runner into a second version directory; the report built from that folder;
`convnn evaluate` saying which checkpoint it evaluated.

The independent record of every epoch is the run's TensorBoard ``val/acc1`` (one value per
validated epoch in each version directory): the cell's ``best_top1`` must be its maximum
over both attempts, at its first epoch, whatever the checkpoint callback of the resumed
attempt believes (it starts a fresh best in a new directory).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from training_helpers import events, tiny_config

from ablations.report import write_report
from ablations.runner import _lineage, run_cell

TESTS = Path(__file__).resolve().parent
HELPERS = TESTS.parent / "helpers"


def _cell_dir(out: Path, seed: int) -> Path:
    """A cell directory as ``prepare_cells`` leaves it: ``cell.json`` and ``config.yaml`` (the
    tiny ViT of the training tests, 4 epochs, logging into the cell's directory)."""
    cell = out / f"tiny-s{seed}"
    cell.mkdir(parents=True)
    info = {"id": cell.name, "name": f"layer=convnn seed={seed}", "setting": "layer=convnn"}
    info |= {"values": {"layer": "convnn"}, "seed": seed, "overrides": {}, "order": 0}
    info |= {"baseline": True, "paper": None, "grid": "tiny", "axes": ["layer"]}
    (cell / "cell.json").write_text(json.dumps(info))
    config = tiny_config(cell)
    config["seed_everything"] = seed
    config["trainer"]["max_epochs"] = 4
    config["trainer"]["logger"]["init_args"] |= {"name": "", "version": None}
    (cell / "config.yaml").write_text(yaml.safe_dump(config))
    return cell


def _epoch_scores(cell: Path, versions: list[str]) -> list[float]:
    """``val/acc1`` (%) of every epoch, in order, from the TensorBoard events of ``versions``."""
    scores = []
    for version in versions:
        scores += [100 * e.value for e in events(cell / version).Scalars("val/acc1")]
    return scores


@pytest.fixture(scope="module")
def resumed_cell(tmp_path_factory) -> Path:
    """A cell whose first attempt is SIGKILLed in epoch 3 (``KillAtBatch``) and whose second
    attempt, run by the runner as after any failure, resumes from ``version_0/last.ckpt``
    (end of epoch 2) into ``version_1`` and trains epochs 3 and 4."""
    out = tmp_path_factory.mktemp("cells")
    cell = _cell_dir(out, 0)
    kill = json.dumps([{"class_path": "training_helpers.KillAtBatch",
                        "init_args": {"epoch": 2, "batch": 3}}])  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        path = os.pathsep.join(
            p for p in (str(TESTS), str(HELPERS), os.environ.get("PYTHONPATH")) if p
        )
        patch.setenv("PYTHONPATH", path)
        patch.setenv("OMP_NUM_THREADS", "1")
        assert run_cell(cell, ["--trainer.callbacks", kill]) != 0  # killed: a failed attempt
        status = json.loads((cell / "status.json").read_text())
        assert status["status"] == "failed" and status["versions"] == ["version_0"]
        assert run_cell(cell) == 0
    return cell


def test_result_records_the_best_epoch_over_every_attempt(resumed_cell):
    result = json.loads((resumed_cell / "result.json").read_text())
    assert result["versions"] == ["version_0", "version_1"] and result["attempts"] == 2
    scores = _epoch_scores(resumed_cell, result["versions"])
    assert len(scores) == 4  # epochs 1, 2 (first attempt), 3, 4 (resumed)
    assert result["last_epoch"] == 4
    assert result["top1"] == pytest.approx(scores[-1], abs=1e-3)  # evaluated last.ckpt
    assert result["best_top1"] == pytest.approx(max(scores), abs=1e-3)
    assert result["best_epoch"] == scores.index(max(scores)) + 1
    assert result["best_top1"] >= result["top1"]
    assert Path(result["best_checkpoint"]).is_file()
    if result["best_epoch"] != 4:
        best = Path(result["best_checkpoint"])
        assert best.name != "last.ckpt" and best.parent.parent.name == (
            "version_0" if result["best_epoch"] <= 2 else "version_1"
        )


def test_the_runner_reads_the_best_epoch_with_torch_alone(resumed_cell):
    """The runner's best-epoch reading of the cell's checkpoints (both attempts) gives the
    recorded fields in a fresh process that imports neither Lightning nor timm (the cost of
    their import, once per cell, is what lightning_modules.checkpoint_files saves)."""
    result = json.loads((resumed_cell / "result.json").read_text())
    code = f"""
import json, sys
from pathlib import Path
from ablations.runner import best_epoch
last = {{"epoch": {result["last_epoch"]}, "path": {result["checkpoint"]!r}}}
found = best_epoch(Path({str(resumed_cell)!r}), {result["versions"]!r}, last, {result["top1"]!r})
print(json.dumps([found, "lightning" in sys.modules, "timm" in sys.modules]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=TESTS.parent.parent, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found, lightning, timm = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {k: result[k] for k in found} and found["best_epoch"] is not None
    assert not lightning and not timm


def test_lineage_of_resumed_fresh_and_old_cells(tmp_path):
    for v in range(3):
        (tmp_path / f"version_{v}" / "checkpoints").mkdir(parents=True)
    ckpt = tmp_path / "version_2" / "checkpoints" / "last.ckpt"
    assert _lineage(tmp_path, {"versions": ["version_0"]}, None) == []  # fresh or --rerun
    assert _lineage(tmp_path, {"versions": ["version_1"]}, ckpt) == ["version_1", "version_2"]
    assert _lineage(tmp_path, {"versions": []}, ckpt) == ["version_2"]  # after a --rerun
    assert _lineage(tmp_path, {}, ckpt) == ["version_0", "version_1", "version_2"]  # older cell


def test_report_shows_best_and_last_from_real_cells(resumed_cell, tmp_path):
    """The report of the real cell folder (and of a copy whose result.json predates the best
    epoch: the report finds it from the checkpoints) shows both statistics."""
    out = tmp_path / "out"
    shutil.copytree(resumed_cell, out / resumed_cell.name)
    result = json.loads((resumed_cell / "result.json").read_text())
    old = out / "tiny-s1"
    shutil.copytree(resumed_cell, old)
    recorded = {k: v for k, v in result.items() if not k.startswith(("best_", "last_"))}
    recorded = {k: v for k, v in recorded.items() if k != "versions"} | {"id": old.name}
    recorded["seed"] = 1
    recorded["checkpoint"] = str(old / Path(result["checkpoint"]).relative_to(resumed_cell))
    (old / "result.json").write_text(json.dumps(recorded))
    info = json.loads((old / "cell.json").read_text()) | {"id": old.name, "seed": 1}
    (old / "cell.json").write_text(json.dumps(info))

    rows = write_report(out)[1]
    (row,) = rows
    assert row["n"] == row["best_n"] == 2
    assert row["best_top1_mean"] == pytest.approx(result["best_top1"])
    assert row["best_epochs"] == [result["best_epoch"]] * 2 and row["last_epochs"] == [4, 4]
    md = (out / "results.md").read_text()
    head, _, line = [x for x in md.splitlines() if x.startswith("|")]
    cells = dict(zip(head.split("|"), line.split("|"), strict=True))
    assert cells[" best top-1 (%) "].strip() == f"{result['best_top1']:.2f} ± 0.00"
    assert cells[" best epoch "].strip() == str(result["best_epoch"])
    assert cells[" top-1 (%) "].strip() == f"{result['top1']:.2f} ± 0.00"
    assert "best top-1: the best epoch's validation top-1" in md


def test_evaluate_says_which_checkpoint(resumed_cell, tmp_path, capsys):
    from lightning_modules.cli import main

    result = json.loads((resumed_cell / "result.json").read_text())
    last = resumed_cell / "version_1" / "checkpoints" / "last.ckpt"
    args = ["--accelerator", "cpu", "--out", str(tmp_path / "r.json")]
    main(["evaluate", "--ckpt", str(last), *args])
    out = " ".join(capsys.readouterr().out.split())
    info = json.loads((tmp_path / "r.json").read_text())["checkpoint_info"]
    assert info["kind"] == "last" and info["epoch"] == 4 and info["path"] == str(last)
    assert f"evaluated {last}: last checkpoint, epoch 4 (the run's best val/acc1" in out
    scores = _epoch_scores(resumed_cell, ["version_1"])  # the resumed attempt's own epochs
    best_here = scores.index(max(scores)) + 3
    assert info["run_best"]["epoch"] == best_here
    assert info["run_best"]["top1"] == pytest.approx(max(scores), abs=1e-3)

    (best,) = (resumed_cell / "version_0" / "checkpoints").glob("best-*.ckpt")
    main(["evaluate", "--ckpt", str(best), *args])
    out = " ".join(capsys.readouterr().out.split())
    info = json.loads((tmp_path / "r.json").read_text())["checkpoint_info"]
    first = _epoch_scores(resumed_cell, ["version_0"])
    assert info["kind"] == "best" and info["epoch"] == first.index(max(first)) + 1
    assert re.search(rf"evaluated {re.escape(str(best))}: best checkpoint, epoch {info['epoch']}"
                     r" \(val/acc1 \d+\.\d\d% when saved\)", out), out  # fmt: skip
    assert info["val_top1"] == pytest.approx(max(first), abs=1e-3)
    assert result["best_top1"] >= info["val_top1"]


def _checkpoint(path: Path, epoch: int, score: float | None, monitored: bool = True) -> None:
    """A checkpoint file with the callback states Lightning saves: ``score`` is its own
    ``val/acc1`` as the monitoring callback's top-k, or ``None`` for the last one."""
    import torch

    monitor = "ModelCheckpoint{'monitor': 'val/acc1', 'mode': 'max'}"
    state = {"monitor": "val/acc1", "best_model_path": str(path), "best_k_models": {}}
    if score is not None:
        state |= {"best_k_models": {str(path): torch.tensor(score)}}
        state["best_model_score"] = torch.tensor(score)
    last = {"monitor": None, "best_model_path": str(path) if score is None else ""}
    callbacks = {monitor: state} if monitored else {}
    callbacks["ModelCheckpoint{'monitor': None, 'mode': 'min'}"] = last
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"state_dict": {}, "hyper_parameters": {}, "epoch": epoch - 1, "callbacks": callbacks}
    torch.save(ckpt, path)


def test_best_epoch_when_the_resumed_attempt_never_reaches_the_first_attempts_best(tmp_path):
    """The resumed attempt's callback restarts its best in version_1 (0.70 at epoch 3); the
    cell's best is version_0's 0.80 at epoch 2; a tie goes to the earlier epoch, and the last
    epoch's evaluation stands for it when it is better or the best epoch itself."""
    from ablations.runner import best_epoch

    _checkpoint(tmp_path / "version_0/checkpoints/best-a.ckpt", 2, 0.80)
    _checkpoint(tmp_path / "version_1/checkpoints/best-b.ckpt", 3, 0.70)
    _checkpoint(tmp_path / "version_2/checkpoints/best-c.ckpt", 5, 0.80)
    last = {"path": str(tmp_path / "version_1/checkpoints/last.ckpt"), "epoch": 4}
    best = best_epoch(tmp_path, ["version_0", "version_1"], last, 65.0)
    assert (best["best_top1"], best["best_epoch"]) == (pytest.approx(80.0), 2)
    assert best["best_checkpoint"].endswith("best-a.ckpt")
    tie = best_epoch(tmp_path, ["version_0", "version_1", "version_2"], last | {"epoch": 6}, 60.0)
    assert tie["best_epoch"] == 2  # 0.80 twice: the earlier epoch
    assert best_epoch(tmp_path, ["version_1"], last, 65.0)["best_epoch"] == 3  # no version_0
    better = best_epoch(tmp_path, ["version_0", "version_1"], last, 90.0)
    assert (better["best_top1"], better["best_epoch"]) == (90.0, 4)
    none = best_epoch(tmp_path / "nothing", ["version_0"], last, 65.0)
    assert none["best_top1"] is None and none["best_epoch"] is None  # unknown, not the last
