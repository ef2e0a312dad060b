"""``--only AXIS=VALUE[,VALUE...]``: run or plan a subset of a grid's cells.

    convnn-ablate run ablations/grids/spectrum_markers.yaml --out DIR \\
        --only layer=attention,random_9

A selected cell is the same cell as in the whole grid (same id, config and directory), so a
subset run fills in part of the grid's output directory and a later full run skips it.
"""

from __future__ import annotations

from collections.abc import Sequence

from convnn.errors import GridError

from .grid import Cell, Grid


def parse_only(grid: Grid, selectors: Sequence[str]) -> dict[str, set[str]]:
    """``["layer=a,b", "seed=0"]`` -> ``{"layer": {"a", "b"}, "seed": {"0"}}``, each axis and
    value checked against ``grid`` (``seed`` selects seeds)."""
    allowed = {a.name: [str(label) for label in a.labels] for a in grid.axes}
    allowed["seed"] = [str(s) for s in grid.seeds] if grid.seeds else []
    chosen: dict[str, set[str]] = {}
    for selector in selectors:
        axis, sep, values = selector.partition("=")
        if not sep or not values:
            raise GridError(f"--only {selector!r}: expected AXIS=VALUE[,VALUE...]")
        if axis not in allowed:
            raise GridError(f"--only {selector!r}: no axis {axis!r}; axes: {sorted(allowed)}")
        for value in values.split(","):
            if value not in allowed[axis]:
                raise GridError(
                    f"--only {selector!r}: {axis} has no value {value!r}; values: {allowed[axis]}"
                )
        chosen.setdefault(axis, set()).update(values.split(","))
    return chosen


def select_cells(grid: Grid, cells: list[Cell], selectors: Sequence[str]) -> list[Cell]:
    """The cells of ``cells`` whose axis values (and seed) match every ``--only`` selector."""
    chosen = parse_only(grid, selectors)

    def keep(cell: Cell) -> bool:
        values = {**{k: str(v) for k, v in cell.values.items()}, "seed": str(cell.seed)}
        return all(values[axis] in wanted for axis, wanted in chosen.items())

    return [cell for cell in cells if keep(cell)]
