"""Locality statistics of a layer's selection: how far, in grid cells, its neighbors lie.

Counted over the *map queries* (queries with a position: a class token's own selection is
left out) and over each of their ``k`` selected neighbors:

* ``mean_distance``: mean Chebyshev distance (in the layer's grid cells) from the query to
  its neighbors that have a position (map and padding tokens; the query itself counts, at
  distance 0). A whole 3x3 window gives 8/9.
* ``window_fraction``: share of the neighbors inside the query's 3x3 window (distance <= 1).
* ``self_fraction``, ``prefix_fraction`` (a class/register token chosen),
  ``padding_fraction`` (a zero token outside the input map, from a convolution's padding):
  shares of the neighbors; padding positions count in the distances and the window.
* ``coverage``: share of the input map's tokens (padding and prefix tokens excluded) that
  at least one query selects, per image (and head), averaged.
* ``distance_histogram``: share of the positioned neighbors at distance 0, 1, 2, ...
* ``uniform_mean_distance``, ``uniform_window_fraction``: the same two numbers for neighbors
  chosen uniformly at random among the input map's tokens (:func:`uniform_reference`, over
  the same queries): a layer near them selects without regard to position (the quickstart's
  4x4 patch map: 1.78 cells and 39%), one near 8/9 and 100% selects its 3x3 window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import UsageError
from ..selection import Selection

__all__ = ["LocalityCounter", "NeighborFacts", "neighbor_facts", "uniform_reference"]


@dataclass
class NeighborFacts:
    """Per neighbor of ``selection.index`` ``(*, Nq, k)``: flags and input-map geometry.

    ``query_pos`` ``(Nq, 2)`` and ``position`` ``(*, Nq, k, 2)``: ``(row, col)`` in the
    layer's *input* map (padding positions lie outside ``[0, H) x [0, W)``);
    ``map_query`` ``(Nq,)``: the query has a position; ``prefix``, ``padding``, ``self_``
    ``(*, Nq, k)`` bool; ``distance`` ``(*, Nq, k)`` long Chebyshev distance (0 for prefix
    neighbors, which have none); ``size``: ``(H, W)`` of the input map.
    """

    query_pos: Tensor
    map_query: Tensor
    position: Tensor
    prefix: Tensor
    padding: Tensor
    self_: Tensor
    distance: Tensor
    size: tuple[int, int]


def neighbor_facts(selection: Selection) -> NeighborFacts:
    """The :class:`NeighborFacts` of ``selection`` (it needs a grid and positions)."""
    grid, index = selection.grid, selection.index
    if grid is None or selection.position is None:
        raise UsageError("this selection has no grid: its tokens have no positions")
    pad = torch.tensor(grid.padding, device=index.device)
    query_pos = grid.positions(selection.query_index) - pad
    prefix = grid.is_prefix(index)
    _, inside = grid.input_positions(index.clamp(max=selection.num_tokens - 1))
    padding = ~prefix & (~inside | (index == selection.num_tokens))
    position = selection.position - pad
    distance = (position - query_pos[:, None, :]).abs().amax(-1).masked_fill(prefix, 0)
    return NeighborFacts(
        query_pos,
        ~grid.is_prefix(selection.query_index),
        position,
        prefix,
        padding,
        index == selection.query_index[:, None],
        distance,
        grid.input_size,
    )


def uniform_reference(
    size: tuple[int, int], query_pos: Tensor | None = None
) -> tuple[float, float]:
    """Mean Chebyshev distance and 3x3-window share of a neighbor chosen uniformly among the
    ``H x W`` map's tokens, averaged over the queries at ``query_pos`` ``(Nq, 2)`` (``None``:
    every position). Exact: a query at ``(r, c)`` has ``a_r(d) * b_c(d)`` tokens within
    distance ``d`` (rows times columns), so ``E[distance] = sum_d (1 - a_r(d) b_c(d) / HW)``."""
    h, w = size
    if query_pos is None:
        query_pos = torch.cartesian_prod(torch.arange(h), torch.arange(w))
    pos = query_pos.to("cpu", torch.float64)
    d = torch.arange(max(h, w), dtype=torch.float64)

    def within(p: Tensor, n: int) -> Tensor:  # (Nq, D): coordinates within d of p in [0, n)
        return (p[:, None] + d).clamp(max=n - 1) - (p[:, None] - d).clamp(min=0) + 1

    inside = within(pos[:, 0], h) * within(pos[:, 1], w) / (h * w)  # P(distance <= d)
    return float((1 - inside).sum(1).mean()), float(inside[:, min(1, len(d) - 1)].mean())


@dataclass
class LocalityCounter:
    """Running locality statistics of one layer over many calls (images, batches).

    ``update(selection)`` adds a call; ``summary()`` gives the JSON-ready statistics
    (see the module docstring).
    """

    neighbors: int = 0
    positioned: int = 0
    distance_sum: int = 0
    window: int = 0
    self_: int = 0
    prefix: int = 0
    padding: int = 0
    coverage_sum: float = 0.0
    coverage_rows: int = 0
    images: int = 0
    histogram: list[int] = field(default_factory=list)
    head_distance: list[int] = field(default_factory=list)
    head_positioned: list[int] = field(default_factory=list)
    shape: dict[str, Any] = field(default_factory=dict)
    uniform: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # weighted sums

    def update(self, selection: Selection) -> None:
        """Add one call's selection ``(B, Nq, k)`` or ``(B, heads, Nq, k)``."""
        facts = neighbor_facts(selection)
        index = selection.index
        mask = facts.map_query[:, None].expand(index.shape)  # neighbors of map queries
        located = mask & ~facts.prefix
        dist = facts.distance.masked_fill(~located, 0)
        self.neighbors += int(mask.sum())
        self.positioned += int(located.sum())
        self.distance_sum += int(dist.sum())
        self.window += int((located & (facts.distance <= 1)).sum())
        self.self_ += int((mask & facts.self_).sum())
        self.prefix += int((mask & facts.prefix).sum())
        self.padding += int((mask & facts.padding).sum())
        counts = torch.bincount(facts.distance[located].flatten().cpu()).tolist()
        self.histogram += [0] * (len(counts) - len(self.histogram))
        for d, c in enumerate(counts):
            self.histogram[d] += c
        if index.dim() == 4:  # (B, heads, Nq, k): per head
            per_head = dist.sum((0, 2, 3)).tolist(), located.sum((0, 2, 3)).tolist()
            if not self.head_distance:
                self.head_distance, self.head_positioned = (
                    [0] * index.shape[1],
                    [0] * index.shape[1],
                )
            for h, (d, n) in enumerate(zip(*per_head, strict=True)):
                self.head_distance[h] += int(d)
                self.head_positioned[h] += int(n)
        covered = self._coverage(selection, mask & ~facts.prefix & ~facts.padding)
        self.coverage_sum += float(covered.sum())
        self.coverage_rows += covered.numel()
        self.images += index.shape[0]
        queries = facts.query_pos[facts.map_query]
        if len(queries):  # weighted like the measured numbers: per map query and example/head
            rows = index[..., 0, 0].numel() * len(queries)
            distance, window = uniform_reference(facts.size, queries)
            self.uniform = [self.uniform[0] + distance * rows, self.uniform[1] + window * rows,
                            self.uniform[2] + rows]  # fmt: skip
        self.shape = {
            "map": list(facts.size),
            "queries": int(facts.map_query.sum()),
            "k": index.shape[-1],
            "heads": index.shape[1] if index.dim() == 4 else 1,
        }

    @staticmethod
    def _coverage(selection: Selection, real: Tensor) -> Tensor:
        """Per image (and head): share of the input map's tokens selected by some query."""
        index = selection.index.flatten(-2).flatten(0, -2)  # (rows, Nq * k)
        real = real.flatten(-2).flatten(0, -2)
        N = selection.num_tokens
        hit = torch.zeros(index.shape[0], N + 1, dtype=torch.bool, device=index.device)
        hit.scatter_(1, torch.where(real, index, N), True)
        grid = selection.grid
        assert grid is not None
        size = grid.input_size
        return hit[:, :N].sum(1).float() / (size[0] * size[1])

    def summary(self) -> dict[str, Any]:
        """The statistics as plain numbers (``None`` where nothing was counted)."""

        def share(count: float, total: int) -> float | None:
            return count / total if total else None

        out: dict[str, Any] = dict(self.shape)
        out["images"] = self.images
        out["mean_distance"] = share(self.distance_sum, self.positioned)
        out["window_fraction"] = share(self.window, self.neighbors)
        out["self_fraction"] = share(self.self_, self.neighbors)
        out["prefix_fraction"] = share(self.prefix, self.neighbors)
        out["padding_fraction"] = share(self.padding, self.neighbors)
        out["coverage"] = share(self.coverage_sum, self.coverage_rows)
        out["distance_histogram"] = [share(c, self.positioned) for c in self.histogram]
        distance, window, weight = self.uniform
        out["uniform_mean_distance"] = distance / weight if weight else None
        out["uniform_window_fraction"] = window / weight if weight else None
        if self.head_distance:
            out["mean_distance_per_head"] = [
                share(d, n) for d, n in zip(self.head_distance, self.head_positioned, strict=True)
            ]
        return out
