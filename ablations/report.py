"""``convnn-ablate report DIR``: one row per setting with statistics over seeds, the paper's
numbers beside them, plots and HParams.

Writes into ``DIR``: ``results.csv`` (every number), ``results.md`` (the table below),
``plot_<axis>.png`` (:mod:`ablations.plots`) and ``hparams/`` (TensorBoard HParams view, one
run per setting). Per setting: top-1/top-5 mean ± sample std over the seeds that finished,
the Student-t 95% interval of the mean (:mod:`ablations.stats`), the difference to the
grid's baseline setting paired by seed with its own 95% interval and whether that interval
excludes 0; the best epoch's top-1 (the runner records it beside the last epoch's: the
``top-1`` columns) and which epochs those were; and, where the grid maps the setting to a
published row (``paper:``, :mod:`lightning_modules.paper`), the paper's top-1, the statistic it is
(the best epoch for every published row) and measured mean - paper on that same statistic.
One seed shows the value alone; its interval columns say ``n/a``. Cells with a
``locality.json`` (the runner writes one after training) add the locality columns
:data:`LOCALITY` (also HParams metrics) beside the reference of uniform choice.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

import yaml

from convnn.errors import CheckpointError, GridError
from lightning_modules.files import atomic_write_text
from lightning_modules.paper import STATISTICS, statistic_of

from .grid import Grid
from .runner import read_json, read_state
from .staleness import unpooled_settings
from .stats import CONVERGED_POINTS, CONVERGED_WINDOW, LEVEL, Summary, converged, paired, summary

__all__ = ["collect", "grid_info", "locality_columns", "markdown", "summarize", "write_report"]

GRID_KEYS = ("order", "baseline", "paper")
COSTS = ("params", "gflops", "wall_time_s")
LOCALITY = tuple(
    f"locality_{name}"
    for name in (
        "first_mean_distance",
        "last_mean_distance",
        "first_window_fraction",
        "last_window_fraction",
        "prefix_fraction",
    )
)
"""Locality columns (``docs/inspection.md``): the first and last ConvNN layer's mean
Chebyshev distance and 3x3-window share, the class-token share over all layers; means
over the setting's finished seeds, empty without ConvNN layers."""
WHERE = ("first", "last")
UNIFORM = tuple(
    f"locality_{layer}_uniform_{name}"
    for name in ("mean_distance", "window_fraction")
    for layer in ("first", "last")
)
"""The same first- and last-layer numbers for neighbors chosen uniformly among the layer's
map tokens (``uniform_*`` of ``locality.json``; from the map size for older files)."""


def collect(out: Path, grid: Grid | None = None) -> list[dict[str, Any]]:
    """Every cell under ``out``: its ``cell.json`` merged with its result or status; with
    ``grid``, the grid file's current order, baseline and published numbers win over those
    recorded when the cell was prepared."""
    current = {c.id: c.to_json() for c in grid.cells()} if grid is not None else {}
    rows = []
    for info_path in sorted(out.glob("*/cell.json")):
        info = json.loads(info_path.read_text())
        state = read_state(info_path.parent)
        now = {k: v for k, v in current.get(info["id"], {}).items() if k in GRID_KEYS}
        row = {**info, **state, **now, "id": info["id"], "dir": str(info_path.parent)}
        if row.get("status") == "done" and "best_top1" not in row:
            row |= _best_of_old_cell(info_path.parent, row)
        rows.append(row | {"locality": _locality_layers(info_path.parent)})
    return rows


def _best_of_old_cell(cell_dir: Path, row: dict[str, Any]) -> dict[str, Any]:
    """``last_epoch`` and the best epoch (:func:`ablations.runner.best_epoch`) of a cell whose
    ``result.json`` predates them, from the checkpoints in its directory; nothing when it has
    none (hand-made cells) or they do not load."""
    last = Path(str(row.get("checkpoint") or ""))
    if not last.is_file():
        return {}
    from lightning_modules.checkpoint_files import checkpoint_info, load_checkpoint

    from .runner import _lineage, best_epoch

    try:
        info = checkpoint_info(load_checkpoint(last, mmap=True), last)
    except CheckpointError:
        return {}
    versions = _lineage(cell_dir, {}, last)
    top1 = None if row.get("top1") is None else float(row["top1"])
    return {"last_epoch": info["epoch"], **best_epoch(cell_dir, versions, info, top1)}


