"""Top-k neighbor selection and the scores of the selected neighbors (SPEC §1.5-1.6).

Selection never carries a gradient: it ranks float32 (or float64) scores with a
stable sort, so ties go to the lower candidate slot, which is the lower token
index because candidate tables are in raster order. Weighting scores carry the
gradient into the query and key features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .gather_ops import gather_dot, gather_rows, with_null_row
from .geometry import CandidateTable
from .options import ConvNNOptions
from .similarity import EPS, feature_scores, mixed_scores, score_dtype, unit

FEATURE = ("dot", "cosine", "euclidean")


def gather_tokens(x: Tensor, index: Tensor, has_null: bool = False) -> Tensor:
    """Rows ``index`` ``(*, Nq, k)`` of ``x`` ``(*, N, C)`` -> ``(*, Nq, k, C)``.

    With ``has_null``, index ``N`` reads a zero row (the null token outside the map)."""
    x = x.expand(*index.shape[:-2], *x.shape[-2:])
    return gather_rows(with_null_row(x, has_null), index)


def _candidate_features(key: Tensor, table: CandidateTable) -> Tensor:
    """``(*, M, D)`` for a shared table, ``(*, Nq, M, D)`` for a per-query one."""
    N = key.shape[-2]
    index = table.index
    if index.shape[0] == 1 and index.shape[1] == N and not table.forced_self:
        return key  # all tokens, in order
    if table.has_null:  # no contiguous copy otherwise: indexing takes strided keys
        key = with_null_row(key, True)
    return key[..., index[0], :] if index.shape[0] == 1 else key[..., index, :]


def dense_scores(
    kind: str,
    opts: ConvNNOptions,
    query: Tensor,
    key: Tensor,
    table: CandidateTable,
    distance: Tensor | None,
) -> Tensor:
    """Scores of every candidate: ``(*, Nq, M)``, differentiable in query and key."""
    per_query = table.index.shape[0] > 1
    if kind in FEATURE:
        return feature_scores(kind, query, _candidate_features(key, table), per_query)
    location = -distance.to(score_dtype(query.dtype))  # type: ignore[union-attr]
    location = location.expand(*query.shape[:-1], table.size)
    if kind == "location":
        return location
    features = _candidate_features(key, table)
    feature = feature_scores(opts.mixed_feature, query, features, per_query)
    return mixed_scores(feature, location, opts.lam)


def _ranked_by_key(scores: Tensor, k: int) -> Tensor:
    """Exact and branch-free: float32 scores packed with their slot into one int64 key
    (order-preserving bits of the score, then the inverted slot), then one ``topk``."""
    bits = (scores + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into 0.0
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    slot = torch.arange(scores.shape[-1], device=scores.device, dtype=torch.int64)
    return ((ordered << 32) | (0xFFFFFFFF - slot)).topk(k, dim=-1).indices


def _stable_sorted(scores: Tensor, k: int) -> Tensor:
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]


def ranked_slots(scores: Tensor, k: int) -> Tensor:
    """Slots of the ``k`` highest ``scores`` ``(..., M)``, best first, ties to the lower slot.

    Eager float32: one ``topk`` of ``k + 1``, re-ordered so equal scores go by slot;
    only rows whose ``k``-th and ``k+1``-th scores tie are redone with a stable
    sort. Under ``torch.compile`` the branch-free packed-key ``topk`` is used.
    float64 (tests) uses the stable sort.
    """
    if scores.dtype != torch.float32:
        return _stable_sorted(scores, k)
    if torch.compiler.is_compiling():
        return _ranked_by_key(scores, k)
    M = scores.shape[-1]
    vals, slots = scores.topk(min(k + 1, M), dim=-1)
    by_slot = slots.argsort(dim=-1)
    vals, slots = vals.gather(-1, by_slot), slots.gather(-1, by_slot)
    by_value = vals.argsort(dim=-1, descending=True, stable=True)
    vals, slots = vals.gather(-1, by_value), slots.gather(-1, by_value)
    if M == k:
        return slots
    tie = vals[..., k - 1] == vals[..., k]
    slots = slots[..., :k]
    if bool(tie.any()):
        rows = tie.nonzero(as_tuple=True)
        slots = slots.index_put(rows, _stable_sorted(scores[rows], k))
    return slots


@dataclass
class KnownScores:
    """Scores computed during selection that the weighting may reuse.

    Attributes:
        dense: ``(*, Nq, M)`` scores of every candidate, with gradient (reference
            backend, ``mixed`` weighting).
        selected: ``(*, Nq, k)`` selection scores of the selected neighbors, without
            gradient (fast backend, weighting by the selection similarity).
    """

    dense: Tensor | None = None
    selected: Tensor | None = None


def top_k(
    scores: Tensor, k: int, table: CandidateTable, order: str, exact_sort: bool = False
) -> tuple[Tensor, Tensor]:
    """Select ``k`` of ``M`` candidates from detached ``scores`` ``(*, Nq, M)``.

    Returns ``(index, slots)``, both ``(*, Nq, k)``: token indices and candidate slots,
    in rank order or, for ``order="offset"``, in raster order of the neighbor position.
    ``exact_sort`` (the reference backend) ranks with a full stable sort.
    """
    if table.forced_self:
        dup = table.index[:, 1:] == table.index[:, :1]  # (Nq, r)
        scores = torch.cat(
            (
                torch.full_like(scores[..., :1], float("inf")),
                scores[..., 1:].masked_fill(dup, float("-inf")),
            ),
            dim=-1,
        )
    slots = _stable_sorted(scores, k) if exact_sort else ranked_slots(scores, k)
    index = table.index.expand(scores.shape).gather(-1, slots)
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
) -> tuple[Tensor, Tensor, KnownScores]:
    """Pick the neighbors of every query.

    Returns ``(index, slots, known)``: ``(*, Nq, k)`` token indices and candidate
    slots, and the scores already computed that the weighting can reuse.
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
        index, slots = top_k(sel.detach(), k, table, order, exact_sort=True)
        return index, slots, KnownScores(dense=dense_w)

    Nq, M = query.shape[-2], table.size
    batch = query[..., 0, 0].numel()
    budget = opts.selection_budget_mb or (256.0 if query.is_cuda else 4.0)
    block = max(1, int(budget * 2**20 // (4 * batch * M)))
    reuse = needs_w and wkind == opts.similarity  # keep the selected scores for the weights
    parts = []
    with torch.no_grad():
        for start in range(0, Nq, block):
            rows = slice(start, start + block)
            sub, dist = _rows(table, distance, rows)
            scores = dense_scores(opts.similarity, opts, query[..., rows, :], key, sub, dist)
            idx, sl = top_k(scores, k, sub, order)
            parts.append((idx, sl, scores.gather(-1, sl)) if reuse else (idx, sl))
    merged = [torch.cat(p, dim=-2) for p in zip(*parts, strict=True)]
    known = KnownScores(selected=merged[2] if reuse else None)
    if needs_w and wkind == "mixed":
        known.dense = dense_scores(wkind, opts, query, key, table, distance)
    return merged[0], merged[1], known


def neighbor_scores(
    opts: ConvNNOptions,
    query: Tensor,
    key: Tensor,
    table: CandidateTable,
    distance: Tensor | None,
    index: Tensor,
    slots: Tensor,
    known: KnownScores,
) -> Tensor:
    """Weighting scores of the selected neighbors, ``(*, Nq, k)``, with gradient."""
    if known.dense is not None:
        return known.dense.gather(-1, slots)
    kind = opts.score_for_weights
    if kind == "location":
        dist = distance.expand(*index.shape[:-1], table.size)  # type: ignore[union-attr]
        return -dist.gather(-1, slots).to(score_dtype(query.dtype))
    return gathered_feature_scores(kind, query, key, index, table.has_null, known.selected)


def gathered_feature_scores(
    kind: str,
    query: Tensor,
    key: Tensor,
    index: Tensor,
    has_null: bool,
    selected: Tensor | None = None,
) -> Tensor:
    """``dot``/``cosine``/``euclidean`` scores of the selected neighbors ``(*, Nq, k)``,
    through :func:`~convnn.gather_ops.gather_dot` (no gathered key tensor is kept).

    ``selected``: the same scores from the selection pass (no gradient); for ``dot``
    and ``cosine`` they are reused as the forward values and only the backward runs.
    """
    with torch.autocast(query.device.type, enabled=False):
        dtype = score_dtype(query.dtype)
        q, k = query.to(dtype), key.to(dtype)
        if kind == "cosine":
            q, k = unit(q), unit(k)
        scale = 1 / math.sqrt(q.shape[-1]) if kind == "dot" else 1.0
        known = None if selected is None or kind == "euclidean" else selected / scale
        dots = gather_dot(q, k, index, has_null, known)
        if kind == "dot":
            return dots * scale
        if kind == "cosine":
            return dots
        k2 = k.square().sum(-1)  # (*, N)
        if has_null:
            k2 = torch.cat((k2, k2.new_zeros(*k2.shape[:-1], 1)), dim=-1)
        k2 = k2.unsqueeze(-2).expand(*index.shape[:-1], k2.shape[-1]).gather(-1, index)
        sq = (q.square().sum(-1, keepdim=True) + k2 - 2 * dots).clamp(min=0)
        return -(sq + EPS).sqrt()
