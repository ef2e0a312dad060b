"""A grid keeps the user's loggers (issue 24): the cell's TensorBoard logger comes first (its
directory holds the cell's checkpoints), every other logger of the base config follows as
the user set it and gets the metrics, hyper-parameters and locality scalars; each cell also
gets ``metrics.csv``, one row per epoch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml
from training_helpers import events, run_grid, tiny_config, write_config

from ablations.grid import cell_loggers

ROOT = Path(__file__).resolve().parents[2]
TB = "lightning.pytorch.loggers.TensorBoardLogger"
CSV = "lightning.pytorch.loggers.CSVLogger"


def test_cell_loggers_keep_every_user_logger_behind_the_cells_tensorboard(tmp_path) -> None:
    out = tmp_path / "cell"
    mine = {"class_path": CSV, "init_args": {"save_dir": "/elsewhere"}}
    wandb = {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {"project": "p"}}
    cell = {"save_dir": str(out), "name": "", "version": None}
    assert cell_loggers(None, out) == {"class_path": TB, "init_args": cell}
    assert cell_loggers(True, out) == {"class_path": TB, "init_args": cell}
    assert cell_loggers(mine, out) == [{"class_path": TB, "init_args": cell}, mine]
    board = {"class_path": TB, "init_args": {"save_dir": "runs", "default_hp_metric": False}}
    merged = cell_loggers([mine, board, wandb], out)
    assert merged == [
        {"class_path": TB, "init_args": {"default_hp_metric": False, **cell}},
        mine,
        wandb,
    ]
    assert board["init_args"]["save_dir"] == "runs"  # the base config is not changed


def test_a_grid_cell_logs_to_the_users_csv_logger_and_its_own_table(tmp_path) -> None:
    user_logs = tmp_path / "user_logs"
    base = tiny_config(tmp_path / "unused")
    base["trainer"]["max_epochs"] = 2
    base["trainer"]["callbacks"] = [
        {
            "class_path": "lightning_modules.locality_callback.LocalityMonitor",
            "init_args": {"every_n_epochs": 1, "num_images": 4},
        }
    ]
    base["trainer"]["logger"] = [
        {"class_path": CSV, "init_args": {"save_dir": str(user_logs), "name": "mine"}}
    ]
    base_path = write_config(tmp_path / "base.yaml", base)
    grid = {"name": "loggers", "base": str(base_path), "seeds": [0],
            "axes": {"k": {"k3": {"model.init_args.model_kwargs.k": 3}}}}  # fmt: skip
    out = run_grid(grid, tmp_path)
    (cell,) = [p.parent for p in out.glob("*/result.json")]
    assert json.loads((cell / "result.json").read_text())["status"] == "done"
    # the cell's own TensorBoard run, with its checkpoints, as before
    assert list((cell / "version_0" / "checkpoints").glob("last.ckpt"))
    scalars = events(cell / "version_0").Tags()["scalars"]
    assert "val/acc1" in scalars and any(t.startswith("locality/") for t in scalars)
    # the user's CSV logger got the epoch metrics, the locality scalars and the hparams
    (user_csv,) = user_logs.glob("mine/version_*/metrics.csv")
    columns = next(csv.reader(user_csv.open()))
    assert "val/acc1" in columns
    assert any(c.startswith("locality/") and c.endswith("/mean_distance") for c in columns)
    hparams = yaml.safe_load((user_csv.parent / "hparams.yaml").read_text())
    assert hparams["model"] == "convnn_vit_tiny_patch4_32"
    # and the cell's own table: one row per epoch
    rows = list(csv.DictReader((cell / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0 <= float(r["val/acc1"]) <= 1 and float(r["train/loss"]) > 0 for r in rows)
