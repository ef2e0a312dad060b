"""What a ConvNN call selects, and the hook through which a recorder sees it.

:class:`Selection` holds, for every query, the ``k`` selected token indices and their
weights. :func:`selection_of` computes it with the backends' own selection
(:func:`convnn.backends.select_top_k`, as :func:`convnn.functional.select_neighbors`
does) and the ``blocked`` path's weighting scores, so nothing here re-implements the
selection.
Paths that never form indices (``sdpa``, ``dense``, the map paths) select the same sets:
the whole window or every token, or, for ``dense``, the same top-k of the same scores
(a different matrix-product blocking may only reorder exact float ties).

:data:`SINK` is ``None`` unless a recorder listens (:func:`listening`, used by
:func:`convnn.inspection.record_selection`): :func:`convnn.functional.convnn` checks it
once per call, so recording costs nothing when unused.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from .backends import TokenCall, blocked, select_top_k
from .ops.geometry import Grid
from .ops.scores import spatial_distance

__all__ = ["SINK", "Selection", "listening", "report", "selection_of"]


@dataclasses.dataclass(frozen=True)
class Selection:
    """The neighbors one ConvNN call selected.

    Attributes:
        index: ``(*, Nq, k)`` long token indices (``*``: the call's batch dims, e.g.
            ``(B,)`` or ``(B, heads)``); ``num_tokens`` is the zero (padding) token of a
            zero-padded window.
        weights: ``(*, Nq, k)`` float32 weights of the neighbors (ones for
            ``weighting='none'``; before any dropout).
        query_index: ``(Nq,)`` the tokens that are queries.
        num_tokens: ``N``, the call's token count.
        grid: the token layout (prefix tokens + map, and the map's padding), or ``None``.
        position: ``(*, Nq, k, 2)`` long ``(row, col)`` of every neighbor on ``grid``
            (padding positions lie outside the input map; prefix tokens read ``(0, 0)``),
            or ``None`` without a grid.
    """

    index: Tensor
    weights: Tensor
    query_index: Tensor
    num_tokens: int
    grid: Grid | None = None
    position: Tensor | None = None

    def with_grid(self, grid: Grid) -> Selection:
        """This selection laid out on ``grid`` (for calls made without one, e.g. attention
        with feature similarity: ``P`` prefix tokens then a square patch map)."""
        if self.grid is not None:
            return self
        return dataclasses.replace(self, grid=grid, position=grid.positions(self.index))


SINK: Callable[[Selection], None] | None = None
"""The listening recorder, or ``None`` (nothing is computed)."""
_SINK_THREAD: int | None = None
"""The thread :data:`SINK` listens to: calls made by other threads are not reported."""


@contextmanager
def listening(sink: Callable[[Selection], None]) -> Iterator[None]:
    """Send the selection of every ConvNN call that this thread makes to ``sink`` inside the
    block (the previous listener is restored afterwards)."""
    global SINK, _SINK_THREAD
    previous = SINK, _SINK_THREAD
    SINK, _SINK_THREAD = sink, threading.get_ident()
    try:
        yield
    finally:
        SINK, _SINK_THREAD = previous


def listens_here() -> bool:
    """Whether a recorder listens to the calls of the current thread."""
    return SINK is not None and _SINK_THREAD == threading.get_ident()


def selection_of(call: TokenCall, backend: str) -> Selection:
    """The neighbors ``call`` selects under ``backend`` (already resolved) and their weights.

    A ``random`` call without a fixed ``sample`` draws its candidates here (in training,
    from its generator); :func:`report` fixes the draw first.
    """
    opts = call.options
    with torch.no_grad():
        table = call.table()
        distance = spatial_distance(opts, call.query_index, table, call.grid)
        index, slots, _ = select_top_k(call, table, distance, backend, keep_scores=False)
        weights = torch.ones(index.shape, device=index.device)
        if opts.weighting != "none":
            scores = blocked.neighbor_scores(call, table, distance, index, slots, None)
            weights = scores.softmax(-1) if opts.weighting == "softmax" else scores
        position = None
        if table.position is not None:
            M = table.size
            pos = torch.broadcast_to(table.position, (*slots.shape[:-1], M, 2))
            position = pos.gather(-2, slots[..., None].expand(*slots.shape, 2))
    return Selection(index, weights.float(), call.query_index, call.num_tokens, call.grid, position)


def report(call: TokenCall, backend: str) -> TokenCall:
    """Send ``call``'s selection to :data:`SINK`; returns the call to run, its ``random``
    draw fixed to the one reported (so the output and the RNG stream are unchanged)."""
    if not listens_here():
        return call
    if call.options.candidates == "random" and call.sample is None:
        sampled = call.table().index  # (*, Nq, 1 + r): the query, then the draw
        call = dataclasses.replace(call, sample=sampled[..., 0, 1:])
    SINK(selection_of(call, backend))  # type: ignore[misc]
    return call
