"""Switching a DataModule's ``class_path`` in a grid or on the command line: the base's init
arguments the new class does not take are dropped with one line naming them (issue 24)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_cli_journeys import convnn
from training_helpers import tiny_config, write_config

from ablations.grid import load_grid, merged_config, validate_cell
from convnn.errors import GridError

ROOT = Path(__file__).resolve().parents[2]


def _grid(tmp_path: Path, data: dict) -> Path:
    spec = {
        "name": "switch",
        "base": str(ROOT / "configs" / "quickstart.yaml"),
        "seeds": [0],
        "set": {"trainer.max_epochs": 1, **data},
        "axes": {"layer": {"convnn": {"model.init_args.model_kwargs.layer": "convnn"}}},
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_switching_the_datamodule_drops_what_it_does_not_take(tmp_path, capsys) -> None:
    """The quickstart's DigitsDataModule -> SyntheticDataModule: ``val_fraction`` and
    ``translate`` go (one note), ``seed``, ``image_size`` and the loader settings stay (the
    new class takes them), the value the grid sets is used, and the cell validates."""
    sets = {"data.class_path": "datamodules.SyntheticDataModule", "data.init_args.num_train": 64}
    grid = load_grid(_grid(tmp_path, sets))
    (cell,) = grid.cells()
    init = merged_config(grid, cell)["data"]["init_args"]
    assert "val_fraction" not in init and "translate" not in init
    assert (init["seed"], init["image_size"], init["batch_size"], init["num_train"]) == (
        0, 16, 64, 64,
    )  # fmt: skip
    merged_config(grid, cell)  # a second merge: the note is not repeated
    err = capsys.readouterr().err
    assert err.count("note: data.class_path is datamodules.SyntheticDataModule") == 1, err
    assert "dropped init_args val_fraction" in err and "SyntheticDataModule does not take" in err
    validate_cell(grid, cell)  # Option 'val_fraction' is not accepted, before the switch


def test_grid_keeps_an_init_arg_it_sets_by_name_so_the_error_names_it(tmp_path) -> None:
    sets = {
        "data.class_path": "datamodules.SyntheticDataModule",
        "data.init_args.val_fraction": 0.1,
    }
    grid = load_grid(_grid(tmp_path, sets))
    (cell,) = grid.cells()
    assert merged_config(grid, cell)["data"]["init_args"]["val_fraction"] == 0.1
    with pytest.raises(GridError, match="val_fraction"):
        validate_cell(grid, cell)


def test_command_line_switch_says_what_the_parser_dropped(tmp_path) -> None:
    """``convnn fit -c tiny.yaml --data.class_path datamodules.DigitsDataModule``: the tiny
    config's synthetic-data arguments (num_train, num_val) are dropped (jsonargparse alone
    says nothing), one note names them, and the run trains on the digits."""
    config = tiny_config(tmp_path / "runs")
    config["trainer"]["max_epochs"] = 1
    config["trainer"]["limit_train_batches"] = 4
    path = write_config(tmp_path / "tiny.yaml", config)
    args = ["fit", "-c", str(path), "--data.class_path", "datamodules.DigitsDataModule"]
    done = convnn(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    notes = [line for line in done.stderr.splitlines() if "note: data.class_path" in line]
    assert notes == [
        "convnn: note: data.class_path is datamodules.DigitsDataModule (from "
        "datamodules.SyntheticDataModule): dropped init_args num_train, num_val, "
        "which DigitsDataModule does not take"
    ], done.stderr[-3000:]
    saved = yaml.safe_load((tmp_path / "runs" / "tiny" / "version_0" / "config.yaml").read_text())
    assert saved["data"]["class_path"].endswith("DigitsDataModule")
    assert saved["data"]["init_args"]["batch_size"] == 16  # kept: Digits takes it
