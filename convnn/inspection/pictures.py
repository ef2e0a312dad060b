"""Neighbor pictures: an image with one query of one layer marked and its neighbors lit.

A *panel* shows the input image dimmed, the layer's grid cells of the selected
neighbors tinted orange (stronger for larger weights), the query's cell outlined in cyan,
and a one-cell band around the image where selected padding positions (a convolution's
zero padding) appear; a selected class token lights the band's top-left corner (its
weight is also written under the panel). :func:`picture_grid` lays panels out with labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ..selection import Selection
from ..validation import check_number
from .locality_stats import neighbor_facts

__all__ = [
    "NeighborView",
    "neighbor_view",
    "panel",
    "picture_grid",
    "query_at",
    "save_png",
    "to_image",
]

NEIGHBOR = torch.tensor([1.0, 0.55, 0.0])  # orange
QUERY = torch.tensor([0.0, 0.9, 1.0])  # cyan
PANEL_PIXELS = 112  # the image part of a panel, before the band


@dataclass
class NeighborView:
    """One query's neighbors on the input map, with a one-cell band for padding positions.

    ``selected`` ``(H + 2, W + 2)`` bool and ``weight`` ``(H + 2, W + 2)`` (the summed
    weight per cell): cell ``(r, c)`` of the map is ``[r + 1, c + 1]``; padding positions
    further out than one cell are drawn on the band. ``query``: its ``(row, col)``;
    ``prefix``: how many prefix tokens it selected and their summed weight.
    """

    selected: Tensor
    weight: Tensor
    query: tuple[int, int]
    prefix: int
    prefix_weight: float


def query_at(selection: Selection, point: tuple[float, float]) -> int:
    """The query (its position in ``selection.query_index``) nearest to ``point``, a
    ``(y, x)`` fraction of the image height and width in ``[0, 1)`` (Chebyshev distance
    on the layer's map, ties to the first query)."""
    for name, value in zip(("query y", "query x"), point, strict=True):
        check_number(name, value, "in [0, 1)", lambda v: 0.0 <= v < 1.0)
    facts = neighbor_facts(selection)
    H, W = facts.size
    cell = torch.tensor([int(point[0] * H), int(point[1] * W)], device=facts.query_pos.device)
    far = (facts.query_pos - cell).abs().amax(-1).masked_fill(~facts.map_query, 1 << 30)
    return int(far.argmin())


def neighbor_view(
    selection: Selection, query: int, example: int = 0, head: int = 0
) -> NeighborView:
    """The neighbors of query ``query`` (an index into ``selection.query_index``) of image
    ``example`` (and ``head`` for attention) as a :class:`NeighborView`."""
    facts = neighbor_facts(selection)
    at = (example, head, query) if selection.index.dim() == 4 else (example, query)
    prefix, pos, weights = facts.prefix[at], facts.position[at], selection.weights[at]
    H, W = facts.size
    selected = torch.zeros(H + 2, W + 2, dtype=torch.bool)
    weight = torch.zeros(H + 2, W + 2)
    rows = pos[~prefix, 0].clamp(-1, H).cpu() + 1
    cols = pos[~prefix, 1].clamp(-1, W).cpu() + 1
    selected[rows, cols] = True
    weight.index_put_((rows, cols), weights[~prefix].cpu(), accumulate=True)
    r, c = facts.query_pos[query].tolist()
    return NeighborView(selected, weight, (r, c), int(prefix.sum()), float(weights[prefix].sum()))


def _cells(size: int, cell: int, band: int) -> Tensor:
    """The cell (0: band, 1..size: map, size + 1: band) of every pixel along one axis."""
    inner = 1 + torch.arange(size).repeat_interleave(cell)
    return torch.cat((torch.zeros(band, dtype=torch.long), inner, torch.full((band,), size + 1)))


def panel(image: Tensor, view: NeighborView) -> Tensor:
    """``(3, P, P')`` float picture of ``view`` over ``image`` ``(C, S, S')`` in ``[0, 1]``
    (a one-channel image is shown grey)."""
    H, W = (n - 2 for n in view.selected.shape)
    cell = max(2, round(PANEL_PIXELS / max(H, W)))
    band = min(cell, 8)
    rows, cols = _cells(H, cell, band), _cells(W, cell, band)
    image = image.detach().float().cpu()
    image = image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
    body = F.interpolate(image[None], (H * cell, W * cell), mode="bilinear", antialias=True)
    canvas = torch.full((3, len(rows), len(cols)), 0.5)
    canvas[:, band:-band, band:-band] = body[0].clamp(0, 1)
    strength = view.weight.clamp(min=0)
    top = float(strength.max())
    strength = strength / top if top > 0 else view.selected.float()
    strength = torch.where(view.selected, 0.5 + 0.5 * strength, 0.0)
    alpha = strength[rows][:, cols]
    out = torch.where(view.selected[rows][:, cols], canvas, 0.35 * canvas)
    out = out * (1 - 0.7 * alpha) + NEIGHBOR[:, None, None] * 0.7 * alpha
    if view.prefix:
        out[:, :band, :band] = NEIGHBOR[:, None, None]
    r, c = (band + v * cell for v in view.query)
    line = max(1, cell // 8)
    box = out[:, r : r + cell, c : c + cell]
    inner = box[:, line:-line, line:-line].clone() if cell > 2 * line + 1 else None
    box[:] = QUERY[:, None, None]
    if inner is not None:
        box[:, line:-line, line:-line] = inner
    return out


def to_image(picture: Tensor) -> Image.Image:
    """A ``(3, H, W)`` float tensor in ``[0, 1]`` as an RGB PIL image (see also
    :func:`save_png`)."""
    array = (picture.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(array, "RGB")


def picture_grid(
    panels: list[list[Tensor]],
    row_labels: list[str],
    col_labels: list[str],
    captions: list[list[str]] | None = None,
    title: str = "",
) -> Image.Image:
    """Panels ``panels[row][col]`` (``(3, h, w)`` each, any sizes) in a labelled grid:
    a title line, column labels above, row labels on the left and a caption under each
    panel."""
    font = ImageFont.load_default(size=11)
    line = 14
    heights = [max(p.shape[1] for p in row) for row in panels]
    widths = [max(row[j].shape[2] for row in panels) for j in range(len(panels[0]))]
    widths = [max(w, 7 * len(label) + 4) for w, label in zip(widths, col_labels, strict=True)]
    left = 7 * max((len(label) for label in row_labels), default=0) + 8
    top = line * (2 if title else 1) + 2
    gap = line + 4
    sheet = Image.new("RGB", (left + sum(widths) + 4, top + sum(heights) + gap * len(panels)))
    sheet.paste((255, 255, 255), (0, 0, *sheet.size))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 1), title, fill=(0, 0, 0), font=font)
    x0 = left
    for j, label in enumerate(col_labels):
        draw.text((x0 + 2, top - line), label, fill=(0, 0, 0), font=font)
        x0 += widths[j]
    y0 = top
    for i, row in enumerate(panels):
        draw.text((4, y0 + heights[i] // 2 - 6), row_labels[i], fill=(0, 0, 0), font=font)
        x0 = left
        for j, picture in enumerate(row):
            sheet.paste(to_image(picture), (x0 + 2, y0))
            text = captions[i][j] if captions else ""
            draw.text((x0 + 2, y0 + picture.shape[1] + 1), text, fill=(60, 60, 60), font=font)
            x0 += widths[j]
        y0 += heights[i] + gap
    return sheet


def save_png(picture: Image.Image, file: Any) -> None:
    """Save ``picture`` as a small PNG (an adaptive 256-colour palette) to a path or a
    binary file."""
    small = picture.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    small.save(file, format="PNG", optimize=True)
