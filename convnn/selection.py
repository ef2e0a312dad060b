"""Top-k neighbor selection and the scores of the selected neighbors (SPEC §1.5-1.6).

Selection never carries a gradient: it ranks float32 (or float64) scores with a
stable sort, so ties go to the lower candidate slot, which is the lower token
index because candidate tables are in raster order. Weighting scores carry the
gradient into the query and key features.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .geometry import CandidateTable
from .options import ConvNNOptions
from .similarity import feature_scores, mixed_scores, score_dtype

FEATURE = ("dot", "cosine", "euclidean")


def gather_tokens(x: Tensor, index: Tensor, has_null: bool = False) -> Tensor:
    """Rows ``index`` ``(B, Nq, k)`` of ``x`` ``(B, N, C)`` -> ``(B, Nq, k, C)``.

    With ``has_null``, index ``N`` reads a zero row (the null token outside the map)."""
    B, Nq, k = index.shape
    if has_null:
        x = torch.cat((x, x.new_zeros(B, 1, x.shape[-1])), dim=1)
    flat = index.reshape(B, Nq * k, 1).expand(-1, -1, x.shape[-1])
    return x.gather(1, flat).view(B, Nq, k, x.shape[-1])


def _candidate_features(key: Tensor, table: CandidateTable) -> Tensor:
    """``(B, M, D)`` for a shared table, ``(B, Nq, M, D)`` for a per-query one."""
    N = key.shape[1]
    index = table.index
    if index.shape[0] == 1 and index.shape[1] == N and not table.forced_self:
        return key  # all tokens, in order
    if table.has_null:
        key = torch.cat((key, key.new_zeros(key.shape[0], 1, key.shape[-1])), dim=1)
    return key[:, index[0]] if index.shape[0] == 1 else key[:, index]


def dense_scores(
    kind: str,
    opts: ConvNNOptions,
    query: Tensor,
    key: Tensor,
    table: CandidateTable,
    distance: Tensor | None,
) -> Tensor:
    """Scores of every candidate: ``(B, Nq, M)``, differentiable in query and key."""
    B, Nq = query.shape[:2]
    if kind in FEATURE:
        return feature_scores(kind, query, _candidate_features(key, table))
    location = -distance.to(score_dtype(query.dtype))  # type: ignore[union-attr]
    location = location.expand(B, Nq, -1)
    if kind == "location":
        return location
    feature = feature_scores(opts.mixed_feature, query, _candidate_features(key, table))
    return mixed_scores(feature, location, opts.lam)


def top_k(scores: Tensor, k: int, table: CandidateTable, order: str) -> tuple[Tensor, Tensor]:
    """Select ``k`` of ``M`` candidates from detached ``scores`` ``(B, Nq, M)``.

    Returns ``(index, slots)``, both ``(B, Nq, k)``: token indices and candidate slots,
    in rank order or, for ``order="offset"``, in raster order of the neighbor position.
    """
    B, Nq, M = scores.shape
    if table.forced_self:
        dup = table.index[:, 1:] == table.index[:, :1]  # (Nq, r)
        scores = torch.cat(
            (
                torch.full_like(scores[..., :1], float("inf")),
                scores[..., 1:].masked_fill(dup, float("-inf")),
            ),
            dim=-1,
        )
    slots = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
    index = table.index.expand(Nq, M).expand(B, Nq, M).gather(-1, slots)
    if order == "offset":
        raster = index if table.forced_self else slots
        perm = raster.argsort(dim=-1, stable=True)
        slots, index = slots.gather(-1, perm), index.gather(-1, perm)
    return index, slots


def _rows(table: CandidateTable, distance: Tensor | None, rows: slice):
    per_query = table.index.shape[0] > 1
    sub = CandidateTable(
        table.index[rows] if per_query else table.index,
        None,
        table.forced_self,
        table.has_null,
    )
    dist = None
    if distance is not None:
        dist = distance[rows] if distance.shape[0] > 1 else distance
    return sub, dist


def select_neighbors(
    opts: ConvNNOptions,
    query: Tensor,
    key: Tensor,
    table: CandidateTable,
    distance: Tensor | None,
    k: int,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Pick the neighbors of every query.

    Returns ``(index, slots, dense_weight_scores)``: ``(B, Nq, k)`` token indices and
    candidate slots, and, when the weighting scores were computed densely (the
    reference backend, or ``mixed`` weighting), those ``(B, Nq, M)`` scores.
    """
    order = opts.resolved_order
    wkind = opts.score_for_weights
    needs_w = opts.weighting != "none"
    if backend == "reference":
        sel = dense_scores(opts.similarity, opts, query, key, table, distance)
        dense_w = None
        if needs_w:
            same = wkind == opts.similarity
            dense_w = sel if same else dense_scores(wkind, opts, query, key, table, distance)
        index, slots = top_k(sel.detach(), k, table, order)
        return index, slots, dense_w

    B, Nq, M = query.shape[0], query.shape[1], table.size
    block = max(1, int(opts.selection_budget_mb * 2**20 // (4 * B * M)))
    parts = []
    with torch.no_grad():
        for start in range(0, Nq, block):
            rows = slice(start, start + block)
            sub, dist = _rows(table, distance, rows)
            scores = dense_scores(opts.similarity, opts, query[:, rows], key, sub, dist)
            parts.append(top_k(scores, k, sub, order))
    index = torch.cat([p[0] for p in parts], dim=1)
    slots = torch.cat([p[1] for p in parts], dim=1)
    dense_w = None
    if needs_w and wkind == "mixed":
        dense_w = dense_scores(wkind, opts, query, key, table, distance)
    return index, slots, dense_w


def neighbor_scores(
    opts: ConvNNOptions,
    query: Tensor,
    key: Tensor,
    table: CandidateTable,
    distance: Tensor | None,
    index: Tensor,
    slots: Tensor,
    dense_w: Tensor | None,
) -> Tensor:
    """Weighting scores of the selected neighbors, ``(B, Nq, k)``, with gradient."""
    if dense_w is not None:
        return dense_w.gather(-1, slots)
    kind = opts.score_for_weights
    B, Nq, _ = index.shape
    if kind == "location":
        dist = distance.expand(Nq, -1).expand(B, Nq, -1)  # type: ignore[union-attr]
        return -dist.gather(-1, slots).to(score_dtype(query.dtype))
    return feature_scores(kind, query, gather_tokens(key, index, table.has_null))  # (B, Nq, k)
