"""``plot_<axis>.png`` of a report: top-1 against each axis, with 95% intervals over seeds.

Numeric axes (``k``, ``branch_ratio``) are lines through the settings' means; categorical
axes (``layer``, ``similarity``) are points side by side in grid order, never joined by
lines. One series per setting of the other axes; error bars are the Student-t 95% interval
of the mean (none for a single seed), small gray dots the single seeds; stars mark
published top-1 (the grid's ``paper:``); the dashed line is chance, ``100 / num_classes`` %.
The title names the grid, the axis, the epochs and the seeds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["axis_figure", "plot_axes"]


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def axis_figure(axis: str, axes: list[str], rows: list[dict[str, Any]], info: dict[str, Any]):
    """The matplotlib figure of ``plot_<axis>.png`` (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["top1_mean"] is not None]
    values = list(dict.fromkeys(r.get(axis) for r in done))  # grid order
    numeric = _numeric(values)
    if numeric:
        values.sort()
    series: dict[str, list[dict[str, Any]]] = {}
    for row in done:
        label = " ".join(f"{a}={row.get(a)}" for a in axes if a != axis) or "measured"
        series.setdefault(label, []).append(row)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.6 / max(1, len(series))
    paper_label, seed_label = "paper", "single seeds"
    for i, (label, members) in enumerate(series.items()):
        members.sort(key=lambda r: values.index(r.get(axis)))
        if numeric:
            xs = [float(r.get(axis)) for r in members]
        else:  # categories side by side, one offset per series
            xs = [values.index(r.get(axis)) + (i - (len(series) - 1) / 2) * width for r in members]
        ys = [r["top1_mean"] for r in members]
        low = [
            r["top1_mean"] - r["top1_ci_low"] if r["top1_ci_low"] is not None else 0.0
            for r in members
        ]
        high = [
            r["top1_ci_high"] - r["top1_mean"] if r["top1_ci_high"] is not None else 0.0
            for r in members
        ]
        ax.errorbar(
            xs,
            ys,
            yerr=[low, high],
            marker="o",
            capsize=4,
            linestyle="-" if numeric else "none",
            label=label,
        )
        for x, row in zip(xs, members, strict=True):
            seeds = row.get("top1_values") or []
            if len(seeds) > 1:  # every seed, beside its mean
                ax.plot([x + 0.08] * len(seeds), seeds, ".", color="gray", alpha=0.7,
                        label=seed_label)  # fmt: skip
                seed_label = "_nolegend_"
            if row.get("paper_top1") is not None:
                ax.plot([x], [row["paper_top1"]], "k*", markersize=10, label=paper_label)
                paper_label = "_nolegend_"
    if info.get("num_classes"):
        chance = 100 / info["num_classes"]
        ax.axhline(
            chance, color="gray", linestyle="--", linewidth=1, label=f"chance ({chance:.1f}%)"
        )
    if not numeric:
        ax.set_xticks(range(len(values)), [str(v) for v in values])
        ax.set_xlim(-0.5, len(values) - 0.5)
    elif len(values) > 2 and min(values) > 0 and max(values) / min(values) >= 16:
        ax.set_xscale("log", base=2)
        ax.set_xticks([float(v) for v in values], [str(v) for v in values])
    n = sorted({r["n"] for r in done})
    seeds = f"{n[0]}" if len(n) == 1 else f"{n[0]}-{n[-1]}"
    bars = "mean and 95% CI" if n and n[-1] > 1 else "one seed, no interval"
    ax.set_title(
        f"{info.get('grid', 'grid')}: top-1 by {axis}, {info.get('epochs', '?')} epochs\n"
        f"{bars} over {seeds} seed(s)",
        fontsize="medium",
    )
    ax.set_xlabel(axis)
    ax.set_ylabel("top-1 (%)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    return fig


def plot_axes(
    out: Path, axes: list[str], rows: list[dict[str, Any]], info: dict[str, Any]
) -> list[Path]:
    """Write ``plot_<axis>.png`` for every axis into ``out``; returns the paths."""
    import matplotlib.pyplot as plt

    paths = []
    for axis in axes:
        fig = axis_figure(axis, axes, rows, info)
        path = out / f"plot_{re.sub(r'[^A-Za-z0-9_.+-]+', '_', axis)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
