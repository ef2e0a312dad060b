"""Dense similarity scores of every candidate of every query (SPEC §1.4)."""

from __future__ import annotations

from torch import Tensor

from ..options import ConvNNOptions
from .gather import gather_tokens, with_null_row
from .geometry import CandidateTable, Grid, chebyshev_distance
from .similarity import feature_scores, mixed_scores, score_dtype

FEATURE = ("dot", "cosine", "euclidean")


def candidate_features(key: Tensor, table: CandidateTable) -> Tensor:
    """``(*, M, D)`` for a shared table, ``(*, Nq, M, D)`` for a per-query one."""
    index = table.index
    if index.dim() > 2:  # a table per example (and head): gather rows batch by batch
        return gather_tokens(key, index.expand(*key.shape[:-2], *index.shape[-2:]), table.has_null)
    if table.every_token:
        return key
    if table.has_null:  # no contiguous copy otherwise: indexing takes strided keys
        key = with_null_row(key, True)
    return key[..., index[0], :] if table.shared else key[..., index, :]


def spatial_distance(
    opts: ConvNNOptions, query_index: Tensor, table: CandidateTable, grid: Grid | None
) -> Tensor | None:
    """``(Nq or 1, M)`` Chebyshev distances when a ``location``/``mixed`` score needs them."""
    if not {opts.similarity, opts.score_for_weights} & {"location", "mixed"}:
        return None
    return chebyshev_distance(query_index, table, grid)  # type: ignore[arg-type]


def dense_scores(
    kind: str,
    opts: ConvNNOptions,
    query: Tensor,
    key: Tensor,
    table: CandidateTable,
    distance: Tensor | None,
) -> Tensor:
    """Scores of every candidate: ``(*, Nq, M)``, differentiable in query and key.

    ``distance``: ``(Nq or 1, M)`` Chebyshev distances, needed by ``location``/``mixed``.
    """
    per_query = not table.shared
    if kind in FEATURE:
        return feature_scores(kind, query, candidate_features(key, table), per_query)
    location = -distance.to(score_dtype(query.dtype))  # type: ignore[union-attr]
    location = location.expand(*query.shape[:-1], table.size)
    if kind == "location":
        return location
    features = candidate_features(key, table)
    feature = feature_scores(opts.mixed_feature, query, features, per_query)
    return mixed_scores(feature, location, opts.lam, table.distinct())
