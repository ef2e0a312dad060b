"""``plot_<axis>.png`` of a report: top-1 against each axis, with 95% intervals over seeds.

Numeric axes (``k``, ``branch_ratio``) are lines through the settings' means; categorical
axes (``layer``, ``similarity``) are points side by side in grid order, never joined by
lines. One series per setting of the other axes, each in its own colour; series that share
an x are dodged (set side by side around it: by a fraction of the gap to the next value, a
factor on a log axis, a slot of the category), so no error bar hides another. Error bars are
the Student-t 95% interval of the last epoch's mean (none for a single seed); small dots in
the series' colour are its single seeds; hollow diamonds the best epoch's mean; stars mark
published top-1 (the grid's ``paper:``, whose statistic the legend names); the dashed line is
chance, ``100 / num_classes`` %. The legend sits outside the axes, right of the data, so it
covers none of it. The title names the grid, the axis, the epochs and the seeds.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

__all__ = ["axis_figure", "dodge", "plot_axes"]


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _log_scale(values: list[Any]) -> bool:
    return len(values) > 2 and min(values) > 0 and max(values) / min(values) >= 16


def dodge(values: list[Any], count: int, numeric: bool, log: bool):
    """``place(value, i, frac=0.0)``: the x of series ``i`` of ``count`` at ``value`` (a
    category's index when not ``numeric``), ``frac`` of a slot further right (its seeds).
    The series fill 60% of the smallest gap between neighbouring values, centred on it."""
    if not numeric:
        points, spread = list(range(len(values))), 1.0
    else:
        points = [math.log2(v) if log else float(v) for v in values]
        gaps = [b - a for a, b in zip(points, points[1:], strict=False) if b > a]
        spread = min(gaps) if gaps else 1.0
    slot = 0.6 * spread / max(1, count)

    def place(value: Any, i: int, frac: float = 0.0) -> float:
        centre = float(values.index(value)) if not numeric else float(value)
        shift = (i - (count - 1) / 2 + frac) * slot
        if numeric and log:
            return centre * 2**shift
        return centre + shift

    return place


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
    log = numeric and _log_scale(values)
    series: dict[str, list[dict[str, Any]]] = {}
    for row in done:
        label = " ".join(f"{a}={row.get(a)}" for a in axes if a != axis) or "measured"
        series.setdefault(label, []).append(row)
    place = dodge(values, len(series), numeric, log)
    fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
    statistics = {r.get("paper_statistic") for r in done if r.get("paper_top1") is not None}
    named = "/".join(sorted(s for s in statistics if s)) or "best"
    paper_label, seed_label = f"paper ({named} epoch)", "single seeds"
    best_label = "best epoch (mean)"
    for i, (label, members) in enumerate(series.items()):
        members.sort(key=lambda r: values.index(r.get(axis)))
        xs = [place(r.get(axis), i) for r in members]
        ys = [r["top1_mean"] for r in members]
        low = [
            r["top1_mean"] - r["top1_ci_low"] if r["top1_ci_low"] is not None else 0.0
            for r in members
        ]
        high = [
            r["top1_ci_high"] - r["top1_mean"] if r["top1_ci_high"] is not None else 0.0
            for r in members
        ]
        bars = ax.errorbar(
            xs,
            ys,
            yerr=[low, high],
            marker="o",
            capsize=4,
            linestyle="-" if numeric else "none",
            label=label,
        )
        colour = bars.lines[0].get_color()
        for row in members:
            x, seeds = place(row.get(axis), i), row.get("top1_values") or []
            if len(seeds) > 1:  # every seed, beside its mean, in the series' colour
                seed_x = place(row.get(axis), i, 0.3)
                ax.plot([seed_x] * len(seeds), seeds, ".", color=colour, alpha=0.7,
                        markersize=5, label=seed_label)  # fmt: skip
                seed_label = "_nolegend_"
            if row.get("best_top1_mean") is not None:
                ax.plot([x], [row["best_top1_mean"]], "D", color=colour, fillstyle="none",
                        markersize=6, label=best_label)  # fmt: skip
                best_label = "_nolegend_"
            if row.get("paper_top1") is not None:
                ax.plot([x], [row["paper_top1"]], "k*", markersize=10, label=paper_label)
                paper_label = "_nolegend_"
    if info.get("num_classes"):
        chance = 100 / info["num_classes"]
        ax.axhline(
            chance, color="gray", linestyle="--", linewidth=1, label=f"chance ({chance:.1f}%)"
        )
    if not numeric:
        labels = [str(v) for v in values]
        # long category names side by side overlap: slanted, right-aligned at their tick
        slant = sum(len(label) for label in labels) > 60
        ax.set_xticks(
            range(len(values)),
            labels,
            rotation=30 if slant else 0,
            ha="right" if slant else "center",
            rotation_mode="anchor",
        )
        ax.set_xlim(-0.5, len(values) - 0.5)
    elif log:
        ax.set_xscale("log", base=2)
        ax.set_xticks([float(v) for v in values], [str(v) for v in values])
    else:
        ax.set_xticks([float(v) for v in values], [str(v) for v in values])
    n = sorted({r["n"] for r in done})
    seeds = f"{n[0]}" if len(n) == 1 else f"{n[0]}-{n[-1]}"
    bars = "last epoch: mean and 95% CI" if n and n[-1] > 1 else "one seed, no interval"
    ax.set_title(
        f"{info.get('grid', 'grid')}: top-1 by {axis}, {info.get('epochs', '?')} epochs\n"
        f"{bars} over {seeds} seed(s)",
        fontsize="medium",
    )
    ax.set_xlabel(axis)
    ax.set_ylabel("top-1 (%)")
    ax.grid(alpha=0.3, axis="y")
    fig.legend(fontsize="small", loc="outside right upper")
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