def _locality_layers(cell_dir: Path) -> dict[str, Any] | None:
    """The ``layers`` of the cell's ``locality.json`` (written after training by the runner,
    :func:`lightning_modules.locality.checkpoint_locality`), or ``None``."""
    locality = read_json(cell_dir / "locality.json")
    return (locality.get("layers") if isinstance(locality, dict) else None) or None


def locality_columns(cells: list[dict[str, Any]]) -> dict[str, float | None]:
    """:data:`LOCALITY` of the finished ``cells`` (one setting): per cell the first and last
    ConvNN layer's mean distance and 3x3-window share and the class-token share averaged
    over the layers, then the mean over the cells that have them."""
    values: dict[str, list[float]] = {name: [] for name in (*LOCALITY, *UNIFORM)}
    for cell in cells:
        layers = list((cell.get("locality") or {}).values())
        if cell.get("status") != "done" or not layers:
            continue
        found = {
            "first_mean_distance": layers[0].get("mean_distance"),
            "last_mean_distance": layers[-1].get("mean_distance"),
            "first_window_fraction": layers[0].get("window_fraction"),
            "last_window_fraction": layers[-1].get("window_fraction"),
        }
        for where, layer in (("first", layers[0]), ("last", layers[-1])):
            uniform = _uniform(layer)
            found[f"{where}_uniform_mean_distance"] = uniform[0]
            found[f"{where}_uniform_window_fraction"] = uniform[1]
        prefix = [x["prefix_fraction"] for x in layers if x.get("prefix_fraction") is not None]
        found["prefix_fraction"] = statistics.fmean(prefix) if prefix else None
        for name, value in found.items():
            if value is not None:
                values["locality_" + name].append(float(value))
    return {name: statistics.fmean(v) if v else None for name, v in values.items()}


def _uniform(layer: dict[str, Any]) -> tuple[float | None, float | None]:
    """A layer's uniform-choice mean distance and 3x3 share: recorded, or from its ``map``
    (every position a query) in a ``locality.json`` written before they were recorded."""
    distance, window = layer.get("uniform_mean_distance"), layer.get("uniform_window_fraction")
    size = layer.get("map")
    if distance is None and isinstance(size, list) and len(size) == 2:
        from convnn.inspection.locality_stats import uniform_reference

        distance, window = uniform_reference((int(size[0]), int(size[1])))
    return distance, window


def _num_classes(config: dict[str, Any], checkpoint: str | None) -> int | None:
    """Classes of the cell's data: its ``num_classes`` argument, the DataModule class's, or
    the model's in the cell's checkpoint."""
    data = config.get("data") or {}
    init = data.get("init_args") or {}
    if isinstance(init.get("num_classes"), int):
        return init["num_classes"]
    module, _, name = str(data.get("class_path", "")).rpartition(".")
    try:
        value = getattr(importlib.import_module(module), name).num_classes
        if isinstance(value, int):
            return value
    except (ImportError, AttributeError, ValueError):
        pass
    if checkpoint and Path(checkpoint).is_file():
        from lightning_modules.checkpoint_io import load_checkpoint

        try:
            return int(load_checkpoint(checkpoint, mmap=True)["hyper_parameters"]["num_classes"])
        except Exception:  # noqa: BLE001  (no chance line rather than no report)
            return None
    return None


