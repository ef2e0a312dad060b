"""The ``blocked`` path: runs every configuration with bounded memory.

Selection runs without autograd over blocks of queries whose ``(*, rows, M)`` score
block stays under ``selection_budget_mb``; the weighting scores of the ``k`` selected
neighbors only are computed with gradient (reusing the selection's scores as forward
values where the weighting similarity is the selection similarity), and the ``sum``
kernel is a fused weighted gather (:mod:`~convnn.backends.blocked_gather`, Triton on CUDA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops import topk
from ..ops.aggregation import aggregate
from ..ops.gather import gather_tokens
from ..ops.geometry import CandidateTable
from ..ops.scores import dense_scores, spatial_distance, weighting_spec
from ..ops.similarity import autocast_off, feature_similarity, score_dtype, similarity_spec
from . import Path, TokenCall, register
from .blocked_gather import gather_dot, weighted_gather_sum


def _rows(table: CandidateTable, distance: Tensor | None, rows: slice):
    """The table and distances of the queries ``rows`` (shared tables stay whole; distances
    always have a row per query)."""
    index = table.index if table.shared else table.index[..., rows, :]
    sub = CandidateTable(index, None, table.forced_self, table.has_null, table.every_token)
    return sub, None if distance is None else distance[..., rows, :]


def select_blocked(
    call: TokenCall, table: CandidateTable, distance: Tensor | None, keep_scores: bool = True
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(index, slots, scores)``, each ``(*, Nq, k)``: the selected tokens, their candidate
    slots and (with ``keep_scores``) their selection scores, without gradient."""
    opts, query, key = call.options, call.query, call.key
    Nq, M = query.shape[-2], table.size
    batch = query[..., 0, 0].numel()
    budget = opts.selection_budget_mb or (256.0 if query.is_cuda else 4.0)
    block = max(1, int(budget * 2**20 // (4 * batch * M)))
    # detached inputs rather than torch.no_grad(): the same graph-free pass, and
    # torch.export keeps one flat graph instead of a grad-mode region per layer
    query, key = query.detach(), key.detach()
    parts = []
    for start in range(0, Nq, block):
        rows = slice(start, start + block)
        sub, dist = _rows(table, distance, rows)
        scores = dense_scores(opts.similarity, opts, query[..., rows, :], key, sub, dist)
        idx, sl = topk.top_k(scores, call.k, sub, opts.resolved_order)
        parts.append((idx, sl, scores.gather(-1, sl)) if keep_scores else (idx, sl))
    merged = [torch.cat(p, dim=-2) for p in zip(*parts, strict=True)]
    return merged[0], merged[1], merged[2] if keep_scores else None


def gathered_feature_scores(
    kind: str,
    query: Tensor,
    key: Tensor,
    index: Tensor,
    has_null: bool,
    selected: Tensor | None = None,
) -> Tensor:
    """``dot``/``cosine``/``euclidean`` scores of the selected neighbors ``(*, Nq, k)``,
    through :func:`~convnn.backends.blocked_gather.gather_dot` (no gathered key tensor is kept;
    the formula is the table entry's ``gathered``, :data:`~convnn.ops.similarity.SIMILARITIES`).

    ``query`` ``(*, Nq, D)``, ``key`` ``(*, N, D)``, ``index`` ``(*, Nq, k)``.
    ``selected``: the same scores from the selection pass (no gradient); for ``dot``
    and ``cosine`` they are reused as the forward values and only the backward runs.
    """
    spec = feature_similarity(kind)
    with autocast_off(query.device):
        dtype = score_dtype(query.dtype)
        q, k = query.to(dtype), key.to(dtype)
        return spec.gathered(q, k, index, has_null, selected, gather_dot)  # type: ignore[misc]


def neighbor_scores(
    call: TokenCall,
    table: CandidateTable,
    distance: Tensor | None,
    index: Tensor,
    slots: Tensor,
    selected: Tensor | None,
) -> Tensor:
    """Weighting scores of the selected neighbors, ``(*, Nq, k)``, with gradient."""
    opts, query, key = call.options, call.query, call.key
    kind = opts.score_for_weights
    spec = similarity_spec(kind)
    if spec.over_candidates:  # e.g. mixed, standardized over all candidates: the dense scores
        return dense_scores(kind, opts, query, key, table, distance).gather(-1, slots)
    feature, scores, location = spec.feature_kind(opts.mixed_feature), None, None
    if feature is not None:
        reuse = selected if feature == kind else None
        scores = gathered_feature_scores(feature, query, key, index, table.has_null, reuse)
    if spec.location:
        dist = distance.expand(*index.shape[:-1], table.size)  # type: ignore[union-attr]
        location = -dist.gather(-1, slots).to(score_dtype(query.dtype))
    return spec.combine(scores, location, opts.lam, None, -1)


def run(call: TokenCall) -> Tensor:
    """``(*, Nq, O)`` outputs of ``call``."""
    opts = call.options
    table = call.table()
    distance = spatial_distance(opts, call.query_index, table, call.grid)
    scheme = weighting_spec(opts.weighting)
    weighted = scheme.weighted
    reuse = weighted and opts.score_for_weights == opts.similarity
    index, slots, selected = select_blocked(call, table, distance, reuse)
    weights = None
    if weighted:
        scores = neighbor_scores(call, table, distance, index, slots, selected)
        weights = scheme.weights(scores)
        if call.drop:
            weights = F.dropout(weights, call.drop)
    if opts.kernel == "sum":
        w = weights if weights is not None else call.value.new_ones(index.shape)
        return call.with_bias(weighted_gather_sum(call.value, index, w, table.has_null))
    neighbors = gather_tokens(call.value, index, table.has_null)  # (*, Nq, k, C)
    return aggregate(neighbors, weights, opts.kernel, call.weight, call.pointwise_weight, call.bias)


register(Path("blocked", "tokens", lambda call: True, run, "nothing"))
