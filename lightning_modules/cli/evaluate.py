"""``convnn evaluate --ckpt PATH``: the arguments, the printed table and the JSON file of
:func:`lightning_modules.evaluation.evaluate` (accuracy, loss, cost and throughput of a
checkpoint, beside the paper's numbers when its network is a published row).

The JSON file is written atomically; its directory is checked for writing before the
evaluation starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from jsonargparse import ArgumentParser
from rich.console import Console
from rich.table import Table

from ..files import atomic_write_json, check_checkpoint_file, check_writable
from .parser import CommandParser

__all__ = ["checkpoint_parser", "main", "print_results"]


def print_results(results: dict[str, Any], console: Console | None = None) -> None:
    """The measured numbers in a table; with a published row of this network (docs/method.md §4,
    ``lightning_modules.paper``) the paper's top-1, params and GFLOPs in a column beside them, and
    measured - paper when the data is the paper's."""
    paper = results.get("paper")
    table = Table(title=f"{results['model']} on {results['data'].rsplit('.', 1)[-1]}")
    table.add_column("metric")
    table.add_column("measured", justify="right")
    if paper is not None:
        table.add_column("paper", justify="right")
        table.caption = f"paper: {paper['label']} on {paper['data']} ({paper['source']})"
    else:
        table.caption = "paper: no published row for this network (lightning_modules/paper.py)"

    def published(key: str, fmt: str) -> str:
        value = (paper or {}).get(key)
        return "" if value is None else fmt.format(value)

    rows = [
        ("top-1 (%)", f"{results['top1']:.2f}", published("top1", "{:.2f}")),
        ("top-5 (%)", f"{results['top5']:.2f}", ""),
        ("loss", f"{results['loss']:.4f}", ""),
        ("images", str(results["num_images"]), ""),
        ("params", f"{results['params']:,}", published("params_m", "{:.2f}M")),
        ("GFLOPs", f"{results['gflops']:.3f}", published("gflops", "{:.2f}")),
        ("images/s", _speed(results), ""),
    ]
    if paper is not None:
        diff = paper["difference"]
        text = f"{diff:+.2f}" if diff is not None else f"n/a: {paper['note']}"
        rows.append(("top-1 measured - paper", text, ""))
    for row in rows:
        table.add_row(*row[: len(table.columns)])
    console = console or Console()
    info = results.get("checkpoint_info")
    if info is not None:
        from ..evaluation import describe_checkpoint

        console.print(f"evaluated {describe_checkpoint(info)}", soft_wrap=True)
    console.print(table)


def _speed(results: dict[str, Any]) -> str:
    """``images/s (device)``, with the spread of the repeats and any load from others."""
    text = f"{results['images_per_second']:.1f} ({results['device']}"
    speed = results.get("throughput") or {}
    if speed.get("repeats", 1) > 1:
        text += f", median of {speed['repeats']}: {speed['slowest']:.1f}-{speed['fastest']:.1f}"
    if speed.get("under_load"):
        text += f", under load: others kept {speed['others_cpus']:.1f} of {speed['cpus']} CPUs busy"
    return text + ")"


def checkpoint_parser(prog: str, description: str) -> ArgumentParser:
    """A parser with the arguments of every command that reads a checkpoint and its data:
    ``--ckpt``, ``--data``, ``--split``, ``--accelerator``, ``--batch_size``,
    ``--num_workers``."""
    parser = CommandParser(prog=prog, description=description)
    parser.add_argument("--ckpt", type=str, required=True, help="Lightning checkpoint (.ckpt).")
    parser.add_argument(
        "--data",
        type=str | None,
        default=None,
        help="DataModule: a YAML file (run config or class_path/init_args), a mapping, or a "
        "class path. Default: the run's DataModule saved in the checkpoint.",
    )
    parser.add_argument("--split", type=Literal["val", "test"], default="val")
    parser.add_argument("--accelerator", type=str, default="auto", help="auto, cpu or gpu")
    parser.add_argument("--batch_size", type=int | None, default=None)
    parser.add_argument("--num_workers", type=int | None, default=None)
    return parser


def _parser() -> ArgumentParser:
    parser = checkpoint_parser(
        "convnn evaluate",
        "Evaluate a checkpoint: top-1/top-5, loss, params, GFLOPs, images/s.",
    )
    parser.add_argument("--out", type=str | None, default=None, help="JSON output path.")
    parser.add_argument("--precision", type=str | None, default=None, help="e.g. bf16-mixed")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``convnn evaluate``: the table on stdout and the results as JSON (``--out``, default
    beside the checkpoint); returns the results."""
    args = _parser().parse_args(argv)
    out = Path(args.out) if args.out else Path(args.ckpt).with_suffix(f".{args.split}.json")
    check_writable(out.parent, "--out directory")
    check_checkpoint_file(args.ckpt, "--ckpt")  # before the seconds of Lightning imports
    from ..evaluation import evaluate

    results = evaluate(
        args.ckpt,
        args.data,
        args.split,
        args.accelerator,
        args.precision,
        args.batch_size,
        args.num_workers,
    )
    atomic_write_json(out, results)
    console = Console()
    print_results(results, console)
    console.print(f"wrote {out}")
    return results
