"""``convnn-ablate report DIR``: one row per setting (seeds averaged), plots, HParams.

Writes ``results.csv``, ``results.md``, ``plot_<axis>.png`` (top-1 against the axis value,
one line per setting of the other axes, error bars over seeds) and ``hparams/`` (TensorBoard
HParams view, one run per setting) into ``DIR``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from lightning_modules.files import atomic_write_text

from .runner import read_state

__all__ = ["collect", "summarize", "write_report"]

METRICS = ("top1", "top5")
COSTS = ("params", "gflops", "images_per_second", "wall_time_s")


def collect(out: Path) -> list[dict[str, Any]]:
    """Every cell under ``out``: its ``cell.json`` merged with its result or status."""
    rows = []
    for info_path in sorted(out.glob("*/cell.json")):
        info = json.loads(info_path.read_text())
        state = read_state(info_path.parent)
        rows.append({**info, **state, "id": info["id"]})
    return rows


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(cells: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Axis names and one row per setting: mean/std over seeds, costs, status."""
    axes: list[str] = []
    for cell in cells:
        for name in cell.get("axes") or list(cell.get("values", {})):
            if name not in axes:
                axes.append(name)
    groups: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault(cell["setting"], []).append(cell)
    rows = []
    for setting, members in groups.items():
        done = [m for m in members if m.get("status") == "done"]
        row: dict[str, Any] = {"setting": setting, **members[0].get("values", {})}
        for metric in METRICS:
            mean, std = _mean_std([float(m[metric]) for m in done if m.get(metric) is not None])
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
        for cost in COSTS:
            row[cost] = _mean_std([float(m[cost]) for m in done if m.get(cost) is not None])[0]
        row["seeds"] = len(members)
        counts: dict[str, int] = {}
        for m in members:
            counts[m.get("status", "pending")] = counts.get(m.get("status", "pending"), 0) + 1
        row["status"] = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        rows.append(row)
    return axes, rows


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _columns(axes: list[str]) -> list[str]:
    stats = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    return [*axes, *stats, *COSTS, "seeds", "status"]


def write_csv(path: Path, axes: list[str], rows: list[dict[str, Any]]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, _columns(axes), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def markdown(axes: list[str], rows: list[dict[str, Any]]) -> str:
    head = [*axes, "top-1 (%)", "top-5 (%)", "params (M)", "GFLOPs", "images/s", "wall (s)"]
    head += ["seeds", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:

        def pm(metric: str, row: dict[str, Any] = row) -> str:
            mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
            return "" if mean is None else f"{mean:.2f} ± {std:.2f}"

        params = row["params"] / 1e6 if row["params"] is not None else None
        cells = [_cell(row.get(a)) for a in axes] + [pm("top1"), pm("top5"), _cell(params)]
        cells += [_cell(row["gflops"], 3), _cell(row["images_per_second"], 0)]
        cells += [_cell(row["wall_time_s"], 0), str(row["seeds"]), row["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def plot_axes(out: Path, axes: list[str], rows: list[dict[str, Any]]) -> list[Path]:
    """``plot_<axis>.png`` per axis: top-1 against the axis, one line per other setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    done = [r for r in rows if r["top1_mean"] is not None]
    for axis in axes:
        values = sorted({r.get(axis) for r in done}, key=_sortable)
        numeric = all(isinstance(v, (int, float)) for v in values)
        position = {v: (v if numeric else i) for i, v in enumerate(values)}
        lines: dict[str, list[dict[str, Any]]] = {}
        for row in done:
            label = " ".join(f"{a}={row.get(a)}" for a in axes if a != axis) or "top-1"
            lines.setdefault(label, []).append(row)
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, members in lines.items():
            members.sort(key=lambda r: _sortable(r.get(axis)))
            xs = [position[r.get(axis)] for r in members]
            ys = [r["top1_mean"] for r in members]
            errs = [r["top1_std"] or 0.0 for r in members]
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label)
        if not numeric:
            ax.set_xticks(range(len(values)), [str(v) for v in values])
        ax.set_xlabel(axis)
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize="small")
        fig.tight_layout()
        path = out / f"plot_{re.sub(r'[^A-Za-z0-9_.+-]+', '_', axis)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def write_hparams(out: Path, axes: list[str], rows: list[dict[str, Any]]) -> None:
    """Every setting as one run of TensorBoard's HParams view in ``out/hparams``."""
    from torch.utils.tensorboard import SummaryWriter

    for i, row in enumerate(rows):
        hparams = {}
        for a in axes:
            v = row.get(a)
            hparams[a] = v if isinstance(v, (int, float, str, bool)) else str(v)
        metrics = {f"hparam/{k}": row[k] for k in ("top1_mean", "top5_mean") if row[k] is not None}
        with SummaryWriter(out / "hparams" / f"{i:03d}") as writer:
            writer.add_hparams(hparams, metrics, run_name=".")


def write_report(out: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Write every report file into ``out``; returns the axes and rows."""
    out = Path(out)
    axes, rows = summarize(collect(out))
    write_csv(out / "results.csv", axes, rows)
    atomic_write_text(out / "results.md", markdown(axes, rows))
    plot_axes(out, axes, rows)
    write_hparams(out, axes, rows)
    return axes, rows
