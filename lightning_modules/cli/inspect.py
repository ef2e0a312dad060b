"""``convnn inspect --ckpt CKPT --out DIR``: the arguments and the printed table of
:func:`lightning_modules.locality.inspect` (which neighbors a trained model's ConvNN layers
select, and how local they are; the files it writes are listed there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser
from rich.console import Console
from rich.table import Table

from ..files import check_checkpoint_file
from .evaluate import checkpoint_parser

__all__ = ["main", "print_locality"]


def _cell(value: float | None, percent: bool = False) -> str:
    if value is None:
        return ""
    return f"{100 * value:.0f}%" if percent else f"{value:.2f}"


def print_locality(results: dict[str, Any], console: Console | None = None) -> None:
    """The locality statistics of every layer as a table."""
    table = Table(title=f"locality of {results['model']} ({results['num_images']} images)")
    table.add_column("layer", no_wrap=True)
    names = ("map", "heads", "k", "dist", "uniform dist", "3x3", "uniform 3x3", "self", "cls")
    for name in (*names, "pad", "cover"):
        table.add_column(name, justify="right")
    for name, s in results["layers"].items():
        table.add_row(
            name,
            "x".join(map(str, s["map"])),
            str(s["heads"]),
            str(s["k"]),
            _cell(s["mean_distance"]),
            _cell(s.get("uniform_mean_distance")),
            _cell(s["window_fraction"], True),
            _cell(s.get("uniform_window_fraction"), True),
            _cell(s["self_fraction"], True),
            *(_cell(s[key], True) for key in ("prefix_fraction", "padding_fraction")),
            _cell(s["coverage"], True),
        )
    table.caption = (
        "dist: mean Chebyshev distance (grid cells; a whole 3x3 window: 0.89); 3x3, self, cls "
        "(class token), pad: shares of the selected neighbors; uniform: dist and 3x3 for neighbors "
        "chosen uniformly among the map's tokens; cover: share of the map selected"
    )
    (console or Console()).print(table)


def _parser() -> ArgumentParser:
    parser = checkpoint_parser(
        "convnn inspect",
        "Which neighbors a checkpoint's ConvNN layers select: locality.json, neighbor "
        "pictures and a plot of mean distance per layer.",
    )
    parser.add_argument("--out", type=str, required=True, help="Output directory.")
    parser.add_argument("--images", type=int, default=4, help="Images to draw (0: none).")
    parser.add_argument(
        "--queries",
        type=str,
        default="auto",
        help="Query pixels 'y,x y,x ...', or 'auto' (centre, upper left, lower right).",
    )
    parser.add_argument(
        "--max_images", type=int | None, default=None, help="Images for the statistics."
    )
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``convnn inspect``: the locality table on stdout, the files in ``--out``; returns the
    results."""
    args = _parser().parse_args(argv)
    check_checkpoint_file(args.ckpt, "--ckpt")  # before the seconds of Lightning imports
    from ..locality import inspect

    results = inspect(
        args.ckpt,
        args.out,
        args.data,
        args.split,
        args.images,
        args.queries,
        args.max_images,
        args.accelerator,
        args.batch_size,
        args.num_workers,
    )
    console = Console()
    if not results["layers"]:
        console.print(f"{results['model']} has no ConvNN layers: nothing to inspect")
    else:
        print_locality(results, console)
    console.print(
        f"wrote {Path(args.out) / 'locality.json'} and {len(results['pictures'])} pictures"
    )
    return results
