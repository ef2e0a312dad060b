"""A model's locality over data, its neighbor pictures and the per-depth plot.

Used by ``convnn inspect``, the training callback and the ablation report alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from .locality_stats import LocalityCounter
from .pictures import neighbor_view, panel, picture_grid, query_at
from .selection_record import SelectionRecord, record_selection

__all__ = [
    "AUTO_POINTS",
    "count_selections",
    "depth_plot",
    "image_picture",
    "layer_picture",
    "measure_locality",
    "unnormalize",
]

AUTO_POINTS: tuple[tuple[float, float], ...] = ((0.5, 0.5), (0.2, 0.2), (0.8, 0.65))
"""Query points of ``--queries auto``: ``(y, x)`` fractions of the image (centre, near the
top-left corner, lower right)."""


def count_selections(record: SelectionRecord, counters: dict[str, LocalityCounter]) -> None:
    """Add every recorded call of a layer with a grid to ``counters[layer]`` (created as
    needed, in forward order)."""
    for name, calls in record.calls.items():
        for selection in calls:
            if selection.grid is not None:
                counters.setdefault(name, LocalityCounter()).update(selection)


@torch.no_grad()
def measure_locality(net: nn.Module, batches: Iterable[Tensor]) -> dict[str, dict[str, Any]]:
    """Locality statistics (:mod:`convnn.inspection.locality_stats`) of every ConvNN layer of
    ``net`` over the images ``(B, C, H, W)`` of ``batches`` (on ``net``'s device), by layer
    name in forward order. Layers whose tokens have no grid are left out."""
    counters: dict[str, LocalityCounter] = {}
    with record_selection(net) as record:
        for images in batches:
            record.clear()
            net(images)
            count_selections(record, counters)
    return {name: counter.summary() for name, counter in counters.items()}


def unnormalize(
    images: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> Tensor:
    """Normalized images ``(B, C, H, W)`` back to ``[0, 1]`` for drawing: ``x * std + mean``
    per channel, or, without ``mean``/``std``, each image stretched to its own range."""
    images = images.detach().float().cpu()
    if mean is None or std is None:
        low = images.amin((1, 2, 3), keepdim=True)
        high = images.amax((1, 2, 3), keepdim=True)
        return (images - low) / (high - low).clamp(min=1e-8)
    channels = images.shape[1]
    mean_, std_ = (torch.tensor(v[:channels]).view(1, -1, 1, 1) for v in (mean, std))
    return (images * std_ + mean_).clamp(0, 1)


def _panels(
    record: SelectionRecord, name: str, example: int, image: Tensor, point: tuple[float, float]
) -> tuple[list[Tensor], list[str]]:
    """Panels and captions of one layer and query point, one per head."""
    selection = record[name]
    heads = selection.index.shape[1] if selection.index.dim() == 4 else 1
    query = query_at(selection, point)
    panels, captions = [], []
    for head in range(heads):
        view = neighbor_view(selection, query, example, head)
        panels.append(panel(image, view))
        chosen = f" cls {view.prefix_weight:.2f}" if view.prefix else ""
        captions.append(f"({view.query[0]},{view.query[1]}){chosen}")
    return panels, captions


def _point_label(point: tuple[float, float], image: Tensor) -> str:
    return f"px ({int(point[0] * image.shape[-2])},{int(point[1] * image.shape[-1])})"


def image_picture(
    record: SelectionRecord,
    example: int,
    image: Tensor,
    points: Sequence[tuple[float, float]] = AUTO_POINTS,
    title: str = "",
) -> Image.Image:
    """Every recorded layer (rows, forward order) x query point and head (columns) for
    image ``example`` of the recorded batch; ``image`` ``(C, H, W)`` in ``[0, 1]``."""
    names = [n for n in record if record[n].grid is not None and record[n].grid.height > 1]
    rows, captions = [], []
    columns: list[str] = []
    for name in names:
        row, caption = [], []
        for point in points:
            panels, texts = _panels(record, name, example, image, point)
            row += panels
            caption += texts
            if name == names[0]:
                label = _point_label(point, image)
                columns += [
                    label if len(panels) == 1 else f"{label} h{h}" for h in range(len(panels))
                ]
        rows.append(row)
        captions.append(caption)
    return picture_grid(rows, names, columns, captions, title)


def layer_picture(
    record: SelectionRecord,
    name: str,
    example: int,
    image: Tensor,
    points: Sequence[tuple[float, float]] = AUTO_POINTS,
) -> Image.Image:
    """One layer: query points (rows) x heads (columns) for image ``example``."""
    rows, captions = [], []
    for point in points:
        panels, texts = _panels(record, name, example, image, point)
        rows.append(panels)
        captions.append(texts)
    columns = [f"head {h}" for h in range(len(rows[0]))]
    labels = [_point_label(p, image) for p in points]
    return picture_grid(rows, labels, columns, captions, name)


def depth_plot(layers: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> None:
    """A PNG of each layer's ``mean_distance`` against its depth (forward order), per head
    where there are several, with two references: the whole 3x3 window's 8/9 and uniform
    choice among the layer's map tokens (``uniform_mean_distance``, per layer)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = list(layers)
    depth = list(range(1, len(names) + 1))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(names) + 2), 3.2), dpi=100)
    try:
        nan = float("nan")
        means = [
            layers[n]["mean_distance"] if layers[n]["mean_distance"] is not None else nan
            for n in names
        ]
        ax.plot(depth, means, "o-", color="tab:orange", label="mean over heads", zorder=3)
        heads = [layers[n].get("mean_distance_per_head") or [] for n in names]
        for h in range(max((len(x) for x in heads), default=0)):
            values = [x[h] if h < len(x) and x[h] is not None else nan for x in heads]
            ax.plot(depth, values, ".:", color="grey", alpha=0.6, label="heads" if h == 0 else None)
        ax.axhline(8 / 9, color="tab:blue", lw=0.8, ls="--", label="3x3 window (8/9)")
        uniform = [layers[n].get("uniform_mean_distance") for n in names]
        if any(u is not None for u in uniform):
            values = [nan if u is None else u for u in uniform]
            ax.plot(depth, values, "_--", color="tab:green", lw=0.8, ms=12,
                    label="uniform choice", zorder=2)  # fmt: skip
        ax.set_xticks(depth, [f"{d}" for d in depth])
        ax.set_xlabel("ConvNN layer (forward order)")
        ax.set_ylabel("mean distance (cells)")
        ax.set_ylim(bottom=0)
        ax.set_title(title or "mean Chebyshev distance to the selected neighbors", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
