"""Rerunning part of a recorded grid: ``convnn-ablate run --only`` selects cells (the same
cells, ids and directories as in the whole grid), and ``python -m ablations.record
--update`` puts the rerun settings into the recorded file only when the rerun baseline
reproduces its recorded numbers seed by seed."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from ablations.grid import load_grid
from ablations.record import update
from ablations.subset import select_cells
from convnn.errors import GridError

ROOT = Path(__file__).resolve().parents[2]
MARKERS = ROOT / "ablations" / "grids" / "spectrum_markers.yaml"


def test_only_selects_the_same_cells_as_the_whole_grid() -> None:
    grid = load_grid(MARKERS)
    cells = grid.cells()
    chosen = select_cells(grid, cells, ["layer=attention,random_9", "seed=0,3"])
    assert [(c.values["layer"], c.seed) for c in chosen] == [
        ("attention", 0),
        ("attention", 3),
        ("random_9", 0),
        ("random_9", 3),
    ]
    assert all(c in cells for c in chosen)  # same ids, overrides, baseline flag


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("layr=attention", r"no axis 'layr'; axes: \['layer', 'seed'\]"),
        ("layer=randm_9", r"layer has no value 'randm_9'; values: \['attention'"),
        ("layer", "expected AXIS=VALUE"),
        ("seed=7", "seed has no value '7'"),
    ],
)
def test_a_bad_selector_names_the_axis_and_its_values(selector: str, message: str) -> None:
    grid = load_grid(MARKERS)
    with pytest.raises(GridError, match=message):
        select_cells(grid, grid.cells(), [selector])


def test_a_bad_selector_is_one_line_from_the_command() -> None:
    command = [sys.executable, "-m", "ablations.ablate", "plan", str(MARKERS), "--only", "x=1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if not line.startswith("Seed set")]
    assert lines == ["convnn-ablate: error: --only 'x=1': no axis 'x'; axes: ['layer', 'seed']"]


def _record(base: dict[str, float], other: dict[str, float]) -> dict:
    seeds = lambda d: {s: {"top1": v} for s, v in d.items()}  # noqa: E731
    return {
        "grid": "g.yaml",
        "grid_sha256": "abc",
        "epochs": "15",
        "wall_time_s": 100.0,
        "code_version": {"git_commit": "old"},
        "settings": {
            "layer=attention": {"baseline": True, "seeds": seeds(base)},
            "layer=random_9": {"baseline": False, "seeds": seeds(other)},
            "layer=conv": {"baseline": False, "seeds": seeds({"0": 50.0})},
        },
    }


def test_update_replaces_the_rerun_settings_and_keeps_the_others() -> None:
    old = _record({"0": 100.0, "1": 99.8}, {"0": 72.0, "1": 70.0})
    new = copy.deepcopy(old)
    new["settings"].pop("layer=conv")
    new["settings"]["layer=random_9"]["seeds"] = {"0": {"top1": 95.0}, "1": {"top1": 93.0}}
    new["code_version"] = {"git_commit": "new"}
    new["wall_time_s"] = 20.0
    merged = update(old, new)
    assert merged["settings"]["layer=random_9"]["seeds"]["0"]["top1"] == 95.0
    assert merged["settings"]["layer=conv"] == old["settings"]["layer=conv"]
    assert merged["wall_time_s"] == 100.0
    assert merged["updates"] == [
        {"settings": ["layer=random_9"], "code_version": {"git_commit": "new"}, "wall_time_s": 20.0}
    ]


def test_update_refuses_a_baseline_that_does_not_reproduce_or_an_edited_grid() -> None:
    old = _record({"0": 100.0, "1": 99.8}, {"0": 72.0, "1": 70.0})
    moved = copy.deepcopy(old)
    moved["settings"]["layer=attention"]["seeds"]["1"]["top1"] = 100.0
    with pytest.raises(GridError, match="seed 1: 100.0 now, 99.8 recorded"):
        update(old, moved)
    edited = copy.deepcopy(old) | {"grid_sha256": "def"}
    with pytest.raises(GridError, match="the grid changed since it was recorded"):
        update(old, edited)
    other = copy.deepcopy(old)
    other["settings"]["layer=kvt_9"] = {"baseline": False, "seeds": {"0": {"top1": 1.0}}}
    with pytest.raises(GridError, match=r"settings \['layer=kvt_9'\] are not in the recorded"):
        update(old, other)
    no_base = copy.deepcopy(old)
    no_base["settings"].pop("layer=attention")
    with pytest.raises(GridError, match="must rerun the baseline"):
        update(old, no_base)
