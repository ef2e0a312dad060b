"""``convnn-ablate``: plan, run and report ablation grids.

convnn-ablate plan ablations/grids/quickstart.yaml
convnn-ablate run ablations/grids/quickstart.yaml --out runs/ablations/quickstart --parallel 2
convnn-ablate run GRID --out DIR --gpus 0,1,2,3,4,5,6,7 --gpus-per-cell 1
convnn-ablate run GRID --out DIR --launcher slurm
convnn-ablate run GRID --out DIR --only layer=attention,random_9 --only seed=0,1
convnn-ablate report DIR [--grid GRID]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from convnn.errors import GridError
from lightning_modules.cli.exits import run_command
from lightning_modules.files import check_writable

from .grid import Cell, Grid, load_grid, validate_cell
from .progress import STYLE, GridProgress
from .runner import prepare_cells, read_state, run_local
from .subset import select_cells

__all__ = ["main"]


def plan(grid: Grid, console: Console, need_data: bool = False, only: Sequence[str] = ()) -> list:
    """Validate every setting (raises :class:`GridError`; its seeds' cells differ only in
    ``seed_everything``) and print the plan table of every cell; a data set missing on this
    machine is a warning, or an error when ``need_data`` (a local run). ``only``: the
    ``--only`` selectors (:mod:`ablations.subset`) of a subset of the cells."""
    cells = grid.cells()
    if only:
        cells = select_cells(grid, cells, only)
    warnings = []
    first: dict[str, Cell] = {}  # the cells of a setting differ only in seed_everything
    for cell in cells:
        first.setdefault(cell.setting, cell)
    for cell in first.values():
        warnings += validate_cell(grid, cell, need_data)
    table = Table(title=f"{grid.name}: {len(cells)} cells")
    table.add_column("id")
    table.add_column("name")
    table.add_column("changes")
    for cell in cells:
        changes = ", ".join(f"{k}={v}" for k, v in cell.overrides.items())
        table.add_row(cell.id, cell.name, changes + (f", seed={cell.seed}" if cell.seed else ""))
    console.print(table)
    for warning in dict.fromkeys(warnings):
        console.print(f"[yellow]warning:[/] {warning}")
    return cells


def status_table(dirs: list[Path]) -> Table:
    table = Table(title="cells")
    for col in ("id", "status", "attempt", "top-1"):
        table.add_column(col)
    for d in dirs:
        state = read_state(d)
        status = state.get("status", "pending")
        top1 = state.get("top1")
        table.add_row(
            d.name,
            f"[{STYLE.get(status, '')}]{status}[/]",
            str(state.get("attempts", state.get("attempt", ""))),
            "" if top1 is None else f"{top1:.2f}",
        )
    return table


def run(args: argparse.Namespace, console: Console) -> int:
    grid = load_grid(args.grid)
    out = Path(args.out)
    check_writable(out, "--out directory")
    cells = plan(grid, console, need_data=args.launcher == "local", only=args.only)
    dirs = prepare_cells(grid, cells, out, rerun=args.rerun)
    if args.launcher == "slurm":
        from .slurm import submit

        jobs = submit(dirs, out, grid.slurm, rerun=args.rerun)
        console.print(f"submitted {len(jobs)} cells: {', '.join(j.job_id for j in jobs)}")
        return 0
    gpus = [g for g in args.gpus.split(",") if g] if args.gpus else None
    slots = len(gpus) // args.gpus_per_cell if gpus else args.parallel
    with GridProgress(dirs, slots, console, live=console.is_terminal) as progress:
        run_local(dirs, args.parallel, gpus, args.gpus_per_cell, args.rerun, progress.update)
    console.print(status_table(dirs))
    failed = [d.name for d in dirs if read_state(d).get("status") != "done"]
    if failed:
        console.print(f"[red]{len(failed)} cells not done[/]: {', '.join(failed)} (see train.log)")
    return 1 if failed else 0


def report(args: argparse.Namespace, console: Console) -> int:
    from .report import markdown, write_report

    if not any(Path(args.dir).glob("*/cell.json")):
        raise GridError(f"'{args.dir}' holds no ablation cells (<dir>/<cell>/cell.json)")
    grid = load_grid(args.grid) if getattr(args, "grid", None) else None
    axes, rows, info = write_report(args.dir, grid)
    console.print(markdown(axes, rows, info), markup=False, soft_wrap=True)
    console.print(f"wrote {Path(args.dir) / 'results.csv'}, results.md, plots and hparams/")
    return 0


ONLY_HELP = "AXIS=VALUE[,VALUE...] (or seed=...): only the matching cells; repeatable"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convnn-ablate", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("plan", help="list and validate the cells of a grid")
    sp.add_argument("grid")
    sp.add_argument("--only", action="append", default=[], help=ONLY_HELP)
    sr = sub.add_parser("run", help="run every unfinished cell of a grid")
    sr.add_argument("grid")
    sr.add_argument("--out", required=True, help="output directory, one subdirectory per cell")
    sr.add_argument("--parallel", type=int, default=1, help="cells at once on CPU")
    sr.add_argument("--gpus", default=None, help="GPU ids to schedule onto, e.g. 0,1,2,3")
    sr.add_argument("--gpus-per-cell", type=int, default=1, help="DDP for more than one")
    sr.add_argument("--launcher", choices=["local", "slurm"], default="local")
    sr.add_argument("--rerun", action="store_true", help="rerun finished cells too")
    sr.add_argument("--report", action="store_true", help="write the report afterwards")
    sr.add_argument("--only", action="append", default=[], help=ONLY_HELP)
    sp_r = sub.add_parser("report", help="results.csv, results.md, plots, HParams")
    sp_r.add_argument("dir")
    sp_r.add_argument(
        "--grid",
        default=None,
        help="grid file: its current baseline and published numbers (default: as recorded "
        "in the cells when they were prepared)",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``convnn-ablate``; bad input (a grid, a cell, a directory) ends it with
    one line on stderr and exit status 2 (:mod:`lightning_modules.cli.exits`)."""
    args = parser().parse_args(argv)
    console = Console()

    def body() -> int:
        if args.command == "plan":
            plan(load_grid(args.grid), console, only=args.only)
            return 0
        if args.command == "run":
            code = run(args, console)
            if args.report:
                args.dir = args.out
                report(args, console)
            return code
        return report(args, console)

    sys.exit(run_command("convnn-ablate", body))


if __name__ == "__main__":
    main()
