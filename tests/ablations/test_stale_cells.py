"""An edited grid never reuses, nor pools, cells trained with its old config (issue 24).

The user's path: run a grid, bump its epochs, run again. The second run must name the
finished cells and the changed key and refuse (one line, before any training); ``--rerun``
retrains them with the new schedule; and a report never averages cells of one setting that
trained with different configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from training_helpers import ablate_here

from ablations.grid import load_grid
from ablations.report import write_report
from ablations.runner import prepare_cells
from convnn.errors import GridError

SET = {
    "trainer.max_epochs": 1,
    "trainer.limit_train_batches": 2,
    "trainer.limit_val_batches": 1,
    "trainer.callbacks": [],
    "trainer.enable_model_summary": False,
    "data": {
        "class_path": "datamodules.SyntheticDataModule",
        "init_args": {"num_classes": 4, "image_size": 16, "num_train": 32, "num_val": 16,
                      "batch_size": 16, "num_workers": 0},
    },
}  # fmt: skip


def write_grid(path: Path, epochs: int, seeds: list[int]) -> Path:
    spec = {
        "name": "stale",
        "base": "configs/quickstart.yaml",
        "seeds": seeds,
        "set": {**SET, "trainer.max_epochs": epochs},
        "axes": {"model.init_args.model_kwargs.depth": [1]},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def epochs_of(cell_dir: Path) -> int:
    return yaml.safe_load((cell_dir / "config.yaml").read_text())["trainer"]["max_epochs"]


def test_bumped_epochs_are_refused_then_rerun(tmp_path):
    grid, out = tmp_path / "grid.yaml", tmp_path / "out"
    write_grid(grid, epochs=1, seeds=[0])
    assert ablate_here("run", str(grid), "--out", str(out)).returncode == 0
    (cell,) = [p.parent for p in out.glob("*/result.json")]
    result = (cell / "result.json").read_text()

    write_grid(grid, epochs=2, seeds=[0, 1])  # the user edits the schedule and adds a seed
    refused = ablate_here("run", str(grid), "--out", str(out))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = refused.stderr.strip().splitlines()[-1]  # after the plan's table: one error line
    assert line.startswith("convnn-ablate: error:"), refused.stderr
    assert cell.name in line and "trainer.max_epochs 1 -> 2" in line and "--rerun" in line
    assert (cell / "result.json").read_text() == result  # nothing was touched
    assert epochs_of(cell) == 1 and len(list(out.iterdir())) == 1  # no new cell prepared

    done = ablate_here("run", str(grid), "--out", str(out), "--rerun", "--parallel", "2")
    assert done.returncode == 0, done.stdout[-2000:]
    cells = sorted(p.parent for p in out.glob("*/result.json"))
    assert len(cells) == 2 and all(epochs_of(c) == 2 for c in cells)
    assert all(json.loads((c / "result.json").read_text())["last_epoch"] == 2 for c in cells)

    # moving --out changes only the logger's directory, which records and changes no result
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    loaded = load_grid(grid)
    assert prepare_cells(loaded, loaded.cells(), moved) == [moved / c.name for c in cells]


def test_report_refuses_to_pool_cells_of_different_configs(tmp_path):
    """Two finished seeds of one setting, one trained for 3 epochs and one for 6: no mean."""
    for seed, epochs in ((0, 3), (1, 6)):
        cell = tmp_path / f"depth=1_seed={seed}"
        cell.mkdir()
        info = {"id": cell.name, "setting": "depth=1", "values": {"depth": 1}, "seed": seed,
                "axes": ["depth"], "order": 0}  # fmt: skip
        (cell / "cell.json").write_text(json.dumps(info))
        config = {"seed_everything": seed, "trainer": {"max_epochs": epochs}}
        (cell / "config.yaml").write_text(yaml.safe_dump(config))
        (cell / "result.json").write_text(json.dumps({"status": "done", "top1": 50.0 + seed}))
    with pytest.raises(GridError, match=r"trainer\.max_epochs 3 -> 6") as info:
        write_report(tmp_path)
    assert "depth=1" in str(info.value) and "--rerun" in str(info.value)
    config = yaml.safe_load((tmp_path / "depth=1_seed=1/config.yaml").read_text())
    config["trainer"]["max_epochs"] = 3  # the same config, other seeds: pooled as before
    (tmp_path / "depth=1_seed=1/config.yaml").write_text(yaml.safe_dump(config))
    _, rows, _ = write_report(tmp_path)
    assert rows[0]["n"] == 2