def grid_info(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The grid's name, its epochs (``"30"``, or ``"20-60"`` when cells differ), the number
    of classes of its data (the chance level is ``100 / num_classes`` %) and its seeds."""
    epochs, classes = set(), set()
    for cell in cells:
        config_path = Path(cell.get("dir", "")) / "config.yaml"
        config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
        value = (config.get("trainer") or {}).get("max_epochs")
        if value is not None:
            epochs.add(int(value))
        if not classes:  # one cell is enough: a grid has one data set
            classes.add(_num_classes(config, cell.get("checkpoint")))
    seeds = sorted({c.get("seed") for c in cells}, key=lambda s: (s is None, s))
    span = f"{min(epochs)}-{max(epochs)}" if len(epochs) > 1 else "".join(map(str, epochs))
    return {
        "grid": next((c["grid"] for c in cells if c.get("grid")), "grid"),
        "epochs": span or "?",
        "num_classes": next(iter(classes - {None}), None),
        "seeds": seeds,
    }


def _put(row: dict[str, Any], prefix: str, s: Summary | None, low: float = 0.0) -> None:
    """Mean, std and interval of ``s`` into ``row``; the interval is clipped to the possible
    range ``[low, 100]`` (still a 95% interval: the true value lies in that range)."""
    row[f"{prefix}_mean"] = None if s is None else s.mean
    row[f"{prefix}_std"] = None if s is None else s.std
    have = s is not None and s.half is not None
    row[f"{prefix}_ci_low"] = max(low, s.low) if have else None
    row[f"{prefix}_ci_high"] = min(100.0, s.high) if have else None


def summarize(cells: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Axis names and one row per setting (grid order): statistics over seeds, the paired
    difference to the baseline, the paper's number, costs, status."""
    axes: list[str] = []
    for cell in cells:
        for name in cell.get("axes") or list(cell.get("values", {})):
            if name not in axes:
                axes.append(name)
    groups: dict[str, list[dict[str, Any]]] = {}
    for cell in sorted(cells, key=lambda c: c.get("order", math.inf)):
        groups.setdefault(cell["setting"], []).append(cell)
    marked = [s for s, members in groups.items() if any(m.get("baseline") for m in members)]
    baseline = (marked or list(groups) or [None])[0]

    def top1_by_seed(members: list[dict[str, Any]], key: str = "top1") -> dict[Any, float]:
        done = [m for m in members if m.get("status") == "done" and m.get(key) is not None]
        return {m.get("seed"): float(m[key]) for m in done}

    base = top1_by_seed(groups.get(baseline, []))
    rows = []
    for setting, members in groups.items():
        done = [m for m in members if m.get("status") == "done"]
        row: dict[str, Any] = {"setting": setting, **members[0].get("values", {})}
        values = top1_by_seed(members)
        _put(row, "top1", summary(values.values()))
        row["n"] = len(values)
        _put(row, "top5", summary(float(m["top5"]) for m in done if m.get("top5") is not None))
        row["baseline"] = setting == baseline
        row["top1_values"] = list(values.values())  # for the plots, not in results.csv
        best = top1_by_seed(members, "best_top1")
        _put(row, "best_top1", summary(best.values()))
        row["best_n"] = len(best)
        row["best_top1_values"] = list(best.values())
        row["best_epochs"] = [m["best_epoch"] for m in done if m.get("best_epoch") is not None]
        row["last_epochs"] = [m["last_epoch"] for m in done if m.get("last_epoch") is not None]
        verdicts = [converged(m["val_top1_by_epoch"]) for m in done if m.get("val_top1_by_epoch")]
        row["converged"] = sum(v is True for v in verdicts)  # seeds that converged, of
        row["converged_of"] = sum(v is not None for v in verdicts)  # the seeds with a history
        diff = None if row["baseline"] else paired(values, base)
        _put(row, "diff_top1", diff, low=-100.0)
        row["diff_top1"] = row.pop("diff_top1_mean")
        row["diff_pairs"] = None if diff is None else diff.n
        row["diff_excludes_zero"] = None if diff is None else diff.excludes_zero
        paper = members[0].get("paper") or {}
        row["paper_top1"] = paper.get("top1")
        row["paper_label"] = paper.get("label")
        row["paper_statistic"] = statistic_of(paper)
        # measured on the paper's statistic: the best epoch's top-1 of every finished seed,
        # or the last epoch's; never one compared with the other
        if row["paper_statistic"] == "best":
            complete = row["best_n"] == row["n"]
            row["paper_measured"] = row["best_top1_mean"] if complete else None
        else:
            row["paper_measured"] = row["top1_mean"]
        row["paper_diff"] = None
        if paper and row["paper_measured"] is not None:
            row["paper_diff"] = row["paper_measured"] - paper["top1"]
        for cost in COSTS:
            costs = [float(m[cost]) for m in done if m.get(cost) is not None]
            row[cost] = statistics.fmean(costs) if costs else None
        speeds = [float(m["images_per_second"]) for m in done if m.get("images_per_second")]
        row["images_per_second"] = statistics.median(speeds) if speeds else None
        loads = [(m.get("throughput") or {}).get("under_load") for m in done]
        row["throughput_under_load"] = any(loads) if loads else None
        row |= locality_columns(members)
        row["seeds"] = len(members)
        counts: dict[str, int] = {}
        for m in members:
            counts[m.get("status", "pending")] = counts.get(m.get("status", "pending"), 0) + 1
        row["status"] = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        rows.append(row)
    return axes, rows


def _columns(axes: list[str]) -> list[str]:
    stats = [f"{m}_{s}" for m in ("top1", "top5") for s in ("mean", "std", "ci_low", "ci_high")]
    diff = ["diff_top1", "diff_top1_std", "diff_top1_ci_low", "diff_top1_ci_high", "diff_pairs"]
    diff += ["diff_excludes_zero"]
    best = [f"best_top1_{s}" for s in ("mean", "std", "ci_low", "ci_high")]
    best += ["best_n", "best_epochs", "last_epochs", "converged", "converged_of"]
    paper = ["paper_top1", "paper_statistic", "paper_measured", "paper_diff", "paper_label"]
    costs = [*COSTS, "images_per_second", "throughput_under_load"]
    return [
        *axes, *stats, "n", "baseline", *diff, *best, *paper, *costs, *LOCALITY,
        *UNIFORM, "seeds", "status", "setting",
    ]  # fmt: skip


def write_csv(path: Path, axes: list[str], rows: list[dict[str, Any]]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, _columns(axes), extrasaction="ignore")
    writer.writeheader()
    for row in rows:  # epochs over seeds as "9 10 10"
        writer.writerow({k: " ".join(map(str, v)) if isinstance(v, list) else v
                         for k, v in row.items()})  # fmt: skip
    atomic_write_text(path, text.getvalue())


def _num(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _mean_std(row: dict[str, Any], metric: str) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if mean is None:
        return ""
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


FEW_SEEDS = 3
"""Intervals over fewer seeds (or pairs) than this are marked where they are printed: with 2
seeds an interval rests on one degree of freedom (t quantile 12.71)."""


def _interval(low: float | None, high: float | None, have: bool, n: int | None = None) -> str:
    """``[low, high]``; ``n/a`` without an interval; ``(n seeds)`` after an interval over
    fewer than :data:`FEW_SEEDS` values ``n``."""
    if not have:
        return ""
    if low is None:
        return "n/a"
    few = f" ({n} seeds)" if n is not None and n < FEW_SEEDS else ""
    return f"[{low:.2f}, {high:.2f}]{few}"


def _few(row: dict[str, Any]) -> bool:
    """Whether an interval of ``row`` rests on 2 (fewer than :data:`FEW_SEEDS`) seeds."""
    counts = [row["n"], row.get("diff_pairs") or 0]
    return any(1 < n < FEW_SEEDS for n in counts)


def _span(values: list[int]) -> str:
    """Epochs over the seeds: ``"10"``, or ``"8-10"`` when they differ."""
    if not values:
        return ""
    return str(min(values)) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _shift(first: float | None, last: float | None, percent: bool = False) -> str:
    """``first → last`` (one value when equal), in percent with ``percent``."""
    if first is None or last is None:
        return ""
    text = [f"{100 * v:.0f}%" if percent else f"{v:.2f}" for v in (first, last)]
    return text[0] if text[0] == text[1] else f"{text[0]} → {text[1]}"


def _speed(row: dict[str, Any]) -> str:
    speed = row["images_per_second"]
    if speed is None:
        return ""
    return f"{speed:,.0f}" + (" †" if row["throughput_under_load"] else "")


def markdown(
    axes: list[str], rows: list[dict[str, Any]], info: dict[str, Any] | None = None
) -> str:
    """``results.md``: a title and legend, the table, and notes on paper rows and load."""
    info = info or {}
    has_paper = any(r["paper_top1"] is not None for r in rows)
    level = f"{100 * LEVEL:.0f}%"
    head = [*axes, "seeds", "top-1 (%)", f"top-1 {level} CI", "Δ top-1", f"Δ {level} CI", "Δ ≠ 0"]
    has_best = any(r.get("best_top1_mean") is not None for r in rows)
    head += ["best top-1 (%)", "best epoch"] if has_best else []
    has_history = any(r.get("converged_of") for r in rows)
    head += ["converged"] if has_history else []
    head += ["paper top-1", "measured − paper"] if has_paper else []
    head += ["top-5 (%)", "params (M)", "GFLOPs", "images/s", "wall (s)", "status"]
    has_locality = any(r.get("locality_first_mean_distance") is not None for r in rows)
    has_uniform = any(r.get("locality_first_uniform_mean_distance") is not None for r in rows)
    head += ["distance first → last"] if has_locality else []
    head += ["uniform distance", "3x3 share first → last", "uniform 3x3 share"] * has_uniform
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        have = row["top1_mean"] is not None
        cells = [str(row.get(a, "")) for a in axes]
        cells += [str(row["n"]), _mean_std(row, "top1")]
        cells.append(_interval(row["top1_ci_low"], row["top1_ci_high"], have, row["n"]))
        if row["baseline"]:
            cells += ["baseline", "", ""]
        else:
            paired_ = row["diff_top1"] is not None
            cells.append(_num(row["diff_top1"], sign=True))
            low, high, pairs = (
                row[k] for k in ("diff_top1_ci_low", "diff_top1_ci_high", "diff_pairs")
            )
            cells.append(_interval(low, high, paired_, pairs))
            nonzero = row["diff_excludes_zero"]
            cells.append(
                "" if not paired_ else "n/a" if nonzero is None else "yes" if nonzero else "no"
            )
        if has_best:
            cells += [_mean_std(row, "best_top1"), _span(row["best_epochs"])]
        if has_history:
            cells.append(f"{row['converged']}/{row['converged_of']}" if row["converged_of"] else "")
        if has_paper:
            statistic = f" ({row['paper_statistic']})" if row["paper_top1"] is not None else ""
            cells.append(_num(row["paper_top1"]) + statistic)
            cells.append(_num(row["paper_diff"], sign=True))
        params = None if row["params"] is None else row["params"] / 1e6
        cells += [_mean_std(row, "top5"), _num(params), _num(row["gflops"], 3), _speed(row)]
        cells += [_num(row["wall_time_s"], 0), row["status"]]
        if has_locality:
            first, last = row["locality_first_mean_distance"], row["locality_last_mean_distance"]
            cells.append("" if first is None else f"{_num(first)} → {_num(last)}")
        if has_uniform:
            cells.append(_shift(*(row[f"locality_{w}_uniform_mean_distance"] for w in WHERE)))
            cells.append(_shift(*(row[f"locality_{w}_window_fraction"] for w in WHERE), True))
            uniform = (row[f"locality_{w}_uniform_window_fraction"] for w in WHERE)
            cells.append(_shift(*uniform, True))
        lines.append("| " + " | ".join(cells) + " |")
    base = next((r["setting"] for r in rows if r["baseline"]), None)
    seeds = ", ".join(str(s) for s in info.get("seeds", []))
    title = f"# {info.get('grid', 'grid')}: {info.get('epochs', '?')} epochs, seeds {seeds or '-'}"
    legend = (
        f"top-1 and top-5: the last epoch's, mean ± sample std over the seeds that finished "
        f"(one seed: the value alone); {level} CI: Student-t interval of the mean, clipped to "
        f"[0, 100] (n/a with one seed). Δ top-1: "
        f"difference to the baseline `{base}`, paired by seed (mean of same-seed differences, "
        f"{level} t interval); Δ ≠ 0: that interval excludes 0."
    )
    if has_best:
        legend += (
            " best top-1: the best epoch's validation top-1 (mean ± std over the seeds); best "
            "epoch: which epochs those were (1 = the first)."
        )
    if any(_few(r) for r in rows):
        legend += (
            f" (2 seeds) after an interval: it rests on fewer than {FEW_SEEDS} seeds (pairs for "
            "Δ), one degree of freedom: t = 12.71, so it is wide and its own width uncertain; "
            "add seeds before reading it."
        )
    if has_history:
        legend += (
            f" converged: the seeds whose last {CONVERGED_WINDOW} epochs' mean validation "
            f"top-1 is within {CONVERGED_POINTS:g} point of their best epoch's, of the seeds "
            "with every epoch's validation top-1."
        )
    if info.get("num_classes"):
        legend += f" Chance: {100 / info['num_classes']:.1f}% ({info['num_classes']} classes)."
    parts = [title, "", legend, "", *lines]
    if has_paper:
        parts += [
            "",
            "measured − paper: the measured mean of the statistic the paper's number is (in "
            "parentheses: `best`, the best epoch's top-1, as the paper's code and DeiT report "
            "it, or `last`) − the published top-1 of the same network; empty when a finished "
            "seed lacks that statistic:",
        ]
        parts += [""] + [
            f"- `{r['setting']}`: {r['paper_top1']:.2f}, "
            f"{STATISTICS.get(r['paper_statistic'], r['paper_statistic'])}, {r['paper_label']}"
            for r in rows
            if r["paper_top1"] is not None
        ]
    if has_locality:
        parts += [
            "",
            "distance first → last: mean Chebyshev distance (grid cells) from a query to its "
            "selected neighbors in the first and the last ConvNN layer (a whole 3x3 window: "
            "0.89), over the validation images; `locality_*` columns of results.csv have more "
            "(docs/inspection.md).",
        ]
    if has_uniform:
        if not has_locality:
            parts += ["", ""]
        parts[-1] = parts[-1] + (
            " 3x3 share: the share of those neighbors inside the query's 3x3 window (a whole "
            "window: 100%). uniform: the same two numbers for neighbors chosen uniformly at "
            "random among the layer's map tokens; a layer near them selects without regard to "
            "position."
        )
    if any("†" in _speed(r) for r in rows):
        parts += [
            "",
            "† images/s measured under load for at least one seed: other processes kept more "
            "CPUs busy during the timed passes than the cell's threads left free "
            "(`throughput.others_cpus` in result.json); compare speeds only between unmarked "
            "rows, or rerun `convnn evaluate` on the checkpoints on an idle machine.",
        ]
    return "\n".join(parts) + "\n"


def write_hparams(out: Path, axes: list[str], rows: list[dict[str, Any]]) -> None:
    """Every setting as one run of TensorBoard's HParams view in ``out/hparams``."""
    from torch.utils.tensorboard import SummaryWriter

    for i, row in enumerate(rows):
        hparams = {}
        for a in axes:
            v = row.get(a)
            hparams[a] = v if isinstance(v, (int, float, str, bool)) else str(v)
        keys = ("top1_mean", "top5_mean", *LOCALITY)
        metrics = {f"hparam/{k}": row[k] for k in keys if row.get(k) is not None}
        with SummaryWriter(out / "hparams" / f"{i:03d}") as writer:
            writer.add_hparams(hparams, metrics, run_name=".")


def write_report(
    out: str | Path, grid: Grid | None = None
) -> tuple[list[str], list[dict[str, Any]], dict[str, Any]]:
    """Write every report file into ``out`` (baseline and published numbers from ``grid``
    when given, else as recorded in the cells); returns the axes, rows and grid info."""
    from .plots import plot_axes

    out = Path(out)
    cells = collect(out, grid)
    mixed = unpooled_settings(cells)
    if mixed:
        detail = "; ".join(f"{setting}: {what}" for setting, what in mixed.items())
        raise GridError(
            f"{len(mixed)} settings under {out} hold cells trained with different configs, "
            f"which one mean would pool; rerun the stale cells (convnn-ablate run --rerun): "
            + detail
        )
    axes, rows = summarize(cells)
    info = grid_info(cells)
    write_csv(out / "results.csv", axes, rows)
    atomic_write_text(out / "results.md", markdown(axes, rows, info))
    plot_axes(out, axes, rows, info)
    write_hparams(out, axes, rows)
    return axes, rows, info
