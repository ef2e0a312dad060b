"""The ``reference`` path: the definition of ConvNN, readable top to bottom (docs/method.md §1).

Dense similarity of every candidate (with gradient), a full stable sort for the
top-k (no gradient), the weighting scores of the selected neighbors (a feature similarity
scored on each selected neighbor's own key, so no dense expansion's rounding; location and
mixed gathered from the dense scores), the neighbors' values gathered, then the aggregation
kernel. Every other path is tested against this one.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..ops import topk
from ..ops.aggregation import aggregate
from ..ops.gather import gather_tokens
from ..ops.geometry import CandidateTable
from ..ops.scores import dense_scores, spatial_distance, weighting_spec
from ..ops.similarity import feature_scores, similarity_spec
from . import Path, TokenCall, register


def select_dense(
    call: TokenCall, table: CandidateTable, distance: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """``(index, slots, scores)``: the ``(*, Nq, k)`` selected tokens and candidate slots,
    and the ``(*, Nq, M)`` selection scores of every candidate (with gradient)."""
    opts = call.options
    scores = dense_scores(opts.similarity, opts, call.query, call.key, table, distance)
    index, slots = topk.top_k(scores.detach(), call.k, table, opts.resolved_order, True)
    return index, slots, scores


def run(call: TokenCall) -> Tensor:
    """``(*, Nq, O)`` outputs of ``call``."""
    opts, query, key = call.options, call.query, call.key
    table = call.table()  # (Nq or 1, M) candidate tokens
    distance = spatial_distance(opts, call.query_index, table, call.grid)
    index, slots, scores = select_dense(call, table, distance)
    weights = None
    scheme = weighting_spec(opts.weighting)
    if scheme.weighted:
        kind = opts.score_for_weights
        if similarity_spec(kind).feature:  # scored on each selected neighbor: no rounding
            neighbor_keys = gather_tokens(key, index, table.has_null)  # (*, Nq, k, D)
            weights = feature_scores(kind, query, neighbor_keys, per_query=True)  # (*, Nq, k)
        else:  # location, or mixed (standardized over every candidate)
            if kind != opts.similarity:
                scores = dense_scores(kind, opts, query, key, table, distance)
            weights = scores.gather(-1, slots)  # (*, Nq, k)
        weights = scheme.weights(weights)
        if call.drop:
            weights = F.dropout(weights, call.drop)
    neighbors = gather_tokens(call.value, index, table.has_null)  # (*, Nq, k, C)
    return aggregate(neighbors, weights, opts.kernel, call.weight, call.pointwise_weight, call.bias)


register(Path("reference", "tokens", lambda call: True, run, "nothing"))
