"""Store a finished grid's results as data that tests check: ``docs/results/<name>.json``.

    python -m ablations.record runs/ablations/quickstart ablations/grids/quickstart.yaml \\
        docs/results/demo.json --wall-time 312

A number quoted in the README or the docs comes from such a file: per setting the seeds, each
seed's last-epoch and best-epoch top-1 and whether it converged (:func:`ablations.stats.
converged`), the mean, std and 95% interval, and the difference to the baseline paired by
seed. The file also holds the grid file's SHA-256, so that a test notices a grid edited
after its results were recorded (``tests/ablations/test_demo_results.py``), and the code version the
cells were trained with.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from convnn.errors import GridError
from lightning_modules.files import atomic_write_text

from .grid import load_grid
from .report import collect, grid_info, summarize
from .runner import read_json
from .stats import converged

__all__ = ["grid_digest", "record"]

SUMMARY_KEYS = ("mean", "std", "ci_low", "ci_high")


def grid_digest(path: Path) -> str:
    """SHA-256 of the grid file's content: its parsed YAML as canonical JSON, so that an edit
    of its comments or layout keeps the results recorded from it, and any change of a value
    does not."""
    content = yaml.safe_load(Path(path).read_text())
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _code_version(cells: list[dict[str, Any]]) -> dict[str, Any] | None:
    for cell in cells:
        for version in cell.get("versions") or []:
            found = read_json(Path(cell["dir"]) / version / "code_version.json")
            if found:
                return found
    return None


def record(out: Path, grid_path: Path, wall_time_s: float | None = None) -> dict[str, Any]:
    """The results of the grid ``grid_path`` run into ``out``, as a JSON-ready dict."""
    grid = load_grid(grid_path)
    cells = collect(Path(out), grid)
    _, rows = summarize(cells)
    settings: dict[str, Any] = {}
    for row in rows:
        done = [c for c in cells if c["setting"] == row["setting"] and c.get("status") == "done"]
        seeds = {}
        for c in sorted(done, key=lambda c: c["seed"]):
            history = c.get("val_top1_by_epoch")
            seeds[str(c["seed"])] = {
                "top1": c["top1"],
                "best_top1": c.get("best_top1"),
                "best_epoch": c.get("best_epoch"),
                "converged": converged(history) if history else None,
                "val_top1_by_epoch": history,
            }
        entry: dict[str, Any] = {"baseline": row["baseline"], "n": row["n"], "seeds": seeds}
        entry["top1"] = {k: row[f"top1_{k}"] for k in SUMMARY_KEYS}
        entry["best_top1"] = {k: row[f"best_top1_{k}"] for k in SUMMARY_KEYS}
        if not row["baseline"]:
            entry["diff_top1"] = {
                "mean": row["diff_top1"],
                **{k: row[f"diff_top1_{k}"] for k in SUMMARY_KEYS[1:]},
                "pairs": row["diff_pairs"],
            }
        settings[row["setting"]] = entry
    info = grid_info(cells)
    return {
        "grid": str(grid_path),
        "grid_sha256": grid_digest(grid_path),
        "epochs": info["epochs"],
        "seeds": info["seeds"],
        "wall_time_s": wall_time_s,
        "code_version": _code_version(cells),
        "settings": settings,
    }


def update(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` recorded results with the settings of ``new`` (a record of some of the same
    grid's cells, rerun with the baseline: ``convnn-ablate run --only``) put in their place.

    The baseline must reproduce its recorded top-1 seed by seed, so that the new settings'
    paired differences stand on the recorded baseline; the change is listed in
    ``updates`` (settings, code version, wall time)."""
    if old["grid_sha256"] != new["grid_sha256"] or old["epochs"] != new["epochs"]:
        raise GridError(f"{new['grid']}: the grid changed since it was recorded; record it anew")
    unknown = sorted(set(new["settings"]) - set(old["settings"]))
    if unknown:
        raise GridError(f"settings {unknown} are not in the recorded file: cells of another grid?")
    base = [name for name, entry in new["settings"].items() if entry["baseline"]]
    if not base:
        raise GridError("an update must rerun the baseline setting too (--only ... ,BASELINE)")
    for name in base:
        for seed, entry in new["settings"][name]["seeds"].items():
            recorded = old["settings"][name]["seeds"].get(seed, {}).get("top1")
            if recorded != entry["top1"]:
                raise GridError(
                    f"baseline {name} seed {seed}: {entry['top1']} now, {recorded} recorded; "
                    "the baseline does not reproduce, so record the whole grid anew"
                )
    changed = [name for name in new["settings"] if name not in base]
    settings = {**old["settings"], **{name: new["settings"][name] for name in changed}}
    note = {"settings": changed, "code_version": new["code_version"]}
    note["wall_time_s"] = new["wall_time_s"]
    return {**old, "settings": settings, "updates": [*old.get("updates", []), note]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ablations.record", description=__doc__)
    parser.add_argument("out", type=Path, help="the grid's output directory")
    parser.add_argument("grid", type=Path, help="the grid file it was run from")
    parser.add_argument("to", type=Path, help="the JSON file to write")
    parser.add_argument("--wall-time", type=float, default=None, help="measured seconds")
    parser.add_argument(
        "--update",
        action="store_true",
        help="replace only the settings run in OUT (with the baseline) in the recorded file",
    )
    args = parser.parse_args(argv)
    if args.update and not args.to.is_file():
        parser.error(f"--update: {args.to} does not exist; record the whole grid first")
    data = record(args.out, args.grid, args.wall_time)
    if args.update:
        try:
            data = update(json.loads(args.to.read_text()), data)
        except GridError as err:  # the recorded file is left as it was
            parser.error(str(err))
    args.to.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.to, json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.to}")


if __name__ == "__main__":
    main()
