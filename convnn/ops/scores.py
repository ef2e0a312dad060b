"""Dense similarity scores of every candidate of every query (docs/method.md §1.4), and the
``weighting`` table that turns the selected neighbors' scores into weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args

from torch import Tensor

from ..options import ConvNNOptions, Weighting, check_option_table, option_entry
from .gather import gather_tokens, with_null_row
from .geometry import CandidateTable, Grid, chebyshev_distance
from .similarity import feature_scores, score_dtype, similarity_spec


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
    kinds = (opts.similarity, opts.score_for_weights)
    if not any(similarity_spec(kind).location for kind in kinds):
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
    spec = similarity_spec(kind)
    feature = spec.feature_kind(opts.mixed_feature)
    scores = location = None
    if feature is not None:
        features = candidate_features(key, table)
        scores = feature_scores(feature, query, features, per_query=not table.shared)
    if spec.location:
        location = -distance.to(score_dtype(query.dtype))  # type: ignore[union-attr]
        location = location.expand(*query.shape[:-1], table.size)
    distinct = table.distinct() if spec.over_candidates else None
    return spec.combine(scores, location, opts.lam, distinct, -1)


@dataclass(frozen=True)
class WeightingSpec:
    """One value of the ``weighting`` option: how the scores of the ``k`` selected
    neighbors become their weights.

    Attributes:
        name: the option value.
        normalize: ``(scores, dim) -> weights`` along the neighbors' ``dim``; ``None``:
            unweighted (every neighbor weighs 1, no weighting score is computed).
    """

    name: str
    normalize: Callable[[Tensor, int], Tensor] | None

    @property
    def weighted(self) -> bool:
        return self.normalize is not None

    def weights(self, scores: Tensor, dim: int = -1) -> Tensor:
        """Weights ``scores.shape`` of the neighbors' ``scores`` (``dim``: the neighbors)."""
        assert self.normalize is not None, "weighting='none' has no weights"
        return self.normalize(scores, dim)


def _raw(scores: Tensor, dim: int) -> Tensor:
    return scores


def _softmax(scores: Tensor, dim: int) -> Tensor:
    return scores.softmax(dim)


WEIGHTINGS: dict[str, WeightingSpec] = {
    spec.name: spec
    for spec in (
        WeightingSpec("none", None),
        WeightingSpec("similarity", _raw),
        WeightingSpec("softmax", _softmax),
    )
}
"""Every value of the ``weighting`` option (:data:`convnn.options.Weighting`), by name."""
check_option_table("weighting", WEIGHTINGS, get_args(Weighting))


def weighting_spec(name: str, key: str = "weighting") -> WeightingSpec:
    """The table entry of ``name``; an unknown one raises
    :class:`~convnn.errors.OptionError` naming ``key`` and the allowed values."""
    return option_entry(WEIGHTINGS, key, name)
